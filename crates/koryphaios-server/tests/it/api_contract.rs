//! The OpenAPI document states what the service answers (ADR 0013): every operation documents
//! the statuses its extractors and the pipeline give, request schemas carry the validators'
//! bounds, and real refusals of every operation are statuses its operation documents.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error};

async fn document(app: &TestApp) -> Value {
    let response = app.request(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("document")
}

/// Every (path, method, operation) of the document.
fn operations(document: &Value) -> Vec<(String, Method, Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            found.push((path.clone(), method, operation.clone()));
        }
    }
    assert!(found.len() >= 30, "only {} operations", found.len());
    found
}

fn documents(operation: &Value, status: u16) -> bool {
    operation["responses"].get(status.to_string()).is_some()
}

fn is_authenticated(operation: &Value) -> bool {
    operation["security"]
        .as_array()
        .is_some_and(|schemes| !schemes.is_empty())
}

fn has_path_id(operation: &Value) -> bool {
    operation["parameters"].as_array().is_some_and(|params| {
        params
            .iter()
            .any(|p| p["in"] == "path" && p["name"] == "id")
    })
}

/// A path with a well-formed id of the right type that names nothing.
fn with_unknown_id(path: &str, operation: &Value) -> String {
    let pattern = operation["parameters"]
        .as_array()
        .and_then(|params| params.iter().find(|p| p["in"] == "path"))
        .and_then(|p| p["schema"]["pattern"].as_str())
        .expect("id pattern")
        .to_owned();
    let prefix = pattern
        .trim_start_matches('^')
        .split('[')
        .next()
        .expect("prefix")
        .to_owned();
    path.replace("{id}", &format!("{prefix}{}", "0".repeat(32)))
}

#[tokio::test]
async fn every_operation_documents_the_pipeline_and_its_extractors() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let shared = document["components"]["responses"]
        .as_object()
        .expect("shared responses");
    for name in [
        "BadRequest",
        "Unauthenticated",
        "Forbidden",
        "NotFound",
        "PayloadTooLarge",
        "UnsupportedMediaType",
        "RateLimited",
        "Unavailable",
    ] {
        assert_eq!(
            shared[name]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{name}"
        );
    }
    let rate_limited = &shared["RateLimited"]["headers"];
    for header in [
        "Retry-After",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ] {
        assert!(rate_limited.get(header).is_some(), "429 lacks {header}");
    }
    let mut ids = std::collections::HashSet::new();
    for (path, method, operation) in operations(&document) {
        let name = format!("{method} {path}");
        let id = operation["operationId"].as_str().expect("operationId");
        assert!(
            ids.insert(id.to_owned()),
            "{name}: duplicate operationId {id}"
        );
        for status in [400, 413, 503] {
            assert!(documents(&operation, status), "{name} lacks {status}");
        }
        let exempt = path.starts_with("/health") || path == "/metrics";
        assert_eq!(documents(&operation, 429), !exempt, "{name}: 429");
        for (status, response) in operation["responses"].as_object().expect("responses") {
            if status.starts_with('2') {
                assert_eq!(
                    response["headers"]["X-RateLimit-Remaining"].is_object(),
                    !exempt,
                    "{name}: {status} and the X-RateLimit-* headers"
                );
            }
        }
        if path.starts_with("/api/v1") || path == "/api/auth/me" {
            assert!(is_authenticated(&operation), "{name} has no security");
        }
        if is_authenticated(&operation) {
            // The shared response, or the handler's own more specific one with its header.
            let unauthenticated = &operation["responses"]["401"];
            assert!(
                unauthenticated["$ref"] == "#/components/responses/Unauthenticated"
                    || unauthenticated["headers"]["WWW-Authenticate"].is_object(),
                "{name}: 401 {unauthenticated}"
            );
            assert!(documents(&operation, 403), "{name} lacks 403");
        }
        if path.contains("{id}") {
            assert!(has_path_id(&operation), "{name}: the id is not documented");
            assert!(documents(&operation, 404), "{name} lacks 404");
        }
        if let Some(body) = operation.get("requestBody") {
            assert!(body["content"]["application/json"].is_object(), "{name}");
            for status in [413, 415] {
                assert!(documents(&operation, status), "{name} lacks {status}");
            }
        }
    }
}

#[tokio::test]
async fn request_schemas_carry_the_validators_bounds() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let schemas = &document["components"]["schemas"];
    for name in [
        "CreateCredentialRequest",
        "UpdateCredentialRequest",
        "RotateCredentialRequest",
        "RevealCredentialRequest",
        "DeleteCredentialRequest",
        "CreateKeyRequest",
        "UpdateKeyRequest",
        "RollKeyRequest",
        "VerifyKeyRequest",
        "UpdateUserRequest",
        "CredentialsRequest",
        "RefreshRequest",
        "ChangePasswordRequest",
    ] {
        assert_eq!(
            schemas[name]["additionalProperties"],
            json!(false),
            "{name} refuses unknown fields"
        );
    }
    let credential = &schemas["CreateCredentialRequest"]["properties"];
    let providers = credential["provider"]["enum"].as_array().expect("enum");
    assert_eq!(
        providers.len(),
        koryphaios_core::credentials::PROVIDERS.len()
    );
    assert_eq!(credential["credential"]["maxLength"], 4096);
    assert_eq!(credential["credential"]["minLength"], 1);
    let key = &schemas["CreateKeyRequest"]["properties"];
    assert_eq!(key["name"]["maxLength"], 100);
    assert_eq!(key["name"]["pattern"], "^[A-Za-z0-9_ -]+$");
    assert_eq!(key["scopes"]["maxItems"], 10);
    assert!(
        key["scopes"]["items"]["enum"]
            .as_array()
            .expect("scope enum")
            .contains(&json!("provider:openai"))
    );
    assert_eq!(key["expiresInDays"]["maximum"], 365);
    assert_eq!(
        schemas["RollKeyRequest"]["properties"]["gracePeriodSeconds"]["maximum"],
        604_800
    );
    assert_eq!(
        schemas["RevealCredentialRequest"]["properties"]["reason"]["maxLength"],
        500
    );
    // Each route documents only the parameters it accepts.
    let names = |path: &str| -> Vec<String> {
        document["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| p["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let page = names("/api/v1/audit");
    assert!(page.contains(&"cursor".to_owned()) && !page.contains(&"format".to_owned()));
    let export = names("/api/v1/audit/export");
    assert!(export.contains(&"format".to_owned()) && !export.contains(&"limit".to_owned()));
    let get_credential = &document["paths"]["/api/v1/credentials/{id}"]["get"];
    assert_eq!(
        get_credential["parameters"][0]["schema"]["pattern"],
        "^cred_[0-9a-f]{32}$"
    );
}

#[tokio::test]
async fn real_refusals_are_documented_statuses() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    app.register("ada").await;
    let session = app.login("ada").await;
    let key = app
        .create_key(
            &session.access,
            json!({"name": "contract", "scopes": ["read"]}),
        )
        .await;
    let read_only_key = key["key"].as_str().expect("key").to_owned();
    for (path, method, operation) in operations(&document) {
        let name = format!("{method} {path}");
        // A fresh session each time: logout and password change end the previous one.
        let session = app.login("ada").await;
        let concrete = if path.contains("{id}") {
            with_unknown_id(&path, &operation)
        } else {
            path.clone()
        };
        let mut answers = Vec::new();
        // Without credentials.
        answers.push(app.request(method.clone(), &concrete, None, None).await);
        // An oversize body, on any method.
        answers.push(
            app.client
                .request(method.clone(), app.url(&concrete))
                .bearer_auth(&session.access)
                .header("content-type", "application/json")
                .body(vec![b' '; 11 * 1024])
                .send()
                .await
                .expect("request"),
        );
        // A body that is not JSON.
        answers.push(
            app.client
                .request(method.clone(), app.url(&concrete))
                .bearer_auth(&session.access)
                .header("content-type", "text/plain")
                .body("x")
                .send()
                .await
                .expect("request"),
        );
        // A key with `read` only, and a malformed id.
        answers.push(
            app.with_api_key(method.clone(), &concrete, &read_only_key, Some(json!({})))
                .await,
        );
        if path.contains("{id}") {
            answers.push(
                app.request(
                    method.clone(),
                    &path.replace("{id}", "not-an-id"),
                    Some(&session.access),
                    None,
                )
                .await,
            );
        }
        for answer in answers {
            let status = answer.status().as_u16();
            if status < 400 {
                continue;
            }
            assert!(
                documents(&operation, status),
                "{name} answered {status}, which it does not document"
            );
        }
    }
}

#[tokio::test]
async fn a_malformed_path_id_is_refused_before_the_handler_with_its_pattern() {
    let app = TestApp::spawn().await;
    let admin = app.user("ada").await;
    for (path, prefix) in [
        ("/api/v1/credentials/cred_XYZ", "cred_"),
        ("/api/v1/keys/cred_0192f0c1d2e37a4b8c9d0e1f2a3b4c5d", "key_"),
        ("/api/v1/users/usr_0192F0C1D2E37A4B8C9D0E1F2A3B4C5D", "usr_"),
    ] {
        let body = assert_error(app.get_authed(path, &admin.access).await, 400, "invalid_id").await;
        assert_eq!(body["details"][0]["field"], "id");
        assert_eq!(
            body["details"][0]["message"],
            format!("expected an id starting with {prefix}")
        );
    }
    // Authentication still comes first: no hint about ids to a stranger.
    assert_error(
        app.request(Method::GET, "/api/v1/credentials/nope", None, None)
            .await,
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test]
async fn every_content_type_an_export_streams_is_documented() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let admin = app.user("root").await;
    let documented =
        document["paths"]["/api/v1/audit/export"]["get"]["responses"]["200"]["content"]
            .as_object()
            .expect("export content")
            .keys()
            .cloned()
            .collect::<Vec<_>>();
    for query in ["", "?format=jsonl", "?format=csv"] {
        let response = app
            .get_authed(&format!("/api/v1/audit/export{query}"), &admin.access)
            .await;
        assert_eq!(response.status(), 200, "{query}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("media type")
            .trim()
            .to_owned();
        assert!(
            documented.contains(&content_type),
            "{query}: {content_type} not in {documented:?}"
        );
    }
}

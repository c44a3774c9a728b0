//! One scope guard (`koryphaios_core::access`) for every use case: a refusal for a missing scope
//! is 403 `insufficient_scope` naming the scope, with exactly one `access_denied` audit record
//! naming the attempt, the required scope and the resource, whichever service refused.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error};

#[tokio::test]
async fn every_service_refuses_and_audits_a_missing_scope_the_same_way() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    let credential = app
        .create_credential(&admin.access, "openai", "sk-guarded")
        .await;
    let target = app
        .create_key(&admin.access, json!({"name": "target", "scopes": ["read"]}))
        .await;
    let target_id = target["id"].as_str().expect("key id").to_owned();
    let key = app
        .create_key(&admin.access, json!({"name": "reader", "scopes": ["read"]}))
        .await;
    let key = key["key"].as_str().expect("key").to_owned();
    let cases = [
        (
            Method::POST,
            "/api/v1/credentials".to_owned(),
            Some(json!({"provider": "openai", "credential": "sk-x"})),
            "write",
            "credential_create",
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/credentials/{credential}/reveal"),
            None,
            "provider:openai",
            "credential_access",
            Some(("credential", credential.clone())),
        ),
        (
            Method::DELETE,
            format!("/api/v1/keys/{target_id}"),
            None,
            "write",
            "api_key_revoke",
            Some(("api_key", target_id.clone())),
        ),
        (
            Method::GET,
            format!("/api/v1/users/{}", admin.user_id),
            None,
            "admin",
            "user_get",
            Some(("user", admin.user_id.clone())),
        ),
        (
            Method::GET,
            "/api/v1/audit/suspicious".to_owned(),
            None,
            "admin",
            "audit_suspicious",
            None,
        ),
    ];
    for (method, path, body, scope, attempted, resource) in cases {
        let body = assert_error(
            app.with_api_key(method.clone(), &path, &key, body).await,
            403,
            "insufficient_scope",
        )
        .await;
        assert_eq!(
            body["error"],
            format!("Missing scope {scope}"),
            "{method} {path}"
        );
        let request_id = body["requestId"].as_str().expect("request id").to_owned();
        let records: Value = app
            .get_authed(
                "/api/v1/audit?action=access_denied&limit=1000",
                &admin.access,
            )
            .await
            .json()
            .await
            .expect("audit page");
        let mine: Vec<&Value> = records["records"]
            .as_array()
            .expect("records")
            .iter()
            .filter(|record| record["requestId"] == request_id.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "{method} {path}: one denial record");
        let record = mine[0];
        assert_eq!(record["success"], false);
        assert_eq!(record["reason"], "missing scope");
        assert_eq!(record["metadata"]["requiredScope"], scope);
        assert_eq!(record["metadata"]["attempted"], attempted);
        assert!(
            record["actor"]
                .as_str()
                .is_some_and(|a| a.starts_with("key:")),
            "{record}"
        );
        match resource {
            Some((kind, id)) => {
                assert_eq!(record["resourceType"], kind, "{method} {path}");
                assert_eq!(record["resourceId"], id.as_str(), "{method} {path}");
            }
            None => assert!(record["resourceId"].is_null(), "{record}"),
        }
    }
}

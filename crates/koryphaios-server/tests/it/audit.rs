//! `/api/v1/audit`: every sensitive operation and denial leaves one record with its request's
//! context and no secret; the chain verifies (and names the row someone edited); retention keeps
//! it verifiable; exports stream; bad input gets a clear 4xx; a failed audit write blocks the change.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Session, TestApp, assert_error};

async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    let response = app.get_authed(path, token).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn records(page: &Value) -> &Vec<Value> {
    page["records"].as_array().expect("records")
}

/// A request with a known user agent and request id.
async fn traced(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    request_id: &str,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, app.url(path))
        .header("user-agent", "audit-it/2.0")
        .header("x-request-id", request_id);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn every_sensitive_operation_and_denial_leaves_one_record_with_context_and_no_secret() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    let ada = app.user("ada").await;
    let secret = "sk-audit-must-never-appear-0123456789";

    let created = traced(
        &app,
        Method::POST,
        "/api/v1/credentials",
        Some(&ada.access),
        Some(json!({"provider": "openai", "credential": secret, "metadata": {"apiKey": "meta-secret-xyz"}})),
        "req-create",
    )
    .await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let steps: Vec<(Method, String, Option<Value>, &str, u16)> = vec![
        (
            Method::POST,
            format!("/api/v1/credentials/{id}/reveal"),
            None,
            "req-reveal",
            200,
        ),
        (
            Method::POST,
            format!("/api/v1/credentials/{id}/rotate"),
            Some(json!({"credential": "sk-rotated-secret-987654321"})),
            "req-rotate",
            200,
        ),
        (
            Method::DELETE,
            format!("/api/v1/credentials/{id}"),
            None,
            "req-delete",
            204,
        ),
    ];
    for (method, path, body, request_id, status) in steps {
        let response = traced(&app, method, &path, Some(&ada.access), body, request_id).await;
        assert_eq!(response.status().as_u16(), status, "{path}");
    }
    let key = traced(
        &app,
        Method::POST,
        "/api/v1/keys",
        Some(&ada.access),
        Some(json!({"name": "ci", "scopes": ["read"]})),
        "req-key-create",
    )
    .await;
    assert_eq!(key.status(), 201);
    let key: Value = key.json().await.unwrap();
    let key_id = key["id"].as_str().unwrap();
    let plaintext_key = key["key"].as_str().unwrap().to_owned();
    let revoked = traced(
        &app,
        Method::DELETE,
        &format!("/api/v1/keys/{key_id}"),
        Some(&ada.access),
        None,
        "req-key-revoke",
    )
    .await;
    assert_eq!(revoked.status(), 204);
    let failed_login = traced(
        &app,
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"username": "ada", "password": "wrong password entirely"})),
        "req-login-fail",
    )
    .await;
    assert_eq!(failed_login.status(), 401);
    let forbidden = traced(
        &app,
        Method::GET,
        "/api/v1/audit/verify",
        Some(&ada.access),
        None,
        "req-403",
    )
    .await;
    assert_eq!(forbidden.status(), 403);

    let page = get_json(&app, "/api/v1/audit?limit=1000", &admin.access).await;
    for (action, request_id) in [
        ("credential_create", "req-create"),
        ("credential_access", "req-reveal"),
        ("credential_rotate", "req-rotate"),
        ("credential_delete", "req-delete"),
        ("api_key_create", "req-key-create"),
        ("api_key_revoke", "req-key-revoke"),
        ("login", "req-login-fail"),
        ("access_denied", "req-403"),
    ] {
        let matching: Vec<_> = records(&page)
            .iter()
            .filter(|r| r["requestId"] == request_id)
            .collect();
        assert_eq!(matching.len(), 1, "{action}: {matching:?}");
        let record = matching[0];
        assert_eq!(record["action"], action);
        assert_eq!(record["clientIp"], "127.0.0.1", "{action}");
        assert_eq!(record["userAgent"], "audit-it/2.0", "{action}");
    }
    let text = page.to_string();
    for leaked in [
        secret,
        "sk-rotated-secret-987654321",
        "meta-secret-xyz",
        plaintext_key.as_str(),
        "wrong password entirely",
    ] {
        assert!(!text.contains(leaked), "a record contains a secret");
    }

    // Ada sees only her own records, and is refused someone else's.
    let mine = get_json(&app, "/api/v1/audit/me", &ada.access).await;
    assert!(
        records(&mine)
            .iter()
            .all(|r| r["userId"] == ada.user_id.as_str())
    );
    let own = get_json(&app, "/api/v1/audit", &ada.access).await;
    assert_eq!(records(&own).len(), records(&mine).len());
    let other = app
        .get_authed(
            &format!("/api/v1/audit?userId={}", admin.user_id),
            &ada.access,
        )
        .await;
    assert_error(other, 403, "insufficient_scope").await;
}

#[tokio::test]
async fn verify_names_the_edited_row_and_the_cli_agrees() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    for i in 0..3 {
        app.create_credential(&admin.access, "openai", &format!("sk-{i}"))
            .await;
    }
    let report = get_json(&app, "/api/v1/audit/verify", &admin.access).await;
    assert_eq!(report["valid"], true, "{report}");
    let checked = report["checked"].as_u64().unwrap();
    assert!(checked >= 5, "{report}");
    let cli = app.cli_env();
    let ok = cli.run(&["audit", "verify"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let edit = "UPDATE audit_events SET success = NOT success WHERE seq = 3";
    app.execute_sql(edit, edit).await;
    let report = get_json(&app, "/api/v1/audit/verify", &admin.access).await;
    assert_eq!(report["valid"], false);
    assert_eq!(report["firstBroken"]["seq"], 3);
    assert_eq!(report["firstBroken"]["reason"], "content_mismatch");
    assert_eq!(report["checked"], 2);
    let broken = cli.run(&["audit", "verify"]);
    assert!(!broken.status.success());
    assert!(String::from_utf8_lossy(&broken.stdout).contains("BROKEN at position 3"));
}

#[tokio::test]
async fn retention_purges_old_records_and_the_rest_still_verifies() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let vars = [("KORYPHAIOS_ALLOW_REGISTRATION", "true")];
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(400);
    let app = TestApp::spawn_at(dir.clone(), &vars, long_ago).await;
    let admin = app.user("root").await;
    app.create_credential(&admin.access, "openai", "sk-old")
        .await;
    app.clock.advance(time::Duration::days(400));
    // The old access token expired with the jump: log in again, now.
    let admin = app.login("root").await;
    app.create_credential(&admin.access, "openai", "sk-new")
        .await;
    let before = get_json(&app, "/api/v1/audit?limit=1000", &admin.access).await;
    let total = records(&before).len();
    let cli = app.cli_env();
    app.stop().await;

    let purge = cli.run(&["audit", "purge"]);
    assert!(
        purge.status.success(),
        "{}",
        String::from_utf8_lossy(&purge.stderr)
    );
    let said = String::from_utf8_lossy(&purge.stdout).into_owned();
    assert!(said.contains("purged 3 audit record(s)"), "{said}");
    let verified = cli.run(&["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );

    let app = TestApp::spawn_in(dir, &vars).await;
    let admin: Session = app.login("root").await;
    let report = get_json(&app, "/api/v1/audit/verify", &admin.access).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["anchorSeq"], 3);
    let after = get_json(&app, "/api/v1/audit?limit=1000", &admin.access).await;
    // Three purged; the purge's own record and this login were added.
    assert_eq!(records(&after).len(), total - 3 + 2);
    assert!(records(&after).iter().any(|r| r["action"] == "audit_purge"));
}

#[tokio::test]
async fn pages_follow_the_cursor_and_filters_apply() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    for i in 0..7 {
        app.create_credential(&admin.access, "openai", &format!("sk-{i}"))
            .await;
    }
    let all = get_json(
        &app,
        "/api/v1/audit?action=credential_create",
        &admin.access,
    )
    .await;
    assert_eq!(records(&all).len(), 7);
    assert!(all["nextCursor"].is_null());
    let mut seen = Vec::new();
    let mut path = "/api/v1/audit?action=credential_create&limit=3".to_owned();
    loop {
        let page = get_json(&app, &path, &admin.access).await;
        seen.extend(records(&page).iter().map(|r| r["id"].clone()));
        match page["nextCursor"].as_str() {
            Some(cursor) => {
                path = format!("/api/v1/audit?action=credential_create&limit=3&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(
        &seen,
        &records(&all)
            .iter()
            .map(|r| r["id"].clone())
            .collect::<Vec<_>>()
    );
    let offset = get_json(
        &app,
        "/api/v1/audit?action=credential_create&limit=3&offset=6",
        &admin.access,
    )
    .await;
    assert_eq!(records(&offset).len(), 1);
    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let windowed = get_json(
        &app,
        &format!(
            "/api/v1/audit?success=true&startTime={}&endTime=99999999999999",
            koryphaios_core::clock::to_unix_ms(start)
        ),
        &admin.access,
    )
    .await;
    assert!(records(&windowed).iter().all(|r| r["success"] == true));
    assert!(records(&windowed).len() >= 8);
}

#[tokio::test]
async fn bad_audit_queries_get_clear_errors() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    let ada = app.user("ada").await;
    for (query, field) in [
        ("startTime=yesterday", "startTime"),
        ("endTime=2026-13-40T00:00:00Z", "endTime"),
        (
            "startTime=2026-02-01T00:00:00Z&endTime=2026-01-01T00:00:00Z",
            "endTime",
        ),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-3", "limit"),
        ("action=", "action"),
        ("resourceId=".to_owned().leak(), "resourceId"),
        ("userId=ada", "userId"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor"),
        ("offset=2&cursor=djE6NQ", "cursor"),
        ("format=csv", "format"),
    ] {
        let response = app
            .get_authed(&format!("/api/v1/audit?{query}"), &admin.access)
            .await;
        let body = assert_error(response, 400, "validation_failed").await;
        assert_eq!(body["details"][0]["field"], field, "{query}: {body}");
    }
    let long_action = format!("/api/v1/audit?action={}", "a".repeat(51));
    assert_error(
        app.get_authed(&long_action, &admin.access).await,
        400,
        "validation_failed",
    )
    .await;
    let long_id = format!("/api/v1/audit?resourceId={}", "a".repeat(101));
    assert_error(
        app.get_authed(&long_id, &admin.access).await,
        400,
        "validation_failed",
    )
    .await;
    for query in ["colour=blue", "success=maybe", "offset=-1"] {
        let response = app
            .get_authed(&format!("/api/v1/audit?{query}"), &admin.access)
            .await;
        assert_error(response, 400, "invalid_query").await;
    }
    let response = app
        .get_authed("/api/v1/audit/suspicious?windowHours=0", &admin.access)
        .await;
    assert_error(response, 400, "validation_failed").await;
    let response = app
        .get_authed("/api/v1/audit/export?format=xml", &admin.access)
        .await;
    assert_error(response, 400, "validation_failed").await;
    for path in [
        "/api/v1/audit",
        "/api/v1/audit/me",
        "/api/v1/audit/verify",
        "/api/v1/audit/export",
        "/api/v1/audit/suspicious",
    ] {
        let response = app.request(Method::GET, path, None, None).await;
        assert_eq!(response.status(), 401, "{path}");
        let response = app.get_authed(path, "not-a-token").await;
        assert_eq!(response.status(), 401, "{path}");
    }
    for path in [
        "/api/v1/audit/verify",
        "/api/v1/audit/export",
        "/api/v1/audit/suspicious",
    ] {
        assert_error(
            app.get_authed(path, &ada.access).await,
            403,
            "insufficient_scope",
        )
        .await;
    }
    let other = format!("/api/v1/audit/me?userId={}", admin.user_id);
    assert_error(
        app.get_authed(&other, &ada.access).await,
        403,
        "insufficient_scope",
    )
    .await;
}

#[tokio::test]
async fn reading_the_audit_log_needs_the_read_scope() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    let key = app
        .create_key(
            &admin.access,
            json!({"name": "openai only", "scopes": ["provider:openai"]}),
        )
        .await;
    let key = key["key"].as_str().unwrap();
    for path in ["/api/v1/audit", "/api/v1/audit/me"] {
        let response = app.with_api_key(Method::GET, path, key, None).await;
        assert_error(response, 403, "insufficient_scope").await;
    }
    let page = get_json(&app, "/api/v1/audit?action=access_denied", &admin.access).await;
    assert_eq!(records(&page).len(), 2, "each refusal is on the record");
}

#[tokio::test]
async fn reasons_with_control_characters_are_refused() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    let id = app.create_credential(&admin.access, "openai", "sk-x").await;
    let response = app
        .request(
            Method::DELETE,
            &format!("/api/v1/credentials/{id}"),
            Some(&admin.access),
            Some(json!({"reason": "gone\u{0000}"})),
        )
        .await;
    let body = assert_error(response, 400, "validation_failed").await;
    assert_eq!(body["details"][0]["field"], "reason");
}

#[tokio::test]
async fn exports_stream_jsonl_and_escaped_csv_for_admins() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    app.create_credential(&admin.access, "openai", "sk-export")
        .await;
    let quoted = app
        .client
        .post(app.url("/api/auth/login"))
        .header("user-agent", "=cmd|' /C calc'!A0, \"quoted\"")
        .json(&json!({"username": "root", "password": "wrong but long enough"}))
        .send()
        .await
        .unwrap();
    assert_eq!(quoted.status(), 401);

    let jsonl = app.get_authed("/api/v1/audit/export", &admin.access).await;
    assert_eq!(jsonl.status(), 200);
    assert_eq!(jsonl.headers()["content-type"], "application/x-ndjson");
    let text = jsonl.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["action"] == "credential_create"));
    assert!(!text.contains("sk-export"));

    let csv = app
        .get_authed(
            "/api/v1/audit/export?format=csv&action=login",
            &admin.access,
        )
        .await;
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(reader.headers().unwrap().get(4), Some("action"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert!(rows.iter().all(|row| &row[4] == "login"));
    let hostile = rows
        .iter()
        .find(|row| &row[7] == "false")
        .expect("failed login row");
    assert_eq!(&hostile[10], "'=cmd|' /C calc'!A0, \"quoted\"");
    // The export itself is on the record.
    let page = get_json(&app, "/api/v1/audit?action=audit_export", &admin.access).await;
    assert_eq!(records(&page).len(), 2);
}

#[tokio::test]
async fn suspicious_flags_users_with_many_failed_logins() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    let ada = app.user("ada").await;
    for _ in 0..5 {
        let response = app
            .post(
                "/api/auth/login",
                json!({"username": "ada", "password": "not her password at all"}),
            )
            .await;
        assert_eq!(response.status(), 401);
    }
    let report = get_json(&app, "/api/v1/audit/suspicious", &admin.access).await;
    let flagged = report["users"].as_array().unwrap();
    let ada_row = flagged
        .iter()
        .find(|u| u["userId"] == ada.user_id.as_str())
        .expect("ada flagged");
    assert_eq!(ada_row["failedLogins"], 5);
    assert!(
        ada_row["signals"]
            .as_array()
            .unwrap()
            .contains(&json!("failed_logins"))
    );
    assert!(
        flagged
            .iter()
            .all(|u| u["userId"] != admin.user_id.as_str())
    );
}

#[tokio::test]
async fn a_failing_audit_write_blocks_the_change() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    app.execute_sql(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events
         BEGIN SELECT RAISE(ABORT, 'audit refused'); END;",
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$;
         CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events
             FOR EACH ROW EXECUTE FUNCTION refuse_audit();",
    )
    .await;
    let response = app
        .post_authed(
            "/api/v1/credentials",
            &admin.access,
            json!({"provider": "openai", "credential": "sk-x"}),
        )
        .await;
    assert_error(response, 500, "internal_error").await;
    app.execute_sql(
        "DROP TRIGGER refuse_audit",
        "DROP TRIGGER refuse_audit ON audit_events",
    )
    .await;
    let list = get_json(&app, "/api/v1/credentials", &admin.access).await;
    assert_eq!(
        list["credentials"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );
}

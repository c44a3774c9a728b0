//! `GET /api/v1/credentials` and `GET /api/v1/keys` page with `limit` and an opaque `cursor`:
//! pages cover every item once, the last page has no `nextCursor`, another user's cursor shows
//! only the caller's own items, and bad limits or cursors are refused with 400.

use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error};

async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    let response = app.get_authed(path, token).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn ids(page: &Value, field: &str) -> Vec<String> {
    page[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {page}"))
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Follows `nextCursor` from the first page of `path` (which already has a `?`).
async fn walk(app: &TestApp, path: &str, field: &str, token: &str) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut next = path.to_owned();
    loop {
        let page = get_json(app, &next, token).await;
        pages += 1;
        seen.extend(ids(&page, field));
        match page["nextCursor"].as_str() {
            Some(cursor) => next = format!("{path}&cursor={cursor}"),
            None => return (seen, pages),
        }
    }
}

#[tokio::test]
async fn credential_and_key_lists_page_through_every_item_once() {
    let app = TestApp::spawn_with(&[("KORYPHAIOS_ALLOW_REGISTRATION", "true")]).await;
    let ada = app.user("ada").await;
    let bob = app.user("bob").await;
    // Older than all of Ada's: her cursors point past it in time.
    let bobs_credential = app
        .create_credential(&bob.access, "anthropic", "sk-bob")
        .await;
    for i in 0..5 {
        app.create_credential(&ada.access, "openai", &format!("sk-{i}"))
            .await;
        app.create_key(&ada.access, json!({"name": format!("key {i}")}))
            .await;
    }

    for (route, field) in [
        ("/api/v1/credentials", "credentials"),
        ("/api/v1/keys", "keys"),
    ] {
        let everything = get_json(&app, route, &ada.access).await;
        assert!(everything["nextCursor"].is_null(), "{everything}");
        let all = ids(&everything, field);
        assert_eq!(all.len(), 5, "{route}");
        let (paged, pages) = walk(&app, &format!("{route}?limit=2"), field, &ada.access).await;
        assert_eq!((paged, pages), (all.clone(), 3), "{route}");
        let (exact, pages) = walk(&app, &format!("{route}?limit=5"), field, &ada.access).await;
        assert_eq!(
            (exact, pages),
            (all, 1),
            "a full last page has no nextCursor"
        );
    }

    // Bob replaying Ada's cursor pages his own list and sees nothing of hers.
    let first = get_json(&app, "/api/v1/credentials?limit=1", &ada.access).await;
    let cursor = first["nextCursor"].as_str().unwrap();
    let bobs = get_json(
        &app,
        &format!("/api/v1/credentials?cursor={cursor}"),
        &bob.access,
    )
    .await;
    assert_eq!(ids(&bobs, "credentials"), [bobs_credential]);
}

#[tokio::test]
async fn bad_limits_and_cursors_are_refused() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    app.create_credential(&ada.access, "openai", "sk-1").await;
    app.create_credential(&ada.access, "openai", "sk-2").await;
    let credential_cursor =
        get_json(&app, "/api/v1/credentials?limit=1", &ada.access).await["nextCursor"]
            .as_str()
            .unwrap()
            .to_owned();
    let audit_cursor = get_json(&app, "/api/v1/audit?limit=1", &ada.access).await["nextCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    for route in ["/api/v1/credentials", "/api/v1/keys"] {
        for query in [
            "limit=0".to_owned(),
            "limit=1001".to_owned(),
            "limit=-1".to_owned(),
            "cursor=not-a-cursor".to_owned(),
            "cursor=".to_owned(),
            format!("cursor={audit_cursor}"),
        ] {
            let response = app
                .get_authed(&format!("{route}?{query}"), &ada.access)
                .await;
            let body = assert_error(response, 400, "validation_failed").await;
            let field = body["details"][0]["field"].as_str().unwrap().to_owned();
            assert!(
                field == "limit" || field == "cursor",
                "{route}?{query}: {body}"
            );
        }
    }
    // Each list's cursor names its own kind of id.
    let response = app
        .get_authed(
            &format!("/api/v1/keys?cursor={credential_cursor}"),
            &ada.access,
        )
        .await;
    assert_error(response, 400, "validation_failed").await;
    let body = assert_error(
        app.get_authed("/api/v1/keys?limit=0&cursor=x", &ada.access)
            .await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(body["details"].as_array().unwrap().len(), 2, "{body}");
}

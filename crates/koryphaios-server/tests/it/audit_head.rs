//! The audit chain head: deleting the newest records is reported as `truncated` (HTTP and CLI),
//! later records do not reuse their positions, a checkpoint printed by `audit checkpoint` checks
//! out until the chain is cut back past it (or the checkpoint is edited), and `/metrics` exports
//! the head.

use serde_json::Value;

use crate::harness::{TestApp, assert_error};

async fn verify(app: &TestApp, token: &str, query: &str) -> Value {
    let response = app
        .get_authed(&format!("/api/v1/audit/verify{query}"), token)
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The `checkpoint …` line of `koryphaios audit checkpoint`.
fn checkpoint_line(output: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix("checkpoint "))
        .unwrap_or_else(|| panic!("no checkpoint line in {output}"))
        .to_owned()
}

#[tokio::test]
async fn deleting_the_newest_records_is_reported_and_fails_an_earlier_checkpoint() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    for i in 0..3 {
        app.create_credential(&admin.access, "openai", &format!("sk-{i}"))
            .await;
    }
    let report = verify(&app, &admin.access, "").await;
    assert_eq!(report["valid"], true, "{report}");
    let head = report["headSeq"].as_i64().unwrap();
    assert_eq!(report["lastSeq"], head);

    let cli = app.cli_env();
    let printed = cli.run_ok(&["audit", "checkpoint"]);
    assert!(printed.contains(&format!("seq {head}\n")), "{printed}");
    let checkpoint = checkpoint_line(&printed);
    let ok = cli.run_ok(&["audit", "verify", "--checkpoint", &checkpoint]);
    assert!(
        ok.contains(&format!("checkpoint at position {head} ok")),
        "{ok}"
    );
    let report = verify(&app, &admin.access, &format!("?checkpoint={checkpoint}")).await;
    assert_eq!(
        (&report["valid"], &report["checkpoint"]["status"]),
        (&Value::Bool(true), &Value::from("present")),
        "{report}"
    );

    // An edited checkpoint does not check, whatever the chain holds.
    let mut chars: Vec<char> = checkpoint.chars().collect();
    let inside_mac = chars.len() - 5;
    chars[inside_mac] = if chars[inside_mac] == 'A' { 'B' } else { 'A' };
    let edited: String = chars.into_iter().collect();
    let refused = cli.run(&["audit", "verify", "--checkpoint", &edited]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("FAILED"));
    let report = verify(&app, &admin.access, &format!("?checkpoint={edited}")).await;
    assert_eq!(report["valid"], false);
    assert_eq!(report["checkpoint"]["status"], "invalid_mac");
    let malformed = app
        .get_authed("/api/v1/audit/verify?checkpoint=kcp1.nope", &admin.access)
        .await;
    assert_error(malformed, 400, "validation_failed").await;

    // Delete the newest two records behind the service's back.
    let delete = "DELETE FROM audit_events WHERE seq > (SELECT MAX(seq) - 2 FROM audit_events)";
    app.execute_sql(delete, delete).await;
    let report = verify(&app, &admin.access, "").await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["firstBroken"]["reason"], "truncated");
    assert_eq!(report["firstBroken"]["expectedSeq"], head - 1);
    assert_eq!(report["firstBroken"]["seq"], head);
    let broken = cli.run(&["audit", "verify"]);
    assert!(!broken.status.success());
    let said = String::from_utf8_lossy(&broken.stdout);
    assert!(
        said.contains(&format!("BROKEN at position {}", head - 1)) && said.contains("truncated"),
        "{said}"
    );
    let gone = cli.run(&["audit", "verify", "--checkpoint", &checkpoint]);
    assert!(!gone.status.success());
    let said = String::from_utf8_lossy(&gone.stdout);
    assert!(said.contains("no longer contains"), "{said}");
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not contain the checkpoint"));

    // New records continue after the head: the hole stays where it was.
    app.create_credential(&admin.access, "openai", "sk-after")
        .await;
    let report = verify(&app, &admin.access, "").await;
    assert_eq!(report["firstBroken"]["reason"], "sequence_gap", "{report}");
    assert_eq!(report["firstBroken"]["expectedSeq"], head - 1);
    assert_eq!(report["firstBroken"]["seq"], head + 1);
}

#[tokio::test]
async fn a_retention_purge_is_not_a_truncation_and_keeps_a_checkpoint_valid() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(400);
    let app = TestApp::spawn_at(dir.clone(), &[], long_ago).await;
    let admin = app.user("root").await;
    app.create_credential(&admin.access, "openai", "sk-old")
        .await;
    let cli = app.cli_env();
    let checkpoint = checkpoint_line(&cli.run_ok(&["audit", "checkpoint"]));
    app.stop().await;
    // Everything so far is past retention (by the real clock): the purge deletes it all.
    let purged = cli.run_ok(&["audit", "purge"]);
    assert!(purged.contains("purged 3 audit record(s)"), "{purged}");
    let verified = cli.run_ok(&["audit", "verify", "--checkpoint", &checkpoint]);
    assert!(verified.contains("audit chain valid"), "{verified}");
    assert!(verified.contains("ok: retention purged"), "{verified}");
}

#[tokio::test]
async fn metrics_export_the_chain_head() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    app.create_credential(&admin.access, "openai", "sk-metrics")
        .await;
    let head = verify(&app, &admin.access, "").await["headSeq"]
        .as_i64()
        .unwrap();
    // The gauge is process-wide and other tests' instances set it too: look for ours a few times.
    let mut last = String::new();
    for _ in 0..20 {
        let text = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("audit_chain_head_timestamp_seconds"),
            "{text}"
        );
        last = text
            .lines()
            .find(|line| line.starts_with("audit_chain_head_seq "))
            .unwrap_or_default()
            .to_owned();
        if last == format!("audit_chain_head_seq {head}") {
            return;
        }
    }
    panic!("expected audit_chain_head_seq {head}, last saw {last:?}");
}

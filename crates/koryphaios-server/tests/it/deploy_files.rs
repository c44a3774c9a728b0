//! The deployment files only use settings the service reads and metrics it exports, and parse.
//! (No Docker engine runs in CI: this is what can be checked without one.)

use std::path::{Path, PathBuf};

use koryphaios_server::Config;

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Every `KORYPHAIOS_…` word in `text`.
fn variables(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("KORYPHAIOS_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        found.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    found
}

#[test]
fn deployment_files_use_only_variables_the_service_reads() {
    for file in ["Dockerfile", "deploy/compose.yaml", "deploy/.env.example"] {
        let text = read(file);
        let names = variables(&text);
        assert!(
            !names.is_empty() || file == "deploy/.env.example",
            "{file} sets nothing"
        );
        let unknown = Config::unknown_variables(names.iter().map(String::as_str));
        assert!(
            unknown.is_empty(),
            "{file} uses variables the service does not read: {unknown:?}"
        );
    }
    let compose = read("deploy/compose.yaml");
    for needed in [
        "KORYPHAIOS_DATABASE_URL",
        "KORYPHAIOS_REDIS_URL",
        "KORYPHAIOS_HOST",
        "KORYPHAIOS_KMS_LOCAL_KEYRING_FILE",
        "koryphaios-1:",
        "koryphaios-2:",
        "profiles:",
    ] {
        assert!(compose.contains(needed), "compose.yaml lacks {needed}");
    }
    let dockerfile = read("Dockerfile");
    for needed in ["USER ", "HEALTHCHECK", "VOLUME", "FROM "] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed}");
    }
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage");
}

#[test]
fn the_dashboard_queries_only_exported_metrics_and_covers_them() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/koryphaios.json")).expect("JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(!exprs.is_empty());
    let exported = [
        "http_requests_total",
        "http_request_duration_seconds",
        "auth_attempts_total",
        "api_key_validations_total",
        "rate_limit_hits_total",
        "rate_limit_allowed_total",
        "credential_operations_total",
        "credentials_stored",
        "audit_events_total",
        "rate_limit_backend",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
    ];
    for expr in &exprs {
        assert!(
            exported.iter().any(|metric| expr.contains(metric)),
            "{expr} queries no exported metric"
        );
    }
    let all = exprs.join("\n");
    for metric in &exported[..9] {
        assert!(all.contains(metric), "the dashboard never shows {metric}");
    }
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(inner, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, out)),
        _ => {}
    }
}

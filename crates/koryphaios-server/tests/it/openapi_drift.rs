//! The committed `docs/openapi.yaml` must be what the code generates.

#[test]
fn committed_openapi_document_matches_the_code() {
    let generated = koryphaios_server::openapi::yaml().expect("generate");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == committed,
        "docs/openapi.yaml is stale: run `cargo run -p koryphaios-server -- openapi --output docs/openapi.yaml` and commit it"
    );
}

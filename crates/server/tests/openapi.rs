//! The committed OpenAPI document matches the code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

#[test]
fn committed_openapi_document_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi/sandpit.json");
    let generated = sandpit_server::http::openapi_json();
    if std::env::var_os("SANDPIT_UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/sandpit.json is out of date: run `SANDPIT_UPDATE_OPENAPI=1 cargo test -p sandpit-server --test openapi` and commit it"
    );
}

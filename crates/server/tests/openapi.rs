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

/// Generated clients (the web console's among them) need unique operation ids and query
/// parameters declared as such.
#[test]
fn operation_ids_are_unique_and_parameters_are_where_they_are_sent() {
    let doc: serde_json::Value = serde_json::from_str(&sandpit_server::http::openapi_json()).unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if let Some(id) = op["operationId"].as_str() {
                assert!(ids.insert(id.to_string()), "operationId {id} is used twice ({method} {path})");
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                if p["in"] == "path" {
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: {name} is not in the path"
                    );
                }
            }
        }
    }
}

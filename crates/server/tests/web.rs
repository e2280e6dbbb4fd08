//! The web console served at `/` next to the API, and the sandbox feature flag: when it is off,
//! every sandbox route answers 404 `feature_disabled` and `/v1/config` says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::TestServer;
use http_body_util::BodyExt;
use serde_json::json;

async fn get(server: &TestServer, path: &str) -> (StatusCode, Option<String>, Option<String>, Vec<u8>) {
    let resp = server.send(Request::get(path).body(Body::empty()).unwrap()).await;
    let status = resp.status();
    let h = |name| resp.headers().get(name).map(|v: &header::HeaderValue| v.to_str().unwrap().to_string());
    let (ct, cache) = (h(header::CONTENT_TYPE), h(header::CACHE_CONTROL));
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, ct, cache, body)
}

#[tokio::test]
async fn sandbox_routes_answer_feature_disabled_when_the_flag_is_off() {
    let server = TestServer::start_with(|c| c.enable_sandbox = false).await;
    for (method, path, body) in [
        ("GET", "/v1/sandboxes", None),
        ("POST", "/v1/sandboxes", Some(json!({}))),
        ("GET", "/v1/sandboxes/06h28gsc257mid1f90g0", None),
        ("POST", "/v1/sandboxes/x/exec", Some(json!({"shell": "true"}))),
        ("GET", "/v1/sandboxes/x/logs?follow=true", None),
        ("GET", "/v1/sandboxes/x/files?path=/", None),
    ] {
        let (status, v) = server.call(method, path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {v}");
        assert_eq!(v["code"], "feature_disabled", "{method} {path}: {v}");
        assert_eq!(v["message"], "the sandbox feature is disabled on this server");
    }
    let (status, v) = server.call_with_key("GET", "/v1/config", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["features"]["sandbox"], false);
    // The rest of the API works.
    for path in ["/v1/me", "/v1/gpus", "/v1/images", "/v1/billing/usage"] {
        let (status, v) = server.call("GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
    }
    // The console is there (without its Sandboxes section, which it hides itself).
    let (status, ct, _, _) = get(&server, "/ui/billing").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.unwrap().starts_with("text/html"));
}

#[tokio::test]
async fn the_console_is_served_at_the_root_and_the_api_keeps_its_paths() {
    let server = TestServer::start().await;
    let (status, v) = server.call("GET", "/v1/sandboxes", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = server.call_with_key("GET", "/v1/config", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["features"]["sandbox"], true);
    assert_eq!(v["currency"], "USD");
    assert_eq!(v["default_image"], "sandpit/busybox:latest");
    assert_eq!(v["limits"]["timeout_default_s"], 3600);

    let (status, ct, cache, index) = get(&server, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("text/html; charset=utf-8"));
    assert_eq!(cache.as_deref(), Some("no-cache"));
    let html = String::from_utf8(index.clone()).unwrap();
    assert!(html.contains("<html"), "{html}");
    // Client routes answer the same page, so a reload works.
    for path in ["/ui/sandboxes", "/ui/sandboxes/06h28gsc257mid1f90g0", "/anything/else"] {
        let (status, _, _, body) = get(&server, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body, index, "{path}");
    }
    // API paths never fall back to the page.
    let (status, v) = server.call("GET", "/v1/nope", None).await;
    assert_eq!((status, v["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, v) = server.call("POST", "/nope", Some(json!({}))).await;
    assert_eq!((status, v["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _, _, _) = get(&server, "/missing.png").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, ct, _, _) = get(&server, "/healthz").await;
    assert_eq!((status, ct.as_deref()), (StatusCode::OK, Some("application/json")));
    let (status, _, _, _) = get(&server, "/metrics").await;
    assert_eq!(status, StatusCode::OK);

    if sandpit_server::web::BUILT {
        // Hashed assets are cached for good, with their content type.
        let js = html.split('"').find(|s| s.starts_with("/assets/") && s.ends_with(".js")).unwrap();
        let (status, ct, cache, body) = get(&server, js).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("text/javascript; charset=utf-8"));
        assert_eq!(cache.as_deref(), Some("public, max-age=31536000, immutable"));
        assert!(!body.is_empty());
    } else {
        assert!(html.contains("npm --prefix web ci"), "{html}");
    }
}

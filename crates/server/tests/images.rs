//! Images through the API, against real registries on loopback: pulls with progress, the shared
//! cache (a second create transfers nothing), private images with credentials that never leak,
//! the failure reasons, the curated catalog, and prune.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{KEY, TestServer};
use http_body_util::BodyExt;
use sandpit_image::testkit::build_busybox_image;
use sandpit_image::testkit::registry::{Auth, CountingProxy, Registry};
use serde_json::{Value, json};

const PASSWORD: &str = "hunter2-very-secret-passw0rd";

/// A registry (behind a counting proxy) holding the test image as `tests/busybox:1`.
struct Fixture {
    _work: tempfile::TempDir,
    registry: Registry,
    proxy: CountingProxy,
}

fn fixture(auth: Auth) -> Fixture {
    let work = tempfile::tempdir().unwrap();
    let image = build_busybox_image(work.path(), "latest").unwrap();
    let registry = Registry::start(auth).unwrap();
    registry.push(&image.layout, "latest", "tests/busybox:1", None).unwrap();
    let proxy = CountingProxy::start(registry.addr()).unwrap();
    Fixture { _work: work, registry, proxy }
}

async fn server_for(proxy: &CountingProxy) -> TestServer {
    let insecure = vec![proxy.addr().to_string()];
    TestServer::start_with(move |c| {
        c.insecure_registries = insecure;
        c.pull_attempts = 2;
        c.pull_backoff_ms = 50;
    })
    .await
}

/// Creates and waits; returns the view whatever the state.
async fn create_wait(s: &TestServer, body: Value) -> Value {
    let (st, v) = s.call("POST", "/v1/sandboxes?wait=true", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

#[tokio::test]
async fn a_registry_image_is_pulled_with_progress_and_a_second_create_transfers_nothing() {
    let f = fixture(Auth::None);
    let s = server_for(&f.proxy).await;
    let image = format!("{}/tests/busybox:1", f.proxy.addr());
    let v = create_wait(&s, json!({"image": image, "keep_running": true, "memory": "64Mi"})).await;
    assert_eq!(v["state"], "running", "{v}");
    let id = v["id"].as_str().unwrap();
    assert_eq!(s.sh(id, "echo $GREETING").await["stdout"], "hello\n", "the image's config applies");
    assert!(f.proxy.blob_gets() > 0);
    // Pull progress is in the sandbox's events.
    let events = s.app.store.list_events(&id.parse().unwrap(), 0, 100).await.unwrap();
    let progress: Vec<&Value> = events.iter().filter_map(|e| e.progress.as_ref()).collect();
    assert!(!progress.is_empty(), "no progress events: {events:?}");
    assert!(
        progress.iter().any(|p| p["status"] == "done" && p["done_bytes"] == p["total_bytes"]),
        "{progress:?}"
    );
    // A second sandbox of the same image: not one request reaches the registry.
    f.proxy.reset();
    let v = create_wait(&s, json!({"image": image, "keep_running": true, "memory": "64Mi"})).await;
    assert_eq!(v["state"], "running");
    assert_eq!(f.proxy.requests().len(), 0, "{:?}", f.proxy.requests());
    // Listed in the store.
    let (_, images) = s.call("GET", "/v1/images", None).await;
    let local = images["local"].as_array().unwrap();
    assert!(
        local.iter().any(|i| i["references"].as_array().unwrap().iter().any(|r| r == &json!(image))
            && i["source"] == "registry"),
        "{images}"
    );
}

#[tokio::test]
async fn failures_get_their_reasons() {
    let mut f = fixture(Auth::None);
    let s = server_for(&f.proxy).await;
    let missing = format!("{}/tests/busybox:nope", f.proxy.addr());
    let v = create_wait(&s, json!({"image": missing})).await;
    assert_eq!(v["state"], "failed");
    assert!(v["state_reason"].as_str().unwrap().starts_with("image_not_found"), "{v}");
    f.registry.stop();
    let down = format!("{}/tests/busybox:1", f.proxy.addr());
    let v = create_wait(&s, json!({"image": down})).await;
    assert_eq!(v["state"], "failed");
    assert!(v["state_reason"].as_str().unwrap().starts_with("registry_unreachable"), "{v}");
    // A registry not listed as insecure is only spoken to over HTTPS.
    let other = Registry::start(Auth::None).unwrap();
    let v = create_wait(&s, json!({"image": format!("{}/tests/busybox:1", other.addr())})).await;
    assert_eq!(v["state"], "failed");
    assert!(v["state_reason"].as_str().unwrap().starts_with("registry_"), "{v}");
    let (st, e) = s.call("POST", "/v1/sandboxes", Some(json!({"image": "Not A Reference!"}))).await;
    assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("image")), "{e}");
}

/// Captures every log line of this test process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn body_text(s: &TestServer, path: &str) -> String {
    let req =
        Request::get(path).header("authorization", format!("Bearer {KEY}")).body(Body::empty()).unwrap();
    let resp = s.send(req).await;
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_millis(500), body.frame()).await {
        if let Ok(d) = frame.into_data() {
            out.extend_from_slice(&d);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn private_images_need_their_credentials_and_the_password_never_leaks() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let f = fixture(Auth::htpasswd("alice", PASSWORD));
    let s = server_for(&f.proxy).await;
    let image = format!("{}/tests/busybox:1", f.proxy.addr());
    let mut responses = Vec::new();
    let creds = json!({"reference": image, "username": "alice", "password": PASSWORD});
    let ok = create_wait(&s, json!({"image": creds, "keep_running": true, "memory": "64Mi"})).await;
    responses.push(ok.to_string());
    assert_eq!(ok["state"], "running", "{ok}");
    let id = ok["id"].as_str().unwrap().to_string();

    let wrong = json!({"reference": image, "username": "alice", "password": "not-the-password"});
    let bad = create_wait(&s, json!({"image": wrong})).await;
    responses.push(bad.to_string());
    assert_eq!(bad["state"], "failed");
    assert!(bad["state_reason"].as_str().unwrap().starts_with("registry_auth_failed"), "{bad}");
    assert!(!bad["state_reason"].as_str().unwrap().contains("not-the-password"));

    // The cached private image is not another tenant's for the taking.
    let anon = create_wait(&s, json!({"image": image})).await;
    responses.push(anon.to_string());
    assert_eq!(anon["state"], "failed", "{anon}");
    assert!(anon["state_reason"].as_str().unwrap().starts_with("registry_auth_failed"), "{anon}");
    // With the right credentials, the cache serves it: no layer is transferred again.
    f.proxy.reset();
    let again = create_wait(&s, json!({"image": creds, "keep_running": true, "memory": "64Mi"})).await;
    responses.push(again.to_string());
    assert_eq!(again["state"], "running");
    assert_eq!(f.proxy.blob_gets(), 0);

    for path in [
        format!("/v1/sandboxes/{id}"),
        "/v1/sandboxes".to_string(),
        "/v1/images".to_string(),
        format!("/v1/sandboxes/{id}/logs"),
    ] {
        let (_, v) = s.call("GET", &path, None).await;
        responses.push(v.to_string());
    }
    responses.push(body_text(&s, &format!("/v1/sandboxes/{id}/events")).await);
    for r in &responses {
        assert!(!r.contains(PASSWORD), "an API response holds the password: {r}");
    }
    let log = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(log.contains("sandbox created"), "the log capture works");
    assert!(!log.contains(PASSWORD), "a log line holds the password");
    // Sealed in the database, never in plain text.
    let record = s.app.store.get_sandbox(&id.parse().unwrap()).await.unwrap().unwrap();
    assert!(record.credentials.is_some());
    for entry in std::fs::read_dir(s.data_dir()).unwrap().flatten() {
        let p = entry.path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
                "{} holds the password",
                p.display()
            );
        }
    }
}

#[tokio::test]
async fn the_catalog_lists_curated_images_and_refuses_unbuilt_ones_clearly() {
    let s = TestServer::start().await;
    let (st, v) = s.call("GET", "/v1/images", None).await;
    assert_eq!(st, StatusCode::OK);
    let curated = v["curated"].as_array().unwrap();
    for cat in ["base", "code-interpreter", "pytorch", "vllm"] {
        assert!(curated.iter().any(|c| c["category"] == cat), "{cat}");
    }
    let busybox = curated.iter().find(|c| c["name"] == "busybox").unwrap();
    assert_eq!(busybox["available"], true);
    let python = curated.iter().find(|c| c["name"] == "python").unwrap();
    assert_eq!((python["available"].as_bool(), python["build"].as_str()), (Some(false), Some("python")));
    let (st, e) = s.call("POST", "/v1/sandboxes", Some(json!({"image": "python"}))).await;
    assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("image")));
    assert!(e["message"].as_str().unwrap().contains("sandpit image build python"), "{e}");
    // A curated name resolves to its reference.
    let v = s.create(json!({"image": "busybox"})).await;
    assert_eq!(v["image"], "sandpit/busybox:latest");

    // The operator edits the catalog while the server runs: the change is seen at once.
    let path = s.data_dir().join("catalog.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(
        "\n[[image]]\nname = \"tiny\"\ncategory = \"team\"\ndescription = \"Our busybox\"\nreference = \"sandpit/busybox:latest\"\n",
    );
    // A different modification time even on coarse-grained file systems.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&path, &text).unwrap();
    let (_, v) = s.call("GET", "/v1/images", None).await;
    let tiny = v["curated"].as_array().unwrap().iter().find(|c| c["name"] == "tiny").cloned();
    assert_eq!(tiny.map(|t| t["available"].clone()), Some(json!(true)), "{v}");
    assert_eq!(s.create(json!({"image": "tiny"})).await["image"], "sandpit/busybox:latest");
    // A broken edit: the last good catalog stays.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&path, "[[image]]\nname = 'broken'\n").unwrap();
    let (st, v) = s.call("GET", "/v1/images", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(v["curated"].as_array().unwrap().iter().any(|c| c["name"] == "tiny"), "{v}");
}

#[tokio::test]
async fn pull_streams_progress_and_prune_keeps_what_is_used() {
    let f = fixture(Auth::None);
    let s = server_for(&f.proxy).await;
    let image = format!("{}/tests/busybox:1", f.proxy.addr());
    let req = Request::post("/v1/images/pull")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("accept", "application/x-ndjson")
        .body(Body::from(json!({"reference": image}).to_string()))
        .unwrap();
    let resp = s.send(req).await;
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().any(|e| e["event"] == "progress"), "{text}");
    assert_eq!(events.last().unwrap()["event"], "done", "{text}");
    // In use: removal refused; prune keeps it and the default image.
    let v = s.create(json!({"image": image, "keep_running": true, "memory": "64Mi"})).await;
    let (st, _) = s.call("DELETE", &format!("/v1/images?reference={image}"), None).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, r) = s.call("POST", "/v1/images/prune", None).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["removed_references"], json!([]));
    // Once the sandbox is gone, prune removes the pulled image (not the default one).
    s.call("DELETE", &format!("/v1/sandboxes/{}", v["id"].as_str().unwrap()), None).await;
    let (_, r) = s.call("POST", "/v1/images/prune", None).await;
    assert_eq!(r["removed_references"], json!([image]), "{r}");
    let (_, images) = s.call("GET", "/v1/images", None).await;
    let refs: Vec<String> = images["local"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["references"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(refs, ["sandpit/busybox:latest"]);
}

//! Restarts of the control plane: deadlines survive, running sandboxes are adopted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{KEY, TestServer};
use sandpit_server::Server;
use serde_json::json;

async fn restart(s: TestServer) -> TestServer {
    let dir = s.stop().await;
    let server = Server::start(common::config(&dir.path().join("data")), Some(KEY.into())).await.unwrap();
    let app = server.app().clone();
    let router = sandpit_server::http::router(app.clone());
    TestServer { guard: common::Cleanup(Some(dir.path().join("data"))), dir, app, router }
}

#[tokio::test]
async fn a_deadline_holds_across_a_restart() {
    let s = TestServer::start().await;
    let created = Instant::now();
    let id = s.create(json!({"timeout_s": 3})).await["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = restart(s).await;
    let end = s.wait_for(&id, Duration::from_secs(10), |v| v["state"] == "terminated").await;
    assert_eq!(end["state_reason"], "timeout");
    let took = created.elapsed();
    assert!(took < Duration::from_millis(4500), "a 3 s sandbox ended after {took:?}");
    assert!(common::containers(&s.data_dir()).is_empty());
}

#[tokio::test]
async fn running_and_paused_sandboxes_survive_a_restart() {
    let s = TestServer::start().await;
    let run = s.create(json!({})).await["id"].as_str().unwrap().to_string();
    let paused = s.create(json!({})).await["id"].as_str().unwrap().to_string();
    s.sh(&run, "echo 1 > /root/a").await;
    s.sh(&paused, "echo 2 > /root/b").await;
    s.call("POST", &format!("/v1/sandboxes/{paused}/pause"), None).await;
    let s = restart(s).await;
    assert_eq!(s.sh(&run, "cat /root/a").await["stdout"], "1\n");
    let (_, p) = s.call("GET", &format!("/v1/sandboxes/{paused}"), None).await;
    assert_eq!(p["state"], "paused");
    s.call("POST", &format!("/v1/sandboxes/{paused}/resume"), None).await;
    assert_eq!(s.sh(&paused, "cat /root/b").await["stdout"], "2\n");
    for id in [&run, &paused] {
        let (st, _) = s.call("DELETE", &format!("/v1/sandboxes/{id}"), None).await;
        assert_eq!(st, axum::http::StatusCode::NO_CONTENT);
    }
    assert!(common::containers(&s.data_dir()).is_empty());
}

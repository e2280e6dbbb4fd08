//! The native API against a real server: auth, validation, lifecycle, exec, files, logs,
//! events, timeouts, retention and concurrency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{KEY, TestServer, containers, mounts};
use http_body_util::BodyExt;
use serde_json::{Value, json};

#[tokio::test]
async fn requests_without_a_valid_key_are_refused_with_401() {
    let s = TestServer::start().await;
    let (st, v) = s.call_with_key("GET", "/v1/sandboxes", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(v["code"], "unauthorized");
    let (st, _) = s.call_with_key("GET", "/v1/sandboxes", None, Some("sp_wrong")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = s.call_with_key("GET", "/healthz", None, None).await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("ok")));
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_creates_nothing() {
    let s = TestServer::start().await;
    let cases = [
        (json!({"imagee": "x"}), 400, "bad_request", None),
        (json!({"cpu": "lots"}), 400, "invalid_input", Some("cpu")),
        (json!({"cpu": "1000"}), 400, "invalid_input", Some("cpu")),
        (json!({"memory": "1Ki"}), 400, "invalid_input", Some("memory")),
        (json!({"timeout_s": 0}), 400, "invalid_input", Some("timeout_s")),
        (json!({"env": {"BAD-NAME": "x"}}), 400, "invalid_input", Some("env.BAD-NAME")),
        (json!({"name": "Not Valid"}), 400, "invalid_input", Some("name")),
        (json!({"gpu": {"type": "H100", "fraction": 33}}), 400, "invalid_input", Some("gpu.fraction")),
        (json!({"gpu": {"type": "H100"}}), 400, "invalid_input", Some("gpu.type")),
        (json!({"project": "nope"}), 404, "not_found", None),
    ];
    for (body, status, code, field) in cases {
        let (st, v) = s.call("POST", "/v1/sandboxes", Some(body.clone())).await;
        assert_eq!(st.as_u16(), status, "{body} -> {v}");
        assert_eq!(v["code"], code, "{body} -> {v}");
        if let Some(f) = field {
            assert_eq!(v["field"], f, "{body} -> {v}");
        }
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Not JSON, and too large.
    let req = Request::post("/v1/sandboxes")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let resp = s.send(req).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let big = json!({"metadata": {"k": "x".repeat(2 << 20)}});
    let (st, v) = s.call("POST", "/v1/sandboxes", Some(big)).await;
    assert_eq!((st, v["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
    // Unknown and malformed ids are 404.
    for id in ["06h275dmnd5n7hp83s3p", "not-an-id", "..%2F..%2Fetc"] {
        let (st, v) = s.call("GET", &format!("/v1/sandboxes/{id}"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{id}: {v}");
    }
    let (_, list) = s.call("GET", "/v1/sandboxes", None).await;
    assert_eq!(list["items"], json!([]), "a rejected request left something behind");
    assert!(containers(&s.data_dir()).is_empty());
}

#[tokio::test]
async fn a_sandbox_goes_through_its_lifecycle() {
    let s = TestServer::start().await;
    let v = s.create(json!({"name": "tour", "cpu": "500m", "memory": "128Mi", "timeout_s": 600, "metadata": {"team": "a"}})).await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["image"], "sandpit/busybox:latest");
    assert_eq!((v["cpu"].as_str(), v["memory"].as_str()), (Some("500m"), Some("128Mi")));
    assert!(v["ends_at"].is_string() && v["started_at"].is_string());
    assert_eq!(v["project"], "default");

    let out = s.sh(&id, "echo hello; echo oops >&2; exit 3").await;
    assert_eq!(
        (out["stdout"].as_str(), out["stderr"].as_str(), out["exit_code"].as_i64()),
        (Some("hello\n"), Some("oops\n"), Some(3))
    );

    // By name too.
    let (st, by_name) = s.call("GET", "/v1/sandboxes/tour", None).await;
    assert_eq!((st, by_name["id"].as_str()), (StatusCode::OK, Some(id.as_str())));

    s.sh(&id, "echo kept > /root/file").await;
    let (st, p) = s.call("POST", &format!("/v1/sandboxes/{id}/pause"), None).await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["state"], "paused");
    assert!(p["ends_at"].is_null() && p["remaining_s"].as_u64().is_some_and(|r| r > 590 && r <= 600), "{p}");
    let (st, again) = s.call("POST", &format!("/v1/sandboxes/{id}/pause"), None).await;
    assert_eq!(
        (st, again["code"].as_str(), again["state"].as_str()),
        (StatusCode::CONFLICT, Some("wrong_state"), Some("paused"))
    );
    let (st, e) = s.call("POST", &format!("/v1/sandboxes/{id}/exec"), Some(json!({"shell": "true"}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::CONFLICT, Some("wrong_state")));

    let (st, r) = s.call("POST", &format!("/v1/sandboxes/{id}/resume"), None).await;
    assert_eq!((st, r["state"].as_str()), (StatusCode::OK, Some("running")), "{r}");
    assert!(r["remaining_s"].is_null() && r["ends_at"].is_string());
    assert_eq!(s.sh(&id, "cat /root/file").await["stdout"], "kept\n");

    let (st, _) = s.call("DELETE", &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, gone) = s.call("GET", &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(
        (gone["state"].as_str(), gone["state_reason"].as_str()),
        (Some("terminated"), Some("deleted"))
    );
    assert!(gone["terminated_at"].is_string());
    let (st, _) = s.call("DELETE", &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "delete is idempotent");
    assert!(containers(&s.data_dir()).is_empty());
    assert!(mounts(&s.data_dir()).is_empty());

    // The state history is kept.
    let events = s.app.store.list_events(&id.parse().unwrap(), 0, 100).await.unwrap();
    let states: Vec<_> = events.iter().filter_map(|e| e.state.map(|s| s.as_str())).collect();
    assert_eq!(states, ["provisioning", "running", "paused", "running", "terminated"]);
}

#[tokio::test]
async fn names_are_unique_among_live_sandboxes_of_a_project() {
    let s = TestServer::start().await;
    let v = s.create(json!({"name": "web"})).await;
    let (st, e) = s.call("POST", "/v1/sandboxes", Some(json!({"name": "web"}))).await;
    assert_eq!(
        (st, e["code"].as_str(), e["field"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"), Some("name"))
    );
    s.call("DELETE", &format!("/v1/sandboxes/{}", v["id"].as_str().unwrap()), None).await;
    s.create(json!({"name": "web"})).await;
}

#[tokio::test]
async fn a_sandbox_ends_itself_at_its_timeout_and_paused_time_does_not_count() {
    let s = TestServer::start().await;
    let v = s.create(json!({"timeout_s": 2})).await;
    let id = v["id"].as_str().unwrap();
    let created = Instant::now();
    let end = s.wait_for(id, Duration::from_secs(10), |v| v["state"] == "terminated").await;
    assert_eq!(end["state_reason"], "timeout");
    let took = created.elapsed();
    assert!(took < Duration::from_millis(3500), "ended {took:?} after create with a 2 s timeout");

    // Extension pushes the deadline; pause stops the clock.
    let v = s.create(json!({"timeout_s": 2})).await;
    let id = v["id"].as_str().unwrap();
    let (st, ext) =
        s.call("POST", &format!("/v1/sandboxes/{id}/timeout"), Some(json!({"timeout_s": 4}))).await;
    assert_eq!(st, StatusCode::OK, "{ext}");
    s.call("POST", &format!("/v1/sandboxes/{id}/pause"), None).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let paused = s.wait_for(id, Duration::from_secs(0), |_| true).await;
    assert_eq!(paused["state"], "paused", "paused time must not count: {paused}");
    s.call("POST", &format!("/v1/sandboxes/{id}/resume"), None).await;
    let ended = s.wait_for(id, Duration::from_secs(10), |v| v["state"] == "terminated").await;
    assert_eq!(ended["state_reason"], "timeout");
    let (st, e) =
        s.call("POST", &format!("/v1/sandboxes/{id}/timeout"), Some(json!({"timeout_s": 10}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::CONFLICT, Some("wrong_state")));
}

#[tokio::test]
async fn a_workload_exit_terminates_the_sandbox_and_keeps_code_and_logs() {
    let s = TestServer::start().await;
    let (st, v) = s
        .call(
            "POST",
            "/v1/sandboxes",
            Some(json!({"command": ["sh", "-c", "echo hello-from-workload; echo warn >&2; exit 3"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let id = v["id"].as_str().unwrap();
    let end = s.wait_for(id, Duration::from_secs(10), |v| v["state"] == "terminated").await;
    assert_eq!((end["state_reason"].as_str(), end["exit_code"].as_i64()), (Some("exit"), Some(3)), "{end}");
    let (st, logs) = s.call("GET", &format!("/v1/sandboxes/{id}/logs"), None).await;
    assert_eq!(st, StatusCode::OK);
    let texts: Vec<(&str, &str)> = logs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["stream"].as_str().unwrap(), e["text"].as_str().unwrap()))
        .collect();
    assert!(texts.contains(&("stdout", "hello-from-workload\n")), "{logs}");
    assert!(texts.contains(&("stderr", "warn\n")), "{logs}");
    assert!(containers(&s.data_dir()).is_empty());

    // keep_running keeps it up.
    let v = s.create(json!({"command": ["true"], "keep_running": true})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, still) = s.call("GET", &format!("/v1/sandboxes/{}", v["id"].as_str().unwrap()), None).await;
    assert_eq!(still["state"], "running");
}

#[tokio::test]
async fn an_unknown_image_fails_with_a_reason() {
    let s = TestServer::start().await;
    let (_, v) = s.call("POST", "/v1/sandboxes?wait=true", Some(json!({"image": "sandpit/absent:1"}))).await;
    assert_eq!(v["state"], "failed", "{v}");
    // Not in the store, so it is looked for on Docker Hub: absent there, or Docker Hub is out of
    // reach from this machine. The registry tests check each reason on a local registry.
    let reason = v["state_reason"].as_str().unwrap();
    assert!(
        ["image_not_found", "registry_unreachable", "registry_auth_failed"]
            .iter()
            .any(|r| reason.starts_with(r)),
        "{v}"
    );
    assert!(containers(&s.data_dir()).is_empty());
}

#[tokio::test]
async fn exec_streams_ndjson_as_output_is_produced() {
    let s = TestServer::start().await;
    let id = s.create(json!({})).await["id"].as_str().unwrap().to_string();
    let req = Request::post(format!("/v1/sandboxes/{id}/exec"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("accept", "application/x-ndjson")
        .body(Body::from(json!({"shell": "echo first; sleep 2; echo second"}).to_string()))
        .unwrap();
    let started = Instant::now();
    let resp = s.send(req).await;
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut body = resp.into_body();
    let mut lines: Vec<(Duration, Value)> = Vec::new();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            buf.extend_from_slice(&data);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                lines.push((started.elapsed(), serde_json::from_slice(&line).unwrap()));
            }
        }
    }
    use base64::Engine as _;
    let b64 = |v: &Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD.decode(v["data"].as_str().unwrap()).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(lines[0].1["event"], "started");
    let first = lines.iter().find(|(_, v)| v["event"] == "stdout").unwrap();
    assert_eq!(b64(&first.1), "first\n");
    let exited = lines.iter().find(|(_, v)| v["event"] == "exited").unwrap();
    assert_eq!(exited.1["exit_code"], 0);
    assert!(
        exited.0 - first.0 >= Duration::from_millis(1500),
        "first output at {:?}, exit at {:?}",
        first.0,
        exited.0
    );
}

#[tokio::test]
async fn a_streaming_exec_whose_client_goes_away_ends_even_when_silent() {
    let s = TestServer::start().await;
    let id = s.create(json!({})).await["id"].as_str().unwrap().to_string();
    let req = Request::post(format!("/v1/sandboxes/{id}/exec"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("accept", "application/x-ndjson")
        .body(Body::from(json!({"command": ["sleep", "3333"]}).to_string()))
        .unwrap();
    let resp = s.send(req).await;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("started"));
    let running = |out: &Value| out["stdout"].as_str().unwrap().contains("sleep 3333");
    let ps = json!({"shell": "ps -o args"});
    let (_, out) = s.call("POST", &format!("/v1/sandboxes/{id}/exec"), Some(ps.clone())).await;
    assert!(running(&out), "{out}");
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out) = s.call("POST", &format!("/v1/sandboxes/{id}/exec"), Some(ps.clone())).await;
        if !running(&out) {
            break;
        }
        assert!(Instant::now() < deadline, "the command outlived its client: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn background_processes_are_listed_fed_followed_and_signalled() {
    let s = TestServer::start().await;
    let id = s.create(json!({})).await["id"].as_str().unwrap().to_string();
    let exec = format!("/v1/sandboxes/{id}/exec");
    // A background `cat` with its stdin kept open, and a sleeper.
    let (st, cat) = s
        .call("POST", &exec, Some(json!({"command": ["cat"], "background": true, "keep_stdin_open": true})))
        .await;
    assert_eq!(st, StatusCode::OK, "{cat}");
    let cat = cat["pid"].as_u64().unwrap();
    let (_, sleeper) =
        s.call("POST", &exec, Some(json!({"command": ["sleep", "600"], "background": true}))).await;
    let sleeper = sleeper["pid"].as_u64().unwrap();
    let (st, procs) = s.call("GET", &format!("/v1/sandboxes/{id}/processes"), None).await;
    assert_eq!(st, StatusCode::OK, "{procs}");
    let find = |procs: &Value, pid: u64| procs.as_array().unwrap().iter().find(|p| p["pid"] == pid).cloned();
    assert_eq!(find(&procs, cat).unwrap()["argv"], json!(["cat"]));
    assert_eq!(find(&procs, sleeper).unwrap()["running"], true);

    // Feed cat, close its stdin, and collect what it wrote.
    let stdin = format!("/v1/sandboxes/{id}/processes/{cat}/stdin");
    let (st, _) = s.call("POST", &stdin, Some(json!({"data": "hello "}))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) =
        s.call("POST", &stdin, Some(json!({"data_base64": "YmFja2dyb3VuZAo=", "close": true}))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, out) = s.call("GET", &format!("/v1/sandboxes/{id}/processes/{cat}/output"), None).await;
    assert_eq!(st, StatusCode::OK, "{out}");
    assert_eq!((out["stdout"].as_str(), out["exit_code"].as_i64()), (Some("hello background\n"), Some(0)));
    // The sleeper's stdin is not open.
    let (st, e) = s
        .call("POST", &format!("/v1/sandboxes/{id}/processes/{sleeper}/stdin"), Some(json!({"data": "x"})))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");

    // Signals: a bad name is refused; KILL ends it.
    let signal = format!("/v1/sandboxes/{id}/processes/{sleeper}/signal");
    let (st, e) = s.call("POST", &signal, Some(json!({"signal": "BOGUS"}))).await;
    assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("signal")), "{e}");
    let (st, _) = s.call("POST", &signal, Some(json!({"signal": "KILL"}))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, out) = s.call("GET", &format!("/v1/sandboxes/{id}/processes/{sleeper}/output"), None).await;
    assert_eq!(out["signal"], 9, "{out}");
    let (_, procs) = s.call("GET", &format!("/v1/sandboxes/{id}/processes"), None).await;
    assert_eq!(find(&procs, sleeper).unwrap()["running"], false);
    // Exited (still listed): 409; not a pid: 400 naming it; unknown: 404.
    let (st, e) = s.call("POST", &signal, Some(json!({"signal": "TERM"}))).await;
    assert_eq!(
        (st, e["message"].as_str()),
        (StatusCode::CONFLICT, Some(format!("process {sleeper} has exited").as_str()))
    );
    let (st, e) = s
        .call("POST", &format!("/v1/sandboxes/{id}/processes/abc/signal"), Some(json!({"signal": "TERM"})))
        .await;
    assert_eq!((st, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("pid")), "{e}");
    // Unknown process.
    let (st, _) = s
        .call("POST", &format!("/v1/sandboxes/{id}/processes/999999/signal"), Some(json!({"signal": "TERM"})))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn files_round_trip_through_the_api() {
    let s = TestServer::start().await;
    let id = s.create(json!({})).await["id"].as_str().unwrap().to_string();
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let req = Request::put(format!("/v1/sandboxes/{id}/files/content?path=/data/blob.bin&mode=600"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::from(payload.clone()))
        .unwrap();
    let resp = s.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let entry: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!((entry["size"].as_u64(), entry["mode"].as_u64()), (Some(3_000_000), Some(0o600)));
    let req = Request::get(format!("/v1/sandboxes/{id}/files/content?path=/data/blob.bin"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::empty())
        .unwrap();
    let back = s.send(req).await.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(back.as_ref(), payload.as_slice());
    let (st, _) = s
        .call("POST", &format!("/v1/sandboxes/{id}/files/mkdir"), Some(json!({"path": "/data/sub/dir"})))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, mv) = s
        .call(
            "POST",
            &format!("/v1/sandboxes/{id}/files/move"),
            Some(json!({"from": "/data/blob.bin", "to": "/data/sub/b.bin"})),
        )
        .await;
    assert_eq!((st, mv["path"].as_str()), (StatusCode::OK, Some("/data/sub/b.bin")));
    let (_, list) = s.call("GET", &format!("/v1/sandboxes/{id}/files?path=/data&depth=3"), None).await;
    let paths: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/data/sub", "/data/sub/b.bin", "/data/sub/dir"]);
    let (st, e) = s.call("GET", &format!("/v1/sandboxes/{id}/files/stat?path=/data/nope"), None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (st, _) =
        s.call("DELETE", &format!("/v1/sandboxes/{id}/files?path=/data&recursive=true"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn events_stream_the_history_then_live_changes() {
    let s = TestServer::start().await;
    let id = s.create(json!({})).await["id"].as_str().unwrap().to_string();
    let req = Request::get(format!("/v1/sandboxes/{id}/events"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::empty())
        .unwrap();
    let resp = s.send(req).await;
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut body = resp.into_body();
    let app = s.app.clone();
    let sid: sandpit_types::SandboxId = id.parse().unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.delete_record(sid, "deleted").await.unwrap();
    });
    let mut text = String::new();
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
        if let Ok(d) = frame.unwrap().into_data() {
            text.push_str(&String::from_utf8_lossy(&d));
        }
    }
    let states: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["state"].as_str().map(String::from))
        .collect();
    assert_eq!(states, ["provisioning", "running", "terminated"], "{text}");
}

#[tokio::test]
async fn lists_filter_by_state_metadata_and_project_and_paginate() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let v = s
            .create(
                json!({"metadata": {"n": i.to_string(), "group": if i % 2 == 0 { "even" } else { "odd" }}}),
            )
            .await;
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    s.call("POST", &format!("/v1/sandboxes/{}/pause", ids[0]), None).await;
    let (_, paused) = s.call("GET", "/v1/sandboxes?state=paused", None).await;
    assert_eq!(paused["items"].as_array().unwrap().len(), 1);
    let (_, even) = s.call("GET", "/v1/sandboxes?metadata=group:even", None).await;
    assert_eq!(even["items"].as_array().unwrap().len(), 3);
    // An unknown project is an error, not an empty list (as a project of someone else's).
    let (st, none) = s.call("GET", "/v1/sandboxes?project=other", None).await;
    assert_eq!((st, none["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{none}");
    let (_, mine) = s.call("GET", "/v1/sandboxes?project=default", None).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 5);
    let (st, bad) = s.call("GET", "/v1/sandboxes?cursor=zzz", None).await;
    assert_eq!((st, bad["field"].as_str()), (StatusCode::BAD_REQUEST, Some("cursor")), "{bad}");
    let (st, bad) = s.call("GET", "/v1/sandboxes?state=sleeping", None).await;
    assert_eq!((st, bad["field"].as_str()), (StatusCode::BAD_REQUEST, Some("state")));
    // Pages of 2 cover everything once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sandboxes?limit=2&cursor={c}"),
            None => "/v1/sandboxes?limit=2".to_string(),
        };
        let (_, page) = s.call("GET", &path, None).await;
        seen.extend(page["items"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
}

#[tokio::test]
async fn paused_sandboxes_are_deleted_after_the_retention() {
    let s = TestServer::start_with(|c| c.paused_retention_s = 1).await;
    let id = s.create(json!({})).await["id"].as_str().unwrap().to_string();
    s.call("POST", &format!("/v1/sandboxes/{id}/pause"), None).await;
    sandpit_server::reconcile::retention_once(&s.app).await.unwrap();
    let (_, v) = s.call("GET", &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(v["state"], "paused", "kept within the retention");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sandpit_server::reconcile::retention_once(&s.app).await.unwrap();
    let (_, v) = s.call("GET", &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!((v["state"].as_str(), v["state_reason"].as_str()), (Some("terminated"), Some("retention")));
    assert!(containers(&s.data_dir()).is_empty());
    assert!(!s.data_dir().join(format!("runtime/sandboxes/{id}")).exists(), "the disk is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_creates_execs_and_deletes_leave_nothing_behind() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let s = s.clone();
        tasks.spawn(async move {
            let v = s.create(json!({"memory": "64Mi"})).await;
            let id = v["id"].as_str().unwrap().to_string();
            let out = s.sh(&id, &format!("echo {i}")).await;
            assert_eq!(out["stdout"], format!("{i}\n"));
            let (st, _) = s.call("DELETE", &format!("/v1/sandboxes/{id}"), None).await;
            assert_eq!(st, StatusCode::NO_CONTENT);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let (_, live) = s.call("GET", "/v1/sandboxes?state=provisioning,running,paused", None).await;
    assert_eq!(live["items"], json!([]));
    assert!(containers(&s.data_dir()).is_empty());
    assert!(mounts(&s.data_dir()).is_empty());
}

#[tokio::test]
async fn the_openapi_document_and_metrics_are_served() {
    let s = TestServer::start().await;
    let (st, doc) = s.call_with_key("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(doc["paths"]["/v1/sandboxes"]["post"].is_object());
    s.create(json!({})).await;
    sandpit_server::reconcile::deadlines_once(&s.app).await.unwrap();
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let text = String::from_utf8(s.send(req).await.into_body().collect().await.unwrap().to_bytes().to_vec())
        .unwrap();
    assert!(text.contains("sandpit_create_seconds"), "{text}");
}

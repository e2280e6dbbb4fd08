//! The client against a stand-in server (axum on a local port) that answers as the API
//! describes: errors, pages, NDJSON exec, server-sent events, streamed files. Needs no root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use sandpit_client::api::{ExecRequest, ExecStreamEvent, LogStreamView};
use sandpit_client::{Client, ClientError, ListFilter, SandboxState, decode_output};
use serde_json::json;

const KEY: &str = "sp_mock_key";

fn view(id: &str) -> serde_json::Value {
    json!({
        "id": id, "name": null, "project": "default", "state": "running", "state_reason": null,
        "exit_code": null, "image": "sandpit/busybox:latest", "cpu": "1", "memory": "1Gi", "gpu": null,
        "timeout_s": 3600, "keep_running": false, "created_at": "2026-01-01T00:00:00Z",
        "started_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-01T01:00:00Z", "remaining_s": null,
        "paused_at": null, "terminated_at": null, "metadata": {}
    })
}

fn entry(path: &str, size: u64) -> serde_json::Value {
    json!({"name": "f", "path": path, "kind": "file", "size": size, "mode": 0o644, "owner": "root",
        "group": "root", "modified_at": "2026-01-01T00:00:00Z", "symlink_target": null})
}

fn authorized(h: &HeaderMap) -> bool {
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {KEY}"))
}

fn error(status: StatusCode, code: &str, message: &str, field: Option<&str>) -> Response {
    let mut body = json!({"code": code, "message": message});
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (status, axum::Json(body)).into_response()
}

const FILE_LEN: usize = 8 << 20;

fn file_byte(i: usize) -> u8 {
    u8::try_from(i % 251).unwrap()
}

async fn mock() -> String {
    let app = Router::new()
        .route("/healthz", get(|| async { axum::Json(json!({"status": "ok", "version": "9.9.9"})) }))
        .route("/v1/projects", get(|| async { (StatusCode::BAD_GATEWAY, "upstream down").into_response() }))
        .route(
            "/v1/sandboxes",
            get(|h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                if !authorized(&h) {
                    return error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid API key", None);
                }
                assert_eq!(q.get("state").map(String::as_str), Some("running,paused"));
                assert_eq!(q.get("metadata").map(String::as_str), Some("team:ml"));
                match q.get("cursor").map(String::as_str) {
                    None => axum::Json(json!({"items": [view("aaaaaaaaaaaaaaaaaaaa")], "next_cursor": "c1"})).into_response(),
                    Some("c1") => axum::Json(json!({"items": [view("bbbbbbbbbbbbbbbbbbbb")], "next_cursor": null})).into_response(),
                    Some(other) => panic!("cursor {other}"),
                }
            })
            .post(|| async { error(StatusCode::BAD_REQUEST, "invalid_input", "cpu must be between 10m and 64", Some("cpu")) }),
        )
        .route("/v1/sandboxes/{id}", get(|Path(id): Path<String>| async move {
            error(StatusCode::NOT_FOUND, "not_found", &format!("sandbox {id} not found"), None)
        }))
        .route("/v1/sandboxes/{id}/exec", post(|h: HeaderMap, body: String| async move {
            assert_eq!(h.get(header::ACCEPT).unwrap(), "application/x-ndjson");
            let req: ExecRequest = serde_json::from_str(&body).unwrap();
            assert_eq!(req.command.as_deref(), Some(&["cat".to_string()][..]));
            // Events split mid-line across chunks, with a pause between them.
            let chunks: Vec<&'static str> = vec![
                "{\"event\":\"started\",\"pid\":4}\n{\"event\":\"stdout\",\"da",
                "ta\":\"aGkK\"}\n",
                "{\"event\":\"stderr\",\"data\":\"ZXJyCg==\"}\n{\"event\":\"exited\",\"exit_code\":3,\"signal\":null,\"timed_out\":false}\n",
            ];
            let s = futures::stream::iter(chunks).then(|c| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::io::Error>(c)
            });
            Response::builder().header(header::CONTENT_TYPE, "application/x-ndjson").body(Body::from_stream(s)).unwrap()
        }))
        .route("/v1/sandboxes/{id}/logs", get(|Query(q): Query<HashMap<String, String>>| async move {
            assert_eq!(q.get("follow").map(String::as_str), Some("true"));
            let body = concat!(
                ": keep-alive\n\n",
                "event: log\nid: 6\ndata: {\"at\":\"2026-01-01T00:00:00Z\",\"stream\":\"stdout\",\"text\":\"hello\\n\"}\n\n",
                "event: log\nid: 9\ndata: {\"at\":\"2026-01-01T00:00:01Z\",\"stream\":\"system\",\"text\":\"entrypoint exited with code 0\"}\n\n",
                "event: end\ndata: terminated\n\n",
                "event: log\nid: 12\ndata: {\"at\":\"2026-01-01T00:00:01Z\",\"stream\":\"stdout\",\"text\":\"after the end\"}\n\n",
            );
            ([(header::CONTENT_TYPE, "text/event-stream")], body)
        }))
        .route("/v1/sandboxes/{id}/events", get(|| async {
            let body = concat!(
                "event: state\nid: 1\ndata: {\"seq\":1,\"at\":\"2026-01-01T00:00:00Z\",\"kind\":\"state\",\"state\":\"provisioning\",\"reason\":null,\"message\":null,\"progress\":null}\n\n",
                "event: progress\nid: 2\ndata: {\"seq\":2,\"at\":\"2026-01-01T00:00:00Z\",\"kind\":\"progress\",\"state\":null,\"reason\":null,\"message\":\"pulling\",\"progress\":{\"done\":1}}\n\n",
                "event: state\nid: 3\ndata: {\"seq\":3,\"at\":\"2026-01-01T00:00:00Z\",\"kind\":\"state\",\"state\":\"running\",\"reason\":null,\"message\":null,\"progress\":null}\n\n",
            );
            ([(header::CONTENT_TYPE, "text/event-stream")], body)
        }))
        .route(
            "/v1/sandboxes/{id}/files/content",
            get(|| async {
                let chunks = (0..FILE_LEN / 65536).map(|c| {
                    Ok::<_, std::io::Error>(bytes::Bytes::from((0..65536).map(|i| file_byte(c * 65536 + i)).collect::<Vec<u8>>()))
                });
                Response::builder()
                    .header(header::CONTENT_LENGTH, FILE_LEN)
                    .body(Body::from_stream(futures::stream::iter(chunks)))
                    .unwrap()
            })
            .put(|Query(q): Query<HashMap<String, String>>, body: Body| async move {
                assert_eq!(q.get("mode").map(String::as_str), Some("640"));
                let mut n = 0usize;
                let mut s = body.into_data_stream();
                while let Some(chunk) = s.next().await {
                    let chunk = chunk.unwrap();
                    for (i, b) in chunk.iter().enumerate() {
                        assert_eq!(*b, file_byte(n + i), "byte {}", n + i);
                    }
                    n += chunk.len();
                }
                axum::Json(entry(&q["path"], n as u64)).into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn api_errors_carry_status_code_message_and_field() {
    let c = Client::new(&mock().await, KEY).unwrap();
    let e = c.get("nope").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(404), Some("not_found")));
    assert!(e.is_not_found());
    assert_eq!(e.to_string(), "sandbox nope not found");
    let e = c.create(&Default::default(), false).await.unwrap_err();
    assert_eq!(e.body().unwrap().field.as_deref(), Some("cpu"));
    // A body that is not the API's error format still yields a readable error.
    let e = c.projects().await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(502), Some("http_502")));
    assert!(e.to_string().contains("upstream down"), "{e}");
}

#[tokio::test]
async fn a_wrong_key_is_a_401() {
    let c = Client::new(&mock().await, "sp_other").unwrap();
    assert!(c.list(&ListFilter::default()).await.unwrap_err().is_unauthorized());
}

#[tokio::test]
async fn no_server_is_a_connect_error_naming_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let e = Client::new(&url, KEY).unwrap().health().await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    assert_eq!(e.to_string(), format!("no server at {url}"));
}

#[tokio::test]
async fn bad_urls_are_refused_up_front() {
    assert!(matches!(Client::new("127.0.0.1:7700", KEY), Err(ClientError::InvalidUrl { .. })));
    assert!(matches!(Client::new("https://example.com", KEY), Err(ClientError::InvalidUrl { .. })));
    assert!(matches!(Client::new("http://127.0.0.1:7700", "bad\nkey"), Err(ClientError::InvalidKey)));
}

#[tokio::test]
async fn list_all_follows_cursors_with_the_filters() {
    let c = Client::new(&mock().await, KEY).unwrap();
    let filter = ListFilter {
        states: vec![SandboxState::Running, SandboxState::Paused],
        metadata: vec![("team".into(), "ml".into())],
        ..Default::default()
    };
    let page = c.list(&filter).await.unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("c1"));
    let all = c.list_all(&filter).await.unwrap();
    let ids: Vec<String> = all.iter().map(|v| v.id.to_string()).collect();
    assert_eq!(ids, ["aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb"]);
    assert_eq!(c.health().await.unwrap().version, "9.9.9");
}

#[tokio::test]
async fn exec_events_stream_in_order_with_decoded_output() {
    let c = Client::new(&mock().await, KEY).unwrap();
    let req = ExecRequest { command: Some(vec!["cat".into()]), ..Default::default() };
    let events: Vec<ExecStreamEvent> =
        c.exec_stream("x", &req).await.unwrap().map(|e| e.unwrap()).collect().await;
    assert_eq!(events.len(), 4, "{events:?}");
    let ExecStreamEvent::Stdout { data } = &events[1] else { panic!("{events:?}") };
    assert_eq!(decode_output(data).unwrap(), b"hi\n");
    assert_eq!(events[3], ExecStreamEvent::Exited { exit_code: Some(3), signal: None, timed_out: false });
}

#[tokio::test]
async fn followed_logs_end_at_the_end_event() {
    let c = Client::new(&mock().await, KEY).unwrap();
    let entries: Vec<_> = c.follow_logs("x", 0).await.unwrap().map(|e| e.unwrap()).collect().await;
    assert_eq!(entries.len(), 2, "nothing after `end` is read: {entries:?}");
    assert_eq!((entries[0].stream, entries[0].text.as_str()), (LogStreamView::Stdout, "hello\n"));
    assert_eq!(entries[1].stream, LogStreamView::System);
}

#[tokio::test]
async fn events_stream_state_and_progress() {
    let c = Client::new(&mock().await, KEY).unwrap();
    let events: Vec<_> = c.events("x", 0).await.unwrap().map(|e| e.unwrap()).collect().await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(events[2].state, Some(SandboxState::Running));
    assert_eq!(events[1].message.as_deref(), Some("pulling"));
}

#[tokio::test]
async fn files_stream_up_and_down_intact() {
    let c = Client::new(&mock().await, KEY).unwrap();
    let mut out = Vec::new();
    let n = c.download("x", "/data.bin", &mut out).await.unwrap();
    assert_eq!(usize::try_from(n).unwrap(), FILE_LEN);
    assert!(out.iter().enumerate().all(|(i, b)| *b == file_byte(i)));
    let e = c.upload("x", "/up.bin", std::io::Cursor::new(out), Some(0o640)).await.unwrap();
    assert_eq!((e.path.as_str(), usize::try_from(e.size).unwrap()), ("/up.bin", FILE_LEN));
}

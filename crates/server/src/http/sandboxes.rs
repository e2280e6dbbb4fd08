//! Sandbox lifecycle and exec handlers.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sandpit_init::protocol::{Command, ExecRequest as InitExec};
use sandpit_runtime::ExecEvent;
use sandpit_types::api::{
    CreateSandbox, ExecRequest, ExecResult, ExecStreamEvent, Page, SandboxView, SetTimeout,
};
use sandpit_types::{ApiError, ErrorBody, SandboxState};
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::{ApiJson, ApiQuery};
use crate::app::App;
use crate::auth::Caller;
use crate::error::{AppError, AppResult};

/// Largest stdout or stderr kept by a non-streaming exec; more is cut with a note.
const MAX_COLLECTED: usize = 16 << 20;

/// `?wait=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Answer only once the sandbox is running or failed.
    #[serde(default)]
    wait: bool,
}

/// Creates a sandbox. Answers 201 at once with the sandbox provisioning (or, with `?wait=true`,
/// once it is running or failed).
#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes", params(CreateQuery), request_body = CreateSandbox,
    responses(
        (status = 201, description = "Created", body = SandboxView),
        (status = 400, description = "Invalid input (names the field)", body = ErrorBody),
        (status = 401, description = "No or bad key", body = ErrorBody),
        (status = 404, description = "Unknown project", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 507, description = "No GPU capacity", body = ErrorBody)))]
pub async fn create(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<CreateQuery>,
    ApiJson(req): ApiJson<CreateSandbox>,
) -> AppResult<(StatusCode, axum::Json<SandboxView>)> {
    let view = app.create(&caller, req, q.wait).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// List filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this project.
    project: Option<String>,
    /// Only these states, comma-separated (`running,paused`).
    state: Option<String>,
    /// Only sandboxes with these labels: `key:value`, comma-separated.
    metadata: Option<String>,
    /// Page size (1–1000, default 100).
    limit: Option<u32>,
    /// From `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists sandboxes, newest first.
#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes", operation_id = "list_sandboxes", params(ListQuery),
    responses((status = 200, description = "A page of sandboxes", body = Page<SandboxView>),
        (status = 400, description = "Bad filter", body = ErrorBody),
        (status = 404, description = "Unknown project (or not yours)", body = ErrorBody),
        (status = 401, description = "No or bad key", body = ErrorBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> AppResult<axum::Json<Page<SandboxView>>> {
    let mut states = Vec::new();
    for s in q.state.iter().flat_map(|s| s.split(',')).filter(|s| !s.is_empty()) {
        states.push(SandboxState::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "state",
                format!("unknown state {s:?}: use provisioning, running, paused, terminated or failed"),
            )
        })?);
    }
    let mut metadata = Vec::new();
    for pair in q.metadata.iter().flat_map(|m| m.split(',')).filter(|s| !s.is_empty()) {
        let (k, v) = pair
            .split_once(':')
            .ok_or_else(|| ApiError::invalid("metadata", "metadata filters are key:value"))?;
        metadata.push((k.to_string(), v.to_string()));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit must be between 1 and 1000").into());
    }
    let page = app.list(&caller, q.project.as_deref(), states, metadata, limit, q.cursor.as_deref()).await?;
    Ok(axum::Json(page))
}

/// One sandbox, by id or name.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The sandbox", body = SandboxView),
        (status = 404, description = "Unknown, or not yours", body = ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<axum::Json<SandboxView>> {
    let r = app.find(&caller, &id).await?;
    Ok(axum::Json(app.view(&r).await?))
}

/// Deletes a sandbox (idempotent: deleting an ended sandbox succeeds).
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "Unknown, or not yours", body = ErrorBody)))]
pub async fn delete(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    app.delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses a running sandbox: its processes end, its CPU, memory and GPU are released, its disk
/// is kept.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause", tag = "sandboxes", params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "Paused", body = SandboxView),
        (status = 404, description = "Unknown, or not yours", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody)))]
pub async fn pause(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<axum::Json<SandboxView>> {
    Ok(axum::Json(app.pause(&caller, &id).await?))
}

/// Resumes a paused sandbox over the same disk; its entrypoint runs again.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", tag = "sandboxes", params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "Running", body = SandboxView),
        (status = 404, description = "Unknown, or not yours", body = ErrorBody),
        (status = 409, description = "Not paused", body = ErrorBody)))]
pub async fn resume(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<axum::Json<SandboxView>> {
    Ok(axum::Json(app.resume(&caller, &id).await?))
}

/// Sets the timeout: the sandbox ends `timeout_s` seconds of running time from now.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/timeout", tag = "sandboxes", params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = SetTimeout,
    responses((status = 200, description = "Updated", body = SandboxView),
        (status = 400, description = "Out of bounds", body = ErrorBody),
        (status = 404, description = "Unknown, or not yours", body = ErrorBody),
        (status = 409, description = "Ended", body = ErrorBody)))]
pub async fn set_timeout(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetTimeout>,
) -> AppResult<axum::Json<SandboxView>> {
    Ok(axum::Json(app.set_timeout(&caller, &id, req.timeout_s).await?))
}

/// Runs a command. With `Accept: application/x-ndjson` the answer streams `ExecStreamEvent`s as
/// the command produces output; otherwise it is one `ExecResult` when the command ends (or at
/// once with its pid, for `background`).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "exec", params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = ExecRequest,
    responses((status = 200, description = "The result, or a stream of events (application/x-ndjson)",
            content((ExecResult = "application/json"), (ExecStreamEvent = "application/x-ndjson"))),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 404, description = "Unknown, or not yours", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody)))]
pub async fn exec(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ExecRequest>,
) -> AppResult<Response> {
    req.validate()?;
    let r = app.find(&caller, &id).await?;
    let client = app.init(&r).await?;
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    let init_req = InitExec {
        command: Some(match (&req.command, &req.shell) {
            (Some(argv), _) => Command::Argv(argv.clone()),
            (None, Some(line)) => Command::Shell(line.clone()),
            (None, None) => {
                return Err(ApiError::invalid("command", "give exactly one of command and shell").into());
            }
        }),
        env: req.env.clone(),
        cwd: req.cwd.clone(),
        user: req.user.clone(),
        stdin: req.stdin.is_some() || (req.background && req.keep_stdin_open),
        timeout_ms: req.timeout_s.map(|s| s * 1000),
        keep_on_disconnect: req.background,
        tag: None,
        pty: None,
    };
    let started = Instant::now();
    let mut session = client.exec(init_req).await?;
    if let Some(input) = &req.stdin {
        session.write_stdin(input.as_bytes()).await?;
        if !(req.background && req.keep_stdin_open) {
            session.close_stdin().await?;
        }
    }
    if req.background {
        return Ok(axum::Json(ExecResult { pid: session.pid(), ..Default::default() }).into_response());
    }
    if streaming {
        return Ok(stream_exec(app, session, started));
    }
    let pid = session.pid();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut status = None;
    while let Some(ev) = session.next().await? {
        match ev {
            ExecEvent::Stdout(b) | ExecEvent::Pty(b) => append_capped(&mut stdout, &b),
            ExecEvent::Stderr(b) => append_capped(&mut stderr, &b),
            ExecEvent::Exited(s) => status = Some(s),
        }
    }
    app.metrics.observe_exec(started.elapsed());
    let status = status.unwrap_or_default();
    Ok(axum::Json(ExecResult {
        pid,
        exit_code: status.code,
        signal: status.signal,
        timed_out: status.timed_out,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
    .into_response())
}

fn append_capped(buf: &mut Vec<u8>, b: &[u8]) {
    const NOTE: &[u8] = b"\n[output truncated by sandpit: use a streaming exec for large output]\n";
    if buf.len() >= MAX_COLLECTED {
        return;
    }
    let room = MAX_COLLECTED - buf.len();
    if b.len() > room {
        buf.extend_from_slice(&b[..room]);
        buf.extend_from_slice(NOTE);
    } else {
        buf.extend_from_slice(b);
    }
}

/// Streams an exec as newline-delimited JSON events. The exec's connection to init lives as
/// long as the response body: a client that goes away ends the command.
pub(super) fn stream_exec(
    app: Arc<App>,
    mut session: sandpit_runtime::ExecSession,
    started: Instant,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    let line = |ev: &ExecStreamEvent| {
        let mut v = serde_json::to_vec(ev).unwrap_or_default();
        v.push(b'\n');
        Ok(bytes::Bytes::from(v))
    };
    tokio::spawn(async move {
        if tx.send(line(&ExecStreamEvent::Started { pid: session.pid() })).await.is_err() {
            return;
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        loop {
            // A client gone away ends the command at once, not at its next output: dropping
            // the session closes the connection to init, which kills the process group.
            let next = tokio::select! {
                next = session.next() => next,
                () = tx.closed() => return,
            };
            let ev = match next {
                Ok(Some(ExecEvent::Stdout(b) | ExecEvent::Pty(b))) => {
                    ExecStreamEvent::Stdout { data: b64.encode(&b) }
                }
                Ok(Some(ExecEvent::Stderr(b))) => ExecStreamEvent::Stderr { data: b64.encode(&b) },
                Ok(Some(ExecEvent::Exited(s))) => {
                    app.metrics.observe_exec(started.elapsed());
                    ExecStreamEvent::Exited { exit_code: s.code, signal: s.signal, timed_out: s.timed_out }
                }
                Ok(None) => return,
                Err(e) => {
                    let err = AppError::from(e).0;
                    ExecStreamEvent::Error { code: err.code().to_string(), message: err.to_string() }
                }
            };
            let last = matches!(ev, ExecStreamEvent::Exited { .. } | ExecStreamEvent::Error { .. });
            if tx.send(line(&ev)).await.is_err() || last {
                return;
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

//! A sandbox's processes: list them, signal one, write to its standard input, and follow its
//! output (again) until it exits. Background execs return a pid for these.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sandpit_init::protocol::ProcSelector;
use sandpit_types::api::{ExecResult, ProcessInput, ProcessView, SignalProcess};
use sandpit_types::{ApiError, ErrorBody};
use time::OffsetDateTime;

use super::extract::ApiJson;
use crate::app::App;
use crate::auth::Caller;
use crate::error::{AppError, AppResult};

/// A pid from the path, or a 400 naming it.
fn pid_of(pid: &str) -> Result<u32, AppError> {
    pid.parse().map_err(|_| ApiError::invalid("pid", format!("{pid:?} is not a process id")).into())
}

/// What init answers about a process, with the pid as the API's `not_found` names it (an
/// exited one is 409 through [`crate::error::init_error`]).
fn process_error(e: sandpit_runtime::RuntimeError, pid: u32) -> AppError {
    match e {
        sandpit_runtime::RuntimeError::Init {
            code: sandpit_init::protocol::ErrorCode::NoSuchProcess,
            ..
        } => ApiError::NotFound { what: "process", id: pid.to_string() }.into(),
        other => other.into(),
    }
}

/// The processes of a running sandbox: those exec started (running, or exited not long ago)
/// and its workload.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes", tag = "exec", operation_id = "list_processes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "Processes, oldest first", body = Vec<ProcessView>),
        (status = 404, description = "Unknown sandbox", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<axum::Json<Vec<ProcessView>>> {
    let r = app.find(&caller, &id).await?;
    let procs = app.init(&r).await?.list_procs().await?;
    let views = procs
        .into_iter()
        .map(|p| ProcessView {
            pid: p.pid,
            argv: p.argv,
            cwd: p.cwd,
            uid: p.uid,
            started_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(p.started_at_ms) * 1_000_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            workload: p.entrypoint,
            running: p.exit.is_none(),
            exit_code: p.exit.as_ref().and_then(|e| e.code),
            signal: p.exit.as_ref().and_then(|e| e.signal),
        })
        .collect();
    Ok(axum::Json(views))
}

/// Sends a signal to a process and its process group.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/signal", tag = "exec", operation_id = "signal_process",
    params(("id" = String, Path, description = "Sandbox id or name"), ("pid" = u32, Path, description = "Process id")),
    request_body = SignalProcess,
    responses((status = 204, description = "Sent"),
        (status = 400, description = "Unknown signal", body = ErrorBody),
        (status = 404, description = "Unknown sandbox or process", body = ErrorBody)))]
pub async fn signal(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    ApiJson(req): ApiJson<SignalProcess>,
) -> AppResult<StatusCode> {
    let pid = pid_of(&pid)?;
    let signal = req.number()?;
    let r = app.find(&caller, &id).await?;
    app.init(&r)
        .await?
        .signal(ProcSelector::Pid(pid), signal, true)
        .await
        .map_err(|e| process_error(e, pid))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Writes to a process's standard input (a background exec with `keep_stdin_open`), and closes
/// it with `close`.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/stdin", tag = "exec", operation_id = "write_process_stdin",
    params(("id" = String, Path, description = "Sandbox id or name"), ("pid" = u32, Path, description = "Process id")),
    request_body = ProcessInput,
    responses((status = 204, description = "Written"),
        (status = 400, description = "Bad input, or its stdin is not open", body = ErrorBody),
        (status = 404, description = "Unknown sandbox or process", body = ErrorBody)))]
pub async fn stdin(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    ApiJson(req): ApiJson<ProcessInput>,
) -> AppResult<StatusCode> {
    let pid = pid_of(&pid)?;
    let data = match (&req.data, &req.data_base64) {
        (Some(t), None) => t.clone().into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|_| ApiError::invalid("data_base64", "data_base64 is not base64"))?,
        (None, None) if req.close => Vec::new(),
        _ => return Err(ApiError::invalid("data", "give one of data and data_base64 (or close)").into()),
    };
    let r = app.find(&caller, &id).await?;
    let init = app.init(&r).await?;
    if !data.is_empty() {
        init.write_stdin(ProcSelector::Pid(pid), &data).await.map_err(|e| process_error(e, pid))?;
    }
    if req.close {
        init.close_stdin(ProcSelector::Pid(pid)).await.map_err(|e| process_error(e, pid))?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Follows a process: the part of its output init still buffers (the latest, when it wrote
/// much), then what it writes, until it exits; as NDJSON events (`Accept: application/x-ndjson`, like a streamed exec) or, waiting
/// for the end, as one result. Leaving does not stop the process. The workload's output goes to
/// the sandbox's logs, not here.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/output", tag = "exec", operation_id = "process_output",
    params(("id" = String, Path, description = "Sandbox id or name"), ("pid" = u32, Path, description = "Process id")),
    responses((status = 200, description = "The result, or NDJSON events", body = ExecResult),
        (status = 404, description = "Unknown sandbox or process", body = ErrorBody)))]
pub async fn output(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let pid = pid_of(&pid)?;
    let r = app.find(&caller, &id).await?;
    let session =
        app.init(&r).await?.attach(ProcSelector::Pid(pid), false).await.map_err(|e| process_error(e, pid))?;
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    if streaming {
        return Ok(super::sandboxes::stream_exec(app, session, Instant::now()));
    }
    let outcome = session.collect().await?;
    Ok(axum::Json(ExecResult {
        pid: outcome.pid,
        exit_code: outcome.status.code,
        signal: outcome.status.signal,
        timed_out: outcome.status.timed_out,
        stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
    })
    .into_response())
}

//! Logs and events, as JSON pages or server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use sandpit_init::protocol::{LogRecord, LogStream};
use sandpit_runtime::{LogChunk, RuntimeError};
use sandpit_store::SandboxRecord;
use sandpit_types::api::{LogEntry, LogStreamView, LogsPage, SandboxEventView};
use sandpit_types::{ApiError, ErrorBody, SandboxId};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::IntoParams;

use super::extract::ApiQuery;
use crate::app::App;
use crate::auth::Caller;
use crate::error::AppResult;

/// How often a followed log is polled for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// `?offset=&follow=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Byte offset from a previous `next_offset` (default 0, the start).
    offset: Option<u64>,
    /// Stream new lines as server-sent events (`event: log`; the last of each batch has `id:`, the next offset) until the
    /// sandbox ends.
    #[serde(default)]
    follow: bool,
    /// About how many bytes of log to return (default 1 MiB).
    limit_bytes: Option<usize>,
}

fn entry(r: LogRecord) -> LogEntry {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.t) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let stream = match r.s {
        LogStream::Out => LogStreamView::Stdout,
        LogStream::Err => LogStreamView::Stderr,
        LogStream::Sys => LogStreamView::System,
    };
    LogEntry { at, stream, text: r.d }
}

/// Reads a chunk of a sandbox's log: from the backend while it has the sandbox, from the archive
/// once it ended.
async fn read_chunk(app: &App, r: &SandboxRecord, offset: u64, limit: usize) -> AppResult<LogChunk> {
    if !r.state.is_final() {
        match app.backend.read_logs(&r.id, offset, limit).await {
            Ok(c) => return Ok(c),
            Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let path = app.config.logs_dir().join(format!("{}.log", r.id));
    tokio::task::spawn_blocking(move || sandpit_runtime::logs::read(&path, offset, limit))
        .await
        .map_err(|e| crate::error::AppError::internal("read logs", &e))?
        .map_err(Into::into)
}

/// The workload's log (stdout, stderr and sandpit's own notes), kept after the sandbox ends.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/logs", tag = "logs",
    params(("id" = String, Path, description = "Sandbox id or name"), LogsQuery),
    responses((status = 200, description = "A page of log entries, or server-sent events of `LogEntry` with `follow=true`",
            content((LogsPage = "application/json"), (LogEntry = "text/event-stream"))),
        (status = 404, description = "Unknown, or not yours", body = ErrorBody)))]
pub async fn logs(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> AppResult<Response> {
    let r = app.find(&caller, &id).await?;
    let limit = q.limit_bytes.unwrap_or(1 << 20);
    if !(1..=16 << 20).contains(&limit) {
        return Err(ApiError::invalid("limit_bytes", "limit_bytes must be between 1 and 16777216").into());
    }
    let offset = q.offset.unwrap_or(0);
    if !q.follow {
        let c = read_chunk(&app, &r, offset, limit).await?;
        let page = LogsPage {
            entries: c.records.into_iter().map(entry).collect(),
            next_offset: c.next_offset,
            skipped: c.skipped,
        };
        return Ok(axum::Json(page).into_response());
    }
    Ok(Sse::new(follow_logs(app, r.id, offset, limit)).keep_alive(KeepAlive::default()).into_response())
}

fn follow_logs(
    app: Arc<App>,
    id: SandboxId,
    offset: u64,
    limit: usize,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (app, offset, Vec::<Event>::new(), false),
        move |(app, mut offset, mut queue, mut done)| async move {
            loop {
                if let Some(ev) = queue.pop() {
                    return Some((Ok(ev), (app, offset, queue, done)));
                }
                if done {
                    return None;
                }
                let Ok(Some(r)) = app.store.get_sandbox(&id).await else { return None };
                let ended = r.state.is_final();
                let chunk = match read_chunk(&app, &r, offset, limit).await {
                    Ok(c) => c,
                    Err(_) => return None,
                };
                offset = chunk.next_offset;
                // Only the last entry of a read carries its `id:` (the offset after it): a
                // client that resumes from an earlier one gets the rest again, never less.
                let n = chunk.records.len();
                let mut events: Vec<Event> = chunk
                    .records
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, rec)| {
                        let ev = Event::default().event("log");
                        let ev = if i + 1 == n { ev.id(offset.to_string()) } else { ev };
                        ev.json_data(entry(rec)).ok()
                    })
                    .collect();
                if events.is_empty() {
                    if ended {
                        // The archive is complete once the sandbox ended: finish with a marker.
                        done = true;
                        queue.push(Event::default().event("end").data(r.state.as_str()));
                        continue;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(FOLLOW_POLL) => {}
                        () = app.shutdown.cancelled() => return None,
                    }
                    continue;
                }
                events.reverse();
                queue = events;
            }
        },
    )
}

/// `?after=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events after this sequence number (default 0: the whole history).
    after: Option<u64>,
}

/// State changes and progress of a sandbox, as server-sent events (`event: state` or
/// `event: progress`, `id:` the sequence number): its history, then live ones, ending after a
/// final state.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/events", tag = "events",
    params(("id" = String, Path, description = "Sandbox id or name"), EventsQuery),
    responses((status = 200, description = "Server-sent events of `SandboxEventView`", body = SandboxEventView,
            content_type = "text/event-stream"),
        (status = 404, description = "Unknown, or not yours", body = ErrorBody)))]
pub async fn events(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> AppResult<Response> {
    let r = app.find(&caller, &id).await?;
    let rx = app.hub.subscribe(&r.id);
    let history = app.events(&r.id, q.after.unwrap_or(0)).await?;
    let last = history.last().map_or(q.after.unwrap_or(0), |e| e.seq);
    let ended = history.iter().any(|e| e.state.is_some_and(sandpit_types::SandboxState::is_final));
    let to_event = |e: &SandboxEventView| {
        let kind = match e.kind {
            sandpit_types::api::EventKind::State => "state",
            sandpit_types::api::EventKind::Progress => "progress",
        };
        Event::default().event(kind).id(e.seq.to_string()).json_data(e).ok()
    };
    let past: Vec<Result<Event, Infallible>> = history.iter().filter_map(to_event).map(Ok).collect();
    let live = futures::stream::unfold((rx, last, ended), move |(mut rx, last, ended)| async move {
        if ended {
            return None;
        }
        loop {
            match rx.recv().await {
                Ok(e) if e.seq > last => {
                    let fin = e.state.is_some_and(sandpit_types::SandboxState::is_final);
                    let ev = to_event(&e)?;
                    return Some((Ok(ev), (rx, e.seq, fin)));
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = futures::StreamExt::chain(futures::stream::iter(past), live);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

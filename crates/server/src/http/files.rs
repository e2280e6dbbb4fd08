//! File handlers. Every operation is carried out by the sandbox's init, inside the sandbox.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use sandpit_init::protocol::{ErrorCode, FileEntry, FileKind};
use sandpit_runtime::{RuntimeError, WriteOptions};
use sandpit_types::ApiError;
use sandpit_types::ErrorBody;
use sandpit_types::api::{FileEntryView, FileKindView, MakeDir, MovePath};
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use utoipa::IntoParams;

use super::extract::{ApiJson, ApiQuery};
use crate::app::App;
use crate::auth::Caller;
use crate::error::{AppError, AppResult};

/// `?path=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// Path inside the sandbox (relative paths are relative to the user's home).
    path: String,
    /// Levels to list (default 1).
    depth: Option<u32>,
    /// Remove directories with their content.
    #[serde(default)]
    recursive: bool,
    /// Act as this user.
    user: Option<String>,
}

/// `?path=` for content.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ContentQuery {
    /// Path inside the sandbox.
    path: String,
    /// Permission bits of a new file, octal (`644`).
    mode: Option<String>,
    /// Append instead of replacing.
    #[serde(default)]
    append: bool,
    /// Act as this user.
    user: Option<String>,
}

/// The API view of an init file entry.
pub fn entry_view(e: FileEntry) -> FileEntryView {
    FileEntryView {
        name: e.name,
        path: e.path,
        kind: match e.kind {
            FileKind::File => FileKindView::File,
            FileKind::Dir => FileKindView::Dir,
            FileKind::Symlink => FileKindView::Symlink,
            FileKind::Other => FileKindView::Other,
        },
        size: e.size,
        mode: e.mode,
        owner: e.owner.unwrap_or_else(|| e.uid.to_string()),
        group: e.group.unwrap_or_else(|| e.gid.to_string()),
        modified_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.mtime_ns))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        symlink_target: e.symlink_target,
    }
}

/// Maps a file error, naming the path for `not_found`.
fn file_error(e: RuntimeError, path: &str) -> AppError {
    match e {
        RuntimeError::Init { code: ErrorCode::NotFound, .. } => {
            ApiError::NotFound { what: "path", id: path.to_string() }.into()
        }
        RuntimeError::Init { code: ErrorCode::NoSpace, .. } => {
            ApiError::NoCapacity { message: format!("no space left on the sandbox's disk writing {path}") }
                .into()
        }
        other => other.into(),
    }
}

async fn client(app: &App, caller: &Caller, id: &str) -> AppResult<sandpit_runtime::InitClient> {
    let r = app.find(caller, id).await?;
    app.init(&r).await
}

/// Lists a directory.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", tag = "files", operation_id = "list_files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses((status = 200, description = "Entries (the directory itself excluded)", body = Vec<FileEntryView>),
        (status = 404, description = "No such sandbox or path", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> AppResult<axum::Json<Vec<FileEntryView>>> {
    let c = client(&app, &caller, &id).await?;
    let depth = q.depth.unwrap_or(1);
    if !(1..=32).contains(&depth) {
        return Err(ApiError::invalid("depth", "depth must be between 1 and 32").into());
    }
    let entries = c.list_dir(&q.path, q.user, depth).await.map_err(|e| file_error(e, &q.path))?;
    Ok(axum::Json(entries.into_iter().map(entry_view).collect()))
}

/// Removes a file or directory.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", tag = "files", operation_id = "remove_file",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses((status = 204, description = "Removed"),
        (status = 400, description = "Directory not empty (use recursive)", body = ErrorBody),
        (status = 404, description = "No such sandbox or path", body = ErrorBody)))]
pub async fn remove(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> AppResult<StatusCode> {
    let c = client(&app, &caller, &id).await?;
    c.remove(&q.path, q.user, q.recursive).await.map_err(|e| file_error(e, &q.path))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Describes a path (a final symlink is not followed).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses((status = 200, description = "The entry", body = FileEntryView),
        (status = 404, description = "No such sandbox or path", body = ErrorBody)))]
pub async fn stat(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> AppResult<axum::Json<FileEntryView>> {
    let c = client(&app, &caller, &id).await?;
    let e = c.stat(&q.path, q.user).await.map_err(|e| file_error(e, &q.path))?;
    Ok(axum::Json(entry_view(e)))
}

/// Downloads a file (streamed).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/content", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), ContentQuery),
    responses((status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 404, description = "No such sandbox or path", body = ErrorBody)))]
pub async fn download(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ContentQuery>,
) -> AppResult<Response> {
    let c = client(&app, &caller, &id).await?;
    let (entry, reader) = c.read_file(&q.path, q.user, 0, None).await.map_err(|e| file_error(e, &q.path))?;
    let stream = futures::stream::try_unfold(reader, |mut r| async move {
        match r.next_chunk().await {
            Ok(Some(chunk)) => Ok(Some((chunk, r))),
            Ok(None) => Ok(None),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, entry.size)
        .body(Body::from_stream(stream))
        .map_err(|e| AppError::internal("download", &e))
}

/// Uploads a file (streamed request body), creating parent directories; replaces the file
/// atomically unless `append`.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files/content", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), ContentQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, description = "The written file", body = FileEntryView),
        (status = 400, description = "Bad path or mode", body = ErrorBody),
        (status = 503, description = "No space left on the sandbox's disk", body = ErrorBody)))]
pub async fn upload(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ContentQuery>,
    body: Body,
) -> AppResult<axum::Json<FileEntryView>> {
    let mode = match &q.mode {
        Some(m) => Some(
            u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| ApiError::invalid("mode", "mode must be octal permission bits, like 644"))?,
        ),
        None => None,
    };
    let c = client(&app, &caller, &id).await?;
    let limit = app.config.max_upload_bytes;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream).take(limit);
    let opts = WriteOptions { user: q.user, mode, append: q.append };
    let e = c.write_file(&q.path, opts, reader).await.map_err(|e| file_error(e, &q.path))?;
    Ok(axum::Json(entry_view(e)))
}

/// Creates a directory with its parents.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name")), request_body = MakeDir,
    responses((status = 200, description = "The directory", body = FileEntryView),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn mkdir(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MakeDir>,
) -> AppResult<axum::Json<FileEntryView>> {
    let c = client(&app, &caller, &id).await?;
    let e = c.make_dir(&req.path, None, true).await.map_err(|e| file_error(e, &req.path))?;
    Ok(axum::Json(entry_view(e)))
}

/// Moves (renames) a path.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/move", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name")), request_body = MovePath,
    responses((status = 200, description = "The entry at its new path", body = FileEntryView),
        (status = 404, description = "No such sandbox or path", body = ErrorBody)))]
pub async fn move_path(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MovePath>,
) -> AppResult<impl IntoResponse> {
    let c = client(&app, &caller, &id).await?;
    let e = c.rename(&req.from, &req.to, None).await.map_err(|e| file_error(e, &req.from))?;
    Ok(axum::Json(entry_view(e)))
}

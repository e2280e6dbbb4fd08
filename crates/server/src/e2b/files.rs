#![allow(clippy::result_large_err, reason = "handlers return early with a ready response")]

//! envd's plain-HTTP file transfer: `GET /files` streams a file out, `POST /files` writes files
//! in (multipart, one part per file named by its filename, or a raw body, gzip or not), both
//! streamed through the sandbox's init with bounded memory.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::TryStreamExt as _;
use sandpit_init::protocol::{ErrorCode, FileKind};
use sandpit_runtime::{RuntimeError, WriteOptions};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio_util::io::StreamReader;

use super::EnvdSandbox;
use super::envd::{Opened, Proof, default_user, open};
use crate::app::App;

/// `/files` query.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<i64>,
}

/// An error in envd's HTTP form: `{"code": <status>, "message"}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"code": status.as_u16(), "message": message.into()}))).into_response()
}

fn runtime_error(e: RuntimeError, path: &str) -> Response {
    match e {
        RuntimeError::Init { code: ErrorCode::NotFound, .. } => {
            error(StatusCode::NOT_FOUND, format!("path '{path}' does not exist"))
        }
        RuntimeError::Init { code: ErrorCode::IsADirectory, .. } => {
            error(StatusCode::BAD_REQUEST, format!("path '{path}' is a directory"))
        }
        RuntimeError::Init { code: ErrorCode::NoSpace, message } => {
            error(StatusCode::INSUFFICIENT_STORAGE, message)
        }
        RuntimeError::Init { code: ErrorCode::PermissionDenied, message } => {
            error(StatusCode::FORBIDDEN, message)
        }
        RuntimeError::Init { message, .. } => error(StatusCode::BAD_REQUEST, message),
        RuntimeError::Unreachable { .. } => {
            error(StatusCode::BAD_GATEWAY, "the sandbox is not reachable right now")
        }
        other => {
            tracing::warn!(error = %other, "e2b file transfer failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// Checks a signed URL (`v1_` + base64 of SHA-256 of `path:operation:user:token[:expiration]`)
/// when the request has no `X-Access-Token`.
fn check_signature(headers: &HeaderMap, q: &FilesQuery, o: &Opened, operation: &str) -> Result<(), Response> {
    if headers.contains_key("x-access-token") {
        return Ok(()); // checked by `open`
    }
    let Some(sig) = &q.signature else {
        return Err(error(StatusCode::UNAUTHORIZED, "missing X-Access-Token or signature"));
    };
    if let Some(exp) = q.signature_expiration
        && exp < time::OffsetDateTime::now_utc().unix_timestamp()
    {
        return Err(error(StatusCode::UNAUTHORIZED, "the signature has expired"));
    }
    let path = q.path.as_deref().unwrap_or_default();
    let user = q.username.as_deref().unwrap_or_default();
    let mut raw = format!("{path}:{operation}:{user}:{}", o.token);
    if let Some(exp) = q.signature_expiration {
        raw.push_str(&format!(":{exp}"));
    }
    let expected = format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(raw.as_bytes()))
    );
    if bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
        Ok(())
    } else {
        Err(error(StatusCode::UNAUTHORIZED, "the signature does not match"))
    }
}

async fn user_of(q: &FilesQuery, o: &Opened) -> Option<String> {
    match q.username.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => Some(u.to_string()),
        None => default_user(&o.init, o.record.id).await,
    }
}

fn query(req_uri: &axum::http::Uri) -> Result<FilesQuery, Response> {
    serde_urlencoded::from_str(req_uri.query().unwrap_or_default())
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid query string: {e}")))
}

/// The query, the sandbox, and the proof (token or a URL signed for `operation`) of a
/// `/files` request.
async fn authorize(
    app: &Arc<App>,
    sandbox: &EnvdSandbox,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    operation: &str,
) -> Result<(FilesQuery, Opened), Response> {
    let q = query(uri)?;
    let o = open(app, sandbox, headers, Proof::TokenOrSigned).await?;
    check_signature(headers, &q, &o, operation)?;
    Ok((q, o))
}

/// `GET /files?path=…`: the file's bytes.
pub async fn download(State(app): State<Arc<App>>, sandbox: EnvdSandbox, req: Request) -> Response {
    let (q, o) = match authorize(&app, &sandbox, req.headers(), req.uri(), "read").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(path) = q.path.clone().filter(|p| !p.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "path is required");
    };
    let user = user_of(&q, &o).await;
    let (entry, reader) = match o.init.read_file(&path, user, 0, None).await {
        Ok(x) => x,
        Err(e) => return runtime_error(e, &path),
    };
    if entry.kind == FileKind::Dir {
        return error(StatusCode::BAD_REQUEST, format!("path '{path}' is a directory"));
    }
    let stream = futures::stream::try_unfold(reader, |mut r| async move {
        match r.next_chunk().await {
            Ok(Some(chunk)) => Ok(Some((chunk, r))),
            Ok(None) => Ok(None),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(entry.size));
    resp
}

/// `POST /files[?path=…]`: writes files, creating parents and replacing what was there.
pub async fn upload(State(app): State<Arc<App>>, sandbox: EnvdSandbox, req: Request) -> Response {
    let (q, o) = match authorize(&app, &sandbox, req.headers(), req.uri(), "write").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let user = user_of(&q, &o).await;
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut written = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = match Multipart::from_request(req, &app).await {
            Ok(m) => m,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")),
        };
        let mut single_path = q.path.clone().filter(|p| !p.is_empty());
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")),
            };
            // One file with `path=`: that is its name; several: each part's filename.
            let target = match single_path.take().or_else(|| field.file_name().map(str::to_string)) {
                Some(t) if !t.is_empty() => t,
                _ => return error(StatusCode::BAD_REQUEST, "a part has no filename and there is no path="),
            };
            let reader = StreamReader::new(field.map_err(std::io::Error::other));
            match write(&o, &target, user.clone(), reader).await {
                Ok(v) => written.push(v),
                Err(r) => return r,
            }
        }
    } else {
        let Some(path) = q.path.clone().filter(|p| !p.is_empty()) else {
            return error(StatusCode::BAD_REQUEST, "path is required for a raw upload");
        };
        let stream = req.into_body().into_data_stream().map_err(std::io::Error::other);
        match write(&o, &path, user, StreamReader::new(stream)).await {
            Ok(v) => written.push(v),
            Err(r) => return r,
        }
    }
    if written.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the body holds no file");
    }
    axum::Json(written).into_response()
}

async fn write(
    o: &Opened,
    path: &str,
    user: Option<String>,
    reader: impl tokio::io::AsyncRead + Unpin,
) -> Result<serde_json::Value, Response> {
    let opts = WriteOptions { user, ..WriteOptions::default() };
    let entry = o.init.write_file(path, opts, reader).await.map_err(|e| runtime_error(e, path))?;
    let kind = if entry.kind == FileKind::Dir { "dir" } else { "file" };
    Ok(json!({"path": entry.path, "name": entry.name, "type": kind}))
}

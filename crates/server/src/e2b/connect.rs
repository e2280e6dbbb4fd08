//! The Connect protocol with the JSON codec, as much of it as envd's clients use: unary calls
//! (bare JSON in and out) and server-streaming calls (enveloped messages: one flags byte, a
//! 4-byte big-endian length, the JSON), with errors in Connect's form.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::StreamExt as _;
use sandpit_init::protocol::ErrorCode;
use sandpit_runtime::RuntimeError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// Flags of an end-of-stream envelope.
const END_STREAM: u8 = 0x02;

/// Largest request message accepted.
const MAX_MESSAGE: usize = 4 << 20;

/// A Connect error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    /// The HTTP status of a unary error with this code.
    fn status(self) -> StatusCode {
        match self {
            Self::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::InvalidArgument | Self::FailedPrecondition | Self::OutOfRange => StatusCode::BAD_REQUEST,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists | Self::Aborted => StatusCode::CONFLICT,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Unknown | Self::Internal | Self::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to an RPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RpcError {
    /// The code.
    pub code: Code,
    /// For people.
    pub message: String,
}

impl RpcError {
    /// An error with `code`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// `invalid_argument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// Maps what the runtime (or sandpit-init) answered.
    pub fn from_runtime(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Init { code, message } => {
                let code = match code {
                    // envd answers `not_found` for a process that ended, too.
                    ErrorCode::NotFound | ErrorCode::NoSuchProcess | ErrorCode::ProcessExited => {
                        Code::NotFound
                    }
                    ErrorCode::AlreadyExists => Code::AlreadyExists,
                    ErrorCode::PermissionDenied => Code::PermissionDenied,
                    ErrorCode::NoSpace => Code::ResourceExhausted,
                    ErrorCode::InvalidArgument
                    | ErrorCode::NotADirectory
                    | ErrorCode::IsADirectory
                    | ErrorCode::DirectoryNotEmpty
                    | ErrorCode::SpawnFailed => Code::InvalidArgument,
                    ErrorCode::UnsupportedVersion | ErrorCode::Io => Code::Internal,
                };
                Self::new(code, message)
            }
            RuntimeError::Unreachable { .. } => {
                Self::new(Code::Unavailable, "the sandbox is not reachable right now")
            }
            other => {
                tracing::warn!(error = %other, "e2b rpc failed");
                Self::new(Code::Internal, "internal error")
            }
        }
    }

    fn body(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code, "message": self.message})
    }
}

impl IntoResponse for RpcError {
    /// The unary form: the code's status and `{"code", "message"}`.
    fn into_response(self) -> Response {
        (self.code.status(), axum::Json(self.body())).into_response()
    }
}

/// The answer to a unary call.
pub fn unary<T: Serialize>(result: Result<T, RpcError>) -> Response {
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Parses a unary request (bare JSON; an empty body is `{}`).
pub fn parse_unary<T: DeserializeOwned>(body: &[u8]) -> Result<T, RpcError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| RpcError::invalid(format!("invalid request: {e}")))
}

/// Parses the request of a server-streaming call: one envelope (or, from lenient clients, bare
/// JSON with `content-type: application/json`).
pub fn parse_streaming<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, RpcError> {
    let enveloped = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/connect+"));
    if !enveloped {
        return parse_unary(body);
    }
    if body.len() < 5 {
        return Err(RpcError::invalid("the request has no message envelope"));
    }
    let flags = body[0];
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if flags & 0x01 != 0 {
        return Err(RpcError::new(Code::Unimplemented, "compressed messages are not supported"));
    }
    if len > MAX_MESSAGE || body.len() < 5 + len {
        return Err(RpcError::invalid("the request envelope is truncated or too large"));
    }
    parse_unary(&body[5..5 + len])
}

/// The user an RPC acts as: `Authorization: Basic base64("<user>:")`.
pub fn basic_user(headers: &HeaderMap) -> Result<Option<String>, RpcError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let bad = || {
        RpcError::new(Code::Unauthenticated, "bad Authorization header: expected Basic base64(\"<user>:\")")
    };
    let v = v.to_str().map_err(|_| bad())?;
    let Some(b64) = v.strip_prefix("Basic ") else { return Err(bad()) };
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    Ok((!user.is_empty()).then(|| user.to_string()))
}

/// `connect-timeout-ms`, when present and not zero.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// `Keepalive-Ping-Interval` (seconds; 50 by default, at least 1).
pub fn keepalive(headers: &HeaderMap) -> Duration {
    let secs = headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(50)
        .max(1);
    Duration::from_secs(secs)
}

/// One enveloped message.
fn envelope(flags: u8, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + json.len());
    out.push(flags);
    out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(json);
    Bytes::from(out)
}

/// The sending end of a server stream: messages, then one end (with or without an error).
#[derive(Debug)]
pub struct StreamSender {
    tx: mpsc::Sender<Bytes>,
}

impl StreamSender {
    /// Sends a message; `false` once the client is gone.
    pub async fn send<T: Serialize>(&self, msg: &T) -> bool {
        let json = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
        self.tx.send(envelope(0, &json)).await.is_ok()
    }

    /// Ends the stream, with `error` if it failed.
    pub async fn end(self, error: Option<RpcError>) {
        let body = match error {
            Some(e) => serde_json::json!({"error": e.body()}),
            None => serde_json::json!({}),
        };
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let _ = self.tx.send(envelope(END_STREAM, &json)).await;
    }

    /// Resolves when the client went away.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// A streaming response and the sender that feeds it.
pub fn stream() -> (StreamSender, Response) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let body = Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<Bytes, std::convert::Infallible>),
    );
    let mut resp = Response::new(body);
    // Exactly this: the client compares what follows `application/connect+` with its codec.
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/connect+json"));
    (StreamSender { tx }, resp)
}

/// A streaming call that failed before its first message: a plain Connect error.
pub fn stream_error(e: RpcError) -> Response {
    e.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_requests_are_unwrapped_from_their_envelope() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/connect+json"));
        let body = envelope(0, br#"{"a":1}"#);
        let v: serde_json::Value = parse_streaming(&h, &body).unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(
            parse_streaming::<serde_json::Value>(&h, &body[..6]).unwrap_err().code,
            Code::InvalidArgument
        );
        let mut compressed = body.to_vec();
        compressed[0] = 1;
        assert_eq!(
            parse_streaming::<serde_json::Value>(&h, &compressed).unwrap_err().code,
            Code::Unimplemented
        );
    }

    #[test]
    fn the_basic_user_is_read_and_bad_headers_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_user(&h).unwrap(), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjo=")); // "user:"
        assert_eq!(basic_user(&h).unwrap().as_deref(), Some("user"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_user(&h).unwrap_err().code, Code::Unauthenticated);
    }
}

//! The e2b-compatible surface: code written for the `e2b` SDK runs against sandpit unchanged.
//!
//! ```text
//!  request ──► envd plane?  `E2b-Sandbox-Id` header, or Host `49983-<id>.<domain>`
//!               │ yes                                   │ no
//!               ▼                                       ▼
//!   envd router (this sandbox)                 the API router: /v1 …, and the e2b REST
//!   /health, /files, /process.Process/*,       control plane (/sandboxes, /v2/sandboxes …,
//!   /filesystem.Filesystem/* (Connect, JSON),  `X-API-KEY`), answered by `api`
//!   authorized by the sandbox's access token
//! ```
//!
//! Both planes run on the same listener as `/v1`. API keys are sandpit keys, so projects, KYC
//! and billing apply as on `/v1`. Each sandbox's envd access token is derived from the server's
//! secret key and the sandbox id (stable across restarts, stored nowhere). Protocol facts:
//! `E2B-COMPAT.md` in the shared notes; the reported envd version is [`ENVD_VERSION`].

mod api;
mod connect;
mod envd;
mod files;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sandpit_types::SandboxId;

use crate::app::App;

/// The envd version sandpit's surface matches (octet-stream uploads, `close_stdin`; no file
/// metadata or watch entries, which came later).
pub const ENVD_VERSION: &str = "0.5.7";

/// The port the SDK addresses envd at.
pub const ENVD_PORT: u16 = 49983;

/// The e2b REST control plane, merged into the API router.
pub fn api_routes() -> Router<Arc<App>> {
    api::routes()
}

/// The envd plane: every request the [`dispatch`] middleware recognizes as addressed to a
/// sandbox goes here.
pub fn envd_router(app: Arc<App>) -> Router {
    envd::routes().with_state(app)
}

/// Sends envd-plane requests to `envd` and everything else on.
pub async fn dispatch(envd: Router, req: Request, next: Next) -> Response {
    match target(req.headers()) {
        Target::Api => next.run(req).await,
        Target::Envd(id) => {
            use tower::ServiceExt as _;
            let mut req = req;
            req.extensions_mut().insert(EnvdSandbox(id));
            match envd.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
        Target::OtherPort { port, id } => not_open(&id, port),
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// The API (sandpit's `/v1` or the e2b REST plane).
    Api,
    /// The envd plane of this sandbox (as written: it may name no sandbox).
    Envd(String),
    /// Another port of a sandbox, which sandpit does not proxy.
    OtherPort { port: u16, id: String },
}

/// Routing as E2B's proxy does it: the `E2b-Sandbox-Id` header, else a Host of the form
/// `<port>-<id>.<domain>`.
fn target(headers: &HeaderMap) -> Target {
    if let Some(id) = headers.get("e2b-sandbox-id").and_then(|v| v.to_str().ok()) {
        let port = headers.get("e2b-sandbox-port").and_then(|v| v.to_str().ok()).and_then(|p| p.parse().ok());
        return match port {
            Some(p) if p != ENVD_PORT => Target::OtherPort { port: p, id: id.to_string() },
            _ => Target::Envd(id.to_string()),
        };
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return Target::Api };
    let first = host.split('.').next().unwrap_or_default();
    if !host.contains('.') {
        return Target::Api;
    }
    match first.split_once('-') {
        Some((port, id))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && id.len() == 20
                && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)) =>
        {
            match port.parse::<u16>() {
                Ok(ENVD_PORT) => Target::Envd(id.to_string()),
                Ok(p) => Target::OtherPort { port: p, id: id.to_string() },
                Err(_) => Target::Api,
            }
        }
        _ => Target::Api,
    }
}

/// The sandbox an envd request addresses, as written: [`dispatch`] found it and put it in the
/// request's extensions (empty, so unknown, if a request reached the envd router otherwise).
#[derive(Debug, Clone, Default)]
pub struct EnvdSandbox(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for EnvdSandbox {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned().unwrap_or_default())
    }
}

/// The envd access token of a sandbox.
pub fn access_token(app: &App, id: &SandboxId) -> String {
    let raw = app.secrets.derive(&format!("e2b-envd-access-token:{id}"));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The proxy's answer for a sandbox that does not run (the SDK looks for "was not found").
fn not_found(id: &str) -> Response {
    let body = serde_json::json!({"sandboxId": id, "message": "The sandbox was not found", "code": 502});
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

/// The proxy's answer for a port nothing listens on through sandpit.
fn not_open(id: &str, port: u16) -> Response {
    let body = serde_json::json!({
        "sandboxId": id,
        "message": format!("The sandbox is running but port {port} is not open (sandpit serves only envd, port {ENVD_PORT})"),
        "port": port,
        "code": 502,
    });
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn requests_are_routed_by_header_then_by_host() {
        let id = "0abcdefghijklmnopqrs";
        assert_eq!(target(&headers(&[("host", "localhost:7700")])), Target::Api);
        assert_eq!(target(&headers(&[("host", "api.example.com")])), Target::Api);
        assert_eq!(target(&headers(&[("host", "127.0.0.1:7700")])), Target::Api);
        assert_eq!(
            target(&headers(&[
                ("host", "localhost:7700"),
                ("e2b-sandbox-id", id),
                ("e2b-sandbox-port", "49983")
            ])),
            Target::Envd(id.into())
        );
        assert_eq!(
            target(&headers(&[("host", &format!("49983-{id}.sandpit.example.com"))])),
            Target::Envd(id.into())
        );
        assert_eq!(
            target(&headers(&[("host", &format!("8080-{id}.sandpit.example.com:443"))])),
            Target::OtherPort { port: 8080, id: id.into() }
        );
        // Not an id: a hyphenated host name stays with the API.
        assert_eq!(target(&headers(&[("host", "49983-not-an-id.example.com")])), Target::Api);
        assert_eq!(target(&headers(&[("host", "my-host.example.com")])), Target::Api);
    }
}

//! The web console: the files of `web/dist`, embedded at build time (see `build.rs`), served at
//! `/`. Any other GET that is not an API path answers the console's `index.html`, whose router
//! shows the page (a reload of a client route works). Also the sandbox feature's gate.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sandpit_types::ApiError;

use crate::app::App;
use crate::error::AppError;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// Whether the binary holds a real build of the console (else a page saying how to build it).
pub const BUILT: bool = assets::BUILT;

/// Hashed build outputs (`assets/index-3f2a…js`): cached for a year, they never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else (`index.html`): revalidated, so a new build shows at once.
const REVALIDATE: &str = "no-cache";

/// An embedded file by its path below the build's root (`index.html`, `assets/x.js`).
pub fn asset(path: &str) -> Option<&'static [u8]> {
    assets::ASSETS.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

/// Paths that belong to the API, never to the console.
fn is_api(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/") || path == "/healthz" || path == "/metrics"
}

/// Paths of the sandbox feature.
pub fn is_sandbox_route(path: &str) -> bool {
    path == "/v1/sandboxes" || path.starts_with("/v1/sandboxes/")
}

/// The content type of a file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn file_response(path: &str, bytes: &'static [u8], cache: &'static str) -> Response {
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// Answers what no route matched: the API's JSON 404 for API paths and other methods, an
/// embedded file when one has this path, and the console's `index.html` for the rest (client
/// routes). A missing file (a last segment with an extension) is a plain 404.
pub async fn fallback(method: Method, uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if is_api(path) || (method != Method::GET && method != Method::HEAD) {
        return AppError::from(ApiError::NotFound { what: "route", id: "requested".into() }).into_response();
    }
    let rel = path.trim_start_matches('/');
    if !rel.is_empty()
        && let Some(bytes) = asset(rel)
    {
        let cache = if rel.starts_with("assets/") { IMMUTABLE } else { REVALIDATE };
        return file_response(rel, bytes, cache);
    }
    let last = rel.rsplit('/').next().unwrap_or_default();
    if last.contains('.') {
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "not found\n")
            .into_response();
    }
    match asset("index.html") {
        Some(bytes) => file_response("index.html", bytes, REVALIDATE),
        None => (StatusCode::NOT_FOUND, "the web console is not built\n").into_response(),
    }
}

/// Answers 404 `feature_disabled` to every sandbox route while the sandbox feature is off.
pub async fn sandbox_gate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if !app.config.enable_sandbox && is_sandbox_route(req.uri().path()) {
        return AppError::from(ApiError::FeatureDisabled { feature: "the sandbox feature" }).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_or_its_placeholder_has_an_index_page() {
        let index = asset("index.html").unwrap();
        assert!(String::from_utf8_lossy(index).contains("<html"));
    }

    #[test]
    fn api_paths_and_sandbox_routes_are_recognised() {
        assert!(is_api("/v1/nope") && is_api("/healthz") && is_api("/metrics") && is_api("/v1"));
        assert!(!is_api("/ui/sandboxes") && !is_api("/v1x") && !is_api("/"));
        assert!(is_sandbox_route("/v1/sandboxes") && is_sandbox_route("/v1/sandboxes/abc/exec"));
        assert!(!is_sandbox_route("/v1/sandboxesx") && !is_sandbox_route("/v1/gpus"));
        assert_eq!(content_type("assets/a-1.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}

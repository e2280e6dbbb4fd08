//! The e2b REST control plane (`X-API-KEY`): create, list, get, kill, timeout, pause and
//! connect (resume), over the same application layer as `/v1`, so projects, KYC, wallets and
//! GPU capacity apply alike. Errors are `{"code": <status>, "message"}` as the SDK parses them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sandpit_types::api::{CreateSandbox, ImageSpec, SandboxView};
use sandpit_types::{ApiError, SandboxState};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ENVD_VERSION;
use crate::app::App;
use crate::auth::Caller;
use crate::error::AppError;

/// The E2B default sandbox timeout when a create names none (seconds).
const DEFAULT_TIMEOUT_S: u64 = 300;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2/sandboxes", post(create).get(list))
        .route("/sandboxes", post(create).get(list))
        .route("/sandboxes/{id}", get(get_one).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/metrics", get(unsupported))
        .route("/v2/sandboxes/{id}/logs", get(unsupported))
        .route("/sandboxes/{id}/snapshots", post(unsupported))
        .route("/sandboxes/{id}/fork", post(unsupported))
        .route("/sandboxes/{id}/network", axum::routing::put(unsupported))
}

/// An error as the e2b SDK reads it.
#[derive(Debug)]
pub struct E2bError {
    status: StatusCode,
    message: String,
}

impl E2bError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn not_found(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("sandbox \"{id}\" not found"))
    }
}

impl From<AppError> for E2bError {
    fn from(e: AppError) -> Self {
        let status = StatusCode::from_u16(e.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = e.0.body();
        let message = match &body.field {
            Some(f) if !body.message.contains(f.as_str()) => format!("{} ({}: {f})", body.message, body.code),
            _ => format!("{} ({})", body.message, body.code),
        };
        Self { status, message }
    }
}

impl From<ApiError> for E2bError {
    fn from(e: ApiError) -> Self {
        AppError(e).into()
    }
}

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        let mut resp =
            (self.status, axum::Json(json!({"code": self.status.as_u16(), "message": self.message})))
                .into_response();
        // Capacity and state errors do not get better by retrying at once.
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status == StatusCode::INSUFFICIENT_STORAGE {
            resp.headers_mut().insert("should-retry", HeaderValue::from_static("false"));
        }
        resp
    }
}

type E2bResult<T> = Result<T, E2bError>;

/// The caller, from `X-API-KEY` (or `Authorization: Bearer`), on a server with sandboxes on.
pub struct E2bCaller(Caller);

impl FromRequestParts<Arc<App>> for E2bCaller {
    type Rejection = E2bError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        if !app.config.enable_sandbox {
            return Err(ApiError::FeatureDisabled { feature: "sandbox" }.into());
        }
        let key = parts
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                parts
                    .headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|h| h.strip_prefix("Bearer "))
            })
            .map(str::trim)
            .unwrap_or_default();
        match Caller::from_key(app, key).await {
            Ok(c) => Ok(Self(c)),
            Err(AppError(ApiError::Unauthorized)) => Err(E2bError::new(
                StatusCode::UNAUTHORIZED,
                "invalid API key: use a sandpit API key as E2B_API_KEY (sent as X-API-KEY)",
            )),
            Err(e) => Err(e.into()),
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The template a sandbox runs: the curated name of its image, else the image reference.
fn template_of(app: &App, image: &str) -> (String, Option<String>) {
    match app.catalog().images.iter().find(|e| e.reference == image) {
        Some(e) => (e.name.clone(), Some(e.name.clone())),
        None => (image.to_string(), None),
    }
}

/// The `Sandbox` answer of create and connect.
fn sandbox_json(app: &App, v: &SandboxView) -> Value {
    let (template, alias) = template_of(app, &v.image);
    json!({
        "templateID": template,
        "sandboxID": v.id.to_string(),
        "clientID": "sandpit",
        "envdVersion": ENVD_VERSION,
        "alias": alias,
        "envdAccessToken": super::access_token(app, &v.id),
        "trafficAccessToken": null,
        "domain": app.config.e2b_domain,
    })
}

/// `ListedSandbox` (and, with `detail`, `SandboxDetail`).
fn listed_json(app: &App, v: &SandboxView, detail: bool) -> Value {
    let now = OffsetDateTime::now_utc();
    let (template, alias) = template_of(app, &v.image);
    let started = v.started_at.unwrap_or(v.created_at);
    let end = match (v.ends_at, v.remaining_s) {
        (Some(e), _) => e,
        (None, Some(r)) => now + time::Duration::seconds(i64::try_from(r).unwrap_or(i64::MAX / 4)),
        (None, None) => {
            v.created_at + time::Duration::seconds(i64::try_from(v.timeout_s).unwrap_or(i64::MAX / 4))
        }
    };
    let state = if v.state == SandboxState::Paused { "paused" } else { "running" };
    let mut out = json!({
        "templateID": template,
        "alias": alias,
        "sandboxID": v.id.to_string(),
        "clientID": "sandpit",
        "startedAt": rfc3339(started),
        "endAt": rfc3339(end),
        "cpuCount": v.cpu.0.div_ceil(1000).max(1),
        "memoryMB": v.memory.bytes() / (1 << 20),
        "diskSizeMB": app.config.sandbox_disk.bytes() / (1 << 20),
        "state": state,
        "envdVersion": ENVD_VERSION,
        "metadata": v.metadata,
        "volumeMounts": [],
    });
    if detail {
        out["envdAccessToken"] = json!(super::access_token(app, &v.id));
        out["domain"] = json!(app.config.e2b_domain);
        out["allowInternetAccess"] = json!(false);
        out["lifecycle"] = json!({"autoResume": false, "onTimeout": "kill"});
        out["pauseMode"] = json!("filesystem");
    }
    out
}

/// A JSON body, tolerant of unknown fields (the SDK sends many sandpit ignores) and empty.
fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &Bytes) -> E2bResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| E2bError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<u64>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    auto_pause: Option<bool>,
    auto_resume: Option<Value>,
    volume_mounts: Option<Vec<Value>>,
}

/// `POST /v2/sandboxes` (and the older `POST /sandboxes`): creates a sandbox from a template (a
/// curated image name, or any image reference) and answers once envd is ready.
async fn create(
    State(app): State<Arc<App>>,
    E2bCaller(caller): E2bCaller,
    bytes: Bytes,
) -> E2bResult<Response> {
    let req: NewSandbox = body(&bytes)?;
    if req.auto_pause == Some(true) {
        return Err(E2bError::new(
            StatusCode::BAD_REQUEST,
            "autoPause (lifecycle on_timeout=\"pause\") is not supported by sandpit: a sandbox ends at its timeout; pause it yourself before",
        ));
    }
    if req.auto_resume.as_ref().and_then(|a| a.get("enabled")).and_then(Value::as_bool) == Some(true) {
        return Err(E2bError::new(StatusCode::BAD_REQUEST, "autoResume is not supported by sandpit"));
    }
    if req.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(E2bError::new(StatusCode::BAD_REQUEST, "volume mounts are not supported by sandpit"));
    }
    let template = req.template_id.filter(|t| !t.is_empty()).unwrap_or_else(|| "base".into());
    let create = CreateSandbox {
        name: None,
        project: None,
        image: Some(ImageSpec::Reference(template)),
        cpu: None,
        memory: None,
        gpu: None,
        timeout_s: Some(req.timeout.unwrap_or(DEFAULT_TIMEOUT_S)),
        env: req.env_vars.unwrap_or_default(),
        command: None,
        // e2b sandboxes stay up whatever the image's own command does.
        keep_running: true,
        metadata: req.metadata.unwrap_or_default(),
    };
    let view = app.create(&caller, create, true).await?;
    match view.state {
        SandboxState::Running => {
            Ok((StatusCode::CREATED, axum::Json(sandbox_json(&app, &view))).into_response())
        }
        SandboxState::Provisioning => Err(E2bError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "sandbox {} is still provisioning (a large image pull?); kill it or connect later",
                view.id
            ),
        )),
        _ => Err(E2bError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "sandbox {} failed to start: {}",
                view.id,
                view.state_reason.as_deref().unwrap_or("unknown reason")
            ),
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ListQuery {
    metadata: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
    next_token: Option<String>,
    // Accepted and not used.
    #[allow(dead_code)]
    started_after: Option<String>,
    #[allow(dead_code)]
    template: Option<String>,
    #[allow(dead_code)]
    order: Option<String>,
}

/// `GET /v2/sandboxes` (and `GET /sandboxes`): running and paused sandboxes, newest first,
/// paged with `X-Next-Token`.
async fn list(
    State(app): State<Arc<App>>,
    E2bCaller(caller): E2bCaller,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> E2bResult<Response> {
    let _ = headers;
    let q: ListQuery = serde_urlencoded::from_str(uri.query().unwrap_or_default())
        .map_err(|e| E2bError::new(StatusCode::BAD_REQUEST, format!("invalid query string: {e}")))?;
    let mut states = Vec::new();
    for s in q.state.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        match s {
            "running" => states.extend([SandboxState::Provisioning, SandboxState::Running]),
            "paused" => states.push(SandboxState::Paused),
            other => {
                return Err(E2bError::new(
                    StatusCode::BAD_REQUEST,
                    format!("unknown state {other:?}: use running or paused"),
                ));
            }
        }
    }
    if states.is_empty() {
        states = vec![SandboxState::Provisioning, SandboxState::Running, SandboxState::Paused];
    }
    let metadata: Vec<(String, String)> = match &q.metadata {
        Some(m) => serde_urlencoded::from_str(m)
            .map_err(|e| E2bError::new(StatusCode::BAD_REQUEST, format!("invalid metadata filter: {e}")))?,
        None => Vec::new(),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(E2bError::new(StatusCode::BAD_REQUEST, "limit must be between 1 and 1000"));
    }
    let page = app
        .list(&caller, None, states, metadata, limit, q.next_token.as_deref().filter(|t| !t.is_empty()))
        .await?;
    let items: Vec<Value> = page.items.iter().map(|v| listed_json(&app, v, false)).collect();
    let mut resp = axum::Json(items).into_response();
    if let Some(next) = page.next_cursor
        && let Ok(v) = HeaderValue::from_str(&next)
    {
        resp.headers_mut().insert("x-next-token", v);
    }
    Ok(resp)
}

/// A live (running, provisioning or paused) sandbox of the caller; 404 otherwise.
async fn live(app: &App, caller: &Caller, id: &str) -> E2bResult<SandboxView> {
    let r = app.find(caller, id).await.map_err(|_| E2bError::not_found(id))?;
    if r.state.is_final() {
        return Err(E2bError::not_found(id));
    }
    Ok(app.view(&r).await?)
}

/// `GET /sandboxes/{id}`.
async fn get_one(
    State(app): State<Arc<App>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
) -> E2bResult<Response> {
    let v = live(&app, &caller, &id).await?;
    Ok(axum::Json(listed_json(&app, &v, true)).into_response())
}

/// `DELETE /sandboxes/{id}`: 204, or 404 for one unknown or already ended.
async fn kill(
    State(app): State<Arc<App>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
) -> E2bResult<StatusCode> {
    let v = live(&app, &caller, &id).await?;
    app.delete_record(v.id, "deleted").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Timeout {
    timeout: Option<u64>,
}

/// `POST /sandboxes/{id}/timeout` (`{"timeout": seconds}`): ends `timeout` seconds from now.
async fn set_timeout(
    State(app): State<Arc<App>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> E2bResult<StatusCode> {
    let t: Timeout = body(&bytes)?;
    let Some(secs) = t.timeout else {
        return Err(E2bError::new(StatusCode::BAD_REQUEST, "timeout (seconds) is required"));
    };
    let v = live(&app, &caller, &id).await?;
    app.set_timeout(&caller, &v.id.to_string(), secs).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/pause`: 204, 409 when already paused. A pause keeps the disk (a
/// filesystem pause in E2B's terms): processes end and start again from the image on resume.
async fn pause(
    State(app): State<Arc<App>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
) -> E2bResult<StatusCode> {
    let v = live(&app, &caller, &id).await?;
    if v.state == SandboxState::Paused {
        return Err(E2bError::new(StatusCode::CONFLICT, format!("sandbox {id} is already paused")));
    }
    app.pause_record(v.id, "paused").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v2/sandboxes/{id}/connect` (and `/sandboxes/{id}/connect`): a running sandbox's
/// timeout is only lengthened (200); a paused one is resumed with the timeout (201).
async fn connect(
    State(app): State<Arc<App>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> E2bResult<Response> {
    let t: Timeout = body(&bytes)?;
    let v = live(&app, &caller, &id).await?;
    let sid = v.id.to_string();
    if v.state == SandboxState::Paused {
        return resume_for(&app, &caller, &sid, t.timeout).await;
    }
    let v = match (t.timeout, v.ends_at) {
        (Some(secs), Some(ends))
            if OffsetDateTime::now_utc()
                + time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 4))
                > ends =>
        {
            app.set_timeout(&caller, &sid, secs).await?
        }
        _ => v,
    };
    Ok((StatusCode::OK, axum::Json(sandbox_json(&app, &v))).into_response())
}

/// `POST /sandboxes/{id}/resume` (SDKs before 2.0): resumes a paused sandbox; 409 if it runs.
async fn resume(
    State(app): State<Arc<App>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> E2bResult<Response> {
    let t: Timeout = body(&bytes)?;
    let v = live(&app, &caller, &id).await?;
    if v.state != SandboxState::Paused {
        return Err(E2bError::new(StatusCode::CONFLICT, format!("sandbox {id} is not paused")));
    }
    resume_for(&app, &caller, &v.id.to_string(), t.timeout).await
}

/// Resumes a paused sandbox with `timeout` seconds (E2B's default when none): 201 and the
/// `Sandbox` answer.
async fn resume_for(app: &Arc<App>, caller: &Caller, sid: &str, timeout: Option<u64>) -> E2bResult<Response> {
    app.resume(caller, sid).await?;
    let v = app.set_timeout(caller, sid, timeout.unwrap_or(DEFAULT_TIMEOUT_S)).await?;
    Ok((StatusCode::CREATED, axum::Json(sandbox_json(app, &v))).into_response())
}

/// What sandpit's e2b surface does not offer (metrics, logs, snapshots, forks, network rules).
async fn unsupported(_caller: E2bCaller) -> E2bError {
    E2bError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not supported by sandpit's e2b-compatible surface; see sandpit's own API under /v1",
    )
}

//! Image handlers: the curated catalog and the store, pulls with progress, removal and prune.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sandpit_image::{ImageRecord, ImageSelector, ImageSource, RegistryCredentials};
use sandpit_types::api::{CuratedImageView, ImagesView, LocalImageView, PruneReport, PullEvent, PullImage};
use sandpit_types::{ApiError, ErrorBody};
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::{ApiJson, ApiQuery};
use crate::app::App;
use crate::auth::Caller;
use crate::error::{AppError, AppResult};

fn local_view(r: &ImageRecord) -> LocalImageView {
    let (source, private) = match &r.source {
        ImageSource::Local => ("local", false),
        ImageSource::Registry { anonymous, .. } => ("registry", !anonymous),
    };
    LocalImageView {
        references: r.references.iter().map(|x| x.as_str().to_string()).collect(),
        digest: r.manifest_digest.to_string(),
        size: r.size,
        imported_at: r.imported_at,
        last_used: r.last_used,
        source: source.into(),
        private,
    }
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    caller.require_admin("change the image store")
}

/// The curated images by category, and what is in the server's image store.
#[utoipa::path(get, path = "/v1/images", tag = "images", operation_id = "list_images",
    responses((status = 200, description = "Catalog and store", body = ImagesView),
        (status = 401, description = "No or bad key", body = ErrorBody)))]
pub async fn list(State(app): State<Arc<App>>, _caller: Caller) -> AppResult<axum::Json<ImagesView>> {
    let images = app.images.clone();
    let local = tokio::task::spawn_blocking(move || images.list())
        .await
        .map_err(|e| AppError::internal("list images", &e))?
        .map_err(|e| AppError::internal("list images", &e))?;
    let curated = app
        .catalog()
        .images
        .into_iter()
        .map(|e| {
            let found = local
                .iter()
                .find(|r| r.references.iter().any(|x| x.as_str() == e.reference || x.name() == e.reference));
            CuratedImageView {
                name: e.name,
                category: e.category,
                description: e.description,
                available: found.is_some(),
                size: found.map(|r| r.size),
                reference: e.reference,
                gpu: e.gpu,
                build: e.build,
            }
        })
        .collect();
    Ok(axum::Json(ImagesView { curated, local: local.iter().map(local_view).collect() }))
}

/// Pulls an image into the store (a curated name or a reference; with credentials for a private
/// registry). With `Accept: application/x-ndjson` the answer streams `PullEvent`s; otherwise it
/// is the image once pulled.
#[utoipa::path(post, path = "/v1/images/pull", tag = "images", request_body = PullImage,
    responses((status = 200, description = "The image, or a stream of PullEvents",
            content((LocalImageView = "application/json"), (PullEvent = "application/x-ndjson"))),
        (status = 400, description = "Bad reference", body = ErrorBody),
        (status = 404, description = "No such image in the registry", body = ErrorBody),
        (status = 403, description = "The registry refused the credentials", body = ErrorBody),
        (status = 503, description = "The registry is unreachable", body = ErrorBody)))]
pub async fn pull(
    State(app): State<Arc<App>>,
    _caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PullImage>,
) -> AppResult<Response> {
    let spec = sandpit_types::api::ImageSpec::WithCredentials {
        reference: req.reference.clone(),
        username: req.username.clone(),
        password: req.password.clone(),
    };
    spec.validate()?;
    let resolved = app.resolve_image(Some(&spec))?;
    let auth = resolved.login.map(|l| RegistryCredentials::new(l.username, l.password));
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    if !streaming {
        let rec = app.puller.pull(&resolved.reference, auth, |_| {}).await.map_err(pull_error)?;
        return Ok(axum::Json(local_view(&rec)).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<PullEvent>();
    let progress_tx = tx.clone();
    tokio::spawn(async move {
        let result = app
            .puller
            .pull(&resolved.reference, auth, move |p| {
                let status = match p.status {
                    sandpit_image::LayerStatus::Downloading => "downloading",
                    sandpit_image::LayerStatus::Cached => "cached",
                    sandpit_image::LayerStatus::Done => "done",
                };
                let _ = progress_tx.send(PullEvent::Progress {
                    layer: p.layer.to_string(),
                    done_bytes: p.done.bytes(),
                    total_bytes: p.total.bytes(),
                    status: status.into(),
                });
            })
            .await;
        let last = match result {
            Ok(rec) => PullEvent::Done { image: local_view(&rec) },
            Err(e) => PullEvent::Error { code: e.reason().into(), message: e.to_string() },
        };
        let _ = tx.send(last);
    });
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(line)), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .map_err(|e| AppError::internal("pull", &e))
}

fn pull_error(e: sandpit_image::PullError) -> AppError {
    let message = e.to_string();
    let err = match e.reason() {
        "invalid_reference" => ApiError::invalid("reference", message),
        "image_not_found" => ApiError::NotFound { what: "image", id: message },
        "registry_auth_failed" => ApiError::Forbidden { message },
        "registry_unreachable" | "registry_tls_failed" => ApiError::Unavailable { message },
        "image_too_large" | "image_unsupported" => ApiError::invalid("reference", message),
        _ => return AppError::internal("pull", &e),
    };
    err.into()
}

/// `?reference=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// The reference (or `sha256:` digest) to remove.
    reference: String,
}

/// Removes an image from the store (administrators only; refused while a sandbox uses it).
#[utoipa::path(delete, path = "/v1/images", tag = "images", operation_id = "remove_image", params(RemoveQuery),
    responses((status = 204, description = "Removed"),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No such image", body = ErrorBody),
        (status = 409, description = "In use", body = ErrorBody)))]
pub async fn remove(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RemoveQuery>,
) -> AppResult<StatusCode> {
    require_admin(&caller)?;
    let selector: ImageSelector = q
        .reference
        .parse()
        .map_err(|e: sandpit_image::ImageError| ApiError::invalid("reference", e.to_string()))?;
    let images = app.images.clone();
    let sel = selector.clone();
    let rec = tokio::task::spawn_blocking(move || images.get(&sel))
        .await
        .map_err(|e| AppError::internal("image", &e))?
        .map_err(|_| ApiError::NotFound { what: "image", id: q.reference.clone() })?;
    if app.images_in_use().await?.contains(&rec.manifest_digest) {
        return Err(ApiError::Conflict {
            field: "reference".into(),
            message: format!("image {} is used by a sandbox", q.reference),
        }
        .into());
    }
    let images = app.images.clone();
    tokio::task::spawn_blocking(move || images.remove(&selector))
        .await
        .map_err(|e| AppError::internal("remove image", &e))?
        .map_err(|e| AppError::internal("remove image", &e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes every image no sandbox uses (except the default and locally built curated images),
/// and the layers nothing needs (administrators only).
#[utoipa::path(post, path = "/v1/images/prune", tag = "images",
    responses((status = 200, description = "What was removed", body = PruneReport),
        (status = 403, description = "Not an administrator", body = ErrorBody)))]
pub async fn prune(State(app): State<Arc<App>>, caller: Caller) -> AppResult<axum::Json<PruneReport>> {
    require_admin(&caller)?;
    let in_use = app.images_in_use().await?;
    let keep = app.pinned_images();
    let images = app.images.clone();
    let report = tokio::task::spawn_blocking(move || images.prune(&in_use, &keep))
        .await
        .map_err(|e| AppError::internal("prune", &e))?
        .map_err(|e| AppError::internal("prune", &e))?;
    Ok(axum::Json(PruneReport {
        removed_references: report.removed_references.iter().map(|r| r.as_str().to_string()).collect(),
        removed_layers: report.removed_layers.len(),
        freed: report.freed(),
    }))
}

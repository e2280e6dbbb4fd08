//! The HTTP API: thin handlers that parse, authorize, call the application layer and map the
//! result. The OpenAPI document is generated from the handlers' annotations.

// The OpenAPI path macros expand parameter types with their full paths.
#![allow(unused_qualifications)]

mod accounts;
mod billing;
mod extract;
mod files;
mod images;
mod meta;
mod processes;
mod sandboxes;
mod streams;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use sandpit_types::ErrorBody;
use sandpit_types::api::{GpuTypeView, Health};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::auth::Caller;

pub use extract::ApiJson;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sandpit",
        description = "Self-hostable GPU-capable sandboxes. Authenticate with `Authorization: Bearer <key>`.\n\nErrors are `{\"code\", \"message\", \"field\"?}` with the matching status.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The API's routes (without state) and the OpenAPI document they make.
fn api() -> (Router<Arc<App>>, utoipa::openapi::OpenApi) {
    let (api, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(meta::config))
        .routes(routes!(sandboxes::create, sandboxes::list))
        .routes(routes!(sandboxes::get, sandboxes::delete))
        .routes(routes!(sandboxes::pause))
        .routes(routes!(sandboxes::resume))
        .routes(routes!(sandboxes::set_timeout))
        .routes(routes!(sandboxes::exec))
        .routes(routes!(processes::list))
        .routes(routes!(processes::signal))
        .routes(routes!(processes::stdin))
        .routes(routes!(processes::output))
        .routes(routes!(files::list, files::remove))
        .routes(routes!(files::stat))
        .routes(routes!(files::download, files::upload))
        .routes(routes!(files::mkdir))
        .routes(routes!(files::move_path))
        .routes(routes!(streams::logs))
        .routes(routes!(streams::events))
        .routes(routes!(accounts::me))
        .routes(routes!(accounts::list_users, accounts::create_user))
        .routes(routes!(accounts::set_kyc))
        .routes(routes!(accounts::kyc_status, accounts::kyc_start))
        .routes(routes!(accounts::kyc_webhook))
        .routes(routes!(accounts::list_projects, accounts::create_project))
        .routes(routes!(accounts::get_project))
        .routes(routes!(accounts::list_members))
        .routes(routes!(accounts::set_member, accounts::remove_member))
        .routes(routes!(accounts::list_keys, accounts::create_key))
        .routes(routes!(accounts::revoke_key))
        .routes(routes!(billing::wallet, billing::update_wallet))
        .routes(routes!(billing::credit))
        .routes(routes!(billing::ledger))
        .routes(routes!(billing::estimate))
        .routes(routes!(billing::usage))
        .routes(routes!(gpus))
        .routes(routes!(images::list, images::remove))
        .routes(routes!(images::pull))
        .routes(routes!(images::prune))
        .split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    (api, doc)
}

/// The OpenAPI document, as committed in `openapi/sandpit.json` and served at
/// `/v1/openapi.json`.
pub fn openapi_json() -> String {
    let mut s = api().1.to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

/// The API's router.
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.config.max_body_bytes;
    let json = openapi_json();
    let envd = crate::e2b::envd_router(app.clone());
    api()
        .0
        .merge(crate::e2b::api_routes())
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json) }),
        )
        .route("/metrics", axum::routing::get(metrics))
        .fallback(crate::web::fallback)
        .layer(axum::middleware::from_fn_with_state(app.clone(), crate::web::sandbox_gate))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
        // Requests addressed to a sandbox's envd (by header or Host) never reach the API.
        .layer(axum::middleware::from_fn(move |req, next| crate::e2b::dispatch(envd.clone(), req, next)))
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "The server is up", body = Health)))]
async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() })
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render())
}

/// GPU types of the server with what is free of each (whole GPUs and 25/50/75 % shares).
#[utoipa::path(get, path = "/v1/gpus", tag = "gpus",
    responses((status = 200, description = "GPU types", body = Vec<GpuTypeView>),
        (status = 401, description = "No or bad key", body = ErrorBody)))]
async fn gpus(State(app): State<Arc<App>>, _caller: Caller) -> axum::Json<Vec<GpuTypeView>> {
    axum::Json(app.gpus.view())
}

//! What a client needs to know about the server before it asks for anything else.

use std::sync::Arc;

use axum::extract::State;
use sandpit_types::api::{ConfigView, FeaturesView};

use crate::app::App;

/// The server's features (sandboxes on or off), currency, default image and the defaults and
/// bounds of sandbox requests. Needs no key: the web console reads it before sign-in.
#[utoipa::path(get, path = "/v1/config", tag = "meta", security(()),
    responses((status = 200, description = "The server's configuration as clients see it", body = ConfigView)))]
pub async fn config(State(app): State<Arc<App>>) -> axum::Json<ConfigView> {
    let c = &app.config;
    axum::Json(ConfigView {
        version: env!("CARGO_PKG_VERSION").into(),
        features: FeaturesView { sandbox: c.enable_sandbox },
        currency: c.billing.currency.clone(),
        default_image: c.default_image.clone(),
        limits: c.limits.clone(),
    })
}

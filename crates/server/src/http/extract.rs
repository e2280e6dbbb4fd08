//! Extractors that turn every malformed request into the API's error format: JSON bodies (unknown
//! fields, bad values with the field named, too large) and query strings.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use std::sync::Arc;

use axum::http::request::Parts;
use bytes::Bytes;
use sandpit_types::ApiError;
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::error::AppError;

/// A JSON body, parsed with field-level errors.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<Arc<App>> for ApiJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &Arc<App>) -> Result<Self, Self::Rejection> {
        let ct_ok = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ct| ct.starts_with("application/json"));
        if !ct_ok {
            return Err(ApiError::BadRequest { message: "send the body as application/json".into() }.into());
        }
        let limit = state.config.max_body_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| body_error(e, limit))?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn body_error(e: BytesRejection, limit: usize) -> AppError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit }.into();
    }
    ApiError::BadRequest { message: format!("could not read the request body: {e}") }.into()
}

/// Parses JSON, naming the offending field on a bad value.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        if path == "."
            || path.is_empty()
            || message.contains("unknown field")
            || inner.is_syntax()
            || inner.is_eof()
        {
            ApiError::BadRequest { message: format!("invalid JSON body: {message}") }.into()
        } else {
            ApiError::invalid(path, message).into()
        }
    })
}

/// A query string, parsed with errors in the API's format.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(q)
            .map(ApiQuery)
            .map_err(|e| ApiError::BadRequest { message: format!("invalid query string: {e}") }.into())
    }
}

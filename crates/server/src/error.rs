//! The server's error: an [`ApiError`] for the client, with the cause logged once, in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sandpit_runtime::RuntimeError;
use sandpit_store::StoreError;
use sandpit_types::ApiError;
use tracing::error;

/// An error on its way to the client.
#[derive(Debug)]
pub struct AppError(pub ApiError);

impl AppError {
    /// An internal error: logs `cause` under a new request id and hides it from the client.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        let request_id = uuid::Uuid::now_v7().simple().to_string();
        error!(request_id = %request_id, error = %cause, "{context}");
        Self(ApiError::Internal { request_id })
    }
}

impl From<ApiError> for AppError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { field, value } => Self(ApiError::Conflict {
                field: field.to_string(),
                message: format!("{field} {value:?} is taken"),
            }),
            other => Self::internal("database", &other),
        }
    }
}

impl From<RuntimeError> for AppError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Init { code, message } => Self(init_error(code, message)),
            RuntimeError::Unreachable { .. } => {
                Self(ApiError::Unavailable { message: "the sandbox is not reachable right now".into() })
            }
            other => Self::internal("runtime", &other),
        }
    }
}

/// Maps an error sandpit-init answered (a fault of the request, not of the server). File
/// handlers map `not_found` themselves (they know the path); here it is a bad request (an unknown
/// user or working directory).
pub fn init_error(code: sandpit_init::protocol::ErrorCode, message: String) -> ApiError {
    use sandpit_init::protocol::ErrorCode as C;
    match code {
        C::NotFound => ApiError::BadRequest { message },
        C::AlreadyExists => ApiError::Conflict { field: "path".into(), message },
        C::PermissionDenied => ApiError::Forbidden { message },
        C::NoSpace => ApiError::NoCapacity { message },
        C::NoSuchProcess => ApiError::NotFound { what: "process", id: message },
        C::ProcessExited => ApiError::Conflict { field: "pid".into(), message },
        C::InvalidArgument
        | C::NotADirectory
        | C::IsADirectory
        | C::DirectoryNotEmpty
        | C::SpawnFailed
        | C::UnsupportedVersion
        | C::Io => ApiError::BadRequest { message },
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0.body())).into_response()
    }
}

/// The server's result type.
pub type AppResult<T> = Result<T, AppError>;

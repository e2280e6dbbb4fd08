//! The API's one error type and its mapping to HTTP statuses and JSON bodies.
//!
//! Every error leaves the server as `{"code": "snake_case", "message": "…", "field": "…"?}` with
//! the status of [`ApiError::status`]. Messages say what went wrong in their own words; internal
//! details never reach them (an internal error carries only a request id).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::SandboxState;

/// An error as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is invalid (400).
    #[error("{message}")]
    InvalidInput {
        /// The offending field, as named in the request (`cpu`, `env.FOO`, `image`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request is malformed as a whole (400): bad JSON, unknown fields.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
    },
    /// No API key, or an unknown or revoked one (401).
    #[error("missing or invalid API key: send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// A signed request (a provider's webhook) whose signature or timestamp is missing, wrong or
    /// stale (401).
    #[error("{message}")]
    BadSignature {
        /// Why.
        message: String,
    },
    /// The caller may not do this (403).
    #[error("{message}")]
    Forbidden {
        /// Why.
        message: String,
    },
    /// The account must complete KYC first (403).
    #[error("{message}")]
    KycRequired {
        /// How to start verification.
        message: String,
    },
    /// Not found, or not the caller's (404).
    #[error("{what} {id} not found")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// The identifier given.
        id: String,
    },
    /// The feature is turned off on this server (404).
    #[error("{feature} is disabled on this server")]
    FeatureDisabled {
        /// The feature.
        feature: &'static str,
    },
    /// The operation does not apply in the sandbox's state (409).
    #[error("{message}")]
    WrongState {
        /// The sandbox's current state.
        state: SandboxState,
        /// What was refused.
        message: String,
    },
    /// A unique value is taken (409).
    #[error("{message}")]
    Conflict {
        /// The field whose value is taken.
        field: String,
        /// What is taken.
        message: String,
    },
    /// The wallet cannot pay for this (402).
    #[error("{message}")]
    InsufficientFunds {
        /// Details.
        message: String,
    },
    /// The request body is too large (413).
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// No GPU matches the request (507).
    #[error("{message}")]
    NoGpuCapacity {
        /// What is free.
        message: String,
    },
    /// No capacity for CPU or memory (503).
    #[error("{message}")]
    NoCapacity {
        /// What is free.
        message: String,
    },
    /// The sandbox is not reachable right now (503).
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// Anything else (500); details are in the server log under the request id.
    #[error("internal error (request {request_id})")]
    Internal {
        /// Correlates with the server log.
        request_id: String,
    },
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_input`, `not_found`, `wrong_state`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// The request field the error is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The sandbox's current state, for `wrong_state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SandboxState>,
}

impl ApiError {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput { field: field.into(), message: message.into() }
    }

    /// A sandbox that does not exist (or is not the caller's).
    pub fn sandbox_not_found(id: impl Into<String>) -> Self {
        Self::NotFound { what: "sandbox", id: id.into() }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidInput { .. } | Self::BadRequest { .. } => 400,
            Self::Unauthorized | Self::BadSignature { .. } => 401,
            Self::InsufficientFunds { .. } => 402,
            Self::Forbidden { .. } | Self::KycRequired { .. } => 403,
            Self::NotFound { .. } | Self::FeatureDisabled { .. } => 404,
            Self::WrongState { .. } | Self::Conflict { .. } => 409,
            Self::PayloadTooLarge { .. } => 413,
            Self::Internal { .. } => 500,
            Self::NoCapacity { .. } | Self::Unavailable { .. } => 503,
            Self::NoGpuCapacity { .. } => 507,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidInput { .. } => "invalid_input",
            Self::BadRequest { .. } => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::BadSignature { .. } => "bad_signature",
            Self::Forbidden { .. } => "forbidden",
            Self::KycRequired { .. } => "kyc_required",
            Self::NotFound { .. } => "not_found",
            Self::FeatureDisabled { .. } => "feature_disabled",
            Self::WrongState { .. } => "wrong_state",
            Self::Conflict { .. } => "conflict",
            Self::InsufficientFunds { .. } => "insufficient_funds",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::NoGpuCapacity { .. } => "no_gpu_capacity",
            Self::NoCapacity { .. } => "no_capacity",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal { .. } => "internal",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        let field = match self {
            Self::InvalidInput { field, .. } | Self::Conflict { field, .. } => Some(field.clone()),
            _ => None,
        };
        let state = match self {
            Self::WrongState { state, .. } => Some(*state),
            _ => None,
        };
        ErrorBody { code: self.code().to_string(), message: self.to_string(), field, state }
    }
}

impl From<crate::state::TransitionError> for ApiError {
    fn from(e: crate::state::TransitionError) -> Self {
        Self::WrongState { state: e.from, message: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{SandboxEvent, SandboxState};

    #[test]
    fn each_error_maps_to_its_status_and_code() {
        let cases = [
            (ApiError::invalid("cpu", "bad"), 400, "invalid_input"),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::BadSignature { message: "x".into() }, 401, "bad_signature"),
            (ApiError::InsufficientFunds { message: "x".into() }, 402, "insufficient_funds"),
            (ApiError::KycRequired { message: "x".into() }, 403, "kyc_required"),
            (ApiError::sandbox_not_found("x"), 404, "not_found"),
            (ApiError::Conflict { field: "name".into(), message: "x".into() }, 409, "conflict"),
            (ApiError::NoGpuCapacity { message: "x".into() }, 507, "no_gpu_capacity"),
            (ApiError::Internal { request_id: "r1".into() }, 500, "internal"),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status(), e.code()), (status, code), "{e:?}");
        }
    }

    #[test]
    fn a_refused_transition_is_409_with_the_current_state() {
        let e: ApiError = SandboxState::Paused.apply(SandboxEvent::Pause).unwrap_err().into();
        assert_eq!(e.status(), 409);
        let body = e.body();
        assert_eq!(body.state, Some(SandboxState::Paused));
        assert_eq!(body.message, "cannot pause a sandbox that is paused");
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["code"], "wrong_state");
        assert!(json.get("field").is_none());
    }

    #[test]
    fn internal_errors_reveal_only_a_request_id() {
        let e = ApiError::Internal { request_id: "abc".into() };
        assert_eq!(e.body().message, "internal error (request abc)");
    }
}

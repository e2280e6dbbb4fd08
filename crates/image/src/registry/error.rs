//! Why a pull or an access check failed ([`PullError`], with a stable [`PullError::reason`] code),
//! and the mapping from the registry client's errors onto it.
//!
//! Messages are written here from typed facts (registry, repository, status codes), never copied
//! from the registry client, the HTTP stack or a response body, so no credential or bearer token
//! can reach a message; what those say is logged at debug level with the password redacted.

use std::fmt;
use std::sync::Arc;

use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use sandpit_types::ByteSize;

use crate::digest::Sha256Digest;
use crate::error::{DigestSubject, ImageError};

/// Everything a registry pull or access check can fail with.
///
/// Cheap to clone (concurrent pulls of one image share one outcome).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// The reference is not a valid image reference.
    #[error("{input:?} is not a valid image reference: {reason}")]
    InvalidReference {
        /// The rejected input (truncated to 300 characters).
        input: String,
        /// What rule it breaks.
        reason: &'static str,
    },

    /// The registry (or its token service) refused the credentials, or asks for some.
    #[error(
        "registry {registry} refused access to {repository}: the credentials are missing or not accepted"
    )]
    AuthFailed {
        /// The registry host.
        registry: String,
        /// The repository asked for.
        repository: String,
    },

    /// The repository, tag or manifest does not exist.
    #[error("image {reference} was not found in registry {registry}")]
    NotFound {
        /// The registry host.
        registry: String,
        /// The reference asked for, normalised (`docker.io/library/busybox:latest`).
        reference: String,
    },

    /// The registry could not be reached or kept failing, after every attempt.
    #[error("registry {registry} is unreachable ({cause}) after {attempts} attempts")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// What the last attempt ran into.
        cause: NetworkCause,
        /// How many attempts were made.
        attempts: u32,
    },

    /// HTTPS to the registry failed in the TLS handshake: typically a plain-HTTP registry that
    /// is not listed as insecure.
    #[error(
        "could not talk TLS to registry {registry}; if it serves plain HTTP, list it in insecure_registries"
    )]
    TlsFailed {
        /// The registry host.
        registry: String,
    },

    /// The registry answered in a way the distribution protocol does not allow.
    #[error("registry {registry} gave an answer the pull cannot use{}", status_suffix(*.status))]
    Protocol {
        /// The registry host.
        registry: String,
        /// The HTTP status, when one was involved.
        status: Option<u16>,
    },

    /// The image unpacks to more than the store's maximum image size; nothing of it is kept.
    #[error("the image unpacks to more than {limit}")]
    TooLarge {
        /// The store's maximum unpacked size of one image.
        limit: ByteSize,
    },

    /// The image uses a media type, layer kind or platform sandpit does not run.
    #[error("the image is not supported: {0}")]
    Unsupported(Arc<ImageError>),

    /// Storing or verifying the image failed (digest mismatch, corrupt layer, store IO …).
    #[error(transparent)]
    Image(Arc<ImageError>),

    /// Something inside sandpit failed (the registry client could not be set up, the pull task
    /// stopped).
    #[error("internal error: {what}")]
    Internal {
        /// What failed.
        what: &'static str,
    },
}

impl PullError {
    /// A stable snake_case code for the API.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidReference { .. } => "invalid_reference",
            Self::AuthFailed { .. } => "registry_auth_failed",
            Self::NotFound { .. } => "image_not_found",
            Self::Unreachable { .. } => "registry_unreachable",
            Self::TlsFailed { .. } => "registry_tls_failed",
            Self::Protocol { .. } => "registry_protocol_error",
            Self::TooLarge { .. } => "image_too_large",
            Self::Unsupported(_) => "image_unsupported",
            Self::Image(e) => match &**e {
                ImageError::DigestMismatch { .. } | ImageError::SizeMismatch { .. } => {
                    "image_digest_mismatch"
                }
                ImageError::Io { .. }
                | ImageError::StoreCorrupt { .. }
                | ImageError::IdShift(_)
                | ImageError::IdShiftMismatch { .. }
                | ImageError::LayerMissing { .. } => "image_store_error",
                _ => "image_invalid",
            },
            Self::Internal { .. } => "internal_error",
        }
    }

    /// Whether retrying later could succeed without anything changing on the caller's side.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

impl From<ImageError> for PullError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::TooLarge { limit } => Self::TooLarge { limit },
            ImageError::InvalidReference { input, reason } => Self::InvalidReference { input, reason },
            e @ (ImageError::UnsupportedMediaType { .. }
            | ImageError::ForeignLayer { .. }
            | ImageError::NoMatchingPlatform { .. }
            | ImageError::AmbiguousManifest { .. }
            | ImageError::UnsupportedRootfsType { .. }
            | ImageError::UnsupportedDigestAlgorithm { .. }
            | ImageError::IndexTooDeep { .. }) => Self::Unsupported(Arc::new(e)),
            e => Self::Image(Arc::new(e)),
        }
    }
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

/// What a transient failure was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetworkCause {
    /// The connection could not be made (refused, no route, DNS).
    Connect,
    /// The connection or a read timed out.
    Timeout,
    /// The connection broke while a request or response was under way.
    ConnectionLost,
    /// The registry answered with a 5xx status.
    ServerError(u16),
    /// The registry answered 429 Too Many Requests.
    TooManyRequests,
}

impl fmt::Display for NetworkCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect => f.write_str("connection failed"),
            Self::Timeout => f.write_str("timed out"),
            Self::ConnectionLost => f.write_str("connection lost"),
            Self::ServerError(status) => write!(f, "HTTP {status}"),
            Self::TooManyRequests => f.write_str("HTTP 429, too many requests"),
        }
    }
}

/// A failed registry request: worth retrying, or final.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Connect errors, timeouts, broken connections, 5xx, 429.
    Transient(NetworkCause),
    /// Everything else (401, 403, 404, protocol violations …).
    Final(PullError),
}

/// Who a request was about, for the messages of the errors it maps to.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext {
    /// The registry host.
    pub(crate) registry: String,
    /// The repository.
    pub(crate) repository: String,
    /// The normalised reference.
    pub(crate) reference: String,
}

impl RequestContext {
    pub(crate) fn auth_failed(&self) -> PullError {
        PullError::AuthFailed { registry: self.registry.clone(), repository: self.repository.clone() }
    }

    pub(crate) fn not_found(&self) -> PullError {
        PullError::NotFound { registry: self.registry.clone(), reference: self.reference.clone() }
    }

    pub(crate) fn protocol(&self, status: Option<u16>) -> PullError {
        PullError::Protocol { registry: self.registry.clone(), status }
    }

    /// Maps an error of the HTTP client (connect, TLS, timeout, broken connection).
    pub(crate) fn classify_http(&self, e: &reqwest::Error) -> Failure {
        if let Some(status) = e.status() {
            self.by_status(status.as_u16())
        } else if is_tls_failure(e) {
            Failure::Final(PullError::TlsFailed { registry: self.registry.clone() })
        } else if e.is_timeout() {
            Failure::Transient(NetworkCause::Timeout)
        } else if e.is_connect() {
            Failure::Transient(NetworkCause::Connect)
        } else if e.is_request() || e.is_body() || e.is_decode() {
            Failure::Transient(NetworkCause::ConnectionLost)
        } else {
            Failure::Final(self.protocol(None))
        }
    }

    /// Maps an HTTP status that is not success.
    pub(crate) fn by_status(&self, status: u16) -> Failure {
        match status {
            401 | 403 => Failure::Final(self.auth_failed()),
            404 => Failure::Final(self.not_found()),
            408 => Failure::Transient(NetworkCause::Timeout),
            429 => Failure::Transient(NetworkCause::TooManyRequests),
            500..=599 => Failure::Transient(NetworkCause::ServerError(status)),
            other => Failure::Final(self.protocol(Some(other))),
        }
    }

    /// Maps an error of the registry client.
    pub(crate) fn classify(&self, error: &OciDistributionError) -> Failure {
        match error {
            OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::UnauthorizedError { .. } => Failure::Final(self.auth_failed()),
            OciDistributionError::RegistryError { envelope, .. } => {
                let code = envelope.errors.first().map(|e| &e.code);
                match code {
                    Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => {
                        Failure::Final(self.auth_failed())
                    }
                    Some(
                        OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::ManifestBlobUnknown
                        | OciErrorCode::NameInvalid,
                    ) => Failure::Final(self.not_found()),
                    Some(OciErrorCode::Toomanyrequests) => Failure::Transient(NetworkCause::TooManyRequests),
                    _ => Failure::Final(self.protocol(None)),
                }
            }
            OciDistributionError::ServerError { code, .. } => self.by_status(*code),
            OciDistributionError::ImageManifestNotFoundError(_) => Failure::Final(self.not_found()),
            OciDistributionError::RequestError(e) => self.classify_http(e),
            OciDistributionError::IoError(_) => Failure::Transient(NetworkCause::ConnectionLost),
            OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
                match (expected.parse::<Sha256Digest>(), actual.parse::<Sha256Digest>()) {
                    (Ok(expected), Ok(actual)) => {
                        Failure::Final(PullError::Image(Arc::new(ImageError::DigestMismatch {
                            what: DigestSubject::Manifest,
                            expected,
                            actual,
                        })))
                    }
                    _ => Failure::Final(self.protocol(None)),
                }
            }
            _ => Failure::Final(self.protocol(None)),
        }
    }
}

/// Whether a request error is a failed TLS handshake (a plain-HTTP server answers the client
/// hello with HTTP, which rustls reports as a corrupt message) or a refused certificate.
fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string().to_ascii_lowercase();
        if ["tls", "certificate", "corrupt message", "invalidcontenttype", "handshake"]
            .iter()
            .any(|needle| text.contains(needle))
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// An error chain as text with every secret replaced, for logs.
pub(crate) fn redacted_chain(error: &(dyn std::error::Error + 'static), secrets: &[&str]) -> String {
    let mut parts = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    redact(&parts.join(": "), secrets)
}

/// `text` with every non-empty secret replaced by `<redacted>`.
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    secrets.iter().filter(|s| !s.is_empty()).fold(text.to_owned(), |t, s| t.replace(s, "<redacted>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RequestContext {
        RequestContext {
            registry: "127.0.0.1:5000".into(),
            repository: "x".into(),
            reference: "127.0.0.1:5000/x:1".into(),
        }
    }

    #[test]
    fn statuses_map_to_final_or_transient_failures() {
        let c = ctx();
        assert!(matches!(c.by_status(401), Failure::Final(PullError::AuthFailed { .. })));
        assert!(matches!(c.by_status(403), Failure::Final(PullError::AuthFailed { .. })));
        assert!(matches!(c.by_status(404), Failure::Final(PullError::NotFound { .. })));
        assert!(matches!(c.by_status(503), Failure::Transient(NetworkCause::ServerError(503))));
        assert!(matches!(c.by_status(429), Failure::Transient(NetworkCause::TooManyRequests)));
        assert!(matches!(c.by_status(418), Failure::Final(PullError::Protocol { status: Some(418), .. })));
    }

    #[test]
    fn registry_error_codes_map_to_auth_and_not_found() {
        let c = ctx();
        let envelope = |code: &str| OciDistributionError::RegistryError {
            envelope: serde_json::from_str(&format!(r#"{{"errors":[{{"code":"{code}","message":"m"}}]}}"#))
                .unwrap(),
            url: "u".into(),
        };
        assert!(matches!(c.classify(&envelope("DENIED")), Failure::Final(PullError::AuthFailed { .. })));
        assert!(matches!(
            c.classify(&envelope("MANIFEST_UNKNOWN")),
            Failure::Final(PullError::NotFound { .. })
        ));
        assert!(matches!(c.classify(&envelope("NAME_UNKNOWN")), Failure::Final(PullError::NotFound { .. })));
        assert!(matches!(c.classify(&envelope("TOOMANYREQUESTS")), Failure::Transient(_)));
    }

    #[test]
    fn auth_failure_text_from_the_token_service_never_reaches_the_message() {
        let c = ctx();
        let e = OciDistributionError::AuthenticationFailure("bad password hunter2".into());
        let Failure::Final(err) = c.classify(&e) else { panic!("auth failures are final") };
        assert_eq!(err.reason(), "registry_auth_failed");
        assert!(!err.to_string().contains("hunter2"));
        assert_eq!(redact("user:hunter2@x hunter2", &["hunter2", ""]), "user:<redacted>@x <redacted>");
    }

    #[test]
    fn image_errors_split_into_too_large_unsupported_and_image() {
        let too_large: PullError = ImageError::TooLarge { limit: ByteSize(1) }.into();
        assert_eq!(too_large.reason(), "image_too_large");
        let foreign: PullError =
            ImageError::ForeignLayer { digest: "sha256:00".into(), media_type: "x".into() }.into();
        assert_eq!(foreign.reason(), "image_unsupported");
        let mismatch: PullError = ImageError::DigestMismatch {
            what: DigestSubject::LayerBlob,
            expected: Sha256Digest::of(b"a"),
            actual: Sha256Digest::of(b"b"),
        }
        .into();
        assert_eq!(mismatch.reason(), "image_digest_mismatch");
    }
}

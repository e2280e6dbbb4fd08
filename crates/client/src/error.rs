//! The client's error: what the server answered, or why no answer came.

use sandpit_types::ErrorBody;

/// A call to the sandpit API that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL cannot be used.
    #[error("{url:?} is not a usable server URL: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API key cannot be sent in a header (control characters, non-ASCII).
    #[error("the API key holds characters that cannot be sent in an HTTP header")]
    InvalidKey,
    /// Nothing answered at the server's address (refused, unreachable, DNS).
    #[error("no server at {url}")]
    Connect {
        /// The server's base URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status and body.
    #[error("{}", .body.message)]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's error body (`code`, `message`, `field`, `state`).
        body: ErrorBody,
    },
    /// The connection failed after it was made (reset, closed mid-body, timed out).
    #[error("talking to the server failed")]
    Transport(#[source] reqwest::Error),
    /// The server's answer is not what the API describes.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// Reading or writing local data (an upload's source, a download's target) failed.
    #[error("local data")]
    Io(#[source] std::io::Error),
}

impl ClientError {
    /// The HTTP status, for errors the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's error body, for errors the server answered.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            Self::Api { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The machine-readable code (`not_found`, `wrong_state`…), for errors the server answered.
    pub fn code(&self) -> Option<&str> {
        self.body().map(|b| b.code.as_str())
    }

    /// Whether no server answered at all.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    /// Whether the server refused the API key (401).
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }

    /// Whether the sandbox (or path) does not exist or is not the caller's (404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Classifies a transport error of a request to `url`.
    pub(crate) fn transport(url: &str, e: reqwest::Error) -> Self {
        if e.is_connect() {
            Self::Connect { url: url.to_string(), source: e }
        } else if e.is_decode() {
            Self::Decode(e.to_string())
        } else {
            Self::Transport(e)
        }
    }
}

/// The client's result type.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

//! The runtime's error type.

use std::path::PathBuf;
use std::process::ExitStatus;

use sandpit_init::protocol::ErrorCode;
use sandpit_types::SandboxId;

/// Which lifecycle state a sandbox is in, as the runtime sees it (for wrong-state errors).
pub use crate::spec::Phase;

/// Everything the runtime can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No sandbox with this ID exists on this backend.
    #[error("sandbox {0} does not exist")]
    NotFound(SandboxId),
    /// A sandbox with this ID exists already.
    #[error("sandbox {0} exists already")]
    AlreadyExists(SandboxId),
    /// The operation does not apply in the sandbox's current phase.
    #[error("cannot {op} sandbox {id}: it is {phase}")]
    WrongState {
        /// The sandbox.
        id: SandboxId,
        /// What was attempted.
        op: &'static str,
        /// Where it is.
        phase: Phase,
    },
    /// The spec is not acceptable.
    #[error("invalid sandbox spec: {field}: {reason}")]
    InvalidSpec {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The image is not in the local store, or could not be read.
    #[error(transparent)]
    Image(#[from] sandpit_image::ImageError),
    /// The OCI runtime (runc) failed.
    #[error("{binary} {op} failed ({status}): {stderr}")]
    OciRuntime {
        /// The runtime binary.
        binary: String,
        /// The verb (`run`, `delete`, …).
        op: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// A host command other than the OCI runtime failed (mkfs).
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        /// The program.
        program: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// The sandbox's init did not answer as it should.
    #[error("sandbox init broke the protocol: {detail}")]
    InitProtocol {
        /// What was wrong.
        detail: String,
    },
    /// The sandbox's init answered with an error.
    #[error("{message}")]
    Init {
        /// Machine-readable code from init.
        code: ErrorCode,
        /// Init's message.
        message: String,
    },
    /// The sandbox's init could not be reached (the sandbox is not running, or died).
    #[error("sandbox {id} is not reachable: {source}")]
    Unreachable {
        /// The sandbox.
        id: SandboxId,
        /// Why.
        source: std::io::Error,
    },
    /// The host is missing something the backend needs.
    #[error("host is not ready: {what}: {detail}")]
    Host {
        /// What is missing.
        what: &'static str,
        /// Details.
        detail: String,
    },
    /// An I/O error on a host path.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// An I/O error with context.
    pub fn io(context: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { context, path, source }
    }
}

/// The runtime's result type.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

//! The `Backend` trait and the local backend that runs sandboxes with an OCI runtime.
//!
//! - [`Backend`]: what the control plane asks of a backend (create, pause, resume, destroy,
//!   status, exec and files through [`InitClient`], logs, recovery).
//! - [`local::LocalBackend`]: runs each sandbox as an OCI container (runc by default) on an
//!   overlay of the image's shared layers and a per-sandbox disk, with sandpit-init as PID 1.

pub mod backend;
pub mod error;
pub mod failpoint;
pub mod gpu;
pub mod init_client;
pub mod local;
pub mod logs;
pub mod spec;

pub use backend::Backend;
pub use error::{Result, RuntimeError};
pub use init_client::{ExecEvent, ExecOutcome, ExecSession, InitClient, WriteOptions};
pub use local::{LocalBackend, LocalConfig};
pub use logs::LogChunk;
pub use spec::{GpuAttachment, Phase, RecoveryReport, SandboxSpec, SandboxStatus, WorkloadExit};

/// Path of the static `sandpit-probe` test helper built with this crate (for tests that put it
/// into an image).
pub const PROBE_BINARY: &str = env!("SANDPIT_PROBE_PATH");

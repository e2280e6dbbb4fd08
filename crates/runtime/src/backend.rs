//! The `Backend` trait: what the control plane asks of whatever runs sandboxes (this host's
//! OCI runtime now, Kubernetes later).

use async_trait::async_trait;
use sandpit_types::SandboxId;

use crate::error::Result;
use crate::init_client::InitClient;
use crate::logs::LogChunk;
use crate::spec::{GpuAttachment, RecoveryReport, SandboxSpec, SandboxStatus, WorkloadExit};

/// Runs sandboxes.
///
/// Every method is safe to call concurrently; operations on one sandbox are serialized by the
/// backend. Lifecycle methods persist their intent before acting, so that [`Backend::recover`]
/// can finish or undo them after a crash.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Creates and starts a sandbox. On failure nothing of it is left behind.
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxStatus>;

    /// Stops every process of a running sandbox and releases its memory and CPU (no process and no
    /// cgroup remain); its disk is kept. Pausing a sandbox that is not running is
    /// `RuntimeError::WrongState`.
    async fn pause(&self, id: &SandboxId) -> Result<()>;

    /// Starts a paused sandbox again over the same disk and re-runs its entrypoint, with the GPUs
    /// the scheduler gave it this time (maybe other ones than before; empty for none).
    async fn resume(&self, id: &SandboxId, gpus: Vec<GpuAttachment>) -> Result<SandboxStatus>;

    /// Removes a sandbox and everything it had on the host. Idempotent: an unknown ID is `Ok`.
    async fn destroy(&self, id: &SandboxId) -> Result<()>;

    /// The sandbox's current status.
    async fn status(&self, id: &SandboxId) -> Result<SandboxStatus>;

    /// All sandboxes on this backend.
    async fn list(&self) -> Result<Vec<SandboxStatus>>;

    /// Waits until the sandbox's workload has exited (returns at once if it has).
    async fn wait_exit(&self, id: &SandboxId) -> Result<WorkloadExit>;

    /// A client for the sandbox's init (exec, processes, files). The sandbox must be running.
    async fn init(&self, id: &SandboxId) -> Result<InitClient>;

    /// Reads the entrypoint's log from `offset`.
    async fn read_logs(&self, id: &SandboxId, offset: u64, max_bytes: usize) -> Result<LogChunk>;

    /// Looks at the host after a start or crash: re-attaches to running sandboxes, finishes or
    /// undoes interrupted operations, and removes strays. Idempotent.
    async fn recover(&self) -> Result<RecoveryReport>;
}

//! What a sandbox is made of (its spec) and how the runtime reports it (status).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use sandpit_init::protocol::ExitStatus;
use sandpit_types::{ByteSize, MilliCpu, SandboxId};

/// Default pids limit of a sandbox.
pub const DEFAULT_PIDS_LIMIT: u32 = 1024;
/// Default size of a sandbox's writable disk.
pub const DEFAULT_DISK: ByteSize = ByteSize::gib(10);

/// Everything the runtime needs to create a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The sandbox's ID.
    pub id: SandboxId,
    /// An image reference (or digest) present in the local image store.
    pub image: String,
    /// CPU limit.
    pub cpu: MilliCpu,
    /// Memory limit (no swap beyond it).
    pub memory: ByteSize,
    /// Most processes and threads at once.
    pub pids_limit: u32,
    /// Size of the writable disk (the overlay's upper dir lives on a filesystem of this size).
    pub disk: ByteSize,
    /// Environment, over the image's.
    pub env: BTreeMap<String, String>,
    /// Overrides the image's entrypoint. `Some(vec![])` clears it.
    pub entrypoint: Option<Vec<String>>,
    /// Overrides the image's cmd. `Some(vec![])` clears it.
    pub cmd: Option<Vec<String>>,
    /// Overrides the image's working directory.
    pub workdir: Option<String>,
    /// Overrides the image's user (`name`, `uid`, `name:group`, `uid:gid`).
    pub user: Option<String>,
    /// Keep the sandbox up after its workload exits.
    pub keep_running: bool,
    /// Most bytes of entrypoint log kept on disk.
    pub log_max_bytes: u64,
    /// GPUs (or GPU shares) assigned by the scheduler; empty for none.
    #[serde(default)]
    pub gpus: Vec<GpuAttachment>,
}

/// One GPU (or share of one) given to a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuAttachment {
    /// NVML index on the host.
    pub index: u32,
    /// Device node number (`/dev/nvidia<minor>`).
    pub minor: u32,
    /// The GPU's UUID.
    pub uuid: String,
    /// Share in percent: 100 for the whole GPU, else 25, 50 or 75 through CUDA MPS.
    pub fraction: u32,
    /// GPU memory the share may use (the MPS pinned-memory limit); the whole memory for 100 %.
    pub memory_limit: ByteSize,
    /// A simulated GPU: scheduled and billed, but no device is injected.
    pub simulated: bool,
}

impl SandboxSpec {
    /// A spec with defaults: 1 CPU, 1 GiB, 1024 pids, 10 GiB disk, the image's workload.
    pub fn new(id: SandboxId, image: impl Into<String>) -> Self {
        Self {
            id,
            image: image.into(),
            cpu: MilliCpu(1000),
            memory: ByteSize::gib(1),
            pids_limit: DEFAULT_PIDS_LIMIT,
            disk: DEFAULT_DISK,
            env: BTreeMap::new(),
            entrypoint: None,
            cmd: None,
            workdir: None,
            user: None,
            keep_running: false,
            log_max_bytes: 10 << 20,
            gpus: Vec::new(),
        }
    }
}

/// Where a sandbox is, as this host sees it. The intermediate phases (`Creating`, `Pausing`,
/// `Resuming`, `Deleting`) are persisted before the work they name starts, so that recovery after
/// a crash knows what was under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Being created.
    Creating,
    /// Its container runs.
    Running,
    /// Its container is being stopped for a pause.
    Pausing,
    /// No container; the disk is kept.
    Paused,
    /// Its container is being started again.
    Resuming,
    /// Its workload exited and the container stopped (without `keep_running`).
    Exited,
    /// Being deleted.
    Deleting,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Pausing => "pausing",
            Self::Paused => "paused",
            Self::Resuming => "resuming",
            Self::Exited => "exited",
            Self::Deleting => "deleting",
        })
    }
}

/// A sandbox as the backend reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStatus {
    /// The sandbox.
    pub id: SandboxId,
    /// Where it is.
    pub phase: Phase,
    /// Host pid of its init while running.
    pub pid: Option<u32>,
    /// How the workload ended, once it has.
    pub exit: Option<WorkloadExit>,
}

/// How a sandbox's workload (entrypoint) ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadExit {
    /// Exit code or signal; `None` when the status could not be learned (init was killed).
    pub status: Option<ExitStatus>,
    /// Why it could not start, if it could not.
    pub error: Option<String>,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// Running sandboxes re-attached.
    pub adopted: Vec<SandboxId>,
    /// Half-created sandboxes removed.
    pub discarded: Vec<SandboxId>,
    /// Interrupted pauses finished.
    pub paused: Vec<SandboxId>,
    /// Interrupted resumes rolled back to paused.
    pub rolled_back: Vec<SandboxId>,
    /// Interrupted deletes finished.
    pub deleted: Vec<SandboxId>,
    /// Sandboxes whose workload exited while nobody watched.
    pub exited: Vec<SandboxId>,
    /// Stray containers, mounts and cgroups without a sandbox, removed.
    pub strays_removed: Vec<String>,
}

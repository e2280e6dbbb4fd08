//! The records the store keeps.

use std::collections::BTreeMap;

use sandpit_types::api::{EventKind, GpuRequest};
use sandpit_types::{ByteSize, MilliCpu, SandboxId, SandboxState};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A user's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub i64);

/// A project's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProjectId(pub i64);

/// An API key's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ApiKeyId(pub i64);

/// What a user may do everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, in every project.
    Admin,
    /// Their own projects.
    Member,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Created.
    pub created_at: OffsetDateTime,
}

/// A project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Id.
    pub id: ProjectId,
    /// Unique name.
    pub name: String,
    /// Created.
    pub created_at: OffsetDateTime,
}

/// A key to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// Owner.
    pub user: UserId,
    /// Restricted to this project, if any.
    pub project: Option<ProjectId>,
    /// A label.
    pub name: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// The key's first characters, to tell keys apart in lists.
    pub prefix: String,
}

/// A stored API key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Id.
    pub id: ApiKeyId,
    /// Owner.
    pub user: UserId,
    /// Restricted to this project, if any.
    pub project: Option<ProjectId>,
    /// Label.
    pub name: String,
    /// First characters of the key.
    pub prefix: String,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Revoked, if it is.
    pub revoked_at: Option<OffsetDateTime>,
}

/// What the user asked a sandbox to be (the observed state is `SandboxRecord::state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Gone.
    Deleted,
}

/// A sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRecord {
    /// Id.
    pub id: SandboxId,
    /// Project.
    pub project: ProjectId,
    /// Creator.
    pub created_by: UserId,
    /// Name, unique in the project among sandboxes not terminated or failed.
    pub name: Option<String>,
    /// Observed state.
    pub state: SandboxState,
    /// Why it is in that state.
    pub state_reason: Option<String>,
    /// Desired state.
    pub desired: Desired,
    /// Image reference.
    pub image: String,
    /// CPU.
    pub cpu: MilliCpu,
    /// Memory.
    pub memory: ByteSize,
    /// GPU.
    pub gpu: Option<GpuRequest>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Workload override.
    pub command: Option<Vec<String>>,
    /// Stay up after the workload exits.
    pub keep_running: bool,
    /// Timeout in seconds of running time.
    pub timeout_s: u64,
    /// Labels.
    pub metadata: BTreeMap<String, String>,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Last started or resumed.
    pub started_at: Option<OffsetDateTime>,
    /// Deadline while running.
    pub ends_at: Option<OffsetDateTime>,
    /// Running time left while paused, in milliseconds.
    pub remaining_ms: Option<u64>,
    /// Paused at.
    pub paused_at: Option<OffsetDateTime>,
    /// Terminated or failed at.
    pub terminated_at: Option<OffsetDateTime>,
    /// Workload exit code.
    pub exit_code: Option<i32>,
    /// Encrypted registry credentials (opaque to the store).
    pub credentials: Option<Vec<u8>>,
    /// Bumped by every update.
    pub generation: u64,
}

/// Which sandboxes to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFilter {
    /// Only these projects (`None`: all).
    pub projects: Option<Vec<ProjectId>>,
    /// Only these states (empty: all).
    pub states: Vec<SandboxState>,
    /// Only sandboxes having every one of these labels.
    pub metadata: Vec<(String, String)>,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Kind.
    pub kind: EventKind,
    /// New state (state events).
    pub state: Option<SandboxState>,
    /// Reason.
    pub reason: Option<String>,
    /// Message.
    pub message: Option<String>,
    /// Progress details.
    pub progress: Option<serde_json::Value>,
}

impl NewEvent {
    /// A state-change event.
    pub fn state(state: SandboxState, reason: Option<String>) -> Self {
        Self { kind: EventKind::State, state: Some(state), reason, message: None, progress: None }
    }

    /// A progress event.
    pub fn progress(message: impl Into<String>, progress: Option<serde_json::Value>) -> Self {
        Self { kind: EventKind::Progress, state: None, reason: None, message: Some(message.into()), progress }
    }
}

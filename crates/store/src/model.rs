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
    /// Identity verification.
    pub kyc: KycStatus,
    /// The reference a KYC provider's webhook names the user by (set when verification starts).
    pub kyc_reference: Option<String>,
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
    /// The scheduler's reservation while it holds one (opaque JSON to the store).
    pub placement: Option<String>,
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
    /// When it happened (`None`: the store's clock at the write). State changes pass the time
    /// the server also writes into the record (`started_at`, `paused_at`, `terminated_at`), so
    /// the two agree exactly.
    pub at: Option<OffsetDateTime>,
    /// What the sandbox holds from this state change on, for metering (opaque JSON to the store;
    /// not part of the API's event view).
    pub usage: Option<String>,
}

impl NewEvent {
    /// A state-change event.
    pub fn state(state: SandboxState, reason: Option<String>) -> Self {
        Self {
            kind: EventKind::State,
            state: Some(state),
            reason,
            message: None,
            progress: None,
            at: None,
            usage: None,
        }
    }

    /// A progress event.
    pub fn progress(message: impl Into<String>, progress: Option<serde_json::Value>) -> Self {
        Self {
            kind: EventKind::Progress,
            state: None,
            reason: None,
            message: Some(message.into()),
            progress,
            at: None,
            usage: None,
        }
    }

    /// The same event, dated `at`.
    #[must_use]
    pub fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = Some(at);
        self
    }

    /// The same event, carrying what the sandbox holds from now on.
    #[must_use]
    pub fn with_usage(mut self, usage: Option<String>) -> Self {
        self.usage = usage;
        self
    }
}

/// One persisted state change of a sandbox, as metering reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// When.
    pub at: OffsetDateTime,
    /// The state entered.
    pub state: SandboxState,
    /// What the sandbox held from then on ([`NewEvent::usage`]).
    pub usage: Option<String>,
}

/// Where a user is in identity verification. Creating or resuming a sandbox needs `Verified`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KycStatus {
    /// Never started.
    Unverified,
    /// Started; the provider has not answered.
    Pending,
    /// Verified by the provider or an admin.
    Verified,
    /// Refused by the provider or an admin.
    Rejected,
}

impl KycStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unverified => "unverified",
            Self::Pending => "pending",
            Self::Verified => "verified",
            Self::Rejected => "rejected",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Unverified, Self::Pending, Self::Verified, Self::Rejected]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A user's role in one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Manages members and the wallet's settings; uses the project.
    Owner,
    /// Uses the project.
    Member,
}

/// A user's membership of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The project.
    pub project: ProjectId,
    /// The user.
    pub user: UserId,
    /// Their role there.
    pub role: MemberRole,
}

/// A project's wallet. Amounts are integer micro-units of the server's currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    /// The project.
    pub project: ProjectId,
    /// Balance (may go below zero by at most one accrual).
    pub balance: i64,
    /// Below this the wallet counts as low.
    pub low_threshold: i64,
    /// Last change.
    pub updated_at: OffsetDateTime,
}

/// What a ledger line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// Money added (admin credit).
    Credit,
    /// Usage charged.
    Charge,
}

/// One line of a wallet's append-only ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Id (increasing).
    pub id: i64,
    /// The wallet's project.
    pub project: ProjectId,
    /// When it was written.
    pub at: OffsetDateTime,
    /// Credit or charge.
    pub kind: LedgerKind,
    /// Positive for credits, positive for charges too (the kind says which way it goes).
    pub amount: i64,
    /// The charged sandbox.
    pub sandbox: Option<SandboxId>,
    /// `gpu`, `cpu`, `memory` or `storage` for charges.
    pub resource: Option<String>,
    /// Seconds of usage a charge covers.
    pub seconds: Option<u64>,
    /// Start of the usage a charge covers.
    pub period_from: Option<OffsetDateTime>,
    /// End of the usage a charge covers.
    pub period_to: Option<OffsetDateTime>,
    /// A note (credits).
    pub note: Option<String>,
    /// Who wrote it (credits).
    pub created_by: Option<UserId>,
}

/// A charge to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCharge {
    /// `gpu`, `cpu`, `memory` or `storage`.
    pub resource: String,
    /// Amount (positive).
    pub amount: i64,
    /// Seconds covered.
    pub seconds: u64,
    /// Start of the usage.
    pub period_from: OffsetDateTime,
    /// End of the usage.
    pub period_to: OffsetDateTime,
}

/// Which ledger lines to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerFilter {
    /// Only these projects (`None`: all).
    pub projects: Option<Vec<ProjectId>>,
    /// Only lines with `period_from` (charges) or `at` (credits) at or after this.
    pub from: Option<OffsetDateTime>,
    /// Only lines with `period_from` (charges) or `at` (credits) before this.
    pub to: Option<OffsetDateTime>,
    /// Only this kind.
    pub kind: Option<LedgerKind>,
    /// Only charges of this sandbox.
    pub sandbox: Option<SandboxId>,
    /// Only lines with an id above this (paging: pass the last id read).
    pub after_id: Option<i64>,
    /// At most this many lines, clamped to `1..=1000` (`None`: all).
    pub limit: Option<u32>,
}

/// A sandbox to meter, with its watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredSandbox {
    /// The sandbox.
    pub sandbox: SandboxRecord,
    /// Up to when its usage is charged (`None`: never charged); pass it as `expected` to
    /// [`crate::Store::charge`].
    pub charged_until: Option<OffsetDateTime>,
}

//! sandpit's persistence: users, projects, API keys, sandboxes and their events.
//!
//! [`Store`] is the one interface the server uses; [`SqliteStore`] implements it over an embedded
//! SQLite database in WAL mode (PostgreSQL later, behind the same trait and the same test suite).
//! Accounts (users, project membership, KYC), wallets and the usage ledger live here too; the
//! money math is `sandpit-billing`'s.

mod model;
mod sqlite;

pub use model::*;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use sandpit_types::SandboxId;
use sandpit_types::api::SandboxEventView;
use time::OffsetDateTime;

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value is taken (`field` names it: `name`, `project`, `user`, `id` of a sandbox,
    /// `key` of an API key, whose `value` is then the key's prefix, never its hash).
    #[error("{field} {value:?} is taken")]
    Conflict {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// An update lost a race: the record changed since it was read (its generation moved on).
    #[error("sandbox {0} changed concurrently")]
    Stale(SandboxId),
    /// The referenced row does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What.
        what: &'static str,
    },
    /// An amount of money the store refuses before writing anything. `what` names it: `amount`
    /// (of a credit: not positive; of a charge line: negative), `low_threshold` (negative), or
    /// `balance` (the change would take the balance out of the 64-bit range; `amount` is then the
    /// change).
    #[error("{what} {amount} is out of range")]
    InvalidAmount {
        /// Which value.
        what: &'static str,
        /// The refused amount.
        amount: i64,
    },
    /// A charge for this sandbox covers a period that ends before it starts, or would move its
    /// watermark backwards (`until` before `expected`). Nothing was written.
    #[error("charge for sandbox {0} has a period that ends before it starts")]
    InvalidPeriod(SandboxId),
    /// A stored value could not be decoded (a bug or a damaged database).
    #[error("corrupt {what} in the database: {detail}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Details.
        detail: String,
    },
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// `t` as the store keeps it: in UTC, truncated (toward the past) to whole milliseconds.
///
/// Every timestamp written through [`Store`] is stored this way, so a record read back equals
/// the one written once its timestamps went through this function.
pub fn truncate_to_millis(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    let sub_ms = t.nanosecond() % 1_000_000;
    t - time::Duration::nanoseconds(i64::from(sub_ms))
}

/// Everything the control plane persists.
///
/// Every method is atomic. Sandbox updates are optimistic: [`Store::update_sandbox`] succeeds only
/// if the record's `generation` is still the one read, and bumps it.
///
/// Timestamps are kept in UTC with millisecond precision: finer parts are truncated on write
/// (see [`truncate_to_millis`]). Times the store sets itself (`created_at` of users, projects and
/// keys, `at` of events) are the store's clock at the write.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether no user exists yet (first start).
    async fn is_empty(&self) -> Result<bool>;

    /// Creates a user. `Conflict { field: "user" }` if the name is taken.
    async fn create_user(&self, name: &str, role: Role) -> Result<User>;

    /// A user by id.
    async fn get_user(&self, id: UserId) -> Result<Option<User>>;

    /// Creates a project. `Conflict { field: "project" }` if the name is taken.
    async fn create_project(&self, name: &str) -> Result<Project>;

    /// A project by name.
    async fn project_by_name(&self, name: &str) -> Result<Option<Project>>;

    /// A project by id.
    async fn get_project(&self, id: ProjectId) -> Result<Option<Project>>;

    /// All projects, by name.
    async fn list_projects(&self) -> Result<Vec<Project>>;

    /// Stores a new API key (only its SHA-256 hash and a display prefix).
    /// `Conflict { field: "key" }` if the hash exists; `NotFound { what: "user" | "project" }` if
    /// its owner or project does not exist.
    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey>;

    /// The key with this hash and its user, if the key exists and is not revoked.
    async fn find_api_key(&self, hash: &[u8; 32]) -> Result<Option<(ApiKey, User)>>;

    /// Revokes a key: [`Store::find_api_key`] no longer finds it. Idempotent: revoking a revoked
    /// key keeps its first `revoked_at`. `NotFound { what: "api key" }` if no such key exists.
    async fn revoke_api_key(&self, id: ApiKeyId) -> Result<()>;

    /// Inserts a sandbox (generation 1, whatever `sandbox.generation` says) with its first event
    /// (seq 1). `Conflict { field: "name" }` if its name is taken in the project by a sandbox that
    /// is not terminated or failed; `Conflict { field: "id" }` if the id exists;
    /// `NotFound { what: "project" | "user" }` if its project or creator does not exist.
    async fn insert_sandbox(&self, sandbox: &SandboxRecord, event: NewEvent) -> Result<SandboxEventView>;

    /// A sandbox by id.
    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>>;

    /// Writes `sandbox` if its stored generation equals `sandbox.generation`, bumping it; appends
    /// `event` in the same transaction. Returns the record as stored (new generation) and the event.
    /// `Stale` if the generation moved on, `NotFound { what: "sandbox" }` if there is no such
    /// sandbox, `Conflict { field: "name" }` as for [`Store::insert_sandbox`].
    async fn update_sandbox(
        &self,
        sandbox: &SandboxRecord,
        event: Option<NewEvent>,
    ) -> Result<(SandboxRecord, Option<SandboxEventView>)>;

    /// A page of sandboxes matching `filter`, newest first; the cursor continues after the last.
    ///
    /// `limit` is clamped to `1..=1000`. The returned cursor is `Some` only when more sandboxes
    /// match; it is opaque (pass it back unchanged). `filter.projects == Some(vec![])` matches
    /// nothing.
    async fn list_sandboxes(
        &self,
        filter: &SandboxFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<SandboxRecord>, Option<String>)>;

    /// Every sandbox in one of `states` (for reconcilers and recovery).
    async fn sandboxes_in_states(&self, states: &[sandpit_types::SandboxState])
    -> Result<Vec<SandboxRecord>>;

    /// Running sandboxes whose `ends_at` is at or before `now`.
    async fn due_timeouts(&self, now: OffsetDateTime) -> Result<Vec<SandboxId>>;

    /// The earliest `ends_at` of a running sandbox.
    async fn next_deadline(&self) -> Result<Option<OffsetDateTime>>;

    /// Paused sandboxes paused at or before `cutoff`.
    async fn due_retention(&self, cutoff: OffsetDateTime) -> Result<Vec<SandboxId>>;

    /// Number of sandboxes per state: every state of [`sandpit_types::SandboxState::ALL`], in
    /// that order, zeros included.
    async fn count_by_state(&self) -> Result<Vec<(sandpit_types::SandboxState, u64)>>;

    /// Appends an event (progress) outside a state change. `NotFound { what: "sandbox" }` if there
    /// is no such sandbox.
    async fn append_event(&self, id: &SandboxId, event: NewEvent) -> Result<SandboxEventView>;

    /// Events of a sandbox with `seq > after`, oldest first, at most `limit` (clamped to
    /// `1..=1000`). Empty for an unknown sandbox.
    async fn list_events(&self, id: &SandboxId, after: u64, limit: u32) -> Result<Vec<SandboxEventView>>;

    /// The state changes of a sandbox, oldest first (the persisted transitions metering reads).
    /// Empty for an unknown sandbox.
    async fn state_changes(&self, id: &SandboxId) -> Result<Vec<StateChange>>;

    // -----------------------------------------------------------------------------------------
    // Accounts.

    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<User>>;

    /// A user by name.
    async fn user_by_name(&self, name: &str) -> Result<Option<User>>;

    /// Sets a user's KYC status and returns the user as stored. `reference: Some` also sets the
    /// reference a provider's webhook names the user by; `None` keeps the current one. The store
    /// does not police transitions (an admin may set any status); the server does.
    /// `NotFound { what: "user" }` if there is no such user; `Conflict { field: "kyc_reference" }`
    /// if another user has that reference.
    async fn set_kyc(&self, user: UserId, kyc: KycStatus, reference: Option<&str>) -> Result<User>;

    /// The user whose KYC reference is `reference`.
    async fn user_by_kyc_reference(&self, reference: &str) -> Result<Option<User>>;

    /// Records that the webhook event `event_id` was received: `true` the first time, `false` on
    /// a replay (nothing is written then). Idempotent. Apply the event's (idempotent) effect
    /// before recording it: a crash between the two then makes the provider's retry apply it
    /// again instead of finding it recorded and losing it.
    async fn record_webhook(&self, event_id: &str) -> Result<bool>;

    /// Whether the webhook event `event_id` was recorded (read-only: check a delivery before
    /// applying it, then record it).
    async fn webhook_seen(&self, event_id: &str) -> Result<bool>;

    /// Makes `user` a member of `project` with `role`; an existing member gets the new role (and
    /// keeps when they were added). `NotFound { what: "project" | "user" }` if either is missing.
    async fn add_member(&self, project: ProjectId, user: UserId, role: MemberRole) -> Result<Membership>;

    /// Removes `user` from `project`: `true` if they were a member. Idempotent.
    async fn remove_member(&self, project: ProjectId, user: UserId) -> Result<bool>;

    /// The members of `project` with their users, by user name. Empty for an unknown project.
    async fn members(&self, project: ProjectId) -> Result<Vec<(Membership, User)>>;

    /// The projects `user` is a member of, by project id. Empty for an unknown user.
    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>>;

    /// API keys, newest first, revoked ones included: every key (`None`) or `user`'s.
    async fn list_api_keys(&self, user: Option<UserId>) -> Result<Vec<ApiKey>>;

    /// An API key by id, revoked or not.
    async fn get_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>>;

    // -----------------------------------------------------------------------------------------
    // Money. Amounts are integer micro-units; the wallet's balance always equals its credits
    // minus its charges in the ledger, because both change in the same transaction.

    /// `project`'s wallet; the first read creates it (balance 0, threshold 0).
    /// `NotFound { what: "project" }` if there is no such project.
    async fn wallet(&self, project: ProjectId) -> Result<Wallet>;

    /// Sets the balance below which `project`'s wallet counts as low (creating the wallet if
    /// needed). `InvalidAmount { what: "low_threshold" }` if negative;
    /// `NotFound { what: "project" }` if there is no such project.
    async fn set_low_threshold(&self, project: ProjectId, threshold: i64) -> Result<Wallet>;

    /// Adds `amount` to `project`'s wallet and appends a `credit` line (with `note` and `by`) in
    /// one transaction; returns the wallet after it and the line. `InvalidAmount { what:
    /// "amount" }` unless `amount > 0`, `InvalidAmount { what: "balance" }` if the balance would
    /// overflow, `NotFound { what: "project" | "user" }` if the project or `by` is missing.
    async fn credit(
        &self,
        project: ProjectId,
        amount: i64,
        note: Option<&str>,
        by: Option<UserId>,
    ) -> Result<(Wallet, LedgerEntry)>;

    /// Charges `sandbox`'s usage up to `until`, exactly once.
    ///
    /// In one write transaction: reads the sandbox's watermark ("charged up to"); refuses with
    /// `Stale(sandbox)` unless it equals `expected` (`None`: the sandbox was never charged);
    /// appends one `charge` line per element of `lines` whose amount is not zero; subtracts their
    /// sum from the wallet of the sandbox's project (creating the wallet if needed; the balance
    /// may go negative); sets the watermark to `until`. A crash or a failure leaves all of it or
    /// none of it, so a caller that lost the answer re-reads the watermark and computes again.
    /// Returns the wallet after the charge.
    ///
    /// Compared and stored at millisecond precision (see [`truncate_to_millis`]).
    /// `NotFound { what: "sandbox" }` for an unknown sandbox; `InvalidAmount { what: "amount" }`
    /// for a negative line, `{ what: "balance" }` on overflow; `InvalidPeriod` if a line ends
    /// before it starts or `until` is before `expected`. A line's `resource` must be `gpu`,
    /// `cpu`, `memory` or `storage` (the database refuses anything else, and nothing is written).
    async fn charge(
        &self,
        sandbox: &SandboxId,
        expected: Option<OffsetDateTime>,
        until: OffsetDateTime,
        lines: &[NewCharge],
    ) -> Result<Wallet>;

    /// Ledger lines matching `filter`, oldest first (in the order written; ids increase).
    /// `filter.projects == Some(vec![])` matches nothing.
    async fn ledger(&self, filter: &LedgerFilter) -> Result<Vec<LedgerEntry>>;

    /// Sandboxes the metering reconciler must look at, by id, each with its watermark: every
    /// running or paused sandbox, plus every terminated or failed one that ever started
    /// (`started_at` set) and has a `terminated_at`, whose watermark is missing or before its
    /// `terminated_at` (its last seconds are not charged yet).
    async fn sandboxes_to_meter(&self) -> Result<Vec<MeteredSandbox>>;
}

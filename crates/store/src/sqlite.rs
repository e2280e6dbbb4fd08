//! [`SqliteStore`]: the [`Store`] over one SQLite file in the data directory (WAL mode).
//!
//! Two pools share the file. Every write goes through a pool of exactly one connection, in
//! `BEGIN IMMEDIATE` transactions, so writers of this process queue in the pool instead of racing
//! for SQLite's single write lock (no `SQLITE_BUSY` between our own tasks; the busy timeout only
//! covers another process holding the file). Reads use a small pool of read-only connections,
//! which WAL lets run beside the writer.
//!
//! Storage rules: timestamps are INTEGER Unix milliseconds in UTC (see
//! [`crate::truncate_to_millis`]); maps, lists and the GPU request are JSON text; enumerations
//! are their snake_case names. Unsigned values are stored as SQLite's signed 64-bit integers; one
//! that does not fit is refused at write time as an encode error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sandpit_types::api::{EventKind, SandboxEventView};
use sandpit_types::{ByteSize, MilliCpu, SandboxId, SandboxState};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::error::ErrorKind;
use sqlx::migrate::Migrator;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqliteExecutor, SqlitePool, Transaction};
use time::OffsetDateTime;

use crate::model::{
    ApiKey, ApiKeyId, Desired, KycStatus, LedgerEntry, LedgerFilter, LedgerKind, MemberRole, Membership,
    MeteredSandbox, NewApiKey, NewCharge, NewEvent, Project, ProjectId, Role, SandboxFilter, SandboxRecord,
    StateChange, User, UserId, Wallet,
};
use crate::{Result, Store, StoreError};

/// Read-only connections beside the writer.
const READERS: u32 = 4;
/// How long a statement waits for a lock another process holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest page [`Store::list_sandboxes`] and [`Store::list_events`] return.
const MAX_PAGE: u32 = 1000;

/// The schema, embedded at compile time (`build.rs` rebuilds when a migration is added).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The columns of a sandbox row other than `id` and `generation`, in binding order
/// (see [`SandboxRow::bind`]).
macro_rules! sandbox_fields {
    () => {
        "project_id, created_by, name, state, state_reason, desired, image, cpu_millis, memory_bytes, \
         gpu, env, command, keep_running, timeout_s, metadata, created_at, started_at, ends_at, \
         remaining_ms, paused_at, terminated_at, exit_code, credentials, placement"
    };
}

/// `SELECT` of every sandbox column.
macro_rules! select_sandboxes {
    () => {
        concat!("SELECT id, ", sandbox_fields!(), ", generation FROM sandboxes")
    };
}

const INSERT_SANDBOX: &str = concat!(
    "INSERT INTO sandboxes (id, ",
    sandbox_fields!(),
    ", generation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)"
);

const UPDATE_SANDBOX: &str = concat!(
    "UPDATE sandboxes SET project_id = ?, created_by = ?, name = ?, state = ?, state_reason = ?, \
     desired = ?, image = ?, cpu_millis = ?, memory_bytes = ?, gpu = ?, env = ?, command = ?, \
     keep_running = ?, timeout_s = ?, metadata = ?, created_at = ?, started_at = ?, ends_at = ?, \
     remaining_ms = ?, paused_at = ?, terminated_at = ?, exit_code = ?, credentials = ?, placement = ?, \
     generation = generation + 1 \
     WHERE id = ? AND generation = ? \
     RETURNING id, ",
    sandbox_fields!(),
    ", generation"
);

/// The columns of a user row, for [`user_from_row`].
macro_rules! user_columns {
    () => {
        "id, name, role, kyc, kyc_reference, created_at"
    };
}

/// The columns of an API key row, for [`api_key_from_row`].
macro_rules! api_key_columns {
    () => {
        "id, user_id, project_id, name, prefix, created_at, revoked_at"
    };
}

/// The columns of a ledger row, for [`ledger_from_row`].
macro_rules! ledger_columns {
    () => {
        "id, project_id, at, kind, amount, sandbox_id, resource, seconds, period_from, period_to, note, \
         created_by"
    };
}

const INSERT_LEDGER: &str = concat!(
    "INSERT INTO ledger (project_id, at, kind, amount, sandbox_id, resource, seconds, period_from, \
     period_to, note, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ",
    ledger_columns!()
);

const INSERT_EVENT: &str = "INSERT INTO sandbox_events \
     (sandbox_id, seq, at, kind, state, reason, message, progress, usage) \
     VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM sandbox_events WHERE sandbox_id = ?1), \
             ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     RETURNING seq";

/// The [`Store`] over an embedded SQLite database.
///
/// Cloning is cheap and shares the pools.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: every write transaction.
    writer: SqlitePool,
    /// Read-only connections (the writer's pool itself for an in-memory database).
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file (mode 0600) if it is missing, and brings
    /// its schema up to date. The directory must exist.
    pub async fn open(path: &Path) -> Result<Self> {
        create_private_file(path).await?;
        let base = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(base.clone().journal_mode(SqliteJournalMode::Wal))
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader =
            SqlitePoolOptions::new().max_connections(READERS).connect_with(base.read_only(true)).await?;
        tracing::debug!(path = %path.display(), "sqlite store opened");
        Ok(Self { writer, reader })
    }

    /// A fresh database in memory (tests, tools): one connection serves reads and writes, and the
    /// database is gone when the store is dropped or closed.
    pub async fn open_in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { writer: pool.clone(), reader: pool })
    }

    /// Closes every connection, waiting for those in use to be returned (clean shutdown: the
    /// last connection to close checkpoints the WAL into the database file).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// A write transaction, holding SQLite's write lock from its first statement.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Creates `path` readable by its owner only, unless it exists (SQLite creates its `-wal` and
/// `-shm` files with the same mode).
async fn create_private_file(path: &Path) -> Result<()> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .await
        .map_err(sqlx::Error::Io)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Encoding and decoding.

/// A value that cannot be written: it does not fit its column.
#[derive(Debug, thiserror::Error)]
#[error("{what} {value} does not fit in a signed 64-bit integer")]
struct TooLarge {
    what: &'static str,
    value: u64,
}

/// `v` as an SQLite integer; refused (as an encode error) above `i64::MAX`.
fn int(v: u64, what: &'static str) -> Result<i64> {
    i64::try_from(v)
        .map_err(|_| StoreError::Database(sqlx::Error::Encode(Box::new(TooLarge { what, value: v }))))
}

/// `t` in Unix milliseconds, truncated toward the past.
fn to_ms(t: OffsetDateTime) -> i64 {
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    // `time` spans at most ±999,999 years (about 3.2e16 ms), far inside i64.
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

fn from_ms(ms: i64, what: &'static str) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_err(|e| corrupt(what, e))
}

/// Now, at the precision the store keeps.
fn now_ms() -> i64 {
    to_ms(OffsetDateTime::now_utc())
}

fn corrupt(what: &'static str, detail: impl fmt::Display) -> StoreError {
    StoreError::Corrupt { what, detail: detail.to_string() }
}

fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))
}

fn from_json<T: DeserializeOwned>(text: &str, what: &'static str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

/// Column `name` of `row`; a value of the wrong type is [`StoreError::Corrupt`].
fn col<'r, T>(row: &'r SqliteRow, name: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(name).map_err(|e| corrupt(name, e))
}

fn col_u64(row: &SqliteRow, name: &'static str) -> Result<u64> {
    let v: i64 = col(row, name)?;
    u64::try_from(v).map_err(|e| corrupt(name, e))
}

fn col_opt_u64(row: &SqliteRow, name: &'static str) -> Result<Option<u64>> {
    let v: Option<i64> = col(row, name)?;
    v.map(|v| u64::try_from(v).map_err(|e| corrupt(name, e))).transpose()
}

fn col_time(row: &SqliteRow, name: &'static str) -> Result<OffsetDateTime> {
    from_ms(col(row, name)?, name)
}

fn col_opt_time(row: &SqliteRow, name: &'static str) -> Result<Option<OffsetDateTime>> {
    let v: Option<i64> = col(row, name)?;
    v.map(|ms| from_ms(ms, name)).transpose()
}

fn col_state(row: &SqliteRow, name: &'static str) -> Result<SandboxState> {
    let s: String = col(row, name)?;
    SandboxState::parse(&s).ok_or_else(|| corrupt(name, format!("unknown state {s:?}")))
}

fn col_id(row: &SqliteRow, name: &'static str) -> Result<SandboxId> {
    let s: String = col(row, name)?;
    s.parse().map_err(|e| corrupt(name, e))
}

fn role_str(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

fn parse_role(s: &str) -> Result<Role> {
    match s {
        "admin" => Ok(Role::Admin),
        "member" => Ok(Role::Member),
        _ => Err(corrupt("role", format!("unknown role {s:?}"))),
    }
}

fn desired_str(d: Desired) -> &'static str {
    match d {
        Desired::Running => "running",
        Desired::Paused => "paused",
        Desired::Deleted => "deleted",
    }
}

fn parse_desired(s: &str) -> Result<Desired> {
    match s {
        "running" => Ok(Desired::Running),
        "paused" => Ok(Desired::Paused),
        "deleted" => Ok(Desired::Deleted),
        _ => Err(corrupt("desired", format!("unknown desired state {s:?}"))),
    }
}

fn member_role_str(r: MemberRole) -> &'static str {
    match r {
        MemberRole::Owner => "owner",
        MemberRole::Member => "member",
    }
}

fn parse_member_role(s: &str) -> Result<MemberRole> {
    match s {
        "owner" => Ok(MemberRole::Owner),
        "member" => Ok(MemberRole::Member),
        _ => Err(corrupt("member role", format!("unknown member role {s:?}"))),
    }
}

fn ledger_kind_str(k: LedgerKind) -> &'static str {
    match k {
        LedgerKind::Credit => "credit",
        LedgerKind::Charge => "charge",
    }
}

fn parse_ledger_kind(s: &str) -> Result<LedgerKind> {
    match s {
        "credit" => Ok(LedgerKind::Credit),
        "charge" => Ok(LedgerKind::Charge),
        _ => Err(corrupt("ledger kind", format!("unknown ledger kind {s:?}"))),
    }
}

fn kind_str(k: EventKind) -> &'static str {
    match k {
        EventKind::State => "state",
        EventKind::Progress => "progress",
    }
}

fn parse_kind(s: &str) -> Result<EventKind> {
    match s {
        "state" => Ok(EventKind::State),
        "progress" => Ok(EventKind::Progress),
        _ => Err(corrupt("kind", format!("unknown event kind {s:?}"))),
    }
}

/// The message of a unique-constraint violation, if `e` is one.
fn unique_violation(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(d) if d.kind() == ErrorKind::UniqueViolation => Some(d.message()),
        _ => None,
    }
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == ErrorKind::ForeignKeyViolation)
}

/// Maps a failed write of `sandbox`'s row to the store's errors.
fn sandbox_write_error(e: sqlx::Error, sandbox: &SandboxRecord) -> StoreError {
    match unique_violation(&e) {
        // SQLite names the index's columns: "UNIQUE constraint failed: sandboxes.project_id, sandboxes.name".
        Some(m) if m.contains("sandboxes.name") => {
            StoreError::Conflict { field: "name", value: sandbox.name.clone().unwrap_or_default() }
        }
        Some(m) if m.contains("sandboxes.id") => {
            StoreError::Conflict { field: "id", value: sandbox.id.to_string() }
        }
        _ if is_foreign_key_violation(&e) => StoreError::NotFound { what: "project or user" },
        _ => StoreError::Database(e),
    }
}

/// A sandbox's columns, encoded.
struct SandboxRow {
    project_id: i64,
    created_by: i64,
    name: Option<String>,
    state: &'static str,
    state_reason: Option<String>,
    desired: &'static str,
    image: String,
    cpu_millis: u32,
    memory_bytes: i64,
    gpu: Option<String>,
    env: String,
    command: Option<String>,
    keep_running: bool,
    timeout_s: i64,
    metadata: String,
    created_at: i64,
    started_at: Option<i64>,
    ends_at: Option<i64>,
    remaining_ms: Option<i64>,
    paused_at: Option<i64>,
    terminated_at: Option<i64>,
    exit_code: Option<i32>,
    credentials: Option<Vec<u8>>,
    placement: Option<String>,
}

impl SandboxRow {
    fn encode(s: &SandboxRecord) -> Result<Self> {
        Ok(Self {
            project_id: s.project.0,
            created_by: s.created_by.0,
            name: s.name.clone(),
            state: s.state.as_str(),
            state_reason: s.state_reason.clone(),
            desired: desired_str(s.desired),
            image: s.image.clone(),
            cpu_millis: s.cpu.0,
            memory_bytes: int(s.memory.bytes(), "memory")?,
            gpu: s.gpu.as_ref().map(to_json).transpose()?,
            env: to_json(&s.env)?,
            command: s.command.as_ref().map(to_json).transpose()?,
            keep_running: s.keep_running,
            timeout_s: int(s.timeout_s, "timeout_s")?,
            metadata: to_json(&s.metadata)?,
            created_at: to_ms(s.created_at),
            started_at: s.started_at.map(to_ms),
            ends_at: s.ends_at.map(to_ms),
            remaining_ms: s.remaining_ms.map(|v| int(v, "remaining_ms")).transpose()?,
            paused_at: s.paused_at.map(to_ms),
            terminated_at: s.terminated_at.map(to_ms),
            exit_code: s.exit_code,
            credentials: s.credentials.clone(),
            placement: s.placement.clone(),
        })
    }

    /// Binds the columns in the order of `sandbox_fields!`.
    fn bind<'q>(self, q: Query<'q, Sqlite, SqliteArguments>) -> Query<'q, Sqlite, SqliteArguments> {
        q.bind(self.project_id)
            .bind(self.created_by)
            .bind(self.name)
            .bind(self.state)
            .bind(self.state_reason)
            .bind(self.desired)
            .bind(self.image)
            .bind(self.cpu_millis)
            .bind(self.memory_bytes)
            .bind(self.gpu)
            .bind(self.env)
            .bind(self.command)
            .bind(self.keep_running)
            .bind(self.timeout_s)
            .bind(self.metadata)
            .bind(self.created_at)
            .bind(self.started_at)
            .bind(self.ends_at)
            .bind(self.remaining_ms)
            .bind(self.paused_at)
            .bind(self.terminated_at)
            .bind(self.exit_code)
            .bind(self.credentials)
            .bind(self.placement)
    }
}

fn sandbox_from_row(row: &SqliteRow) -> Result<SandboxRecord> {
    let gpu: Option<String> = col(row, "gpu")?;
    let command: Option<String> = col(row, "command")?;
    let env: String = col(row, "env")?;
    let metadata: String = col(row, "metadata")?;
    let desired: String = col(row, "desired")?;
    Ok(SandboxRecord {
        id: col_id(row, "id")?,
        project: ProjectId(col(row, "project_id")?),
        created_by: UserId(col(row, "created_by")?),
        name: col(row, "name")?,
        state: col_state(row, "state")?,
        state_reason: col(row, "state_reason")?,
        desired: parse_desired(&desired)?,
        image: col(row, "image")?,
        cpu: MilliCpu(col(row, "cpu_millis")?),
        memory: ByteSize(col_u64(row, "memory_bytes")?),
        gpu: gpu.map(|g| from_json(&g, "gpu")).transpose()?,
        env: from_json::<BTreeMap<String, String>>(&env, "env")?,
        command: command.map(|c| from_json(&c, "command")).transpose()?,
        keep_running: col(row, "keep_running")?,
        timeout_s: col_u64(row, "timeout_s")?,
        metadata: from_json::<BTreeMap<String, String>>(&metadata, "metadata")?,
        created_at: col_time(row, "created_at")?,
        started_at: col_opt_time(row, "started_at")?,
        ends_at: col_opt_time(row, "ends_at")?,
        remaining_ms: col_opt_u64(row, "remaining_ms")?,
        paused_at: col_opt_time(row, "paused_at")?,
        terminated_at: col_opt_time(row, "terminated_at")?,
        exit_code: col(row, "exit_code")?,
        credentials: col(row, "credentials")?,
        placement: col(row, "placement")?,
        generation: col_u64(row, "generation")?,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<SandboxEventView> {
    let kind: String = col(row, "kind")?;
    let state: Option<String> = col(row, "state")?;
    let progress: Option<String> = col(row, "progress")?;
    Ok(SandboxEventView {
        seq: col_u64(row, "seq")?,
        at: col_time(row, "at")?,
        kind: parse_kind(&kind)?,
        state: state
            .map(|s| SandboxState::parse(&s).ok_or_else(|| corrupt("state", format!("unknown state {s:?}"))))
            .transpose()?,
        reason: col(row, "reason")?,
        message: col(row, "message")?,
        progress: progress.map(|p| from_json(&p, "progress")).transpose()?,
    })
}

fn user_from_row(
    row: &SqliteRow,
    id: &'static str,
    name: &'static str,
    created: &'static str,
) -> Result<User> {
    let role: String = col(row, "role")?;
    let kyc: String = col(row, "kyc")?;
    Ok(User {
        id: UserId(col(row, id)?),
        name: col(row, name)?,
        role: parse_role(&role)?,
        kyc: KycStatus::parse(&kyc).ok_or_else(|| corrupt("kyc", format!("unknown KYC status {kyc:?}")))?,
        kyc_reference: col(row, "kyc_reference")?,
        created_at: col_time(row, created)?,
    })
}

fn api_key_from_row(row: &SqliteRow) -> Result<ApiKey> {
    let project: Option<i64> = col(row, "project_id")?;
    Ok(ApiKey {
        id: ApiKeyId(col(row, "id")?),
        user: UserId(col(row, "user_id")?),
        project: project.map(ProjectId),
        name: col(row, "name")?,
        prefix: col(row, "prefix")?,
        created_at: col_time(row, "created_at")?,
        revoked_at: col_opt_time(row, "revoked_at")?,
    })
}

fn membership_from_row(row: &SqliteRow) -> Result<Membership> {
    let role: String = col(row, "member_role")?;
    Ok(Membership {
        project: ProjectId(col(row, "project_id")?),
        user: UserId(col(row, "user_id")?),
        role: parse_member_role(&role)?,
    })
}

fn wallet_from_row(row: &SqliteRow) -> Result<Wallet> {
    Ok(Wallet {
        project: ProjectId(col(row, "project_id")?),
        balance: col(row, "balance")?,
        low_threshold: col(row, "low_threshold")?,
        updated_at: col_time(row, "updated_at")?,
    })
}

fn ledger_from_row(row: &SqliteRow) -> Result<LedgerEntry> {
    let kind: String = col(row, "kind")?;
    let sandbox: Option<String> = col(row, "sandbox_id")?;
    let created_by: Option<i64> = col(row, "created_by")?;
    Ok(LedgerEntry {
        id: col(row, "id")?,
        project: ProjectId(col(row, "project_id")?),
        at: col_time(row, "at")?,
        kind: parse_ledger_kind(&kind)?,
        amount: col(row, "amount")?,
        sandbox: sandbox.map(|s| s.parse().map_err(|e| corrupt("sandbox_id", e))).transpose()?,
        resource: col(row, "resource")?,
        seconds: col_opt_u64(row, "seconds")?,
        period_from: col_opt_time(row, "period_from")?,
        period_to: col_opt_time(row, "period_to")?,
        note: col(row, "note")?,
        created_by: created_by.map(UserId),
    })
}

fn project_from_row(row: &SqliteRow) -> Result<Project> {
    Ok(Project {
        id: ProjectId(col(row, "id")?),
        name: col(row, "name")?,
        created_at: col_time(row, "created_at")?,
    })
}

/// Appends `event` to `id`'s events with the next seq, inside the caller's write transaction.
async fn insert_event(
    conn: &mut SqliteConnection,
    id: &SandboxId,
    event: NewEvent,
) -> Result<SandboxEventView> {
    let at = event.at.map_or_else(now_ms, to_ms);
    let progress = event.progress.as_ref().map(to_json).transpose()?;
    let seq: i64 = sqlx::query_scalar(INSERT_EVENT)
        .bind(id.as_str())
        .bind(at)
        .bind(kind_str(event.kind))
        .bind(event.state.map(SandboxState::as_str))
        .bind(event.reason.as_deref())
        .bind(event.message.as_deref())
        .bind(progress)
        .bind(event.usage.as_deref())
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) { StoreError::NotFound { what: "sandbox" } } else { e.into() }
        })?;
    Ok(SandboxEventView {
        seq: u64::try_from(seq).map_err(|e| corrupt("seq", e))?,
        at: from_ms(at, "at")?,
        kind: event.kind,
        state: event.state,
        reason: event.reason,
        message: event.message,
        progress: event.progress,
    })
}

async fn exists(conn: &mut SqliteConnection, sql: &'static str, id: i64) -> Result<bool> {
    Ok(sqlx::query_scalar::<_, bool>(sql).bind(id).fetch_one(&mut *conn).await?)
}

async fn sandbox_exists(conn: &mut SqliteConnection, id: &SandboxId) -> Result<bool> {
    Ok(sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM sandboxes WHERE id = ?)")
        .bind(id.as_str())
        .fetch_one(&mut *conn)
        .await?)
}

async fn read_wallet<'e>(ex: impl SqliteExecutor<'e>, project: ProjectId) -> Result<Option<Wallet>> {
    let row = sqlx::query(
        "SELECT project_id, balance, low_threshold, updated_at FROM wallets WHERE project_id = ?",
    )
    .bind(project.0)
    .fetch_optional(ex)
    .await?;
    row.as_ref().map(wallet_from_row).transpose()
}

/// `project`'s wallet, created (empty) if it has none, inside the caller's write transaction.
async fn ensure_wallet(conn: &mut SqliteConnection, project: ProjectId) -> Result<Wallet> {
    if let Some(w) = read_wallet(&mut *conn, project).await? {
        return Ok(w);
    }
    if !exists(conn, "SELECT EXISTS (SELECT 1 FROM projects WHERE id = ?)", project.0).await? {
        return Err(StoreError::NotFound { what: "project" });
    }
    let row = sqlx::query(
        "INSERT INTO wallets (project_id, balance, low_threshold, updated_at) VALUES (?, 0, 0, ?) \
         RETURNING project_id, balance, low_threshold, updated_at",
    )
    .bind(project.0)
    .bind(now_ms())
    .fetch_one(&mut *conn)
    .await?;
    wallet_from_row(&row)
}

/// Sets `project`'s balance, inside the caller's write transaction.
async fn set_balance(conn: &mut SqliteConnection, project: ProjectId, balance: i64) -> Result<Wallet> {
    let row = sqlx::query(
        "UPDATE wallets SET balance = ?, updated_at = ? WHERE project_id = ? \
         RETURNING project_id, balance, low_threshold, updated_at",
    )
    .bind(balance)
    .bind(now_ms())
    .bind(project.0)
    .fetch_one(&mut *conn)
    .await?;
    wallet_from_row(&row)
}

/// A ledger line's columns, encoded (binding order of `INSERT_LEDGER`).
struct LedgerRow<'a> {
    project_id: i64,
    kind: LedgerKind,
    amount: i64,
    sandbox_id: Option<&'a str>,
    resource: Option<&'a str>,
    seconds: Option<i64>,
    period_from: Option<i64>,
    period_to: Option<i64>,
    note: Option<&'a str>,
    created_by: Option<i64>,
}

impl LedgerRow<'_> {
    /// Appends the line, inside the caller's write transaction.
    async fn insert(self, conn: &mut SqliteConnection, at: i64) -> Result<LedgerEntry> {
        let row = sqlx::query(INSERT_LEDGER)
            .bind(self.project_id)
            .bind(at)
            .bind(ledger_kind_str(self.kind))
            .bind(self.amount)
            .bind(self.sandbox_id)
            .bind(self.resource)
            .bind(self.seconds)
            .bind(self.period_from)
            .bind(self.period_to)
            .bind(self.note)
            .bind(self.created_by)
            .fetch_one(&mut *conn)
            .await?;
        ledger_from_row(&row)
    }
}

fn ids_from_rows(rows: &[SqliteRow]) -> Result<Vec<SandboxId>> {
    rows.iter().map(|r| col_id(r, "id")).collect()
}

/// Pushes `AND column IN (?, …)` for `states` (never empty here).
fn push_states(q: &mut QueryBuilder<Sqlite>, column: &str, states: &[SandboxState]) {
    q.push(format_args!(" AND {column} IN ("));
    let mut list = q.separated(", ");
    for s in states {
        list.push_bind(s.as_str());
    }
    q.push(")");
}

// ---------------------------------------------------------------------------------------------

#[async_trait]
impl Store for SqliteStore {
    async fn is_empty(&self) -> Result<bool> {
        let any: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)").fetch_one(&self.reader).await?;
        Ok(!any)
    }

    async fn create_user(&self, name: &str, role: Role) -> Result<User> {
        let created_at = now_ms();
        let id: i64 =
            sqlx::query_scalar("INSERT INTO users (name, role, created_at) VALUES (?, ?, ?) RETURNING id")
                .bind(name)
                .bind(role_str(role))
                .bind(created_at)
                .fetch_one(&self.writer)
                .await
                .map_err(|e| match unique_violation(&e) {
                    Some(_) => StoreError::Conflict { field: "user", value: name.to_owned() },
                    None => e.into(),
                })?;
        Ok(User {
            id: UserId(id),
            name: name.to_owned(),
            role,
            kyc: KycStatus::Unverified,
            kyc_reference: None,
            created_at: from_ms(created_at, "created_at")?,
        })
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        let row = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?"))
            .bind(id.0)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| user_from_row(&r, "id", "name", "created_at")).transpose()
    }

    async fn create_project(&self, name: &str) -> Result<Project> {
        let created_at = now_ms();
        let id: i64 =
            sqlx::query_scalar("INSERT INTO projects (name, created_at) VALUES (?, ?) RETURNING id")
                .bind(name)
                .bind(created_at)
                .fetch_one(&self.writer)
                .await
                .map_err(|e| match unique_violation(&e) {
                    Some(_) => StoreError::Conflict { field: "project", value: name.to_owned() },
                    None => e.into(),
                })?;
        Ok(Project {
            id: ProjectId(id),
            name: name.to_owned(),
            created_at: from_ms(created_at, "created_at")?,
        })
    }

    async fn project_by_name(&self, name: &str) -> Result<Option<Project>> {
        let row = sqlx::query("SELECT id, name, created_at FROM projects WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    async fn get_project(&self, id: ProjectId) -> Result<Option<Project>> {
        let row = sqlx::query("SELECT id, name, created_at FROM projects WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM projects ORDER BY name")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(project_from_row).collect()
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey> {
        let created_at = now_ms();
        let mut tx = self.begin_write().await?;
        if !exists(&mut tx, "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?)", key.user.0).await? {
            return Err(StoreError::NotFound { what: "user" });
        }
        if let Some(p) = key.project
            && !exists(&mut tx, "SELECT EXISTS (SELECT 1 FROM projects WHERE id = ?)", p.0).await?
        {
            return Err(StoreError::NotFound { what: "project" });
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_keys (hash, prefix, name, user_id, project_id, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(key.hash.to_vec())
        .bind(&key.prefix)
        .bind(&key.name)
        .bind(key.user.0)
        .bind(key.project.map(|p| p.0))
        .bind(created_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match unique_violation(&e) {
            Some(_) => StoreError::Conflict { field: "key", value: key.prefix.clone() },
            None => e.into(),
        })?;
        tx.commit().await?;
        Ok(ApiKey {
            id: ApiKeyId(id),
            user: key.user,
            project: key.project,
            name: key.name,
            prefix: key.prefix,
            created_at: from_ms(created_at, "created_at")?,
            revoked_at: None,
        })
    }

    async fn find_api_key(&self, hash: &[u8; 32]) -> Result<Option<(ApiKey, User)>> {
        let row = sqlx::query(
            "SELECT k.id, k.user_id, k.project_id, k.name, k.prefix, k.created_at, k.revoked_at, \
                    u.name AS user_name, u.role, u.kyc, u.kyc_reference, u.created_at AS user_created_at \
             FROM api_keys k JOIN users u ON u.id = k.user_id \
             WHERE k.hash = ? AND k.revoked_at IS NULL",
        )
        .bind(hash.to_vec())
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key = api_key_from_row(&row)?;
        let user = user_from_row(&row, "user_id", "user_name", "user_created_at")?;
        Ok(Some((key, user)))
    }

    async fn revoke_api_key(&self, id: ApiKeyId) -> Result<()> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?")
            .bind(now_ms())
            .bind(id.0)
            .execute(&self.writer)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "api key" });
        }
        Ok(())
    }

    async fn insert_sandbox(&self, sandbox: &SandboxRecord, event: NewEvent) -> Result<SandboxEventView> {
        let row = SandboxRow::encode(sandbox)?;
        let mut tx = self.begin_write().await?;
        if !exists(&mut tx, "SELECT EXISTS (SELECT 1 FROM projects WHERE id = ?)", sandbox.project.0).await? {
            return Err(StoreError::NotFound { what: "project" });
        }
        if !exists(&mut tx, "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?)", sandbox.created_by.0).await? {
            return Err(StoreError::NotFound { what: "user" });
        }
        row.bind(sqlx::query(INSERT_SANDBOX).bind(sandbox.id.as_str()))
            .execute(&mut *tx)
            .await
            .map_err(|e| sandbox_write_error(e, sandbox))?;
        let view = insert_event(&mut tx, &sandbox.id, event).await?;
        tx.commit().await?;
        Ok(view)
    }

    async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>> {
        let row = sqlx::query(concat!(select_sandboxes!(), " WHERE id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(sandbox_from_row).transpose()
    }

    async fn update_sandbox(
        &self,
        sandbox: &SandboxRecord,
        event: Option<NewEvent>,
    ) -> Result<(SandboxRecord, Option<SandboxEventView>)> {
        let row = SandboxRow::encode(sandbox)?;
        let generation = int(sandbox.generation, "generation")?;
        let mut tx = self.begin_write().await?;
        let updated = row
            .bind(sqlx::query(UPDATE_SANDBOX))
            .bind(sandbox.id.as_str())
            .bind(generation)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| sandbox_write_error(e, sandbox))?;
        let Some(updated) = updated else {
            return Err(if sandbox_exists(&mut tx, &sandbox.id).await? {
                StoreError::Stale(sandbox.id)
            } else {
                StoreError::NotFound { what: "sandbox" }
            });
        };
        let stored = sandbox_from_row(&updated)?;
        let view = match event {
            Some(e) => Some(insert_event(&mut tx, &sandbox.id, e).await?),
            None => None,
        };
        tx.commit().await?;
        Ok((stored, view))
    }

    async fn list_sandboxes(
        &self,
        filter: &SandboxFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<SandboxRecord>, Option<String>)> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut q = QueryBuilder::<Sqlite>::new(concat!(select_sandboxes!(), " WHERE 1 = 1"));
        if let Some(projects) = &filter.projects {
            if projects.is_empty() {
                return Ok((Vec::new(), None));
            }
            q.push(" AND project_id IN (");
            let mut list = q.separated(", ");
            for p in projects {
                list.push_bind(p.0);
            }
            q.push(")");
        }
        if !filter.states.is_empty() {
            push_states(&mut q, "state", &filter.states);
        }
        for (key, value) in &filter.metadata {
            // Bound, never spliced: any key is safe, quotes and dots included.
            q.push(" AND EXISTS (SELECT 1 FROM json_each(sandboxes.metadata) AS m WHERE m.key = ");
            q.push_bind(key.clone());
            q.push(" AND m.value = ");
            q.push_bind(value.clone());
            q.push(")");
        }
        if let Some(after) = cursor {
            q.push(" AND id < ");
            q.push_bind(after.to_owned());
        }
        q.push(" ORDER BY id DESC LIMIT ");
        // One more than the page tells whether another page exists.
        q.push_bind(i64::from(limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await?;
        let mut page = rows.iter().map(sandbox_from_row).collect::<Result<Vec<_>>>()?;
        let more = page.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        if more {
            page.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        let next = if more { page.last().map(|s| s.id.to_string()) } else { None };
        Ok((page, next))
    }

    async fn sandboxes_in_states(&self, states: &[SandboxState]) -> Result<Vec<SandboxRecord>> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(concat!(select_sandboxes!(), " WHERE 1 = 1"));
        push_states(&mut q, "state", states);
        q.push(" ORDER BY id");
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter().map(sandbox_from_row).collect()
    }

    async fn due_timeouts(&self, now: OffsetDateTime) -> Result<Vec<SandboxId>> {
        let rows = sqlx::query(
            "SELECT id FROM sandboxes WHERE state = 'running' AND ends_at <= ? ORDER BY ends_at, id",
        )
        .bind(to_ms(now))
        .fetch_all(&self.reader)
        .await?;
        ids_from_rows(&rows)
    }

    async fn next_deadline(&self) -> Result<Option<OffsetDateTime>> {
        let ms: Option<i64> =
            sqlx::query_scalar("SELECT min(ends_at) FROM sandboxes WHERE state = 'running'")
                .fetch_one(&self.reader)
                .await?;
        ms.map(|ms| from_ms(ms, "ends_at")).transpose()
    }

    async fn due_retention(&self, cutoff: OffsetDateTime) -> Result<Vec<SandboxId>> {
        let rows = sqlx::query(
            "SELECT id FROM sandboxes WHERE state = 'paused' AND paused_at <= ? ORDER BY paused_at, id",
        )
        .bind(to_ms(cutoff))
        .fetch_all(&self.reader)
        .await?;
        ids_from_rows(&rows)
    }

    async fn count_by_state(&self) -> Result<Vec<(SandboxState, u64)>> {
        let rows = sqlx::query("SELECT state, count(*) AS n FROM sandboxes GROUP BY state")
            .fetch_all(&self.reader)
            .await?;
        let mut counts: BTreeMap<SandboxState, u64> = SandboxState::ALL.into_iter().map(|s| (s, 0)).collect();
        for row in &rows {
            counts.insert(col_state(row, "state")?, col_u64(row, "n")?);
        }
        Ok(SandboxState::ALL.into_iter().map(|s| (s, counts.get(&s).copied().unwrap_or(0))).collect())
    }

    async fn append_event(&self, id: &SandboxId, event: NewEvent) -> Result<SandboxEventView> {
        let mut tx = self.begin_write().await?;
        if !sandbox_exists(&mut tx, id).await? {
            return Err(StoreError::NotFound { what: "sandbox" });
        }
        let view = insert_event(&mut tx, id, event).await?;
        tx.commit().await?;
        Ok(view)
    }

    async fn list_events(&self, id: &SandboxId, after: u64, limit: u32) -> Result<Vec<SandboxEventView>> {
        // No seq exceeds i64::MAX, so a larger `after` rightly finds nothing.
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT seq, at, kind, state, reason, message, progress FROM sandbox_events \
             WHERE sandbox_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(id.as_str())
        .bind(after)
        .bind(i64::from(limit.clamp(1, MAX_PAGE)))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn state_changes(&self, id: &SandboxId) -> Result<Vec<StateChange>> {
        let rows = sqlx::query(
            "SELECT at, state, usage FROM sandbox_events \
             WHERE sandbox_id = ? AND kind = 'state' AND state IS NOT NULL ORDER BY seq",
        )
        .bind(id.as_str())
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StateChange {
                    at: col_time(r, "at")?,
                    state: col_state(r, "state")?,
                    usage: col(r, "usage")?,
                })
            })
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Accounts.

    async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users ORDER BY name"))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(|r| user_from_row(r, "id", "name", "created_at")).collect()
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| user_from_row(&r, "id", "name", "created_at")).transpose()
    }

    async fn set_kyc(&self, user: UserId, kyc: KycStatus, reference: Option<&str>) -> Result<User> {
        let row = sqlx::query(concat!(
            "UPDATE users SET kyc = ?, kyc_reference = coalesce(?, kyc_reference) WHERE id = ? RETURNING ",
            user_columns!()
        ))
        .bind(kyc.as_str())
        .bind(reference)
        .bind(user.0)
        .fetch_optional(&self.writer)
        .await
        .map_err(|e| match unique_violation(&e) {
            Some(_) => StoreError::Conflict {
                field: "kyc_reference",
                value: reference.unwrap_or_default().to_owned(),
            },
            None => e.into(),
        })?;
        let row = row.ok_or(StoreError::NotFound { what: "user" })?;
        user_from_row(&row, "id", "name", "created_at")
    }

    async fn user_by_kyc_reference(&self, reference: &str) -> Result<Option<User>> {
        let row = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE kyc_reference = ?"))
            .bind(reference)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| user_from_row(&r, "id", "name", "created_at")).transpose()
    }

    async fn webhook_seen(&self, event_id: &str) -> Result<bool> {
        Ok(sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE event_id = ?)",
        )
        .bind(event_id)
        .fetch_one(&self.reader)
        .await?)
    }

    async fn record_webhook(&self, event_id: &str) -> Result<bool> {
        let done =
            sqlx::query("INSERT INTO webhook_deliveries (event_id, at) VALUES (?, ?) ON CONFLICT DO NOTHING")
                .bind(event_id)
                .bind(now_ms())
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_member(&self, project: ProjectId, user: UserId, role: MemberRole) -> Result<Membership> {
        let mut tx = self.begin_write().await?;
        if !exists(&mut tx, "SELECT EXISTS (SELECT 1 FROM projects WHERE id = ?)", project.0).await? {
            return Err(StoreError::NotFound { what: "project" });
        }
        if !exists(&mut tx, "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?)", user.0).await? {
            return Err(StoreError::NotFound { what: "user" });
        }
        sqlx::query(
            "INSERT INTO project_members (project_id, user_id, role, added_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(project.0)
        .bind(user.0)
        .bind(member_role_str(role))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Membership { project, user, role })
    }

    async fn remove_member(&self, project: ProjectId, user: UserId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM project_members WHERE project_id = ? AND user_id = ?")
            .bind(project.0)
            .bind(user.0)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn members(&self, project: ProjectId) -> Result<Vec<(Membership, User)>> {
        let rows = sqlx::query(
            "SELECT m.project_id, m.user_id, m.role AS member_role, \
                    u.name, u.role, u.kyc, u.kyc_reference, u.created_at \
             FROM project_members m JOIN users u ON u.id = m.user_id \
             WHERE m.project_id = ? ORDER BY u.name",
        )
        .bind(project.0)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok((membership_from_row(r)?, user_from_row(r, "user_id", "name", "created_at")?)))
            .collect()
    }

    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>> {
        let rows = sqlx::query(
            "SELECT project_id, user_id, role AS member_role FROM project_members \
             WHERE user_id = ? ORDER BY project_id",
        )
        .bind(user.0)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(membership_from_row).collect()
    }

    async fn list_api_keys(&self, user: Option<UserId>) -> Result<Vec<ApiKey>> {
        let mut q = QueryBuilder::<Sqlite>::new(concat!("SELECT ", api_key_columns!(), " FROM api_keys"));
        if let Some(user) = user {
            q.push(" WHERE user_id = ");
            q.push_bind(user.0);
        }
        q.push(" ORDER BY created_at DESC, id DESC");
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn get_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>> {
        let row = sqlx::query(concat!("SELECT ", api_key_columns!(), " FROM api_keys WHERE id = ?"))
            .bind(id.0)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    // -----------------------------------------------------------------------------------------
    // Money.

    async fn wallet(&self, project: ProjectId) -> Result<Wallet> {
        if let Some(w) = read_wallet(&self.reader, project).await? {
            return Ok(w);
        }
        let mut tx = self.begin_write().await?;
        let wallet = ensure_wallet(&mut tx, project).await?;
        tx.commit().await?;
        Ok(wallet)
    }

    async fn set_low_threshold(&self, project: ProjectId, threshold: i64) -> Result<Wallet> {
        if threshold < 0 {
            return Err(StoreError::InvalidAmount { what: "low_threshold", amount: threshold });
        }
        let mut tx = self.begin_write().await?;
        ensure_wallet(&mut tx, project).await?;
        let row = sqlx::query(
            "UPDATE wallets SET low_threshold = ?, updated_at = ? WHERE project_id = ? \
             RETURNING project_id, balance, low_threshold, updated_at",
        )
        .bind(threshold)
        .bind(now_ms())
        .bind(project.0)
        .fetch_one(&mut *tx)
        .await?;
        let wallet = wallet_from_row(&row)?;
        tx.commit().await?;
        Ok(wallet)
    }

    async fn credit(
        &self,
        project: ProjectId,
        amount: i64,
        note: Option<&str>,
        by: Option<UserId>,
    ) -> Result<(Wallet, LedgerEntry)> {
        if amount <= 0 {
            return Err(StoreError::InvalidAmount { what: "amount", amount });
        }
        let mut tx = self.begin_write().await?;
        let wallet = ensure_wallet(&mut tx, project).await?;
        if let Some(u) = by
            && !exists(&mut tx, "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?)", u.0).await?
        {
            return Err(StoreError::NotFound { what: "user" });
        }
        let balance = wallet
            .balance
            .checked_add(amount)
            .ok_or(StoreError::InvalidAmount { what: "balance", amount })?;
        let entry = LedgerRow {
            project_id: project.0,
            kind: LedgerKind::Credit,
            amount,
            sandbox_id: None,
            resource: None,
            seconds: None,
            period_from: None,
            period_to: None,
            note,
            created_by: by.map(|u| u.0),
        }
        .insert(&mut tx, now_ms())
        .await?;
        let wallet = set_balance(&mut tx, project, balance).await?;
        tx.commit().await?;
        Ok((wallet, entry))
    }

    async fn charge(
        &self,
        sandbox: &SandboxId,
        expected: Option<OffsetDateTime>,
        until: OffsetDateTime,
        lines: &[NewCharge],
    ) -> Result<Wallet> {
        let expected = expected.map(to_ms);
        let until = to_ms(until);
        if expected.is_some_and(|e| until < e) {
            return Err(StoreError::InvalidPeriod(*sandbox));
        }
        // Everything that can be refused without the database is refused before writing.
        let mut total: i64 = 0;
        let mut encoded = Vec::with_capacity(lines.len());
        for line in lines {
            if line.amount < 0 {
                return Err(StoreError::InvalidAmount { what: "amount", amount: line.amount });
            }
            let (from, to) = (to_ms(line.period_from), to_ms(line.period_to));
            if to < from {
                return Err(StoreError::InvalidPeriod(*sandbox));
            }
            total = total
                .checked_add(line.amount)
                .ok_or(StoreError::InvalidAmount { what: "balance", amount: line.amount })?;
            if line.amount > 0 {
                encoded.push((line, int(line.seconds, "seconds")?, from, to));
            }
        }

        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT s.project_id, m.charged_until FROM sandboxes s \
             LEFT JOIN meters m ON m.sandbox_id = s.id WHERE s.id = ?",
        )
        .bind(sandbox.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Err(StoreError::NotFound { what: "sandbox" }) };
        let project = ProjectId(col(&row, "project_id")?);
        let charged_until: Option<i64> = col(&row, "charged_until")?;
        if charged_until != expected {
            return Err(StoreError::Stale(*sandbox));
        }
        let mut wallet = ensure_wallet(&mut tx, project).await?;
        let balance = wallet
            .balance
            .checked_sub(total)
            .ok_or(StoreError::InvalidAmount { what: "balance", amount: total })?;
        let at = now_ms();
        for (line, seconds, from, to) in encoded {
            LedgerRow {
                project_id: project.0,
                kind: LedgerKind::Charge,
                amount: line.amount,
                sandbox_id: Some(sandbox.as_str()),
                resource: Some(&line.resource),
                seconds: Some(seconds),
                period_from: Some(from),
                period_to: Some(to),
                note: None,
                created_by: None,
            }
            .insert(&mut tx, at)
            .await?;
        }
        if total > 0 {
            wallet = set_balance(&mut tx, project, balance).await?;
        }
        sqlx::query(
            "INSERT INTO meters (sandbox_id, charged_until) VALUES (?, ?) \
             ON CONFLICT (sandbox_id) DO UPDATE SET charged_until = excluded.charged_until",
        )
        .bind(sandbox.as_str())
        .bind(until)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(wallet)
    }

    async fn ledger(&self, filter: &LedgerFilter) -> Result<Vec<LedgerEntry>> {
        let mut q =
            QueryBuilder::<Sqlite>::new(concat!("SELECT ", ledger_columns!(), " FROM ledger WHERE 1 = 1"));
        if let Some(projects) = &filter.projects {
            if projects.is_empty() {
                return Ok(Vec::new());
            }
            q.push(" AND project_id IN (");
            let mut list = q.separated(", ");
            for p in projects {
                list.push_bind(p.0);
            }
            q.push(")");
        }
        if let Some(kind) = filter.kind {
            q.push(" AND kind = ");
            q.push_bind(ledger_kind_str(kind));
        }
        if let Some(sandbox) = &filter.sandbox {
            q.push(" AND sandbox_id = ");
            q.push_bind(sandbox.to_string());
        }
        // The expression of the `ledger_by_project_time` index.
        if let Some(from) = filter.from {
            q.push(" AND coalesce(period_from, at) >= ");
            q.push_bind(to_ms(from));
        }
        if let Some(to) = filter.to {
            q.push(" AND coalesce(period_from, at) < ");
            q.push_bind(to_ms(to));
        }
        if let Some(after) = filter.after_id {
            q.push(" AND id > ");
            q.push_bind(after);
        }
        q.push(" ORDER BY id");
        if let Some(limit) = filter.limit {
            q.push(" LIMIT ");
            q.push_bind(i64::from(limit.clamp(1, MAX_PAGE)));
        }
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter().map(ledger_from_row).collect()
    }

    async fn sandboxes_to_meter(&self) -> Result<Vec<MeteredSandbox>> {
        let rows = sqlx::query(concat!(
            "SELECT id, ",
            sandbox_fields!(),
            ", generation, charged_until FROM sandboxes LEFT JOIN meters ON meters.sandbox_id = sandboxes.id \
             WHERE state IN ('running', 'paused') \
                OR (state IN ('terminated', 'failed') AND started_at IS NOT NULL \
                    AND terminated_at IS NOT NULL \
                    AND (charged_until IS NULL OR charged_until < terminated_at)) \
             ORDER BY id"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MeteredSandbox {
                    sandbox: sandbox_from_row(r)?,
                    charged_until: col_opt_time(r, "charged_until")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millisecond_conversion_truncates_toward_the_past() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(-1_500_001).unwrap();
        assert_eq!(to_ms(t), -2);
        assert_eq!(from_ms(to_ms(t), "t").unwrap(), crate::truncate_to_millis(t));
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_999_999).unwrap();
        assert_eq!(to_ms(t), 1_700_000_000_123);
        assert_eq!(from_ms(to_ms(t), "t").unwrap(), crate::truncate_to_millis(t));
    }

    #[test]
    fn unsigned_values_above_i64_are_refused_not_wrapped() {
        assert!(matches!(int(u64::MAX, "memory"), Err(StoreError::Database(sqlx::Error::Encode(_)))));
        assert_eq!(int(7, "memory").unwrap(), 7);
    }
}

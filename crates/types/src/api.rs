//! Parameters and views of the native HTTP API (`/v1`), with their validation.
//!
//! Request types reject unknown fields. Validation lives here (pure) so that the server, the CLI
//! and the web UI's rules agree; every failure names the field.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::id::SandboxId;
use crate::quantity::{ByteSize, MilliCpu};
use crate::state::SandboxState;

/// Most metadata labels per sandbox.
pub const MAX_METADATA: usize = 64;
/// Longest metadata key or value.
pub const MAX_METADATA_LEN: usize = 256;
/// Longest image reference.
pub const MAX_IMAGE_REF: usize = 512;
/// Most arguments of a command, and longest total.
pub const MAX_COMMAND_ARGS: usize = 1024;

/// An image to run: a reference, or a reference with registry credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ImageSpec {
    /// `docker.io/library/python:3.12`, `sandpit/base:latest`, or a curated name like `base`.
    Reference(String),
    /// A private image.
    WithCredentials {
        /// The reference.
        reference: String,
        /// Registry user name.
        #[serde(default)]
        username: Option<String>,
        /// Registry password or token; never returned or logged.
        #[serde(default)]
        password: Option<String>,
    },
}

impl fmt::Debug for ImageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reference(r) => f.debug_tuple("Reference").field(r).finish(),
            Self::WithCredentials { reference, username, password } => f
                .debug_struct("WithCredentials")
                .field("reference", reference)
                .field("username", username)
                .field("password", &password.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

impl ImageSpec {
    /// The image reference.
    pub fn reference(&self) -> &str {
        match self {
            Self::Reference(r) | Self::WithCredentials { reference: r, .. } => r,
        }
    }

    /// Checks the reference's shape (the registry decides whether it exists).
    pub fn validate(&self) -> Result<(), ApiError> {
        let r = self.reference();
        if r.is_empty() || r.len() > MAX_IMAGE_REF {
            return Err(ApiError::invalid(
                "image",
                format!("image reference must be 1 to {MAX_IMAGE_REF} characters"),
            ));
        }
        if r.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ApiError::invalid(
                "image",
                "image reference must not contain spaces or control characters",
            ));
        }
        if let Self::WithCredentials { username, password, .. } = self
            && username.is_some() != password.is_some()
        {
            return Err(ApiError::invalid(
                "image.password",
                "give both image.username and image.password, or neither",
            ));
        }
        Ok(())
    }
}

/// A GPU request: `count` GPUs of `type`, each a `fraction` percent share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuRequest {
    /// GPU type, e.g. `H100`, `A100-80GB`, `T4`.
    #[serde(rename = "type")]
    pub gpu_type: String,
    /// Number of GPUs (each distinct).
    #[serde(default = "one")]
    pub count: u32,
    /// Share of each GPU in percent: 25, 50, 75 or 100.
    #[serde(default = "hundred")]
    pub fraction: u32,
}

fn one() -> u32 {
    1
}

fn hundred() -> u32 {
    100
}

impl GpuRequest {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.gpu_type.is_empty() || self.gpu_type.len() > 64 {
            return Err(ApiError::invalid("gpu.type", "GPU type must be 1 to 64 characters"));
        }
        if !(1..=8).contains(&self.count) {
            return Err(ApiError::invalid("gpu.count", "GPU count must be between 1 and 8"));
        }
        if ![25, 50, 75, 100].contains(&self.fraction) {
            return Err(ApiError::invalid("gpu.fraction", "GPU fraction must be 25, 50, 75 or 100"));
        }
        Ok(())
    }
}

/// `POST /v1/sandboxes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// A name, unique among the project's sandboxes that are not terminated.
    #[serde(default)]
    pub name: Option<String>,
    /// Project name; the key's project or the user's default project when absent.
    #[serde(default)]
    pub project: Option<String>,
    /// The image; the server's default image when absent.
    #[serde(default)]
    pub image: Option<ImageSpec>,
    /// CPU: `"1"`, `"0.5"`, `"500m"`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "1")]
    pub cpu: Option<MilliCpu>,
    /// Memory: `"2Gi"`, `"512Mi"`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "2Gi")]
    pub memory: Option<ByteSize>,
    /// GPU; none when absent.
    #[serde(default)]
    pub gpu: Option<GpuRequest>,
    /// Seconds of running time before the sandbox ends itself (default 3600).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Replaces the image's workload (entrypoint and cmd).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Keep the sandbox up after its workload exits.
    #[serde(default)]
    pub keep_running: bool,
    /// Labels to find it by.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Checks a sandbox or project name: 1–63 of `[a-z0-9-]`, not starting or ending with `-`.
pub fn validate_name(field: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!(
                "{field} must be 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
            ),
        ))
    }
}

/// Checks metadata labels.
pub fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if metadata.len() > MAX_METADATA {
        return Err(ApiError::invalid("metadata", format!("at most {MAX_METADATA} metadata labels")));
    }
    for (k, v) in metadata {
        if k.is_empty()
            || k.len() > MAX_METADATA_LEN
            || k.chars().any(|c| c.is_control() || c == '=' || c == ',')
        {
            return Err(ApiError::invalid(
                format!("metadata.{k}"),
                format!(
                    "metadata keys must be 1 to {MAX_METADATA_LEN} characters without '=', ',' or control characters"
                ),
            ));
        }
        if v.len() > MAX_METADATA_LEN || v.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                format!("metadata.{k}"),
                format!(
                    "metadata values must be at most {MAX_METADATA_LEN} characters without control characters"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a command vector.
pub fn validate_command(field: &str, argv: &[String]) -> Result<(), ApiError> {
    if argv.is_empty() || argv[0].is_empty() {
        return Err(ApiError::invalid(field, format!("{field} must name a program")));
    }
    if argv.len() > MAX_COMMAND_ARGS || argv.iter().map(String::len).sum::<usize>() > 256 * 1024 {
        return Err(ApiError::invalid(field, format!("{field} is too long")));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid(field, format!("{field} must not contain NUL bytes")));
    }
    Ok(())
}

/// Limits the server applies to sandbox requests (operator configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    /// Default and bounds of `timeout_s`.
    pub timeout_default_s: u64,
    /// Smallest timeout.
    pub timeout_min_s: u64,
    /// Largest timeout.
    pub timeout_max_s: u64,
    /// Default CPU.
    #[schema(value_type = String)]
    pub cpu_default: MilliCpu,
    /// Largest CPU.
    #[schema(value_type = String)]
    pub cpu_max: MilliCpu,
    /// Default memory.
    #[schema(value_type = String)]
    pub memory_default: ByteSize,
    /// Smallest memory.
    #[schema(value_type = String)]
    pub memory_min: ByteSize,
    /// Largest memory.
    #[schema(value_type = String)]
    pub memory_max: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_default_s: 3600,
            timeout_min_s: 1,
            timeout_max_s: 7 * 24 * 3600,
            cpu_default: MilliCpu(1000),
            cpu_max: MilliCpu(64_000),
            memory_default: ByteSize::gib(1),
            memory_min: ByteSize::mib(32),
            memory_max: ByteSize::gib(512),
        }
    }
}

impl Limits {
    /// Checks a timeout.
    pub fn check_timeout(&self, field: &str, t: u64) -> Result<(), ApiError> {
        if t < self.timeout_min_s || t > self.timeout_max_s {
            return Err(ApiError::invalid(
                field,
                format!("{field} must be between {} and {} seconds", self.timeout_min_s, self.timeout_max_s),
            ));
        }
        Ok(())
    }
}

impl CreateSandbox {
    /// Checks every field against `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<(), ApiError> {
        if let Some(n) = &self.name {
            validate_name("name", n)?;
        }
        if let Some(p) = &self.project {
            validate_name("project", p)?;
        }
        if let Some(i) = &self.image {
            i.validate()?;
        }
        if let Some(c) = self.cpu
            && (c.0 < 10 || c > limits.cpu_max)
        {
            return Err(ApiError::invalid("cpu", format!("cpu must be between 10m and {}", limits.cpu_max)));
        }
        if let Some(m) = self.memory
            && (m < limits.memory_min || m > limits.memory_max)
        {
            return Err(ApiError::invalid(
                "memory",
                format!("memory must be between {} and {}", limits.memory_min, limits.memory_max),
            ));
        }
        if let Some(g) = &self.gpu {
            g.validate()?;
        }
        if let Some(t) = self.timeout_s {
            limits.check_timeout("timeout_s", t)?;
        }
        crate::env::EnvVars::new(self.env.clone()).map_err(|e| {
            let field = match &e {
                crate::env::EnvError::InvalidName(n) | crate::env::EnvError::NulInValue(n) => {
                    format!("env.{n}")
                }
                _ => "env".to_string(),
            };
            ApiError::invalid(field, e.to_string())
        })?;
        if let Some(c) = &self.command {
            validate_command("command", c)?;
        }
        validate_metadata(&self.metadata)
    }
}

/// A sandbox as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxView {
    /// Its ID (20 characters of `[0-9a-v]`).
    #[schema(value_type = String, example = "06h275dmnd5n7hp83s3p")]
    pub id: SandboxId,
    /// Its name, if given.
    pub name: Option<String>,
    /// Its project's name.
    pub project: String,
    /// Where it is in its life.
    pub state: SandboxState,
    /// Why it is in that state (`timeout`, `exit`, `deleted`, `out_of_funds`, an error message…).
    pub state_reason: Option<String>,
    /// The workload's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The image reference (credentials are never shown).
    pub image: String,
    /// CPU.
    #[schema(value_type = String, example = "1")]
    pub cpu: MilliCpu,
    /// Memory.
    #[schema(value_type = String, example = "1Gi")]
    pub memory: ByteSize,
    /// GPU, if any.
    pub gpu: Option<GpuRequest>,
    /// Its timeout in seconds.
    pub timeout_s: u64,
    /// Whether it stays up after its workload exits.
    pub keep_running: bool,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Started (last start or resume).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<OffsetDateTime>,
    /// When it ends itself, while running.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<OffsetDateTime>,
    /// Running time left, while paused.
    pub remaining_s: Option<u64>,
    /// Paused, while paused.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paused_at: Option<OffsetDateTime>,
    /// Terminated or failed.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub terminated_at: Option<OffsetDateTime>,
    /// Labels.
    pub metadata: BTreeMap<String, String>,
}

/// A page of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/sandboxes/{id}/timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTimeout {
    /// Seconds from now (of running time, if paused).
    pub timeout_s: u64,
}

/// `POST /v1/sandboxes/{id}/exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Argument vector (`["python3", "-c", "print(1)"]`). Give this or `shell`.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// A shell line, run with `/bin/sh -c`. Give this or `command`.
    #[serde(default)]
    pub shell: Option<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User to run as (`name`, `uid`, `uid:gid`).
    #[serde(default)]
    pub user: Option<String>,
    /// Text given to the command's standard input (then closed).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill the command after this many seconds.
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Return as soon as it started; it keeps running.
    #[serde(default)]
    pub background: bool,
    /// With `background`: keep its standard input open for `…/processes/{pid}/stdin`.
    #[serde(default)]
    pub keep_stdin_open: bool,
}

impl ExecRequest {
    /// Checks the request.
    pub fn validate(&self) -> Result<(), ApiError> {
        match (&self.command, &self.shell) {
            (Some(c), None) => validate_command("command", c)?,
            (None, Some(s)) if !s.is_empty() && !s.contains('\0') => {}
            (None, Some(_)) => return Err(ApiError::invalid("shell", "shell must be a non-empty line")),
            _ => return Err(ApiError::invalid("command", "give exactly one of command and shell")),
        }
        crate::env::EnvVars::new(self.env.clone()).map_err(|e| ApiError::invalid("env", e.to_string()))?;
        if self.keep_stdin_open && !self.background {
            return Err(ApiError::invalid(
                "keep_stdin_open",
                "keep_stdin_open applies to background execs only",
            ));
        }
        if let Some(t) = self.timeout_s
            && (t == 0 || t > 24 * 3600)
        {
            return Err(ApiError::invalid("timeout_s", "timeout_s must be between 1 and 86400"));
        }
        Ok(())
    }
}

/// The result of a command run to completion (`POST …/exec` without streaming).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    /// Process id inside the sandbox.
    pub pid: u32,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// It was killed because its timeout passed.
    pub timed_out: bool,
    /// Standard output (invalid UTF-8 replaced); empty for background commands.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// One event of a streamed exec (`Accept: application/x-ndjson`), one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ExecStreamEvent {
    /// The command started.
    Started {
        /// Process id inside the sandbox.
        pid: u32,
    },
    /// Output on stdout (base64).
    Stdout {
        /// Base64 bytes.
        data: String,
    },
    /// Output on stderr (base64).
    Stderr {
        /// Base64 bytes.
        data: String,
    },
    /// The command ended; the last event.
    Exited {
        /// Exit code.
        exit_code: Option<i32>,
        /// Signal.
        signal: Option<i32>,
        /// Killed by its timeout.
        timed_out: bool,
    },
    /// The stream failed; the last event.
    Error {
        /// The error.
        code: String,
        /// What went wrong.
        message: String,
    },
}

/// A process started by exec (or the sandbox's workload), running or recently exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProcessView {
    /// Process id inside the sandbox.
    pub pid: u32,
    /// The argument vector.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Numeric user id.
    pub uid: u32,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: OffsetDateTime,
    /// Whether this is the sandbox's workload (its image command).
    pub workload: bool,
    /// Whether it still runs.
    pub running: bool,
    /// Exit code, once it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended it.
    pub signal: Option<i32>,
}

/// `POST /v1/sandboxes/{id}/processes/{pid}/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalProcess {
    /// `TERM`, `KILL`, `INT`, `HUP`, `QUIT`, `USR1`, `USR2`, `STOP`, `CONT`, or a number.
    pub signal: String,
}

impl SignalProcess {
    /// The signal number.
    pub fn number(&self) -> Result<i32, ApiError> {
        let s = self.signal.trim().trim_start_matches("SIG").to_ascii_uppercase();
        let n = match s.as_str() {
            "HUP" => 1,
            "INT" => 2,
            "QUIT" => 3,
            "KILL" => 9,
            "USR1" => 10,
            "USR2" => 12,
            "TERM" => 15,
            "CONT" => 18,
            "STOP" => 19,
            other => other.parse::<i32>().ok().filter(|n| (1..=64).contains(n)).ok_or_else(|| {
                ApiError::invalid(
                    "signal",
                    format!("unknown signal {:?}: use TERM, KILL, INT, HUP or 1-64", self.signal),
                )
            })?,
        };
        Ok(n)
    }
}

/// `POST /v1/sandboxes/{id}/processes/{pid}/stdin`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessInput {
    /// Text to write (UTF-8). Give this or `data_base64`.
    #[serde(default)]
    pub data: Option<String>,
    /// Bytes to write, base64.
    #[serde(default)]
    pub data_base64: Option<String>,
    /// Close standard input afterwards.
    #[serde(default)]
    pub close: bool,
}

/// Kind of a file-system entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKindView {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else.
    Other,
}

/// A file-system entry in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEntryView {
    /// Last path component.
    pub name: String,
    /// Absolute path.
    pub path: String,
    /// Kind.
    pub kind: FileKindView,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner name (or uid).
    pub owner: String,
    /// Group name (or gid).
    pub group: String,
    /// Modification time.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub modified_at: OffsetDateTime,
    /// Target of a symbolic link.
    pub symlink_target: Option<String>,
}

/// `POST …/files/mkdir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MakeDir {
    /// Directory to create, with its parents.
    pub path: String,
}

/// `POST …/files/move`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MovePath {
    /// Existing path.
    pub from: String,
    /// New path.
    pub to: String,
}

/// The stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStreamView {
    /// Standard output of the workload.
    Stdout,
    /// Standard error of the workload.
    Stderr,
    /// sandpit's own messages about the workload.
    System,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogEntry {
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// Which stream.
    pub stream: LogStreamView,
    /// The text.
    pub text: String,
}

/// `GET …/logs` without `follow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogsPage {
    /// Entries in order.
    pub entries: Vec<LogEntry>,
    /// Pass as `offset` to continue.
    pub next_offset: u64,
    /// Entries before these were dropped (the log's size bound).
    pub skipped: bool,
}

/// What a sandbox event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The state changed.
    State,
    /// Progress of long work (image pull, provisioning step).
    Progress,
}

/// An event of a sandbox (`GET …/events`, server-sent events; also its history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxEventView {
    /// Sequence number within the sandbox (increasing).
    pub seq: u64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// What it is about.
    pub kind: EventKind,
    /// The new state, for state events.
    pub state: Option<SandboxState>,
    /// The reason, for state events.
    pub reason: Option<String>,
    /// A human-readable message.
    pub message: Option<String>,
    /// Progress details (bytes done/total per layer…), for progress events.
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// Server version.
    pub version: String,
}

/// Features a server can have turned off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FeaturesView {
    /// Sandboxes (`/v1/sandboxes…`); when off those routes answer 404 `feature_disabled`.
    pub sandbox: bool,
}

/// What a client needs to know about the server (`GET /v1/config`): its features, currency and
/// the defaults and bounds of sandbox requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConfigView {
    /// Server version.
    pub version: String,
    /// Which features are on.
    pub features: FeaturesView,
    /// The one currency of every wallet and price.
    pub currency: String,
    /// Image of a create that names none.
    pub default_image: String,
    /// Defaults and bounds of sandbox requests.
    pub limits: Limits,
}

/// One GPU type of the server and what is free of it (`GET /v1/gpus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GpuTypeView {
    /// Type name to use in `gpu.type` (`H100`, `A100-80GB`, `T4`, or what NVML reports).
    #[serde(rename = "type")]
    pub gpu_type: String,
    /// Memory of one GPU.
    #[schema(value_type = String, example = "80Gi")]
    pub memory: ByteSize,
    /// GPUs of this type.
    pub total: u32,
    /// GPUs with nothing on them (a whole-GPU sandbox fits on each).
    pub free_whole: u32,
    /// How many more 25 % sandboxes fit.
    pub free_25: u32,
    /// How many more 50 % sandboxes fit.
    pub free_50: u32,
    /// How many more 75 % sandboxes fit.
    pub free_75: u32,
    /// Simulated GPUs: scheduled and billed like real ones, but no device is given to sandboxes.
    pub simulated: bool,
}

/// A curated image (`GET /v1/images`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CuratedImageView {
    /// What to write as `image` (`python`).
    pub name: String,
    /// Category (`base`, `code-interpreter`, `pytorch`, `vllm`, …).
    pub category: String,
    /// What it is.
    pub description: String,
    /// The reference it stands for.
    pub reference: String,
    /// Meant for GPU sandboxes.
    pub gpu: bool,
    /// In this server's image store (else it is pulled, or must be built, on first use).
    pub available: bool,
    /// Size when known (in the store).
    #[schema(value_type = Option<String>)]
    pub size: Option<ByteSize>,
    /// The `sandpit image build` recipe that makes it, if it is built locally.
    pub build: Option<String>,
}

/// An image in the server's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LocalImageView {
    /// References that name it.
    pub references: Vec<String>,
    /// Manifest digest.
    pub digest: String,
    /// Uncompressed size.
    #[schema(value_type = String)]
    pub size: ByteSize,
    /// When it came into the store.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub imported_at: OffsetDateTime,
    /// When a sandbox last used it.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used: Option<OffsetDateTime>,
    /// `local` (built or imported here) or `registry`.
    pub source: String,
    /// Pulled with credentials: usable only by callers whose credentials its registry accepts.
    pub private: bool,
}

/// `GET /v1/images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImagesView {
    /// The curated catalog.
    pub curated: Vec<CuratedImageView>,
    /// Everything in the store.
    pub local: Vec<LocalImageView>,
}

/// `POST /v1/images/pull`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullImage {
    /// The reference (or a curated name).
    pub reference: String,
    /// Registry user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Registry password; never returned or logged.
    #[serde(default)]
    pub password: Option<String>,
}

impl fmt::Debug for PullImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullImage")
            .field("reference", &self.reference)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One line of a streamed pull (`Accept: application/x-ndjson`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// A layer advanced.
    Progress {
        /// Layer digest.
        layer: String,
        /// Bytes received.
        done_bytes: u64,
        /// Layer size.
        total_bytes: u64,
        /// `downloading`, `cached` or `done`.
        status: String,
    },
    /// The image is in the store; the last event.
    Done {
        /// The image.
        image: LocalImageView,
    },
    /// The pull failed; the last event.
    Error {
        /// `registry_auth_failed`, `image_not_found`, `registry_unreachable`, …
        code: String,
        /// What went wrong.
        message: String,
    },
}

/// What a prune removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PruneReport {
    /// References removed.
    pub removed_references: Vec<String>,
    /// Number of layers deleted.
    pub removed_layers: usize,
    /// Bytes freed.
    #[schema(value_type = String)]
    pub freed: ByteSize,
}

/// A project as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProjectView {
    /// Its name.
    pub name: String,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The caller's role there (`owner`, `member`), if a member.
    #[serde(default)]
    pub role: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_rejects_unknown_fields_and_names_bad_fields() {
        let e = serde_json::from_str::<CreateSandbox>(r#"{"imagee":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let limits = Limits::default();
        let bad = |json: &str| {
            let c: CreateSandbox = serde_json::from_str(json).unwrap();
            match c.validate(&limits).unwrap_err() {
                ApiError::InvalidInput { field, .. } => field,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(bad(r#"{"name":"Bad Name"}"#), "name");
        assert_eq!(bad(r#"{"cpu":"1000"}"#), "cpu");
        assert_eq!(bad(r#"{"memory":"1Ki"}"#), "memory");
        assert_eq!(bad(r#"{"timeout_s":0}"#), "timeout_s");
        assert_eq!(bad(r#"{"env":{"1X":"y"}}"#), "env.1X");
        assert_eq!(bad(r#"{"gpu":{"type":"H100","fraction":30}}"#), "gpu.fraction");
        assert_eq!(bad(r#"{"command":[]}"#), "command");
        assert_eq!(bad(r#"{"image":{"reference":"x","username":"u"}}"#), "image.password");
        assert_eq!(bad(r#"{"metadata":{"a=b":"c"}}"#), "metadata.a=b");
        let ok: CreateSandbox = serde_json::from_str(
            r#"{"name":"web-1","image":"base","cpu":"500m","memory":"512Mi","timeout_s":60,"env":{"A":"1"},"metadata":{"team":"x"}}"#,
        )
        .unwrap();
        ok.validate(&limits).unwrap();
    }

    #[test]
    fn image_passwords_never_show_in_debug_output() {
        let i = ImageSpec::WithCredentials {
            reference: "r".into(),
            username: Some("u".into()),
            password: Some("hunter2".into()),
        };
        assert!(!format!("{i:?}").contains("hunter2"));
    }

    #[test]
    fn exec_needs_exactly_one_of_command_and_shell() {
        assert!(ExecRequest { shell: Some("ls".into()), ..Default::default() }.validate().is_ok());
        assert!(ExecRequest::default().validate().is_err());
        let both =
            ExecRequest { shell: Some("ls".into()), command: Some(vec!["ls".into()]), ..Default::default() };
        assert!(both.validate().is_err());
    }
}

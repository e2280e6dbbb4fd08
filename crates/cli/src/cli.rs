//! The command line: `sandpit serve` and the client verbs, as clap definitions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sandpit_types::api::GpuRequest;
use sandpit_types::{ByteSize, MilliCpu, SandboxState};

use crate::parse;

/// Self-hostable sandboxes (optionally with GPUs): run a server, then create, exec into, copy
/// files to and from, pause, resume and delete sandboxes.
///
/// The client verbs find the server and key in $SANDPIT_URL and $SANDPIT_API_KEY, else in
/// ~/.config/sandpit/credentials.json (written by `sandpit serve` on its first start).
#[derive(Debug, Parser)]
#[command(name = "sandpit", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sandpit server (API and local sandboxes) until SIGTERM or SIGINT; needs root.
    Serve(ServeArgs),
    /// Create a sandbox.
    Create(Box<CreateArgs>),
    /// List sandboxes, newest first.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one sandbox.
    Get(IdArg),
    /// Pause a running sandbox: its processes stop and its CPU, memory and GPU are released;
    /// its disk is kept.
    Pause(IdArg),
    /// Resume a paused sandbox over the same disk.
    Resume(IdArg),
    /// Delete a sandbox (succeeds for one already ended).
    #[command(visible_alias = "rm")]
    Delete(IdArg),
    /// Set how much more running time a sandbox has before it ends itself.
    Timeout(TimeoutArgs),
    /// Run a command in a running sandbox, streaming its output; exits with its exit code.
    Exec(ExecArgs),
    /// List a sandbox's processes: exec's (running or recently exited) and its workload.
    Ps(IdArg),
    /// Follow a process's output until it exits; exits with its exit code.
    Attach(PidArgs),
    /// Send a signal to a process (and its process group).
    Kill(KillArgs),
    /// Print a sandbox's workload log (stderr lines to stderr).
    Logs(LogsArgs),
    /// Copy a file into or out of a sandbox: `sandpit cp FILE ID:/path` or `sandpit cp ID:/path FILE`.
    Cp(CpArgs),
    /// List the projects the key can see.
    Projects,
    /// Show who the key belongs to: user, role, KYC status, projects.
    Whoami,
    /// Users (administrators): list, create.
    #[command(subcommand)]
    User(UserCommand),
    /// Projects and their members.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// API keys: list, create (shown once), revoke.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Identity verification (KYC): status, start; administrators set it.
    #[command(subcommand)]
    Kyc(KycCommand),
    /// A project's wallet: balance, ledger, credit (administrators), low-balance threshold.
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// What a sandbox of a size costs per hour, running and paused.
    Estimate(EstimateArgs),
    /// Spending in a time range by resource, sandbox, project and day (or every charge as CSV).
    Usage(UsageArgs),
    /// List the server's GPU types with what is free: whole GPUs and 25/50/75 % shares.
    Gpus,
    /// Images: the curated catalog and the server's store (list, pull, remove, prune, build).
    #[command(subcommand)]
    Image(ImageCommand),
}

/// `sandpit image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the curated images and the images in the server's store.
    #[command(visible_alias = "list")]
    Ls,
    /// Pull an image into the server's store, with progress.
    Pull(ImagePullArgs),
    /// Remove an image from the store (administrators; refused while a sandbox uses it).
    Rm(ImageRefArg),
    /// Remove every unused image (but the default and locally built curated ones) and unneeded layers.
    Prune,
    /// Build curated images from Debian packages with mmdebstrap, on the server's machine, as root
    /// (default: every buildable curated image). Works without a running server.
    Build(ImageBuildArgs),
    /// Import an image into the server's store on this machine, as root: an OCI layout
    /// directory, an oci-archive tarball (as `skopeo copy … oci-archive:x.tar` writes) or a plain
    /// root file system directory. Works without a running server.
    Import(ImageImportArgs),
}

/// `sandpit image import`.
#[derive(Debug, Args)]
pub struct ImageImportArgs {
    /// OCI layout directory, oci-archive tarball, or root file system directory.
    pub path: PathBuf,
    /// The reference to give it (`team/tools:1`).
    #[arg(long = "as", value_name = "REF")]
    pub reference: String,
    /// In a layout or archive holding several images, the one with this ref name annotation.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// For a root file system directory: the command the image runs (default: none, the sandbox
    /// idles until exec).
    #[arg(long = "cmd", value_name = "ARG", num_args = 1..)]
    pub cmd: Vec<String>,
    /// The server's data directory and configuration file.
    #[command(flatten)]
    pub local: LocalServerArgs,
}

/// Where the server's files are, for commands that run on its machine.
#[derive(Debug, Args)]
pub struct LocalServerArgs {
    /// The server's data directory [default: /var/lib/sandpit, or the config file's].
    #[arg(long, env = "SANDPIT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's configuration file.
    #[arg(long, env = "SANDPIT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `sandpit image pull`.
#[derive(Debug, Args)]
pub struct ImagePullArgs {
    /// Reference (`docker.io/library/python:3.12`) or curated name.
    pub reference: String,
    /// Registry user name.
    #[arg(long)]
    pub username: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

/// An image reference.
#[derive(Debug, Args)]
pub struct ImageRefArg {
    /// Reference or `sha256:` digest.
    pub reference: String,
}

/// `sandpit image build`.
#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// Curated names to build (`base`, `python`, `pytorch-cpu`) [default: all buildable].
    pub names: Vec<String>,
    /// The server's data directory and configuration file.
    #[command(flatten)]
    pub local: LocalServerArgs,
    /// Debian mirror [default: mmdebstrap's, http://deb.debian.org/debian].
    #[arg(long, env = "SANDPIT_DEBIAN_MIRROR")]
    pub mirror: Option<String>,
}

/// Log output format of `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `sandpit serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTP API [default: 127.0.0.1:7700, or the config file's].
    #[arg(long, env = "SANDPIT_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Where the database, images, sandboxes and logs live [default: /var/lib/sandpit].
    #[arg(long, env = "SANDPIT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML configuration file (flags and SANDPIT_* variables override it).
    #[arg(long, env = "SANDPIT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format (the level comes from RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `sandpit create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Image: a curated name (`python`) or a reference [default: the server's default image].
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// User name for a private image's registry.
    #[arg(long, requires = "image", value_name = "USER")]
    pub image_username: Option<String>,
    /// Read the private image registry's password from standard input.
    #[arg(long, requires = "image_username")]
    pub image_password_stdin: bool,
    /// CPU: `1`, `0.5`, `500m`.
    #[arg(long, value_parser = parse::cpu)]
    pub cpu: Option<MilliCpu>,
    /// Memory: `2Gi`, `512Mi`.
    #[arg(long, value_parser = parse::memory)]
    pub memory: Option<ByteSize>,
    /// GPU: `TYPE[:COUNT][@FRACTION%]`, e.g. `H100`, `A100:2`, `H100@50%`.
    #[arg(long, value_parser = parse::gpu, value_name = "GPU")]
    pub gpu: Option<GpuRequest>,
    /// Running time before it ends itself: seconds or a duration (`3600`, `1h`, `90m`).
    #[arg(long, value_parser = parse::duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// An environment variable `NAME=VALUE` (repeatable).
    #[arg(short = 'e', long = "env", value_parser = parse::env_var, value_name = "NAME=VALUE")]
    pub env: Vec<(String, String)>,
    /// Project name [default: the key's project, or `default`].
    #[arg(long)]
    pub project: Option<String>,
    /// A name (unique among the project's live sandboxes).
    #[arg(long)]
    pub name: Option<String>,
    /// A label `KEY=VALUE` to find it by (repeatable).
    #[arg(long, value_parser = parse::label, value_name = "KEY=VALUE")]
    pub metadata: Vec<(String, String)>,
    /// Keep the sandbox up after its command exits.
    #[arg(long)]
    pub keep_running: bool,
    /// Wait until it runs (or failed), showing progress; exit non-zero if it failed.
    #[arg(long)]
    pub wait: bool,
    /// The command to run instead of the image's entrypoint (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `sandpit list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this project.
    #[arg(long)]
    pub project: Option<String>,
    /// Only these states, comma-separated: provisioning, running, paused, terminated, failed.
    #[arg(long, value_delimiter = ',', value_parser = parse::state)]
    pub state: Vec<SandboxState>,
    /// Only sandboxes with this label, `KEY:VALUE` (repeatable; all must match).
    #[arg(long, value_parser = parse::label_filter, value_name = "KEY:VALUE")]
    pub metadata: Vec<(String, String)>,
    /// Every page, not just the first 100 sandboxes.
    #[arg(long)]
    pub all: bool,
}

/// A sandbox by id or name.
#[derive(Debug, Args)]
pub struct IdArg {
    /// Sandbox id or name.
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `sandpit timeout`.
#[derive(Debug, Args)]
pub struct TimeoutArgs {
    /// Sandbox id or name.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Running time from now: seconds or a duration (`600`, `10m`, `2h`).
    #[arg(value_parser = parse::duration)]
    pub duration: Duration,
}

/// `sandpit exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Sandbox id or name.
    #[arg(value_name = "ID")]
    pub id: String,
    /// An environment variable `NAME=VALUE` (repeatable).
    #[arg(short = 'e', long = "env", value_parser = parse::env_var, value_name = "NAME=VALUE")]
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    #[arg(short = 'w', long = "workdir", value_name = "CWD")]
    pub cwd: Option<String>,
    /// User to run as (`name`, `uid` or `uid:gid`).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Kill the command after this long (exit code 124).
    #[arg(long, value_parser = parse::duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Do not send this command's standard input (by default it is read to its end and sent
    /// when it is not a terminal).
    #[arg(long)]
    pub no_stdin: bool,
    /// Start it in the background and print its pid (see `ps`, `attach`, `kill`).
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// A process of a sandbox.
#[derive(Debug, Args)]
pub struct PidArgs {
    /// Sandbox id or name.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Process id (from `exec --detach` or `ps`).
    pub pid: u32,
}

/// `sandpit kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Sandbox id or name.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Process id.
    pub pid: u32,
    /// The signal: TERM, KILL, INT, HUP, … or a number.
    #[arg(short, long, default_value = "TERM")]
    pub signal: String,
}

/// `sandpit logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Sandbox id or name.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Keep printing new entries until the sandbox ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// `sandpit cp`.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a local file, `-` for standard input, or `ID:/path`.
    #[arg(value_name = "SRC")]
    pub src: String,
    /// Destination: a local file or directory, `-` for standard output, or `ID:/path`.
    #[arg(value_name = "DST")]
    pub dst: String,
}

/// `sandpit user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List every user.
    #[command(visible_alias = "list")]
    Ls,
    /// Create a user and print their first API key (shown only once).
    Create(UserCreateArgs),
}

/// `sandpit user create`.
#[derive(Debug, Args)]
pub struct UserCreateArgs {
    /// Unique name (lowercase letters, digits, `-`).
    pub name: String,
    /// Make the user an administrator.
    #[arg(long)]
    pub admin: bool,
}

/// `sandpit project …`.
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// List the projects the key can see, with the caller's role.
    #[command(visible_alias = "list")]
    Ls,
    /// Create a project (the caller becomes its owner; its wallet starts empty).
    Create(NameArg),
    /// List a project's members.
    Members(NameArg),
    /// Add a member to a project, or change their role (owners and administrators).
    AddMember(MemberArgs),
    /// Remove a member from a project (owners and administrators; anyone may leave).
    RemoveMember(MemberArgs),
}

/// A name.
#[derive(Debug, Args)]
pub struct NameArg {
    /// The name.
    pub name: String,
}

/// `sandpit project add-member / remove-member`.
#[derive(Debug, Args)]
pub struct MemberArgs {
    /// The project.
    pub project: String,
    /// The user.
    pub user: String,
    /// Make them an owner (default: member).
    #[arg(long)]
    pub owner: bool,
}

/// `sandpit key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the caller's keys (revoked ones too), newest first.
    #[command(visible_alias = "list")]
    Ls(KeyLsArgs),
    /// Create an API key and print it (shown only once).
    Create(KeyCreateArgs),
    /// Revoke a key by its id (see `sandpit key ls`).
    Revoke(KeyIdArg),
}

/// `sandpit key ls`.
#[derive(Debug, Args)]
pub struct KeyLsArgs {
    /// Every user's keys (administrators).
    #[arg(long)]
    pub all: bool,
}

/// `sandpit key create`.
#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// A label for the key.
    pub name: String,
    /// Restrict the key to this project.
    #[arg(long)]
    pub project: Option<String>,
    /// Create it for this user (administrators).
    #[arg(long)]
    pub user: Option<String>,
}

/// `sandpit key revoke`.
#[derive(Debug, Args)]
pub struct KeyIdArg {
    /// The key's id.
    pub id: i64,
}

/// `sandpit kyc …`.
#[derive(Debug, Subcommand)]
pub enum KycCommand {
    /// The caller's verification status.
    Status,
    /// Start verification: the status becomes `pending`, with a reference and where to complete it.
    Start,
    /// Set a user's status: unverified, pending, verified, rejected (administrators).
    Set(KycSetArgs),
}

/// `sandpit kyc set`.
#[derive(Debug, Args)]
pub struct KycSetArgs {
    /// The user.
    pub user: String,
    /// `unverified`, `pending`, `verified` or `rejected`.
    pub status: String,
}

/// `sandpit wallet …`.
#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Balance, low-balance threshold and what running sandboxes burn per hour.
    Show(ProjectOpt),
    /// Credits and charges, oldest first.
    Ledger(LedgerArgs),
    /// Add money to a project's wallet (administrators).
    Credit(CreditArgs),
    /// Set the balance under which the wallet reads as low (owners and administrators).
    SetLow(SetLowArgs),
}

/// An optional project.
#[derive(Debug, Args)]
pub struct ProjectOpt {
    /// The project [default: the caller's only project].
    pub project: Option<String>,
}

/// `sandpit wallet ledger`.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The project [default: the caller's only project].
    pub project: Option<String>,
    /// Only lines after this id (the last id of the previous page).
    #[arg(long)]
    pub after: Option<i64>,
    /// At most this many lines (at most 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

/// `sandpit wallet credit`.
#[derive(Debug, Args)]
pub struct CreditArgs {
    /// The project.
    pub project: String,
    /// The amount, a decimal in the server's currency (`50`, `12.5`).
    pub amount: String,
    /// A note kept in the ledger.
    #[arg(long)]
    pub note: Option<String>,
}

/// `sandpit wallet set-low`.
#[derive(Debug, Args)]
pub struct SetLowArgs {
    /// The project.
    pub project: String,
    /// The threshold, a decimal in the server's currency.
    pub amount: String,
}

/// `sandpit estimate`.
#[derive(Debug, Args)]
pub struct EstimateArgs {
    /// CPU: `1`, `0.5`, `500m` [default: the server's default].
    #[arg(long, value_parser = parse::cpu)]
    pub cpu: Option<MilliCpu>,
    /// Memory: `2Gi`, `512Mi` [default: the server's default].
    #[arg(long, value_parser = parse::memory)]
    pub memory: Option<ByteSize>,
    /// GPU: `TYPE[:COUNT][@FRACTION%]`, e.g. `H100`, `A100:2`, `H100@50%`.
    #[arg(long, value_parser = parse::gpu, value_name = "GPU")]
    pub gpu: Option<GpuRequest>,
}

/// `sandpit usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Start: a date (`2026-11-01`) or an RFC 3339 time [default: 30 days ago].
    #[arg(long)]
    pub from: Option<String>,
    /// End (exclusive): a date or an RFC 3339 time [default: now].
    #[arg(long)]
    pub to: Option<String>,
    /// Only this project.
    #[arg(long)]
    pub project: Option<String>,
    /// Every charge line as CSV on stdout.
    #[arg(long)]
    pub csv: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_takes_its_command_after_a_double_dash() {
        let cli =
            Cli::try_parse_from(["sandpit", "create", "--cpu", "0.5", "--", "sh", "-c", "echo hi"]).unwrap();
        let Command::Create(c) = cli.command else { panic!("not create") };
        assert_eq!(c.cpu, Some(MilliCpu(500)));
        assert_eq!(c.command, ["sh", "-c", "echo hi"]);
    }

    #[test]
    fn json_is_accepted_after_the_verb() {
        let cli = Cli::try_parse_from(["sandpit", "list", "--json", "--state", "running,paused"]).unwrap();
        assert!(cli.json);
        let Command::List(l) = cli.command else { panic!("not list") };
        assert_eq!(l.state, [SandboxState::Running, SandboxState::Paused]);
    }

    #[test]
    fn a_bad_flag_value_names_the_flag() {
        let e = Cli::try_parse_from(["sandpit", "create", "--cpu", "lots"]).unwrap_err().to_string();
        assert!(e.contains("--cpu") && e.contains("CPU amount"), "{e}");
        let e = Cli::try_parse_from(["sandpit", "create", "--env", "1X=y"]).unwrap_err().to_string();
        assert!(e.contains("--env") && e.contains("1X"), "{e}");
    }
}

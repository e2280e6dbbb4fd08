//! The wire protocol between the host (`sandpit-runtime`) and `sandpit-init`, version 1.
//!
//! # Transport
//! The host connects to a unix stream socket whose listening end init received as an inherited file
//! descriptor (the socket file lives on the host and is not visible inside the sandbox). One connection
//! carries exactly one request: the host sends a [`FrameKind::Json`] frame holding a [`Request`]
//! (with the protocol version in `v`), possibly followed by data frames, and init answers with JSON
//! [`Response`] frames and data frames. Either side may close the connection when the exchange is
//! over; many connections may be open at once.
//!
//! # Framing
//! Every frame is `len: u32 little-endian` (the number of bytes that follow, kind byte included),
//! `kind: u8` ([`FrameKind`]), then `len - 1` payload bytes. A payload is at most [`MAX_PAYLOAD`]
//! bytes; data is sent in chunks of at most [`DATA_CHUNK`].
//!
//! # Exchanges (→ host to init, ← init to host)
//! - `hello`: ← `hello`.
//! - `exec`: ← `started`, then ← `stdout`/`stderr`/`pty` data frames as produced, → `stdin` data
//!   frames and one `end` frame (when `stdin` was asked for), finally ← `exited`. With
//!   `keep_on_disconnect`, closing the connection leaves the process running (re-attach with
//!   `attach`); otherwise the process group is killed when the connection closes.
//! - `attach`: like `exec` from `started` on; buffered output not yet dropped is replayed first.
//!   Attaching to a process that already exited answers `started` then `exited` at once.
//! - `list_procs`: ← `procs`. `signal`, `close_stdin`, `resize_pty`: ← `ok`.
//! - `write_stdin`: → `stdin` data frames then `end`, ← `ok` once all was written.
//! - `read_file`: ← `file` (the entry), ← `data` frames, ← `end`.
//! - `write_file`: → `data` frames, → `end`, ← `entry`. The file is written to a temporary name
//!   in the same directory and renamed into place, so readers never see a partial file.
//! - `stat`, `make_dir`, `rename`: ← `entry`. `list_dir`: ← `entries`. `remove`: ← `ok`.
//! - `watch`: ← `ok`, then ← `fs_event` messages until the host closes the connection.
//! - Any request may be answered with `error` instead, which ends the exchange.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Size of the data chunks both sides send.
pub const DATA_CHUNK: usize = 64 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A JSON [`Request`] (host to init) or [`Response`] (init to host).
    Json = 1,
    /// Bytes a process wrote to its standard output.
    Stdout = 2,
    /// Bytes a process wrote to its standard error.
    Stderr = 3,
    /// Bytes for a process's standard input (or its terminal, for a pty process).
    Stdin = 4,
    /// File content, in either direction.
    Data = 5,
    /// End of a data stream: end of stdin, or end of file content.
    End = 6,
    /// Bytes a pty process wrote to its terminal.
    Pty = 7,
}

impl FrameKind {
    /// Parses the kind byte of a frame.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Json,
            2 => Self::Stdout,
            3 => Self::Stderr,
            4 => Self::Stdin,
            5 => Self::Data,
            6 => Self::End,
            7 => Self::Pty,
            _ => return None,
        })
    }
}

/// One frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is.
    pub kind: FrameKind,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A JSON frame holding `msg`.
    pub fn json<T: Serialize>(msg: &T) -> Self {
        // Serializing our own protocol types into a Vec cannot fail: they hold no maps with
        // non-string keys and no types with fallible Serialize impls.
        let payload = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
        Self { kind: FrameKind::Json, payload }
    }

    /// A data frame of the given kind.
    pub fn data(kind: FrameKind, payload: impl Into<Vec<u8>>) -> Self {
        Self { kind, payload: payload.into() }
    }

    /// An empty `end` frame.
    pub fn end() -> Self {
        Self { kind: FrameKind::End, payload: Vec::new() }
    }

    /// Encodes the frame header (length and kind) for a payload of `payload_len` bytes.
    pub fn header(kind: FrameKind, payload_len: usize) -> [u8; 5] {
        let len = u32::try_from(payload_len + 1).unwrap_or(u32::MAX);
        let l = len.to_le_bytes();
        [l[0], l[1], l[2], l[3], kind as u8]
    }

    /// Writes the frame to a blocking writer.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&Self::header(self.kind, self.payload.len()))?;
        w.write_all(&self.payload)
    }

    /// Reads one frame from a blocking reader; `Ok(None)` on a clean end of stream.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Self>> {
        let mut hdr = [0u8; 5];
        let mut got = 0;
        while got < hdr.len() {
            match r.read(&mut hdr[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let (kind, len) = Self::parse_header(hdr)?;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(Some(Self { kind, payload }))
    }

    /// Validates a frame header and returns the kind and the payload length.
    pub fn parse_header(hdr: [u8; 5]) -> io::Result<(FrameKind, usize)> {
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        if len == 0 || len - 1 > MAX_PAYLOAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad frame length {len}")));
        }
        let kind = FrameKind::from_u8(hdr[4]).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("unknown frame kind {}", hdr[4]))
        })?;
        Ok((kind, len - 1))
    }

    /// Decodes the payload of a JSON frame.
    pub fn parse_json<T: for<'de> Deserialize<'de>>(&self) -> io::Result<T> {
        if self.kind != FrameKind::Json {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "expected a JSON frame"));
        }
        serde_json::from_slice(&self.payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// A request with the protocol version it is written in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// Protocol version; init answers `unsupported_version` to one it does not speak.
    pub v: u32,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

/// Selects a process of the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProcSelector {
    /// By process id (as seen inside the sandbox).
    Pid(u32),
    /// By the tag given at exec; the newest process with that tag.
    Tag(String),
}

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// An argument vector; `argv[0]` is looked up in `PATH` when it has no slash.
    Argv(Vec<String>),
    /// A shell command line, run as `/bin/sh -c <line>`.
    Shell(String),
}

/// Size of a pseudo-terminal.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PtySize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Runs a process in the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default)]
pub struct ExecRequest {
    /// What to run.
    pub command: Option<Command>,
    /// Extra environment, over init's own environment and the user's `HOME`, `USER`, `LOGNAME`.
    pub env: BTreeMap<String, String>,
    /// Working directory; the user's home (or `/`) by default. A missing one is `invalid_argument`.
    pub cwd: Option<String>,
    /// `name`, `uid`, `name:group` or `uid:gid`; root by default.
    pub user: Option<String>,
    /// Whether the host will send standard input; otherwise it is `/dev/null`.
    pub stdin: bool,
    /// Kill the process group after this long (milliseconds) and report `timed_out`.
    pub timeout_ms: Option<u64>,
    /// Keep the process running when this connection closes.
    pub keep_on_disconnect: bool,
    /// A name to find the process by later.
    pub tag: Option<String>,
    /// Run on a pseudo-terminal of this size (stdout and stderr merge into `pty` frames).
    pub pty: Option<PtySize>,
}

/// Everything the host can ask init.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who are you and how is the entrypoint doing?
    Hello,
    /// Start a process.
    Exec(ExecRequest),
    /// Stream a running (or recently exited) process's output and exit.
    Attach {
        /// Which process.
        target: ProcSelector,
        /// Whether the host will send stdin frames on this connection.
        #[serde(default)]
        stdin: bool,
    },
    /// List the processes init started (running, and recently exited).
    ListProcs,
    /// Send a signal.
    Signal {
        /// Which process.
        target: ProcSelector,
        /// Signal number.
        signal: i32,
        /// Signal the whole process group (the default) rather than the process alone.
        #[serde(default = "yes")]
        group: bool,
    },
    /// Write stdin frames (following this request, ended by `end`) to a process.
    WriteStdin {
        /// Which process.
        target: ProcSelector,
    },
    /// Close a process's stdin.
    CloseStdin {
        /// Which process.
        target: ProcSelector,
    },
    /// Resize a pty process's terminal.
    ResizePty {
        /// Which process.
        target: ProcSelector,
        /// New size.
        size: PtySize,
    },
    /// Read a file.
    ReadFile {
        /// Path inside the sandbox; relative paths are relative to the user's home.
        path: String,
        /// Act as this user (see [`ExecRequest::user`]).
        #[serde(default)]
        user: Option<String>,
        /// Start here.
        #[serde(default)]
        offset: u64,
        /// Read at most this many bytes.
        #[serde(default)]
        length: Option<u64>,
    },
    /// Write a file from the data frames that follow.
    WriteFile {
        /// Path inside the sandbox.
        path: String,
        /// Act as this user (new files and directories belong to them).
        #[serde(default)]
        user: Option<String>,
        /// Permission bits of a new file (default 0644).
        #[serde(default)]
        mode: Option<u32>,
        /// Append instead of replacing.
        #[serde(default)]
        append: bool,
        /// Create missing parent directories (default true).
        #[serde(default = "yes")]
        create_parents: bool,
    },
    /// Describe one path (without following a final symlink).
    Stat {
        /// Path inside the sandbox.
        path: String,
        /// Act as this user.
        #[serde(default)]
        user: Option<String>,
    },
    /// List a directory down to `depth` levels (1 = its children).
    ListDir {
        /// Path inside the sandbox.
        path: String,
        /// Act as this user.
        #[serde(default)]
        user: Option<String>,
        /// Levels to descend; at least 1.
        #[serde(default = "one")]
        depth: u32,
    },
    /// Create a directory.
    MakeDir {
        /// Path inside the sandbox.
        path: String,
        /// Act as this user.
        #[serde(default)]
        user: Option<String>,
        /// Create missing parents too; then an existing directory is not an error.
        #[serde(default = "yes")]
        parents: bool,
        /// Permission bits (default 0755).
        #[serde(default)]
        mode: Option<u32>,
    },
    /// Rename (move) a path.
    Rename {
        /// Existing path.
        from: String,
        /// New path.
        to: String,
        /// Act as this user.
        #[serde(default)]
        user: Option<String>,
    },
    /// Remove a path.
    Remove {
        /// Path inside the sandbox.
        path: String,
        /// Act as this user.
        #[serde(default)]
        user: Option<String>,
        /// Remove directories with their contents.
        #[serde(default)]
        recursive: bool,
    },
    /// Stream changes under a directory until the connection closes.
    Watch {
        /// Directory inside the sandbox.
        path: String,
        /// Act as this user.
        #[serde(default)]
        user: Option<String>,
        /// Watch subdirectories too.
        #[serde(default)]
        recursive: bool,
    },
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

/// How a process ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ExitStatus {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// Init killed it because its timeout passed.
    #[serde(default)]
    pub timed_out: bool,
}

impl ExitStatus {
    /// True for a normal exit with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A process init started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id inside the sandbox.
    pub pid: u32,
    /// Tag given at exec.
    pub tag: Option<String>,
    /// The argument vector that was run.
    pub argv: Vec<String>,
    /// Extra environment given at exec.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: String,
    /// Numeric user id it runs as.
    pub uid: u32,
    /// Start time, Unix milliseconds.
    pub started_at_ms: u64,
    /// Whether this is the sandbox's entrypoint.
    #[serde(default)]
    pub entrypoint: bool,
    /// Whether it runs on a pty.
    #[serde(default)]
    pub pty: bool,
    /// Set once it has exited.
    pub exit: Option<ExitStatus>,
}

/// Kind of a file-system entry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (fifo, socket, device).
    Other,
}

/// A file-system entry as seen inside the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Last path component.
    pub name: String,
    /// Absolute path inside the sandbox.
    pub path: String,
    /// Kind.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name from the sandbox's `/etc/passwd`, when known.
    pub owner: Option<String>,
    /// Group name from the sandbox's `/etc/group`, when known.
    pub group: Option<String>,
    /// Modification time, Unix nanoseconds.
    pub mtime_ns: i64,
    /// Target of a symbolic link.
    pub symlink_target: Option<String>,
}

/// What happened to a watched path.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FsEventKind {
    /// Created, or moved into place (as an atomic write does).
    Create,
    /// Written.
    Write,
    /// Removed.
    Remove,
    /// Renamed (moved away from this name).
    Rename,
    /// Permissions or owner changed.
    Chmod,
}

/// A change under a watched directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FsEvent {
    /// Path relative to the watched directory.
    pub name: String,
    /// What happened.
    pub kind: FsEventKind,
}

/// Error codes init answers with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The protocol version is not spoken.
    UnsupportedVersion,
    /// The request is malformed or a value is out of range.
    InvalidArgument,
    /// Path or user not found.
    NotFound,
    /// The path exists already.
    AlreadyExists,
    /// Permission denied.
    PermissionDenied,
    /// A directory was expected.
    NotADirectory,
    /// A non-directory was expected.
    IsADirectory,
    /// The directory is not empty.
    DirectoryNotEmpty,
    /// No space left on the sandbox's disk.
    NoSpace,
    /// No such process.
    NoSuchProcess,
    /// The process has exited (init still lists it for a while).
    ProcessExited,
    /// The program could not be started.
    SpawnFailed,
    /// Any other I/O error.
    Io,
}

/// Everything init answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `hello`.
    Hello {
        /// Protocol version in use.
        version: u32,
        /// Versions init speaks.
        supported: Vec<u32>,
        /// Init's own build version.
        init_version: String,
        /// The entrypoint, if the sandbox has one.
        entrypoint: Option<ProcInfo>,
    },
    /// A process was started or attached to.
    Started {
        /// Its pid.
        pid: u32,
    },
    /// A process ended; the last message of an exec or attach.
    Exited {
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// Answer to `list_procs`.
    Procs {
        /// The processes.
        procs: Vec<ProcInfo>,
    },
    /// The request was carried out.
    Ok,
    /// One entry (stat, make_dir, rename, write_file).
    Entry {
        /// The entry.
        entry: FileEntry,
    },
    /// A directory listing.
    Entries {
        /// The entries, excluding the directory itself.
        entries: Vec<FileEntry>,
    },
    /// Start of a file's content (`data` frames and an `end` frame follow).
    File {
        /// The file.
        entry: FileEntry,
    },
    /// A change under a watched directory.
    FsEvent {
        /// The change.
        event: FsEvent,
    },
    /// The request failed.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// What went wrong, for people.
        message: String,
    },
}

/// What init writes to its status file (descriptor `--status-fd`), replacing the content each time,
/// so the host can learn how the entrypoint ended after init itself is gone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct InitStatus {
    /// Init's pid as seen from inside (always 1 in a sandbox).
    pub init_pid: u32,
    /// The entrypoint's pid while it runs or after it exited; `None` for a sandbox without one.
    pub entrypoint_pid: Option<u32>,
    /// Set once the entrypoint has exited.
    pub entrypoint_exit: Option<ExitStatus>,
    /// Set when the entrypoint could not be started, with the reason.
    pub entrypoint_error: Option<String>,
}

/// One record of the sandbox log (descriptor `--log-fd`), one JSON object per line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogRecord {
    /// Time written, Unix microseconds.
    pub t: u64,
    /// Which stream: `out`, `err`, or `sys` for init's own messages about the entrypoint.
    pub s: LogStream,
    /// The text (invalid UTF-8 replaced; a multi-byte character is never split across records).
    pub d: String,
}

/// The stream a log record came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// The entrypoint's standard output.
    Out,
    /// The entrypoint's standard error.
    Err,
    /// Init's own messages (the entrypoint could not start, exited, was killed).
    Sys,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_through_bytes() {
        let f = Frame::json(&Envelope { v: 1, request: Request::Hello });
        let mut buf = Vec::new();
        f.write_to(&mut buf).unwrap();
        Frame::data(FrameKind::Stdout, b"hi".to_vec()).write_to(&mut buf).unwrap();
        let mut r = &buf[..];
        let back = Frame::read_from(&mut r).unwrap().unwrap();
        assert_eq!(back, f);
        let env: Envelope = back.parse_json().unwrap();
        assert_eq!(env.request, Request::Hello);
        let d = Frame::read_from(&mut r).unwrap().unwrap();
        assert_eq!((d.kind, d.payload.as_slice()), (FrameKind::Stdout, &b"hi"[..]));
        assert!(Frame::read_from(&mut r).unwrap().is_none());
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused() {
        let too_big = u32::try_from(MAX_PAYLOAD + 2).unwrap().to_le_bytes();
        assert!(Frame::parse_header([too_big[0], too_big[1], too_big[2], too_big[3], 1]).is_err());
        assert!(Frame::parse_header([2, 0, 0, 0, 99]).is_err());
        assert!(Frame::parse_header([0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn requests_have_a_stable_json_form() {
        let r = Envelope {
            v: 1,
            request: Request::Exec(ExecRequest {
                command: Some(Command::Argv(vec!["echo".into(), "hi".into()])),
                ..Default::default()
            }),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains(r#""op":"exec""#), "{s}");
        assert!(s.contains(r#""command":{"argv":["echo","hi"]}"#), "{s}");
        let sig: Envelope =
            serde_json::from_str(r#"{"v":1,"op":"signal","target":{"pid":7},"signal":15}"#).unwrap();
        assert_eq!(sig.request, Request::Signal { target: ProcSelector::Pid(7), signal: 15, group: true });
    }
}

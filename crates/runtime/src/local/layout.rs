//! Where a sandbox's state lives on the host, and its persisted record.
//!
//! ```text
//! <root>/
//!   lock                      flock: one backend per root
//!   bin/sandpit-init-<hash>   the init binary, bind-mounted read-only into sandboxes
//!   runc/                     the OCI runtime's state (--root)
//!   disk-pool/<bytes>/*.img   pre-formatted disks ready to be taken by a create
//!   sandboxes/<id>/
//!     record.json             spec, phase, pid (written atomically before each step)
//!     disk.img                sparse ext4 image: the sandbox's writable disk
//!     disk/                   its mount point: upper/ and work/ of the overlay
//!     rootfs/                 the overlay mount point
//!     bundle/config.json      OCI runtime config
//!     init.sock               init's listening socket (host side only)
//!     console.log             entrypoint output (JSON lines), bounded by hole punching
//!     status.json             init's report of the entrypoint's exit
//!     runc.err, init.pid      last OCI runtime stderr, init's host pid
//! ```

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sandpit_types::SandboxId;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::spec::{Phase, SandboxSpec, WorkloadExit};

/// Paths under the backend's root.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

/// Paths of one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxPaths {
    /// The sandbox's directory.
    pub dir: PathBuf,
    /// Its record.
    pub record: PathBuf,
    /// Disk image.
    pub disk_image: PathBuf,
    /// Disk mount point.
    pub disk: PathBuf,
    /// Overlay upper dir.
    pub upper: PathBuf,
    /// Overlay work dir.
    pub work: PathBuf,
    /// Overlay mount point.
    pub rootfs: PathBuf,
    /// OCI bundle dir.
    pub bundle: PathBuf,
    /// Init's socket.
    pub socket: PathBuf,
    /// Entrypoint log.
    pub log: PathBuf,
    /// Init's status file.
    pub status: PathBuf,
    /// Stderr of the last OCI runtime call.
    pub runtime_err: PathBuf,
    /// Pid file written by the OCI runtime.
    pub pid_file: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of all sandboxes.
    pub fn sandboxes(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    /// The OCI runtime's state root.
    pub fn runtime_root(&self) -> PathBuf {
        self.root.join("runc")
    }

    /// Directory of the init binary.
    pub fn bin(&self) -> PathBuf {
        self.root.join("bin")
    }

    /// Paths of one sandbox.
    pub fn sandbox(&self, id: &SandboxId) -> SandboxPaths {
        let dir = self.sandboxes().join(id.as_str());
        let disk = dir.join("disk");
        SandboxPaths {
            record: dir.join("record.json"),
            disk_image: dir.join("disk.img"),
            upper: disk.join("upper"),
            work: disk.join("work"),
            disk,
            rootfs: dir.join("rootfs"),
            bundle: dir.join("bundle"),
            socket: dir.join("init.sock"),
            log: dir.join("console.log"),
            status: dir.join("status.json"),
            runtime_err: dir.join("runc.err"),
            pid_file: dir.join("init.pid"),
            dir,
        }
    }

    /// IDs of the sandboxes with a directory here.
    pub fn list(&self) -> Result<Vec<SandboxId>> {
        let dir = self.sandboxes();
        let mut out: Vec<SandboxId> = std::fs::read_dir(&dir)
            .map_err(RuntimeError::io("list", &dir))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Creates a directory that other users may traverse but not list (the sandbox's mapped root
/// must reach the rootfs and init binary below it).
pub fn make_dir(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(path)
        .map_err(RuntimeError::io("create", path))
}

/// What is persisted about a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The spec it was created with.
    pub spec: SandboxSpec,
    /// Where it is.
    pub phase: Phase,
    /// The image layers it runs on, lowest first.
    pub layers: Vec<PathBuf>,
    /// The workload and init arguments, resolved from the image at create.
    pub init_args: Vec<String>,
    /// Init's environment.
    pub env: Vec<String>,
    /// Host pid of init while running.
    pub pid: Option<u32>,
    /// Start time of that pid (clock ticks since boot), to tell it from a reused pid.
    pub pid_start: Option<u64>,
    /// How the workload ended, once known.
    pub exit: Option<WorkloadExit>,
}

impl Record {
    /// Reads a record.
    pub fn load(path: &Path) -> Result<Self> {
        let b = std::fs::read(path).map_err(RuntimeError::io("read", path))?;
        serde_json::from_slice(&b).map_err(|e| RuntimeError::io("parse", path)(std::io::Error::other(e)))
    }

    /// Writes the record atomically (temp file, fsync, rename).
    pub fn store(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| RuntimeError::io("encode", path)(std::io::Error::other(e)))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(RuntimeError::io("write", &tmp))?;
        f.write_all(&bytes).map_err(RuntimeError::io("write", &tmp))?;
        f.sync_data().map_err(RuntimeError::io("sync", &tmp))?;
        std::fs::rename(&tmp, path).map_err(RuntimeError::io("rename", path))
    }
}

/// Start time (clock ticks after boot) of a host process, or `None` if it does not exist.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// Whether the process is alive (and not a zombie) and is the one that started at `start`.
pub fn process_alive(pid: u32, start: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some(close) = stat.rfind(')') else { return false };
    let mut fields = stat[close + 2..].split(' ');
    if fields.next() == Some("Z") {
        return false;
    }
    start.is_none() || process_start_time(pid) == start
}

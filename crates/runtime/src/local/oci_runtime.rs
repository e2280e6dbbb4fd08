//! Driving the OCI runtime binary (runc by default; crun or runsc by config).
//!
//! Every call is a child process; a failure is a typed error with the verb, exit status and the
//! runtime's stderr.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use sandpit_types::SandboxId;
use tokio::process::Command;

use crate::error::{Result, RuntimeError};

/// An OCI runtime binary with its state root.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    binary: PathBuf,
    root: PathBuf,
}

/// A container's state as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ContainerState {
    /// `created`, `running`, `stopped`, `paused`.
    pub status: String,
    /// Host pid of the container's init (0 when stopped).
    pub pid: u32,
}

impl OciRuntime {
    /// A runtime `binary` keeping its state under `root`.
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Self { binary: binary.into(), root: root.into() }
    }

    /// The binary's name, for messages.
    pub fn name(&self) -> String {
        self.binary.display().to_string()
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root).stdin(Stdio::null()).kill_on_drop(false);
        c
    }

    async fn output(&self, op: &'static str, mut cmd: Command) -> Result<std::process::Output> {
        let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().await.map_err(|e| {
            RuntimeError::Host { what: "OCI runtime binary", detail: format!("{}: {e}", self.name()) }
        })?;
        if !out.status.success() {
            return Err(self.failure(op, out.status, &out.stderr));
        }
        Ok(out)
    }

    fn failure(&self, op: &'static str, status: std::process::ExitStatus, stderr: &[u8]) -> RuntimeError {
        let text = String::from_utf8_lossy(stderr);
        // runc writes JSON log lines with --log-format json; plain text otherwise. Keep it short.
        let stderr: String = text.trim().chars().take(2000).collect();
        RuntimeError::OciRuntime { binary: self.name(), op, status, stderr }
    }

    /// `run --detach`: creates and starts the container; `fds` become fds 3, 4, 5… inside.
    /// The container's stdio is `/dev/null` in and `err_file` out (init points its own at
    /// `/dev/null` at once); the runtime's own error message is read back from `err_file`.
    pub async fn run_detached(
        &self,
        id: &SandboxId,
        bundle: &Path,
        pid_file: &Path,
        fds: Vec<OwnedFd>,
        err_file: &Path,
    ) -> Result<()> {
        let err = std::fs::File::create(err_file).map_err(RuntimeError::io("create", err_file))?;
        let err2 = err.try_clone().map_err(RuntimeError::io("dup", err_file))?;
        let mut cmd = self.command();
        cmd.arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg("--preserve-fds")
            .arg(fds.len().to_string())
            .arg(id.as_str())
            .stdout(Stdio::from(err))
            .stderr(Stdio::from(err2));
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        // SAFETY: the closure runs in the forked child before exec and only calls the
        // async-signal-safe fcntl(2) and dup2(2)/close(2) on descriptors it owns; the raw fds stay
        // valid because `fds` outlives the spawn below.
        unsafe {
            cmd.pre_exec(move || {
                // First move every source above the target range, so that placing one cannot
                // overwrite another that happens to sit at 3, 4 or 5.
                let mut high = Vec::with_capacity(raw.len());
                for &fd in &raw {
                    let h = libc::fcntl(fd, libc::F_DUPFD, 100);
                    if h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    high.push(h);
                }
                for (i, &h) in high.iter().enumerate() {
                    let target = 3 + i32::try_from(i).unwrap_or(0);
                    if libc::dup2(h, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(h);
                }
                Ok(())
            });
        }
        let status = cmd.status().await.map_err(|e| RuntimeError::Host {
            what: "OCI runtime binary",
            detail: format!("{}: {e}", self.name()),
        })?;
        drop(fds);
        if !status.success() {
            let stderr = std::fs::read(err_file).unwrap_or_default();
            return Err(self.failure("run", status, &stderr));
        }
        Ok(())
    }

    /// `delete --force`: kills every process of the container and removes it and its cgroup.
    /// A container that does not exist is not an error.
    pub async fn delete(&self, id: &SandboxId) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("delete").arg("--force").arg(id.as_str());
        match self.output("delete", cmd).await {
            Ok(_) => Ok(()),
            Err(RuntimeError::OciRuntime { stderr, .. }) if stderr.contains("does not exist") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `state`; `None` when the container does not exist.
    pub async fn state(&self, id: &SandboxId) -> Result<Option<ContainerState>> {
        let mut cmd = self.command();
        cmd.arg("state").arg(id.as_str());
        match self.output("state", cmd).await {
            Ok(out) => serde_json::from_slice(&out.stdout).map(Some).map_err(|e| {
                RuntimeError::InitProtocol { detail: format!("bad {} state output: {e}", self.name()) }
            }),
            Err(RuntimeError::OciRuntime { stderr, .. }) if stderr.contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// IDs of the containers under the state root (names that are not sandbox IDs are returned
    /// as they are).
    pub fn list(&self) -> Vec<String> {
        // The runtime keeps one directory per container under its root.
        std::fs::read_dir(&self.root)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

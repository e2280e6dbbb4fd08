//! CUDA MPS control daemons: one per shared GPU, started when its first share is used and stopped
//! when its last one goes. The daemon's defaults are set to the share, so each client process is
//! capped at the share's memory and SM threads:
//!
//! ```text
//! CUDA_VISIBLE_DEVICES=<uuid> CUDA_MPS_PIPE_DIRECTORY=<dir>/pipe CUDA_MPS_LOG_DIRECTORY=<dir>/log \
//!     nvidia-cuda-mps-control -d
//! echo "set_default_device_pinned_mem_limit 0 <MiB>M"  | nvidia-cuda-mps-control
//! echo "set_default_active_thread_percentage <share>" | nvidia-cuda-mps-control
//! echo quit | nvidia-cuda-mps-control          (when the last sandbox using the GPU goes)
//! ```
//!
//! All shares of one GPU are of one size (the scheduler's rule), so one set of defaults fits every
//! client. Daemons outlive a restart of sandpit; [`MpsManager::adopt`] rebuilds who uses which.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sandpit_types::SandboxId;
use tokio::io::AsyncWriteExt;

use crate::error::{Result, RuntimeError};
use crate::spec::GpuAttachment;

/// Manages the MPS daemons of this host.
#[derive(Debug)]
pub struct MpsManager {
    root: PathBuf,
    control: PathBuf,
    users: Mutex<HashMap<String, HashSet<SandboxId>>>,
}

impl MpsManager {
    /// Daemons keep their pipe and log directories under `root`; `control` is the
    /// `nvidia-cuda-mps-control` binary.
    pub fn new(root: impl Into<PathBuf>, control: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), control: control.into(), users: Mutex::new(HashMap::new()) }
    }

    /// The pipe directory of a GPU's daemon.
    pub fn pipe_dir(&self, uuid: &str) -> PathBuf {
        self.root.join(sanitize(uuid)).join("pipe")
    }

    fn log_dir(&self, uuid: &str) -> PathBuf {
        self.root.join(sanitize(uuid)).join("log")
    }

    async fn run(&self, uuid: &str, args: &[&str], input: Option<&str>) -> Result<()> {
        let mut cmd = tokio::process::Command::new(&self.control);
        cmd.args(args)
            .env("CUDA_VISIBLE_DEVICES", uuid)
            .env("CUDA_MPS_PIPE_DIRECTORY", self.pipe_dir(uuid))
            .env("CUDA_MPS_LOG_DIRECTORY", self.log_dir(uuid))
            .stdin(if input.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| RuntimeError::Host {
            what: "CUDA MPS",
            detail: format!("{}: {e}", self.control.display()),
        })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).await.map_err(RuntimeError::io("write to", &self.control))?;
            stdin.write_all(b"\n").await.map_err(RuntimeError::io("write to", &self.control))?;
        }
        let out = child.wait_with_output().await.map_err(RuntimeError::io("wait for", &self.control))?;
        if !out.status.success() {
            return Err(RuntimeError::Command {
                program: "nvidia-cuda-mps-control",
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Makes sure `gpu`'s daemon runs with defaults equal to its share and records `sandbox` as
    /// a user; returns the pipe directory to mount into the sandbox.
    pub async fn attach(&self, sandbox: SandboxId, gpu: &GpuAttachment) -> Result<PathBuf> {
        let first = {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            let set = users.entry(gpu.uuid.clone()).or_default();
            let first = set.is_empty();
            set.insert(sandbox);
            first
        };
        let pipe = self.pipe_dir(&gpu.uuid);
        if first && !daemon_running(&pipe) {
            let started = async {
                for d in [pipe.clone(), self.log_dir(&gpu.uuid)] {
                    std::fs::create_dir_all(&d).map_err(RuntimeError::io("create", &d))?;
                    // Sandbox root is an unprivileged host uid and must reach the pipes.
                    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                        .map_err(RuntimeError::io("chmod", &d))?;
                }
                self.run(&gpu.uuid, &["-d"], None).await?;
                let mib = gpu.memory_limit.bytes() / (1 << 20);
                self.run(&gpu.uuid, &[], Some(&format!("set_default_device_pinned_mem_limit 0 {mib}M")))
                    .await?;
                self.run(
                    &gpu.uuid,
                    &[],
                    Some(&format!("set_default_active_thread_percentage {}", gpu.fraction)),
                )
                .await
            }
            .await;
            if let Err(e) = started {
                self.users
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(gpu.uuid.clone())
                    .or_default()
                    .remove(&sandbox);
                return Err(e);
            }
            tracing::info!(gpu = %gpu.uuid, share = gpu.fraction, "started the GPU's MPS control daemon");
        }
        Ok(pipe)
    }

    /// Records that `sandbox` no longer uses `gpu`; stops the daemon when nobody does.
    pub async fn detach(&self, sandbox: SandboxId, gpu: &GpuAttachment) -> Result<()> {
        let last = {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            let set = users.entry(gpu.uuid.clone()).or_default();
            set.remove(&sandbox);
            set.is_empty()
        };
        if last && daemon_running(&self.pipe_dir(&gpu.uuid)) {
            self.run(&gpu.uuid, &[], Some("quit")).await?;
            tracing::info!(gpu = %gpu.uuid, "stopped the GPU's MPS control daemon");
        }
        Ok(())
    }

    /// Records a sandbox found running after a restart as a user of its shared GPUs.
    pub fn adopt(&self, sandbox: SandboxId, gpus: &[GpuAttachment]) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for g in gpus.iter().filter(|g| g.fraction < 100 && !g.simulated) {
            users.entry(g.uuid.clone()).or_default().insert(sandbox);
        }
    }

    /// Sandboxes using each GPU's daemon.
    pub fn users(&self) -> HashMap<String, HashSet<SandboxId>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Whether a control daemon listens in `pipe` (it creates its `control` pipe there).
fn daemon_running(pipe: &Path) -> bool {
    pipe.join("control").exists()
}

fn sanitize(uuid: &str) -> String {
    uuid.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

//! The local backend: sandboxes as OCI containers on this host.
//!
//! ```text
//!              create                     pause                      resume
//!  (nothing) ──────────► Creating ─► Running ──► Pausing ─► Paused ──► Resuming ─► Running
//!                           │           │                     │           │ (failure: back
//!                           │ failure:  │ workload exits      │           │  to Paused)
//!                           │ undone    ▼ (no keep_running)   │
//!                           ▼        Exited                   │
//!                       (nothing)       │ destroy             │ destroy
//!                                       ▼                     ▼
//!                        Deleting ─► (nothing)  ◄─────────────┘   (destroy from any phase)
//! ```
//!
//! Each intermediate phase is written to `record.json` before its work starts. After a crash,
//! [`LocalBackend::recover`] finds the phase and finishes (`Pausing`, `Deleting`) or undoes
//! (`Creating`, `Resuming`) the work, so every sandbox ends in a phase that matches the host.

mod disk;
mod host;
mod layout;
pub mod oci;
mod oci_runtime;
mod overlay;
pub mod seccomp;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sandpit_image::{IdShift, ImageSelector, ImageStore};
use sandpit_init::protocol::{InitStatus, Response};
use sandpit_types::SandboxId;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

pub use host::{CgroupVersion, HostInfo};
pub use layout::{Layout, SandboxPaths};
pub use oci_runtime::OciRuntime;

use crate::backend::Backend;
use crate::error::{Result, RuntimeError};
use crate::failpoint;
use crate::init_client::InitClient;
use crate::logs::{self, LogChunk};
use crate::spec::{Phase, RecoveryReport, SandboxSpec, SandboxStatus, WorkloadExit};
use layout::{Record, make_dir, process_alive, process_start_time};

/// The init binary built for sandboxes, embedded at build time.
static EMBEDDED_INIT: &[u8] = include_bytes!(env!("SANDPIT_INIT_PATH"));

/// `PATH` for images that do not set one.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long a new container's init has to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest root path: sockets live below it and a unix socket path has at most 107 bytes.
const MAX_ROOT_LEN: usize = 64;

/// Configuration of the local backend.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// State directory (sandboxes, OCI runtime state, init binary).
    pub root: PathBuf,
    /// The OCI runtime binary (`runc`, `crun`, `runsc`), looked up in `PATH` when bare.
    pub oci_runtime: PathBuf,
    /// cgroup under which each sandbox gets `<parent>/<id>`.
    pub cgroup_parent: String,
    /// Use this init binary instead of the embedded one.
    pub init_binary: Option<PathBuf>,
    /// Pre-formatted disks kept ready per disk size (0: format at each create).
    pub disk_pool: usize,
    /// The CUDA MPS control binary, for fractional GPUs.
    pub mps_control: PathBuf,
    /// The NVIDIA driver's files to inject; detected on the host when `None`.
    pub nvidia: Option<crate::gpu::DriverFiles>,
}

impl LocalConfig {
    /// Defaults under `root`: runc, cgroup parent `sandpit`, the embedded init, 4 ready disks.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            oci_runtime: "runc".into(),
            cgroup_parent: "sandpit".into(),
            init_binary: None,
            disk_pool: 4,
            mps_control: "nvidia-cuda-mps-control".into(),
            nvidia: None,
        }
    }
}

/// Runs sandboxes on this host with an OCI runtime.
#[derive(Debug)]
pub struct LocalBackend {
    cfg: LocalConfig,
    layout: Layout,
    images: Arc<ImageStore>,
    ids: IdShift,
    oci: OciRuntime,
    host: HostInfo,
    init_binary: PathBuf,
    disks: Arc<disk::DiskPool>,
    nvidia: Option<crate::gpu::DriverFiles>,
    mps: crate::gpu::MpsManager,
    locks: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
    /// Held (flock) for the backend's life: one backend per root.
    _root_lock: File,
}

impl LocalBackend {
    /// Opens the backend at `cfg.root` with the image store whose layers it runs. Call
    /// [`Backend::recover`] next.
    pub fn open(cfg: LocalConfig, images: Arc<ImageStore>) -> Result<Self> {
        let root = &cfg.root;
        if !root.is_absolute() || root.as_os_str().len() > MAX_ROOT_LEN {
            return Err(RuntimeError::InvalidSpec {
                field: "root",
                reason: format!(
                    "must be an absolute path of at most {MAX_ROOT_LEN} bytes: {}",
                    root.display()
                ),
            });
        }
        let layout = Layout::new(root);
        // Sandbox root is an unprivileged host uid; the OCI runtime mounts the rootfs and init from
        // inside the user namespace, so every directory above them must be searchable by others.
        for dir in root.ancestors().skip(1) {
            if let Ok(meta) = std::fs::metadata(dir)
                && meta.permissions().mode() & 0o001 == 0
            {
                return Err(RuntimeError::Host {
                    what: "state directory",
                    detail: format!(
                        "{} (above {}) is not searchable by other users (mode {:o}); sandboxes run as an \
                         unprivileged host uid that must traverse it: `chmod o+x` it or choose another directory",
                        dir.display(),
                        root.display(),
                        meta.permissions().mode() & 0o7777
                    ),
                });
            }
        }
        for d in [root.clone(), layout.sandboxes(), layout.runtime_root(), layout.bin()] {
            make_dir(&d)?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711))
                .map_err(RuntimeError::io("chmod", &d))?;
        }
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(RuntimeError::io("open", &lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
            RuntimeError::Host {
                what: "state directory",
                detail: format!("{} is in use by another sandpit", root.display()),
            }
        })?;
        let init_binary = install_init(&layout.bin(), cfg.init_binary.as_deref())?;
        // Containers started through the OCI runtime are re-parented to this process when the
        // runtime exits, so their inits can be reaped here as soon as they end.
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .map_err(|e| RuntimeError::Host { what: "child subreaper", detail: e.to_string() })?;
        let oci = OciRuntime::new(&cfg.oci_runtime, layout.runtime_root());
        let ids = images.id_shift();
        let disks = Arc::new(disk::DiskPool::open(root.join("disk-pool"), cfg.disk_pool)?);
        let nvidia = cfg.nvidia.clone().or_else(crate::gpu::DriverFiles::detect);
        let mps = crate::gpu::MpsManager::new(root.join("mps"), cfg.mps_control.clone());
        Ok(Self {
            layout,
            images,
            ids,
            oci,
            host: HostInfo::detect(),
            init_binary,
            disks,
            nvidia,
            mps,
            locks: Mutex::new(HashMap::new()),
            _root_lock: lock,
            cfg,
        })
    }

    /// The layout of the state directory.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Facts about the host.
    pub fn host(&self) -> &HostInfo {
        &self.host
    }

    /// The cgroup parent under which sandboxes get their cgroups.
    pub fn cgroup_parent(&self) -> &str {
        &self.cfg.cgroup_parent
    }

    fn lock(&self, id: &SandboxId) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(*id).or_default().clone()
    }

    fn load(&self, id: &SandboxId) -> Result<(SandboxPaths, Record)> {
        let paths = self.layout.sandbox(id);
        match Record::load(&paths.record) {
            Ok(r) => Ok((paths, r)),
            Err(RuntimeError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(RuntimeError::NotFound(*id))
            }
            Err(e) => Err(e),
        }
    }

    fn validate(spec: &SandboxSpec) -> Result<()> {
        let bad = |field, reason: &str| Err(RuntimeError::InvalidSpec { field, reason: reason.into() });
        if spec.cpu.0 < 10 {
            return bad("cpu", "at least 10m");
        }
        if spec.memory.bytes() < 16 << 20 {
            return bad("memory", "at least 16Mi");
        }
        if spec.pids_limit < 16 {
            return bad("pids_limit", "at least 16");
        }
        if spec.disk.bytes() < 64 << 20 {
            return bad("disk", "at least 64Mi");
        }
        if spec.log_max_bytes < 64 << 10 {
            return bad("log_max_bytes", "at least 64Ki");
        }
        sandpit_types::EnvVars::new(spec.env.clone())
            .map_err(|e| RuntimeError::InvalidSpec { field: "env", reason: e.to_string() })?;
        Ok(())
    }

    /// Mounts the disk and rootfs, writes the bundle and starts the container; fills in the
    /// record's pid. `fresh` creates the disk first.
    async fn start_container(&self, paths: &SandboxPaths, rec: &mut Record, fresh: bool) -> Result<()> {
        let spec = &rec.spec;
        if fresh {
            if !self.disks.take(spec.disk, &paths.disk_image) {
                disk::create(&paths.disk_image, spec.disk).await?;
            }
            let (pool, size) = (self.disks.clone(), spec.disk);
            tokio::spawn(async move { pool.refill(size).await });
        }
        let (p, layers, ids) = (paths.clone(), rec.layers.clone(), self.ids);
        blocking(move || {
            make_dir(&p.disk)?;
            disk::mount(&p.disk_image, &p.disk)?;
            if fresh {
                std::fs::create_dir(&p.upper).map_err(RuntimeError::io("create", &p.upper))?;
                std::os::unix::fs::chown(&p.upper, Some(ids.host_base()), Some(ids.host_base()))
                    .map_err(RuntimeError::io("chown", &p.upper))?;
                std::fs::set_permissions(&p.upper, std::fs::Permissions::from_mode(0o755))
                    .map_err(RuntimeError::io("chmod", &p.upper))?;
                std::fs::create_dir(&p.work).map_err(RuntimeError::io("create", &p.work))?;
            }
            failpoint::hit("start.after_disk");
            make_dir(&p.rootfs)?;
            overlay::mount(
                &overlay::OverlayDirs { layers, upper: p.upper.clone(), work: p.work.clone() },
                &p.rootfs,
            )
        })
        .await?;
        failpoint::hit("start.after_rootfs");

        let mut pipes = HashMap::new();
        for g in rec.spec.gpus.iter().filter(|g| g.fraction < 100 && !g.simulated) {
            pipes.insert(g.uuid.clone(), self.mps.attach(spec.id, g).await?);
        }
        let gpu =
            crate::gpu::inject::fragment(&spec.gpus, self.nvidia.as_ref(), &|g| pipes.get(&g.uuid).cloned())?;
        let params = oci::BundleParams {
            rootfs: paths.rootfs.clone(),
            init_binary: self.init_binary.clone(),
            init_args: rec.init_args.clone(),
            env: rec.env.clone(),
            hostname: spec.id.to_string(),
            cpu: spec.cpu,
            memory: spec.memory,
            limit_swap: self.host.swap_accounting,
            pids: spec.pids_limit,
            ids: self.ids,
            cgroups_path: PathBuf::from(format!("/{}/{}", self.cfg.cgroup_parent, spec.id)),
            nofile: oci::nofile_limit(),
            gpu,
        };
        let config = oci::to_json(&oci::build_spec(&params)?)?;
        make_dir(&paths.bundle)?;
        write_file(&paths.bundle.join("config.json"), &config)?;

        let fds = open_init_fds(paths)?;
        self.oci.run_detached(&spec.id, &paths.bundle, &paths.pid_file, fds, &paths.runtime_err).await?;
        let pid_text =
            std::fs::read_to_string(&paths.pid_file).map_err(RuntimeError::io("read", &paths.pid_file))?;
        let pid: u32 = pid_text.trim().parse().map_err(|_| RuntimeError::InitProtocol {
            detail: format!("bad pid file content {pid_text:?}"),
        })?;
        rec.pid = Some(pid);
        rec.pid_start = process_start_time(pid);
        rec.exit = None;
        failpoint::hit("start.after_runtime");
        Ok(())
    }

    /// Stops the container and unmounts everything of the sandbox; keeps its files.
    async fn stop_container(&self, id: &SandboxId, paths: &SandboxPaths) -> Result<()> {
        // Hold the container init by pidfd, kill it (which ends every process of its pid
        // namespace) and wait for that before asking the OCI runtime to delete the container:
        // `runc delete --force` would otherwise poll for the exit in 100 ms steps. Then reap it:
        // "no process remains" includes the zombie.
        let init = std::fs::read_to_string(&paths.pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .filter(|pid| process_in_cgroup(*pid, id.as_str()))
            .and_then(|pid| pidfd(pid).map(|fd| (pid, fd)));
        let init = match init {
            Some((pid, fd)) => Some((pid, kill_and_wait(pid, fd).await)),
            None => None,
        };
        // The runtime keeps a state directory per container; without one there is nothing to
        // delete (and no need to run the binary).
        if self.layout.runtime_root().join(id.as_str()).exists() {
            self.oci.delete(id).await?;
        }
        if let Some((pid, Some(afd))) = init {
            reap(pid, afd).await;
        }
        if let Ok(rec) = Record::load(&paths.record) {
            for g in rec.spec.gpus.iter().filter(|g| g.fraction < 100 && !g.simulated) {
                if let Err(e) = self.mps.detach(*id, g).await {
                    warn!(sandbox_id = %id, gpu = %g.uuid, error = %e, "could not release the GPU's MPS daemon");
                }
            }
        }
        let p = paths.clone();
        blocking(move || {
            for m in overlay::mounts_under(&p.dir) {
                disk::unmount(&m)?;
            }
            for f in [&p.socket, &p.pid_file] {
                remove_file(f)?;
            }
            Ok(())
        })
        .await?;
        // The OCI runtime removes the cgroup it made; remove what a crash may have left.
        for dir in self.host.cgroup_dirs(&self.cfg.cgroup_parent, id.as_str()) {
            host::remove_cgroup(&dir);
        }
        Ok(())
    }

    /// Waits for a new container's init to answer. `Ok(false)` when init is already gone (the
    /// workload exited at once without `keep_running`).
    async fn wait_ready(&self, id: &SandboxId, paths: &SandboxPaths, rec: &Record) -> Result<bool> {
        let client = InitClient::new(*id, &paths.socket);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, client.hello()).await {
                Ok(Ok(Response::Hello { .. })) => return Ok(true),
                Ok(Ok(other)) => {
                    return Err(RuntimeError::InitProtocol {
                        detail: format!("expected hello, got {other:?}"),
                    });
                }
                Ok(Err(e)) => {
                    if !rec.pid.is_some_and(|p| process_alive(p, rec.pid_start)) {
                        return Ok(false);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => {
                    return Err(RuntimeError::Unreachable {
                        id: *id,
                        source: std::io::Error::new(std::io::ErrorKind::TimedOut, "init did not answer"),
                    });
                }
            }
        }
    }

    /// Reads how the workload ended from init's status file.
    fn read_exit(paths: &SandboxPaths) -> WorkloadExit {
        match std::fs::read(&paths.status).ok().and_then(|b| serde_json::from_slice::<InitStatus>(&b).ok()) {
            Some(s) => WorkloadExit { status: s.entrypoint_exit, error: s.entrypoint_error },
            None => WorkloadExit {
                status: None,
                error: Some("init ended without reporting an exit status".into()),
            },
        }
    }

    /// A running sandbox whose init is gone: record the exit and release its container and
    /// mounts. Caller holds the sandbox's lock.
    async fn reap_exited(&self, id: &SandboxId, paths: &SandboxPaths, rec: &mut Record) -> Result<()> {
        rec.exit = Some(Self::read_exit(paths));
        self.stop_container(id, paths).await?;
        rec.phase = Phase::Exited;
        rec.pid = None;
        rec.pid_start = None;
        rec.store(&paths.record)?;
        info!(sandbox_id = %id, exit = ?rec.exit, "sandbox workload exited");
        Ok(())
    }

    /// The status of a record, reaping a dead container first. Caller holds the lock.
    async fn refresh(&self, id: &SandboxId, paths: &SandboxPaths, rec: &mut Record) -> Result<SandboxStatus> {
        if rec.phase == Phase::Running && !rec.pid.is_some_and(|p| process_alive(p, rec.pid_start)) {
            self.reap_exited(id, paths, rec).await?;
        }
        Ok(SandboxStatus { id: *id, phase: rec.phase, pid: rec.pid, exit: rec.exit.clone() })
    }

    async fn create_locked(&self, spec: SandboxSpec) -> Result<SandboxStatus> {
        let id = spec.id;
        let paths = self.layout.sandbox(&id);
        if paths.dir.exists() {
            return Err(RuntimeError::AlreadyExists(id));
        }
        let (layers, init_args, env) = {
            let (s, images) = (spec.clone(), self.images.clone());
            blocking(move || resolve(&images, &s)).await?
        };
        make_dir(&paths.dir)?;
        let mut rec = Record {
            spec,
            phase: Phase::Creating,
            layers,
            init_args,
            env,
            pid: None,
            pid_start: None,
            exit: None,
        };
        rec.store(&paths.record)?;
        failpoint::hit("create.after_record");
        let started = async {
            self.start_container(&paths, &mut rec, true).await?;
            rec.phase = Phase::Running;
            rec.store(&paths.record)?;
            failpoint::hit("create.after_running");
            self.wait_ready(&id, &paths, &rec).await
        }
        .await;
        match started {
            Ok(_) => self.refresh(&id, &paths, &mut rec).await,
            Err(e) => {
                warn!(sandbox_id = %id, error = %e, "create failed; removing what was made");
                if let Err(undo) = self.remove_all(&id, &paths).await {
                    warn!(sandbox_id = %id, error = %undo, "could not undo a failed create");
                }
                Err(e)
            }
        }
    }

    /// Removes everything of a sandbox. Idempotent.
    async fn remove_all(&self, id: &SandboxId, paths: &SandboxPaths) -> Result<()> {
        self.stop_container(id, paths).await?;
        failpoint::hit("delete.after_stop");
        let dir = paths.dir.clone();
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io("remove", &dir)(e)),
        })
        .await
    }

    /// Recovers one sandbox. Caller holds its lock.
    async fn recover_one(&self, id: &SandboxId, report: &mut RecoveryReport) -> Result<()> {
        let paths = self.layout.sandbox(id);
        let mut rec = match Record::load(&paths.record) {
            Ok(r) => r,
            Err(e) => {
                // A directory without a readable record was never past the first step of create.
                warn!(sandbox_id = %id, error = %e, "sandbox without a readable record; removing it");
                self.remove_all(id, &paths).await?;
                report.discarded.push(*id);
                return Ok(());
            }
        };
        match rec.phase {
            Phase::Creating => {
                self.remove_all(id, &paths).await?;
                report.discarded.push(*id);
            }
            Phase::Deleting => {
                self.remove_all(id, &paths).await?;
                report.deleted.push(*id);
            }
            Phase::Pausing => {
                self.stop_container(id, &paths).await?;
                rec.phase = Phase::Paused;
                rec.pid = None;
                rec.pid_start = None;
                rec.store(&paths.record)?;
                report.paused.push(*id);
            }
            Phase::Resuming => {
                self.stop_container(id, &paths).await?;
                rec.phase = Phase::Paused;
                rec.pid = None;
                rec.pid_start = None;
                rec.store(&paths.record)?;
                report.rolled_back.push(*id);
            }
            Phase::Running => {
                let alive = rec.pid.is_some_and(|p| process_alive(p, rec.pid_start));
                if alive && paths.socket.exists() {
                    self.mps.adopt(*id, &rec.spec.gpus);
                    report.adopted.push(*id);
                } else if alive {
                    // Running, but its socket is gone: nothing can reach it; restart is the
                    // caller's business, so stop it cleanly as an exit.
                    self.reap_exited(id, &paths, &mut rec).await?;
                    report.exited.push(*id);
                } else {
                    self.reap_exited(id, &paths, &mut rec).await?;
                    report.exited.push(*id);
                }
            }
            Phase::Paused | Phase::Exited => {
                // Nothing may run or stay mounted.
                if self.oci.state(id).await?.is_some() || !overlay::mounts_under(&paths.dir).is_empty() {
                    self.stop_container(id, &paths).await?;
                    report.strays_removed.push(format!("container/mounts of {} sandbox {id}", rec.phase));
                }
            }
        }
        Ok(())
    }
}

/// Resolves the workload and environment from the image and the spec.
fn resolve(images: &ImageStore, spec: &SandboxSpec) -> Result<(Vec<PathBuf>, Vec<String>, Vec<String>)> {
    let selector: ImageSelector = spec.image.parse()?;
    let image = images.get(&selector)?;
    let layers = images.layer_dirs(&image)?;
    let cfg = &image.config;
    let argv: Vec<String> = match (&spec.entrypoint, &spec.cmd) {
        (Some(ep), Some(cmd)) => ep.iter().chain(cmd).cloned().collect(),
        // A new entrypoint drops the image's cmd, as in Docker.
        (Some(ep), None) => ep.clone(),
        (None, Some(cmd)) => cfg.entrypoint.iter().chain(cmd).cloned().collect(),
        (None, None) => cfg.entrypoint.iter().chain(&cfg.cmd).cloned().collect(),
    };
    let mut env: Vec<String> = Vec::new();
    if !cfg.env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    for e in &cfg.env {
        let name = e.split('=').next().unwrap_or_default();
        if !spec.env.contains_key(name) {
            env.push(e.clone());
        }
    }
    env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    let mut args = vec![
        "--listen-fd".to_string(),
        "3".into(),
        "--log-fd".into(),
        "4".into(),
        "--status-fd".into(),
        "5".into(),
        "--log-max-bytes".into(),
        spec.log_max_bytes.to_string(),
    ];
    if spec.keep_running {
        args.push("--keep-running".into());
    }
    if let Some(u) = spec.user.clone().or_else(|| cfg.user.clone().filter(|u| !u.is_empty())) {
        args.extend(["--user".into(), u]);
    }
    if let Some(w) = spec.workdir.clone().or_else(|| cfg.working_dir.clone().filter(|w| !w.is_empty())) {
        args.extend(["--cwd".into(), w]);
    }
    args.push("--".into());
    args.extend(argv);
    Ok((layers, args, env))
}

#[async_trait]
impl Backend for LocalBackend {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxStatus> {
        Self::validate(&spec)?;
        let lock = self.lock(&spec.id);
        let _g = lock.lock().await;
        self.create_locked(spec).await
    }

    async fn pause(&self, id: &SandboxId) -> Result<()> {
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let (paths, mut rec) = self.load(id)?;
        self.refresh(id, &paths, &mut rec).await?;
        if rec.phase != Phase::Running {
            return Err(RuntimeError::WrongState { id: *id, op: "pause", phase: rec.phase });
        }
        rec.phase = Phase::Pausing;
        rec.store(&paths.record)?;
        failpoint::hit("pause.after_record");
        self.stop_container(id, &paths).await?;
        failpoint::hit("pause.after_stop");
        rec.phase = Phase::Paused;
        rec.pid = None;
        rec.pid_start = None;
        rec.store(&paths.record)?;
        info!(sandbox_id = %id, "sandbox paused");
        Ok(())
    }

    async fn resume(&self, id: &SandboxId, gpus: Vec<crate::spec::GpuAttachment>) -> Result<SandboxStatus> {
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let (paths, mut rec) = self.load(id)?;
        if rec.phase != Phase::Paused {
            return Err(RuntimeError::WrongState { id: *id, op: "resume", phase: rec.phase });
        }
        rec.spec.gpus = gpus;
        rec.phase = Phase::Resuming;
        rec.store(&paths.record)?;
        failpoint::hit("resume.after_record");
        let started = async {
            self.start_container(&paths, &mut rec, false).await?;
            rec.phase = Phase::Running;
            rec.store(&paths.record)?;
            self.wait_ready(id, &paths, &rec).await
        }
        .await;
        match started {
            Ok(_) => {
                info!(sandbox_id = %id, "sandbox resumed");
                self.refresh(id, &paths, &mut rec).await
            }
            Err(e) => {
                warn!(sandbox_id = %id, error = %e, "resume failed; back to paused");
                self.stop_container(id, &paths).await?;
                rec.phase = Phase::Paused;
                rec.pid = None;
                rec.pid_start = None;
                rec.store(&paths.record)?;
                Err(e)
            }
        }
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let paths = self.layout.sandbox(id);
        if let Ok(mut rec) = Record::load(&paths.record) {
            rec.phase = Phase::Deleting;
            rec.store(&paths.record)?;
        }
        failpoint::hit("delete.after_record");
        self.remove_all(id, &paths).await?;
        drop(_g);
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        info!(sandbox_id = %id, "sandbox deleted");
        Ok(())
    }

    async fn status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let (paths, mut rec) = self.load(id)?;
        self.refresh(id, &paths, &mut rec).await
    }

    async fn list(&self) -> Result<Vec<SandboxStatus>> {
        let mut out = Vec::new();
        for id in self.layout.list()? {
            match self.status(&id).await {
                Ok(s) => out.push(s),
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn wait_exit(&self, id: &SandboxId) -> Result<WorkloadExit> {
        loop {
            let (paths, rec) = self.load(id)?;
            match rec.phase {
                Phase::Exited => {
                    return Ok(rec.exit.unwrap_or(WorkloadExit { status: None, error: None }));
                }
                Phase::Running => {
                    if let Some(pid) = rec.pid {
                        wait_for_process(pid, rec.pid_start).await;
                    }
                    let lock = self.lock(id);
                    let _g = lock.lock().await;
                    let (paths, mut rec) = self.load(id)?;
                    self.refresh(id, &paths, &mut rec).await?;
                    let _ = paths;
                }
                phase => {
                    let _ = paths;
                    return Err(RuntimeError::WrongState { id: *id, op: "wait for", phase });
                }
            }
        }
    }

    async fn init(&self, id: &SandboxId) -> Result<InitClient> {
        let (paths, rec) = self.load(id)?;
        if rec.phase != Phase::Running {
            return Err(RuntimeError::WrongState { id: *id, op: "reach", phase: rec.phase });
        }
        Ok(InitClient::new(*id, paths.socket))
    }

    async fn read_logs(&self, id: &SandboxId, offset: u64, max_bytes: usize) -> Result<LogChunk> {
        let (paths, _) = self.load(id)?;
        blocking(move || logs::read(&paths.log, offset, max_bytes)).await
    }

    async fn recover(&self) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let known = self.layout.list()?;
        for id in &known {
            let lock = self.lock(id);
            let _g = lock.lock().await;
            self.recover_one(id, &mut report).await?;
        }
        // Containers with no sandbox directory.
        for name in self.oci.list() {
            if let Ok(id) = name.parse::<SandboxId>()
                && !self.layout.sandbox(&id).dir.exists()
            {
                self.oci.delete(&id).await?;
                report.strays_removed.push(format!("container {name}"));
            }
        }
        // Mounts of sandboxes that are not running, and of directories that no longer exist.
        for m in overlay::mounts_under(&self.layout.sandboxes()) {
            let Ok(rel) = m.strip_prefix(self.layout.sandboxes()) else { continue };
            let id =
                rel.components().next().and_then(|c| c.as_os_str().to_str()).and_then(|s| s.parse().ok());
            let running = id.is_some_and(|id: SandboxId| {
                Record::load(&self.layout.sandbox(&id).record).is_ok_and(|r| r.phase == Phase::Running)
            });
            if !running {
                disk::unmount(&m)?;
                report.strays_removed.push(format!("mount {}", m.display()));
            }
        }
        for dev in disk::detach_stray_loops(&self.layout.sandboxes()) {
            report.strays_removed.push(format!("loop device {dev}"));
        }
        // cgroups of sandboxes that do not run.
        for parent in self.host.cgroup_parents(&self.cfg.cgroup_parent) {
            let Ok(children) = std::fs::read_dir(&parent) else { continue };
            for c in children.flatten().filter(|c| c.path().is_dir()) {
                let name = c.file_name().to_string_lossy().into_owned();
                let running = name.parse::<SandboxId>().is_ok_and(|id| {
                    Record::load(&self.layout.sandbox(&id).record).is_ok_and(|r| r.phase == Phase::Running)
                });
                if !running && host::remove_cgroup(&c.path()) {
                    report.strays_removed.push(format!("cgroup {}", c.path().display()));
                }
            }
        }
        info!(?report, "recovery finished");
        Ok(report)
    }
}

/// A pidfd for `pid`, if it exists.
fn pidfd(pid: u32) -> Option<OwnedFd> {
    let p = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
}

/// Whether host process `pid` is in a cgroup whose path names `name` (a sandbox's).
fn process_in_cgroup(pid: u32, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|cg| cg.contains(name))
}

/// Sends SIGKILL through the pidfd and waits (a bounded time) for the process to exit. Returns
/// the registered pidfd for reaping, or `None` if it could not be watched.
async fn kill_and_wait(pid: u32, fd: OwnedFd) -> Option<tokio::io::unix::AsyncFd<OwnedFd>> {
    let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
    // SAFETY: `fd` is an owned pidfd handed to the AsyncFd; nothing else closes it meanwhile.
    let afd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .ok()?;
    if tokio::time::timeout(Duration::from_secs(5), afd.readable()).await.is_err() {
        warn!(pid, "container init did not exit after SIGKILL");
    }
    Some(afd)
}

/// Reaps an exited container init. The backend is the child subreaper of the containers it
/// starts, so it is normally their parent; after a restart an adopted container's parent is the
/// host's init, and then this waits (a bounded time) for that to reap it.
async fn reap(pid: u32, afd: tokio::io::unix::AsyncFd<OwnedFd>) {
    use rustix::process::{WaitId, WaitIdOptions, waitid};
    if waitid(WaitId::PidFd(afd.get_ref().as_fd()), WaitIdOptions::EXITED | WaitIdOptions::NOHANG).is_err() {
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Waits until a host process has exited (pidfd; returns at once if it is already gone or is
/// not the process that started at `start`).
async fn wait_for_process(pid: u32, start: Option<u64>) {
    let Some(p) = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(0)) else { return };
    let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) else { return };
    if !process_alive(pid, start) {
        return;
    }
    // SAFETY: `fd` is an owned pidfd that the AsyncFd takes over; nothing else closes or
    // replaces it while registered.
    match unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => {
            while process_alive(pid, start) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs blocking host work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Host { what: "blocking task", detail: e.to_string() })?
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(RuntimeError::io("write", path))?;
    f.write_all(bytes).map_err(RuntimeError::io("write", path))
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::io("remove", path)(e)),
    }
}

/// The listening socket, log and status files that init gets as fds 3, 4 and 5.
fn open_init_fds(paths: &SandboxPaths) -> Result<Vec<OwnedFd>> {
    remove_file(&paths.socket)?;
    let listener = std::os::unix::net::UnixListener::bind(&paths.socket)
        .map_err(RuntimeError::io("listen on", &paths.socket))?;
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(RuntimeError::io("chmod", &paths.socket))?;
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&paths.log)
        .map_err(RuntimeError::io("open", &paths.log))?;
    let status = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&paths.status)
        .map_err(RuntimeError::io("open", &paths.status))?;
    Ok(vec![listener.into(), log.into(), status.into()])
}

/// Installs the init binary (embedded, or `override_path`) under `bin/` by content hash.
fn install_init(bin_dir: &Path, override_path: Option<&Path>) -> Result<PathBuf> {
    let bytes = match override_path {
        Some(p) => std::fs::read(p).map_err(RuntimeError::io("read init binary", p))?,
        None => EMBEDDED_INIT.to_vec(),
    };
    let hash = hex::encode(&Sha256::digest(&bytes)[..6]);
    let path = bin_dir.join(format!("sandpit-init-{hash}"));
    if !path.exists() {
        let tmp = bin_dir.join(format!(".sandpit-init-{hash}.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o555)
            .open(&tmp)
            .map_err(RuntimeError::io("write", &tmp))?;
        f.write_all(&bytes).map_err(RuntimeError::io("write", &tmp))?;
        f.sync_all().map_err(RuntimeError::io("sync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(RuntimeError::io("rename", &path))?;
    }
    Ok(path)
}

//! Shared set-up of the runtime's integration tests: a test image built from Debian's
//! busybox-static plus the static `sandpit-probe`, and a backend in a fresh temporary root.
//! These tests need root, runc, umoci and busybox-static (see `.ci/run`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sandpit_image::testkit::{self, OciLayout};
use sandpit_image::{IdShift, ImageReference, ImageStore};
use sandpit_init::protocol::{Command, ExecRequest};
use sandpit_runtime::{Backend, ExecOutcome, LocalBackend, LocalConfig, SandboxSpec};
use sandpit_types::{ByteSize, SandboxId};

/// The reference every test imports the test image as.
pub const IMAGE: &str = "sandpit/test:latest";
/// Host uid that sandbox root maps to in tests.
pub const UID_BASE: u32 = 1_000_000;

/// Builds (once per probe binary, shared by all test processes) an OCI layout with busybox, the
/// probe at `/bin/sandpit-probe`, a user `user` (1000) with home `/home/user`, and no workload.
pub fn test_image_layout() -> PathBuf {
    let probe = std::fs::read(sandpit_runtime::PROBE_BINARY).expect("probe binary built by build.rs");
    let hash = format!("{:x}", md5ish(&probe));
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!("runtime-test-image-{hash}"));
    std::fs::create_dir_all(&base).unwrap();
    let lock = std::fs::File::create(base.join("runtime-test-image.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let layout = dir.join("layout");
    if layout.join("index.json").exists() {
        return layout;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    testkit::require_tools().expect("umoci, skopeo and busybox-static are installed");
    let l = OciLayout::init(&layout).unwrap();
    l.new_image("test").unwrap();
    let bundle = dir.join("bundle");
    l.unpack("test", &bundle).unwrap();
    let rootfs = bundle.join("rootfs");
    testkit::busybox_rootfs(&rootfs).unwrap();
    let probe_dst = rootfs.join("bin/sandpit-probe");
    std::fs::write(&probe_dst, &probe).unwrap();
    std::fs::set_permissions(&probe_dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n").unwrap();
    let home = rootfs.join("home/user");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(1000), Some(1000)).unwrap();
    l.repack("test", &bundle).unwrap();
    l.config("test", &["--clear=config.env", "--config.env=PATH=/bin", "--config.env=IMAGE_VAR=from-image"])
        .unwrap();
    let _ = std::fs::remove_dir_all(&bundle);
    layout
}

/// FNV-1a, enough to tell probe builds apart.
fn md5ish(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3))
}

/// A backend over a fresh temporary root with the test image imported.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub backend: Arc<LocalBackend>,
    pub images: Arc<ImageStore>,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_config(|_| {}).await
    }

    pub async fn with_config(tweak: impl FnOnce(&mut LocalConfig)) -> Self {
        let dir = tempfile::Builder::new().prefix("sp").tempdir_in("/tmp").unwrap();
        let images = Arc::new(Self::image_store(dir.path()));
        let mut cfg = LocalConfig::new(dir.path().join("rt"));
        tweak(&mut cfg);
        let backend = LocalBackend::open(cfg, images.clone()).unwrap();
        backend.recover().await.unwrap();
        Self { dir, backend: Arc::new(backend), images }
    }

    /// The image store under `dir`, with the test image imported.
    pub fn image_store(dir: &Path) -> ImageStore {
        let store = ImageStore::open(dir.join("images"), IdShift::new(UID_BASE, 65536).unwrap()).unwrap();
        let reference = ImageReference::parse(IMAGE).unwrap();
        store.import_oci_layout(&test_image_layout(), Some("test"), &reference).unwrap();
        store
    }

    /// A spec for the test image with small limits.
    pub fn spec(&self) -> SandboxSpec {
        let mut s = SandboxSpec::new(SandboxId::generate(), IMAGE);
        s.memory = ByteSize::mib(256);
        s.disk = ByteSize::mib(256);
        s.pids_limit = 256;
        s.env = BTreeMap::from([("SPEC_VAR".to_string(), "from-spec".to_string())]);
        s
    }

    /// Creates an idle sandbox.
    pub async fn idle(&self) -> SandboxId {
        let spec = self.spec();
        let id = spec.id;
        self.backend.create(spec).await.unwrap();
        id
    }

    /// Runs `sh -c line` in the sandbox and collects the result.
    pub async fn sh(&self, id: &SandboxId, line: &str) -> ExecOutcome {
        let client = self.backend.init(id).await.unwrap();
        let req = ExecRequest {
            command: Some(Command::Shell(line.into())),
            timeout_ms: Some(60_000),
            ..Default::default()
        };
        client.exec(req).await.unwrap().collect().await.unwrap()
    }

    /// Like [`Harness::sh`], asserting exit 0, returning stdout as text.
    pub async fn sh_ok(&self, id: &SandboxId, line: &str) -> String {
        let out = self.sh(id, line).await;
        assert_eq!(
            out.status.code,
            Some(0),
            "{line:?} failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Everything the host has of a sandbox: processes, mounts, cgroups, files.
    pub fn host_traces(&self, id: &SandboxId) -> Vec<String> {
        host_traces(&self.dir.path().join("rt"), id)
    }
}

/// Everything the host has of a sandbox of the backend rooted at `rt`: processes in its cgroup,
/// mounts, cgroups, its directory and OCI runtime state.
pub fn host_traces(rt: &Path, id: &SandboxId) -> Vec<String> {
    let mut out = Vec::new();
    let layout = sandpit_runtime::local::Layout::new(rt);
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = p.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        if let Ok(cg) = std::fs::read_to_string(p.path().join("cgroup"))
            && cg.contains(id.as_str())
        {
            let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
            let cgl = cg.lines().filter(|l| l.contains(id.as_str())).collect::<Vec<_>>().join(";");
            out.push(format!("process {name} {} [{cgl}]", stat.trim()));
        }
    }
    for line in std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        if line.contains(id.as_str()) {
            out.push(format!("mount {line}"));
        }
    }
    let host = sandpit_runtime::local::HostInfo::detect();
    for parent in host.cgroup_parents("sandpit") {
        if parent.join(id.as_str()).exists() {
            out.push(format!("cgroup {}", parent.join(id.as_str()).display()));
        }
    }
    let dir = layout.sandbox(id).dir;
    if dir.exists() {
        out.push(format!("dir {}", dir.display()));
    }
    if layout.runtime_root().join(id.as_str()).exists() {
        out.push("runc state".into());
    }
    out
}

impl Drop for Harness {
    /// Leaves nothing behind even when a test fails half-way: kills the root's containers and
    /// unmounts everything below it before the temporary directory is removed.
    fn drop(&mut self) {
        cleanup_root(self.dir.path());
    }
}

/// Removes every container and mount under a test root.
pub fn cleanup_root(dir: &Path) {
    let runc_root = dir.join("rt/runc");
    if let Ok(entries) = std::fs::read_dir(&runc_root) {
        for e in entries.flatten() {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force"])
                .arg(e.file_name())
                .output();
        }
    }
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in mounts {
        let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

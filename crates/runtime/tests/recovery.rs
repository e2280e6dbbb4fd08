//! Crash safety: the process driving the backend (`sandpit-local`) is killed with SIGKILL at
//! failpoints inside create, pause, resume and delete; a new backend then recovers, and every
//! sandbox must be in a phase that matches the host, with nothing orphaned.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common::{IMAGE, cleanup_root, host_traces};
use sandpit_runtime::{Backend, LocalBackend, LocalConfig, Phase, RecoveryReport};
use sandpit_types::SandboxId;

struct Crashes {
    dir: tempfile::TempDir,
    images: Arc<sandpit_image::ImageStore>,
}

impl Drop for Crashes {
    fn drop(&mut self) {
        cleanup_root(self.dir.path());
    }
}

/// Reaps container inits that end up as children of this test process. The backend makes its
/// process a child subreaper; in these tests the backend's process (the test) outlives drivers
/// that started containers, so their orphaned inits come here, where a host's init (systemd)
/// would reap them in production.
fn start_orphan_reaper() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            let me = std::process::id().to_string();
            loop {
                for p in std::fs::read_dir("/proc").unwrap().flatten() {
                    let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else { continue };
                    let Some(close) = stat.rfind(')') else { continue };
                    let comm = &stat[stat.find('(').unwrap_or(0) + 1..close];
                    let mut f = stat[close + 2..].split(' ');
                    let (state, ppid) = (f.next(), f.next());
                    if comm == "init" && state == Some("Z") && ppid == Some(me.as_str()) {
                        let pid: i32 = p.file_name().to_string_lossy().parse().unwrap();
                        // SAFETY: reaping our own zombie child by pid.
                        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
    });
}

impl Crashes {
    fn new() -> Self {
        start_orphan_reaper();
        let dir = tempfile::Builder::new().prefix("sp").tempdir_in("/tmp").unwrap();
        let images = Arc::new(common::Harness::image_store(dir.path()));
        Self { dir, images }
    }

    fn rt(&self) -> PathBuf {
        self.dir.path().join("rt")
    }

    /// Runs `sandpit-local VERB ARGS` with `SANDPIT_FAILPOINT=failpoint`; returns whether it was
    /// killed there.
    fn drive(&self, failpoint: Option<&str>, args: &[&str]) -> bool {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandpit-local"));
        cmd.arg("--root").arg(self.rt()).arg("--images").arg(self.dir.path().join("images")).args(args);
        cmd.env("SANDPIT_UID_BASE", common::UID_BASE.to_string());
        match failpoint {
            Some(f) => cmd.env("SANDPIT_FAILPOINT", f),
            None => cmd.env_remove("SANDPIT_FAILPOINT"),
        };
        let out = cmd.output().unwrap();
        match out.status.signal() {
            Some(9) => true,
            _ => {
                assert!(
                    out.status.success(),
                    "sandpit-local {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                false
            }
        }
    }

    async fn recover(&self) -> (LocalBackend, RecoveryReport) {
        let b = LocalBackend::open(LocalConfig::new(self.rt()), self.images.clone()).unwrap();
        let r = b.recover().await.unwrap();
        (b, r)
    }

    fn create_args(id: &SandboxId) -> Vec<String> {
        vec![
            "create".into(),
            id.to_string(),
            IMAGE.into(),
            "--keep-running".into(),
            "--".into(),
            "/bin/sh".into(),
            "-c".into(),
            "echo boot >> /root/boots; exec sleep 1000".into(),
        ]
    }

    fn create(&self, id: &SandboxId, failpoint: Option<&str>) -> bool {
        let args = Self::create_args(id);
        self.drive(failpoint, &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn traces(&self, id: &SandboxId) -> Vec<String> {
        host_traces(&self.rt(), id)
    }

    fn only_dir(&self, id: &SandboxId) -> bool {
        let t = self.traces(id);
        t.len() == 1 && t[0].starts_with("dir ")
    }
}

async fn sh(b: &LocalBackend, id: &SandboxId, line: &str) -> String {
    let c = b.init(id).await.unwrap();
    let req = sandpit_init::protocol::ExecRequest {
        command: Some(sandpit_init::protocol::Command::Shell(line.into())),
        ..Default::default()
    };
    let out = c.exec(req).await.unwrap().collect().await.unwrap();
    assert_eq!(out.status.code, Some(0), "{line}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_sandbox_created_by_a_driver_that_died_is_adopted_and_answers_exec() {
    let c = Crashes::new();
    let id = SandboxId::generate();
    assert!(!c.create(&id, None));
    // The driver exited; a new one adopts the running sandbox.
    let (b, report) = c.recover().await;
    assert_eq!(report.adopted, vec![id]);
    assert_eq!(sh(&b, &id, "echo again").await, "again\n");
    b.destroy(&id).await.unwrap();
    assert!(c.traces(&id).is_empty());
}

#[tokio::test]
async fn a_crash_during_create_leaves_nothing_after_recovery() {
    let c = Crashes::new();
    for fp in ["create.after_record", "start.after_disk", "start.after_rootfs", "start.after_runtime"] {
        let id = SandboxId::generate();
        assert!(c.create(&id, Some(fp)), "{fp} was not reached");
        assert!(!c.traces(&id).is_empty(), "{fp}: the crash should leave something to clean");
        let (b, report) = c.recover().await;
        assert_eq!(report.discarded, vec![id], "{fp}: {report:?}");
        assert_eq!(c.traces(&id), Vec::<String>::new(), "{fp}");
        assert!(b.list().await.unwrap().is_empty());
        // Recovery is idempotent.
        assert_eq!(b.recover().await.unwrap(), RecoveryReport::default(), "{fp}");
    }
    // A crash after the sandbox was recorded as running keeps it: it is complete.
    let id = SandboxId::generate();
    assert!(c.create(&id, Some("create.after_running")));
    let (b, report) = c.recover().await;
    assert_eq!(report.adopted, vec![id]);
    assert_eq!(sh(&b, &id, "cat /root/boots").await, "boot\n");
}

#[tokio::test]
async fn a_crash_during_pause_finishes_the_pause_and_keeps_the_disk() {
    let c = Crashes::new();
    for fp in ["pause.after_record", "pause.after_stop"] {
        let id = SandboxId::generate();
        assert!(!c.create(&id, None));
        {
            let (b, _) = c.recover().await;
            sh(&b, &id, "echo before-crash > /root/file").await;
        }
        assert!(c.drive(Some(fp), &["pause", id.as_str()]), "{fp} was not reached");
        let (b, report) = c.recover().await;
        assert_eq!(report.paused, vec![id], "{fp}: {report:?}");
        assert!(c.only_dir(&id), "{fp}: {:?}", c.traces(&id));
        assert_eq!(b.status(&id).await.unwrap().phase, Phase::Paused);
        b.resume(&id, Vec::new()).await.unwrap();
        assert_eq!(sh(&b, &id, "cat /root/file").await, "before-crash\n", "{fp}");
        b.destroy(&id).await.unwrap();
    }
}

#[tokio::test]
async fn a_crash_during_resume_rolls_back_to_paused() {
    let c = Crashes::new();
    for fp in ["resume.after_record", "start.after_disk", "start.after_rootfs", "start.after_runtime"] {
        let id = SandboxId::generate();
        assert!(!c.create(&id, None));
        assert!(!c.drive(None, &["pause", id.as_str()]));
        assert!(c.drive(Some(fp), &["resume", id.as_str()]), "{fp} was not reached");
        let (b, report) = c.recover().await;
        assert_eq!(report.rolled_back, vec![id], "{fp}: {report:?}");
        assert!(c.only_dir(&id), "{fp}: {:?}", c.traces(&id));
        b.resume(&id, Vec::new()).await.unwrap();
        // The entrypoint ran at create and at this resume; a crash after the container started
        // may have let it run once more before recovery stopped it.
        let boots = sh(&b, &id, "cat /root/boots").await.lines().count();
        let want = if fp == "start.after_runtime" { 2..=3 } else { 2..=2 };
        assert!(want.contains(&boots), "{fp}: {boots} boots");
        b.destroy(&id).await.unwrap();
    }
}

#[tokio::test]
async fn a_crash_during_delete_finishes_the_delete() {
    let c = Crashes::new();
    for fp in ["delete.after_record", "delete.after_stop"] {
        let id = SandboxId::generate();
        assert!(!c.create(&id, None));
        assert!(c.drive(Some(fp), &["destroy", id.as_str()]), "{fp} was not reached");
        let (b, report) = c.recover().await;
        assert_eq!(report.deleted, vec![id], "{fp}: {report:?}");
        assert!(c.traces(&id).is_empty(), "{fp}: {:?}", c.traces(&id));
        assert!(b.list().await.unwrap().is_empty());
    }
}

//! Lifecycle of real sandboxes under runc: create, exec, pause, resume, delete, workload exit,
//! logs, and the OCI runtime's typed errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::Harness;
use sandpit_init::protocol::{Command, ExecRequest, ProcSelector};
use sandpit_runtime::{Backend, ExecEvent, Phase, RuntimeError};

fn sh(line: &str) -> Option<Vec<String>> {
    Some(vec!["/bin/sh".into(), "-c".into(), line.into()])
}

#[tokio::test]
async fn create_then_exec_runs_with_image_and_spec_environment() {
    let h = Harness::new().await;
    let id = h.idle().await;
    let out = h.sh_ok(&id, "echo hello; echo $SPEC_VAR $IMAGE_VAR; hostname").await;
    assert_eq!(out, format!("hello\nfrom-spec from-image\n{id}\n"));
    let status = h.backend.status(&id).await.unwrap();
    assert_eq!(status.phase, Phase::Running);
    assert!(status.pid.is_some());
}

#[tokio::test]
async fn exec_streams_output_before_the_command_exits() {
    let h = Harness::new().await;
    let id = h.idle().await;
    let client = h.backend.init(&id).await.unwrap();
    let req = ExecRequest {
        command: Some(Command::Shell("echo first; sleep 2; echo second >&2".into())),
        ..Default::default()
    };
    let start = Instant::now();
    let mut s = client.exec(req).await.unwrap();
    let first = s.next().await.unwrap().unwrap();
    let first_at = start.elapsed();
    assert_eq!(first, ExecEvent::Stdout("first\n".into()));
    let second = s.next().await.unwrap().unwrap();
    assert_eq!(second, ExecEvent::Stderr("second\n".into()));
    let exited = s.next().await.unwrap().unwrap();
    let exited_at = start.elapsed();
    assert!(matches!(exited, ExecEvent::Exited(st) if st.code == Some(0)));
    assert!(
        exited_at - first_at >= Duration::from_millis(1500),
        "first output at {first_at:?} should come well before the exit at {exited_at:?}"
    );
    assert!(s.next().await.unwrap().is_none());
}

#[tokio::test]
async fn exec_reports_exit_codes_signals_and_timeouts() {
    let h = Harness::new().await;
    let id = h.idle().await;
    assert_eq!(h.sh(&id, "exit 3").await.status.code, Some(3));
    let killed = h.sh(&id, "kill -9 $$").await.status;
    assert_eq!((killed.code, killed.signal), (None, Some(9)));
    let client = h.backend.init(&id).await.unwrap();
    let req = ExecRequest {
        command: Some(Command::Argv(vec!["sleep".into(), "30".into()])),
        timeout_ms: Some(300),
        ..Default::default()
    };
    let out = client.exec(req).await.unwrap().collect().await.unwrap();
    assert!(out.status.timed_out, "{:?}", out.status);
    let missing = client
        .exec(ExecRequest {
            command: Some(Command::Argv(vec!["/no/such/program".into()])),
            ..Default::default()
        })
        .await;
    assert!(matches!(missing, Err(RuntimeError::Init { .. })), "{missing:?}");
}

#[tokio::test]
async fn exec_takes_stdin_env_cwd_and_user() {
    let h = Harness::new().await;
    let id = h.idle().await;
    let client = h.backend.init(&id).await.unwrap();
    let req =
        ExecRequest { command: Some(Command::Argv(vec!["cat".into()])), stdin: true, ..Default::default() };
    let mut s = client.exec(req).await.unwrap();
    s.write_stdin(b"typed input\n").await.unwrap();
    s.close_stdin().await.unwrap();
    let out = s.collect().await.unwrap();
    assert_eq!(out.stdout, b"typed input\n");
    let req = ExecRequest {
        command: Some(Command::Shell("id -u; pwd; echo $X".into())),
        user: Some("user".into()),
        cwd: Some("/tmp".into()),
        env: [("X".to_string(), "y".to_string())].into(),
        ..Default::default()
    };
    let out = client.exec(req).await.unwrap().collect().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1000\n/tmp\ny\n");
}

#[tokio::test]
async fn background_processes_can_be_listed_reattached_fed_and_signalled() {
    let h = Harness::new().await;
    let id = h.idle().await;
    let client = h.backend.init(&id).await.unwrap();
    let req = ExecRequest {
        command: Some(Command::Shell("read line; echo got $line; sleep 30".into())),
        stdin: true,
        keep_on_disconnect: true,
        tag: Some("worker".into()),
        ..Default::default()
    };
    let pid = client.exec(req).await.unwrap().pid();
    // The first session is gone; the process lives on.
    let procs = client.list_procs().await.unwrap();
    let p = procs.iter().find(|p| p.pid == pid).expect("listed");
    assert_eq!(p.tag.as_deref(), Some("worker"));
    assert!(p.exit.is_none());
    client.write_stdin(ProcSelector::Tag("worker".into()), b"ping\n").await.unwrap();
    let mut s = client.attach(ProcSelector::Pid(pid), false).await.unwrap();
    assert_eq!(s.next().await.unwrap(), Some(ExecEvent::Stdout("got ping\n".into())));
    client.signal(ProcSelector::Pid(pid), 15, true).await.unwrap();
    let end = s.next().await.unwrap().unwrap();
    assert!(matches!(end, ExecEvent::Exited(st) if st.signal == Some(15)), "{end:?}");
}

#[tokio::test]
async fn pause_keeps_files_written_before_pause_and_releases_everything_else() {
    let h = Harness::new().await;
    let mut spec = h.spec();
    spec.entrypoint = sh("echo boot >> /root/boot.log; exec sleep 1000");
    let id = spec.id;
    h.backend.create(spec).await.unwrap();
    h.sh_ok(&id, "echo kept > /root/note; mkdir -p /opt/pkg/lib /opt/pkg/bin; echo lib > /opt/pkg/lib/libx.so; printf '#!/bin/sh\\necho tool ran\\n' > /opt/pkg/bin/tool; chmod +x /opt/pkg/bin/tool").await;
    let running = h.host_traces(&id);
    assert!(running.iter().any(|t| t.starts_with("process")), "{running:?}");
    assert!(running.iter().any(|t| t.starts_with("cgroup")), "{running:?}");

    h.backend.pause(&id).await.unwrap();
    let paused = h.host_traces(&id);
    assert!(
        paused.iter().all(|t| t.starts_with("dir ")),
        "a paused sandbox keeps only its directory: {paused:?}"
    );
    let disk = h.backend.layout().sandbox(&id).disk_image;
    assert!(disk.exists(), "the disk survives pause");
    assert_eq!(h.backend.status(&id).await.unwrap().phase, Phase::Paused);

    let again = h.backend.pause(&id).await.unwrap_err();
    assert!(matches!(again, RuntimeError::WrongState { phase: Phase::Paused, op: "pause", .. }), "{again:?}");
    assert!(matches!(h.backend.init(&id).await, Err(RuntimeError::WrongState { .. })));

    h.backend.resume(&id, Vec::new()).await.unwrap();
    assert_eq!(
        h.sh_ok(&id, "cat /root/note /opt/pkg/lib/libx.so; /opt/pkg/bin/tool").await,
        "kept\nlib\ntool ran\n"
    );
    // The entrypoint ran again on resume.
    assert_eq!(h.sh_ok(&id, "cat /root/boot.log").await, "boot\nboot\n");
    let resumed_again = h.backend.resume(&id, Vec::new()).await.unwrap_err();
    assert!(matches!(resumed_again, RuntimeError::WrongState { phase: Phase::Running, .. }));
}

#[tokio::test]
async fn delete_is_idempotent_and_leaves_nothing_behind() {
    let h = Harness::new().await;
    let running = h.idle().await;
    let paused = h.idle().await;
    h.backend.pause(&paused).await.unwrap();
    let before = h.host_traces(&running);
    for kind in ["process", "mount", "cgroup", "dir", "runc state"] {
        assert!(before.iter().any(|t| t.starts_with(kind)), "{kind} missing before delete: {before:?}");
    }
    let socket = h.backend.layout().sandbox(&running).socket;
    assert!(socket.exists());
    for id in [running, paused] {
        h.backend.destroy(&id).await.unwrap();
        assert_eq!(h.host_traces(&id), Vec::<String>::new());
        h.backend.destroy(&id).await.unwrap();
        assert!(matches!(h.backend.status(&id).await, Err(RuntimeError::NotFound(_))));
    }
    assert!(!socket.exists());
    assert!(h.backend.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn workload_exit_ends_the_sandbox_with_its_code_and_logs() {
    let h = Harness::new().await;
    let mut spec = h.spec();
    spec.entrypoint = sh("echo to-out; echo to-err >&2; exit 7");
    let id = spec.id;
    h.backend.create(spec).await.unwrap();
    let exit =
        tokio::time::timeout(Duration::from_secs(10), h.backend.wait_exit(&id)).await.unwrap().unwrap();
    assert_eq!(exit.status.and_then(|s| s.code), Some(7));
    assert_eq!(h.backend.status(&id).await.unwrap().phase, Phase::Exited);
    let traces = h.host_traces(&id);
    assert!(traces.iter().all(|t| t.starts_with("dir ")), "{traces:?}");
    let logs = h.backend.read_logs(&id, 0, 1 << 20).await.unwrap();
    let text: Vec<(String, String)> =
        logs.records.iter().map(|r| (format!("{:?}", r.s), r.d.clone())).collect();
    assert!(text.contains(&("Out".into(), "to-out\n".into())), "{text:?}");
    assert!(text.contains(&("Err".into(), "to-err\n".into())), "{text:?}");
    assert!(matches!(h.backend.pause(&id).await, Err(RuntimeError::WrongState { phase: Phase::Exited, .. })));
    h.backend.destroy(&id).await.unwrap();
    assert!(h.host_traces(&id).is_empty());
}

#[tokio::test]
async fn keep_running_keeps_the_sandbox_up_after_its_workload_exits() {
    let h = Harness::new().await;
    let mut spec = h.spec();
    spec.entrypoint = sh("exit 4");
    spec.keep_running = true;
    let id = spec.id;
    h.backend.create(spec).await.unwrap();
    let client = h.backend.init(&id).await.unwrap();
    let mut entry = None;
    for _ in 0..100 {
        entry = client.list_procs().await.unwrap().into_iter().find(|p| p.entrypoint && p.exit.is_some());
        if entry.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(entry.and_then(|e| e.exit).and_then(|e| e.code), Some(4));
    assert_eq!(h.backend.status(&id).await.unwrap().phase, Phase::Running);
    assert_eq!(h.sh_ok(&id, "echo still here").await, "still here\n");
}

#[tokio::test]
async fn a_missing_entrypoint_exits_127_with_the_reason_in_the_logs() {
    let h = Harness::new().await;
    let mut spec = h.spec();
    spec.entrypoint = Some(vec!["/no/such/binary".into()]);
    let id = spec.id;
    h.backend.create(spec).await.unwrap();
    let exit =
        tokio::time::timeout(Duration::from_secs(10), h.backend.wait_exit(&id)).await.unwrap().unwrap();
    assert_eq!(exit.status.and_then(|s| s.code), Some(127), "{exit:?}");
    assert!(exit.error.is_some_and(|e| e.contains("/no/such/binary")));
    let logs = h.backend.read_logs(&id, 0, 1 << 20).await.unwrap();
    assert!(logs.records.iter().any(|r| r.d.contains("/no/such/binary")), "{logs:?}");
}

#[tokio::test]
async fn image_user_and_workdir_can_be_overridden() {
    let h = Harness::new().await;
    let mut spec = h.spec();
    spec.entrypoint = sh("id -u; pwd");
    spec.user = Some("user".into());
    spec.workdir = Some("/home/user".into());
    let id = spec.id;
    h.backend.create(spec).await.unwrap();
    h.backend.wait_exit(&id).await.unwrap();
    let logs = h.backend.read_logs(&id, 0, 1 << 20).await.unwrap();
    let out: String =
        logs.records.iter().filter(|r| format!("{:?}", r.s) == "Out").map(|r| r.d.as_str()).collect();
    assert_eq!(out, "1000\n/home/user\n");
}

#[tokio::test]
async fn logs_are_readable_from_an_offset_and_followable() {
    let h = Harness::new().await;
    let mut spec = h.spec();
    spec.entrypoint =
        sh("i=0; while [ $i -lt 50 ]; do echo line $i; i=$((i+1)); sleep 0.02; done; sleep 1000");
    let id = spec.id;
    h.backend.create(spec).await.unwrap();
    // Follow: keep reading from the returned offset until all 50 lines arrived.
    let mut lines = Vec::new();
    let mut offset = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines.len() < 50 && Instant::now() < deadline {
        let chunk = h.backend.read_logs(&id, offset, 256).await.unwrap();
        assert!(!chunk.skipped);
        offset = chunk.next_offset;
        lines.extend(chunk.records.into_iter().map(|r| r.d));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let want: Vec<String> = (0..50).map(|i| format!("line {i}\n")).collect();
    assert_eq!(lines, want);
    // Reading again from the middle gives the rest.
    let all = h.backend.read_logs(&id, 0, 1 << 20).await.unwrap();
    assert_eq!(all.records.len(), 50);
}

#[tokio::test]
async fn an_unknown_image_is_refused_and_nothing_is_left() {
    let h = Harness::new().await;
    let mut spec = h.spec();
    spec.image = "sandpit/absent:latest".into();
    let id = spec.id;
    let err = h.backend.create(spec).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Image(_)), "{err:?}");
    assert!(h.host_traces(&id).is_empty());
}

#[tokio::test]
async fn the_oci_runtime_is_configurable_and_its_failures_are_typed() {
    let scripts = tempfile::tempdir().unwrap();
    let fake = scripts.path().join("fake-runtime");
    std::fs::write(&fake, "#!/bin/sh\necho 'fake runtime refuses' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let h = Harness::with_config(|c| c.oci_runtime = fake.clone()).await;
    let spec = h.spec();
    let id = spec.id;
    let err = h.backend.create(spec).await.unwrap_err();
    match err {
        RuntimeError::OciRuntime { op, status, stderr, binary } => {
            assert_eq!(op, "run");
            assert_eq!(status.code(), Some(3));
            assert!(stderr.contains("fake runtime refuses"), "{stderr}");
            assert!(binary.ends_with("fake-runtime"));
        }
        other => panic!("expected an OCI runtime error, got {other:?}"),
    }
    assert!(h.host_traces(&id).is_empty(), "a failed create leaves nothing: {:?}", h.host_traces(&id));
}

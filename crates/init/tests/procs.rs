//! Processes through the real `sandpit-init`: exec, streaming, stdin, timeouts, users,
//! background processes and attach, signals, disconnects, reaping, pty.

// The helpers below fail their test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Sandbox, argv, eventually, expect_error, group_members, shell};
use sandpit_init::protocol::{ErrorCode, Frame, FrameKind, ProcSelector, PtySize, Request, Response};

#[test]
fn exec_echo_reports_output_and_exit_code() {
    let sb = Sandbox::idle();
    let r = sb.exec(argv(&["echo", "hello", "world"]));
    assert_eq!(r.out(), "hello world\n");
    assert!(r.status.success(), "{:?}", r.status);
    assert!(r.pid > 1);
}

#[test]
fn non_zero_exit_code_is_reported() {
    let sb = Sandbox::idle();
    let r = sb.exec(shell("exit 3"));
    assert_eq!((r.status.code, r.status.signal, r.status.timed_out), (Some(3), None, false));
}

#[test]
fn death_by_signal_is_reported() {
    let sb = Sandbox::idle();
    let r = sb.exec(shell("kill -9 $$"));
    assert_eq!((r.status.code, r.status.signal), (None, Some(9)));
}

#[test]
fn stdout_and_stderr_are_separate_streams() {
    let sb = Sandbox::idle();
    let r = sb.exec(shell("echo out; echo err >&2; echo out2"));
    assert_eq!(r.out(), "out\nout2\n");
    assert_eq!(r.err(), "err\n");
}

#[test]
fn output_streams_while_the_process_runs() {
    let sb = Sandbox::idle();
    let mut c = sb.request(Request::Exec(shell("echo first; sleep 2; echo second")));
    let pid = c.started();
    let start = Instant::now();
    let first = c.recv().unwrap();
    assert_eq!((first.kind, first.payload.as_slice()), (FrameKind::Stdout, &b"first\n"[..]));
    let first_at = start.elapsed();
    let rest = c.collect_after_start(pid);
    let exited_at = start.elapsed();
    assert_eq!(rest.out(), "second\n");
    assert!(first_at < Duration::from_millis(1000), "first after {first_at:?}");
    assert!(exited_at - first_at > Duration::from_millis(1500), "first {first_at:?} exited {exited_at:?}");
}

#[test]
fn stdin_round_trips_and_end_closes_it() {
    let sb = Sandbox::idle();
    let mut req = argv(&["cat"]);
    req.stdin = true;
    let mut c = sb.request(Request::Exec(req));
    let pid = c.started();
    c.stdin(b"hello ");
    c.stdin(b"cat\n");
    let frame = c.recv().unwrap();
    assert_eq!(frame.payload, b"hello cat\n", "cat echoes before stdin is closed");
    c.end();
    let r = c.collect_after_start(pid);
    assert!(r.status.success(), "cat ends when stdin is closed: {:?}", r.status);
}

#[test]
fn without_stdin_the_process_reads_end_of_file() {
    let sb = Sandbox::idle();
    let r = sb.exec(argv(&["cat"]));
    assert!(r.status.success());
    assert!(r.stdout.is_empty());
}

#[test]
fn timeout_kills_the_group_and_says_so() {
    let sb = Sandbox::idle();
    let mut req = shell("sleep 30 & sleep 30");
    req.timeout_ms = Some(300);
    let start = Instant::now();
    let r = sb.exec(req);
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert_eq!(r.status.signal, Some(9));
    assert!(r.status.timed_out);
    assert!(eventually(Duration::from_secs(2), || group_members(r.pid).is_empty()));
}

#[test]
fn env_cwd_and_user_are_applied() {
    let sb = Sandbox::idle();
    let mut req = shell("echo \"$FOO $HOME $USER\"; pwd; id -u; id -g");
    req.env = BTreeMap::from([("FOO".to_owned(), "bar".to_owned())]);
    req.cwd = Some("/tmp".to_owned());
    let r = sb.exec(req);
    assert_eq!(r.out(), "bar /root root\n/tmp\n0\n0\n");

    let mut req = shell("id -u; id -g; echo $HOME $USER");
    req.user = Some("nobody".to_owned());
    let r = sb.exec(req);
    assert_eq!(r.out(), "65534\n65534\n/nonexistent nobody\n");

    let mut req = shell("id -u; id -g; pwd");
    req.user = Some("4321:4322".to_owned());
    let r = sb.exec(req);
    assert_eq!(r.out(), "4321\n4322\n/\n");
}

#[test]
fn path_lookup_uses_the_request_environment() {
    let sb = Sandbox::idle();
    let dir = sb.dir.path().join("bin");
    std::fs::create_dir(&dir).unwrap();
    let tool = dir.join("my-tool");
    std::fs::write(&tool, "#!/bin/sh\necho tool ran\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&tool).unwrap().permissions(), 0o755);
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut req = argv(&["my-tool"]);
    req.env = BTreeMap::from([("PATH".to_owned(), format!("/nowhere:{}:/usr/bin:/bin", dir.display()))]);
    assert_eq!(sb.exec(req).out(), "tool ran\n");
}

#[test]
fn bad_exec_requests_are_refused_with_codes() {
    let sb = Sandbox::idle();
    let (code, message) = expect_error(sb.call(Request::Exec(argv(&["/no/such/program"]))));
    assert_eq!(code, ErrorCode::SpawnFailed);
    assert!(message.contains("No such file or directory"), "{message}");

    let (code, message) = expect_error(sb.call(Request::Exec(argv(&["/etc/passwd"]))));
    assert_eq!(code, ErrorCode::SpawnFailed);
    assert!(message.contains("Permission denied"), "{message}");

    let mut req = argv(&["true"]);
    req.cwd = Some("/no/such/dir".to_owned());
    let (code, message) = expect_error(sb.call(Request::Exec(req)));
    assert_eq!((code, message.as_str()), (ErrorCode::InvalidArgument, "cwd '/no/such/dir' does not exist"));

    let mut req = argv(&["true"]);
    req.user = Some("no-such-user".to_owned());
    assert_eq!(expect_error(sb.call(Request::Exec(req))).0, ErrorCode::NotFound);

    assert_eq!(expect_error(sb.call(Request::Exec(argv(&[])))).0, ErrorCode::InvalidArgument);
}

#[test]
fn background_process_survives_disconnect_and_can_be_attached() {
    let sb = Sandbox::idle();
    let mut req = shell("echo hello; sleep 1; echo bye");
    req.keep_on_disconnect = true;
    req.tag = Some("bg".to_owned());
    let mut c = sb.request(Request::Exec(req));
    let pid = c.started();
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    let Response::Procs { procs } = sb.call(Request::ListProcs) else { panic!() };
    let info = procs.iter().find(|p| p.pid == pid).expect("listed");
    assert_eq!(info.tag.as_deref(), Some("bg"));
    assert_eq!(info.exit, None, "still running");
    assert!(!info.entrypoint);

    let mut c = sb.request(Request::Attach { target: ProcSelector::Tag("bg".to_owned()), stdin: false });
    let r = c.collect_process();
    assert_eq!(r.pid, pid);
    assert_eq!(r.out(), "hello\nbye\n", "replayed then live output");
    assert!(r.status.success());

    // Attaching after the end still gives started, the buffered output and exited.
    let mut c = sb.request(Request::Attach { target: ProcSelector::Pid(pid), stdin: false });
    let r = c.collect_process();
    assert_eq!((r.out().as_str(), r.status.code), ("hello\nbye\n", Some(0)));
    let Response::Procs { procs } = sb.call(Request::ListProcs) else { panic!() };
    assert_eq!(procs.iter().find(|p| p.pid == pid).unwrap().exit.unwrap().code, Some(0));
}

#[test]
fn write_stdin_and_close_stdin_reach_a_background_cat() {
    let sb = Sandbox::idle();
    let mut req = argv(&["cat"]);
    req.stdin = true;
    req.keep_on_disconnect = true;
    let mut c = sb.request(Request::Exec(req));
    let pid = c.started();
    drop(c);
    let mut w = sb.request(Request::WriteStdin { target: ProcSelector::Pid(pid) });
    w.stdin(b"typed later\n");
    w.end();
    assert_eq!(w.recv_json(), Response::Ok);
    assert_eq!(sb.call(Request::CloseStdin { target: ProcSelector::Pid(pid) }), Response::Ok);
    let r = sb.request(Request::Attach { target: ProcSelector::Pid(pid), stdin: false }).collect_process();
    assert_eq!(r.out(), "typed later\n");
    assert!(r.status.success());

    let other = sb.exec(argv(&["true"]));
    let (code, _) = expect_error(sb.call(Request::CloseStdin { target: ProcSelector::Pid(other.pid) }));
    assert_eq!(code, ErrorCode::InvalidArgument);
}

#[test]
fn signal_reaches_the_whole_process_group() {
    let sb = Sandbox::idle();
    let mut req = shell("sleep 100 & sleep 100");
    req.keep_on_disconnect = true;
    let mut c = sb.request(Request::Exec(req));
    let pid = c.started();
    assert!(eventually(Duration::from_secs(2), || group_members(pid).len() >= 3), "sh and two sleeps");
    let reply =
        sb.call(Request::Signal { target: ProcSelector::Pid(pid), signal: libc::SIGTERM, group: true });
    assert_eq!(reply, Response::Ok);
    let r = c.collect_after_start(pid);
    assert_eq!(r.status.signal, Some(libc::SIGTERM));
    assert!(eventually(Duration::from_secs(2), || group_members(pid).is_empty()), "{:?}", group_members(pid));

    let (code, _) =
        expect_error(sb.call(Request::Signal { target: ProcSelector::Pid(999_999), signal: 9, group: true }));
    assert_eq!(code, ErrorCode::NoSuchProcess);
}

#[test]
fn foreground_exec_is_killed_when_the_connection_drops() {
    let sb = Sandbox::idle();
    let mut c = sb.request(Request::Exec(argv(&["sleep", "100"])));
    let pid = c.started();
    drop(c);
    assert!(eventually(Duration::from_secs(3), || {
        let Response::Procs { procs } = sb.call(Request::ListProcs) else { return false };
        procs.iter().any(|p| p.pid == pid && p.exit.is_some_and(|e| e.signal == Some(9)))
    }));
}

#[test]
fn orphans_are_reaped() {
    let sb = Sandbox::idle();
    let r = sb.exec(shell("sh -c 'sleep 0.5 & echo $!'"));
    let orphan: u32 = r.out().trim().parse().unwrap();
    assert!(
        sb.children().iter().any(|(pid, _)| *pid == orphan),
        "the orphan was reparented to init: {:?}",
        sb.children()
    );
    assert!(eventually(Duration::from_secs(3), || !std::path::Path::new(&format!("/proc/{orphan}")).exists()));
    assert!(sb.children().iter().all(|(_, state)| *state != 'Z'), "{:?}", sb.children());
}

#[test]
fn pty_exec_has_a_terminal_that_can_be_resized() {
    let sb = Sandbox::idle();
    let mut req = argv(&["tty"]);
    req.pty = Some(PtySize { rows: 24, cols: 80 });
    let r = sb.exec(req);
    let text = String::from_utf8_lossy(&r.pty).into_owned();
    assert!(text.starts_with("/dev/pts/"), "{text:?}");
    assert!(r.stdout.is_empty() && r.stderr.is_empty());

    let mut req = shell("stty size; read line; stty size");
    req.pty = Some(PtySize { rows: 24, cols: 80 });
    let mut c = sb.request(Request::Exec(req));
    let pid = c.started();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("24 80") {
        seen.extend(c.recv().unwrap().payload);
    }
    let resized =
        sb.call(Request::ResizePty { target: ProcSelector::Pid(pid), size: PtySize { rows: 40, cols: 100 } });
    assert_eq!(resized, Response::Ok);
    c.stdin(b"go\n");
    let r = c.collect_after_start(pid);
    let text = String::from_utf8_lossy(&r.pty).into_owned();
    assert!(text.contains("40 100"), "{text:?}");
    assert!(r.status.success());
}

#[test]
fn a_lagging_reader_loses_no_output() {
    let sb = Sandbox::idle();
    // 2 MiB, much more than the per-process buffer, read slowly at first.
    let mut c = sb.request(Request::Exec(shell("head -c 2097152 /dev/zero")));
    let pid = c.started();
    std::thread::sleep(Duration::from_millis(500));
    let r = c.collect_after_start(pid);
    assert_eq!(r.stdout.len(), 2 << 20);
    assert!(r.status.success());
}

#[test]
fn unused_threads_end_with_their_connections() {
    let sb = Sandbox::idle();
    assert!(eventually(Duration::from_secs(2), || sb.threads() == 2), "idle: reaper and listener");
    let watch_dir = sb.dir.path().to_str().unwrap().to_owned();
    let mut w = sb.request(Request::Watch { path: watch_dir, user: None, recursive: false });
    assert_eq!(w.recv_json(), Response::Ok);
    for _ in 0..5 {
        sb.exec(argv(&["true"]));
    }
    drop(w);
    assert!(eventually(Duration::from_secs(3), || sb.threads() == 2), "threads {}", sb.threads());
}

#[test]
fn malformed_frames_do_not_hurt_init() {
    let sb = Sandbox::idle();
    let mut c = sb.connect();
    c.send_frame(Frame::data(FrameKind::Json, b"{\"v\":1,\"op\":".to_vec()));
    assert_eq!(expect_error(c.recv_json()).0, ErrorCode::InvalidArgument);
    let mut c = sb.connect();
    std::io::Write::write_all(&mut c.stream, &[0xff, 0xff, 0xff, 0xff, 9]).unwrap();
    assert_eq!(expect_error(c.recv_json()).0, ErrorCode::InvalidArgument);
    let mut c = sb.connect();
    let deep = format!("{{\"v\":1,\"op\":\"hello\",\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    c.send_frame(Frame::data(FrameKind::Json, deep.into_bytes()));
    let _ = c.recv();
    // Just below serde_json's nesting limit: parsed for real, on a connection thread's stack.
    for depth in [100, 126] {
        let mut c = sb.connect();
        let nested = format!("{{\"v\":1,\"op\":\"hello\",\"x\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        c.send_frame(Frame::data(FrameKind::Json, nested.into_bytes()));
        assert!(matches!(c.recv_json(), Response::Hello { .. }));
    }
    // Half a frame, then gone.
    let mut c = sb.connect();
    std::io::Write::write_all(&mut c.stream, &[100, 0, 0, 0, 1, b'{']).unwrap();
    drop(c);
    assert!(matches!(sb.call(Request::Hello), Response::Hello { .. }));
}

//! Init as PID 1 of a sandbox: hello and versions, the entrypoint's log and status, init's own
//! exit, shutdown on SIGTERM, and its memory use.

// The helpers below fail their test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::{Sandbox, argv, eventually, expect_error, group_members};
use sandpit_init::protocol::{
    Envelope, ErrorCode, Frame, LogStream, PROTOCOL_VERSION, ProcSelector, Request, Response,
};

fn text_of(records: &[sandpit_init::protocol::LogRecord], stream: LogStream) -> String {
    records.iter().filter(|r| r.s == stream).map(|r| r.d.as_str()).collect()
}

#[test]
fn hello_answers_versions_and_unsupported_versions_are_refused() {
    let sb = Sandbox::idle();
    match sb.call(Request::Hello) {
        Response::Hello { version, supported, init_version, entrypoint } => {
            assert_eq!((version, supported), (PROTOCOL_VERSION, vec![PROTOCOL_VERSION]));
            assert_eq!(init_version, env!("CARGO_PKG_VERSION"));
            assert_eq!(entrypoint, None);
        }
        other => panic!("{other:?}"),
    }
    let mut c = sb.connect();
    c.send_frame(Frame::json(&Envelope { v: 2, request: Request::Hello }));
    let (code, message) = expect_error(c.recv_json());
    assert_eq!(code, ErrorCode::UnsupportedVersion, "{message}");
    assert!(c.recv().is_none(), "the exchange ends");
}

#[test]
fn entrypoint_output_goes_to_the_log_and_its_exit_ends_init() {
    let mut sb = Sandbox::start(
        &[],
        &["sh", "-c", "echo out; echo err >&2; printf '\\342'; sleep 0.2; printf '\\202\\254\\n'; exit 3"],
    );
    let status = sb.wait_exit(Duration::from_secs(10)).expect("init exits with its entrypoint");
    assert_eq!(status.code(), Some(3));
    let records = sb.log_records();
    assert_eq!(text_of(&records, LogStream::Out), "out\n€\n");
    assert!(records.iter().all(|r| !r.d.contains('\u{FFFD}')), "{records:?}");
    assert_eq!(text_of(&records, LogStream::Err), "err\n");
    let last = records.last().unwrap();
    assert_eq!((last.s, last.d.as_str()), (LogStream::Sys, "entrypoint exited with code 3"));
    assert!(records.windows(2).all(|w| w[0].t <= w[1].t));
    let st = sb.status();
    assert_eq!(st.entrypoint_exit.unwrap().code, Some(3));
    assert!(st.entrypoint_pid.is_some_and(|p| p > 1));
    assert_eq!(st.entrypoint_error, None);
    assert_eq!(st.init_pid, sb.pid());
}

#[test]
fn entrypoint_killed_by_a_signal_exits_init_with_128_plus_signal() {
    let mut sb = Sandbox::start(&[], &["sh", "-c", "kill -9 $$"]);
    assert_eq!(sb.wait_exit(Duration::from_secs(10)).unwrap().code(), Some(137));
    assert_eq!(sb.log_records().last().unwrap().d, "entrypoint killed by signal 9");
    assert_eq!(sb.status().entrypoint_exit.unwrap().signal, Some(9));
}

#[test]
fn missing_entrypoint_binary_exits_127_with_a_sys_record() {
    let mut sb = Sandbox::start(&[], &["/nonexistent/app", "arg"]);
    assert_eq!(sb.wait_exit(Duration::from_secs(10)).unwrap().code(), Some(127));
    let records = sb.log_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (records[0].s, records[0].d.as_str()),
        (LogStream::Sys, "exec /nonexistent/app: No such file or directory")
    );
    let st = sb.status();
    assert_eq!(st.entrypoint_error.as_deref(), Some("exec /nonexistent/app: No such file or directory"));
    assert_eq!(st.entrypoint_pid, None);
}

#[test]
fn entrypoint_that_is_not_executable_exits_126() {
    let mut sb = Sandbox::start(&[], &["/etc/passwd"]);
    assert_eq!(sb.wait_exit(Duration::from_secs(10)).unwrap().code(), Some(126));
    assert!(sb.status().entrypoint_error.unwrap().contains("Permission denied"));
}

#[test]
fn keep_running_serves_after_the_entrypoint_exits() {
    let mut sb = Sandbox::start(&["--keep-running"], &["sh", "-c", "exit 3"]);
    assert!(eventually(Duration::from_secs(5), || sb
        .try_status()
        .is_some_and(|s| s.entrypoint_exit.is_some())));
    assert!(sb.wait_exit(Duration::from_millis(300)).is_none(), "init stays up");
    let Response::Hello { entrypoint: Some(ep), .. } = sb.call(Request::Hello) else {
        panic!("no entrypoint")
    };
    assert!(ep.entrypoint);
    assert_eq!(ep.argv, ["sh", "-c", "exit 3"]);
    assert_eq!(ep.exit.unwrap().code, Some(3));
    let Response::Procs { procs } = sb.call(Request::ListProcs) else { panic!() };
    assert!(procs.iter().any(|p| p.entrypoint && p.pid == ep.pid));
    assert!(sb.exec(argv(&["true"])).status.success());
}

#[test]
fn entrypoint_can_be_signalled_and_its_user_and_cwd_apply() {
    let mut sb =
        Sandbox::start(&["--user", "nobody", "--cwd", "/tmp"], &["sh", "-c", "id -u; pwd; exec sleep 100"]);
    assert!(eventually(Duration::from_secs(5), || sb.log_records().len() >= 2));
    let Response::Hello { entrypoint: Some(ep), .. } = sb.call(Request::Hello) else { panic!() };
    assert_eq!((ep.uid, ep.cwd.as_str()), (65534, "/tmp"));
    let reply =
        sb.call(Request::Signal { target: ProcSelector::Pid(ep.pid), signal: libc::SIGUSR1, group: true });
    assert_eq!(reply, Response::Ok);
    assert_eq!(sb.wait_exit(Duration::from_secs(5)).unwrap().code(), Some(128 + libc::SIGUSR1));
    assert_eq!(text_of(&sb.log_records(), LogStream::Out), "65534\n/tmp\n");
}

#[test]
fn init_kills_everything_when_the_entrypoint_exits() {
    let mut sb = Sandbox::start(&[], &["sleep", "1"]);
    let mut req = argv(&["sleep", "100"]);
    req.keep_on_disconnect = true;
    let mut c = sb.request(Request::Exec(req));
    let pid = c.started();
    drop(c);
    assert_eq!(sb.wait_exit(Duration::from_secs(10)).unwrap().code(), Some(0));
    assert!(eventually(Duration::from_secs(2), || group_members(pid).is_empty()));
}

#[test]
fn sigterm_ends_processes_then_init() {
    let mut sb = Sandbox::start(
        &["--keep-running"],
        &["sh", "-c", "trap 'echo got term; exit 0' TERM; while true; do sleep 0.1; done"],
    );
    let mut req = argv(&["sleep", "100"]);
    req.keep_on_disconnect = true;
    let pid = sb.request(Request::Exec(req)).started();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(i32::try_from(sb.pid()).unwrap(), libc::SIGTERM) };
    let status = sb.wait_exit(Duration::from_secs(5)).expect("init exits");
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    assert_eq!(status.code(), Some(0), "the entrypoint's exit code");
    assert!(group_members(pid).is_empty());
    let records = sb.log_records();
    assert!(text_of(&records, LogStream::Out).contains("got term"), "{records:?}");
}

#[test]
fn sigterm_kills_processes_that_ignore_it_after_the_grace() {
    let mut sb = Sandbox::idle();
    let mut req = common::shell("trap '' TERM; sleep 100 & while true; do sleep 0.1; done");
    req.keep_on_disconnect = true;
    let pid = sb.request(Request::Exec(req)).started();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(i32::try_from(sb.pid()).unwrap(), libc::SIGTERM) };
    let status = sb.wait_exit(Duration::from_secs(6)).expect("init exits");
    assert!(start.elapsed() >= Duration::from_millis(1900), "{:?}", start.elapsed());
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(eventually(Duration::from_secs(1), || group_members(pid).is_empty()));
}

#[test]
fn log_disk_use_is_bounded_by_punching_holes() {
    let max: u64 = 64 * 1024;
    let line = "y".repeat(200);
    let mut sb = Sandbox::start(
        &["--log-max-bytes", &max.to_string()],
        &["sh", "-c", &format!("i=0; while [ $i -lt 8000 ]; do echo {line}; i=$((i+1)); done")],
    );
    assert_eq!(sb.wait_exit(Duration::from_secs(30)).unwrap().code(), Some(0));
    let meta = std::fs::metadata(&sb.log).unwrap();
    assert!(meta.len() > 1_500_000, "size {}", meta.len());
    let on_disk = meta.blocks() * 512;
    assert!(on_disk <= max + max / 4 + 8192, "{on_disk} bytes on disk");
    // The end of the log is whole records.
    let content = std::fs::read(&sb.log).unwrap();
    let tail = &content[content.len() - 20_000..];
    let start = tail.iter().position(|b| *b == b'\n').unwrap() + 1;
    let mut records = 0;
    for line in tail[start..].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let _: sandpit_init::protocol::LogRecord = serde_json::from_slice(line).unwrap();
        records += 1;
    }
    assert!(records > 50, "one record per line: {records}");
}

#[test]
fn without_a_log_the_entrypoint_still_runs() {
    let mut sb = Sandbox::start(&["--log-fd", "-1", "--status-fd=-1"], &["sh", "-c", "echo lost; exit 4"]);
    assert_eq!(sb.wait_exit(Duration::from_secs(10)).unwrap().code(), Some(4));
    assert_eq!(std::fs::metadata(&sb.log).unwrap().len(), 0);
    assert_eq!(std::fs::metadata(&sb.status).unwrap().len(), 0);
}

#[test]
fn inherited_descriptors_do_not_reach_processes() {
    let sb = Sandbox::idle();
    let r = sb.exec(argv(&["ls", "/proc/self/fd"]));
    let mut fds: Vec<u32> = r.out().split_whitespace().map(|s| s.parse().unwrap()).collect();
    fds.sort_unstable();
    // 0, 1, 2 and the descriptor ls opened to read the directory.
    assert_eq!(fds.len(), 4, "{fds:?}");
    assert_eq!(&fds[..3], &[0, 1, 2]);
    let init_fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", sb.pid()))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            format!("{:?}={}", e.file_name(), std::fs::read_link(e.path()).unwrap().display())
        })
        .collect();
    assert_eq!(init_fds.iter().filter(|t| t.ends_with("=/dev/null")).count(), 4, "{init_fds:?}");
    assert!(!init_fds.iter().any(|t| t.contains("pipe:")), "stray inherited descriptors: {init_fds:?}");
}

#[test]
fn idle_memory_is_small() {
    let sb = Sandbox::idle();
    assert!(matches!(sb.call(Request::Hello), Response::Hello { .. }));
    std::thread::sleep(Duration::from_millis(200));
    let rss = sb.rss_kib();
    // The release static build is measured separately; a debug build is larger.
    assert!(rss < 8 * 1024, "idle RSS {rss} KiB");
}

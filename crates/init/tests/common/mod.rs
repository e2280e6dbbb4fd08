//! Test harness: runs the real `sandpit-init` binary as an ordinary child process with a listening
//! socket on fd 3, a log file on fd 4 and a status file on fd 5, and speaks the protocol to it.
// Test-harness code: a failing step must fail the test, so it panics; not every test binary
// uses every helper.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sandpit_init::protocol::{
    Envelope, ExecRequest, ExitStatus, Frame, FrameKind, InitStatus, LogRecord, PROTOCOL_VERSION, Request,
    Response,
};

/// A running `sandpit-init` with its own temporary directory.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub status: PathBuf,
}

impl Sandbox {
    /// Starts init with `args` and, when not empty, an entrypoint `argv`.
    pub fn start(args: &[&str], argv: &[&str]) -> Self {
        Self::start_wrapped(&[], args, argv)
    }

    /// Starts init through `wrapper` (a command that ends by exec'ing its arguments, so init
    /// keeps the child's pid and descriptors).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str], argv: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("init.sock");
        let log = dir.path().join("log.jsonl");
        let status = dir.path().join("status.json");
        let listener = UnixListener::bind(&socket).unwrap();
        let log_file = OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let status_file = OpenOptions::new().create(true).truncate(true).write(true).open(&status).unwrap();
        let fds = [listener.as_raw_fd(), log_file.as_raw_fd(), status_file.as_raw_fd()];
        // SANDPIT_INIT_BIN runs the same tests against another build (the static release one).
        let init = std::env::var("SANDPIT_INIT_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sandpit-init").to_owned());
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&init);
                c
            }
            None => Command::new(&init),
        };
        command.args(args);
        if !argv.is_empty() {
            command.arg("--").args(argv);
        }
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: the closure only calls async-signal-safe fcntl/dup2 on descriptors that stay
        // open in the parent until spawn returns.
        unsafe {
            command.pre_exec(move || {
                let mut high = [0; 3];
                for (i, fd) in fds.iter().enumerate() {
                    high[i] = libc::fcntl(*fd, libc::F_DUPFD, 200);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (fd, target) in high.iter().zip([3, 4, 5]) {
                    if libc::dup2(*fd, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(*fd);
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        drop((listener, log_file, status_file));
        Self { dir, child, socket, log, status }
    }

    /// Starts an idle init (no entrypoint) that keeps running.
    pub fn idle() -> Self {
        Self::start(&[], &[])
    }

    /// Init's pid on the host.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new connection.
    pub fn connect(&self) -> Client {
        let stream = UnixStream::connect(&self.socket).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client { stream }
    }

    /// A new connection carrying `request`.
    pub fn request(&self, request: Request) -> Client {
        let mut client = self.connect();
        client.send(request);
        client
    }

    /// Sends `request` and returns the single JSON answer.
    pub fn call(&self, request: Request) -> Response {
        self.request(request).recv_json()
    }

    /// Runs a process to its end.
    pub fn exec(&self, request: ExecRequest) -> ExecResult {
        self.request(Request::Exec(request)).collect_process()
    }

    /// Waits for init to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The log's records.
    pub fn log_records(&self) -> Vec<LogRecord> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}")))
            .collect()
    }

    /// The status file.
    pub fn status(&self) -> InitStatus {
        serde_json::from_slice(&std::fs::read(&self.status).unwrap()).unwrap()
    }

    /// The status file, once written.
    pub fn try_status(&self) -> Option<InitStatus> {
        serde_json::from_slice(&std::fs::read(&self.status).ok()?).ok()
    }

    /// Init's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Init's thread count.
    pub fn threads(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Pids whose parent is init, with their state letter.
    pub fn children(&self) -> Vec<(u32, char)> {
        let me = self.pid();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap().chars().next().unwrap();
            let ppid: u32 = fields.next().unwrap().parse().unwrap();
            if ppid == me {
                out.push((pid, state));
            }
        }
        out
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) of our own child, which has not been waited for yet.
        unsafe {
            libc::kill(i32::try_from(self.child.id()).unwrap(), libc::SIGTERM);
        }
        if self.wait_exit(Duration::from_secs(4)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Pids of live processes in process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields[0] != "Z" && fields[2].parse::<u32>().unwrap() == pgid {
            out.push(pid);
        }
    }
    out
}

/// Polls `check` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// One connection to init.
pub struct Client {
    pub stream: UnixStream,
}

/// Everything an exec or attach stream delivered.
#[derive(Debug, Default)]
pub struct ExecResult {
    pub pid: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub pty: Vec<u8>,
    pub status: ExitStatus,
}

impl ExecResult {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl Client {
    /// Sends a request in the current protocol version.
    pub fn send(&mut self, request: Request) {
        Frame::json(&Envelope { v: PROTOCOL_VERSION, request }).write_to(&mut self.stream).unwrap();
    }

    /// Sends one frame.
    pub fn send_frame(&mut self, frame: Frame) {
        frame.write_to(&mut self.stream).unwrap();
    }

    /// Sends a stdin frame.
    pub fn stdin(&mut self, data: &[u8]) {
        self.send_frame(Frame::data(FrameKind::Stdin, data.to_vec()));
    }

    /// Sends an end frame.
    pub fn end(&mut self) {
        self.send_frame(Frame::end());
    }

    /// The next frame (`None` at end of stream).
    pub fn recv(&mut self) -> Option<Frame> {
        Frame::read_from(&mut self.stream).unwrap()
    }

    /// The next frame, which must be JSON.
    pub fn recv_json(&mut self) -> Response {
        let frame = self.recv().expect("connection closed");
        assert_eq!(frame.kind, FrameKind::Json, "unexpected {:?} frame", frame.kind);
        frame.parse_json().unwrap()
    }

    /// Expects `started`, returns the pid.
    pub fn started(&mut self) -> u32 {
        match self.recv_json() {
            Response::Started { pid } => pid,
            other => panic!("expected started, got {other:?}"),
        }
    }

    /// Reads `started`, the output and `exited`.
    pub fn collect_process(&mut self) -> ExecResult {
        let pid = self.started();
        self.collect_after_start(pid)
    }

    /// Reads the output and `exited`.
    pub fn collect_after_start(&mut self, pid: u32) -> ExecResult {
        let mut result = ExecResult { pid, ..ExecResult::default() };
        loop {
            let frame = self.recv().expect("stream ended before exited");
            match frame.kind {
                FrameKind::Stdout => result.stdout.extend(frame.payload),
                FrameKind::Stderr => result.stderr.extend(frame.payload),
                FrameKind::Pty => result.pty.extend(frame.payload),
                FrameKind::Json => match frame.parse_json().unwrap() {
                    Response::Exited { pid: exited, status } => {
                        assert_eq!(exited, pid);
                        result.status = status;
                        return result;
                    }
                    other => panic!("unexpected {other:?}"),
                },
                other => panic!("unexpected {other:?} frame"),
            }
        }
    }
}

/// An exec of `sh -c line`.
pub fn shell(line: &str) -> ExecRequest {
    ExecRequest {
        command: Some(sandpit_init::protocol::Command::Shell(line.to_owned())),
        ..ExecRequest::default()
    }
}

/// An exec of an argument vector.
pub fn argv(args: &[&str]) -> ExecRequest {
    ExecRequest {
        command: Some(sandpit_init::protocol::Command::Argv(args.iter().map(|s| s.to_string()).collect())),
        ..ExecRequest::default()
    }
}

/// Expects an error response and returns its code and message.
pub fn expect_error(response: Response) -> (sandpit_init::protocol::ErrorCode, String) {
    match response {
        Response::Error { code, message } => (code, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

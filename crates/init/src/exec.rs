//! Running programs for the host: launching (environment, user, directory, stdio or pty),
//! the `exec` and `attach` streams, and the requests that act on a running process.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::EventfdFlags;
use rustix::pipe::PipeFlags;
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use sandpit_init::protocol::{
    Command, ErrorCode, ExecRequest, Frame, FrameKind, ProcInfo, ProcSelector, PtySize, Response,
};

use crate::conn::Conn;
use crate::error::Failure;
use crate::procs::{CursorId, NextOutput, Proc, ProcSetup};
use crate::pump::{self, OutputSources, Sink};
use crate::spawn::{ChildStdio, ProgramSpec, SpawnError, fork_program};
use crate::state::InitState;
use crate::sys::{HELPER_STACK, signal_group, signal_process, spawn_thread, unix_millis};
use crate::users::{Identity, UserDb};

/// `PATH` used when the environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to launch.
#[derive(Debug)]
pub struct Launch<'a> {
    /// Argument vector.
    pub argv: Vec<String>,
    /// Extra environment, over the base environment and the identity's variables.
    pub env: &'a BTreeMap<String, String>,
    /// Working directory as asked (relative to the home directory); `None` for the default.
    pub cwd: Option<&'a str>,
    /// Who runs it.
    pub identity: Identity,
    /// Give it a stdin pipe (otherwise `/dev/null`).
    pub stdin: bool,
    /// Run it on a pty of this size.
    pub pty: Option<PtySize>,
    /// Tag to find it by.
    pub tag: Option<String>,
    /// Kill it after this long.
    pub timeout: Option<Duration>,
    /// It is the sandbox's entrypoint: its `HOME`/`USER`/`LOGNAME` only fill in what init's own
    /// environment (the OCI config) lacks.
    pub entrypoint: bool,
}

/// Why a launch failed.
#[derive(Debug)]
pub enum LaunchError {
    /// Refused before anything ran (bad request, missing directory, no resources).
    Refused(Failure),
    /// The child could not exec the program.
    Spawn(SpawnError),
}

impl LaunchError {
    /// The answer to the host.
    pub fn into_failure(self) -> Failure {
        match self {
            Self::Refused(f) => f,
            Self::Spawn(e) => Failure::new(ErrorCode::SpawnFailed, e.to_string()),
        }
    }

    /// The exit code a shell would give: 126 when the program is not executable, else 127.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Spawn(e) if e.errno == libc::EACCES => 126,
            _ => 127,
        }
    }

    /// What went wrong, for people.
    pub fn message(&self) -> String {
        match self {
            Self::Refused(f) => f.message.clone(),
            Self::Spawn(e) => e.to_string(),
        }
    }
}

impl From<Failure> for LaunchError {
    fn from(f: Failure) -> Self {
        Self::Refused(f)
    }
}

/// The process environment: `base`, then the identity's `HOME`/`USER`/`LOGNAME`, then `extra`;
/// later entries win.
pub fn environment(
    base: &[(OsString, OsString)],
    identity: &Identity,
    extra: &BTreeMap<String, String>,
    identity_fills_only: bool,
) -> Result<Vec<(OsString, OsString)>, Failure> {
    let mut env: Vec<(OsString, OsString)> = base.to_vec();
    let set = |env: &mut Vec<(OsString, OsString)>, key: &OsStr, value: &OsStr, replace: bool| match env
        .iter_mut()
        .find(|(k, _)| k == key)
    {
        Some(entry) if replace => entry.1 = value.to_owned(),
        Some(_) => {}
        None => env.push((key.to_owned(), value.to_owned())),
    };
    let replace = !identity_fills_only;
    set(&mut env, OsStr::new("HOME"), OsStr::new(&identity.home), replace);
    if let Some(name) = &identity.name {
        set(&mut env, OsStr::new("USER"), OsStr::new(name), replace);
        set(&mut env, OsStr::new("LOGNAME"), OsStr::new(name), replace);
    }
    for (key, value) in extra {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(Failure::invalid(format!("bad environment variable name '{key}'")));
        }
        if value.contains('\0') {
            return Err(Failure::invalid(format!("environment variable {key} contains a NUL byte")));
        }
        set(&mut env, OsStr::new(key), OsStr::new(value), true);
    }
    Ok(env)
}

/// The paths `execvp` would try for `program` with this `PATH`.
pub fn exec_candidates(program: &str, path: Option<&OsStr>) -> Vec<Vec<u8>> {
    if program.is_empty() {
        return Vec::new();
    }
    if program.contains('/') {
        return vec![program.as_bytes().to_vec()];
    }
    let path = path.map_or(DEFAULT_PATH.as_bytes(), OsStr::as_bytes);
    path.split(|b| *b == b':')
        .map(|dir| {
            let mut candidate = if dir.is_empty() { b".".to_vec() } else { dir.to_vec() };
            candidate.push(b'/');
            candidate.extend_from_slice(program.as_bytes());
            candidate
        })
        .collect()
}

fn c_string(bytes: impl Into<Vec<u8>>, what: &str) -> Result<CString, Failure> {
    CString::new(bytes).map_err(|_| Failure::invalid(format!("{what} contains a NUL byte")))
}

/// An absolute path: `path` itself, or `path` under `base`.
pub fn absolute_under(base: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else if base.ends_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    }
}

fn working_directory(identity: &Identity, asked: Option<&str>) -> Result<String, Failure> {
    match asked.filter(|c| !c.is_empty()) {
        Some(cwd) => {
            let cwd = absolute_under(&identity.home, cwd);
            match std::fs::metadata(&cwd) {
                Ok(meta) if meta.is_dir() => Ok(cwd),
                Ok(_) => Err(Failure::invalid(format!("cwd '{cwd}' is not a directory"))),
                Err(_) => Err(Failure::invalid(format!("cwd '{cwd}' does not exist"))),
            }
        }
        None if std::fs::metadata(&identity.home).is_ok_and(|m| m.is_dir()) => Ok(identity.home.clone()),
        None => Ok("/".to_owned()),
    }
}

/// The child's ends and init's ends of a process's stdio.
struct Stdio {
    child_stdin: Option<OwnedFd>,
    child_stdout: Option<OwnedFd>,
    child_stderr: Option<OwnedFd>,
    pty_slave: Option<OwnedFd>,
    stdin_writer: Option<File>,
    sources: OutputSources,
    pty_master: Option<Arc<OwnedFd>>,
}

fn make_stdio(stdin: bool, pty: Option<PtySize>) -> rustix::io::Result<Stdio> {
    if let Some(size) = pty {
        let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let slave = rustix::pty::ioctl_tiocgptpeer(
            &master,
            OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
        )?;
        rustix::termios::tcsetwinsize(&master, winsize(size))?;
        let master = Arc::new(master);
        return Ok(Stdio {
            child_stdin: None,
            child_stdout: None,
            child_stderr: None,
            pty_slave: Some(slave),
            stdin_writer: None,
            sources: OutputSources::Pty(Arc::clone(&master)),
            pty_master: Some(master),
        });
    }
    let (stdin_read, stdin_writer) = if stdin {
        let (r, w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
        (Some(r), Some(File::from(w)))
    } else {
        (None, None)
    };
    let (out_read, out_write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    let (err_read, err_write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    Ok(Stdio {
        child_stdin: stdin_read,
        child_stdout: Some(out_write),
        child_stderr: Some(err_write),
        pty_slave: None,
        stdin_writer,
        sources: OutputSources::Pipes { stdout: out_read, stderr: err_read },
        pty_master: None,
    })
}

fn winsize(size: PtySize) -> Winsize {
    Winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 }
}

/// Starts a program and its output pump; with `attach`, also a reader cursor positioned before
/// its first byte of output.
pub fn launch(
    init: &'static InitState,
    launch: Launch<'_>,
    sink: Sink,
    attach: bool,
) -> Result<(Arc<Proc>, Option<CursorId>), LaunchError> {
    let Some(program) = launch.argv.first() else {
        return Err(Failure::invalid("the command is empty").into());
    };
    let env = environment(&init.base_env, &launch.identity, launch.env, launch.entrypoint)?;
    let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_os_str());
    let cwd = working_directory(&launch.identity, launch.cwd)?;
    let spec = ProgramSpec {
        argv: launch.argv.iter().map(|a| c_string(a.as_bytes(), "an argument")).collect::<Result<_, _>>()?,
        candidates: exec_candidates(program, path)
            .into_iter()
            .map(|c| c_string(c, "the program path"))
            .collect::<Result<_, _>>()?,
        env: env
            .into_iter()
            .map(|(k, v)| {
                let mut entry = k.into_vec();
                entry.push(b'=');
                entry.extend_from_slice(&v.into_vec());
                c_string(entry, "the environment")
            })
            .collect::<Result<_, _>>()?,
        cwd: c_string(cwd.as_bytes(), "the working directory")?,
        uid: launch.identity.uid,
        gid: launch.identity.gid,
        groups: launch.identity.groups.clone(),
    };
    let resources = |e: rustix::io::Errno| Failure::errno(e, "cannot set up the process");
    let mut stdio = make_stdio(launch.stdin, launch.pty).map_err(resources)?;
    let exit_event =
        rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(resources)?;
    let info = ProcInfo {
        pid: 0,
        tag: launch.tag.clone(),
        argv: launch.argv.clone(),
        env: launch.env.clone(),
        cwd,
        uid: launch.identity.uid,
        started_at_ms: unix_millis(),
        entrypoint: launch.entrypoint,
        pty: launch.pty.is_some(),
        exit: None,
    };
    // The output thread starts before the process: a process that exhausts the sandbox's pids
    // limit at once (a fork bomb) must not leave init unable to collect its output and exit.
    let (pump_tx, pump_rx) = std::sync::mpsc::sync_channel::<(Arc<Proc>, Option<Instant>)>(1);
    let sources = stdio.sources;
    let pump = spawn_thread("pump", HELPER_STACK, move || {
        let Ok((pump_proc, deadline)) = pump_rx.recv() else { return };
        pump::run(&pump_proc, sources, deadline, &sink);
        if let Sink::Log(init) = sink {
            crate::entrypoint::on_exit(init, &pump_proc);
        }
    })
    .map_err(|e| Failure::io(&e, "cannot start the output thread"))?;
    let mut report = None;
    let proc = init.procs.start_locked(|| {
        let child_stdio = match &stdio.pty_slave {
            Some(slave) => ChildStdio {
                stdin: slave.as_fd(),
                stdout: slave.as_fd(),
                stderr: slave.as_fd(),
                controlling_tty: true,
            },
            None => ChildStdio {
                stdin: stdio.child_stdin.as_ref().map_or(init.dev_null.as_fd(), AsFd::as_fd),
                stdout: stdio.child_stdout.as_ref().map_or(init.dev_null.as_fd(), AsFd::as_fd),
                stderr: stdio.child_stderr.as_ref().map_or(init.dev_null.as_fd(), AsFd::as_fd),
                controlling_tty: false,
            },
        };
        let (pid, exec_report) =
            fork_program(&spec, child_stdio).map_err(|e| Failure::io(&e, "cannot start a process"))?;
        report = Some(exec_report);
        Ok::<_, Failure>((
            pid,
            ProcSetup {
                info,
                stdin: stdio.stdin_writer.take(),
                pty_master: stdio.pty_master.clone(),
                exit_event,
            },
        ))
    })?;
    drop((stdio.child_stdin.take(), stdio.child_stdout.take(), stdio.child_stderr.take()));
    drop(stdio.pty_slave.take());
    let cursor = attach.then(|| proc.attach());
    if let Some(report) = report
        && let Err(e) = report.wait()
    {
        init.procs.remove(&proc);
        return Err(LaunchError::Spawn(e));
    }
    let deadline = launch.timeout.map(|t| Instant::now() + t);
    if pump_tx.send((Arc::clone(&proc), deadline)).is_err() {
        let _ = signal_group(proc.pid, libc::SIGKILL);
        return Err(Failure::invalid("the output thread ended early").into());
    }
    drop(pump);
    Ok((proc, cursor))
}

/// Serves an `exec` request.
pub fn serve_exec(init: &'static InitState, mut conn: Conn, request: ExecRequest) {
    let argv = match &request.command {
        Some(Command::Argv(argv)) if !argv.is_empty() => argv.clone(),
        Some(Command::Shell(line)) => vec!["/bin/sh".to_owned(), "-c".to_owned(), line.clone()],
        _ => return conn.fail(Failure::invalid("exec needs a non-empty command")),
    };
    let identity = match UserDb::load().resolve(request.user.as_deref()) {
        Ok(identity) => identity,
        Err(f) => return conn.fail(f),
    };
    let launch_request = Launch {
        argv,
        env: &request.env,
        cwd: request.cwd.as_deref(),
        identity,
        stdin: request.stdin,
        pty: request.pty,
        tag: request.tag.clone(),
        timeout: request.timeout_ms.filter(|&ms| ms > 0).map(Duration::from_millis),
        entrypoint: false,
    };
    match launch(init, launch_request, Sink::Buffer, true) {
        Ok((proc, Some(cursor))) => {
            let accepts_input = request.stdin || request.pty.is_some();
            stream_process(conn, proc, cursor, !request.keep_on_disconnect, accepts_input);
        }
        Ok((_, None)) => conn.fail(Failure::new(ErrorCode::Io, "no output cursor")),
        Err(e) => conn.fail(e.into_failure()),
    }
}

/// Serves an `attach` request.
pub fn serve_attach(init: &'static InitState, mut conn: Conn, target: &ProcSelector, stdin: bool) {
    let proc = match find(init, target) {
        Ok(proc) => proc,
        Err(f) => return conn.fail(f),
    };
    if stdin && !proc.has_stdin() && proc.pty_master().is_none() {
        return conn.fail(Failure::invalid(format!("process {} was not started with stdin", proc.pid)));
    }
    let cursor = proc.attach();
    stream_process(conn, proc, cursor, false, stdin);
}

/// Streams `started`, the output and `exited`; reads stdin frames on a helper thread, which
/// also notices the host closing the connection.
fn stream_process(
    mut conn: Conn,
    proc: Arc<Proc>,
    cursor: CursorId,
    kill_on_disconnect: bool,
    accepts_input: bool,
) {
    let disconnected = |proc: &Proc| {
        if kill_on_disconnect && proc.exit_status().is_none() {
            let _ = signal_group(proc.pid, libc::SIGKILL);
        }
    };
    if conn.send(&Response::Started { pid: proc.pid }).is_err() {
        disconnected(&proc);
        proc.detach(cursor);
        return;
    }
    let reader = conn.stream().try_clone().ok().and_then(|stream| {
        let proc = Arc::clone(&proc);
        spawn_thread("input", HELPER_STACK, move || {
            read_input(stream, &proc, accepts_input);
            proc.cancel(cursor);
            if kill_on_disconnect && proc.exit_status().is_none() {
                let _ = signal_group(proc.pid, libc::SIGKILL);
            }
        })
        .ok()
    });
    let mut buf = Vec::with_capacity(16 << 10);
    loop {
        match proc.next_output(cursor, &mut buf) {
            NextOutput::Data(kind) => {
                if conn.send_data(kind, &buf).is_err() {
                    disconnected(&proc);
                    break;
                }
                proc.advance(cursor, buf.len());
            }
            NextOutput::Exited(status) => {
                let _ = conn.send(&Response::Exited { pid: proc.pid, status });
                break;
            }
            NextOutput::Cancelled => break,
        }
    }
    proc.detach(cursor);
    conn.shutdown();
    if let Some(reader) = reader {
        let _ = reader.join();
    }
}

/// Reads frames from the host until it closes the connection; stdin frames go to the process.
fn read_input(mut stream: UnixStream, proc: &Proc, accepts_input: bool) {
    while let Ok(Some(frame)) = Frame::read_from(&mut stream) {
        if !accepts_input {
            continue;
        }
        match frame.kind {
            FrameKind::Stdin => {
                let _ = write_input(proc, &frame.payload);
            }
            FrameKind::End if proc.pty_master().is_none() => proc.close_stdin(),
            _ => {}
        }
    }
}

/// Writes bytes to a process's stdin pipe or pty.
fn write_input(proc: &Proc, data: &[u8]) -> Result<(), Failure> {
    if let Some(master) = proc.pty_master() {
        let mut rest = data;
        while !rest.is_empty() {
            match rustix::io::write(master.as_fd(), rest) {
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Failure::errno(e, &format!("pty of process {}", proc.pid))),
            }
        }
        return Ok(());
    }
    let Some(stdin) = proc.stdin() else {
        return Err(Failure::invalid(format!("stdin of process {} is closed", proc.pid)));
    };
    (&*stdin).write_all(data).map_err(|e| Failure::io(&e, &format!("stdin of process {}", proc.pid)))
}

/// Finds a process or answers `no_such_process`.
pub fn find(init: &InitState, target: &ProcSelector) -> Result<Arc<Proc>, Failure> {
    init.procs.find(target).ok_or_else(|| {
        let what = match target {
            ProcSelector::Pid(pid) => format!("no process {pid}"),
            ProcSelector::Tag(tag) => format!("no process tagged '{tag}'"),
        };
        Failure::new(ErrorCode::NoSuchProcess, what)
    })
}

/// Serves `signal`.
pub fn signal(init: &InitState, target: &ProcSelector, signal: i32, group: bool) -> Result<(), Failure> {
    if !(0..=64).contains(&signal) {
        return Err(Failure::invalid(format!("bad signal number {signal}")));
    }
    let proc = find(init, target)?;
    let gone = || Failure::new(ErrorCode::ProcessExited, format!("process {} has exited", proc.pid));
    let sent = if group {
        signal_group(proc.pid, signal)
    } else if proc.exit_status().is_some() {
        return Err(gone());
    } else {
        signal_process(proc.pid, signal)
    };
    match sent {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(gone()),
        Err(e) => Err(Failure::io(&e, &format!("signal process {}", proc.pid))),
    }
}

/// Serves `write_stdin`: stdin frames until `end`, then `ok`.
pub fn serve_write_stdin(init: &InitState, mut conn: Conn, target: &ProcSelector) {
    let proc = match find(init, target) {
        Ok(proc) => proc,
        Err(f) => return conn.fail_and_drain(f),
    };
    if !proc.has_stdin() && proc.pty_master().is_none() {
        return conn
            .fail_and_drain(Failure::invalid(format!("process {} was not started with stdin", proc.pid)));
    }
    loop {
        match conn.read_frame() {
            Ok(Some(frame)) if frame.kind == FrameKind::Stdin => {
                if let Err(f) = write_input(&proc, &frame.payload) {
                    return conn.fail_and_drain(f);
                }
            }
            Ok(Some(frame)) if frame.kind == FrameKind::End => {
                let _ = conn.send(&Response::Ok);
                return;
            }
            Ok(Some(_)) => return conn.fail(Failure::invalid("expected stdin frames and an end frame")),
            Ok(None) | Err(_) => return,
        }
    }
}

/// Serves `close_stdin`.
pub fn close_stdin(init: &InitState, target: &ProcSelector) -> Result<(), Failure> {
    let proc = find(init, target)?;
    if proc.pty_master().is_some() {
        return Err(Failure::invalid(format!("process {} runs on a pty", proc.pid)));
    }
    if !proc.has_stdin() {
        return Err(Failure::invalid(format!("process {} was not started with stdin", proc.pid)));
    }
    proc.close_stdin();
    Ok(())
}

/// Serves `resize_pty`.
pub fn resize_pty(init: &InitState, target: &ProcSelector, size: PtySize) -> Result<(), Failure> {
    let proc = find(init, target)?;
    let Some(master) = proc.pty_master() else {
        return Err(Failure::invalid(format!("process {} does not run on a pty", proc.pid)));
    };
    rustix::termios::tcsetwinsize(master.as_fd(), winsize(size))
        .map_err(|e| Failure::errno(e, &format!("pty of process {}", proc.pid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Identity {
        Identity { uid: 0, gid: 0, groups: vec![0], name: Some("root".into()), home: "/root".into() }
    }

    #[test]
    fn environment_layers_later_wins() {
        let base = vec![
            (OsString::from("PATH"), OsString::from("/bin")),
            (OsString::from("HOME"), OsString::from("/oci")),
        ];
        let mut extra = BTreeMap::new();
        extra.insert("PATH".to_owned(), "/custom".to_owned());
        let env = environment(&base, &root(), &extra, false).unwrap();
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.to_str().unwrap().to_owned());
        assert_eq!(get("PATH").as_deref(), Some("/custom"));
        assert_eq!(get("HOME").as_deref(), Some("/root"));
        assert_eq!(get("USER").as_deref(), Some("root"));
        let env = environment(&base, &root(), &BTreeMap::new(), true).unwrap();
        assert!(env.contains(&(OsString::from("HOME"), OsString::from("/oci"))));
    }

    #[test]
    fn bad_environment_names_are_refused() {
        let mut extra = BTreeMap::new();
        extra.insert("A=B".to_owned(), "x".to_owned());
        assert!(environment(&[], &root(), &extra, false).is_err());
    }

    #[test]
    fn path_search_follows_execvp() {
        assert_eq!(exec_candidates("./x", None), vec![b"./x".to_vec()]);
        assert_eq!(
            exec_candidates("ls", Some(OsStr::new("/a::/b"))),
            vec![b"/a/ls".to_vec(), b"./ls".to_vec(), b"/b/ls".to_vec()]
        );
        assert!(exec_candidates("", None).is_empty());
    }

    #[test]
    fn relative_paths_are_under_the_base() {
        assert_eq!(absolute_under("/home/u", "x/y"), "/home/u/x/y");
        assert_eq!(absolute_under("/", "x"), "/x");
        assert_eq!(absolute_under("/home/u", "/etc"), "/etc");
    }
}

//! Starting a program: fork, prepare the child (signals, session, terminal, descriptors,
//! credentials, directory), exec, and report a failure before exec back to the parent.
//!
//! The child runs between `fork` and `exec` in a copy of a multi-threaded process, so it only
//! makes async-signal-safe system calls on memory prepared before the fork: no allocation, no
//! locks. Init never uses `std::process::Command`, whose error path calls `waitpid` on the child
//! and would race init's reaper.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::pipe::PipeFlags;

use crate::sys::os_message;

/// Everything the child needs, prepared before the fork.
#[derive(Debug)]
pub struct ProgramSpec {
    /// The argument vector.
    pub argv: Vec<CString>,
    /// Paths to try with `execve`, in order (the `PATH` search, done like `execvp`).
    pub candidates: Vec<CString>,
    /// `NAME=value` strings.
    pub env: Vec<CString>,
    /// Working directory.
    pub cwd: CString,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// The child's standard descriptors.
#[derive(Debug, Clone, Copy)]
pub struct ChildStdio<'a> {
    /// Becomes descriptor 0.
    pub stdin: BorrowedFd<'a>,
    /// Becomes descriptor 1.
    pub stdout: BorrowedFd<'a>,
    /// Becomes descriptor 2.
    pub stderr: BorrowedFd<'a>,
    /// Make descriptor 0 (a pty slave) the controlling terminal of the new session.
    pub controlling_tty: bool,
}

/// The step of child setup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SpawnStage {
    /// `setsid`.
    Session = 1,
    /// `TIOCSCTTY`.
    Terminal = 2,
    /// `dup2` of the standard descriptors.
    Descriptors = 3,
    /// `setgroups`, `setresgid` or `setresuid`.
    Credentials = 4,
    /// `chdir`.
    Directory = 5,
    /// `execve`.
    Exec = 6,
}

/// Why the program could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnError {
    /// What failed.
    pub stage: SpawnStage,
    /// The OS error number.
    pub errno: i32,
    /// The program (argv\[0\]) or directory concerned.
    pub subject: String,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.stage {
            SpawnStage::Session => "setsid",
            SpawnStage::Terminal => "set controlling terminal",
            SpawnStage::Descriptors => "set up stdio",
            SpawnStage::Credentials => "switch user",
            SpawnStage::Directory => "chdir",
            SpawnStage::Exec => "exec",
        };
        write!(f, "{verb} {}: {}", self.subject, os_message(self.errno))
    }
}

/// The parent's side of the exec report pipe.
#[derive(Debug)]
pub struct ExecReport {
    pipe: OwnedFd,
    program: String,
    cwd: String,
}

impl ExecReport {
    /// Waits until the child has exec'd (the pipe closes) or reported a failure.
    pub fn wait(self) -> Result<(), SpawnError> {
        let mut report = [0u8; 5];
        let mut got = 0;
        while got < report.len() {
            match rustix::io::read(&self.pipe, &mut report[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(SpawnError {
                        stage: SpawnStage::Exec,
                        errno: e.raw_os_error(),
                        subject: self.program,
                    });
                }
            }
        }
        if got == 0 {
            return Ok(());
        }
        let stage = match report[0] {
            1 => SpawnStage::Session,
            2 => SpawnStage::Terminal,
            3 => SpawnStage::Descriptors,
            4 => SpawnStage::Credentials,
            5 => SpawnStage::Directory,
            _ => SpawnStage::Exec,
        };
        let errno = i32::from_ne_bytes([report[1], report[2], report[3], report[4]]);
        let subject = if stage == SpawnStage::Directory { self.cwd } else { self.program };
        Err(SpawnError { stage, errno, subject })
    }
}

/// Pointers into a [`ProgramSpec`], as `execve` wants them (null-terminated).
struct ExecPointers {
    argv: Vec<*const libc::c_char>,
    env: Vec<*const libc::c_char>,
}

impl ExecPointers {
    fn new(spec: &ProgramSpec) -> Self {
        let list = |strings: &[CString]| {
            strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
        };
        Self { argv: list(&spec.argv), env: list(&spec.env) }
    }
}

/// Forks a child that runs `spec` with `stdio`; returns its pid and the report to wait on.
///
/// Call it with the process table locked (see `ProcTable::start_locked`) and call
/// [`ExecReport::wait`] after unlocking.
pub fn fork_program(spec: &ProgramSpec, stdio: ChildStdio<'_>) -> io::Result<(u32, ExecReport)> {
    let (report_read, report_write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    let pointers = ExecPointers::new(spec);
    let mut default_action: libc::sigaction =
        // SAFETY: sigaction is a plain C struct for which all-zeroes is a valid value.
        unsafe { std::mem::zeroed() };
    default_action.sa_sigaction = libc::SIG_DFL;
    // SAFETY: sigset_t is a plain C struct; sigemptyset initialises it fully.
    let mut no_signals: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local sigset_t.
    unsafe { libc::sigemptyset(&mut no_signals) };
    let child = ChildSetup {
        spec,
        pointers: &pointers,
        stdio,
        report: report_write.as_raw_fd(),
        default_action: &default_action,
        no_signals: &no_signals,
    };
    // SAFETY: fork is sound here because the child only runs `ChildSetup::run`, which makes
    // async-signal-safe system calls on memory prepared above and ends in execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        child.run();
    }
    drop(report_write);
    let pid = u32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let program = spec.argv.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    let cwd = spec.cwd.to_string_lossy().into_owned();
    Ok((pid, ExecReport { pipe: report_read, program, cwd }))
}

struct ChildSetup<'a> {
    spec: &'a ProgramSpec,
    pointers: &'a ExecPointers,
    stdio: ChildStdio<'a>,
    report: RawFd,
    default_action: &'a libc::sigaction,
    no_signals: &'a libc::sigset_t,
}

impl ChildSetup<'_> {
    /// Runs in the forked child: sets it up and execs, or reports the failure and exits 127.
    fn run(&self) -> ! {
        // SAFETY: all calls below are async-signal-safe system calls on descriptors and memory
        // that stay valid in the child (prepared before fork, no allocation); the function never
        // returns into Rust code of the parent's threads.
        unsafe {
            for signal in 1..65 {
                if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                    libc::sigaction(signal, self.default_action, std::ptr::null_mut());
                }
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, self.no_signals, std::ptr::null_mut());
            if libc::setsid() < 0 {
                self.fail(SpawnStage::Session, errno());
            }
            let fds = [self.stdio.stdin, self.stdio.stdout, self.stdio.stderr];
            for (target, fd) in fds.iter().enumerate() {
                let target = i32::try_from(target).unwrap_or(0);
                if libc::dup2(fd.as_raw_fd(), target) < 0 {
                    self.fail(SpawnStage::Descriptors, errno());
                }
            }
            if self.stdio.controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                self.fail(SpawnStage::Terminal, errno());
            }
            let spec = self.spec;
            if libc::syscall(libc::SYS_setgroups, spec.groups.len(), spec.groups.as_ptr()) != 0
                || libc::syscall(
                    libc::SYS_setresgid,
                    libc::c_long::from(spec.gid),
                    libc::c_long::from(spec.gid),
                    libc::c_long::from(spec.gid),
                ) != 0
                || libc::syscall(
                    libc::SYS_setresuid,
                    libc::c_long::from(spec.uid),
                    libc::c_long::from(spec.uid),
                    libc::c_long::from(spec.uid),
                ) != 0
            {
                self.fail(SpawnStage::Credentials, errno());
            }
            if libc::chdir(spec.cwd.as_ptr()) < 0 {
                self.fail(SpawnStage::Directory, errno());
            }
            let mut failure = libc::ENOENT;
            let mut denied = false;
            for candidate in &spec.candidates {
                libc::execve(candidate.as_ptr(), self.pointers.argv.as_ptr(), self.pointers.env.as_ptr());
                match errno() {
                    libc::EACCES => denied = true,
                    libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                    other => {
                        failure = other;
                        denied = false;
                        break;
                    }
                }
            }
            self.fail(SpawnStage::Exec, if denied { libc::EACCES } else { failure })
        }
    }

    /// Writes the failed stage and errno to the report pipe and exits.
    fn fail(&self, stage: SpawnStage, errno: i32) -> ! {
        let e = errno.to_ne_bytes();
        let report = [stage as u8, e[0], e[1], e[2], e[3]];
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is a local array.
        unsafe {
            libc::write(self.report, report.as_ptr().cast(), report.len());
            libc::_exit(127)
        }
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

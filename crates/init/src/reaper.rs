//! The signal loop of PID 1, on init's main thread: reaps every child and orphan when SIGCHLD
//! arrives, and on SIGTERM (or SIGINT) ends the sandbox: SIGTERM to every process, up to 2 s of
//! grace, then SIGKILL.
//!
//! The handled signals are blocked in every thread (the mask is set before the first thread
//! starts) and taken synchronously with `sigwaitinfo`, so no signal handler ever runs.

use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::WaitOptions;

use crate::state::{InitState, exit_code_of};
use crate::sys::signal_everything;

/// Grace given to processes between SIGTERM and SIGKILL at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long init waits for the entrypoint's exit to be logged before exiting.
const FINAL_LOG_WAIT: Duration = Duration::from_millis(500);

fn handled_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is a plain C struct; sigemptyset initialises it and sigaddset only
    // writes into it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Blocks the handled signals in the calling thread (and so in every thread it starts later)
/// and ignores SIGPIPE (a closed connection is an error value, not a death).
pub fn prepare_signals() {
    let set = handled_signals();
    // SAFETY: pthread_sigmask and sigaction get valid pointers to initialised local values.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        libc::sigaction(libc::SIGPIPE, &ignore, std::ptr::null_mut());
    }
}

/// Reaps every child that has ended; returns whether children remain.
fn reap(init: &InitState) -> bool {
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => {
                let pid = u32::try_from(pid.as_raw_nonzero().get()).unwrap_or(0);
                init.procs.record_exit(pid, status.exit_status(), status.terminating_signal());
            }
            Ok(None) => return true,
            Err(Errno::INTR) => {}
            Err(Errno::CHILD) => return false,
            Err(_) => return true,
        }
    }
}

/// Runs the signal loop forever (init exits from it at the end of a shutdown).
pub fn run(init: &'static InitState) -> ! {
    let set = handled_signals();
    let mut shutdown_deadline: Option<Instant> = None;
    loop {
        let signal = match shutdown_deadline {
            None => {
                // SAFETY: sigwaitinfo gets a valid signal set and a null info pointer.
                unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) }
            }
            Some(_) => {
                let pause = libc::timespec { tv_sec: 0, tv_nsec: 50_000_000 };
                // SAFETY: sigtimedwait gets a valid signal set, a null info pointer and a valid
                // timeout.
                unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &pause) }
            }
        };
        if (signal == libc::SIGTERM || signal == libc::SIGINT) && shutdown_deadline.is_none() {
            shutdown_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
            signal_everything(&init.procs.running_groups(), libc::SIGTERM);
        }
        let children_remain = reap(init);
        if let Some(deadline) = shutdown_deadline {
            if !children_remain {
                finish(init);
            }
            if Instant::now() >= deadline {
                signal_everything(&init.procs.running_groups(), libc::SIGKILL);
                reap(init);
                finish(init);
            }
        }
    }
}

/// Exits init after a shutdown, with the entrypoint's exit code when it has one.
fn finish(init: &'static InitState) -> ! {
    if init.entrypoint.get().is_some() {
        let waited = Instant::now();
        while init.status.current().entrypoint_exit.is_none() && waited.elapsed() < FINAL_LOG_WAIT {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let code = init.status.current().entrypoint_exit.map_or(128 + libc::SIGTERM, |s| exit_code_of(&s));
    init.exit_sandbox(code)
}

//! `sandpit-init`, PID 1 of every sandbox: parses its options, secures its descriptors, starts
//! the entrypoint, serves the host's requests and reaps every process.

mod args;
mod conn;
mod entrypoint;
mod error;
mod exec;
mod files;
mod logs;
mod procs;
mod pump;
mod reaper;
mod spawn;
mod state;
mod sys;
mod users;
mod watch;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::fs::{MemfdFlags, Mode, OFlags};
use rustix::process::DumpableBehavior;

use crate::logs::{SandboxLog, StatusReport};
use crate::state::InitState;

/// Inherited descriptors are moved to this number or above.
const HIGH_FD: i32 = 100;

fn main() {
    let options = match args::parse(std::env::args_os().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("sandpit-init: {e}\n{}", args::USAGE);
            std::process::exit(2);
        }
    };
    // Before any thread exists, so that every thread inherits the mask.
    reaper::prepare_signals();
    // Panic messages would go to /dev/null anyway; a panicking connection thread just ends.
    std::panic::set_hook(Box::new(|_| {}));
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    // Sandbox code must not open /proc/1/fd/* or ptrace init.
    let _ = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable);
    // SAFETY: mallopt with a documented parameter; called before any other thread exists.
    // One malloc arena: init's threads allocate little, and fewer arenas keep the RSS small.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }

    let [listen, log, status] = take_inherited([options.listen_fd, options.log_fd, options.status_fd]);
    let dev_null = point_stdio_at_dev_null();
    let init_pid = u32::try_from(rustix::process::getpid().as_raw_nonzero().get()).unwrap_or(0);
    let state: &'static InitState = Box::leak(Box::new(InitState::new(
        options.keep_running,
        std::env::vars_os().collect(),
        SandboxLog::new(log, options.log_max_bytes),
        StatusReport::new(status, init_pid),
        dev_null,
    )));

    // The status file holds valid JSON from the start, entrypoint or not.
    state.status.update(|_| {});
    if !options.argv.is_empty() {
        entrypoint::start(state, options.argv, options.user.as_deref(), options.cwd.as_deref());
    }
    if let Some(listener) = listen {
        // Without a listener init still reaps and runs the entrypoint.
        let _ = sys::spawn_thread("listen", sys::HELPER_STACK, move || conn::serve(state, listener));
    }
    reaper::run(state)
}

/// Moves the inherited descriptors to high numbers, close-on-exec, and closes the originals and
/// every other inherited descriptor, so nothing of the host leaks into a process init starts. A
/// number that is not an open descriptor counts as absent.
fn take_inherited<const N: usize>(numbers: [Option<i32>; N]) -> [Option<OwnedFd>; N] {
    let taken = numbers.map(|n| {
        let n = n?;
        // SAFETY: borrowing a descriptor number only for the duration of fcntl calls; an invalid
        // number makes fcntl fail with EBADF, which we check first.
        let fd = unsafe { BorrowedFd::borrow_raw(n) };
        rustix::io::fcntl_getfd(fd).ok()?;
        rustix::io::fcntl_dupfd_cloexec(fd, HIGH_FD).ok()
    });
    let mut closed: Vec<i32> = Vec::new();
    for (n, copy) in numbers.iter().zip(&taken) {
        if let (Some(n), Some(_)) = (n, copy)
            && *n > 2
            && !closed.contains(n)
        {
            closed.push(*n);
            // SAFETY: the descriptor was inherited for init alone and was duplicated above;
            // nothing else in init refers to the original number.
            drop(unsafe { OwnedFd::from_raw_fd(*n) });
        }
    }
    let keep: Vec<i32> = taken.iter().flatten().map(AsRawFd::as_raw_fd).collect();
    close_other_descriptors(&keep);
    taken
}

/// Closes every descriptor from 3 up except `keep`: whatever else the OCI runtime (or a test
/// harness) let through must not reach the sandbox's processes.
fn close_other_descriptors(keep: &[i32]) {
    let mut keep: Vec<u32> = keep.iter().filter_map(|&fd| u32::try_from(fd).ok()).collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for fd in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if fd > from {
            // SAFETY: close_range only closes descriptors; none in this range is used by init
            // (its own are in `keep`, and no other thread exists yet).
            unsafe {
                libc::syscall(libc::SYS_close_range, from, fd - 1, 0u32);
            }
        }
        from = fd.saturating_add(1);
    }
}

/// Points descriptors 0, 1 and 2 at `/dev/null` (they come from the OCI runtime and must not
/// reach the host) and returns a close-on-exec `/dev/null` for children's stdin. Without a
/// `/dev/null`, an empty memory file stands in.
fn point_stdio_at_dev_null() -> OwnedFd {
    let null = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .or_else(|_| rustix::fs::memfd_create("null", MemfdFlags::CLOEXEC));
    let Ok(null) = null else {
        // No /dev/null and no memfd: leave 0, 1 and 2 alone and give children a pipe whose
        // write end is closed (reading it is end of file at once).
        return match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
            Ok((read, _write)) => read,
            Err(_) => std::process::exit(1),
        };
    };
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptor numbers, which init owns.
        unsafe {
            libc::dup2(null.as_raw_fd(), target);
        }
    }
    match rustix::io::fcntl_dupfd_cloexec(null.as_fd(), 3) {
        Ok(copy) => {
            if null.as_raw_fd() <= 2 {
                // It was opened as one of the standard descriptors: it must stay open as that.
                std::mem::forget(null);
            }
            copy
        }
        Err(_) => null,
    }
}

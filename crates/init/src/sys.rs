//! Small operating-system helpers shared by init's modules: locks that survive a panicked
//! thread, clocks, threads with small stacks, and the only places that send signals to groups.

use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, Signal};

/// Stack size of a connection thread.
pub const CONNECTION_STACK: usize = if cfg!(debug_assertions) { 1 << 20 } else { 128 << 10 };
/// Stack size of helper threads (output pumps, stdin readers, the listener).
pub const HELPER_STACK: usize = if cfg!(debug_assertions) { 512 << 10 } else { 64 << 10 };

/// Locks a mutex, ignoring poisoning: a panicked connection thread must not wedge init, and
/// every state guarded here stays consistent between statements.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts a named thread with the given stack size.
pub fn spawn_thread<F>(name: &str, stack: usize, body: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    thread::Builder::new().name(name.to_owned()).stack_size(stack).spawn(body)
}

/// Now, in Unix milliseconds.
pub fn unix_millis() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Now, in Unix microseconds.
pub fn unix_micros() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

/// The text of an OS error number, without Rust's " (os error N)" suffix.
pub fn os_message(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

/// Turns a signal number into a rustix signal, for any number the kernel accepts.
fn signal_from_raw(signal: i32) -> Option<Signal> {
    if !(1..=64).contains(&signal) {
        return None;
    }
    // SAFETY: the number is in the kernel's signal range (1..=64); rustix only requires a valid
    // signal number, which the kernel checks again.
    Some(unsafe { Signal::from_raw_unchecked(signal) })
}

/// Sends `signal` to the process group `pgid` (0 only checks that it exists).
///
/// Refuses init's own group and groups 0 and 1, so a stray pid can never signal init itself or,
/// when init runs outside a sandbox (tests), the group of whoever started it.
pub fn signal_group(pgid: u32, signal: i32) -> io::Result<()> {
    let raw = i32::try_from(pgid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    let own_group = rustix::process::getpgrp().as_raw_nonzero().get();
    if raw <= 1 || raw == own_group {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    let pid = Pid::from_raw(raw).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    if signal == 0 {
        return rustix::process::test_kill_process_group(pid).map_err(io::Error::from);
    }
    let signal = signal_from_raw(signal).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    rustix::process::kill_process_group(pid, signal).map_err(io::Error::from)
}

/// Sends `signal` to the single process `pid` (0 only checks that it exists); never to init.
pub fn signal_process(pid: u32, signal: i32) -> io::Result<()> {
    let raw = i32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    if raw <= 1 || raw == rustix::process::getpid().as_raw_nonzero().get() {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    let pid = Pid::from_raw(raw).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    if signal == 0 {
        return rustix::process::test_kill_process(pid).map_err(io::Error::from);
    }
    let signal = signal_from_raw(signal).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    rustix::process::kill_process(pid, signal).map_err(io::Error::from)
}

/// True when init is the first process of its pid namespace (inside a sandbox).
pub fn is_pid_one() -> bool {
    rustix::process::getpid().is_init()
}

/// Sends `signal` to every process of the sandbox except init.
///
/// Only as PID 1 does this use `kill(-1)`: outside a sandbox (tests) that would reach every
/// process of the machine. There it signals the given process groups and init's direct children
/// (orphans that were reparented to it) instead.
pub fn signal_everything(groups: &[u32], signal: i32) {
    if is_pid_one() {
        if let Some(signal) = signal_from_raw(signal) {
            // SAFETY: plain kill(2). As PID 1, kill(-1) reaches every other process of its own pid
            // namespace only; the check above makes sure we are PID 1.
            unsafe {
                libc::kill(-1, signal.as_raw());
            }
        }
        return;
    }
    for &pgid in groups {
        let _ = signal_group(pgid, signal);
    }
    for child in direct_children() {
        let _ = signal_process(child, signal);
    }
}

/// Pids of init's direct children, read from `/proc` (empty when `/proc` is missing).
pub fn direct_children() -> Vec<u32> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let me = u32::try_from(me).unwrap_or(0);
    let mut children = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return children };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if parent_of_stat_line(&stat) == Some(me) {
            children.push(pid);
        }
    }
    children
}

/// The parent pid field of a `/proc/<pid>/stat` line (the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`).
pub fn parent_of_stat_line(line: &str) -> Option<u32> {
    let rest = &line[line.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_message_drops_the_rust_suffix() {
        assert_eq!(os_message(libc::ENOENT), "No such file or directory");
    }

    #[test]
    fn parent_is_read_after_the_command_name() {
        assert_eq!(parent_of_stat_line("42 (a) b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of_stat_line("garbage"), None);
    }

    #[test]
    fn groups_zero_one_and_our_own_are_never_signalled() {
        assert!(signal_group(0, 0).is_err());
        assert!(signal_group(1, 0).is_err());
        let own = u32::try_from(rustix::process::getpgrp().as_raw_nonzero().get()).unwrap();
        assert!(signal_group(own, 0).is_err());
        let me = u32::try_from(rustix::process::getpid().as_raw_nonzero().get()).unwrap();
        assert!(signal_process(me, 0).is_err());
    }
}

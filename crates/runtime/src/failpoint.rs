//! Crash points for recovery tests.
//!
//! When the environment variable `SANDPIT_FAILPOINT` names a point, the process kills itself with
//! SIGKILL on reaching it: the most honest imitation of a crash (no destructors, no flushing).
//! Unset, each point costs one comparison against a cached `None`.

use std::sync::OnceLock;

static TARGET: OnceLock<Option<String>> = OnceLock::new();

/// Crashes the process here if `SANDPIT_FAILPOINT` equals `name`.
pub fn hit(name: &str) {
    let target = TARGET.get_or_init(|| std::env::var("SANDPIT_FAILPOINT").ok());
    if target.as_deref() == Some(name) {
        // SAFETY: kill(2) on our own pid; SIGKILL ends the process at once.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

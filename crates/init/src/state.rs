//! What every thread of init shares: its options, base environment, process table, log and
//! status file, and the one way out (`exit_sandbox`).

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};

use sandpit_init::protocol::ExitStatus;

use crate::logs::{SandboxLog, StatusReport};
use crate::procs::{Proc, ProcTable};
use crate::sys::{lock, signal_everything};

/// Init's shared state; lives for the whole life of init.
#[derive(Debug)]
pub struct InitState {
    /// Stay up after the entrypoint exits.
    pub keep_running: bool,
    /// Init's own environment: the base of every process's environment.
    pub base_env: Vec<(OsString, OsString)>,
    /// Processes init started.
    pub procs: ProcTable,
    /// The sandbox log.
    pub log: SandboxLog,
    /// The status file.
    pub status: StatusReport,
    /// `/dev/null`, opened once, for children's stdin.
    pub dev_null: OwnedFd,
    /// The entrypoint, once started.
    pub entrypoint: OnceLock<Arc<Proc>>,
    /// Open connections.
    pub connections: AtomicUsize,
    exiting: Mutex<()>,
}

impl InitState {
    /// Shared state from its parts.
    pub fn new(
        keep_running: bool,
        base_env: Vec<(OsString, OsString)>,
        log: SandboxLog,
        status: StatusReport,
        dev_null: OwnedFd,
    ) -> Self {
        Self {
            keep_running,
            base_env,
            procs: ProcTable::new(),
            log,
            status,
            dev_null,
            entrypoint: OnceLock::new(),
            connections: AtomicUsize::new(0),
            exiting: Mutex::new(()),
        }
    }

    /// Kills every other process of the sandbox and exits init with `code`.
    ///
    /// Only the first caller proceeds; a second thread calling it waits here forever while the
    /// first one exits the process.
    pub fn exit_sandbox(&self, code: i32) -> ! {
        let _only_one_exit = lock(&self.exiting);
        signal_everything(&self.procs.running_groups(), libc::SIGKILL);
        std::process::exit(code)
    }
}

/// The exit code a shell would report for `status`: the code, or 128 + the signal.
pub fn exit_code_of(status: &ExitStatus) -> i32 {
    match (status.code, status.signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

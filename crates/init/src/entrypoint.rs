//! The sandbox's entrypoint: started at boot, its output logged, its end written to the status
//! file and, unless init keeps running, the end of the sandbox.

use std::collections::BTreeMap;

use sandpit_init::protocol::{ExitStatus, LogStream};

use crate::exec::{Launch, launch};
use crate::procs::Proc;
use crate::pump::Sink;
use crate::state::{InitState, exit_code_of};
use crate::users::UserDb;

/// Starts the entrypoint `argv` as `user` in `cwd`. If it cannot start, says why in the log and
/// the status file and, without `--keep-running`, exits init with 127 (126: not executable).
pub fn start(init: &'static InitState, argv: Vec<String>, user: Option<&str>, cwd: Option<&str>) {
    let identity = match UserDb::load().resolve(user) {
        Ok(identity) => identity,
        Err(f) => return failed_to_start(init, f.message, 127),
    };
    let no_extra_env = BTreeMap::new();
    let request = Launch {
        argv,
        env: &no_extra_env,
        cwd,
        identity,
        stdin: false,
        pty: None,
        tag: None,
        timeout: None,
        entrypoint: true,
    };
    match launch(init, request, Sink::Log(init), false) {
        Ok((proc, _)) => {
            let pid = proc.pid;
            let _ = init.entrypoint.set(proc);
            init.status.update(|s| s.entrypoint_pid = Some(pid));
        }
        Err(e) => {
            let code = e.exit_code();
            failed_to_start(init, e.message(), code);
        }
    }
}

fn failed_to_start(init: &'static InitState, message: String, code: i32) {
    init.log.record(LogStream::Sys, &message);
    init.status.update(|s| {
        s.entrypoint_error = Some(message);
        s.entrypoint_exit = Some(ExitStatus { code: Some(code), signal: None, timed_out: false });
    });
    if !init.keep_running {
        init.exit_sandbox(code);
    }
}

/// Called by the entrypoint's output pump once it has exited and its output is logged.
pub fn on_exit(init: &'static InitState, proc: &Proc) {
    let status = proc.exit_status().unwrap_or_default();
    let message = match (status.code, status.signal) {
        (Some(code), _) => format!("entrypoint exited with code {code}"),
        (None, Some(signal)) => format!("entrypoint killed by signal {signal}"),
        (None, None) => "entrypoint ended".to_owned(),
    };
    init.log.record(LogStream::Sys, &message);
    let pid = proc.pid;
    init.status.update(|s| {
        s.entrypoint_pid = Some(pid);
        s.entrypoint_exit = Some(status);
    });
    if !init.keep_running {
        init.exit_sandbox(exit_code_of(&status));
    }
}

//! The output pump of a process: reads its pipes (or pty) into its buffer, or into the sandbox
//! log for the entrypoint, enforces its timeout, and marks the output finished once the process
//! has exited and its pipes are drained.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::time::Timespec;
use sandpit_init::protocol::{FrameKind, LogStream};

use crate::logs::Utf8Stream;
use crate::procs::{Proc, Pushed};
use crate::sys::signal_group;

/// Read size of the pump.
const READ_SIZE: usize = 16 << 10;
/// After the process exits, output still arriving (from children that kept the pipes) is read
/// until the pipes stay quiet this long...
const DRAIN_QUIET: Duration = Duration::from_millis(20);
/// ...or for this long at most.
const DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// Where the output goes.
#[derive(Debug)]
pub enum Sink {
    /// The process's own buffer (exec'd processes).
    Buffer,
    /// The sandbox log (the entrypoint).
    Log(&'static crate::state::InitState),
}

/// The read ends of a process's output.
#[derive(Debug)]
pub enum OutputSources {
    /// Separate stdout and stderr pipes.
    Pipes {
        /// Read end of stdout.
        stdout: OwnedFd,
        /// Read end of stderr.
        stderr: OwnedFd,
    },
    /// The master side of its pty.
    Pty(Arc<OwnedFd>),
}

struct Source {
    fd: Arc<OwnedFd>,
    kind: FrameKind,
    open: bool,
    text: Utf8Stream,
}

/// Runs the pump until the output is finished. Runs on its own thread.
pub fn run(proc: &Proc, sources: OutputSources, deadline: Option<Instant>, sink: &Sink) {
    let mut sources = match sources {
        OutputSources::Pipes { stdout, stderr } => vec![
            Source { fd: Arc::new(stdout), kind: FrameKind::Stdout, open: true, text: Utf8Stream::default() },
            Source { fd: Arc::new(stderr), kind: FrameKind::Stderr, open: true, text: Utf8Stream::default() },
        ],
        OutputSources::Pty(master) => {
            vec![Source { fd: master, kind: FrameKind::Pty, open: true, text: Utf8Stream::default() }]
        }
    };
    let mut deadline = deadline;
    let exit_event = proc.exit_event();
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        if exited_at.is_none() && proc.exit_status().is_some() {
            exited_at = Some(Instant::now());
        }
        let open: Vec<usize> = (0..sources.len()).filter(|&i| sources[i].open).collect();
        if let Some(at) = exited_at
            && (open.is_empty() || at.elapsed() >= DRAIN_LIMIT)
        {
            break;
        }
        let timeout = match (exited_at, deadline) {
            (Some(_), _) => Some(DRAIN_QUIET),
            (None, Some(d)) => Some(d.saturating_duration_since(Instant::now())),
            (None, None) => None,
        };
        let mut fds: Vec<PollFd<'_>> =
            open.iter().map(|&i| PollFd::new(sources[i].fd.as_ref(), PollFlags::IN)).collect();
        if let (None, Some(event)) = (exited_at, &exit_event) {
            fds.push(PollFd::new(event.as_ref(), PollFlags::IN));
        }
        let timespec = timeout.map(|t| Timespec::try_from(t).unwrap_or(Timespec { tv_sec: 1, tv_nsec: 0 }));
        let ready = match rustix::event::poll(&mut fds, timespec.as_ref()) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let readable: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        if ready == 0 {
            if exited_at.is_some() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                deadline = None;
                kill_for_timeout(proc);
            }
            continue;
        }
        for (slot, &i) in open.iter().enumerate() {
            if !readable[slot] {
                continue;
            }
            let source = &mut sources[i];
            match rustix::io::read(source.fd.as_fd(), &mut buf) {
                Ok(0) | Err(rustix::io::Errno::IO) => source.open = false,
                Ok(n) => {
                    if deliver(proc, sink, source, &buf[..n], deadline) == Pushed::DeadlinePassed {
                        deadline = None;
                        kill_for_timeout(proc);
                        deliver(proc, sink, source, &buf[..n], None);
                    }
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                Err(_) => source.open = false,
            }
        }
        // The exit event is the last poll entry while the exit was not seen; reading it is
        // not needed: the exit status is checked at the top of the loop.
    }
    if let Sink::Log(init) = sink {
        for source in &mut sources {
            let rest = source.text.finish();
            init.log.record(log_stream(source.kind), &rest);
        }
    }
    drop(sources);
    drop(exit_event);
    proc.finish_output();
}

fn deliver(proc: &Proc, sink: &Sink, source: &mut Source, data: &[u8], deadline: Option<Instant>) -> Pushed {
    match sink {
        Sink::Buffer => proc.push_output(source.kind, data, deadline),
        Sink::Log(init) => {
            // One record per line (a trailing partial line is a record of its own), so every
            // line carries its own time.
            let text = source.text.decode(data);
            for line in text.split_inclusive('\n') {
                init.log.record(log_stream(source.kind), line);
            }
            Pushed::Stored
        }
    }
}

fn log_stream(kind: FrameKind) -> LogStream {
    if kind == FrameKind::Stderr { LogStream::Err } else { LogStream::Out }
}

fn kill_for_timeout(proc: &Proc) {
    proc.mark_timed_out();
    let _ = signal_group(proc.pid, libc::SIGKILL);
}

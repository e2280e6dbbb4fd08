//! The table of processes init started (running, and recently exited), with each one's exit
//! status, standard input and bounded output buffer.
//!
//! ```text
//!  spawn ──► running ──(reaper: waitpid)──► exited ──(64 newer exits, or 10 min)──► forgotten
//!               │ output pump reads pipes into the buffer; attached connections read it
//!               └ timeout: pump kills the group, exit is reported with timed_out
//! ```
//!
//! Output flow control: each attached connection has a cursor into the buffer. The pump may
//! drop the oldest bytes when the buffer is full only if no cursor still needs them; otherwise
//! it waits, which blocks the process on its pipe. So an attached connection never loses output,
//! and a process nobody watches never blocks.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sandpit_init::protocol::{DATA_CHUNK, ExitStatus, FrameKind, ProcInfo, ProcSelector};

use crate::sys::lock;

/// Bytes of output kept per process.
pub const OUTPUT_CAPACITY: usize = 256 << 10;
/// Bytes of output kept once a process has ended and nobody is attached.
const OUTPUT_KEPT_AFTER_EXIT: usize = 64 << 10;
/// Bookkeeping cost charged per buffered chunk, so tiny writes cannot use unbounded memory.
const CHUNK_OVERHEAD: usize = 64;
/// Consecutive output of one kind is merged into chunks up to this size.
const MERGED_CHUNK: usize = 16 << 10;
/// Exited processes kept for late `attach` and `list_procs`.
const RETAINED_EXITED: usize = 64;
/// How long an exited process is kept at most.
const RETENTION: Duration = Duration::from_secs(600);

/// Identifies a reader of a process's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorId(u64);

#[derive(Debug)]
struct OutputChunk {
    kind: FrameKind,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Cursor {
    id: u64,
    position: u64,
    cancelled: bool,
}

/// A process's recent output, with absolute offsets and the readers' positions.
#[derive(Debug)]
pub struct OutputBuffer {
    chunks: VecDeque<OutputChunk>,
    start: u64,
    end: u64,
    charged: usize,
    capacity: usize,
    cursors: Vec<Cursor>,
    next_cursor: u64,
    finished: bool,
}

impl OutputBuffer {
    /// An empty buffer holding at most `capacity` bytes (bookkeeping included).
    pub fn new(capacity: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            start: 0,
            end: 0,
            charged: 0,
            capacity,
            cursors: Vec::new(),
            next_cursor: 0,
            finished: false,
        }
    }

    /// Appends output, dropping the oldest chunks no cursor needs; `false` when there is no room
    /// without dropping bytes a cursor has not read yet (the caller waits).
    pub fn try_push(&mut self, kind: FrameKind, data: &[u8]) -> bool {
        if data.is_empty() {
            return true;
        }
        loop {
            let merge = self
                .chunks
                .back()
                .is_some_and(|last| last.kind == kind && last.bytes.len() + data.len() <= MERGED_CHUNK);
            let cost = data.len() + if merge { 0 } else { CHUNK_OVERHEAD };
            if self.charged + cost <= self.capacity || self.chunks.is_empty() {
                match self.chunks.back_mut() {
                    Some(last) if merge => last.bytes.extend_from_slice(data),
                    _ => self.chunks.push_back(OutputChunk { kind, bytes: data.to_vec() }),
                }
                self.charged += cost;
                self.end += len_u64(data.len());
                return true;
            }
            if !self.drop_front_if_read() {
                return false;
            }
        }
    }

    /// Drops the oldest chunk if every cursor is past it.
    fn drop_front_if_read(&mut self) -> bool {
        let Some(front) = self.chunks.front() else { return false };
        let front_end = self.start + len_u64(front.bytes.len());
        if self.cursors.iter().any(|c| c.position < front_end) {
            return false;
        }
        self.charged -= front.bytes.len() + CHUNK_OVERHEAD;
        self.start = front_end;
        self.chunks.pop_front();
        true
    }

    /// A new reader positioned at the oldest byte still buffered.
    pub fn attach(&mut self) -> CursorId {
        let id = self.next_cursor;
        self.next_cursor += 1;
        self.cursors.push(Cursor { id, position: self.start, cancelled: false });
        CursorId(id)
    }

    /// Forgets a reader.
    pub fn detach(&mut self, cursor: CursorId) {
        self.cursors.retain(|c| c.id != cursor.0);
        self.trim_if_done();
    }

    /// Tells a reader to stop.
    pub fn cancel(&mut self, cursor: CursorId) {
        if let Some(c) = self.cursors.iter_mut().find(|c| c.id == cursor.0) {
            c.cancelled = true;
        }
    }

    fn cursor(&self, cursor: CursorId) -> Option<&Cursor> {
        self.cursors.iter().find(|c| c.id == cursor.0)
    }

    /// The kind and bytes (at most one frame's worth) at a reader's position, if any.
    pub fn peek(&self, cursor: CursorId) -> Option<(FrameKind, &[u8])> {
        let position = self.cursor(cursor)?.position;
        let mut offset = self.start;
        for chunk in &self.chunks {
            let len = len_u64(chunk.bytes.len());
            if position < offset + len {
                let skip = usize::try_from(position - offset).ok()?;
                let bytes = &chunk.bytes[skip..];
                return Some((chunk.kind, &bytes[..bytes.len().min(DATA_CHUNK)]));
            }
            offset += len;
        }
        None
    }

    /// Moves a reader past `n` bytes it has delivered.
    pub fn advance(&mut self, cursor: CursorId, n: usize) {
        let end = self.end;
        if let Some(c) = self.cursors.iter_mut().find(|c| c.id == cursor.0) {
            c.position = (c.position + len_u64(n)).min(end);
        }
    }

    /// No more output will come.
    pub fn finish(&mut self) {
        self.finished = true;
        self.trim_if_done();
    }

    /// Once the process is done and nobody reads, keep only the tail for late attaches.
    fn trim_if_done(&mut self) {
        if self.finished && self.cursors.is_empty() {
            while self.charged > OUTPUT_KEPT_AFTER_EXIT && self.chunks.len() > 1 {
                self.drop_front_if_read();
            }
            self.chunks.shrink_to_fit();
        }
    }

    /// Bytes written so far (absolute end offset).
    #[cfg(test)]
    fn end(&self) -> u64 {
        self.end
    }
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// What a reader gets next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextOutput {
    /// Bytes of this kind were copied into the caller's buffer.
    Data(FrameKind),
    /// All output was delivered and the process ended.
    Exited(ExitStatus),
    /// The reader was cancelled (its connection closed).
    Cancelled,
}

/// What became of output handed to [`Proc::push_output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// It is in the buffer.
    Stored,
    /// The deadline passed while waiting for room; nothing was stored yet.
    DeadlinePassed,
}

#[derive(Debug)]
struct ProcState {
    exit: Option<ExitStatus>,
    timed_out: bool,
    stdin: Option<Arc<File>>,
    output: OutputBuffer,
}

/// How a process is started, as recorded in the table.
#[derive(Debug)]
pub struct ProcSetup {
    /// What `list_procs` shows (its `pid` and `exit` are filled in by the table).
    pub info: ProcInfo,
    /// Write end of its stdin pipe, when it was started with `stdin: true`.
    pub stdin: Option<File>,
    /// Master side of its pty.
    pub pty_master: Option<Arc<OwnedFd>>,
    /// Becomes readable when the process has exited (an eventfd).
    pub exit_event: OwnedFd,
}

/// A process init started.
#[derive(Debug)]
pub struct Proc {
    /// Its pid (and process group id).
    pub pid: u32,
    seq: u64,
    info: ProcInfo,
    has_stdin: bool,
    pty_master: Option<Arc<OwnedFd>>,
    /// Dropped once the output is finished, so retained processes hold no descriptor.
    exit_event: Mutex<Option<Arc<OwnedFd>>>,
    state: Mutex<ProcState>,
    changed: Condvar,
}

impl Proc {
    /// Whether it is the sandbox's entrypoint.
    pub fn is_entrypoint(&self) -> bool {
        self.info.entrypoint
    }

    /// Whether it runs on a pty.
    pub fn pty_master(&self) -> Option<&Arc<OwnedFd>> {
        self.pty_master.as_ref()
    }

    /// Whether it was started with a stdin pipe.
    pub fn has_stdin(&self) -> bool {
        self.has_stdin
    }

    /// The eventfd that becomes readable when the process has exited (until the output is
    /// finished).
    pub fn exit_event(&self) -> Option<Arc<OwnedFd>> {
        lock(&self.exit_event).clone()
    }

    /// Its description, with its exit status when it has ended.
    pub fn snapshot(&self) -> ProcInfo {
        let mut info = self.info.clone();
        info.exit = lock(&self.state).exit;
        info
    }

    /// Its exit status, once it has ended.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        lock(&self.state).exit
    }

    fn record_exit(&self, code: Option<i32>, signal: Option<i32>) {
        let mut state = lock(&self.state);
        if state.exit.is_none() {
            state.exit = Some(ExitStatus { code, signal, timed_out: state.timed_out });
            state.stdin = None;
        }
        drop(state);
        self.changed.notify_all();
        if let Some(event) = lock(&self.exit_event).as_ref() {
            // An eventfd write of 1 cannot block or fail short of a bug; the pump also rechecks.
            let _ = rustix::io::write(event, &1u64.to_ne_bytes());
        }
    }

    /// Notes that init killed it for passing its timeout.
    pub fn mark_timed_out(&self) {
        lock(&self.state).timed_out = true;
    }

    /// Its stdin pipe, while open.
    pub fn stdin(&self) -> Option<Arc<File>> {
        lock(&self.state).stdin.clone()
    }

    /// Closes its stdin pipe (the process sees end of file once pending writes finish).
    pub fn close_stdin(&self) {
        lock(&self.state).stdin = None;
    }

    /// Stores output, waiting for room while an attached reader lags (see the module docs).
    pub fn push_output(&self, kind: FrameKind, data: &[u8], deadline: Option<Instant>) -> Pushed {
        let mut state = lock(&self.state);
        loop {
            if state.output.try_push(kind, data) {
                drop(state);
                self.changed.notify_all();
                return Pushed::Stored;
            }
            state = match deadline {
                None => self.changed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Pushed::DeadlinePassed;
                    }
                    self.changed
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// No more output will come (the pump is done).
    pub fn finish_output(&self) {
        lock(&self.state).output.finish();
        lock(&self.exit_event).take();
        self.changed.notify_all();
    }

    /// A new reader of its output, starting with what is still buffered.
    pub fn attach(&self) -> CursorId {
        lock(&self.state).output.attach()
    }

    /// Forgets a reader (and lets the pump go on if it was the one holding it back).
    pub fn detach(&self, cursor: CursorId) {
        lock(&self.state).output.detach(cursor);
        self.changed.notify_all();
    }

    /// Wakes a reader blocked in [`Proc::next_output`] and makes it return `Cancelled`.
    pub fn cancel(&self, cursor: CursorId) {
        lock(&self.state).output.cancel(cursor);
        self.changed.notify_all();
    }

    /// Waits for the next output of a reader, copying it into `out`. The reader must call
    /// [`Proc::advance`] once the bytes are delivered.
    pub fn next_output(&self, cursor: CursorId, out: &mut Vec<u8>) -> NextOutput {
        let mut state = lock(&self.state);
        loop {
            match state.output.cursor(cursor) {
                None => return NextOutput::Cancelled,
                Some(c) if c.cancelled => return NextOutput::Cancelled,
                Some(_) => {}
            }
            if let Some((kind, bytes)) = state.output.peek(cursor) {
                out.clear();
                out.extend_from_slice(bytes);
                return NextOutput::Data(kind);
            }
            if state.output.finished {
                return NextOutput::Exited(state.exit.unwrap_or_default());
            }
            state = self.changed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Moves a reader past `n` delivered bytes.
    pub fn advance(&self, cursor: CursorId, n: usize) {
        lock(&self.state).output.advance(cursor, n);
        self.changed.notify_all();
    }
}

#[derive(Debug)]
struct Retained {
    pid: u32,
    seq: u64,
    since: Instant,
}

#[derive(Debug, Default)]
struct TableState {
    by_pid: BTreeMap<u32, Arc<Proc>>,
    exited: VecDeque<Retained>,
    next_seq: u64,
}

/// Every process init started and still remembers.
#[derive(Debug, Default)]
pub struct ProcTable {
    state: Mutex<TableState>,
}

impl ProcTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `start` (which forks) with the table locked and registers the process it returns.
    ///
    /// The reaper records exits under the same lock, so it cannot reap a pid before the pid is
    /// in the table.
    pub fn start_locked<E>(
        &self,
        start: impl FnOnce() -> Result<(u32, ProcSetup), E>,
    ) -> Result<Arc<Proc>, E> {
        let mut table = lock(&self.state);
        let (pid, setup) = start()?;
        let seq = table.next_seq;
        table.next_seq += 1;
        let has_stdin = setup.stdin.is_some();
        let mut info = setup.info;
        info.pid = pid;
        info.exit = None;
        let proc = Arc::new(Proc {
            pid,
            seq,
            info,
            has_stdin,
            pty_master: setup.pty_master,
            exit_event: Mutex::new(Some(Arc::new(setup.exit_event))),
            state: Mutex::new(ProcState {
                exit: None,
                timed_out: false,
                stdin: setup.stdin.map(Arc::new),
                output: OutputBuffer::new(OUTPUT_CAPACITY),
            }),
            changed: Condvar::new(),
        });
        table.by_pid.insert(pid, Arc::clone(&proc));
        Ok(proc)
    }

    /// Forgets a process whose program could not be started.
    pub fn remove(&self, proc: &Proc) {
        let mut table = lock(&self.state);
        if table.by_pid.get(&proc.pid).is_some_and(|p| p.seq == proc.seq) {
            table.by_pid.remove(&proc.pid);
        }
    }

    /// Records how a reaped child ended (children init did not start are ignored).
    pub fn record_exit(&self, pid: u32, code: Option<i32>, signal: Option<i32>) {
        let mut table = lock(&self.state);
        let Some(proc) = table.by_pid.get(&pid).cloned() else { return };
        if proc.exit_status().is_some() {
            return;
        }
        proc.record_exit(code, signal);
        if !proc.is_entrypoint() {
            table.exited.push_back(Retained { pid, seq: proc.seq, since: Instant::now() });
        }
        Self::prune(&mut table);
    }

    fn prune(table: &mut TableState) {
        while let Some(oldest) = table.exited.front() {
            if table.exited.len() <= RETAINED_EXITED && oldest.since.elapsed() < RETENTION {
                break;
            }
            let (pid, seq) = (oldest.pid, oldest.seq);
            table.exited.pop_front();
            if table.by_pid.get(&pid).is_some_and(|p| p.seq == seq) {
                table.by_pid.remove(&pid);
            }
        }
    }

    /// Finds a process by pid, or the newest one with a tag.
    pub fn find(&self, selector: &ProcSelector) -> Option<Arc<Proc>> {
        let table = lock(&self.state);
        match selector {
            ProcSelector::Pid(pid) => table.by_pid.get(pid).cloned(),
            ProcSelector::Tag(tag) => table
                .by_pid
                .values()
                .filter(|p| p.info.tag.as_deref() == Some(tag.as_str()))
                .max_by_key(|p| p.seq)
                .cloned(),
        }
    }

    /// Running and recently exited processes, oldest first.
    pub fn list(&self) -> Vec<ProcInfo> {
        let mut table = lock(&self.state);
        Self::prune(&mut table);
        let mut procs: Vec<&Arc<Proc>> = table.by_pid.values().collect();
        procs.sort_by_key(|p| p.seq);
        procs.iter().map(|p| p.snapshot()).collect()
    }

    /// Process groups of the processes still running.
    pub fn running_groups(&self) -> Vec<u32> {
        let table = lock(&self.state);
        table.by_pid.values().filter(|p| p.exit_status().is_none()).map(|p| p.pid).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_bytes(b: &OutputBuffer, c: CursorId) -> Option<(FrameKind, Vec<u8>)> {
        b.peek(c).map(|(k, d)| (k, d.to_vec()))
    }

    #[test]
    fn nobody_attached_drops_the_oldest_output() {
        let mut b = OutputBuffer::new(4 * (CHUNK_OVERHEAD + 100));
        for i in 0..10u8 {
            assert!(b.try_push(if i % 2 == 0 { FrameKind::Stdout } else { FrameKind::Stderr }, &[i; 100]));
        }
        assert_eq!(b.end(), 1000);
        let c = b.attach();
        let (kind, bytes) = kind_bytes(&b, c).unwrap();
        assert_eq!((kind, bytes[0]), (FrameKind::Stdout, 6));
    }

    #[test]
    fn a_lagging_reader_holds_the_writer_back() {
        let mut b = OutputBuffer::new(2 * (CHUNK_OVERHEAD + 100));
        let c = b.attach();
        assert!(b.try_push(FrameKind::Stdout, &[1; 100]));
        assert!(b.try_push(FrameKind::Stderr, &[2; 100]));
        assert!(!b.try_push(FrameKind::Stdout, &[3; 100]));
        assert_eq!(kind_bytes(&b, c).unwrap(), (FrameKind::Stdout, vec![1; 100]));
        b.advance(c, 60);
        assert!(!b.try_push(FrameKind::Stdout, &[3; 100]), "half-read chunk must stay");
        assert_eq!(kind_bytes(&b, c).unwrap().1.len(), 40);
        b.advance(c, 40);
        assert!(b.try_push(FrameKind::Stdout, &[3; 100]));
        assert_eq!(kind_bytes(&b, c).unwrap(), (FrameKind::Stderr, vec![2; 100]));
        b.detach(c);
        assert!(b.try_push(FrameKind::Stdout, &[4; 100]));
    }

    #[test]
    fn small_writes_of_one_kind_merge() {
        let mut b = OutputBuffer::new(OUTPUT_CAPACITY);
        let c = b.attach();
        for _ in 0..100 {
            assert!(b.try_push(FrameKind::Stdout, b"ab"));
        }
        assert_eq!(kind_bytes(&b, c).unwrap().1.len(), 200);
        assert_eq!(b.chunks.len(), 1);
    }

    #[test]
    fn late_attach_sees_what_is_still_buffered() {
        let mut b = OutputBuffer::new(OUTPUT_CAPACITY);
        let first = b.attach();
        assert!(b.try_push(FrameKind::Stdout, b"hello"));
        b.advance(first, 5);
        assert_eq!(b.peek(first), None);
        let late = b.attach();
        assert_eq!(kind_bytes(&b, late).unwrap().1, b"hello");
    }

    #[test]
    fn finished_output_is_trimmed_when_nobody_reads() {
        let mut b = OutputBuffer::new(OUTPUT_CAPACITY);
        for _ in 0..200 {
            assert!(b.try_push(FrameKind::Stdout, &[0; 1000]));
            assert!(b.try_push(FrameKind::Stderr, &[0; 1000]));
        }
        b.finish();
        assert!(b.charged <= OUTPUT_KEPT_AFTER_EXIT);
    }
}

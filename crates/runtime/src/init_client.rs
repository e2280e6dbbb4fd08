//! Async client of the sandpit-init protocol (see `sandpit_init::protocol`): exec, processes and
//! files, over one unix-socket connection per request.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use sandpit_init::protocol::{
    Envelope, ExecRequest, ExitStatus, FileEntry, Frame, FrameKind, FsEvent, PROTOCOL_VERSION, ProcInfo,
    ProcSelector, PtySize, Request, Response,
};
use sandpit_types::SandboxId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::{Result, RuntimeError};

/// Talks to one sandbox's init.
#[derive(Debug, Clone)]
pub struct InitClient {
    id: SandboxId,
    socket: PathBuf,
}

/// The reading side of a connection.
#[derive(Debug)]
struct FrameReader {
    id: SandboxId,
    rd: BufReader<OwnedReadHalf>,
}

/// One open connection.
#[derive(Debug)]
struct Conn {
    reader: FrameReader,
    wr: OwnedWriteHalf,
}

fn protocol(detail: impl Into<String>) -> RuntimeError {
    RuntimeError::InitProtocol { detail: detail.into() }
}

async fn send_frame(id: SandboxId, wr: &mut OwnedWriteHalf, kind: FrameKind, payload: &[u8]) -> Result<()> {
    let hdr = Frame::header(kind, payload.len());
    let unreachable = |source| RuntimeError::Unreachable { id, source };
    wr.write_all(&hdr).await.map_err(unreachable)?;
    wr.write_all(payload).await.map_err(unreachable)
}

impl FrameReader {
    /// The next frame; `None` when init closed the connection.
    async fn recv(&mut self) -> Result<Option<(FrameKind, Bytes)>> {
        let id = self.id;
        let unreachable = |source| RuntimeError::Unreachable { id, source };
        let mut hdr = [0u8; 5];
        match self.rd.read_exact(&mut hdr).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(unreachable(e)),
        }
        let (kind, len) = Frame::parse_header(hdr).map_err(|e| protocol(e.to_string()))?;
        let mut buf = BytesMut::zeroed(len);
        self.rd.read_exact(&mut buf).await.map_err(unreachable)?;
        Ok(Some((kind, buf.freeze())))
    }

    /// The next frame, which must be a JSON response; init errors become `RuntimeError::Init`.
    async fn recv_response(&mut self) -> Result<Response> {
        match self.recv().await? {
            Some((FrameKind::Json, payload)) => parse_response(&payload),
            Some((kind, _)) => Err(protocol(format!("expected a response, got a {kind:?} frame"))),
            None => Err(protocol("init closed the connection before answering")),
        }
    }
}

impl Conn {
    async fn send(&mut self, kind: FrameKind, payload: &[u8]) -> Result<()> {
        send_frame(self.reader.id, &mut self.wr, kind, payload).await
    }

    async fn send_request(&mut self, request: Request) -> Result<()> {
        let frame = Frame::json(&Envelope { v: PROTOCOL_VERSION, request });
        self.send(frame.kind, &frame.payload).await
    }

    async fn recv(&mut self) -> Result<Option<(FrameKind, Bytes)>> {
        self.reader.recv().await
    }

    async fn recv_response(&mut self) -> Result<Response> {
        self.reader.recv_response().await
    }
}

fn parse_response(payload: &[u8]) -> Result<Response> {
    let r: Response = serde_json::from_slice(payload).map_err(|e| protocol(format!("bad response: {e}")))?;
    match r {
        Response::Error { code, message } => Err(RuntimeError::Init { code, message }),
        r => Ok(r),
    }
}

/// What an exec or attach stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes from standard output.
    Stdout(Bytes),
    /// Bytes from standard error.
    Stderr(Bytes),
    /// Bytes from the terminal of a pty process.
    Pty(Bytes),
    /// The process ended; the last event.
    Exited(ExitStatus),
}

/// A running exec (or attach): its output events and its stdin.
#[derive(Debug)]
pub struct ExecSession {
    pid: u32,
    output: ExecOutput,
    input: ExecInput,
}

/// The output half of an [`ExecSession`].
#[derive(Debug)]
pub struct ExecOutput {
    reader: FrameReader,
    done: bool,
}

/// The stdin half of an [`ExecSession`]. Dropping it leaves the connection open (it closes with
/// the output half), so a foreground process is not killed by that alone.
#[derive(Debug)]
pub struct ExecInput {
    wr: Option<OwnedWriteHalf>,
    id: SandboxId,
}

impl Drop for ExecInput {
    fn drop(&mut self) {
        if let Some(wr) = self.wr.take() {
            // Without this, dropping the write half would shut the socket down for writing,
            // which init reads as the host going away.
            wr.forget();
        }
    }
}

impl ExecSession {
    /// The process id inside the sandbox.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next output event; `None` after `Exited`.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>> {
        self.output.next().await
    }

    /// Sends bytes to the process's stdin (it must have been started with `stdin: true`).
    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<()> {
        self.input.write(data).await
    }

    /// Closes the process's stdin.
    pub async fn close_stdin(&mut self) -> Result<()> {
        self.input.close().await
    }

    /// Splits into output and input for concurrent use.
    pub fn split(self) -> (u32, ExecOutput, ExecInput) {
        (self.pid, self.output, self.input)
    }

    /// Reads everything until the process exits.
    pub async fn collect(mut self) -> Result<ExecOutcome> {
        let mut out = ExecOutcome { pid: self.pid, ..Default::default() };
        while let Some(ev) = self.next().await? {
            match ev {
                ExecEvent::Stdout(b) | ExecEvent::Pty(b) => out.stdout.extend_from_slice(&b),
                ExecEvent::Stderr(b) => out.stderr.extend_from_slice(&b),
                ExecEvent::Exited(s) => out.status = s,
            }
        }
        Ok(out)
    }
}

impl ExecOutput {
    /// The next output event; `None` after `Exited`.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>> {
        if self.done {
            return Ok(None);
        }
        loop {
            let Some((kind, payload)) = self.reader.recv().await? else {
                self.done = true;
                return Err(protocol("init closed the connection before the process exited"));
            };
            return Ok(Some(match kind {
                FrameKind::Stdout => ExecEvent::Stdout(payload),
                FrameKind::Stderr => ExecEvent::Stderr(payload),
                FrameKind::Pty => ExecEvent::Pty(payload),
                FrameKind::Json => match parse_response(&payload)? {
                    Response::Exited { status, .. } => {
                        self.done = true;
                        ExecEvent::Exited(status)
                    }
                    // A repeated `started` (e.g. after re-attach) carries nothing new.
                    Response::Started { .. } => continue,
                    other => return Err(protocol(format!("unexpected {other:?} in an exec stream"))),
                },
                other => return Err(protocol(format!("unexpected {other:?} frame in an exec stream"))),
            }));
        }
    }
}

impl ExecInput {
    /// Sends bytes to stdin.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        let id = self.id;
        let Some(wr) = self.wr.as_mut() else {
            return Err(protocol("stdin is closed"));
        };
        for chunk in data.chunks(sandpit_init::protocol::DATA_CHUNK) {
            send_frame(id, wr, FrameKind::Stdin, chunk).await?;
        }
        Ok(())
    }

    /// Closes stdin (sends `end`); later writes fail.
    pub async fn close(&mut self) -> Result<()> {
        let id = self.id;
        if let Some(wr) = self.wr.as_mut() {
            send_frame(id, wr, FrameKind::End, &[]).await?;
        }
        Ok(())
    }
}

/// Everything an exec produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The process id.
    pub pid: u32,
    /// All of stdout (and pty output).
    pub stdout: Vec<u8>,
    /// All of stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
}

/// Streams a file's content out of the sandbox.
#[derive(Debug)]
pub struct FileReader {
    conn: Conn,
    done: bool,
}

impl FileReader {
    /// The next chunk; `None` at the end of the file.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        match self.conn.recv().await? {
            Some((FrameKind::Data, b)) => Ok(Some(b)),
            Some((FrameKind::End, _)) => {
                self.done = true;
                Ok(None)
            }
            Some((FrameKind::Json, b)) => {
                self.done = true;
                parse_response(&b)?;
                Err(protocol("unexpected response in a file stream"))
            }
            Some((k, _)) => Err(protocol(format!("unexpected {k:?} frame in a file stream"))),
            None => Err(protocol("init closed the connection in the middle of a file")),
        }
    }
}

/// A stream of changes under a watched directory.
#[derive(Debug)]
pub struct Watcher {
    conn: Conn,
}

impl Watcher {
    /// The next change.
    pub async fn next(&mut self) -> Result<Option<FsEvent>> {
        loop {
            match self.conn.recv().await? {
                Some((FrameKind::Json, b)) => match parse_response(&b)? {
                    Response::FsEvent { event } => return Ok(Some(event)),
                    Response::Ok => continue,
                    other => return Err(protocol(format!("unexpected {other:?} in a watch stream"))),
                },
                Some((k, _)) => return Err(protocol(format!("unexpected {k:?} frame in a watch stream"))),
                None => return Ok(None),
            }
        }
    }
}

/// Options of [`InitClient::write_file`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Act as this user.
    pub user: Option<String>,
    /// Permission bits of a new file.
    pub mode: Option<u32>,
    /// Append instead of replacing.
    pub append: bool,
}

impl InitClient {
    /// A client for the init listening at `socket`.
    pub fn new(id: SandboxId, socket: impl Into<PathBuf>) -> Self {
        Self { id, socket: socket.into() }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn connect(&self) -> Result<Conn> {
        let s = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| RuntimeError::Unreachable { id: self.id, source })?;
        let (rd, wr) = s.into_split();
        Ok(Conn { reader: FrameReader { id: self.id, rd: BufReader::with_capacity(128 * 1024, rd) }, wr })
    }

    async fn unary(&self, request: Request) -> Result<Response> {
        let mut c = self.connect().await?;
        c.send_request(request).await?;
        c.recv_response().await
    }

    /// Init's hello: versions and the entrypoint's state.
    pub async fn hello(&self) -> Result<Response> {
        self.unary(Request::Hello).await
    }

    /// Starts a process; its `started` has been received when this returns.
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecSession> {
        self.stream_process(Request::Exec(req)).await
    }

    /// Re-attaches to a process: buffered output, live output, then its exit.
    pub async fn attach(&self, target: ProcSelector, stdin: bool) -> Result<ExecSession> {
        self.stream_process(Request::Attach { target, stdin }).await
    }

    async fn stream_process(&self, request: Request) -> Result<ExecSession> {
        let mut c = self.connect().await?;
        c.send_request(request).await?;
        let pid = match c.recv_response().await? {
            Response::Started { pid } => pid,
            other => return Err(protocol(format!("expected started, got {other:?}"))),
        };
        let Conn { reader, wr } = c;
        let id = reader.id;
        let output = ExecOutput { reader, done: false };
        Ok(ExecSession { pid, output, input: ExecInput { wr: Some(wr), id } })
    }

    /// The processes init started, running and recently exited.
    pub async fn list_procs(&self) -> Result<Vec<ProcInfo>> {
        match self.unary(Request::ListProcs).await? {
            Response::Procs { procs } => Ok(procs),
            other => Err(protocol(format!("expected procs, got {other:?}"))),
        }
    }

    /// Sends a signal to a process (its whole group when `group`).
    pub async fn signal(&self, target: ProcSelector, signal: i32, group: bool) -> Result<()> {
        self.expect_ok(Request::Signal { target, signal, group }).await
    }

    /// Writes to the stdin of a process started with `stdin: true`, from another connection.
    pub async fn write_stdin(&self, target: ProcSelector, data: &[u8]) -> Result<()> {
        let mut c = self.connect().await?;
        c.send_request(Request::WriteStdin { target }).await?;
        for chunk in data.chunks(sandpit_init::protocol::DATA_CHUNK) {
            c.send(FrameKind::Stdin, chunk).await?;
        }
        c.send(FrameKind::End, &[]).await?;
        expect_ok(c.recv_response().await?)
    }

    /// Closes a process's stdin.
    pub async fn close_stdin(&self, target: ProcSelector) -> Result<()> {
        self.expect_ok(Request::CloseStdin { target }).await
    }

    /// Resizes a pty process's terminal.
    pub async fn resize_pty(&self, target: ProcSelector, size: PtySize) -> Result<()> {
        self.expect_ok(Request::ResizePty { target, size }).await
    }

    async fn expect_ok(&self, request: Request) -> Result<()> {
        expect_ok(self.unary(request).await?)
    }

    async fn expect_entry(&self, request: Request) -> Result<FileEntry> {
        match self.unary(request).await? {
            Response::Entry { entry } => Ok(entry),
            other => Err(protocol(format!("expected entry, got {other:?}"))),
        }
    }

    /// Opens a file for reading; the entry describes it.
    pub async fn read_file(
        &self,
        path: &str,
        user: Option<String>,
        offset: u64,
        length: Option<u64>,
    ) -> Result<(FileEntry, FileReader)> {
        let mut c = self.connect().await?;
        c.send_request(Request::ReadFile { path: path.into(), user, offset, length }).await?;
        match c.recv_response().await? {
            Response::File { entry } => Ok((entry, FileReader { conn: c, done: false })),
            other => Err(protocol(format!("expected file, got {other:?}"))),
        }
    }

    /// Reads a whole file into memory (for small files).
    pub async fn read_to_vec(&self, path: &str) -> Result<Vec<u8>> {
        let (_, mut r) = self.read_file(path, None, 0, None).await?;
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    /// Writes a file from `content`, streamed in chunks; creates parent directories.
    pub async fn write_file(
        &self,
        path: &str,
        opts: WriteOptions,
        mut content: impl AsyncRead + Unpin,
    ) -> Result<FileEntry> {
        let mut c = self.connect().await?;
        c.send_request(Request::WriteFile {
            path: path.into(),
            user: opts.user,
            mode: opts.mode,
            append: opts.append,
            create_parents: true,
        })
        .await?;
        let mut buf = vec![0u8; sandpit_init::protocol::DATA_CHUNK];
        loop {
            let n = content.read(&mut buf).await.map_err(RuntimeError::io("read upload for", path))?;
            if n == 0 {
                break;
            }
            if let Err(e) = c.send(FrameKind::Data, &buf[..n]).await {
                // Init may have refused the write early (no space, permission): prefer its answer.
                return match c.recv_response().await {
                    Err(init_err @ RuntimeError::Init { .. }) => Err(init_err),
                    _ => Err(e),
                };
            }
        }
        c.send(FrameKind::End, &[]).await?;
        match c.recv_response().await? {
            Response::Entry { entry } => Ok(entry),
            other => Err(protocol(format!("expected entry, got {other:?}"))),
        }
    }

    /// Describes a path (a final symlink is not followed).
    pub async fn stat(&self, path: &str, user: Option<String>) -> Result<FileEntry> {
        self.expect_entry(Request::Stat { path: path.into(), user }).await
    }

    /// Lists a directory down to `depth` levels.
    pub async fn list_dir(&self, path: &str, user: Option<String>, depth: u32) -> Result<Vec<FileEntry>> {
        match self.unary(Request::ListDir { path: path.into(), user, depth }).await? {
            Response::Entries { entries } => Ok(entries),
            other => Err(protocol(format!("expected entries, got {other:?}"))),
        }
    }

    /// Creates a directory (with parents when `parents`).
    pub async fn make_dir(&self, path: &str, user: Option<String>, parents: bool) -> Result<FileEntry> {
        self.expect_entry(Request::MakeDir { path: path.into(), user, parents, mode: None }).await
    }

    /// Renames a path.
    pub async fn rename(&self, from: &str, to: &str, user: Option<String>) -> Result<FileEntry> {
        self.expect_entry(Request::Rename { from: from.into(), to: to.into(), user }).await
    }

    /// Removes a path (directories with their content when `recursive`).
    pub async fn remove(&self, path: &str, user: Option<String>, recursive: bool) -> Result<()> {
        self.expect_ok(Request::Remove { path: path.into(), user, recursive }).await
    }

    /// Watches a directory for changes.
    pub async fn watch(&self, path: &str, user: Option<String>, recursive: bool) -> Result<Watcher> {
        let mut c = self.connect().await?;
        c.send_request(Request::Watch { path: path.into(), user, recursive }).await?;
        expect_ok(c.recv_response().await?)?;
        Ok(Watcher { conn: c })
    }
}

fn expect_ok(r: Response) -> Result<()> {
    match r {
        Response::Ok => Ok(()),
        other => Err(protocol(format!("expected ok, got {other:?}"))),
    }
}

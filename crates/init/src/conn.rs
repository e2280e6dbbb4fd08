//! Connections from the host: the accept loop, one thread per connection, the version check,
//! and the dispatch of each request to the module that serves it.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustix::net::SocketFlags;
use sandpit_init::protocol::{Envelope, ErrorCode, Frame, FrameKind, PROTOCOL_VERSION, Request, Response};
use serde::Deserialize;

use crate::error::Failure;
use crate::state::InitState;
use crate::sys::{CONNECTION_STACK, spawn_thread};
use crate::{exec, files, watch};

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// How long a new connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection: frames in, frames out.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    out: Vec<u8>,
}

impl Conn {
    /// Wraps an accepted stream.
    pub fn new(stream: UnixStream) -> Self {
        Self { stream, out: Vec::new() }
    }

    /// The underlying stream.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends a JSON message.
    pub fn send(&mut self, response: &Response) -> io::Result<()> {
        let frame = Frame::json(response);
        self.send_data(frame.kind, &frame.payload)
    }

    /// Sends a frame, header and payload in one write.
    pub fn send_data(&mut self, kind: FrameKind, payload: &[u8]) -> io::Result<()> {
        self.out.clear();
        self.out.extend_from_slice(&Frame::header(kind, payload.len()));
        self.out.extend_from_slice(payload);
        let result = self.stream.write_all(&self.out);
        if self.out.capacity() > 128 << 10 {
            self.out = Vec::new();
        }
        result
    }

    /// Answers with an error (the exchange ends).
    pub fn fail(&mut self, failure: Failure) {
        let _ = self.send(&failure.into_response());
    }

    /// Answers with an error, then reads and drops the host's remaining data frames up to its
    /// `end` frame, so a host still sending (a large upload) is not cut off before it reads the
    /// answer.
    pub fn fail_and_drain(&mut self, failure: Failure) {
        if self.send(&failure.into_response()).is_err() {
            return;
        }
        while let Ok(Some(frame)) = self.read_frame() {
            if frame.kind == FrameKind::End || frame.kind == FrameKind::Json {
                break;
            }
        }
    }

    /// Reads the next frame; `None` when the host closed the connection.
    pub fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        Frame::read_from(&mut self.stream)
    }

    /// Ends the connection both ways (wakes a thread blocked reading it).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Accepts connections forever, each served on its own thread.
pub fn serve(init: &'static InitState, listener: OwnedFd) {
    loop {
        let stream = match rustix::net::accept_with(&listener, SocketFlags::CLOEXEC) {
            Ok(fd) => UnixStream::from(fd),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
            Err(rustix::io::Errno::BADF | rustix::io::Errno::NOTSOCK | rustix::io::Errno::INVAL) => return,
            Err(_) => {
                // Out of descriptors or memory: wait for some to be released.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if init.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            init.connections.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let counted = ConnectionCount(init);
        let spawned = spawn_thread("conn", CONNECTION_STACK, move || {
            let _counted = counted;
            handle(init, stream);
        });
        // When no thread can be started the stream and the count were dropped with the closure.
        drop(spawned);
    }
}

/// Decrements the connection count when a connection ends, panics included.
struct ConnectionCount(&'static InitState);

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Deserialize)]
struct VersionOnly {
    v: Option<u32>,
}

/// Decodes a request frame, checking the protocol version first.
pub fn parse_request(frame: &Frame) -> Result<Request, Failure> {
    if frame.kind != FrameKind::Json {
        return Err(Failure::invalid("the first frame must be a JSON request"));
    }
    let version: VersionOnly = serde_json::from_slice(&frame.payload)
        .map_err(|e| Failure::invalid(format!("malformed request: {e}")))?;
    match version.v {
        Some(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(Failure::new(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {v} is not supported (supported: {PROTOCOL_VERSION})"),
            ));
        }
        None => return Err(Failure::invalid("the request has no protocol version 'v'")),
    }
    let envelope: Envelope = serde_json::from_slice(&frame.payload)
        .map_err(|e| Failure::invalid(format!("malformed request: {e}")))?;
    Ok(envelope.request)
}

fn handle(init: &'static InitState, stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let mut conn = Conn::new(stream);
    let frame = match conn.read_frame() {
        Ok(Some(frame)) => frame,
        Ok(None) => return,
        Err(e) => return conn.fail(Failure::invalid(format!("bad frame: {e}"))),
    };
    let _ = conn.stream().set_read_timeout(None);
    let request = match parse_request(&frame) {
        Ok(request) => request,
        Err(f) => return conn.fail(f),
    };
    drop(frame);
    dispatch(init, conn, request);
}

fn reply(mut conn: Conn, result: Result<Response, Failure>) {
    match result {
        Ok(response) => {
            let _ = conn.send(&response);
        }
        Err(f) => conn.fail(f),
    }
}

fn dispatch(init: &'static InitState, conn: Conn, request: Request) {
    match request {
        Request::Hello => reply(
            conn,
            Ok(Response::Hello {
                version: PROTOCOL_VERSION,
                supported: vec![PROTOCOL_VERSION],
                init_version: env!("CARGO_PKG_VERSION").to_owned(),
                entrypoint: init.entrypoint.get().map(|p| p.snapshot()),
            }),
        ),
        Request::Exec(request) => exec::serve_exec(init, conn, request),
        Request::Attach { target, stdin } => exec::serve_attach(init, conn, &target, stdin),
        Request::ListProcs => reply(conn, Ok(Response::Procs { procs: init.procs.list() })),
        Request::Signal { target, signal, group } => {
            reply(conn, exec::signal(init, &target, signal, group).map(|()| Response::Ok));
        }
        Request::WriteStdin { target } => exec::serve_write_stdin(init, conn, &target),
        Request::CloseStdin { target } => {
            reply(conn, exec::close_stdin(init, &target).map(|()| Response::Ok))
        }
        Request::ResizePty { target, size } => {
            reply(conn, exec::resize_pty(init, &target, size).map(|()| Response::Ok));
        }
        Request::ReadFile { path, user, offset, length } => {
            files::serve_read_file(conn, &path, user.as_deref(), offset, length);
        }
        Request::WriteFile { path, user, mode, append, create_parents } => {
            files::serve_write_file(conn, &path, user.as_deref(), mode, append, create_parents);
        }
        Request::Stat { path, user } => {
            reply(conn, files::stat(&path, user.as_deref()).map(|entry| Response::Entry { entry }));
        }
        Request::ListDir { path, user, depth } => files::serve_list_dir(conn, &path, user.as_deref(), depth),
        Request::MakeDir { path, user, parents, mode } => reply(
            conn,
            files::make_dir(&path, user.as_deref(), parents, mode).map(|entry| Response::Entry { entry }),
        ),
        Request::Rename { from, to, user } => {
            reply(conn, files::rename(&from, &to, user.as_deref()).map(|entry| Response::Entry { entry }))
        }
        Request::Remove { path, user, recursive } => {
            reply(conn, files::remove(&path, user.as_deref(), recursive).map(|()| Response::Ok));
        }
        Request::Watch { path, user, recursive } => {
            watch::serve_watch(conn, &path, user.as_deref(), recursive)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> Frame {
        Frame::data(FrameKind::Json, s.as_bytes().to_vec())
    }

    #[test]
    fn versions_are_checked_before_the_request_is_decoded() {
        let f = parse_request(&json(r#"{"v":2,"op":"teleport"}"#)).unwrap_err();
        assert_eq!(f.code, ErrorCode::UnsupportedVersion);
        let f = parse_request(&json(r#"{"op":"hello"}"#)).unwrap_err();
        assert_eq!(f.code, ErrorCode::InvalidArgument);
        assert_eq!(parse_request(&json(r#"{"v":1,"op":"hello"}"#)).unwrap(), Request::Hello);
    }

    #[test]
    fn malformed_requests_are_invalid_arguments() {
        for bad in [r#"{"v":1,"op":"teleport"}"#, "not json", r#"{"v":1,"op":"exec","env":7}"#, "[[[[[[[["] {
            assert_eq!(parse_request(&json(bad)).unwrap_err().code, ErrorCode::InvalidArgument, "{bad}");
        }
        let stdin = Frame::data(FrameKind::Stdin, b"x".to_vec());
        assert_eq!(parse_request(&stdin).unwrap_err().code, ErrorCode::InvalidArgument);
    }
}

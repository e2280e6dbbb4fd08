//! The sandbox log (the entrypoint's output as JSON lines, bounded by punching holes at its
//! front) and the status file the host reads after init is gone.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use rustix::fs::FallocateFlags;
use sandpit_init::protocol::{InitStatus, LogRecord, LogStream};

use crate::sys::{lock, unix_micros};

/// Holes are punched in whole blocks of this size.
const HOLE_ALIGN: u64 = 4096;

/// The sandbox log: one [`LogRecord`] per line, appended to a host file.
///
/// Offsets in the file never move: once more than `max + max/4` bytes lie between the first kept
/// byte and the end, everything before `end - max` (rounded down to a block) is punched out, so the
/// disk use stays bounded while the file's size keeps growing. Readers skip holes with
/// `SEEK_DATA` and resynchronise at the next newline.
#[derive(Debug)]
pub struct SandboxLog {
    file: Mutex<Option<LogFile>>,
}

#[derive(Debug)]
struct LogFile {
    file: File,
    max_bytes: u64,
    kept_start: u64,
}

impl SandboxLog {
    /// A log writing to `fd` (opened for appending), or discarding everything when `None`.
    pub fn new(fd: Option<OwnedFd>, max_bytes: u64) -> Self {
        let file = fd.map(|fd| {
            let mut file = File::from(fd);
            let end = file.seek(SeekFrom::End(0)).unwrap_or(0);
            // A log continued after a restart may already start with a hole.
            let kept_start = rustix::fs::seek(&file, rustix::fs::SeekFrom::Data(0)).unwrap_or(end);
            LogFile { file, max_bytes, kept_start }
        });
        Self { file: Mutex::new(file) }
    }

    /// Appends one record (nothing for empty text).
    pub fn record(&self, stream: LogStream, text: &str) {
        if text.is_empty() {
            return;
        }
        let record = LogRecord { t: unix_micros(), s: stream, d: text.to_owned() };
        let Ok(mut line) = serde_json::to_vec(&record) else { return };
        line.push(b'\n');
        let mut guard = lock(&self.file);
        if let Some(log) = guard.as_mut() {
            // Nowhere to report a failing log: the entrypoint keeps running regardless.
            let _ = log.append(&line);
        }
    }
}

impl LogFile {
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.file.write_all(line)?;
        let end = self.file.stream_position()?;
        let limit = self.max_bytes.saturating_add(self.max_bytes / 4);
        if end.saturating_sub(self.kept_start) > limit {
            let cut = end.saturating_sub(self.max_bytes) / HOLE_ALIGN * HOLE_ALIGN;
            if cut > self.kept_start {
                // A file system without hole punching keeps growing; the log still works.
                let _ = rustix::fs::fallocate(
                    &self.file,
                    FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                    0,
                    cut,
                );
                self.kept_start = cut;
            }
        }
        Ok(())
    }
}

/// Decodes a byte stream as UTF-8 in pieces, never splitting a character between pieces:
/// incomplete trailing bytes wait for the next piece, invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Decodes `bytes` after what was left over from the previous call.
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::with_capacity(self.pending.len());
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let drop_to = self.pending.len() - keep;
        self.pending.drain(..drop_to);
        out
    }

    /// Whatever is left at the end of the stream (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// The status file: the JSON [`InitStatus`], replaced whole on every change.
///
/// A shorter status is padded with spaces to the previous length, so a reader racing a rewrite
/// never sees the tail of an older, longer JSON document after the new one.
#[derive(Debug)]
pub struct StatusReport {
    file: Option<File>,
    status: Mutex<(InitStatus, usize)>,
}

impl StatusReport {
    /// A report written to `fd`, or kept in memory only when `None`.
    pub fn new(fd: Option<OwnedFd>, init_pid: u32) -> Self {
        Self {
            file: fd.map(File::from),
            status: Mutex::new((InitStatus { init_pid, ..InitStatus::default() }, 0)),
        }
    }

    /// Changes the status and rewrites the file.
    pub fn update(&self, change: impl FnOnce(&mut InitStatus)) {
        let mut guard = lock(&self.status);
        let (status, written_len) = &mut *guard;
        change(status);
        let Some(file) = &self.file else { return };
        let Ok(mut json) = serde_json::to_vec(&*status) else { return };
        if json.len() < *written_len {
            json.resize(*written_len, b' ');
        }
        *written_len = json.len();
        let mut written = 0;
        while written < json.len() {
            let offset = u64::try_from(written).unwrap_or(u64::MAX);
            match rustix::io::pwrite(file, &json[written..], offset) {
                Ok(0) => return,
                Ok(n) => written += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return,
            }
        }
        let _ = rustix::fs::ftruncate(file, u64::try_from(json.len()).unwrap_or(u64::MAX));
    }

    /// The current status.
    pub fn current(&self) -> InitStatus {
        lock(&self.status).0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn characters_split_between_reads_are_kept_whole() {
        let text = "héllo €";
        let bytes = text.as_bytes();
        let mut s = Utf8Stream::default();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&s.decode(std::slice::from_ref(b)));
        }
        out.push_str(&s.finish());
        assert_eq!(out, text);
        let mut s = Utf8Stream::default();
        assert_eq!(s.decode(&[b'a', 0xE2, 0x82]), "a");
        assert_eq!(s.decode(&[0xAC, b'b']), "€b");
    }

    #[test]
    fn invalid_bytes_are_replaced() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.decode(&[b'a', 0xFF, b'b']), "a\u{FFFD}b");
        assert_eq!(s.decode(&[0xE2]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn log_lines_are_records_and_holes_bound_the_disk_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let log = SandboxLog::new(Some(file.into()), 64 << 10);
        let line = "x".repeat(1000);
        for _ in 0..1000 {
            log.record(LogStream::Out, &line);
        }
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.len() > 1_000_000, "size {}", meta.len());
        assert!(meta.blocks() * 512 <= (64 << 10) + (16 << 10) + 8192, "blocks {}", meta.blocks());
        let content = std::fs::read(&path).unwrap();
        let tail = &content[content.len() - 2000..];
        let last_line = tail.split(|b| *b == b'\n').rev().nth(1).unwrap();
        let record: LogRecord = serde_json::from_slice(last_line).unwrap();
        assert_eq!((record.s, record.d.len()), (LogStream::Out, 1000));
    }

    #[test]
    fn status_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status");
        let file = File::create(&path).unwrap();
        let report = StatusReport::new(Some(file.into()), 1);
        report.update(|s| s.entrypoint_error = Some("x".repeat(100)));
        report.update(|s| s.entrypoint_error = None);
        let back: InitStatus = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, InitStatus { init_pid: 1, ..InitStatus::default() });
    }
}

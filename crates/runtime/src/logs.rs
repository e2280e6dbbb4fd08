//! Reading a sandbox's log: JSON lines of `LogRecord`s, written by sandpit-init, bounded on disk by
//! punching holes at the front so that offsets stay stable.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::Path;

use sandpit_init::protocol::LogRecord;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// Records read from a log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// Whole records, in order.
    pub records: Vec<LogRecord>,
    /// Where the next read should start.
    pub next_offset: u64,
    /// Whether records between the requested offset and the first returned one were dropped
    /// (the log's size bound), or the offset was not at a record boundary.
    pub skipped: bool,
}

/// Reads whole records starting at `offset`, about `max_bytes` of them (at least one if any is
/// complete). An offset inside a record or inside the dropped front skips to the next whole record.
pub fn read(path: &Path, offset: u64, max_bytes: usize) -> Result<LogChunk> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogChunk { next_offset: offset, ..Default::default() });
        }
        Err(e) => return Err(RuntimeError::io("open log", path)(e)),
    };
    let size = f.metadata().map_err(RuntimeError::io("stat log", path))?.len();
    if offset >= size {
        return Ok(LogChunk { next_offset: offset.min(size), ..Default::default() });
    }
    // Skip a punched hole: the first byte of data at or after `offset`.
    let start = match rustix::fs::seek(f.as_fd(), rustix::fs::SeekFrom::Data(offset)) {
        Ok(p) => p,
        Err(rustix::io::Errno::NXIO) => {
            return Ok(LogChunk { next_offset: size, skipped: true, ..Default::default() });
        }
        Err(_) => offset,
    };
    let mut skipped = start > offset;
    // Are we at a record boundary? Only if the byte before is a newline (a hole reads as zero).
    let mut at_boundary = start == 0;
    if start > 0 {
        f.seek(SeekFrom::Start(start - 1)).map_err(RuntimeError::io("seek log", path))?;
        let mut b = [0u8; 1];
        f.read_exact(&mut b).map_err(RuntimeError::io("read log", path))?;
        at_boundary = b[0] == b'\n';
    }
    f.seek(SeekFrom::Start(start)).map_err(RuntimeError::io("seek log", path))?;
    let want = usize::try_from(size - start).unwrap_or(usize::MAX).min(max_bytes.max(1));
    let mut buf = vec![0u8; want];
    let n = read_full(&mut f, &mut buf).map_err(RuntimeError::io("read log", path))?;
    buf.truncate(n);
    // A record longer than `max_bytes`: keep reading until its newline.
    while !buf.contains(&b'\n') {
        let mut more = vec![0u8; 64 * 1024];
        let m = read_full(&mut f, &mut more).map_err(RuntimeError::io("read log", path))?;
        if m == 0 {
            break;
        }
        buf.extend_from_slice(&more[..m]);
    }
    let mut pos = 0usize;
    if !at_boundary {
        skipped = true;
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => pos = i + 1,
            None => return Ok(LogChunk { next_offset: start, skipped, ..Default::default() }),
        }
    }
    let mut records = Vec::new();
    let mut consumed = pos;
    while let Some(i) = buf[pos..].iter().position(|&b| b == b'\n') {
        let line = &buf[pos..pos + i];
        pos += i + 1;
        consumed = pos;
        match serde_json::from_slice::<LogRecord>(line) {
            Ok(r) => records.push(r),
            Err(_) => skipped = true,
        }
        if pos >= max_bytes && !records.is_empty() {
            break;
        }
    }
    Ok(LogChunk { records, next_offset: start + consumed as u64, skipped })
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandpit_init::protocol::LogStream;
    use std::io::Write;

    fn line(t: u64, d: &str) -> Vec<u8> {
        let mut v = serde_json::to_vec(&LogRecord { t, s: LogStream::Out, d: d.into() }).unwrap();
        v.push(b'\n');
        v
    }

    #[test]
    fn reads_whole_records_and_continues_from_next_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut f = File::create(&p).unwrap();
        for i in 0..10 {
            f.write_all(&line(i, &format!("line {i}\n"))).unwrap();
        }
        f.write_all(b"{\"t\":99,\"s\":\"out\",\"d\":\"partial").unwrap();
        let first = read(&p, 0, 100).unwrap();
        assert!(!first.records.is_empty() && first.records.len() < 10);
        assert!(!first.skipped);
        let mut all = first.records.clone();
        let mut off = first.next_offset;
        loop {
            let c = read(&p, off, 100).unwrap();
            if c.records.is_empty() {
                break;
            }
            assert!(!c.skipped);
            all.extend(c.records);
            off = c.next_offset;
        }
        assert_eq!(all.iter().map(|r| r.t).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn an_offset_inside_a_hole_skips_to_the_next_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).unwrap();
        for i in 0..2000 {
            f.write_all(&line(i, "some log text that fills blocks\n")).unwrap();
        }
        // Punch the first 64 KiB, as init does.
        rustix::fs::fallocate(
            &f,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            0,
            65536,
        )
        .unwrap();
        let c = read(&p, 0, 1 << 20).unwrap();
        assert!(c.skipped);
        assert!(c.records[0].t > 0);
        assert_eq!(c.records.last().unwrap().t, 1999);
        // Records are consecutive after the first.
        for w in c.records.windows(2) {
            assert_eq!(w[1].t, w[0].t + 1);
        }
    }
}

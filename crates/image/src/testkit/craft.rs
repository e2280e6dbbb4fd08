//! Hand-made layer tars, including names the `tar` crate's builder refuses (`..`, absolute,
//! NUL), written as raw header bytes or GNU long-name/PAX records.

use std::io::Write;

/// One entry of a crafted tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    name: Vec<u8>,
    kind: tar::EntryType,
    link: Option<Vec<u8>>,
    data: Vec<u8>,
    declared_size: Option<u64>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    device: Option<(u32, u32)>,
    pax: Vec<(String, Vec<u8>)>,
    long_name: bool,
}

impl RawEntry {
    fn new(name: &[u8], kind: tar::EntryType, mode: u32) -> Self {
        Self {
            name: name.to_vec(),
            kind,
            link: None,
            data: Vec::new(),
            declared_size: None,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            device: None,
            pax: Vec::new(),
            long_name: false,
        }
    }

    /// A regular file (mode 0644).
    pub fn file(name: &[u8], data: &[u8]) -> Self {
        Self { data: data.to_vec(), ..Self::new(name, tar::EntryType::Regular, 0o644) }
    }

    /// A directory (mode 0755).
    pub fn dir(name: &[u8]) -> Self {
        Self::new(name, tar::EntryType::Directory, 0o755)
    }

    /// A symlink to `target` (kept verbatim).
    pub fn symlink(name: &[u8], target: &[u8]) -> Self {
        Self { link: Some(target.to_vec()), ..Self::new(name, tar::EntryType::Symlink, 0o777) }
    }

    /// A hard link to `target`.
    pub fn hard_link(name: &[u8], target: &[u8]) -> Self {
        Self { link: Some(target.to_vec()), ..Self::new(name, tar::EntryType::Link, 0o644) }
    }

    /// A character device.
    pub fn char_device(name: &[u8], major: u32, minor: u32) -> Self {
        Self { device: Some((major, minor)), ..Self::new(name, tar::EntryType::Char, 0o666) }
    }

    /// A block device.
    pub fn block_device(name: &[u8], major: u32, minor: u32) -> Self {
        Self { device: Some((major, minor)), ..Self::new(name, tar::EntryType::Block, 0o660) }
    }

    /// A FIFO.
    pub fn fifo(name: &[u8]) -> Self {
        Self::new(name, tar::EntryType::Fifo, 0o644)
    }

    /// Sets the permission bits (setuid etc. included).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the owner as written in the tar.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets the mtime.
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    /// Declares a size other than the data's (a lying header).
    pub fn declared_size(mut self, size: u64) -> Self {
        self.declared_size = Some(size);
        self
    }

    /// Adds a PAX record (`SCHILY.xattr.user.x`, `path`, `linkpath`, `mtime` …).
    pub fn pax(mut self, key: &str, value: &[u8]) -> Self {
        self.pax.push((key.to_owned(), value.to_vec()));
        self
    }

    /// Writes the name through a GNU long-name entry even when it is short.
    pub fn gnu_long_name(mut self) -> Self {
        self.long_name = true;
        self
    }
}

/// An uncompressed tar of `entries`, with the two zero blocks at the end.
pub fn layer_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        write_entry(&mut out, entry);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A raw header block (GNU format) with the name and link name copied in unchecked.
fn header(name: &[u8], kind: tar::EntryType, size: u64, entry: &RawEntry) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(entry.mtime);
    if let Some((major, minor)) = entry.device {
        let _ = header.set_device_major(major);
        let _ = header.set_device_minor(minor);
    }
    let old = header.as_old_mut();
    let n = name.len().min(old.name.len());
    old.name[..n].copy_from_slice(&name[..n]);
    if let Some(link) = &entry.link {
        let n = link.len().min(old.linkname.len());
        old.linkname[..n].copy_from_slice(&link[..n]);
    }
    header.set_cksum();
    header
}

fn push_block_padded(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn write_entry(out: &mut Vec<u8>, entry: &RawEntry) {
    if !entry.pax.is_empty() {
        let mut records = Vec::new();
        for (key, value) in &entry.pax {
            records.extend_from_slice(&pax_record(key, value));
        }
        let pax_entry = RawEntry::new(b"././@PaxHeader", tar::EntryType::XHeader, 0o644);
        let h = header(b"././@PaxHeader", tar::EntryType::XHeader, records.len() as u64, &pax_entry);
        out.extend_from_slice(h.as_bytes());
        push_block_padded(out, &records);
    }
    let needs_long_name = entry.long_name || entry.name.len() > 100;
    if needs_long_name {
        let mut long = entry.name.clone();
        long.push(0);
        let ln = RawEntry::new(b"././@LongLink", tar::EntryType::GNULongName, 0o644);
        let h = header(b"././@LongLink", tar::EntryType::GNULongName, long.len() as u64, &ln);
        out.extend_from_slice(h.as_bytes());
        push_block_padded(out, &long);
    }
    if let Some(link) = entry.link.as_ref().filter(|l| l.len() > 100) {
        let mut long = link.clone();
        long.push(0);
        let ll = RawEntry::new(b"././@LongLink", tar::EntryType::GNULongLink, 0o644);
        let h = header(b"././@LongLink", tar::EntryType::GNULongLink, long.len() as u64, &ll);
        out.extend_from_slice(h.as_bytes());
        push_block_padded(out, &long);
    }
    let size = entry.declared_size.unwrap_or(entry.data.len() as u64);
    let short_name = if needs_long_name { &entry.name[..entry.name.len().min(100)] } else { &entry.name[..] };
    let h = header(short_name, entry.kind, size, entry);
    out.extend_from_slice(h.as_bytes());
    push_block_padded(out, &entry.data);
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = rest + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// gzip of `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// zstd of `bytes`.
pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_record("path", b"abc");
        let text = String::from_utf8(r.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), r.len());
        let long = pax_record("SCHILY.xattr.user.k", &[b'v'; 95]);
        let text = String::from_utf8(long.clone()).unwrap();
        assert_eq!(text.split_once(' ').unwrap().0.parse::<usize>().unwrap(), long.len());
    }

    #[test]
    fn crafted_tars_keep_names_the_tar_builder_refuses() {
        let tar = layer_tar(&[RawEntry::file(b"../escape", b"x"), RawEntry::file(&[b'a'; 150], b"y")]);
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<Vec<u8>> =
            archive.entries().unwrap().map(|e| e.unwrap().path_bytes().into_owned()).collect();
        assert_eq!(names, vec![b"../escape".to_vec(), vec![b'a'; 150]]);
    }
}

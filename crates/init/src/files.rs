//! File operations inside the sandbox, done by init as the requesting user.
//!
//! Paths resolve in the sandbox's own root, never through magic links (`openat2` with
//! `RESOLVE_NO_MAGICLINKS`, so `/proc/1/fd/N` cannot reach init's host descriptors); operations
//! on a final component go through a descriptor of its parent. The connection's thread takes the
//! user's file-system credentials, so permission checks and new files' owners are the user's.
//! Data is streamed in chunks both ways: memory stays bounded whatever the file size.

use std::collections::VecDeque;
use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use sandpit_init::protocol::{DATA_CHUNK, ErrorCode, FileEntry, FileKind, FrameKind, MAX_PAYLOAD, Response};

use crate::conn::Conn;
use crate::error::Failure;
use crate::exec::absolute_under;
use crate::users::{Identity, UserDb};

/// How every path is resolved: never through magic links.
const RESOLVE: ResolveFlags = ResolveFlags::NO_MAGICLINKS;
/// How paths found while walking a tree are resolved: below the tree, through no link at all.
const RESOLVE_BELOW: ResolveFlags =
    ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);
/// Entries a listing collects before it stops descending.
const MAX_LISTED: usize = 50_000;

/// The user a request acts as, with the user database for owner names.
pub struct Actor {
    /// Who.
    pub identity: Identity,
    /// Owner and group names.
    pub db: UserDb,
}

impl Actor {
    /// Resolves `user` and takes their file-system credentials in this thread.
    pub fn become_user(user: Option<&str>) -> Result<Self, Failure> {
        let db = UserDb::load();
        let identity = db.resolve(user)?;
        identity.act_as_in_this_thread()?;
        Ok(Self { identity, db })
    }

    /// The absolute, normalised form of `path` (relative paths are under the user's home).
    pub fn path(&self, path: &str) -> Result<String, Failure> {
        sandbox_path(path, &self.identity.home)
    }
}

/// `path` made absolute under `home`, without `.` components or repeated and trailing slashes.
pub fn sandbox_path(path: &str, home: &str) -> Result<String, Failure> {
    if path.is_empty() {
        return Err(Failure::invalid("the path is empty"));
    }
    if path.contains('\0') {
        return Err(Failure::invalid("the path contains a NUL byte"));
    }
    let mut out = String::with_capacity(path.len() + home.len() + 1);
    for component in absolute_under(home, path).split('/') {
        if !component.is_empty() && component != "." {
            out.push('/');
            out.push_str(component);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// `/a/b` → (`/a`, `b`); `None` for `/`.
fn split_parent(abs: &str) -> Option<(&str, &str)> {
    let cut = abs.rfind('/')?;
    let name = &abs[cut + 1..];
    if name.is_empty() {
        return None;
    }
    Some((if cut == 0 { "/" } else { &abs[..cut] }, name))
}

/// Opens a directory for use as the base of `*at` calls.
fn open_dir(path: &str) -> Result<OwnedFd, Failure> {
    rustix::fs::openat2(CWD, path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), RESOLVE)
        .map_err(|e| Failure::errno(e, path))
}

/// The parent directory of `abs` and its last component.
fn open_parent(abs: &str) -> Result<(OwnedFd, &str), Failure> {
    let (parent, name) =
        split_parent(abs).ok_or_else(|| Failure::invalid(format!("'{abs}' has no parent directory")))?;
    Ok((open_dir(parent)?, name))
}

/// Stat field types differ between architectures; these conversions are identities on some.
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn entry_from_stat(
    stat: &Stat,
    name: &str,
    path: &str,
    symlink_target: Option<String>,
    db: &UserDb,
) -> FileEntry {
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => FileKind::File,
        FileType::Directory => FileKind::Dir,
        FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    };
    let seconds = i64::try_from(stat.st_mtime).unwrap_or(0);
    let nanos = i64::try_from(stat.st_mtime_nsec).unwrap_or(0);
    FileEntry {
        name: name.to_owned(),
        path: path.to_owned(),
        kind,
        size: u64::try_from(stat.st_size).unwrap_or(0),
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        owner: db.user_name(stat.st_uid).map(str::to_owned),
        group: db.group_name(stat.st_gid).map(str::to_owned),
        mtime_ns: seconds.saturating_mul(1_000_000_000).saturating_add(nanos),
        symlink_target,
    }
}

/// Describes `name` in `dir` without following a final symlink.
fn entry_at(dir: BorrowedFd<'_>, name: &OsStr, path: &str, db: &UserDb) -> Result<FileEntry, Failure> {
    let stat =
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| Failure::errno(e, path))?;
    let target = if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
        rustix::fs::readlinkat(dir, name, Vec::new()).ok().map(|t| t.to_string_lossy().into_owned())
    } else {
        None
    };
    let display_name = String::from_utf8_lossy(name.as_bytes());
    Ok(entry_from_stat(&stat, &display_name, path, target, db))
}

/// Describes the path `abs` (lstat semantics).
fn entry_at_path(abs: &str, db: &UserDb) -> Result<FileEntry, Failure> {
    match split_parent(abs) {
        Some(_) => {
            let (dir, name) = open_parent(abs)?;
            entry_at(dir.as_fd(), OsStr::new(name), abs, db)
        }
        None => {
            let root = open_dir("/")?;
            let stat = rustix::fs::fstat(&root).map_err(|e| Failure::errno(e, "/"))?;
            Ok(entry_from_stat(&stat, "/", "/", None, db))
        }
    }
}

/// Serves `stat`.
pub fn stat(path: &str, user: Option<&str>) -> Result<FileEntry, Failure> {
    let actor = Actor::become_user(user)?;
    entry_at_path(&actor.path(path)?, &actor.db)
}

/// Serves `read_file`: `file`, `data` frames, `end`.
pub fn serve_read_file(mut conn: Conn, path: &str, user: Option<&str>, offset: u64, length: Option<u64>) {
    let opened = (|| {
        let actor = Actor::become_user(user)?;
        let abs = actor.path(path)?;
        let fd = rustix::fs::openat2(
            CWD,
            abs.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            RESOLVE,
        )
        .map_err(|e| Failure::errno(e, &abs))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| Failure::errno(e, &abs))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => return Err(Failure::os(libc::EISDIR, &abs)),
            _ => return Err(Failure::invalid(format!("{abs}: not a regular file"))),
        }
        let name = split_parent(&abs).map_or("/", |(_, n)| n).to_owned();
        let entry = entry_from_stat(&stat, &name, &abs, None, &actor.db);
        Ok((fd, entry))
    })();
    let (fd, entry) = match opened {
        Ok(opened) => opened,
        Err(f) => return conn.fail(f),
    };
    let abs = entry.path.clone();
    if conn.send(&Response::File { entry }).is_err() {
        return;
    }
    let mut buf = vec![0u8; DATA_CHUNK];
    let mut position = offset;
    let mut remaining = length.unwrap_or(u64::MAX);
    while remaining > 0 {
        let want = usize::try_from(remaining).unwrap_or(DATA_CHUNK).min(DATA_CHUNK);
        match rustix::io::pread(&fd, &mut buf[..want], position) {
            Ok(0) => break,
            Ok(n) => {
                if conn.send_data(FrameKind::Data, &buf[..n]).is_err() {
                    return;
                }
                let n = u64::try_from(n).unwrap_or(u64::MAX);
                position = position.saturating_add(n);
                remaining = remaining.saturating_sub(n);
            }
            Err(Errno::INTR | Errno::AGAIN) => {}
            Err(e) => return conn.fail(Failure::errno(e, &abs)),
        }
    }
    let _ = conn.send_data(FrameKind::End, &[]);
}

/// Removes a temporary file unless it was renamed into place.
struct TempFile<'a> {
    dir: BorrowedFd<'a>,
    name: String,
    armed: bool,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = rustix::fs::unlinkat(self.dir, self.name.as_str(), AtFlags::empty());
        }
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into a valid local buffer.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    if got != 8 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        bytes[..4].copy_from_slice(&nanos.to_ne_bytes());
        bytes[4..].copy_from_slice(&std::process::id().to_ne_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What marks the temporary files of atomic writes.
const TEMP_MARKER: &str = ".sandpit-tmp-";

/// A temporary name next to `name`, short enough for any file system.
fn temp_name(name: &str) -> String {
    let mut keep = name.len().min(200);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(".{}{TEMP_MARKER}{}", &name[..keep], random_suffix())
}

/// Whether `name` is the temporary file of an atomic write in progress.
pub fn is_temp_name(name: &str) -> bool {
    name.contains(TEMP_MARKER)
}

/// Serves `write_file`: `data` frames until `end` into a temporary file renamed over the target
/// (or appended to the target), then `entry`.
pub fn serve_write_file(
    mut conn: Conn,
    path: &str,
    user: Option<&str>,
    mode: Option<u32>,
    append: bool,
    create_parents: bool,
) {
    let prepared = (|| {
        let actor = Actor::become_user(user)?;
        let abs = actor.path(path)?;
        let Some((parent, _)) = split_parent(&abs) else {
            return Err(Failure::os(libc::EISDIR, &abs));
        };
        let dir = if create_parents {
            make_dirs(parent, Mode::from_raw_mode(0o755), false)?
        } else {
            open_dir(parent)?
        };
        Ok((actor, abs, dir))
    })();
    let (actor, abs, dir) = match prepared {
        Ok(prepared) => prepared,
        Err(f) => return conn.fail_and_drain(f),
    };
    let name = split_parent(&abs).map_or("", |(_, n)| n).to_owned();
    let mode = Mode::from_raw_mode(mode.unwrap_or(0o644) & 0o7777);
    match write_into(&mut conn, dir.as_fd(), &name, &abs, mode, append) {
        Ok(Received::All) => {}
        Ok(Received::Partly | Received::HostGone) | Err((_, Received::HostGone)) => return,
        Err((f, Received::All)) => return conn.fail(f),
        Err((f, Received::Partly)) => return conn.fail_and_drain(f),
    }
    match entry_at(dir.as_fd(), OsStr::new(&name), &abs, &actor.db) {
        Ok(entry) => {
            let _ = conn.send(&Response::Entry { entry });
        }
        Err(f) => conn.fail(f),
    }
}

/// How much of the host's data stream was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Received {
    /// Up to and including `end`.
    All,
    /// Not all of it (the rest must be drained before the host can read an answer).
    Partly,
    /// The host closed the connection.
    HostGone,
}

/// Receives the data and puts it in place.
fn write_into(
    conn: &mut Conn,
    dir: BorrowedFd<'_>,
    name: &str,
    abs: &str,
    mode: Mode,
    append: bool,
) -> Result<Received, (Failure, Received)> {
    let early = |f: Failure| (f, Received::Partly);
    let (fd, mut temp) = if append {
        let flags = OFlags::WRONLY | OFlags::APPEND | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat2(dir, name, flags | OFlags::CREATE | OFlags::EXCL, mode, RESOLVE) {
            Ok(fd) => {
                rustix::fs::fchmod(&fd, mode).map_err(|e| early(Failure::errno(e, abs)))?;
                fd
            }
            Err(Errno::EXIST) => rustix::fs::openat2(dir, name, flags, Mode::empty(), RESOLVE)
                .map_err(|e| early(Failure::errno(e, abs)))?,
            Err(e) => return Err(early(Failure::errno(e, abs))),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| early(Failure::errno(e, abs)))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(early(Failure::invalid(format!("{abs}: not a regular file"))));
        }
        (fd, None)
    } else {
        if let Ok(stat) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            && FileType::from_raw_mode(stat.st_mode) == FileType::Directory
        {
            return Err(early(Failure::os(libc::EISDIR, abs)));
        }
        let temp_name = temp_name(name);
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = rustix::fs::openat2(dir, temp_name.as_str(), flags, mode, RESOLVE)
            .map_err(|e| early(Failure::errno(e, abs)))?;
        let temp = TempFile { dir, name: temp_name, armed: true };
        rustix::fs::fchmod(&fd, mode).map_err(|e| early(Failure::errno(e, abs)))?;
        (fd, Some(temp))
    };
    let mut file = File::from(fd);
    loop {
        match conn.read_frame() {
            Ok(Some(frame)) if frame.kind == FrameKind::Data => {
                file.write_all(&frame.payload).map_err(|e| early(Failure::io(&e, abs)))?;
            }
            Ok(Some(frame)) if frame.kind == FrameKind::End => break,
            Ok(Some(_)) => {
                return Err((Failure::invalid("expected data frames and an end frame"), Received::All));
            }
            Ok(None) | Err(_) => return Ok(Received::HostGone),
        }
    }
    drop(file);
    if let Some(temp) = temp.as_mut() {
        rustix::fs::renameat(dir, temp.name.as_str(), dir, name)
            .map_err(|e| (Failure::errno(e, abs), Received::All))?;
        temp.armed = false;
    }
    Ok(Received::All)
}

/// `mkdir -p`: opens `abs`, creating missing directories with `mode` (exactly `mode`, umask
/// ignored, when `exact_mode`). An existing non-directory at `abs` is `already_exists`.
fn make_dirs(abs: &str, mode: Mode, exact_mode: bool) -> Result<OwnedFd, Failure> {
    let mut dir = open_dir("/")?;
    let mut so_far = String::with_capacity(abs.len());
    let components: Vec<&str> = abs.split('/').filter(|c| !c.is_empty()).collect();
    for (i, component) in components.iter().enumerate() {
        so_far.push('/');
        so_far.push_str(component);
        let last = i + 1 == components.len();
        let open = |dir: &OwnedFd| {
            rustix::fs::openat2(
                dir,
                *component,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
        };
        dir = match open(&dir) {
            Ok(next) => next,
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&dir, *component, mode) {
                    Ok(()) if exact_mode => {
                        rustix::fs::chmodat(&dir, *component, mode, AtFlags::empty())
                            .map_err(|e| Failure::errno(e, &so_far))?;
                    }
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(Failure::errno(e, &so_far)),
                }
                open(&dir).map_err(|e| Failure::errno(e, &so_far))?
            }
            Err(Errno::NOTDIR) if last => {
                return Err(Failure::new(
                    ErrorCode::AlreadyExists,
                    format!("{so_far}: exists and is not a directory"),
                ));
            }
            Err(e) => return Err(Failure::errno(e, &so_far)),
        };
    }
    Ok(dir)
}

/// Serves `make_dir`.
pub fn make_dir(
    path: &str,
    user: Option<&str>,
    parents: bool,
    mode: Option<u32>,
) -> Result<FileEntry, Failure> {
    let actor = Actor::become_user(user)?;
    let abs = actor.path(path)?;
    let exact = mode.is_some();
    let mode = Mode::from_raw_mode(mode.unwrap_or(0o755) & 0o7777);
    if parents {
        make_dirs(&abs, mode, exact)?;
        return entry_at_path(&abs, &actor.db);
    }
    let (dir, name) = open_parent(&abs)?;
    rustix::fs::mkdirat(&dir, name, mode).map_err(|e| Failure::errno(e, &abs))?;
    if exact {
        rustix::fs::chmodat(&dir, name, mode, AtFlags::empty()).map_err(|e| Failure::errno(e, &abs))?;
    }
    entry_at(dir.as_fd(), OsStr::new(name), &abs, &actor.db)
}

/// Serves `rename`.
pub fn rename(from: &str, to: &str, user: Option<&str>) -> Result<FileEntry, Failure> {
    let actor = Actor::become_user(user)?;
    let from = actor.path(from)?;
    let to = actor.path(to)?;
    let (from_dir, from_name) = open_parent(&from)?;
    let (to_dir, to_name) = open_parent(&to)?;
    rustix::fs::renameat(&from_dir, from_name, &to_dir, to_name)
        .map_err(|e| Failure::errno(e, &format!("rename '{from}' to '{to}'")))?;
    entry_at(to_dir.as_fd(), OsStr::new(to_name), &to, &actor.db)
}

/// Serves `remove`.
pub fn remove(path: &str, user: Option<&str>, recursive: bool) -> Result<(), Failure> {
    let actor = Actor::become_user(user)?;
    let abs = actor.path(path)?;
    let (dir, name) = open_parent(&abs)?;
    let stat =
        rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| Failure::errno(e, &abs))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(|e| Failure::errno(e, &abs));
    }
    if recursive {
        remove_tree_contents(dir.as_fd(), name, &abs)?;
    }
    rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR).map_err(|e| Failure::errno(e, &abs))
}

/// Empties the directory `name` in `parent`, depth first, without recursion (any depth fits in
/// a small stack) and without following symlinks.
fn remove_tree_contents(parent: BorrowedFd<'_>, name: &str, abs: &str) -> Result<(), Failure> {
    let top = rustix::fs::openat2(
        parent,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE_BELOW,
    )
    .map_err(|e| Failure::errno(e, abs))?;
    let shown = |rel: &Path| format!("{abs}/{}", rel.display());
    let mut pending: Vec<PathBuf> = vec![PathBuf::from(".")];
    while let Some(rel) = pending.last().cloned() {
        let fd = rustix::fs::openat2(
            &top,
            rel.as_path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE_BELOW,
        )
        .map_err(|e| Failure::errno(e, &shown(&rel)))?;
        let mut dir = Dir::new(fd).map_err(|e| Failure::errno(e, &shown(&rel)))?;
        let mut subdirs = Vec::new();
        while let Some(entry) = dir.next() {
            let entry = entry.map_err(|e| Failure::errno(e, &shown(&rel)))?;
            let child = entry.file_name();
            if is_dot(child) {
                continue;
            }
            let child = OsStr::from_bytes(child.to_bytes());
            let dir_fd = dir.fd().map_err(|e| Failure::errno(e, &shown(&rel)))?;
            let is_dir = match entry.file_type() {
                FileType::Directory => true,
                FileType::Unknown => rustix::fs::statat(dir_fd, child, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory),
                _ => false,
            };
            let flags = if is_dir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
            match rustix::fs::unlinkat(dir_fd, child, flags) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(Errno::NOTEMPTY | Errno::EXIST) if is_dir => subdirs.push(rel.join(child)),
                Err(e) => return Err(Failure::errno(e, &shown(&rel.join(child)))),
            }
        }
        if subdirs.is_empty() {
            pending.pop();
            if let (Some(up), Some(last)) = (rel.parent(), rel.file_name())
                && !up.as_os_str().is_empty()
            {
                let up_fd = rustix::fs::openat2(
                    &top,
                    up,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    RESOLVE_BELOW,
                )
                .map_err(|e| Failure::errno(e, &shown(up)))?;
                match rustix::fs::unlinkat(&up_fd, last, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(Failure::errno(e, &shown(&rel))),
                }
            }
        } else {
            pending.extend(subdirs);
        }
    }
    Ok(())
}

fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

/// Serves `list_dir`: entries down to `depth` levels, sorted by path, symlinked directories not
/// followed; as many as fit in one frame.
pub fn serve_list_dir(mut conn: Conn, path: &str, user: Option<&str>, depth: u32) {
    match list_dir(path, user, depth) {
        Ok(entries) => {
            let _ = conn.send(&Response::Entries { entries });
        }
        Err(f) => conn.fail(f),
    }
}

fn list_dir(path: &str, user: Option<&str>, depth: u32) -> Result<Vec<FileEntry>, Failure> {
    if depth == 0 {
        return Err(Failure::invalid("depth must be at least 1"));
    }
    let actor = Actor::become_user(user)?;
    let abs = actor.path(path)?;
    let top = rustix::fs::openat2(
        CWD,
        abs.as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
    .map_err(|e| Failure::errno(e, &abs))?;
    let mut entries = Vec::new();
    let mut queue: VecDeque<(PathBuf, u32)> = VecDeque::from([(PathBuf::from("."), 1)]);
    while let Some((rel, level)) = queue.pop_front() {
        let opened = rustix::fs::openat2(
            &top,
            rel.as_path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE_BELOW,
        );
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) if level == 1 => return Err(Failure::errno(e, &abs)),
            // A subdirectory we may not read is listed but not descended into.
            Err(_) => continue,
        };
        let Ok(mut dir) = Dir::new(fd) else { continue };
        while let Some(Ok(entry)) = dir.next() {
            if is_dot(entry.file_name()) {
                continue;
            }
            let child = OsStr::from_bytes(entry.file_name().to_bytes());
            let rel_child = rel.join(child);
            let shown_rel = rel_child.strip_prefix(".").unwrap_or(&rel_child);
            let child_path = if abs == "/" {
                format!("/{}", shown_rel.display())
            } else {
                format!("{abs}/{}", shown_rel.display())
            };
            let Ok(dir_fd) = dir.fd() else { break };
            let Ok(entry) = entry_at(dir_fd, child, &child_path, &actor.db) else { continue };
            if entry.kind == FileKind::Dir && level < depth {
                queue.push_back((rel_child, level + 1));
            }
            entries.push(entry);
            if entries.len() >= MAX_LISTED {
                queue.clear();
                break;
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    // The answer is one frame: keep the entries (in path order) that fit.
    let mut size = 64;
    let fitting = entries
        .iter()
        .take_while(|e| {
            size += serde_json::to_vec(e).map_or(MAX_PAYLOAD, |j| j.len() + 1);
            size <= MAX_PAYLOAD
        })
        .count();
    entries.truncate(fitting);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_under_home() {
        assert_eq!(sandbox_path("a/./b//c/", "/home/u").unwrap(), "/home/u/a/b/c");
        assert_eq!(sandbox_path("/", "/home/u").unwrap(), "/");
        assert_eq!(sandbox_path("/x/../y", "/").unwrap(), "/x/../y");
        assert!(sandbox_path("", "/").is_err());
    }

    #[test]
    fn parents_split_off_the_last_component() {
        assert_eq!(split_parent("/a/b"), Some(("/a", "b")));
        assert_eq!(split_parent("/a"), Some(("/", "a")));
        assert_eq!(split_parent("/"), None);
    }

    #[test]
    fn temp_names_stay_short() {
        let long = "é".repeat(200);
        let name = temp_name(&long);
        assert!(name.len() < 255 && name.starts_with('.') && is_temp_name(&name));
    }
}

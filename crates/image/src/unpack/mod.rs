//! Safe unpacking of one layer tar stream into a fresh directory, in overlayfs format.
//!
//! Every path operation is relative to a directory fd of the layer root. Parents are resolved
//! with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, so a symlink planted
//! by an earlier entry (`a -> /`, `a -> ../../..`) resolves inside the root; the final component
//! is created with `*at` calls that never follow a symlink (`O_NOFOLLOW | O_EXCL`, `mkdirat`,
//! `symlinkat`, `mknodat`, `AT_SYMLINK_NOFOLLOW`). Names with `..` or NUL refuse the layer.
//!
//! What becomes of each entry:
//!
//! ```text
//!  regular, dir, symlink, fifo ─► created; owner shifted (IdShift), mode incl. setuid/sticky
//!                                 (chmod after chown), mtime, user.* xattrs
//!  hard link ─────────────────► linked to an earlier entry of the same layer, or refused
//!  char/block device ─────────► skipped, listed in the report (the runtime provides /dev)
//!  dir/.wh.name ──────────────► char device 0:0 `dir/name` (overlayfs whiteout)
//!  dir/.wh..wh..opq ──────────► xattr trusted.overlay.opaque=y on `dir`
//!  other .wh..wh.* ───────────► skipped (aufs metadata)
//!  trusted.*, security.*, user.overlay.*, system.* xattrs ─► dropped, listed in the report
//! ```
//!
//! Memory stays bounded whatever the layer size: data is streamed, extension headers (long names,
//! PAX) are capped, and the lists kept for the report and for deferred directory times are capped.

mod fsops;
pub(crate) mod path;
mod report;
mod stream;

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use sandpit_types::ByteSize;

pub(crate) use fsops::remove_tree_at_path;
pub use report::{DroppedXattr, MAX_LISTED, SkipReason, SkippedEntry, UnpackReport, XattrDropReason};
pub(crate) use stream::unpack_blob;

use crate::error::{ImageError, UnsafePathReason};
use crate::idshift::IdShift;
use path::{EntryPath, c_name};

/// The most bytes of extension headers (GNU long names, PAX records) read before one entry.
pub const MAX_EXTENSION_HEADER_BYTES: u64 = 1 << 20;

/// Directory times set at the end (children change them while the layer unpacks); beyond this
/// many directories, times are set at once instead, so memory stays bounded.
const MAX_DEFERRED_DIR_TIMES: usize = 65_536;

/// Paths of skipped device entries remembered so that hard links to them are skipped too.
const MAX_REMEMBERED_SKIPS: usize = 10_000;

/// The overlayfs xattr that marks a directory opaque.
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

/// How a layer is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackOptions {
    /// The id range owners are shifted into.
    pub shift: IdShift,
    /// The most bytes of file content (and of uncompressed tar, when unpacking a blob) accepted;
    /// more is [`ImageError::TooLarge`].
    pub max_bytes: ByteSize,
}

/// Unpacks an uncompressed layer tar stream into `dest`, which must be an existing, empty
/// directory that nobody else writes to. On error `dest` holds a partial layer: remove it.
pub fn unpack_tar<R: Read>(
    reader: R,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<UnpackReport, ImageError> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::io("open layer directory", dest, e))?;
    unpack_tar_at(reader, root.as_fd(), options)
}

/// [`unpack_tar`] into an already open directory fd.
pub(crate) fn unpack_tar_at<R: Read>(
    reader: R,
    root: BorrowedFd<'_>,
    options: &UnpackOptions,
) -> Result<UnpackReport, ImageError> {
    let budget = HeaderBudget::default();
    let mut archive = tar::Archive::new(Metered { inner: reader, budget: &budget });
    let mut unpacker = Unpacker::new(root, options)?;
    let mut entries = archive.entries().map_err(|source| ImageError::InvalidTar { source })?;
    loop {
        budget.start_headers();
        let mut entry = match entries.next() {
            None => break,
            Some(Ok(entry)) => entry,
            Some(Err(_)) if budget.exceeded() => {
                return Err(ImageError::ExtensionHeadersTooLarge { limit: MAX_EXTENSION_HEADER_BYTES });
            }
            Some(Err(source)) => return Err(ImageError::InvalidTar { source }),
        };
        budget.start_data();
        unpacker.entry(&mut entry)?;
        // Whatever the entry did not consume (data of skipped entries) is read here, as data.
        io::copy(&mut entry, &mut io::sink()).map_err(|source| ImageError::InvalidTar { source })?;
    }
    unpacker.finish()
}

/// Counts bytes read while the tar reader parses headers, so that a huge long-name or PAX header
/// (which the `tar` crate reads into memory) is refused instead of exhausting memory.
#[derive(Debug, Default)]
pub(crate) struct HeaderBudget {
    in_headers: Cell<bool>,
    used: Cell<u64>,
    exceeded: Cell<bool>,
}

impl HeaderBudget {
    /// Call before asking the tar reader for the next entry.
    pub(crate) fn start_headers(&self) {
        self.in_headers.set(true);
        self.used.set(0);
    }

    /// Call once the entry is returned, before reading its data.
    pub(crate) fn start_data(&self) {
        self.in_headers.set(false);
    }

    /// Whether the last failure came from the budget.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.get()
    }
}

/// The reader the tar parser reads through.
pub(crate) struct Metered<'b, R> {
    pub(crate) inner: R,
    pub(crate) budget: &'b HeaderBudget,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.budget.in_headers.get() {
            let used = self.budget.used.get().saturating_add(n as u64);
            self.budget.used.set(used);
            // Headers of one entry: the extension data plus a few 512-byte blocks and padding.
            if used > MAX_EXTENSION_HEADER_BYTES + 64 * 1024 {
                self.budget.exceeded.set(true);
                return Err(io::Error::other("tar extension headers too large"));
            }
        }
        Ok(n)
    }
}

impl<R: io::Seek> io::Seek for Metered<'_, R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// Metadata of one entry, gathered before its data is read.
struct EntryMeta {
    display: String,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The state of one layer unpack.
struct Unpacker<'r> {
    root: BorrowedFd<'r>,
    shift: IdShift,
    max_bytes: u64,
    written: u64,
    report: UnpackReport,
    deferred_dir_times: Vec<(CString, Timespec)>,
    skipped_paths: HashSet<Vec<u8>>,
    buf: Vec<u8>,
}

impl<'r> Unpacker<'r> {
    fn new(root: BorrowedFd<'r>, options: &UnpackOptions) -> Result<Self, ImageError> {
        let unpacker = Self {
            root,
            shift: options.shift,
            max_bytes: options.max_bytes.bytes(),
            written: 0,
            report: UnpackReport::default(),
            deferred_dir_times: Vec::new(),
            skipped_paths: HashSet::new(),
            buf: vec![0; 64 * 1024],
        };
        // The root looks like a sandbox-root-owned 0755 directory unless the layer says otherwise.
        let root_id = unpacker.shift.root();
        rustix::fs::fchown(root, Some(Uid::from_raw(root_id)), Some(Gid::from_raw(root_id)))
            .and_then(|()| rustix::fs::fchmod(root, Mode::from_raw_mode(0o755)))
            .map_err(|e| entry_io(".", "set owner and mode of the layer root", e))?;
        Ok(unpacker)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw_path = entry.path_bytes().into_owned();
        let display = String::from_utf8_lossy(&raw_path).into_owned();
        let header = entry.header();
        let kind = header.entry_type();
        if kind.is_pax_global_extensions() {
            self.report.global_headers += 1;
            return Ok(());
        }
        self.report.entries += 1;
        let path = EntryPath::normalise(&raw_path)
            .map_err(|reason| ImageError::UnsafePath { entry: display.clone(), reason })?;
        let bad_header = |source| ImageError::InvalidTar { source };
        let mode = header.mode().map_err(bad_header)? & 0o7777;
        let uid = header.uid().map_err(bad_header)?;
        let gid = header.gid().map_err(bad_header)?;
        let header_mtime = header.mtime().map_err(bad_header)?;
        let device = (header.device_major().ok().flatten(), header.device_minor().ok().flatten());
        let link_name = entry.link_name_bytes().map(|l| l.into_owned());
        let mut meta = EntryMeta {
            display,
            mode,
            uid,
            gid,
            mtime: Timespec { tv_sec: i64::try_from(header_mtime).unwrap_or(i64::MAX), tv_nsec: 0 },
            xattrs: Vec::new(),
        };
        if let Some(extensions) = entry.pax_extensions().map_err(bad_header)? {
            for extension in extensions {
                let extension = extension.map_err(bad_header)?;
                let key = extension.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    meta.xattrs.push((name.to_vec(), extension.value_bytes().to_vec()));
                } else if key == b"mtime"
                    && let Some(t) = parse_pax_time(extension.value_bytes())
                {
                    meta.mtime = t;
                }
            }
        }

        if let Some(name) = path.file_name()
            && let Some(whited_out) = name.strip_prefix(b".wh.")
        {
            return self.whiteout(&path, whited_out, &meta);
        }

        // Old tars mark directories with a trailing slash on a regular entry.
        let is_dir = kind.is_dir() || (kind.is_file() && raw_path.ends_with(b"/"));
        if path.is_root() {
            if !is_dir {
                return Err(ImageError::UnsafePath {
                    entry: meta.display,
                    reason: UnsafePathReason::RootNotDirectory,
                });
            }
            return self.root_directory(&meta);
        }
        match kind {
            _ if is_dir => self.directory(&path, &meta),
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let declared = entry.size();
                self.regular_file(&path, &meta, declared, entry)
            }
            tar::EntryType::Symlink => self.symlink(&path, &meta, link_name.unwrap_or_default()),
            tar::EntryType::Link => self.hard_link(&path, &meta, link_name.unwrap_or_default()),
            tar::EntryType::Fifo => self.fifo(&path, &meta),
            tar::EntryType::Char | tar::EntryType::Block => {
                let (major, minor) = (device.0.unwrap_or(0), device.1.unwrap_or(0));
                let reason = if kind == tar::EntryType::Char {
                    SkipReason::CharDevice { major, minor }
                } else {
                    SkipReason::BlockDevice { major, minor }
                };
                self.report.skip(&meta.display, reason);
                if self.skipped_paths.len() < MAX_REMEMBERED_SKIPS {
                    self.skipped_paths.insert(path.c_string().into_bytes());
                }
                Ok(())
            }
            other => {
                self.report.skip(&meta.display, SkipReason::UnsupportedType { type_flag: other.as_byte() });
                Ok(())
            }
        }
    }

    /// Applies the metadata of a `./` entry to the layer root.
    fn root_directory(&mut self, meta: &EntryMeta) -> Result<(), ImageError> {
        let root = self.root;
        self.set_owner_mode_xattrs(root, meta)?;
        self.defer_dir_time(c".".to_owned(), meta.mtime, root)?;
        Ok(())
    }

    fn directory(&mut self, path: &EntryPath, meta: &EntryMeta) -> Result<(), ImageError> {
        let parent = self.resolve_parent(path, &meta.display)?;
        let name = c_name(path.file_name().unwrap_or_default());
        let existing =
            fsops::entry_type(parent.as_fd(), &name).map_err(|e| entry_io(&meta.display, "inspect", e))?;
        let mut replaced_whiteout = false;
        match existing {
            Some((FileType::Directory, _)) => {}
            Some((file_type, rdev)) => {
                replaced_whiteout = file_type == FileType::CharacterDevice && rdev == 0;
                fsops::remove_entry(parent.as_fd(), &name)
                    .map_err(|e| entry_io(&meta.display, "replace", e))?;
                self.mkdir(parent.as_fd(), &name, &meta.display)?;
            }
            None => self.mkdir(parent.as_fd(), &name, &meta.display)?,
        }
        let dir = fsops::open_dir_nofollow(parent.as_fd(), &name)
            .map_err(|e| entry_io(&meta.display, "open directory", e))?;
        self.set_owner_mode_xattrs(dir.as_fd(), meta)?;
        if replaced_whiteout {
            // Deleted and re-created in this layer: nothing of the lower layers shows through.
            self.set_opaque(dir.as_fd(), &meta.display)?;
        }
        self.report.directories += 1;
        self.defer_dir_time(path.c_string(), meta.mtime, dir.as_fd())
    }

    fn mkdir(&self, parent: BorrowedFd<'_>, name: &CStr, display: &str) -> Result<(), ImageError> {
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
            .map_err(|e| entry_io(display, "create directory", e))
    }

    fn regular_file<R: Read>(
        &mut self,
        path: &EntryPath,
        meta: &EntryMeta,
        declared: u64,
        data: &mut R,
    ) -> Result<(), ImageError> {
        // Refuse before writing anything when the header alone already breaks the limit.
        if self.written.saturating_add(declared) > self.max_bytes {
            return Err(ImageError::TooLarge { limit: ByteSize(self.max_bytes) });
        }
        let parent = self.resolve_parent(path, &meta.display)?;
        let name = c_name(path.file_name().unwrap_or_default());
        fsops::remove_entry(parent.as_fd(), &name).map_err(|e| entry_io(&meta.display, "replace", e))?;
        let fd = rustix::fs::openat(
            parent.as_fd(),
            &name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| entry_io(&meta.display, "create file", e))?;
        let mut file = std::fs::File::from(fd);
        let mut copied: u64 = 0;
        let mut flushed: u64 = 0;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(ImageError::InvalidTar { source }),
            };
            copied += n as u64;
            if self.written.saturating_add(copied) > self.max_bytes {
                return Err(ImageError::TooLarge { limit: ByteSize(self.max_bytes) });
            }
            let chunk = self.buf.get(..n).unwrap_or_default();
            file.write_all(chunk).map_err(|e| entry_io(&meta.display, "write file", e))?;
            if copied - flushed >= WRITEBACK_CHUNK {
                start_writeback(file.as_fd(), flushed, copied - flushed);
                flushed = copied;
            }
        }
        if copied != declared {
            return Err(ImageError::TruncatedEntry { entry: meta.display.clone(), declared, actual: copied });
        }
        self.written += copied;
        self.report.file_bytes += copied;
        self.report.files += 1;
        start_writeback(file.as_fd(), flushed, copied - flushed);
        let fd = OwnedFd::from(file);
        self.set_owner_mode_xattrs(fd.as_fd(), meta)?;
        rustix::fs::futimens(&fd, &times(meta.mtime)).map_err(|e| entry_io(&meta.display, "set mtime", e))?;
        Ok(())
    }

    fn symlink(&mut self, path: &EntryPath, meta: &EntryMeta, target: Vec<u8>) -> Result<(), ImageError> {
        let target = CString::new(target).map_err(|_| ImageError::UnsafePath {
            entry: meta.display.clone(),
            reason: UnsafePathReason::SymlinkTargetNul,
        })?;
        let parent = self.resolve_parent(path, &meta.display)?;
        let name = c_name(path.file_name().unwrap_or_default());
        fsops::remove_entry(parent.as_fd(), &name).map_err(|e| entry_io(&meta.display, "replace", e))?;
        // The target is kept verbatim: it is resolved later, inside the sandbox.
        rustix::fs::symlinkat(&target, parent.as_fd(), &name)
            .map_err(|e| entry_io(&meta.display, "create symlink", e))?;
        self.chown_nofollow(parent.as_fd(), &name, meta)?;
        self.drop_all_xattrs(meta);
        rustix::fs::utimensat(parent.as_fd(), &name, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| entry_io(&meta.display, "set mtime", e))?;
        self.report.symlinks += 1;
        Ok(())
    }

    fn hard_link(
        &mut self,
        path: &EntryPath,
        meta: &EntryMeta,
        raw_target: Vec<u8>,
    ) -> Result<(), ImageError> {
        let target_display = String::from_utf8_lossy(&raw_target).into_owned();
        let target = EntryPath::normalise(&raw_target).map_err(|_| ImageError::UnsafePath {
            entry: meta.display.clone(),
            reason: UnsafePathReason::HardLinkOutside,
        })?;
        let missing = || ImageError::HardLinkTargetMissing {
            entry: meta.display.clone(),
            target: target_display.clone(),
        };
        if target.is_root() {
            return Err(missing());
        }
        if self.skipped_paths.contains(target.c_string().as_bytes()) {
            self.report.skip(&meta.display, SkipReason::HardLinkToSkipped { target: target_display });
            return Ok(());
        }
        if target == *path {
            // A link to itself changes nothing, provided the entry exists.
            return match fsops::entry_type(self.root, &path.c_string()) {
                Ok(Some(_)) => Ok(()),
                _ => Err(missing()),
            };
        }
        let target_parent = match fsops::open_in_root(self.root, &target.parent_c_string(), dir_path_flags())
        {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Err(missing()),
            Err(e) => return Err(entry_io(&meta.display, "open hard link target directory", e)),
        };
        let target_name = c_name(target.file_name().unwrap_or_default());
        if fsops::entry_type(target_parent.as_fd(), &target_name)
            .map_err(|e| entry_io(&meta.display, "inspect hard link target", e))?
            .is_none()
        {
            return Err(missing());
        }
        let parent = self.resolve_parent(path, &meta.display)?;
        let name = c_name(path.file_name().unwrap_or_default());
        fsops::remove_entry(parent.as_fd(), &name).map_err(|e| entry_io(&meta.display, "replace", e))?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked as the symlink itself.
        match rustix::fs::linkat(target_parent.as_fd(), &target_name, parent.as_fd(), &name, AtFlags::empty())
        {
            Ok(()) => {}
            Err(Errno::NOENT) => return Err(missing()),
            Err(e) => return Err(entry_io(&meta.display, "create hard link", e)),
        }
        self.report.hard_links += 1;
        Ok(())
    }

    fn fifo(&mut self, path: &EntryPath, meta: &EntryMeta) -> Result<(), ImageError> {
        let parent = self.resolve_parent(path, &meta.display)?;
        let name = c_name(path.file_name().unwrap_or_default());
        fsops::remove_entry(parent.as_fd(), &name).map_err(|e| entry_io(&meta.display, "replace", e))?;
        rustix::fs::mknodat(parent.as_fd(), &name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
            .map_err(|e| entry_io(&meta.display, "create fifo", e))?;
        self.chown_nofollow(parent.as_fd(), &name, meta)?;
        // The FIFO was just created in a directory only this unpack writes to: nothing can have
        // swapped it for a symlink, so chmodat (which follows symlinks) is safe here.
        rustix::fs::chmodat(parent.as_fd(), &name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
            .map_err(|e| entry_io(&meta.display, "set mode", e))?;
        self.drop_all_xattrs(meta);
        rustix::fs::utimensat(parent.as_fd(), &name, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| entry_io(&meta.display, "set mtime", e))?;
        self.report.fifos += 1;
        Ok(())
    }

    /// `dir/.wh.name` and `dir/.wh..wh..opq` in overlayfs form.
    fn whiteout(&mut self, path: &EntryPath, whited_out: &[u8], meta: &EntryMeta) -> Result<(), ImageError> {
        if whited_out == b".wh..opq" {
            let parent = self.resolve_parent(path, &meta.display)?;
            let dir = rustix::fs::openat(
                parent.as_fd(),
                c".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| entry_io(&meta.display, "open opaque directory", e))?;
            self.set_opaque(dir.as_fd(), &meta.display)?;
            self.report.opaque_directories += 1;
            return Ok(());
        }
        if whited_out.starts_with(b".wh.") {
            self.report.skip(&meta.display, SkipReason::AufsMetadata);
            return Ok(());
        }
        if whited_out.is_empty() || whited_out == b"." || whited_out == b".." {
            return Err(ImageError::UnsafePath {
                entry: meta.display.clone(),
                reason: UnsafePathReason::BadWhiteout,
            });
        }
        let target = path.with_file_name(whited_out);
        let parent = self.resolve_parent(&target, &meta.display)?;
        let name = c_name(whited_out);
        fsops::remove_entry(parent.as_fd(), &name).map_err(|e| entry_io(&meta.display, "replace", e))?;
        rustix::fs::mknodat(
            parent.as_fd(),
            &name,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| entry_io(&meta.display, "create whiteout device", e))?;
        self.chown_to_sandbox_root(parent.as_fd(), &name)
            .map_err(|e| entry_io(&meta.display, "set whiteout owner", e))?;
        self.report.whiteouts += 1;
        Ok(())
    }

    fn set_opaque(&self, dir: BorrowedFd<'_>, display: &str) -> Result<(), ImageError> {
        rustix::fs::fsetxattr(dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(|e| entry_io(display, "mark directory opaque", e))
    }

    /// Opens the parent directory of `path` (inside the root), creating missing directories as
    /// sandbox-root-owned 0755 ones.
    fn resolve_parent(&mut self, path: &EntryPath, display: &str) -> Result<OwnedFd, ImageError> {
        let components = path.parent_components();
        match fsops::open_in_root(self.root, &path.parent_c_string(), dir_path_flags()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(Errno::NOTDIR) => return Err(ImageError::ParentNotDirectory { entry: display.to_owned() }),
            Err(e) => return Err(entry_io(display, "open parent directory", e)),
        }
        let mut current = fsops::open_in_root(self.root, c".", dir_path_flags())
            .map_err(|e| entry_io(display, "open layer root", e))?;
        for depth in 0..components.len() {
            let prefix = path::join(components.get(..=depth).unwrap_or_default());
            match fsops::open_in_root(self.root, &prefix, dir_path_flags()) {
                Ok(fd) => {
                    current = fd;
                    continue;
                }
                Err(Errno::NOENT) => {}
                Err(Errno::NOTDIR) => {
                    return Err(ImageError::ParentNotDirectory { entry: display.to_owned() });
                }
                Err(e) => return Err(entry_io(display, "open parent directory", e)),
            }
            let name = c_name(components.get(depth).map(Vec::as_slice).unwrap_or_default());
            match rustix::fs::mkdirat(current.as_fd(), &name, Mode::from_raw_mode(0o755)) {
                Ok(()) => {}
                // A dangling symlink (or a racing entry) holds the name: not a directory.
                Err(Errno::EXIST) => {
                    return Err(ImageError::ParentNotDirectory { entry: display.to_owned() });
                }
                Err(e) => return Err(entry_io(display, "create parent directory", e)),
            }
            self.chown_to_sandbox_root(current.as_fd(), &name)
                .map_err(|e| entry_io(display, "set parent directory owner", e))?;
            self.report.implicit_directories += 1;
            current = fsops::open_in_root(self.root, &prefix, dir_path_flags())
                .map_err(|e| entry_io(display, "open parent directory", e))?;
        }
        Ok(current)
    }

    /// Gives `name` under `parent` to sandbox root (never following a symlink).
    fn chown_to_sandbox_root(&self, parent: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<()> {
        let root_id = self.shift.root();
        rustix::fs::chownat(
            parent,
            name,
            Some(Uid::from_raw(root_id)),
            Some(Gid::from_raw(root_id)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    }

    fn owner(&mut self, meta: &EntryMeta) -> (Uid, Gid) {
        let (uid, uid_overflow) = self.shift.map(meta.uid);
        let (gid, gid_overflow) = self.shift.map(meta.gid);
        if uid_overflow || gid_overflow {
            self.report.overflow_ids += 1;
        }
        (Uid::from_raw(uid), Gid::from_raw(gid))
    }

    /// Owner, then mode (chown clears setuid/setgid), then xattrs, on an open file or directory.
    fn set_owner_mode_xattrs(&mut self, fd: BorrowedFd<'_>, meta: &EntryMeta) -> Result<(), ImageError> {
        let (uid, gid) = self.owner(meta);
        rustix::fs::fchown(fd, Some(uid), Some(gid)).map_err(|e| entry_io(&meta.display, "set owner", e))?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| entry_io(&meta.display, "set mode", e))?;
        for (name, value) in &meta.xattrs {
            let shown = String::from_utf8_lossy(name).into_owned();
            match classify_xattr(name) {
                Some(reason) => self.report.drop_xattr(&meta.display, &shown, reason),
                None => {
                    let applied = CString::new(name.clone())
                        .ok()
                        .map(|c| rustix::fs::fsetxattr(fd, &c, value, XattrFlags::empty()));
                    if !matches!(applied, Some(Ok(()))) {
                        self.report.drop_xattr(&meta.display, &shown, XattrDropReason::Refused);
                    }
                }
            }
        }
        Ok(())
    }

    fn chown_nofollow(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        meta: &EntryMeta,
    ) -> Result<(), ImageError> {
        let (uid, gid) = self.owner(meta);
        rustix::fs::chownat(parent, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| entry_io(&meta.display, "set owner", e))
    }

    /// Symlinks and FIFOs cannot carry `user.*` xattrs; record every xattr of such an entry.
    fn drop_all_xattrs(&mut self, meta: &EntryMeta) {
        for (name, _) in &meta.xattrs {
            let reason = classify_xattr(name).unwrap_or(XattrDropReason::NotARegularFileOrDirectory);
            self.report.drop_xattr(&meta.display, &String::from_utf8_lossy(name), reason);
        }
    }

    fn defer_dir_time(
        &mut self,
        path: CString,
        mtime: Timespec,
        dir: BorrowedFd<'_>,
    ) -> Result<(), ImageError> {
        if self.deferred_dir_times.len() < MAX_DEFERRED_DIR_TIMES {
            self.deferred_dir_times.push((path, mtime));
            Ok(())
        } else {
            rustix::fs::futimens(dir, &times(mtime))
                .map_err(|e| entry_io(&String::from_utf8_lossy(path.as_bytes()), "set mtime", e))
        }
    }

    /// Sets the deferred directory times, deepest last-listed first.
    fn finish(mut self) -> Result<UnpackReport, ImageError> {
        for (path, mtime) in self.deferred_dir_times.drain(..).rev() {
            // The directory may have been replaced by a later entry; then its time is moot.
            let Ok(dir) =
                fsops::open_in_root(self.root, &path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)
            else {
                continue;
            };
            rustix::fs::futimens(&dir, &times(mtime))
                .map_err(|e| entry_io(&String::from_utf8_lossy(path.as_bytes()), "set mtime", e))?;
        }
        Ok(self.report)
    }
}

/// Flags for resolving a directory to operate in.
fn dir_path_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY
}

/// Which xattrs are dropped, and why; `None` keeps it.
fn classify_xattr(name: &[u8]) -> Option<XattrDropReason> {
    if name.starts_with(b"user.overlay.") {
        Some(XattrDropReason::UserOverlay)
    } else if name.starts_with(b"user.") {
        None
    } else if name.starts_with(b"trusted.") {
        Some(XattrDropReason::Trusted)
    } else if name.starts_with(b"security.") {
        Some(XattrDropReason::Security)
    } else {
        Some(XattrDropReason::OtherNamespace)
    }
}

/// Parses a PAX time (`seconds[.fraction]`).
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tv_nsec = if digits.is_empty() || tv_sec < 0 { 0 } else { format!("{digits:0<9}").parse().ok()? };
    Some(Timespec { tv_sec, tv_nsec })
}

fn times(mtime: Timespec) -> Timestamps {
    Timestamps { last_access: mtime, last_modification: mtime }
}

fn entry_io(display: &str, action: &'static str, source: impl Into<io::Error>) -> ImageError {
    ImageError::EntryIo { entry: display.to_owned(), action, source: source.into() }
}

/// Bytes of a large file written between two [`start_writeback`] calls.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// Starts writing `len` bytes of a file from `offset` to disk now, without waiting: the layer is
/// synced as a whole before it is published (`syncfs`), and by then most of its data is on disk
/// already, so that sync no longer waits for the whole layer. Only a hint: a failure changes
/// nothing.
fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) {
    if len == 0 {
        return;
    }
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: `fd` is an open file descriptor for the duration of the call; sync_file_range
    // reads no memory of ours.
    let _ = unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_keep_nanoseconds() {
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some(Timespec { tv_sec: 1_700_000_000, tv_nsec: 500_000_000 })
        );
        assert_eq!(parse_pax_time(b"12"), Some(Timespec { tv_sec: 12, tv_nsec: 0 }));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn xattrs_outside_user_are_dropped_with_their_reason() {
        assert_eq!(classify_xattr(b"user.mime_type"), None);
        assert_eq!(classify_xattr(b"user.overlay.opaque"), Some(XattrDropReason::UserOverlay));
        assert_eq!(classify_xattr(b"trusted.overlay.opaque"), Some(XattrDropReason::Trusted));
        assert_eq!(classify_xattr(b"security.capability"), Some(XattrDropReason::Security));
        assert_eq!(classify_xattr(b"system.posix_acl_access"), Some(XattrDropReason::OtherNamespace));
    }
}

//! Store plumbing: advisory file locks, private temp workspaces, atomic file writes.

use std::fs::{DirBuilder, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ImageError;
use crate::unpack::remove_tree_at_path;

/// An advisory `flock` on a lock file, released on drop.
///
/// Locks belong to the open file description: two opens of the same file conflict even within one
/// process, so these lock threads against each other as well as processes.
#[derive(Debug)]
pub(crate) struct FileLock {
    file: File,
}

impl FileLock {
    /// Opens (creating) `path` and takes the lock, waiting for it.
    pub(crate) fn acquire(path: &Path, exclusive: bool) -> Result<Self, ImageError> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| ImageError::io("open lock file", path, e))?;
        let op = if exclusive { FlockOperation::LockExclusive } else { FlockOperation::LockShared };
        rustix::fs::flock(&file, op).map_err(|e| ImageError::io("lock", path, e))?;
        Ok(Self { file })
    }

    /// Turns a shared lock into an exclusive one without waiting; `false` when others hold it.
    /// The shared lock may be lost when this fails (flock conversion is not atomic).
    pub(crate) fn try_upgrade(&self) -> bool {
        rustix::fs::flock(&self.file, FlockOperation::NonBlockingLockExclusive).is_ok()
    }
}

/// A private directory under the store's `tmp/`, locked while it lives and removed on drop.
///
/// The lock tells [`clean_stale_workspaces`] (run when a store is opened) that the owner is
/// alive; a workspace left by a crashed process has no lock and is removed.
#[derive(Debug)]
pub(crate) struct Workspace {
    path: PathBuf,
    _lock: OwnedFd,
}

impl Workspace {
    /// Creates and locks a fresh workspace under `tmp`.
    pub(crate) fn create(tmp: &Path) -> Result<Self, ImageError> {
        loop {
            let path = tmp.join(uuid::Uuid::now_v7().simple().to_string());
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ImageError::io("create temp directory", path, e)),
            }
            let fd = rustix::fs::open(
                &path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| ImageError::io("open temp directory", &path, e))?;
            rustix::fs::flock(&fd, FlockOperation::LockExclusive)
                .map_err(|e| ImageError::io("lock temp directory", &path, e))?;
            // Another process opening the store may have taken it for stale between mkdir and
            // flock; then it is gone (or going) and a new one is made.
            let still_ours = match (rustix::fs::fstat(&fd), rustix::fs::lstat(&path)) {
                (Ok(a), Ok(b)) => a.st_ino == b.st_ino && a.st_dev == b.st_dev && a.st_nlink > 0,
                _ => false,
            };
            if still_ours {
                return Ok(Self { path, _lock: fd });
            }
        }
    }

    /// The workspace directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` to a file in the workspace and syncs it; returns its path.
    pub(crate) fn write_synced(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, ImageError> {
        let path = self.path.join(name);
        let mut file = File::create(&path).map_err(|e| ImageError::io("create", &path, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| ImageError::io("write", &path, e))?;
        Ok(path)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Err(e) = remove_tree_at_path(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove temp directory");
        }
    }
}

/// Removes workspaces under `tmp` that no live process holds (left by a crash).
pub(crate) fn clean_stale_workspaces(tmp: &Path) -> Result<(), ImageError> {
    let entries = std::fs::read_dir(tmp).map_err(|e| ImageError::io("read", tmp, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io("read", tmp, e))?;
        let path = entry.path();
        let fd = match rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOTDIR | Errno::LOOP) => {
                std::fs::remove_file(&path)
                    .map_err(|e| ImageError::io("remove stale temp file", &path, e))?;
                continue;
            }
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(ImageError::io("open temp directory", &path, e)),
        };
        match rustix::fs::flock(fd.as_fd(), FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removing temp directory left by an earlier crash");
                remove_tree_at_path(&path)
                    .map_err(|e| ImageError::io("remove stale temp directory", &path, e))?;
            }
            Err(Errno::WOULDBLOCK) => {}
            Err(e) => return Err(ImageError::io("lock temp directory", &path, e)),
        }
    }
    Ok(())
}

/// Syncs a directory so that renames into it are durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), ImageError> {
    File::open(path).and_then(|d| d.sync_all()).map_err(|e| ImageError::io("sync directory", path, e))
}

/// Replaces `dest` with `value` as JSON, atomically (write in a workspace, sync, rename, sync).
pub(crate) fn write_json_atomic<T: Serialize>(tmp: &Path, dest: &Path, value: &T) -> Result<(), ImageError> {
    write_json_replacing(tmp, dest, value, true)
}

/// Replaces `dest` with `value` as JSON, atomically; `durable` syncs the file and the directory
/// (without it, a power loss may keep the old content, but never a torn file).
pub(crate) fn write_json_replacing<T: Serialize>(
    tmp: &Path,
    dest: &Path,
    value: &T,
    durable: bool,
) -> Result<(), ImageError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| ImageError::io("serialise", dest, e))?;
    let workspace = Workspace::create(tmp)?;
    let staged = if durable {
        workspace.write_synced("file.json", &bytes)?
    } else {
        let path = workspace.path().join("file.json");
        std::fs::write(&path, &bytes).map_err(|e| ImageError::io("write", &path, e))?;
        path
    };
    std::fs::rename(&staged, dest).map_err(|e| ImageError::io("rename into place", dest, e))?;
    if durable && let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Reads a JSON file of the store; `None` when it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ImageError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("read", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| ImageError::StoreCorrupt { path: path.to_owned(), source })
}

/// Creates a directory (mode 0700) unless it exists.
pub(crate) fn ensure_dir(path: &Path) -> Result<(), ImageError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| ImageError::io("create directory", path, e))
}

/// Creates a directory unless it exists, and makes it 0700 whatever it was: unpacked layers hold
/// setuid files owned by sandbox ids, which no host user may reach.
pub(crate) fn ensure_private_dir(path: &Path) -> Result<(), ImageError> {
    ensure_dir(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| ImageError::io("restrict permissions of", path, e))
}

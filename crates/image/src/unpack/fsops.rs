//! Filesystem operations relative to directory fds: in-root resolution and removal of trees
//! that never follows a symlink.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Resolution for every lookup under a layer root: symlinks are resolved as if the root were `/`
/// (so `a -> /` or `a -> ../../..` stays inside), no magic links, no crossing into other mounts.
pub(crate) const IN_ROOT: ResolveFlags =
    ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS).union(ResolveFlags::NO_XDEV);

/// Opens `path` under `root` with [`IN_ROOT`] resolution; retries the kernel's EAGAIN (a
/// concurrent rename elsewhere on the system) a few times.
pub(crate) fn open_in_root(root: BorrowedFd<'_>, path: &CStr, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), IN_ROOT) {
            Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
            other => return other,
        }
    }
}

/// Opens a directory under `dirfd` for reading, never following a symlink at `name`.
pub(crate) fn open_dir_nofollow(dirfd: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The type of `name` under `dirfd` without following a symlink, or `None` when it does not exist.
pub(crate) fn entry_type(dirfd: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<Option<(FileType, u64)>> {
    match rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some((FileType::from_raw_mode(st.st_mode), st.st_rdev))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `name` under `parent` whatever it is; a directory goes with everything below it.
pub(crate) fn remove_entry(parent: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<()> {
    match entry_type(parent, name)? {
        None => Ok(()),
        Some((FileType::Directory, _)) => remove_tree(parent, name),
        Some(_) => rustix::fs::unlinkat(parent, name, AtFlags::empty()),
    }
}

/// Removes the directory `name` under `parent` and everything below it.
///
/// Iterative (a hostile layer can nest directories deeper than a thread's stack allows
/// recursion) and holding at most two directory fds at a time; it never follows a symlink, so a
/// symlink inside the tree is removed, not what it points at.
pub(crate) fn remove_tree(parent: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<()> {
    let mut current = match open_dir_nofollow(parent, name) {
        Ok(fd) => fd,
        Err(Errno::NOTDIR | Errno::LOOP) => return rustix::fs::unlinkat(parent, name, AtFlags::empty()),
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    // Names from `name` down to `current`, to remove each directory from its parent on the way up.
    let mut descent: Vec<CString> = Vec::new();
    loop {
        let (removed, subdir) = clear_files(current.as_fd())?;
        if let Some(sub) = subdir {
            match open_dir_nofollow(current.as_fd(), &sub) {
                Ok(next) => {
                    descent.push(sub);
                    current = next;
                }
                Err(Errno::NOTDIR | Errno::LOOP) => {
                    rustix::fs::unlinkat(current.as_fd(), &sub, AtFlags::empty())?;
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        if removed > 0 {
            // Directory reading while unlinking may skip entries; scan again until clean.
            continue;
        }
        match descent.pop() {
            Some(child) => {
                let up = rustix::fs::openat(
                    current.as_fd(),
                    c"..",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                rustix::fs::unlinkat(up.as_fd(), &child, AtFlags::REMOVEDIR)?;
                current = up;
            }
            None => {
                drop(current);
                return rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR);
            }
        }
    }
}

/// Unlinks every non-directory in `dir`; returns how many and the first subdirectory seen.
fn clear_files(dir: BorrowedFd<'_>) -> rustix::io::Result<(usize, Option<CString>)> {
    let mut reader = Dir::read_from(dir)?;
    let mut removed = 0;
    let mut subdir = None;
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                matches!(entry_type(dir, name)?, Some((FileType::Directory, _)))
            }
            _ => false,
        };
        if is_dir {
            if subdir.is_none() {
                subdir = Some(name.to_owned());
            }
        } else {
            match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => removed += 1,
                Err(e) => return Err(e),
            }
        }
    }
    Ok((removed, subdir))
}

/// Removes the directory tree at an absolute or relative `path` (nothing if it is missing).
pub(crate) fn remove_tree_at_path(path: &std::path::Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no parent"));
    };
    let parent = if parent.as_os_str().is_empty() { std::path::Path::new(".") } else { parent };
    let parent_fd =
        rustix::fs::open(parent, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let name = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(name))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    Ok(remove_entry(parent_fd.as_fd(), &name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_tree_removes_deep_trees_and_leaves_symlink_targets_alone() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let tree = base.path().join("tree");
        let mut deep = tree.clone();
        for _ in 0..300 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside, deep.join("link")).unwrap();

        remove_tree_at_path(&tree).unwrap();
        assert!(!tree.exists());
        assert!(outside.join("keep").exists());
        // Missing is fine.
        remove_tree_at_path(&tree).unwrap();
    }
}

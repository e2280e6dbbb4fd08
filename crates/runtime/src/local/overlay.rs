//! The sandbox root filesystem: overlayfs over the image's shared read-only layers and the
//! sandbox's own upper directory.
//!
//! Layers are added one by one with the new mount API's `lowerdir+` (Linux 6.8+), which has no
//! limit on the number of layers; older kernels get the classic `mount(2)` with one `lowerdir=`
//! string, limited to a page of options.

use std::path::{Path, PathBuf};

use rustix::fs::CWD;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, fsconfig_create,
    fsconfig_set_string, fsmount, fsopen, move_mount,
};

use crate::error::{Result, RuntimeError};

/// What to stack.
#[derive(Debug, Clone)]
pub struct OverlayDirs {
    /// Image layers, lowest first.
    pub layers: Vec<PathBuf>,
    /// The writable upper directory.
    pub upper: PathBuf,
    /// Overlayfs's work directory (same filesystem as `upper`).
    pub work: PathBuf,
}

fn err(target: &Path) -> impl FnOnce(rustix::io::Errno) -> RuntimeError + '_ {
    move |e| RuntimeError::io("mount overlay at", target)(e.into())
}

/// Mounts the overlay at `target`.
pub fn mount(dirs: &OverlayDirs, target: &Path) -> Result<()> {
    if dirs.layers.is_empty() {
        return Err(RuntimeError::InvalidSpec { field: "image", reason: "the image has no layers".into() });
    }
    match mount_new_api(dirs, target) {
        Ok(()) => Ok(()),
        // `lowerdir+` unknown (kernel before 6.8) or no new mount API: classic mount.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => mount_classic(dirs, target),
        Err(e) => Err(err(target)(e)),
    }
}

fn mount_new_api(dirs: &OverlayDirs, target: &Path) -> rustix::io::Result<()> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // Overlay's lowerdir order is topmost first.
    for layer in dirs.layers.iter().rev() {
        fsconfig_set_string(&fs, "lowerdir+", layer)?;
    }
    fsconfig_set_string(&fs, "upperdir", &dirs.upper)?;
    fsconfig_set_string(&fs, "workdir", &dirs.work)?;
    fsconfig_create(&fs)?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::MOUNT_ATTR_NODEV)?;
    move_mount(&mnt, "", CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
}

fn mount_classic(dirs: &OverlayDirs, target: &Path) -> Result<()> {
    let lower: Vec<String> = dirs.layers.iter().rev().map(|p| p.display().to_string()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dirs.upper.display(),
        dirs.work.display()
    );
    if data.len() >= 4096 {
        return Err(RuntimeError::Host {
            what: "overlayfs",
            detail: format!(
                "the image has too many layers ({}) for this kernel's mount options; Linux 6.8+ lifts the limit",
                dirs.layers.len()
            ),
        });
    }
    let data = std::ffi::CString::new(data).map_err(|_| RuntimeError::InvalidSpec {
        field: "image",
        reason: "layer path with a NUL byte".into(),
    })?;
    rustix::mount::mount("overlay", target, "overlay", MountFlags::NODEV, Some(data.as_c_str()))
        .map_err(err(target))
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut out: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/x\\"), r"/x\\");
    }
}

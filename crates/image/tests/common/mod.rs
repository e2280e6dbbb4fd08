//! Helpers shared by this crate's integration tests (the image builders are in
//! `sandpit_image::testkit`).
// Test helpers: a panic is how they report a failed step.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sandpit_image::{IdShift, ImageStore};

/// The id shift used throughout: sandbox ids 0..65536 are host ids 100000..165536.
pub fn shift() -> IdShift {
    IdShift::new(100_000, 65_536).unwrap()
}

/// A store in `dir/store`.
pub fn store(dir: &Path) -> ImageStore {
    ImageStore::open(dir.join("store"), shift()).unwrap()
}

/// `lstat`.
pub fn meta(path: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names in a directory.
pub fn names(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// An xattr of a path (not following symlinks).
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Whether a path is an overlayfs whiteout (char device 0:0).
pub fn is_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// Counts files and directories under a store's `layers/`, and entries under its `tmp/`.
pub fn store_contents(store: &ImageStore) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let root = store.root();
    (names(&root.join("layers")), names(&root.join("tmp")), names(&root.join("images")))
}

/// `cp -a src dst`.
pub fn copy_tree(src: &Path, dst: &Path) {
    let status = std::process::Command::new("cp").arg("-a").arg(src).arg(dst).status().unwrap();
    assert!(status.success());
}

/// A base directory holding `dest` (where a layer is unpacked) and `sentinel` (a directory next
/// to it that no entry may touch); checks that nothing appeared outside `dest`.
pub struct Arena {
    pub base: tempfile::TempDir,
    pub dest: PathBuf,
    pub sentinel: PathBuf,
}

impl Arena {
    pub fn new() -> Self {
        let base = tempfile::tempdir().unwrap();
        let dest = base.path().join("dest");
        let sentinel = base.path().join("sentinel");
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(&sentinel).unwrap();
        std::fs::write(sentinel.join("keep"), b"sentinel").unwrap();
        Self { base, dest, sentinel }
    }

    /// Nothing new next to `dest`, the sentinel untouched, and none of `host_paths` exists.
    pub fn assert_nothing_escaped(&self, host_paths: &[&Path]) {
        assert_eq!(names(self.base.path()), BTreeSet::from(["dest".to_owned(), "sentinel".to_owned()]));
        assert_eq!(names(&self.sentinel), BTreeSet::from(["keep".to_owned()]));
        assert_eq!(std::fs::read(self.sentinel.join("keep")).unwrap(), b"sentinel");
        for path in host_paths {
            assert!(
                std::fs::symlink_metadata(path).is_err(),
                "{} was created outside the layer",
                path.display()
            );
        }
    }
}

/// A unique name for host paths a hostile entry tries to create.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), uuid_like())
}

fn uuid_like() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// The link count of a host file.
pub fn nlink(path: &Path) -> u64 {
    meta(path).nlink()
}

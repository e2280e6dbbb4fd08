//! What an unpack did, skipped and dropped: kept beside each layer in the store.

use serde::{Deserialize, Serialize};

/// At most this many skipped entries and dropped xattrs are listed; the counters keep counting.
pub const MAX_LISTED: usize = 64;

/// The account of one layer unpack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpackReport {
    /// Tar entries processed (extension headers not counted).
    pub entries: u64,
    /// Regular files created.
    pub files: u64,
    /// Directories created or updated.
    pub directories: u64,
    /// Directories created because an entry needed them but the layer did not list them.
    pub implicit_directories: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hard_links: u64,
    /// FIFOs created.
    pub fifos: u64,
    /// Whiteouts turned into overlayfs whiteout devices (0:0).
    pub whiteouts: u64,
    /// Opaque-directory markers turned into `trusted.overlay.opaque=y`.
    pub opaque_directories: u64,
    /// Bytes of regular file content written.
    pub file_bytes: u64,
    /// Entries whose uid or gid was outside the id range and became the overflow id.
    pub overflow_ids: u64,
    /// PAX global headers seen (their content is ignored).
    pub global_headers: u64,
    /// How many entries were skipped (the first [`MAX_LISTED`] are in `skipped`).
    pub skipped_count: u64,
    /// Entries not created, with the reason.
    pub skipped: Vec<SkippedEntry>,
    /// How many xattrs were dropped (the first [`MAX_LISTED`] are in `dropped_xattrs`).
    pub dropped_xattr_count: u64,
    /// Extended attributes not applied, with the reason.
    pub dropped_xattrs: Vec<DroppedXattr>,
}

/// An entry of the layer that was deliberately not created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedEntry {
    /// The entry's name (lossy UTF-8).
    pub entry: String,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// Why an entry was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// A character device: a sandbox gets its own `/dev` from the runtime.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device: a sandbox gets its own `/dev` from the runtime.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A hard link to an entry that was itself skipped.
    HardLinkToSkipped {
        /// The link target.
        target: String,
    },
    /// AUFS metadata (`.wh..wh.*` other than the opaque marker).
    AufsMetadata,
    /// An entry type the unpacker does not create (the tar type flag).
    UnsupportedType {
        /// The type flag byte.
        type_flag: u8,
    },
}

/// An extended attribute that was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedXattr {
    /// The entry's name (lossy UTF-8).
    pub entry: String,
    /// The attribute name.
    pub name: String,
    /// Why it was dropped.
    pub reason: XattrDropReason,
}

/// Why an extended attribute was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XattrDropReason {
    /// `trusted.*`: overlayfs keeps its own metadata there.
    Trusted,
    /// `security.*`: file capabilities and LSM labels would need rewriting for the id shift.
    Security,
    /// `user.overlay.*`: overlayfs metadata when mounted with `userxattr`.
    UserOverlay,
    /// `system.*` (POSIX ACLs hold unshifted ids) or an unknown namespace.
    OtherNamespace,
    /// Linux does not allow `user.*` attributes on symlinks and special files.
    NotARegularFileOrDirectory,
    /// The filesystem refused it.
    Refused,
}

impl UnpackReport {
    /// Records a skipped entry.
    pub(crate) fn skip(&mut self, entry: &str, reason: SkipReason) {
        self.skipped_count += 1;
        if self.skipped.len() < MAX_LISTED {
            self.skipped.push(SkippedEntry { entry: entry.to_owned(), reason });
        }
    }

    /// Records a dropped xattr.
    pub(crate) fn drop_xattr(&mut self, entry: &str, name: &str, reason: XattrDropReason) {
        self.dropped_xattr_count += 1;
        if self.dropped_xattrs.len() < MAX_LISTED {
            self.dropped_xattrs.push(DroppedXattr { entry: entry.to_owned(), name: name.to_owned(), reason });
        }
    }
}

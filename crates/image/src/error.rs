//! The one error type of the image crate and the small enums that qualify its variants.

use std::fmt;
use std::path::PathBuf;

use sandpit_types::ByteSize;

use crate::digest::Sha256Digest;
use crate::idshift::{IdShift, IdShiftError};

/// Everything that can go wrong while importing, unpacking or looking up images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A filesystem or stream operation failed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// What was being done, as a verb phrase ("create directory", "read blob").
        action: &'static str,
        /// The path the operation was about.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A filesystem operation on one entry of a layer failed.
    #[error("could not {action} for layer entry {entry:?}")]
    EntryIo {
        /// The entry's name as written in the tar stream (lossy UTF-8).
        entry: String,
        /// What was being done ("create file", "set owner").
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A layer entry's name (or a link target) could leave the layer root; the layer is refused.
    #[error("layer entry {entry:?} is refused: {reason}")]
    UnsafePath {
        /// The entry's name as written in the tar stream (lossy UTF-8).
        entry: String,
        /// Why it is unsafe.
        reason: UnsafePathReason,
    },

    /// A hard link names a target that does not exist (yet) inside the same layer.
    #[error("hard link {entry:?} points at {target:?}, which is not an earlier entry of the layer")]
    HardLinkTargetMissing {
        /// The link's name.
        entry: String,
        /// The link target as written in the tar stream.
        target: String,
    },

    /// An entry's parent path exists in the layer but is not a directory.
    #[error("layer entry {entry:?} has a parent that is not a directory")]
    ParentNotDirectory {
        /// The entry's name.
        entry: String,
    },

    /// A file entry ended before the size its header declared.
    #[error("layer entry {entry:?} declares {declared} bytes but the stream holds only {actual}")]
    TruncatedEntry {
        /// The entry's name.
        entry: String,
        /// The size from the header.
        declared: u64,
        /// The bytes actually present.
        actual: u64,
    },

    /// Long-name or PAX extension headers larger than the unpacker accepts.
    #[error("tar extension headers exceed {limit} bytes")]
    ExtensionHeadersTooLarge {
        /// The accepted maximum.
        limit: u64,
    },

    /// The layer blob's reader failed (a network stream or file read error).
    #[error("could not read the layer blob")]
    BlobRead {
        /// The reader's error.
        #[source]
        source: std::io::Error,
    },

    /// The layer is not a well-formed tar stream.
    #[error("the layer is not a valid tar stream")]
    InvalidTar {
        /// What the tar reader reported.
        #[source]
        source: std::io::Error,
    },

    /// The compressed layer blob could not be decompressed.
    #[error("could not decompress the layer as {compression}")]
    Decompress {
        /// The compression named by the media type.
        compression: crate::media::LayerMediaType,
        /// What the decoder reported.
        #[source]
        source: std::io::Error,
    },

    /// Content did not hash to the digest it was announced with.
    #[error("{what} has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// The content that was checked.
        what: DigestSubject,
        /// The digest it was announced with.
        expected: Sha256Digest,
        /// The digest it has.
        actual: Sha256Digest,
    },

    /// Content did not have the size its descriptor announced.
    #[error("{what} has {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The content that was checked.
        what: DigestSubject,
        /// The announced size.
        expected: u64,
        /// The size found (at most one byte more than announced).
        actual: u64,
    },

    /// A JSON document (index, manifest, config) is larger than accepted.
    #[error("{what} is larger than {limit} bytes")]
    DocumentTooLarge {
        /// The document.
        what: DigestSubject,
        /// The accepted maximum.
        limit: u64,
    },

    /// The image unpacks to more than the configured maximum.
    #[error("the image unpacks to more than {limit}")]
    TooLarge {
        /// The configured maximum unpacked size of one image.
        limit: ByteSize,
    },

    /// No image matches the reference or digest.
    #[error("no image {reference}")]
    NotFound {
        /// The reference or digest that was looked up.
        reference: String,
    },

    /// A string is not a valid image reference.
    #[error("{input:?} is not a valid image reference: {reason}")]
    InvalidReference {
        /// The rejected input (truncated to 300 characters).
        input: String,
        /// What rule it breaks.
        reason: &'static str,
    },

    /// A string is not a valid `sha256:<64 hex>` digest.
    #[error("{input:?} is not a valid sha256 digest: {reason}")]
    InvalidDigest {
        /// The rejected input (truncated to 300 characters).
        input: String,
        /// What rule it breaks.
        reason: &'static str,
    },

    /// A descriptor uses a digest algorithm other than sha256.
    #[error("digest {digest} uses an unsupported algorithm (only sha256 is supported)")]
    UnsupportedDigestAlgorithm {
        /// The digest as written.
        digest: String,
    },

    /// A media type the importer does not handle.
    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType {
        /// The media type as written.
        media_type: String,
        /// Where it appeared.
        what: DigestSubject,
    },

    /// A foreign or non-distributable layer: its content is not in the image.
    #[error("layer {digest} is foreign or non-distributable ({media_type}); such layers are not supported")]
    ForeignLayer {
        /// The layer's blob digest as written.
        digest: String,
        /// Its media type.
        media_type: String,
    },

    /// The curated catalog file is malformed.
    #[error("invalid image catalog: {problem}")]
    InvalidCatalog {
        /// What is wrong.
        problem: String,
    },

    /// `sandpit image build` failed (mmdebstrap's exit status and the end of its stderr).
    #[error("building image {recipe} failed ({status}): {stderr}")]
    BuildFailed {
        /// The recipe.
        recipe: &'static str,
        /// mmdebstrap's exit status.
        status: String,
        /// The end of what it wrote to stderr.
        stderr: String,
    },

    /// The directory or archive is not an OCI image layout.
    #[error("not a usable OCI image layout: {problem}")]
    InvalidLayout {
        /// What is wrong with it.
        problem: LayoutProblem,
    },

    /// A JSON document could not be parsed.
    #[error("could not parse {what}")]
    InvalidJson {
        /// The document.
        what: DigestSubject,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// No manifest in the layout carries the requested name.
    #[error("no manifest named {name:?} in the image layout")]
    ManifestNotFound {
        /// The `org.opencontainers.image.ref.name` that was asked for.
        name: String,
    },

    /// Several manifests could be meant and nothing tells them apart.
    #[error("the image layout holds {count} manifests and none matches linux/{arch}; name one")]
    AmbiguousManifest {
        /// How many candidates there are.
        count: usize,
        /// The host architecture that was looked for.
        arch: &'static str,
    },

    /// An index lists manifests, but none for this host's platform.
    #[error("the image index has no manifest for linux/{arch}")]
    NoMatchingPlatform {
        /// The host architecture that was looked for.
        arch: &'static str,
    },

    /// Image indexes nested deeper than accepted.
    #[error("image indexes are nested more than {limit} deep")]
    IndexTooDeep {
        /// The accepted depth.
        limit: usize,
    },

    /// The manifest and the config disagree on the layers.
    #[error("the manifest lists {layers} layers but the config lists {diff_ids} diff_ids")]
    LayerCountMismatch {
        /// Layers in the manifest.
        layers: usize,
        /// Entries in the config's `rootfs.diff_ids`.
        diff_ids: usize,
    },

    /// The config's `rootfs.type` is not `layers`.
    #[error("the image config's rootfs type is {found:?}, expected \"layers\"")]
    UnsupportedRootfsType {
        /// The type found.
        found: String,
    },

    /// The manifest's config descriptor does not name the config that was given.
    #[error("the manifest names config {in_manifest}, not {given}")]
    ConfigMismatch {
        /// The digest in the manifest.
        in_manifest: Sha256Digest,
        /// The digest of the config that was supplied.
        given: Sha256Digest,
    },

    /// An image record names a layer that is not in the store.
    #[error("layer {diff_id} is not in the store")]
    LayerMissing {
        /// The layer's diff_id.
        diff_id: Sha256Digest,
    },

    /// The id shift is invalid.
    #[error(transparent)]
    IdShift(#[from] IdShiftError),

    /// The store was created for another id shift; mixing shifts would hand files to wrong owners.
    #[error("the image store was created with id shift {stored}, not {requested}")]
    IdShiftMismatch {
        /// The shift recorded in the store.
        stored: IdShift,
        /// The shift it was opened with.
        requested: IdShift,
    },

    /// A file of the store itself is unreadable or malformed.
    #[error("the image store file {} is corrupt", path.display())]
    StoreCorrupt {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

impl ImageError {
    /// Builds an [`ImageError::Io`] from an action, a path and an error.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<std::io::Error>,
    ) -> Self {
        Self::Io { action, path: path.into(), source: source.into() }
    }
}

/// Why an entry name or link target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnsafePathReason {
    /// The name has a `..` component.
    ParentComponent,
    /// The name contains a NUL byte.
    Nul,
    /// A non-directory entry names the layer root itself.
    RootNotDirectory,
    /// A hard link's target has a `..` component or a NUL byte.
    HardLinkOutside,
    /// A whiteout (`.wh.`) names nothing, `.` or `..`.
    BadWhiteout,
    /// A symlink target contains a NUL byte.
    SymlinkTargetNul,
}

impl fmt::Display for UnsafePathReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ParentComponent => "it has a \"..\" component",
            Self::Nul => "it contains a NUL byte",
            Self::RootNotDirectory => "it names the layer root but is not a directory",
            Self::HardLinkOutside => "its hard link target could leave the layer",
            Self::BadWhiteout => "it is a whiteout of nothing, \".\" or \"..\"",
            Self::SymlinkTargetNul => "its symlink target contains a NUL byte",
        })
    }
}

/// Which piece of content a digest, size or parse check was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestSubject {
    /// The layout's `index.json` or a nested index.
    Index,
    /// An image manifest.
    Manifest,
    /// An image config.
    Config,
    /// A (compressed) layer blob.
    LayerBlob,
    /// The uncompressed layer tar, checked against the config's diff_id.
    LayerDiff,
    /// The `oci-layout` file.
    LayoutFile,
}

impl fmt::Display for DigestSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Index => "the image index",
            Self::Manifest => "the image manifest",
            Self::Config => "the image config",
            Self::LayerBlob => "the layer blob",
            Self::LayerDiff => "the uncompressed layer (diff_id)",
            Self::LayoutFile => "the oci-layout file",
        })
    }
}

/// What makes a directory or archive unusable as an OCI image layout.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutProblem {
    /// The `oci-layout` file is missing.
    MissingLayoutFile,
    /// The `oci-layout` file names a version other than 1.0.0.
    UnsupportedVersion(String),
    /// `index.json` is missing.
    MissingIndex,
    /// A blob the manifest names is not in the layout.
    MissingBlob(Sha256Digest),
    /// The index lists no manifests.
    EmptyIndex,
    /// The archive holds more entries than accepted.
    TooManyEntries(usize),
    /// An archive member needed for import is not a plain contiguous file.
    UnsupportedArchiveMember(String),
}

impl fmt::Display for LayoutProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingLayoutFile => f.write_str("the oci-layout file is missing"),
            Self::UnsupportedVersion(v) => write!(f, "layout version {v:?} is not 1.0.0"),
            Self::MissingIndex => f.write_str("index.json is missing"),
            Self::MissingBlob(d) => write!(f, "blob {d} is missing"),
            Self::EmptyIndex => f.write_str("the index lists no manifests"),
            Self::TooManyEntries(n) => write!(f, "the archive holds more than {n} entries"),
            Self::UnsupportedArchiveMember(p) => write!(f, "archive member {p:?} is not a plain file"),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

//! Import of OCI image layouts: a directory (`oci-layout`, `index.json`, `blobs/sha256/…`) or an
//! `oci-archive` tar of one, read in place without extracting it.
//!
//! ```text
//!  oci-layout ─► index.json ─► select manifest ─► manifest ─► config ─► ImagePlan
//!   (1.0.0)      (≤ 4 MiB)     by ref.name,       (sha256,   (sha256,    │
//!                              else the only one,  size)      size)      ▼
//!                              else linux/<host>              layers: ImportSession::unpack_layer_blob
//!                              (nested indexes)               (blob sha256 + diff_id), a few at
//!                                                             once ─► commit
//! ```
//!
//! Up to three layers stream at once (read, decompress, unpack), each on its own thread, from
//! blobs opened per layer (an archive is read with `pread`, which shares no file offset); a layer
//! being synced leaves its turn to the next. The first failure stops the others and rolls the
//! import back.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex};
use tokio_util::sync::CancellationToken;

use crate::concurrent::{self, DEFAULT_CONCURRENT_LAYERS, LayerReader, Slots};
use crate::digest::Sha256Digest;
use crate::document::{self, choose_for_host, parse, read_bounded};
pub use crate::document::{MAX_DOCUMENT_BYTES, MAX_INDEX_DEPTH};
use crate::error::{DigestSubject, ImageError, LayoutProblem};
use crate::media::{ManifestKind, manifest_kind};
use crate::plan::PlannedLayer;
use crate::reference::ImageReference;
use crate::store::{ImageRecord, ImageStore, ImportSession};
use crate::unpack::path::EntryPath;
use crate::unpack::{HeaderBudget, Metered};

/// The most members an `oci-archive` may have.
pub const MAX_ARCHIVE_MEMBERS: usize = 100_000;

/// The annotation that names a manifest in a layout's index.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

impl ImageStore {
    /// Imports the image of an OCI layout directory and points `reference` at it.
    ///
    /// `name` picks the manifest by its `org.opencontainers.image.ref.name` annotation; without
    /// it the index must hold one manifest, or one for linux on this host's architecture (nested
    /// indexes are followed). Every blob is checked against its digest and every layer against
    /// the config's diff_id; layers the store has are not read again.
    pub fn import_oci_layout(
        &self,
        dir: &Path,
        name: Option<&str>,
        reference: &ImageReference,
    ) -> Result<ImageRecord, ImageError> {
        self.import_layout(&DirLayout { root: dir.to_owned() }, name, reference)
    }

    /// Imports the image of an `oci-archive` (a tar of an OCI layout, as `skopeo copy …
    /// oci-archive:x.tar` writes); see [`Self::import_oci_layout`]. Blobs are read in place.
    pub fn import_oci_archive(
        &self,
        archive: &Path,
        name: Option<&str>,
        reference: &ImageReference,
    ) -> Result<ImageRecord, ImageError> {
        self.import_layout(&ArchiveLayout::open(archive)?, name, reference)
    }

    fn import_layout(
        &self,
        source: &dyn LayoutSource,
        name: Option<&str>,
        reference: &ImageReference,
    ) -> Result<ImageRecord, ImageError> {
        check_layout_version(source)?;
        let index_bytes = source
            .read_file("index.json", DigestSubject::Index)?
            .ok_or(ImageError::InvalidLayout { problem: LayoutProblem::MissingIndex })?;
        let index: ImageIndex = parse(&index_bytes, DigestSubject::Index)?;
        let (manifest_digest, manifest_size) = select_manifest(source, &index, name, 0)?;
        let manifest_bytes = read_verified(source, &manifest_digest, manifest_size, DigestSubject::Manifest)?;
        let manifest = document::parse_manifest(&manifest_bytes)?;
        let config_digest = Sha256Digest::from_oci(manifest.config().digest())?;
        document::check_size_limit(manifest.config().size(), DigestSubject::Config)?;
        let config_bytes = read_bounded(source.open_blob(&config_digest)?, DigestSubject::Config)?;
        let plan = document::plan(manifest_digest, &manifest, &config_bytes)?;

        let session = self.begin_import()?;
        let cancel = CancellationToken::new();
        let slots = Slots::new(DEFAULT_CONCURRENT_LAYERS);
        concurrent::for_each(plan.layers(), 2 * DEFAULT_CONCURRENT_LAYERS, &cancel, |layer| {
            import_layer(&session, source, layer, &slots, &cancel)
        })?;
        session.commit(&plan, Some(reference))
    }
}

/// Unpacks one layer of a layout unless the store has it.
fn import_layer(
    session: &ImportSession<'_>,
    source: &dyn LayoutSource,
    layer: &PlannedLayer,
    slots: &Slots,
    cancel: &CancellationToken,
) -> Result<(), ImageError> {
    if session.layer(&layer.diff_id)?.is_some() {
        return Ok(());
    }
    // `None`: another layer failed, and its error is the import's.
    let Some(slot) = slots.acquire(cancel) else { return Ok(()) };
    let blob = source.open_blob(&layer.blob_digest)?;
    // One byte more than declared: a longer blob then fails its digest check.
    let reader = LayerReader::new(blob.take(layer.blob_size.saturating_add(1)), cancel, slot);
    session.unpack_layer_blob(reader, layer.media_type, &layer.blob_digest, &layer.diff_id)?;
    Ok(())
}

/// Where layout files and blobs are read from (by several threads at once).
trait LayoutSource: Sync {
    /// A top-level file (`oci-layout`, `index.json`), at most [`MAX_DOCUMENT_BYTES`]; `None` if
    /// missing.
    fn read_file(&self, name: &str, what: DigestSubject) -> Result<Option<Vec<u8>>, ImageError>;

    /// A blob by digest.
    fn open_blob(&self, digest: &Sha256Digest) -> Result<Box<dyn Read + '_>, ImageError>;
}

/// A layout directory.
struct DirLayout {
    root: PathBuf,
}

impl LayoutSource for DirLayout {
    fn read_file(&self, name: &str, what: DigestSubject) -> Result<Option<Vec<u8>>, ImageError> {
        let path = self.root.join(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io("open", path, e)),
        };
        read_bounded(file, what).map(Some)
    }

    fn open_blob(&self, digest: &Sha256Digest) -> Result<Box<dyn Read + '_>, ImageError> {
        let path = self.root.join("blobs").join("sha256").join(digest.hex());
        match File::open(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ImageError::InvalidLayout { problem: LayoutProblem::MissingBlob(*digest) })
            }
            Err(e) => Err(ImageError::io("open blob", path, e)),
        }
    }
}

/// An `oci-archive`: members are located once, then read in place with `pread`.
struct ArchiveLayout {
    path: PathBuf,
    file: File,
    /// Normalised member name → (data offset, size); `None` for a member that is not a plain file.
    members: HashMap<String, Option<(u64, u64)>>,
}

impl ArchiveLayout {
    fn open(path: &Path) -> Result<Self, ImageError> {
        let file = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
        let members = index_members(&file)?;
        Ok(Self { path: path.to_owned(), file, members })
    }

    fn member(&self, name: &str) -> Result<Option<SectionReader<'_>>, ImageError> {
        match self.members.get(name) {
            None => Ok(None),
            Some(None) => Err(ImageError::InvalidLayout {
                problem: LayoutProblem::UnsupportedArchiveMember(name.to_owned()),
            }),
            Some(Some((offset, size))) => Ok(Some(SectionReader {
                file: &self.file,
                position: *offset,
                end: offset.saturating_add(*size),
            })),
        }
    }
}

/// Locates the members of an archive: normalised name → (data offset, size), `None` for a
/// member that is not a plain contiguous file.
fn index_members(file: &File) -> Result<HashMap<String, Option<(u64, u64)>>, ImageError> {
    let budget = HeaderBudget::default();
    let mut archive = tar::Archive::new(Metered { inner: file, budget: &budget });
    let invalid = |source| ImageError::InvalidTar { source };
    let mut entries = archive.entries_with_seek().map_err(invalid)?;
    let mut members = HashMap::new();
    let mut count = 0usize;
    loop {
        budget.start_headers();
        let entry = match entries.next() {
            None => break,
            Some(Ok(entry)) => entry,
            Some(Err(_)) if budget.exceeded() => {
                return Err(ImageError::ExtensionHeadersTooLarge {
                    limit: crate::unpack::MAX_EXTENSION_HEADER_BYTES,
                });
            }
            Some(Err(source)) => return Err(invalid(source)),
        };
        budget.start_data();
        count += 1;
        if count > MAX_ARCHIVE_MEMBERS {
            return Err(ImageError::InvalidLayout {
                problem: LayoutProblem::TooManyEntries(MAX_ARCHIVE_MEMBERS),
            });
        }
        // Names with `..` cannot be members we look for; they are simply never found.
        let Ok(name) = EntryPath::normalise(&entry.path_bytes()) else { continue };
        let name = String::from_utf8_lossy(name.c_string().as_bytes()).into_owned();
        let plain =
            matches!(entry.header().entry_type(), tar::EntryType::Regular | tar::EntryType::Continuous);
        let location = plain.then(|| (entry.raw_file_position(), entry.size()));
        if plain || entry.header().entry_type() != tar::EntryType::Directory {
            members.insert(name, location);
        }
    }
    Ok(members)
}

impl LayoutSource for ArchiveLayout {
    fn read_file(&self, name: &str, what: DigestSubject) -> Result<Option<Vec<u8>>, ImageError> {
        match self.member(name)? {
            Some(reader) => read_bounded(reader, what).map(Some),
            None => Ok(None),
        }
    }

    fn open_blob(&self, digest: &Sha256Digest) -> Result<Box<dyn Read + '_>, ImageError> {
        match self.member(&format!("blobs/sha256/{}", digest.hex()))? {
            Some(reader) => Ok(Box::new(reader)),
            None => Err(ImageError::InvalidLayout { problem: LayoutProblem::MissingBlob(*digest) }),
        }
    }
}

impl std::fmt::Debug for ArchiveLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveLayout")
            .field("path", &self.path)
            .field("members", &self.members.len())
            .finish()
    }
}

/// A byte range of a file, read with `pread` (no shared file offset).
struct SectionReader<'f> {
    file: &'f File,
    position: u64,
    end: u64,
}

impl Read for SectionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.position);
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(buf.get_mut(..want).unwrap_or_default(), self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

fn check_layout_version(source: &dyn LayoutSource) -> Result<(), ImageError> {
    let bytes = source
        .read_file("oci-layout", DigestSubject::LayoutFile)?
        .ok_or(ImageError::InvalidLayout { problem: LayoutProblem::MissingLayoutFile })?;
    let value: serde_json::Value = parse(&bytes, DigestSubject::LayoutFile)?;
    match value.get("imageLayoutVersion").and_then(|v| v.as_str()) {
        Some("1.0.0") => Ok(()),
        other => Err(ImageError::InvalidLayout {
            problem: LayoutProblem::UnsupportedVersion(other.unwrap_or_default().to_owned()),
        }),
    }
}

/// Picks the manifest to import from an index; returns its digest and size.
fn select_manifest(
    source: &dyn LayoutSource,
    index: &ImageIndex,
    name: Option<&str>,
    depth: usize,
) -> Result<(Sha256Digest, u64), ImageError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(ImageError::IndexTooDeep { limit: MAX_INDEX_DEPTH });
    }
    let manifests = index.manifests();
    if manifests.is_empty() {
        return Err(ImageError::InvalidLayout { problem: LayoutProblem::EmptyIndex });
    }
    let candidates: Vec<&Descriptor> = match name {
        Some(wanted) => {
            let named: Vec<_> = manifests
                .iter()
                .filter(|d| {
                    d.annotations().as_ref().and_then(|a| a.get(REF_NAME_ANNOTATION)).map(String::as_str)
                        == Some(wanted)
                })
                .collect();
            if named.is_empty() {
                return Err(ImageError::ManifestNotFound { name: wanted.to_owned() });
            }
            named
        }
        None => manifests.iter().collect(),
    };
    let chosen = choose_for_host(&candidates)?;
    let digest = Sha256Digest::from_oci(chosen.digest())?;
    match manifest_kind(chosen.media_type().as_ref())? {
        ManifestKind::Manifest => Ok((digest, chosen.size())),
        ManifestKind::Index => {
            let bytes = read_verified(source, &digest, chosen.size(), DigestSubject::Index)?;
            let nested: ImageIndex = parse(&bytes, DigestSubject::Index)?;
            select_manifest(source, &nested, None, depth + 1)
        }
    }
}

/// Reads a JSON blob whose descriptor gives its digest and size, and checks both.
fn read_verified(
    source: &dyn LayoutSource,
    digest: &Sha256Digest,
    declared: u64,
    what: DigestSubject,
) -> Result<Vec<u8>, ImageError> {
    document::check_size_limit(declared, what)?;
    let bytes = read_bounded(source.open_blob(digest)?, what)?;
    document::verify(&bytes, digest, Some(declared), what)?;
    Ok(bytes)
}

//! The local image store: content-addressed unpacked layers, image records and references.
//!
//! On disk, under the store root (created 0700; `layers/` and `tmp/` are forced to 0700 on open,
//! since layers hold setuid files owned by sandbox ids):
//!
//! ```text
//!  store.json                 { version, id_shift }: opening with another shift is an error
//!  store.lock                 shared by every import session; exclusive for removing layers
//!  catalog.lock               guards images/ and refs.json together
//!  refs.json                  { "refs": { "sandpit/busybox:latest": "sha256:…" } }
//!  images/<manifest hex>.json ImageRecord (layers lowest first, config summary, size, times)
//!  layers/<diff_id hex>/      one unpacked layer: an overlayfs lower dir, nothing else in it
//!  layers/<diff_id hex>.json  LayerInfo (blob digest, sizes, unpack report); written last, so
//!                             a layer exists exactly when its .json does
//!  locks/<diff_id hex>.lock   held while that layer is checked or unpacked (threads and processes)
//!  tmp/<uuid>/                private, flock-held workspaces; unheld ones are removed on open
//! ```
//!
//! A layer is unpacked into `tmp/<uuid>/root`, synced (`syncfs`), and renamed into `layers/`;
//! its `.json` follows. A crash leaves either a workspace (removed on the next open) or a layer
//! dir without `.json` (replaced by the next import of that layer).

mod fsutil;
mod gc;
mod record;
mod session;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use sandpit_types::ByteSize;

pub use gc::GcReport;
pub use record::{ImageConfigSummary, ImageRecord, ImageSource, LayerInfo, LayerRecord};
pub use session::ImportSession;

use crate::digest::Sha256Digest;
use crate::error::ImageError;
use crate::idshift::IdShift;
use crate::reference::{ImageReference, ImageSelector};
use fsutil::{FileLock, Workspace, ensure_dir, ensure_private_dir, read_json, write_json_atomic};
use record::{RefsFile, StoreMeta};

/// The store layout version written to `store.json`.
const STORE_VERSION: u32 = 1;

/// The default largest unpacked size of one image.
pub const DEFAULT_MAX_IMAGE_SIZE: ByteSize = ByteSize::gib(16);

/// The local image store. Blocking; cheap to share behind an `Arc` (every method takes `&self`).
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    shift: IdShift,
    max_image_size: ByteSize,
}

impl ImageStore {
    /// Opens the store at `root`, creating it for `shift` when it does not exist yet.
    ///
    /// A store remembers the id shift it was created with: opening it with another one is
    /// [`ImageError::IdShiftMismatch`]. Temp workspaces left by a crashed process are removed.
    pub fn open(root: impl Into<PathBuf>, shift: IdShift) -> Result<Self, ImageError> {
        let store = Self { root: root.into(), shift, max_image_size: DEFAULT_MAX_IMAGE_SIZE };
        ensure_dir(&store.root)?;
        for dir in [store.layers_dir(), store.images_dir(), store.tmp_dir(), store.locks_dir()] {
            ensure_private_dir(&dir)?;
        }
        store.check_or_record_shift()?;
        fsutil::clean_stale_workspaces(&store.tmp_dir())?;
        Ok(store)
    }

    /// Sets the largest unpacked size one image may have (default [`DEFAULT_MAX_IMAGE_SIZE`]).
    pub fn with_max_image_size(mut self, limit: ByteSize) -> Self {
        self.max_image_size = limit;
        self
    }

    /// The largest unpacked size one image may have.
    pub fn max_image_size(&self) -> ByteSize {
        self.max_image_size
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The id shift every layer of this store is unpacked with.
    pub fn id_shift(&self) -> IdShift {
        self.shift
    }

    /// Starts an import: layers are unpacked through the session and the image is committed at
    /// the end. A session dropped without commit removes the layers it unpacked, unless another
    /// image uses them or another session is running (then a later GC collects them).
    pub fn begin_import(&self) -> Result<ImportSession<'_>, ImageError> {
        ImportSession::new(self)
    }

    /// The image a reference or manifest digest names.
    pub fn get(&self, selector: &ImageSelector) -> Result<ImageRecord, ImageError> {
        let refs = self.read_refs()?;
        let digest = self.resolve(&refs, selector)?;
        let mut record = self
            .read_image(&digest)?
            .ok_or_else(|| ImageError::NotFound { reference: selector.to_string() })?;
        record.references = references_to(&refs, &digest);
        Ok(record)
    }

    /// Every image in the store, oldest import first.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let refs = self.read_refs()?;
        let mut records = Vec::new();
        for digest in self.image_digests()? {
            if let Some(mut record) = self.read_image(&digest)? {
                record.references = references_to(&refs, &digest);
                records.push(record);
            }
        }
        records.sort_by_key(|r| (r.imported_at, r.manifest_digest));
        Ok(records)
    }

    /// Removes a reference; the image record goes with its last reference. Removing by digest
    /// removes the image and every reference to it. Layers stay until garbage collection.
    pub fn remove(&self, selector: &ImageSelector) -> Result<(), ImageError> {
        let _catalog = FileLock::acquire(&self.catalog_lock_path(), true)?;
        let mut refs = self.read_refs()?;
        let digest = self.resolve(&refs, selector)?;
        let exists = self.image_path(&digest).exists();
        match selector {
            ImageSelector::Reference(reference) => {
                refs.refs.remove(reference);
            }
            ImageSelector::Digest(_) => {
                if !exists {
                    return Err(ImageError::NotFound { reference: selector.to_string() });
                }
                refs.refs.retain(|_, d| *d != digest);
            }
        }
        write_json_atomic(&self.tmp_dir(), &self.refs_path(), &refs)?;
        if refs.refs.values().all(|d| *d != digest) && exists {
            let path = self.image_path(&digest);
            std::fs::remove_file(&path).map_err(|e| ImageError::io("remove image record", &path, e))?;
            fsutil::sync_dir(&self.images_dir())?;
        }
        tracing::info!(image = %selector, "image removed");
        Ok(())
    }

    /// An unpacked layer, if the store has it.
    pub fn layer(&self, diff_id: &Sha256Digest) -> Result<Option<LayerInfo>, ImageError> {
        let info: Option<LayerInfo> = read_json(&self.layer_info_path(diff_id))?;
        Ok(info.filter(|_| self.layer_dir(diff_id).is_dir()))
    }

    /// The directory of a layer (whether or not it exists).
    pub fn layer_dir(&self, diff_id: &Sha256Digest) -> PathBuf {
        self.layers_dir().join(diff_id.hex())
    }

    /// The layer directories of an image, **lowest first** (overlayfs `lowerdir=` wants the
    /// reverse: topmost first). A layer listed twice appears once, at its topmost place, which
    /// gives the same merged view (overlayfs refuses the same lower dir twice).
    pub fn layer_dirs(&self, record: &ImageRecord) -> Result<Vec<PathBuf>, ImageError> {
        let mut seen = HashSet::new();
        let mut top_down = Vec::new();
        for layer in record.layers.iter().rev() {
            if seen.insert(layer.diff_id) {
                if self.layer(&layer.diff_id)?.is_none() {
                    return Err(ImageError::LayerMissing { diff_id: layer.diff_id });
                }
                top_down.push(self.layer_dir(&layer.diff_id));
            }
        }
        top_down.reverse();
        Ok(top_down)
    }

    fn check_or_record_shift(&self) -> Result<(), ImageError> {
        let path = self.root.join("store.json");
        let requested = self.shift;
        let stored: Option<StoreMeta> = read_json(&path)?;
        let stored = match stored {
            Some(meta) => meta,
            None => {
                let meta = StoreMeta { version: STORE_VERSION, id_shift: requested };
                let workspace = Workspace::create(&self.tmp_dir())?;
                let bytes =
                    serde_json::to_vec_pretty(&meta).map_err(|e| ImageError::io("serialise", &path, e))?;
                let staged = workspace.write_synced("store.json", &bytes)?;
                // Two processes creating the store at once: the first rename wins, both compare.
                match rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &staged,
                    rustix::fs::CWD,
                    &path,
                    rustix::fs::RenameFlags::NOREPLACE,
                ) {
                    Ok(()) => {
                        fsutil::sync_dir(&self.root)?;
                        meta
                    }
                    Err(rustix::io::Errno::EXIST) => read_json(&path)?.unwrap_or(meta),
                    Err(e) => return Err(ImageError::io("create", &path, e)),
                }
            }
        };
        if stored.id_shift != requested {
            return Err(ImageError::IdShiftMismatch { stored: stored.id_shift, requested });
        }
        Ok(())
    }

    fn resolve(&self, refs: &RefsFile, selector: &ImageSelector) -> Result<Sha256Digest, ImageError> {
        match selector {
            ImageSelector::Digest(d) => Ok(*d),
            ImageSelector::Reference(r) => {
                refs.refs.get(r).copied().ok_or_else(|| ImageError::NotFound { reference: r.to_string() })
            }
        }
    }

    fn read_image(&self, digest: &Sha256Digest) -> Result<Option<ImageRecord>, ImageError> {
        read_json(&self.image_path(digest))
    }

    fn image_digests(&self) -> Result<Vec<Sha256Digest>, ImageError> {
        let dir = self.images_dir();
        let entries = std::fs::read_dir(&dir).map_err(|e| ImageError::io("read", &dir, e))?;
        let mut digests = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::io("read", &dir, e))?;
            let name = entry.file_name();
            if let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".json"))
                && let Ok(digest) = Sha256Digest::from_hex(hex)
            {
                digests.push(digest);
            }
        }
        Ok(digests)
    }

    /// Every layer some image record lists.
    fn referenced_layers(&self) -> Result<BTreeSet<Sha256Digest>, ImageError> {
        Ok(self.layer_refcounts()?.into_keys().collect())
    }

    fn read_refs(&self) -> Result<RefsFile, ImageError> {
        Ok(read_json(&self.refs_path())?.unwrap_or_default())
    }

    /// Writes an image record and points `reference` at it, under the catalog lock. A record
    /// already there gives its `last_used` and, when more public, its source.
    fn record_image(
        &self,
        record: &ImageRecord,
        reference: Option<&ImageReference>,
    ) -> Result<ImageRecord, ImageError> {
        let _catalog = FileLock::acquire(&self.catalog_lock_path(), true)?;
        let existing = self.read_image(&record.manifest_digest)?;
        let mut record = record.clone();
        if let Some(existing) = &existing {
            record.last_used = existing.last_used;
        }
        record.source = record.source.merged_with(existing.as_ref().map(|e| &e.source));
        write_json_atomic(&self.tmp_dir(), &self.image_path(&record.manifest_digest), &record)?;
        let mut refs = self.read_refs()?;
        if let Some(reference) = reference {
            refs.refs.insert(reference.clone(), record.manifest_digest);
            write_json_atomic(&self.tmp_dir(), &self.refs_path(), &refs)?;
        }
        record.references = references_to(&refs, &record.manifest_digest);
        Ok(record)
    }

    /// Removes a layer (its `.json` first, so it stops existing at once). Caller holds the store
    /// lock exclusively.
    fn remove_layer(&self, diff_id: &Sha256Digest) -> Result<(), ImageError> {
        let _layer = FileLock::acquire(&self.layer_lock_path(diff_id), true)?;
        let info = self.layer_info_path(diff_id);
        match std::fs::remove_file(&info) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("remove", &info, e)),
        }
        self.discard_layer_dir(diff_id)
    }

    /// Moves a layer directory into a workspace and removes it there.
    fn discard_layer_dir(&self, diff_id: &Sha256Digest) -> Result<(), ImageError> {
        let dir = self.layer_dir(diff_id);
        if std::fs::symlink_metadata(&dir).is_err() {
            return Ok(());
        }
        let workspace = Workspace::create(&self.tmp_dir())?;
        let parked = workspace.path().join("discarded");
        std::fs::rename(&dir, &parked).map_err(|e| ImageError::io("move aside", &dir, e))?;
        fsutil::sync_dir(&self.layers_dir())?;
        Ok(())
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    fn refs_path(&self) -> PathBuf {
        self.root.join("refs.json")
    }

    fn store_lock_path(&self) -> PathBuf {
        self.root.join("store.lock")
    }

    fn catalog_lock_path(&self) -> PathBuf {
        self.root.join("catalog.lock")
    }

    fn image_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.images_dir().join(format!("{}.json", digest.hex()))
    }

    fn layer_info_path(&self, diff_id: &Sha256Digest) -> PathBuf {
        self.layers_dir().join(format!("{}.json", diff_id.hex()))
    }

    fn layer_lock_path(&self, diff_id: &Sha256Digest) -> PathBuf {
        self.locks_dir().join(format!("{}.lock", diff_id.hex()))
    }
}

fn references_to(refs: &RefsFile, digest: &Sha256Digest) -> Vec<ImageReference> {
    refs.refs.iter().filter(|(_, d)| *d == digest).map(|(r, _)| r.clone()).collect()
}

//! One import into the store: layers are checked or unpacked, then the image is committed.
//!
//! ```text
//!  begin_import ──► open ──┬── layer() / unpack_layer_blob() ──► open (repeat)
//!   (store.lock shared)    ├── commit(plan, ref) ──► committed: image record + ref written
//!                          └── error or drop ─────► rolled back: layers this session unpacked
//!                                                   and no image uses are removed, if no other
//!                                                   session runs (else left for GC)
//! ```
//!
//! A session is shared by reference between threads: several layers of one image may be checked
//! and unpacked at once (each call still unpacks one layer).
//!
//! Every layer a session touches counts once towards the store's maximum image size, whether it
//! was unpacked now or already present. The limit holds while layers stream, not only once they
//! are done: the session has one budget of uncompressed bytes; a present layer takes its size
//! from it when first seen, and each unpack in flight takes every byte of its tar stream as it is
//! read, so that an image over the limit stops with [`ImageError::TooLarge`] once about the
//! limit was written, whatever the number of layers in flight. A failed unpack gives its bytes
//! back; a layer that is kept holds exactly its size.

use std::collections::HashSet;
use std::io::Read;
use std::os::fd::AsFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::fs::{Mode, OFlags};
use sandpit_types::ByteSize;
use time::OffsetDateTime;

use super::fsutil::{FileLock, Workspace, sync_dir};
use super::{ImageRecord, ImageSource, ImageStore, LayerInfo, LayerRecord};
use crate::digest::{ByteBudget, Charge, Sha256Digest};
use crate::error::ImageError;
use crate::media::LayerMediaType;
use crate::plan::ImagePlan;
use crate::reference::ImageReference;
use crate::unpack::{UnpackOptions, unpack_blob};

/// An import in progress. See the module docs for its states. `Sync`: its layers may be checked
/// and unpacked from several threads at once.
#[derive(Debug)]
pub struct ImportSession<'s> {
    store: &'s ImageStore,
    shared: FileLock,
    /// Uncompressed bytes of the image: counted layers and unpacks in flight.
    budget: ByteBudget,
    state: Mutex<SessionState>,
    committed: bool,
}

/// What a session has done so far.
#[derive(Debug, Default)]
struct SessionState {
    /// Layers whose size is in the budget for good.
    counted: HashSet<Sha256Digest>,
    /// Layers this session put into the store (removed again on rollback).
    unpacked: Vec<Sha256Digest>,
}

impl<'s> ImportSession<'s> {
    pub(super) fn new(store: &'s ImageStore) -> Result<Self, ImageError> {
        Ok(Self {
            store,
            shared: FileLock::acquire(&store.store_lock_path(), false)?,
            budget: ByteBudget::new(store.max_image_size.bytes()),
            state: Mutex::new(SessionState::default()),
            committed: false,
        })
    }

    /// The layer if the store already has it (counted towards the image size). A registry pull
    /// calls this first to skip downloading what is there.
    pub fn layer(&self, diff_id: &Sha256Digest) -> Result<Option<LayerInfo>, ImageError> {
        let info = self.store.layer(diff_id)?;
        if let Some(info) = &info {
            self.count(diff_id, info.size.bytes())?;
        }
        Ok(info)
    }

    /// Unpacks one layer blob, streamed from `reader`, unless the store already has the layer
    /// (then `reader` is not read). This is the entry point for every import path.
    ///
    /// The blob is decompressed per `media_type` while the blob and the uncompressed tar are both
    /// hashed; it is unpacked into a private workspace, checked against `blob_digest` and
    /// `diff_id`, synced and renamed into the store. On any error nothing of it is kept.
    /// Concurrent calls for one layer (threads or processes) unpack it once: they queue on the
    /// layer's lock and the later ones find it present. Calls for different layers run at once;
    /// they share the session's size budget as they stream (module docs).
    pub fn unpack_layer_blob<R: Read>(
        &self,
        reader: R,
        media_type: LayerMediaType,
        blob_digest: &Sha256Digest,
        diff_id: &Sha256Digest,
    ) -> Result<LayerInfo, ImageError> {
        let store = self.store;
        let _layer_lock = FileLock::acquire(&store.layer_lock_path(diff_id), true)?;
        if let Some(info) = self.layer(diff_id)? {
            return Ok(info);
        }
        // A directory without its .json is what a crash between the two renames leaves.
        store.discard_layer_dir(diff_id)?;

        let limit = store.max_image_size;
        let workspace = Workspace::create(&store.tmp_dir())?;
        let root_path = workspace.path().join("root");
        rustix::fs::mkdir(&root_path, Mode::from_raw_mode(0o700))
            .map_err(|e| ImageError::io("create layer directory", &root_path, e))?;
        let root = rustix::fs::open(
            &root_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ImageError::io("open layer directory", &root_path, e))?;
        // What is left now bounds this layer (files larger than that are refused from their
        // header); the shared budget bounds it as it streams, beside the other layers in flight.
        let options = UnpackOptions { shift: store.shift, max_bytes: ByteSize(self.budget.remaining()) };
        let charge = Charge::new(&self.budget);
        let unpacked =
            match unpack_blob(reader, media_type, blob_digest, diff_id, root.as_fd(), &options, &charge) {
                Ok(unpacked) => unpacked,
                Err(ImageError::TooLarge { .. }) => return Err(ImageError::TooLarge { limit }),
                Err(e) => return Err(e),
            };
        debug_assert_eq!(charge.taken(), unpacked.diff_size);
        rustix::fs::syncfs(&root).map_err(|e| ImageError::io("sync", &root_path, e))?;
        drop(root);

        let info = LayerInfo {
            diff_id: *diff_id,
            blob_digest: *blob_digest,
            media_type,
            blob_size: ByteSize(unpacked.blob_size),
            size: ByteSize(unpacked.diff_size),
            report: unpacked.report,
            unpacked_at: OffsetDateTime::now_utc(),
        };
        let json = serde_json::to_vec_pretty(&info)
            .map_err(|e| ImageError::io("serialise", store.layer_info_path(diff_id), e))?;
        let staged_info = workspace.write_synced("layer.json", &json)?;
        let dir = store.layer_dir(diff_id);
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &root_path,
            rustix::fs::CWD,
            &dir,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| ImageError::io("move layer into place", &dir, e))?;
        {
            // From here the layer is this session's: counted, and removed on rollback.
            let mut state = self.state();
            state.unpacked.push(*diff_id);
            if state.counted.insert(*diff_id) {
                charge.keep();
            }
        }
        let info_path = store.layer_info_path(diff_id);
        std::fs::rename(&staged_info, &info_path)
            .map_err(|e| ImageError::io("move into place", &info_path, e))?;
        sync_dir(&store.layers_dir())?;
        tracing::debug!(diff_id = %diff_id, size = unpacked.diff_size, "layer unpacked");
        Ok(info)
    }

    /// Records the image as [`ImageSource::Local`]: every layer of `plan` must be in the store
    /// (checked or unpacked through this session or earlier). Points `reference` at it when given.
    pub fn commit(
        self,
        plan: &ImagePlan,
        reference: Option<&ImageReference>,
    ) -> Result<ImageRecord, ImageError> {
        self.commit_from(plan, reference, ImageSource::Local)
    }

    /// [`Self::commit`] for an image obtained from `source`. When the store already has the
    /// image, the more public of the two sources is kept (see [`ImageSource`]) and so is its
    /// `last_used`.
    pub fn commit_from(
        mut self,
        plan: &ImagePlan,
        reference: Option<&ImageReference>,
        source: ImageSource,
    ) -> Result<ImageRecord, ImageError> {
        let mut layers = Vec::with_capacity(plan.layers.len());
        for planned in &plan.layers {
            let info =
                self.layer(&planned.diff_id)?.ok_or(ImageError::LayerMissing { diff_id: planned.diff_id })?;
            layers.push(LayerRecord {
                diff_id: planned.diff_id,
                blob_digest: planned.blob_digest,
                media_type: planned.media_type,
                size: info.size,
            });
        }
        let mut seen = HashSet::new();
        let size: u64 = layers.iter().filter(|l| seen.insert(l.diff_id)).map(|l| l.size.bytes()).sum();
        let record = ImageRecord {
            manifest_digest: plan.manifest_digest,
            config_digest: plan.config_digest,
            layers,
            config: plan.config.clone(),
            size: ByteSize(size),
            created: plan.created,
            imported_at: OffsetDateTime::now_utc(),
            references: Vec::new(),
            source,
            last_used: None,
        };
        let record = self.store.record_image(&record, reference)?;
        self.committed = true;
        tracing::info!(
            image = %record.manifest_digest,
            reference = reference.map(ImageReference::as_str),
            layers = record.layers.len(),
            new_layers = self.state().unpacked.len(),
            size = record.size.bytes(),
            "image imported"
        );
        Ok(record)
    }

    /// Takes a present layer's size from the budget, once per layer.
    fn count(&self, diff_id: &Sha256Digest, size: u64) -> Result<(), ImageError> {
        let mut state = self.state();
        if state.counted.contains(diff_id) {
            return Ok(());
        }
        if !self.budget.take(size) {
            self.budget.give_back(size);
            return Err(ImageError::TooLarge { limit: self.store.max_image_size });
        }
        state.counted.insert(*diff_id);
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, SessionState> {
        // The state is updated in single steps that cannot panic halfway: a poisoned lock still
        // holds consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn roll_back(&mut self) {
        let unpacked = std::mem::take(&mut self.state().unpacked);
        if !self.shared.try_upgrade() {
            tracing::info!(layers = unpacked.len(), "import failed while others run; layers left for GC");
            return;
        }
        let referenced = match self.store.referenced_layers() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "could not read image records; layers left for GC");
                return;
            }
        };
        for diff_id in unpacked.iter().filter(|d| !referenced.contains(d)) {
            if let Err(e) = self.store.remove_layer(diff_id) {
                tracing::warn!(diff_id = %diff_id, error = %e, "could not remove layer of a failed import");
            }
        }
    }
}

impl Drop for ImportSession<'_> {
    fn drop(&mut self) {
        if !self.committed && !self.state().unpacked.is_empty() {
            self.roll_back();
        }
    }
}

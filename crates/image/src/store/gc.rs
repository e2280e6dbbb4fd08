//! Layer cache garbage collection: when each image was last used, LRU eviction of images down to
//! a size target, and removal of layers that no image references.
//!
//! ```text
//!  gc(in_use, keep, target)        store.lock exclusive (waits for running imports), catalog.lock
//!   ├─ total = Σ size of every unpacked layer
//!   ├─ evictable = images neither in use (manifest digest) nor pinned (any reference in keep),
//!   │              least recently used first (last_used, else imported_at)
//!   ├─ while the layers the remaining images reference exceed target: evict the next image
//!   │              (its references from refs.json, then its record)
//!   └─ remove every layer no remaining image references (and layer dirs a crash left without
//!                  their .json)
//! ```
//!
//! Everything GC decides on is on disk (records with their `last_used`, `refs.json`, layer
//! `.json` files), so it survives restarts; a layer's reference count is the number of image
//! records that list it ([`ImageStore::layer_refcounts`]). A crash part-way leaves unreferenced
//! layers, which the next run removes. Running it twice changes nothing the second time.

use std::collections::{BTreeMap, HashMap, HashSet};

use sandpit_types::ByteSize;
use time::OffsetDateTime;

use super::fsutil::{self, FileLock, write_json_atomic, write_json_replacing};
use super::{ImageRecord, ImageStore, LayerInfo, references_to};
use crate::digest::Sha256Digest;
use crate::error::ImageError;
use crate::reference::{ImageReference, ImageSelector};

/// What one garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Images evicted (their records and references are gone), least recently used first.
    pub removed_images: Vec<Sha256Digest>,
    /// The references that pointed at them.
    pub removed_references: Vec<ImageReference>,
    /// Layers deleted because no remaining image references them.
    pub removed_layers: Vec<Sha256Digest>,
    /// Layer bytes before the run.
    pub total_before: ByteSize,
    /// Layer bytes after it.
    pub total_after: ByteSize,
}

impl GcReport {
    /// Layer bytes the run freed.
    pub fn freed(&self) -> ByteSize {
        ByteSize(self.total_before.bytes().saturating_sub(self.total_after.bytes()))
    }
}

/// The layers found on disk.
struct LayerInventory {
    /// diff_id → uncompressed size, for layers with their `.json`.
    sizes: BTreeMap<Sha256Digest, u64>,
    /// Layer directories without a `.json` (a crash between the two renames of an unpack).
    orphan_dirs: Vec<Sha256Digest>,
}

impl ImageStore {
    /// Records that a sandbox was created from the image now; LRU eviction goes by this time.
    /// Cheap: one small file rewritten without `fsync` (a power loss may keep an older time).
    pub fn touch(&self, selector: &ImageSelector) -> Result<(), ImageError> {
        let _catalog = FileLock::acquire(&self.catalog_lock_path(), true)?;
        let refs = self.read_refs()?;
        let digest = self.resolve(&refs, selector)?;
        let mut record = self
            .read_image(&digest)?
            .ok_or_else(|| ImageError::NotFound { reference: selector.to_string() })?;
        record.last_used = Some(OffsetDateTime::now_utc());
        write_json_replacing(&self.tmp_dir(), &self.image_path(&digest), &record, false)
    }

    /// The uncompressed size of every layer in the store.
    pub fn total_size(&self) -> Result<ByteSize, ImageError> {
        Ok(ByteSize(self.layer_inventory()?.sizes.values().sum()))
    }

    /// How many image records list each layer (a layer listed twice by one image counts once).
    /// Layers in the store but absent here are unreferenced: the next [`Self::gc`] removes them.
    pub fn layer_refcounts(&self) -> Result<BTreeMap<Sha256Digest, usize>, ImageError> {
        let mut counts = BTreeMap::new();
        for record in self.read_records()? {
            for diff_id in distinct_layers(&record) {
                *counts.entry(diff_id).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// Evicts least-recently-used images until the layers the remaining images reference take
    /// at most `target` bytes, then deletes every layer no remaining image references.
    ///
    /// An image whose manifest digest is in `in_use` (live sandboxes) or that any reference in
    /// `keep` names (pinned, e.g. the default image) is never evicted, so no layer it references
    /// is deleted; the target may then stay out of reach. Takes the store lock exclusively, so
    /// it waits for running imports and never deletes a layer one of them has just unpacked.
    /// Idempotent: a second run with the same arguments removes nothing.
    pub fn gc(
        &self,
        in_use: &HashSet<Sha256Digest>,
        keep: &HashSet<ImageReference>,
        target: ByteSize,
    ) -> Result<GcReport, ImageError> {
        let _store = FileLock::acquire(&self.store_lock_path(), true)?;
        let _catalog = FileLock::acquire(&self.catalog_lock_path(), true)?;
        let inventory = self.layer_inventory()?;
        let mut refs = self.read_refs()?;
        let mut records = self.read_records()?;
        for record in &mut records {
            record.references = references_to(&refs, &record.manifest_digest);
        }
        for digest in in_use {
            if !records.iter().any(|r| r.manifest_digest == *digest) {
                tracing::warn!(image = %digest, "an image in use has no record; its layers are not protected");
            }
        }

        let mut counts: HashMap<Sha256Digest, usize> = HashMap::new();
        for record in &records {
            for diff_id in distinct_layers(record) {
                *counts.entry(diff_id).or_insert(0) += 1;
            }
        }
        let size_of = |d: &Sha256Digest| inventory.sizes.get(d).copied().unwrap_or(0);
        let mut referenced: u64 = counts.keys().map(size_of).sum();

        let mut evictable: Vec<&ImageRecord> = records
            .iter()
            .filter(|r| {
                !in_use.contains(&r.manifest_digest) && !r.references.iter().any(|x| keep.contains(x))
            })
            .collect();
        evictable.sort_by_key(|r| (r.recency(), r.manifest_digest));
        let mut evicted: Vec<&ImageRecord> = Vec::new();
        for record in evictable {
            if referenced <= target.bytes() {
                break;
            }
            for diff_id in distinct_layers(record) {
                if let Some(count) = counts.get_mut(&diff_id) {
                    *count -= 1;
                    if *count == 0 {
                        counts.remove(&diff_id);
                        referenced -= size_of(&diff_id);
                    }
                }
            }
            evicted.push(record);
        }

        let mut report =
            GcReport { total_before: ByteSize(inventory.sizes.values().sum()), ..GcReport::default() };
        // The catalog first: a crash after it leaves only unreferenced layers behind.
        if !evicted.is_empty() {
            let gone: HashSet<Sha256Digest> = evicted.iter().map(|r| r.manifest_digest).collect();
            refs.refs.retain(|reference, digest| {
                let drop = gone.contains(digest);
                if drop {
                    report.removed_references.push(reference.clone());
                }
                !drop
            });
            write_json_atomic(&self.tmp_dir(), &self.refs_path(), &refs)?;
            for record in &evicted {
                let path = self.image_path(&record.manifest_digest);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ImageError::io("remove image record", &path, e)),
                }
                report.removed_images.push(record.manifest_digest);
                tracing::info!(image = %record.manifest_digest, size = record.size.bytes(), "image evicted");
            }
            fsutil::sync_dir(&self.images_dir())?;
        }

        for diff_id in inventory.sizes.keys().filter(|d| !counts.contains_key(d)) {
            self.remove_layer(diff_id)?;
            report.removed_layers.push(*diff_id);
        }
        for diff_id in &inventory.orphan_dirs {
            self.discard_layer_dir(diff_id)?;
        }
        report.total_after = ByteSize(
            inventory.sizes.iter().filter(|(d, _)| counts.contains_key(d)).map(|(_, size)| size).sum(),
        );
        if !report.removed_layers.is_empty() {
            tracing::info!(
                layers = report.removed_layers.len(),
                freed = report.freed().bytes(),
                "unreferenced layers removed"
            );
        }
        Ok(report)
    }

    /// Removes every image neither in use nor pinned, and every layer then unreferenced:
    /// [`Self::gc`] with a target of zero.
    pub fn prune(
        &self,
        in_use: &HashSet<Sha256Digest>,
        keep: &HashSet<ImageReference>,
    ) -> Result<GcReport, ImageError> {
        self.gc(in_use, keep, ByteSize(0))
    }

    /// Every image record (references not filled in).
    fn read_records(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let mut records = Vec::new();
        for digest in self.image_digests()? {
            if let Some(record) = self.read_image(&digest)? {
                records.push(record);
            }
        }
        Ok(records)
    }

    fn layer_inventory(&self) -> Result<LayerInventory, ImageError> {
        let dir = self.layers_dir();
        let entries = std::fs::read_dir(&dir).map_err(|e| ImageError::io("read", &dir, e))?;
        let mut sizes = BTreeMap::new();
        let mut dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::io("read", &dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            match name.strip_suffix(".json") {
                Some(hex) => {
                    let Ok(diff_id) = Sha256Digest::from_hex(hex) else { continue };
                    let info: Option<LayerInfo> = fsutil::read_json(&entry.path())?;
                    if let Some(info) = info {
                        sizes.insert(diff_id, info.size.bytes());
                    }
                }
                None => {
                    if let Ok(diff_id) = Sha256Digest::from_hex(name) {
                        dirs.push(diff_id);
                    }
                }
            }
        }
        let orphan_dirs = dirs.into_iter().filter(|d| !sizes.contains_key(d)).collect();
        Ok(LayerInventory { sizes, orphan_dirs })
    }
}

/// An image's layers, each once.
fn distinct_layers(record: &ImageRecord) -> HashSet<Sha256Digest> {
    record.layers.iter().map(|l| l.diff_id).collect()
}

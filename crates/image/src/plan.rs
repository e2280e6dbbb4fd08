//! A verified plan of one image: its manifest and config cross-checked, its layers classified.
//!
//! Both import paths (an OCI layout now, a registry pull later) build an [`ImagePlan`] from a
//! manifest and config whose digests they have verified, unpack its layers through an
//! [`crate::ImportSession`], and commit it.

use oci_spec::image::{ImageConfiguration, ImageManifest};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::digest::Sha256Digest;
use crate::error::ImageError;
use crate::media::{LayerMediaType, check_config_media_type};
use crate::store::{ImageConfigSummary, ImageRecord};

/// One layer of a plan, lowest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLayer {
    /// The digest of the (possibly compressed) blob.
    pub blob_digest: Sha256Digest,
    /// How the blob is encoded.
    pub media_type: LayerMediaType,
    /// The blob's size from the manifest.
    pub blob_size: u64,
    /// The digest of the uncompressed tar, from the config.
    pub diff_id: Sha256Digest,
}

/// An image whose manifest and config agree, ready to be unpacked and committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePlan {
    pub(crate) manifest_digest: Sha256Digest,
    pub(crate) config_digest: Sha256Digest,
    pub(crate) layers: Vec<PlannedLayer>,
    pub(crate) config: ImageConfigSummary,
    pub(crate) created: Option<OffsetDateTime>,
}

impl ImagePlan {
    /// Cross-checks a manifest and its config. The caller has verified that `manifest_digest` and
    /// `config_digest` are the digests of the bytes these were parsed from.
    pub fn new(
        manifest_digest: Sha256Digest,
        manifest: &ImageManifest,
        config_digest: Sha256Digest,
        config: &ImageConfiguration,
    ) -> Result<Self, ImageError> {
        let in_manifest = Sha256Digest::from_oci(manifest.config().digest())?;
        if in_manifest != config_digest {
            return Err(ImageError::ConfigMismatch { in_manifest, given: config_digest });
        }
        check_config_media_type(manifest.config().media_type().as_ref())?;
        let rootfs = config.rootfs();
        if rootfs.typ() != "layers" {
            return Err(ImageError::UnsupportedRootfsType { found: rootfs.typ().clone() });
        }
        let diff_ids = rootfs.diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::LayerCountMismatch {
                layers: manifest.layers().len(),
                diff_ids: diff_ids.len(),
            });
        }
        let layers = manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(descriptor, diff_id)| {
                let written = descriptor.digest().to_string();
                let media_type = LayerMediaType::from_media_type(descriptor.media_type().as_ref(), &written)?;
                Ok(PlannedLayer {
                    blob_digest: Sha256Digest::from_oci(descriptor.digest())?,
                    media_type,
                    blob_size: descriptor.size(),
                    diff_id: diff_id.parse()?,
                })
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        let created = config.created().as_deref().and_then(|c| OffsetDateTime::parse(c, &Rfc3339).ok());
        Ok(Self {
            manifest_digest,
            config_digest,
            layers,
            config: ImageConfigSummary::from_oci(config),
            created,
        })
    }

    /// The plan of an image the store already has, for a manifest with its digest (fetched again
    /// from a registry): no config needs fetching, since the manifest names the same config.
    pub(crate) fn from_record(record: &ImageRecord, manifest: &ImageManifest) -> Result<Self, ImageError> {
        if manifest.layers().len() != record.layers.len() {
            return Err(ImageError::LayerCountMismatch {
                layers: manifest.layers().len(),
                diff_ids: record.layers.len(),
            });
        }
        let layers = manifest
            .layers()
            .iter()
            .zip(&record.layers)
            .map(|(descriptor, known)| {
                let written = descriptor.digest().to_string();
                Ok(PlannedLayer {
                    blob_digest: Sha256Digest::from_oci(descriptor.digest())?,
                    media_type: LayerMediaType::from_media_type(descriptor.media_type().as_ref(), &written)?,
                    blob_size: descriptor.size(),
                    diff_id: known.diff_id,
                })
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        Ok(Self {
            manifest_digest: record.manifest_digest,
            config_digest: record.config_digest,
            layers,
            config: record.config.clone(),
            created: record.created,
        })
    }

    /// The manifest digest: the image's identity in the store.
    pub fn manifest_digest(&self) -> &Sha256Digest {
        &self.manifest_digest
    }

    /// The config digest.
    pub fn config_digest(&self) -> &Sha256Digest {
        &self.config_digest
    }

    /// The layers, lowest first.
    pub fn layers(&self) -> &[PlannedLayer] {
        &self.layers
    }

    /// The run configuration the image asks for.
    pub fn config(&self) -> &ImageConfigSummary {
        &self.config
    }
}

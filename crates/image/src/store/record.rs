//! The records the store keeps: images, their layers, and each unpacked layer's account.

use std::collections::BTreeMap;

use oci_spec::image::ImageConfiguration;
use sandpit_types::ByteSize;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::digest::Sha256Digest;
use crate::idshift::IdShift;
use crate::media::LayerMediaType;
use crate::reference::ImageReference;
use crate::unpack::UnpackReport;

/// An image in the store (`images/<manifest hex>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The manifest digest: the image's identity.
    pub manifest_digest: Sha256Digest,
    /// The config digest.
    pub config_digest: Sha256Digest,
    /// The layers, lowest first, as the config lists them (a layer may repeat).
    pub layers: Vec<LayerRecord>,
    /// The run configuration the image asks for.
    pub config: ImageConfigSummary,
    /// Uncompressed size of the image's distinct layers.
    pub size: ByteSize,
    /// When the image was built, from its config.
    #[serde(with = "time::serde::rfc3339::option")]
    pub created: Option<OffsetDateTime>,
    /// When it was imported into this store.
    #[serde(with = "time::serde::rfc3339")]
    pub imported_at: OffsetDateTime,
    /// The references that point at it (kept in `refs.json`, filled in on read).
    #[serde(skip)]
    pub references: Vec<ImageReference>,
    /// How the image came into the store: it decides who may use it (see
    /// [`crate::registry`] for the access rule).
    #[serde(default)]
    pub source: ImageSource,
    /// When a sandbox was last created from it ([`crate::ImageStore::touch`]); `None` until then.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used: Option<OffsetDateTime>,
}

impl ImageRecord {
    /// When the image was last used or (re)imported, whichever is later: the age LRU eviction
    /// goes by.
    pub fn recency(&self) -> OffsetDateTime {
        self.last_used.map_or(self.imported_at, |used| used.max(self.imported_at))
    }
}

/// How an image was obtained.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    /// Imported or built on this machine (an OCI layout, an archive, a directory): usable by all.
    #[default]
    Local,
    /// Pulled from a registry.
    Registry {
        /// The registry host (`docker.io`, `127.0.0.1:5000`).
        registry: String,
        /// The repository in it (`library/busybox`).
        repository: String,
        /// Whether it was pulled without credentials (anyone may use it); `false`: only callers
        /// whose credentials the registry accepts for it may.
        anonymous: bool,
    },
}

impl ImageSource {
    /// Whether anyone may use the image without showing credentials.
    pub fn is_public(&self) -> bool {
        match self {
            Self::Local => true,
            Self::Registry { anonymous, .. } => *anonymous,
        }
    }

    /// The source to keep when an image already in the store arrives again: the more public
    /// one wins (content that anyone could fetch stays usable by anyone), else the newer one.
    pub(crate) fn merged_with(self, existing: Option<&ImageSource>) -> ImageSource {
        match existing {
            Some(old) if old.is_public() && !self.is_public() => old.clone(),
            Some(ImageSource::Local) => ImageSource::Local,
            _ => self,
        }
    }
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The digest of the uncompressed tar: the layer's identity in the store.
    pub diff_id: Sha256Digest,
    /// The digest of the blob this image ships it as.
    pub blob_digest: Sha256Digest,
    /// How that blob is encoded.
    pub media_type: LayerMediaType,
    /// Uncompressed tar size.
    pub size: ByteSize,
}

/// An unpacked layer (`layers/<diff_id hex>.json`, beside the directory `layers/<diff_id hex>/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// The digest of the uncompressed tar.
    pub diff_id: Sha256Digest,
    /// The digest of the blob it was unpacked from.
    pub blob_digest: Sha256Digest,
    /// How that blob was encoded.
    pub media_type: LayerMediaType,
    /// Size of that blob.
    pub blob_size: ByteSize,
    /// Uncompressed tar size.
    pub size: ByteSize,
    /// What the unpack created, skipped and dropped.
    pub report: UnpackReport,
    /// When it was unpacked.
    #[serde(with = "time::serde::rfc3339")]
    pub unpacked_at: OffsetDateTime,
}

/// The parts of an image config a sandbox needs to run it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfigSummary {
    /// `Entrypoint` (empty when unset).
    pub entrypoint: Vec<String>,
    /// `Cmd` (empty when unset).
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=value` strings.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User` (`name`, `uid`, `uid:gid` …).
    pub user: Option<String>,
    /// `ExposedPorts` keys (`8080/tcp`), sorted.
    pub exposed_ports: Vec<String>,
    /// `Volumes` keys, sorted.
    pub volumes: Vec<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `StopSignal`.
    pub stop_signal: Option<String>,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture (`amd64`).
    pub architecture: String,
}

impl ImageConfigSummary {
    /// Extracts the summary from an OCI (or Docker) image config.
    pub fn from_oci(config: &ImageConfiguration) -> Self {
        let mut summary = Self {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            ..Self::default()
        };
        if let Some(run) = config.config() {
            summary.entrypoint = run.entrypoint().clone().unwrap_or_default();
            summary.cmd = run.cmd().clone().unwrap_or_default();
            summary.env = run.env().clone().unwrap_or_default();
            summary.working_dir = run.working_dir().clone().filter(|w| !w.is_empty());
            summary.user = run.user().clone().filter(|u| !u.is_empty());
            summary.exposed_ports = sorted(run.exposed_ports().clone().unwrap_or_default());
            summary.volumes = sorted(run.volumes().clone().unwrap_or_default());
            summary.labels = run.labels().clone().unwrap_or_default().into_iter().collect();
            summary.stop_signal = run.stop_signal().clone();
        }
        summary
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// `store.json`: what the store was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoreMeta {
    /// Layout version of the store.
    pub(crate) version: u32,
    /// The id shift every layer of this store is unpacked with.
    pub(crate) id_shift: IdShift,
}

/// `refs.json`: reference → manifest digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefsFile {
    pub(crate) refs: BTreeMap<ImageReference, Sha256Digest>,
}

//! Media types: which manifests, configs and layer encodings the importer understands.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{DigestSubject, ImageError};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (an index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// How a layer blob is encoded; the layer itself is always a tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerMediaType {
    /// An uncompressed tar.
    Tar,
    /// A gzip-compressed tar (one or more gzip members).
    TarGzip,
    /// A zstd-compressed tar.
    TarZstd,
}

impl LayerMediaType {
    /// Classifies a layer media type (OCI or Docker). Foreign and non-distributable layers are a
    /// [`ImageError::ForeignLayer`]; anything else unknown is [`ImageError::UnsupportedMediaType`].
    pub fn from_media_type(media_type: &str, digest: &str) -> Result<Self, ImageError> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar" | "application/vnd.docker.image.rootfs.diff.tar" => {
                Ok(Self::Tar)
            }
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Ok(Self::TarGzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Self::TarZstd),
            foreign
                if foreign.starts_with("application/vnd.oci.image.layer.nondistributable.")
                    || foreign.starts_with("application/vnd.docker.image.rootfs.foreign.") =>
            {
                Err(ImageError::ForeignLayer { digest: digest.to_owned(), media_type: foreign.to_owned() })
            }
            other => Err(ImageError::UnsupportedMediaType {
                media_type: other.to_owned(),
                what: DigestSubject::LayerBlob,
            }),
        }
    }

    /// The OCI media type for this encoding.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::Tar => "application/vnd.oci.image.layer.v1.tar",
            Self::TarGzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::TarZstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

impl fmt::Display for LayerMediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tar => "uncompressed tar",
            Self::TarGzip => "gzip",
            Self::TarZstd => "zstd",
        })
    }
}

/// What a descriptor in an index points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ManifestKind {
    /// An image manifest (OCI or Docker schema 2).
    Manifest,
    /// An index or manifest list.
    Index,
}

/// Classifies a descriptor's media type as a manifest or an index.
pub(crate) fn manifest_kind(media_type: &str) -> Result<ManifestKind, ImageError> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(ManifestKind::Manifest),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Ok(ManifestKind::Index),
        other => Err(ImageError::UnsupportedMediaType {
            media_type: other.to_owned(),
            what: DigestSubject::Manifest,
        }),
    }
}

/// Checks a config descriptor's media type.
pub(crate) fn check_config_media_type(media_type: &str) -> Result<(), ImageError> {
    match media_type {
        OCI_CONFIG | DOCKER_CONFIG => Ok(()),
        other => Err(ImageError::UnsupportedMediaType {
            media_type: other.to_owned(),
            what: DigestSubject::Config,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types_cover_oci_and_docker_and_refuse_foreign_layers() {
        let d = "sha256:00";
        assert_eq!(
            LayerMediaType::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip", d).unwrap(),
            LayerMediaType::TarGzip
        );
        assert_eq!(
            LayerMediaType::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip", d).unwrap(),
            LayerMediaType::TarGzip
        );
        assert_eq!(
            LayerMediaType::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd", d).unwrap(),
            LayerMediaType::TarZstd
        );
        assert_eq!(
            LayerMediaType::from_media_type("application/vnd.oci.image.layer.v1.tar", d).unwrap(),
            LayerMediaType::Tar
        );
        for foreign in [
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ] {
            assert!(matches!(
                LayerMediaType::from_media_type(foreign, d),
                Err(ImageError::ForeignLayer { .. })
            ));
        }
        assert!(matches!(
            LayerMediaType::from_media_type("application/x-bzip2", d),
            Err(ImageError::UnsupportedMediaType { .. })
        ));
    }
}

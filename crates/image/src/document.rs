//! The JSON documents of an image (index, manifest, config): bounded reads, size and digest
//! checks, parsing, platform choice and the plan they make. Shared by the layout importer and the
//! registry puller, so both accept and refuse exactly the same images.

use std::io::Read;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Os};
use serde::de::DeserializeOwned;

use crate::digest::Sha256Digest;
use crate::error::{DigestSubject, ImageError};
use crate::media::{ManifestKind, manifest_kind};
use crate::plan::ImagePlan;

/// The largest index, manifest or config accepted.
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

/// How deep image indexes may nest.
pub const MAX_INDEX_DEPTH: usize = 4;

/// Reads at most [`MAX_DOCUMENT_BYTES`]; more is [`ImageError::DocumentTooLarge`].
pub(crate) fn read_bounded(reader: impl Read, what: DigestSubject) -> Result<Vec<u8>, ImageError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ImageError::io("read", what.to_string(), e))?;
    check_size_limit(bytes.len() as u64, what)?;
    Ok(bytes)
}

/// Refuses a document (declared or read) larger than [`MAX_DOCUMENT_BYTES`].
pub(crate) fn check_size_limit(size: u64, what: DigestSubject) -> Result<(), ImageError> {
    if size > MAX_DOCUMENT_BYTES {
        return Err(ImageError::DocumentTooLarge { what, limit: MAX_DOCUMENT_BYTES });
    }
    Ok(())
}

/// Checks a document against the size its descriptor declares and the digest it is named by.
pub(crate) fn verify(
    bytes: &[u8],
    digest: &Sha256Digest,
    declared: Option<u64>,
    what: DigestSubject,
) -> Result<(), ImageError> {
    let actual = bytes.len() as u64;
    check_size_limit(actual, what)?;
    if let Some(expected) = declared
        && actual != expected
    {
        return Err(ImageError::SizeMismatch { what, expected, actual });
    }
    let found = Sha256Digest::of(bytes);
    if found != *digest {
        return Err(ImageError::DigestMismatch { what, expected: *digest, actual: found });
    }
    Ok(())
}

/// Parses a JSON document.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8], what: DigestSubject) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::InvalidJson { what, source })
}

/// A manifest-or-index document fetched without knowing which it is (a registry answers a tag
/// with either).
#[derive(Debug)]
pub(crate) enum TopDocument {
    /// An image index or Docker manifest list.
    Index(Box<ImageIndex>),
    /// An image manifest.
    Manifest(Box<ImageManifest>),
}

/// Tells an index from a manifest by its `mediaType` (or, when absent, by its `manifests` key)
/// and parses it.
pub(crate) fn parse_top(bytes: &[u8]) -> Result<TopDocument, ImageError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = parse(bytes, DigestSubject::Manifest)?;
    let kind = match &probe.media_type {
        Some(media_type) => manifest_kind(media_type)?,
        None if probe.manifests.is_some() => ManifestKind::Index,
        None => ManifestKind::Manifest,
    };
    match kind {
        ManifestKind::Index => parse(bytes, DigestSubject::Index).map(|i| TopDocument::Index(Box::new(i))),
        ManifestKind::Manifest => parse_manifest(bytes).map(|m| TopDocument::Manifest(Box::new(m))),
    }
}

/// Parses an image manifest and refuses one that says it is something else.
pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest, ImageError> {
    let manifest: ImageManifest = parse(bytes, DigestSubject::Manifest)?;
    if let Some(media_type) = manifest.media_type()
        && manifest_kind(media_type.as_ref())? != ManifestKind::Manifest
    {
        return Err(ImageError::UnsupportedMediaType {
            media_type: media_type.to_string(),
            what: DigestSubject::Manifest,
        });
    }
    Ok(manifest)
}

/// Verifies the config against the manifest's config descriptor, parses it and cross-checks both
/// into a plan. `manifest_digest` must be the verified digest of the manifest's bytes.
pub(crate) fn plan(
    manifest_digest: Sha256Digest,
    manifest: &ImageManifest,
    config_bytes: &[u8],
) -> Result<ImagePlan, ImageError> {
    let config_digest = Sha256Digest::from_oci(manifest.config().digest())?;
    verify(config_bytes, &config_digest, Some(manifest.config().size()), DigestSubject::Config)?;
    let config: ImageConfiguration = parse(config_bytes, DigestSubject::Config)?;
    ImagePlan::new(manifest_digest, manifest, config_digest, &config)
}

/// Picks among index entries: the only one, else the one for linux on this host's architecture.
/// Several entries without any platform are [`ImageError::AmbiguousManifest`].
pub(crate) fn choose_for_host<'d>(candidates: &[&'d Descriptor]) -> Result<&'d Descriptor, ImageError> {
    let arch = host_architecture();
    match candidates {
        [] => Err(ImageError::NoMatchingPlatform { arch }),
        [only] => Ok(*only),
        several => {
            let for_host = several.iter().find(|d| {
                d.platform()
                    .as_ref()
                    .is_some_and(|p| *p.os() == Os::Linux && p.architecture().to_string() == arch)
            });
            match for_host {
                Some(d) => Ok(*d),
                None if several.iter().any(|d| d.platform().is_some()) => {
                    Err(ImageError::NoMatchingPlatform { arch })
                }
                None => Err(ImageError::AmbiguousManifest { count: several.len(), arch }),
            }
        }
    }
}

/// Picks the entry of a registry index for this host: unlike a layout, a single entry for another
/// platform is refused too.
pub(crate) fn choose_from_index(index: &ImageIndex) -> Result<&Descriptor, ImageError> {
    let arch = host_architecture();
    let candidates: Vec<&Descriptor> = index.manifests().iter().collect();
    let chosen = choose_for_host(&candidates)?;
    let other_platform = chosen
        .platform()
        .as_ref()
        .is_some_and(|p| *p.os() != Os::Linux || p.architecture().to_string() != arch);
    if other_platform {
        return Err(ImageError::NoMatchingPlatform { arch });
    }
    Ok(chosen)
}

/// This host's architecture in OCI (Go) terms.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_document_is_told_apart_by_media_type_or_manifests_key() {
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(parse_top(index).unwrap(), TopDocument::Index(_)));
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert!(matches!(parse_top(list).unwrap(), TopDocument::Index(_)));
        let schema1 =
            br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        assert!(matches!(parse_top(schema1), Err(ImageError::UnsupportedMediaType { .. })));
    }

    #[test]
    fn verify_checks_declared_size_then_digest() {
        let d = Sha256Digest::of(b"{}");
        assert!(verify(b"{}", &d, Some(2), DigestSubject::Config).is_ok());
        assert!(matches!(
            verify(b"{}", &d, Some(3), DigestSubject::Config),
            Err(ImageError::SizeMismatch { expected: 3, actual: 2, .. })
        ));
        assert!(matches!(
            verify(b"[]", &d, None, DigestSubject::Config),
            Err(ImageError::DigestMismatch { .. })
        ));
    }
}

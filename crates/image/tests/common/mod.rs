//! Helpers shared by this crate's integration tests (the image builders are in
//! `sandpit_image::testkit`).
// Test helpers: a panic is how they report a failed step.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use sandpit_image::testkit::OciLayout;
use sandpit_image::testkit::craft::{RawEntry, gzip, layer_tar, zstd};
use sandpit_image::{IdShift, ImagePlan, ImageReference, ImageStore, LayerMediaType, Sha256Digest};

/// The id shift used throughout: sandbox ids 0..65536 are host ids 100000..165536.
pub fn shift() -> IdShift {
    IdShift::new(100_000, 65_536).unwrap()
}

/// A store in `dir/store`.
pub fn store(dir: &Path) -> ImageStore {
    ImageStore::open(dir.join("store"), shift()).unwrap()
}

/// `lstat`.
pub fn meta(path: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names in a directory.
pub fn names(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// An xattr of a path (not following symlinks).
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Whether a path is an overlayfs whiteout (char device 0:0).
pub fn is_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// Counts files and directories under a store's `layers/`, and entries under its `tmp/`.
pub fn store_contents(store: &ImageStore) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let root = store.root();
    (names(&root.join("layers")), names(&root.join("tmp")), names(&root.join("images")))
}

/// `cp -a src dst`.
pub fn copy_tree(src: &Path, dst: &Path) {
    let status = std::process::Command::new("cp").arg("-a").arg(src).arg(dst).status().unwrap();
    assert!(status.success());
}

/// A base directory holding `dest` (where a layer is unpacked) and `sentinel` (a directory next
/// to it that no entry may touch); checks that nothing appeared outside `dest`.
pub struct Arena {
    pub base: tempfile::TempDir,
    pub dest: PathBuf,
    pub sentinel: PathBuf,
}

impl Arena {
    pub fn new() -> Self {
        let base = tempfile::tempdir().unwrap();
        let dest = base.path().join("dest");
        let sentinel = base.path().join("sentinel");
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(&sentinel).unwrap();
        std::fs::write(sentinel.join("keep"), b"sentinel").unwrap();
        Self { base, dest, sentinel }
    }

    /// Nothing new next to `dest`, the sentinel untouched, and none of `host_paths` exists.
    pub fn assert_nothing_escaped(&self, host_paths: &[&Path]) {
        assert_eq!(names(self.base.path()), BTreeSet::from(["dest".to_owned(), "sentinel".to_owned()]));
        assert_eq!(names(&self.sentinel), BTreeSet::from(["keep".to_owned()]));
        assert_eq!(std::fs::read(self.sentinel.join("keep")).unwrap(), b"sentinel");
        for path in host_paths {
            assert!(
                std::fs::symlink_metadata(path).is_err(),
                "{} was created outside the layer",
                path.display()
            );
        }
    }
}

/// A unique name for host paths a hostile entry tries to create.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), uuid_like())
}

fn uuid_like() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// The link count of a host file.
pub fn nlink(path: &Path) -> u64 {
    meta(path).nlink()
}

/// A tiny layer tar: `etc/marker` holding `marker`.
pub fn small_layer(marker: &str) -> Vec<u8> {
    layer_tar(&[RawEntry::dir(b"etc/"), RawEntry::file(b"etc/marker", marker.as_bytes())])
}

/// `tar` encoded as `media_type` says.
pub fn encode(tar: &[u8], media_type: LayerMediaType) -> Vec<u8> {
    match media_type {
        LayerMediaType::Tar => tar.to_vec(),
        LayerMediaType::TarGzip => gzip(tar),
        LayerMediaType::TarZstd => zstd(tar),
    }
}

/// A manifest and config for `layers` (uncompressed tars), with the blob digests of `blobs`.
pub fn plan_for(layers: &[(&[u8], &[u8], LayerMediaType)]) -> ImagePlan {
    let descriptors: Vec<_> = layers
        .iter()
        .map(|(_, blob, mt)| {
            serde_json::json!({
                "mediaType": mt.oci_media_type(),
                "digest": Sha256Digest::of(blob).to_string(),
                "size": blob.len(),
            })
        })
        .collect();
    let diff_ids: Vec<_> = layers.iter().map(|(tar, _, _)| Sha256Digest::of(tar).to_string()).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-05-06T07:08:09Z",
        "config": {"Entrypoint": ["/bin/app"], "Env": ["A=1"], "ExposedPorts": {"80/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Sha256Digest::of(&config_bytes).to_string(),
            "size": config_bytes.len(),
        },
        "layers": descriptors,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let parsed_manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).unwrap();
    let parsed_config: ImageConfiguration = serde_json::from_slice(&config_bytes).unwrap();
    ImagePlan::new(
        Sha256Digest::of(&manifest_bytes),
        &parsed_manifest,
        Sha256Digest::of(&config_bytes),
        &parsed_config,
    )
    .unwrap()
}

/// Unpacks `layers` (tar, blob, media type) and commits them under `reference`.
pub fn import(
    store: &ImageStore,
    layers: &[(&[u8], &[u8], LayerMediaType)],
    reference: &str,
) -> sandpit_image::ImageRecord {
    let plan = plan_for(layers);
    let session = store.begin_import().unwrap();
    for ((_, blob, _), layer) in layers.iter().zip(plan.layers()) {
        session.unpack_layer_blob(*blob, layer.media_type, &layer.blob_digest, &layer.diff_id).unwrap();
    }
    session.commit(&plan, Some(&ImageReference::parse(reference).unwrap())).unwrap()
}

/// Removes fixture directories (`<prefix><pid>`) of test processes that no longer run.
pub fn remove_fixtures_of_finished_runs(tmp: &Path, prefix: &str) {
    for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(prefix)
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Bytes that gzip cannot shrink (xorshift64*), the same for the same seed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An image of `layers` layers in a new layout `work/layout`, tagged `tag`: layer `i` holds one
/// file `data/<i>.bin` of `layer_bytes` incompressible bytes (so each blob is about that size).
pub fn build_wide_image(work: &Path, tag: &str, layers: usize, layer_bytes: usize) -> OciLayout {
    let layout = OciLayout::init(&work.join("layout")).unwrap();
    layout.new_image(tag).unwrap();
    for i in 0..layers {
        let name = format!("data/{i}.bin");
        let tar = layer_tar(&[
            RawEntry::dir(b"data/"),
            RawEntry::file(name.as_bytes(), &noise(layer_bytes, i as u64)),
        ]);
        let path = work.join(format!("layer-{i}.tar"));
        std::fs::write(&path, tar).unwrap();
        layout.add_raw_layer(tag, &path).unwrap();
    }
    layout
}

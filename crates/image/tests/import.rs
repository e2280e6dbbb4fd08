//! Real images built with umoci and skopeo from busybox-static, imported into the store, checked
//! on disk and through an overlayfs mount.
// A test crate: helpers outside #[test] functions report failures by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use common::{copy_tree, is_whiteout, meta, names, shift, store, store_contents, xattr};
use sandpit_image::testkit::{self, BuiltImage, OverlayMount, layered};
use sandpit_image::{
    DigestSubject, ImageError, ImageReference, ImageSelector, ImageStore, LayerMediaType, LayoutProblem,
    Sha256Digest,
};
use sandpit_types::ByteSize;

/// Images built once per test run (under cargo's per-target temp dir) and only read by tests;
/// a test that changes one copies it first.
struct Fixtures {
    busybox: BuiltImage,
    layered: BuiltImage,
    layered_zstd: PathBuf,
    busybox_archive: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        testkit::require_tools().expect("umoci, skopeo and busybox-static must be installed");
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        common::remove_fixtures_of_finished_runs(tmp, "image-fixtures-");
        let base = tmp.join(format!("image-fixtures-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let busybox = testkit::build_busybox_image(&base.join("busybox"), "latest").unwrap();
        let layered = testkit::build_layered_image(&base.join("layered"), "v1").unwrap();
        let layered_zstd = layered.layout.copy_as_zstd("v1", &base.join("layered-zstd")).unwrap().dir;
        let busybox_archive = base.join("busybox.tar");
        busybox.layout.to_archive("latest", &busybox_archive).unwrap();
        Fixtures { busybox, layered, layered_zstd, busybox_archive }
    })
}

fn reference(s: &str) -> ImageReference {
    ImageReference::parse(s).unwrap()
}

fn import_layered(store: &ImageStore) -> sandpit_image::ImageRecord {
    let f = fixtures();
    store.import_oci_layout(&f.layered.layout.dir, Some("v1"), &reference("sandpit/layered:v1")).unwrap()
}

#[test]
fn busybox_image_imports_with_shifted_owners_and_its_config() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let record = store
        .import_oci_layout(&f.busybox.layout.dir, Some("latest"), &reference("sandpit/busybox"))
        .unwrap();
    assert_eq!(record.references, [reference("sandpit/busybox:latest")]);
    assert_eq!(record.layers.len(), 1);
    assert_eq!(record.layers[0].media_type, LayerMediaType::TarGzip);
    let c = &record.config;
    assert_eq!(c.entrypoint, ["/bin/sh"]);
    assert_eq!(c.cmd, ["-c", "echo hello"]);
    assert_eq!(c.env, ["PATH=/bin", "GREETING=hello"]);
    assert_eq!(c.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(c.user.as_deref(), Some("0:0"));
    assert_eq!(c.exposed_ports, ["8080/tcp"]);
    assert_eq!(c.labels.get("org.sandpit.test").map(String::as_str), Some("busybox"));
    assert_eq!((c.os.as_str(), c.architecture.as_str()), ("linux", "amd64"));
    assert!(record.created.is_some());

    let dirs = store.layer_dirs(&record).unwrap();
    let layer = &dirs[0];
    let busybox = meta(&layer.join("bin/busybox"));
    assert_eq!((busybox.uid(), busybox.gid(), busybox.mode() & 0o7777), (100_000, 100_000, 0o755));
    assert_eq!(busybox.len(), meta(&testkit::busybox_binary().unwrap()).len());
    assert_eq!(std::fs::read_link(layer.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert_eq!(meta(&layer.join("bin/sh")).uid(), 100_000);
    assert_eq!(meta(&layer.join("tmp")).mode() & 0o7777, 0o1777);
    let info = store.layer(&record.layers[0].diff_id).unwrap().unwrap();
    assert!(info.report.symlinks > 100, "{:?}", info.report);
    assert_eq!(info.report.skipped_count, 0);

    assert_eq!(store.get(&"sandpit/busybox:latest".parse().unwrap()).unwrap(), record);
    assert_eq!(store.get(&ImageSelector::Digest(record.manifest_digest)).unwrap(), record);
    assert_eq!(store.list().unwrap(), [record]);
}

#[test]
fn layered_image_has_whiteouts_opaque_dir_and_owners_in_overlay_form() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let record = import_layered(&store);
    let dirs = store.layer_dirs(&record).unwrap();
    assert_eq!(dirs.len(), 3);
    let (base, deletions, opaque) = (&dirs[0], &dirs[1], &dirs[2]);

    let user_file = meta(&base.join(layered::USER_FILE));
    assert_eq!((user_file.uid(), user_file.gid()), (101_000, 101_000));
    assert_eq!(meta(&base.join("home/user")).uid(), 101_000);
    let overflow = meta(&base.join(layered::OVERFLOW_FILE));
    assert_eq!((overflow.uid(), overflow.gid()), (100_000 + 65_534, 100_000 + 65_534));
    assert_eq!(meta(&base.join(layered::SETUID_FILE)).mode() & 0o7777, 0o4755);
    assert!(meta(&base.join(layered::FIFO)).file_type().is_fifo());
    assert_eq!(meta(&base.join(layered::HARD_LINK)).ino(), user_file.ino());
    let base_info = store.layer(&record.layers[0].diff_id).unwrap().unwrap();
    assert_eq!(base_info.report.overflow_ids, 1);

    assert!(is_whiteout(&deletions.join(layered::DELETED_FILE)));
    assert!(is_whiteout(&deletions.join(layered::DELETED_DIR)));
    assert_eq!(meta(&deletions.join(layered::DELETED_DIR)).uid(), 100_000);
    assert!(deletions.join(layered::ADDED_FILE).is_file());
    assert!(!names(&deletions.join("etc")).iter().any(|n| n.starts_with(".wh.")));
    let info = store.layer(&record.layers[1].diff_id).unwrap().unwrap();
    assert_eq!(info.report.whiteouts, 2);

    assert_eq!(
        xattr(&opaque.join(layered::OPAQUE_DIR), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(names(&opaque.join(layered::OPAQUE_DIR)), ["new".to_owned()].into());
    assert_eq!(xattr(&base.join(layered::OPAQUE_DIR), "trusted.overlay.opaque"), None);
}

#[test]
fn overlay_mount_of_the_layers_shows_deletions_and_the_opaque_dir() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let record = import_layered(&store);
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    let mount = OverlayMount::mount(&store.layer_dirs(&record).unwrap(), &target).unwrap();
    let root = mount.path();
    assert!(!root.join(layered::DELETED_FILE).exists());
    assert!(!root.join(layered::DELETED_DIR).exists());
    assert!(root.join("etc/passwd").is_file());
    assert_eq!(names(&root.join(layered::OPAQUE_DIR)), ["new".to_owned()].into());
    assert_eq!(std::fs::read(root.join(layered::ADDED_FILE)).unwrap(), b"added in layer 2\n");
    assert_eq!(meta(&root.join(layered::USER_FILE)).uid(), 101_000);
    // The busybox in the merged tree runs, through its applet symlinks.
    let out = testkit::run(
        "chroot",
        [root.as_os_str(), "/bin/sh".as_ref(), "-c".as_ref(), "cat /etc/added; ls /opaque".as_ref()],
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "added in layer 2\nnew\n");
    drop(mount);
    assert!(names(&target).is_empty(), "the overlay was not unmounted");
}

#[test]
fn reimporting_an_image_unpacks_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let first = import_layered(&store);
    let inodes: Vec<u64> = store.layer_dirs(&first).unwrap().iter().map(|d| meta(d).ino()).collect();
    let infos: Vec<_> = first.layers.iter().map(|l| store.layer(&l.diff_id).unwrap().unwrap()).collect();
    let second = import_layered(&store);
    assert_eq!(second.manifest_digest, first.manifest_digest);
    let again: Vec<u64> = store.layer_dirs(&second).unwrap().iter().map(|d| meta(d).ino()).collect();
    assert_eq!(again, inodes);
    let infos_again: Vec<_> =
        first.layers.iter().map(|l| store.layer(&l.diff_id).unwrap().unwrap()).collect();
    assert_eq!(infos_again, infos);
    assert!(store_contents(&store).1.is_empty());
}

#[test]
fn concurrent_imports_of_one_image_from_two_threads_give_one_layer_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store(dir.path()));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || import_layered(&store))
        })
        .collect();
    let records: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(records[0].manifest_digest, records[1].manifest_digest);
    let (layers, tmp, images) = store_contents(&store);
    assert_eq!(layers.len(), 6, "{layers:?}");
    assert!(tmp.is_empty());
    assert_eq!(images.len(), 1);
    let infos: Vec<_> = records[0].layers.iter().map(|l| store.layer(&l.diff_id).unwrap().unwrap()).collect();
    assert!(infos.iter().all(|i| i.report.entries > 0));
    assert!(is_whiteout(&store.layer_dirs(&records[1]).unwrap()[1].join(layered::DELETED_FILE)));
}

#[test]
fn oci_archive_imports_like_its_layout() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let from_archive = store
        .import_oci_archive(&f.busybox_archive, Some("latest"), &reference("sandpit/busybox-archive"))
        .unwrap();
    let inode = meta(&store.layer_dirs(&from_archive).unwrap()[0]).ino();
    let from_layout =
        store.import_oci_layout(&f.busybox.layout.dir, None, &reference("sandpit/busybox-layout")).unwrap();
    let diff_ids = |r: &sandpit_image::ImageRecord| r.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>();
    assert_eq!(diff_ids(&from_archive), diff_ids(&from_layout));
    assert_eq!(from_archive.config, from_layout.config);
    assert_eq!(meta(&store.layer_dirs(&from_layout).unwrap()[0]).ino(), inode);
    assert!(store.layer_dirs(&from_archive).unwrap()[0].join("bin/busybox").is_file());
}

#[test]
fn zstd_layers_share_the_unpacked_layers_of_their_gzip_twins() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let gzip = import_layered(&store);
    let inodes: Vec<u64> = store.layer_dirs(&gzip).unwrap().iter().map(|d| meta(d).ino()).collect();
    let zstd =
        store.import_oci_layout(&f.layered_zstd, Some("v1"), &reference("sandpit/layered:zstd")).unwrap();
    assert!(zstd.layers.iter().all(|l| l.media_type == LayerMediaType::TarZstd));
    assert_eq!(
        zstd.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>(),
        gzip.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>()
    );
    assert_ne!(zstd.layers[0].blob_digest, gzip.layers[0].blob_digest);
    let again: Vec<u64> = store.layer_dirs(&zstd).unwrap().iter().map(|d| meta(d).ino()).collect();
    assert_eq!(again, inodes);

    // And on their own, zstd layers unpack to the same result.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = common::store(fresh_dir.path());
    let record = fresh.import_oci_layout(&f.layered_zstd, None, &reference("z")).unwrap();
    let dirs = fresh.layer_dirs(&record).unwrap();
    assert!(is_whiteout(&dirs[1].join(layered::DELETED_DIR)));
    assert_eq!(
        xattr(&dirs[2].join(layered::OPAQUE_DIR), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}

/// The blob of the largest layer of `tag` in a layout.
fn largest_layer_blob(layout: &testkit::OciLayout, tag: &str) -> PathBuf {
    let manifest = layout.manifest(tag).unwrap();
    let largest =
        manifest["layers"].as_array().unwrap().iter().max_by_key(|l| l["size"].as_u64().unwrap()).unwrap();
    layout.blob_path(largest["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap())
}

#[test]
fn corrupted_layer_blob_is_a_digest_error_and_leaves_nothing() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("layout");
    copy_tree(&f.layered.layout.dir, &copy);
    let layout = testkit::OciLayout { dir: copy.clone() };
    let blob = largest_layer_blob(&layout, "v1");
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&blob, &bytes).unwrap();

    let store = store(dir.path());
    let result = store.import_oci_layout(&copy, Some("v1"), &reference("corrupt"));
    assert!(
        matches!(result, Err(ImageError::DigestMismatch { what: DigestSubject::LayerBlob, .. })),
        "{result:?}"
    );
    let (layers, tmp, images) = store_contents(&store);
    assert!(layers.is_empty(), "{layers:?}");
    assert!(tmp.is_empty(), "{tmp:?}");
    assert!(images.is_empty());
    assert!(matches!(store.get(&"corrupt".parse().unwrap()), Err(ImageError::NotFound { .. })));
}

#[test]
fn corrupted_config_or_missing_blob_is_refused_before_any_layer() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("layout");
    copy_tree(&f.busybox.layout.dir, &copy);
    let layout = testkit::OciLayout { dir: copy.clone() };
    let manifest = layout.manifest("latest").unwrap();
    let config_hex =
        manifest["config"]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_owned();
    let config_path = layout.blob_path(&config_hex);
    let mut config = std::fs::read(&config_path).unwrap();
    let at = config.iter().position(|&b| b == b'l').unwrap();
    config[at] = b'L';
    std::fs::write(&config_path, &config).unwrap();
    let store = store(dir.path());
    let result = store.import_oci_layout(&copy, None, &reference("x"));
    assert!(
        matches!(result, Err(ImageError::DigestMismatch { what: DigestSubject::Config, .. })),
        "{result:?}"
    );
    std::fs::remove_file(&config_path).unwrap();
    let result = store.import_oci_layout(&copy, None, &reference("x"));
    let expected = Sha256Digest::from_hex(&config_hex).unwrap();
    assert!(
        matches!(&result, Err(ImageError::InvalidLayout { problem: LayoutProblem::MissingBlob(d) }) if *d == expected),
        "{result:?}"
    );
    assert!(store_contents(&store).0.is_empty());
}

#[test]
fn size_limit_refuses_the_image_and_removes_the_layers_it_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    let sizes: Vec<u64> = {
        let probe = store(&dir.path().join("probe"));
        import_layered(&probe).layers.iter().map(|l| l.size.bytes()).collect()
    };
    // Room for the first layer only: it unpacks, the second does not fit.
    let store = ImageStore::open(dir.path().join("store"), shift())
        .unwrap()
        .with_max_image_size(ByteSize(sizes[0] + 10));
    let f = fixtures();
    let result = store.import_oci_layout(&f.layered.layout.dir, Some("v1"), &reference("too/big"));
    assert!(
        matches!(result, Err(ImageError::TooLarge { limit }) if limit == ByteSize(sizes[0] + 10)),
        "{result:?}"
    );
    let (layers, tmp, images) = store_contents(&store);
    assert!(layers.is_empty(), "{layers:?}");
    assert!(tmp.is_empty());
    assert!(images.is_empty());
    // A limit below the first layer stops inside the unpack.
    let tiny =
        ImageStore::open(dir.path().join("tiny"), shift()).unwrap().with_max_image_size(ByteSize(512 * 1024));
    let result = tiny.import_oci_layout(&f.busybox.layout.dir, None, &reference("too/big"));
    assert!(matches!(result, Err(ImageError::TooLarge { .. })), "{result:?}");
    let (layers, tmp, _) = store_contents(&tiny);
    assert!(layers.is_empty() && tmp.is_empty());
}

#[test]
fn manifest_selection_by_name_and_its_errors() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("layout");
    copy_tree(&f.busybox.layout.dir, &copy);
    testkit::run("umoci", ["tag", "--image", &format!("{}:latest", copy.display()), "second"]).unwrap();
    let store = store(dir.path());
    let result = store.import_oci_layout(&copy, None, &reference("x"));
    assert!(matches!(result, Err(ImageError::AmbiguousManifest { count: 2, .. })), "{result:?}");
    let result = store.import_oci_layout(&copy, Some("nope"), &reference("x"));
    assert!(matches!(&result, Err(ImageError::ManifestNotFound { name }) if name == "nope"), "{result:?}");
    let record = store.import_oci_layout(&copy, Some("second"), &reference("x")).unwrap();
    assert_eq!(record.config.entrypoint, ["/bin/sh"]);
    let missing = store.import_oci_layout(&dir.path().join("nowhere"), None, &reference("x"));
    assert!(
        matches!(missing, Err(ImageError::InvalidLayout { problem: LayoutProblem::MissingLayoutFile })),
        "{missing:?}"
    );
}

/// Writes `value` as a blob of the layout and returns its descriptor fields.
fn put_blob(layout: &Path, value: &serde_json::Value) -> (String, usize) {
    let bytes = serde_json::to_vec(value).unwrap();
    let digest = Sha256Digest::of(&bytes);
    std::fs::write(layout.join("blobs/sha256").join(digest.hex()), &bytes).unwrap();
    (digest.to_string(), bytes.len())
}

#[test]
fn nested_index_is_followed_to_the_host_platform() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("layout");
    copy_tree(&f.busybox.layout.dir, &copy);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0].clone();
    let mut for_host = manifest.clone();
    for_host["platform"] = serde_json::json!({"architecture": "amd64", "os": "linux"});
    for_host.as_object_mut().unwrap().remove("annotations");
    let mut for_arm = for_host.clone();
    for_arm["platform"]["architecture"] = "arm64".into();
    for_arm["digest"] = Sha256Digest::of(b"not here").to_string().into();
    let inner = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [for_arm, for_host],
    });
    let (digest, size) = put_blob(&copy, &inner);
    let outer = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    });
    std::fs::write(copy.join("index.json"), serde_json::to_vec(&outer).unwrap()).unwrap();
    let store = store(dir.path());
    let record = store.import_oci_layout(&copy, Some("multi"), &reference("multi")).unwrap();
    assert_eq!(record.manifest_digest.to_string(), manifest["digest"].as_str().unwrap());
}

#[test]
fn foreign_layer_is_refused_clearly() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("layout");
    copy_tree(&f.busybox.layout.dir, &copy);
    let layout = testkit::OciLayout { dir: copy.clone() };
    let mut manifest = layout.manifest("latest").unwrap();
    manifest["layers"][0]["mediaType"] =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".into();
    let (digest, size) = put_blob(&copy, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size}],
    });
    std::fs::write(copy.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let store = store(dir.path());
    let result = store.import_oci_layout(&copy, None, &reference("foreign"));
    assert!(matches!(result, Err(ImageError::ForeignLayer { .. })), "{result:?}");
    assert!(store_contents(&store).0.is_empty());
}

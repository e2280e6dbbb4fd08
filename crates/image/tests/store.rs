//! The layer store with crafted layer blobs: digests, compression, atomicity, sessions,
//! references and the id shift, without external tools.
// A test crate: helpers outside #[test] functions report failures by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use common::{encode, import, meta, names, plan_for, shift, small_layer, store, store_contents};
use sandpit_image::testkit::craft::{RawEntry, gzip, layer_tar, zstd};
use sandpit_image::{
    DigestSubject, IdShift, ImageError, ImageReference, ImageSelector, ImageStore, LayerMediaType,
    Sha256Digest,
};
use sandpit_types::ByteSize;

#[test]
fn gzip_zstd_and_plain_blobs_unpack_to_the_same_layer_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let tar = small_layer("one");
    let diff_id = Sha256Digest::of(&tar);
    let mut first_inode = None;
    for (media_type, name) in
        [(LayerMediaType::TarGzip, "gz"), (LayerMediaType::TarZstd, "zst"), (LayerMediaType::Tar, "plain")]
    {
        let blob = encode(&tar, media_type);
        let record = import(&store, &[(&tar, &blob, media_type)], name);
        assert_eq!(record.layers[0].media_type, media_type);
        let info = store.layer(&diff_id).unwrap().unwrap();
        assert_eq!(info.size, ByteSize(tar.len() as u64));
        // The first encoding unpacked it; the others found it and kept its record.
        assert_eq!(info.media_type, LayerMediaType::TarGzip);
        let inode = meta(&store.layer_dir(&diff_id)).ino();
        assert_eq!(*first_inode.get_or_insert(inode), inode);
    }
    // Each encoding also unpacks on its own in a fresh store.
    for media_type in [LayerMediaType::TarZstd, LayerMediaType::Tar] {
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = common::store(fresh_dir.path());
        let blob = encode(&tar, media_type);
        let session = fresh.begin_import().unwrap();
        let info =
            session.unpack_layer_blob(&blob[..], media_type, &Sha256Digest::of(&blob), &diff_id).unwrap();
        assert_eq!((info.media_type, info.blob_size), (media_type, ByteSize(blob.len() as u64)));
        assert_eq!(std::fs::read(fresh.layer_dir(&diff_id).join("etc/marker")).unwrap(), b"one");
    }
}

#[test]
fn layer_dir_holds_only_the_layer_and_is_owned_by_sandbox_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let tar = small_layer("x");
    let blob = gzip(&tar);
    let session = store.begin_import().unwrap();
    let info = session
        .unpack_layer_blob(
            &blob[..],
            LayerMediaType::TarGzip,
            &Sha256Digest::of(&blob),
            &Sha256Digest::of(&tar),
        )
        .unwrap();
    let layer = store.layer_dir(&info.diff_id);
    assert_eq!(names(&layer), ["etc".to_owned()].into());
    assert_eq!(meta(&layer).uid(), shift().host_base());
    assert_eq!(meta(&layer.join("etc/marker")).uid(), shift().host_base());
    let (layers, tmp, _) = store_contents(&store);
    let hex = info.diff_id.hex();
    assert_eq!(layers, [hex.clone(), format!("{hex}.json")].into());
    assert!(tmp.is_empty());
}

/// Unpacks one blob in a session of its own, which ends (uncommitted) on return.
fn unpack_alone(
    store: &ImageStore,
    blob: &[u8],
    media_type: LayerMediaType,
    blob_digest: &Sha256Digest,
    diff_id: &Sha256Digest,
) -> Result<sandpit_image::LayerInfo, ImageError> {
    store.begin_import().unwrap().unpack_layer_blob(blob, media_type, blob_digest, diff_id)
}

fn assert_nothing_kept(store: &ImageStore) {
    let (layers, tmp, images) = store_contents(store);
    assert!(layers.is_empty(), "layers/ holds {layers:?}");
    assert!(tmp.is_empty(), "tmp/ holds {tmp:?}");
    assert!(images.is_empty(), "images/ holds {images:?}");
}

#[test]
fn wrong_blob_digest_is_a_digest_mismatch_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let tar = small_layer("x");
    let blob = gzip(&tar);
    let wrong = Sha256Digest::of(b"something else");
    let result = unpack_alone(&store, &blob[..], LayerMediaType::TarGzip, &wrong, &Sha256Digest::of(&tar));
    assert!(
        matches!(&result, Err(ImageError::DigestMismatch { what: DigestSubject::LayerBlob, expected, actual })
            if *expected == wrong && *actual == Sha256Digest::of(&blob)),
        "{result:?}"
    );
    assert_nothing_kept(&store);
}

#[test]
fn wrong_diff_id_is_a_digest_mismatch_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let tar = small_layer("x");
    let blob = zstd(&tar);
    let result = unpack_alone(
        &store,
        &blob[..],
        LayerMediaType::TarZstd,
        &Sha256Digest::of(&blob),
        &Sha256Digest::of(b"no"),
    );
    assert!(
        matches!(result, Err(ImageError::DigestMismatch { what: DigestSubject::LayerDiff, .. })),
        "{result:?}"
    );
    assert_nothing_kept(&store);
}

#[test]
fn corrupted_gzip_blob_is_reported_as_a_digest_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let tar = layer_tar(&[RawEntry::file(b"data", &vec![7u8; 200_000])]);
    let blob = gzip(&tar);
    let mut corrupt = blob.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    let result = unpack_alone(
        &store,
        &corrupt[..],
        LayerMediaType::TarGzip,
        &Sha256Digest::of(&blob),
        &Sha256Digest::of(&tar),
    );
    assert!(
        matches!(result, Err(ImageError::DigestMismatch { what: DigestSubject::LayerBlob, .. })),
        "{result:?}"
    );
    assert_nothing_kept(&store);
}

#[test]
fn undecodable_blob_with_matching_digest_is_a_decompress_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let not_gzip = b"definitely not gzip".to_vec();
    let result = unpack_alone(
        &store,
        &not_gzip[..],
        LayerMediaType::TarGzip,
        &Sha256Digest::of(&not_gzip),
        &Sha256Digest::of(b""),
    );
    assert!(
        matches!(result, Err(ImageError::Decompress { compression: LayerMediaType::TarGzip, .. })),
        "{result:?}"
    );
    assert_nothing_kept(&store);
}

#[test]
fn hostile_layer_blob_is_refused_and_leaves_nothing_in_or_next_to_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let tar = layer_tar(&[RawEntry::file(b"ok", b"fine"), RawEntry::file(b"../../escape", b"x")]);
    let blob = gzip(&tar);
    let result = unpack_alone(
        &store,
        &blob[..],
        LayerMediaType::TarGzip,
        &Sha256Digest::of(&blob),
        &Sha256Digest::of(&tar),
    );
    assert!(matches!(result, Err(ImageError::UnsafePath { .. })), "{result:?}");
    assert_nothing_kept(&store);
    assert_eq!(names(dir.path()), ["store".to_owned()].into());
    assert!(!store.root().join("escape").exists());
}

#[test]
fn uncompressed_size_limit_refuses_a_zip_bomb_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        ImageStore::open(dir.path().join("store"), shift()).unwrap().with_max_image_size(ByteSize::mib(1));
    let tar = layer_tar(&[RawEntry::file(b"zeros", &vec![0u8; 4 << 20])]);
    let blob = gzip(&tar);
    assert!(blob.len() < 64 * 1024);
    let result = unpack_alone(
        &store,
        &blob[..],
        LayerMediaType::TarGzip,
        &Sha256Digest::of(&blob),
        &Sha256Digest::of(&tar),
    );
    assert!(matches!(result, Err(ImageError::TooLarge { limit }) if limit == ByteSize::mib(1)), "{result:?}");
    assert_nothing_kept(&store);
}

#[test]
fn committed_image_is_found_by_reference_and_digest_with_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (a, b) = (small_layer("a"), layer_tar(&[RawEntry::file(b"etc/.wh.marker", b"")]));
    let (ga, zb) = (gzip(&a), zstd(&b));
    let record =
        import(&store, &[(&a, &ga, LayerMediaType::TarGzip), (&b, &zb, LayerMediaType::TarZstd)], "app");
    assert_eq!(record.references, [ImageReference::parse("app:latest").unwrap()]);
    assert_eq!(record.config.entrypoint, ["/bin/app"]);
    assert_eq!(record.config.env, ["A=1"]);
    assert_eq!(record.config.exposed_ports, ["80/tcp"]);
    assert_eq!(record.created.map(|c| c.unix_timestamp()), Some(1_714_979_289));
    assert_eq!(record.size, ByteSize((a.len() + b.len()) as u64));
    let by_ref = store.get(&"app:latest".parse().unwrap()).unwrap();
    let by_digest = store.get(&ImageSelector::Digest(record.manifest_digest)).unwrap();
    assert_eq!(by_ref, record);
    assert_eq!(by_digest, record);
    assert_eq!(store.list().unwrap(), std::slice::from_ref(&record));
    let dirs = store.layer_dirs(&record).unwrap();
    assert_eq!(dirs, [store.layer_dir(&Sha256Digest::of(&a)), store.layer_dir(&Sha256Digest::of(&b))]);
    assert!(common::is_whiteout(&dirs[1].join("etc/marker")));
}

#[test]
fn repeated_layers_are_listed_once_at_their_topmost_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (a, b) = (small_layer("a"), small_layer("b"));
    let (ga, gb) = (gzip(&a), gzip(&b));
    let record = import(
        &store,
        &[
            (&a, &ga, LayerMediaType::TarGzip),
            (&b, &gb, LayerMediaType::TarGzip),
            (&a, &ga, LayerMediaType::TarGzip),
        ],
        "dup",
    );
    assert_eq!(record.layers.len(), 3);
    assert_eq!(record.size, ByteSize((a.len() + b.len()) as u64));
    let dirs = store.layer_dirs(&record).unwrap();
    assert_eq!(dirs, [store.layer_dir(&Sha256Digest::of(&b)), store.layer_dir(&Sha256Digest::of(&a))]);
}

#[test]
fn session_dropped_without_commit_removes_only_its_unused_layers() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (a, b) = (small_layer("a"), small_layer("b"));
    let (ga, gb) = (gzip(&a), gzip(&b));
    let kept = import(&store, &[(&a, &ga, LayerMediaType::TarGzip)], "kept");
    let session = store.begin_import().unwrap();
    session
        .unpack_layer_blob(&ga[..], LayerMediaType::TarGzip, &Sha256Digest::of(&ga), &Sha256Digest::of(&a))
        .unwrap();
    session
        .unpack_layer_blob(&gb[..], LayerMediaType::TarGzip, &Sha256Digest::of(&gb), &Sha256Digest::of(&b))
        .unwrap();
    assert!(store.layer(&Sha256Digest::of(&b)).unwrap().is_some());
    drop(session);
    assert!(store.layer(&Sha256Digest::of(&b)).unwrap().is_none());
    assert!(!store.layer_dir(&Sha256Digest::of(&b)).exists());
    assert_eq!(store.layer_dirs(&kept).unwrap().len(), 1);
    assert!(store_contents(&store).1.is_empty());
}

#[test]
fn existing_layers_count_towards_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let tar = layer_tar(&[RawEntry::file(b"f", &vec![1u8; 300_000])]);
    let blob = gzip(&tar);
    {
        let store = store(dir.path());
        import(&store, &[(&tar, &blob, LayerMediaType::TarGzip)], "big");
    }
    let store =
        ImageStore::open(dir.path().join("store"), shift()).unwrap().with_max_image_size(ByteSize(100_000));
    let session = store.begin_import().unwrap();
    let result = session.layer(&Sha256Digest::of(&tar));
    assert!(matches!(result, Err(ImageError::TooLarge { .. })), "{result:?}");
}

#[test]
fn concurrent_imports_of_one_image_unpack_each_layer_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store(dir.path()));
    let a = layer_tar(&[RawEntry::file(b"f", &vec![3u8; 2 << 20]), RawEntry::file(b"g", b"g")]);
    let b = small_layer("b");
    let (ga, zb) = (gzip(&a), zstd(&b));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            let (a, b, ga, zb) = (a.clone(), b.clone(), ga.clone(), zb.clone());
            std::thread::spawn(move || {
                let layers: [(&[u8], &[u8], LayerMediaType); 2] =
                    [(&a, &ga, LayerMediaType::TarGzip), (&b, &zb, LayerMediaType::TarZstd)];
                let plan = plan_for(&layers);
                let session = store.begin_import().unwrap();
                let infos: Vec<_> = layers
                    .iter()
                    .zip(plan.layers())
                    .map(|((_, blob, mt), l)| {
                        session.unpack_layer_blob(*blob, *mt, &l.blob_digest, &l.diff_id).unwrap()
                    })
                    .collect();
                let record = session.commit(&plan, Some(&ImageReference::parse("same").unwrap())).unwrap();
                (infos, record.manifest_digest)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // One unpack per layer: every import got the same layer records (same unpack time).
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    let (layers, tmp, images) = store_contents(&store);
    assert_eq!(layers.len(), 4);
    assert!(tmp.is_empty());
    assert_eq!(images.len(), 1);
    assert_eq!(std::fs::read(store.layer_dir(&Sha256Digest::of(&a)).join("g")).unwrap(), b"g");
}

#[test]
fn store_refuses_to_open_with_another_id_shift() {
    let dir = tempfile::tempdir().unwrap();
    drop(store(dir.path()));
    let other = IdShift::new(300_000, 65_536).unwrap();
    let result = ImageStore::open(dir.path().join("store"), other);
    assert!(
        matches!(result, Err(ImageError::IdShiftMismatch { stored, requested }) if stored == shift() && requested == other)
    );
    assert!(ImageStore::open(dir.path().join("store"), shift()).is_ok());
}

#[test]
fn stale_temp_entries_are_removed_on_open_but_live_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    drop(store(dir.path()));
    let stale = root.join("tmp/stale-from-a-crash");
    std::fs::create_dir_all(stale.join("root/deep/er")).unwrap();
    std::fs::write(stale.join("root/deep/er/f"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc", stale.join("root/etc-link")).unwrap();
    std::fs::write(root.join("tmp/stray-file"), b"x").unwrap();
    let live = root.join("tmp/live");
    std::fs::create_dir(&live).unwrap();
    let held = std::fs::File::open(&live).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let _store = ImageStore::open(&root, shift()).unwrap();
    assert_eq!(names(&root.join("tmp")), ["live".to_owned()].into());
    assert!(Path::new("/etc/passwd").exists());
}

#[test]
fn removing_references_and_images() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let a = small_layer("a");
    let ga = gzip(&a);
    import(&store, &[(&a, &ga, LayerMediaType::TarGzip)], "one:v1");
    let record = import(&store, &[(&a, &ga, LayerMediaType::TarGzip)], "two:v2");
    assert_eq!(record.references.len(), 2);
    store.remove(&"one:v1".parse().unwrap()).unwrap();
    assert!(matches!(store.get(&"one:v1".parse().unwrap()), Err(ImageError::NotFound { .. })));
    assert_eq!(store.get(&"two:v2".parse().unwrap()).unwrap().references.len(), 1);
    store.remove(&"two:v2".parse().unwrap()).unwrap();
    assert!(matches!(
        store.get(&ImageSelector::Digest(record.manifest_digest)),
        Err(ImageError::NotFound { .. })
    ));
    assert!(store.list().unwrap().is_empty());
    // Layers stay until garbage collection.
    assert!(store.layer(&Sha256Digest::of(&a)).unwrap().is_some());
    assert!(matches!(store.remove(&"two:v2".parse().unwrap()), Err(ImageError::NotFound { .. })));

    let again = import(&store, &[(&a, &ga, LayerMediaType::TarGzip)], "three");
    store.remove(&ImageSelector::Digest(again.manifest_digest)).unwrap();
    assert!(matches!(store.get(&"three".parse().unwrap()), Err(ImageError::NotFound { .. })));
}

/// A reader of `data` that stops after `pause_at` bytes until told to go on, and counts what it
/// handed out.
struct PausingReader<'a> {
    data: &'a [u8],
    read: Arc<std::sync::atomic::AtomicUsize>,
    pause_at: usize,
    paused: Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>,
}

impl std::io::Read for PausingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        let at = self.read.load(Ordering::SeqCst);
        if at >= self.pause_at
            && let Some((reached, go_on)) = self.paused.take()
        {
            reached.send(()).unwrap();
            go_on.recv().unwrap();
        }
        let end = if at < self.pause_at { self.pause_at } else { self.data.len() };
        let n = buf.len().min(end - at).min(64 << 10);
        buf[..n].copy_from_slice(&self.data[at..at + n]);
        self.read.fetch_add(n, Ordering::SeqCst);
        Ok(n)
    }
}

#[test]
fn layers_unpacked_at_once_share_the_size_limit_while_they_stream() {
    let dir = tempfile::tempdir().unwrap();
    let a = layer_tar(&[RawEntry::file(b"a", &common::noise(2 << 20, 1))]);
    // Files small enough to pass the check of each header: b is stopped while it streams.
    let b_files: Vec<RawEntry> = (0..4u8)
        .map(|i| RawEntry::file(&[b'b', b'0' + i], &common::noise(512 << 10, u64::from(i) + 2)))
        .collect();
    let b = layer_tar(&b_files);
    let limit = 3 << 20;
    let store =
        ImageStore::open(dir.path().join("store"), shift()).unwrap().with_max_image_size(ByteSize(limit));
    let session = store.begin_import().unwrap();
    let (a_read, b_read) = (Arc::default(), Arc::<std::sync::atomic::AtomicUsize>::default());
    let (reached_tx, reached) = std::sync::mpsc::channel();
    let (go_on, go_on_rx) = std::sync::mpsc::channel();
    let (a_result, b_result) = std::thread::scope(|scope| {
        let a_thread = scope.spawn(|| {
            let reader = PausingReader {
                data: &a,
                read: Arc::clone(&a_read),
                pause_at: 3 << 19,
                paused: Some((reached_tx, go_on_rx)),
            };
            session.unpack_layer_blob(
                reader,
                LayerMediaType::Tar,
                &Sha256Digest::of(&a),
                &Sha256Digest::of(&a),
            )
        });
        // Layer a is in flight with 1.5 MiB read; layer b alone would fit (2 MiB < 3 MiB).
        reached.recv().unwrap();
        let reader =
            PausingReader { data: &b, read: Arc::clone(&b_read), pause_at: usize::MAX, paused: None };
        let b_result = session.unpack_layer_blob(
            reader,
            LayerMediaType::Tar,
            &Sha256Digest::of(&b),
            &Sha256Digest::of(&b),
        );
        go_on.send(()).unwrap();
        (a_thread.join().unwrap(), b_result)
    });
    // b stopped once both together passed the limit, long before its end ...
    assert!(
        matches!(b_result, Err(ImageError::TooLarge { limit: l }) if l == ByteSize(limit)),
        "{b_result:?}"
    );
    let b_read = b_read.load(std::sync::atomic::Ordering::SeqCst);
    assert!(b_read < (3 << 19) + (256 << 10), "b read {b_read} bytes");
    // ... and gave its bytes back: a, which fits alone, completes.
    let info = a_result.unwrap();
    assert_eq!(info.size, ByteSize(a.len() as u64));
    assert!(store.layer(&Sha256Digest::of(&b)).unwrap().is_none());
    drop(session);
    assert_nothing_kept(&store);
}

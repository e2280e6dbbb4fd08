//! Registry pulls against real registries on loopback (`docker-registry` 2.8, pushed to with
//! skopeo): anonymous, basic and bearer-token auth, indexes, caching and single flight (counted
//! by a proxy), errors, progress, and the access check for private cached images.
// A test crate: helpers outside #[test] functions report failures by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{copy_tree, is_whiteout, meta, shift, store_contents};
use sandpit_image::registry::NetworkCause;
use sandpit_image::testkit::registry::{Auth, CountingProxy, Registry, TokenServer, free_port};
use sandpit_image::testkit::{self, BuiltImage, OciLayout, craft, layered};
use sandpit_image::{
    DigestSubject, ImageError, ImageRecord, ImageReference, ImageSelector, ImageSource, ImageStore,
    LayerMediaType, LayerStatus, PullConfig, PullError, PullProgress, Puller, RegistryCredentials,
};
use sandpit_types::ByteSize;

/// Images built once per test process and pushed by each test to its own registry.
struct Fixtures {
    busybox: BuiltImage,
    layered: BuiltImage,
    layered_zstd: OciLayout,
    /// busybox plus one layer: shares busybox's only layer.
    derived: OciLayout,
    /// busybox (`latest`), an arm64 image (`arm64`), an index of both (`multi`) and an index of
    /// the arm64 image alone (`arm-only`).
    multi: OciLayout,
    /// `wide`: four layers of 1 MiB of incompressible bytes each ([`common::build_wide_image`]).
    wide: OciLayout,
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        testkit::require_tools().expect("umoci, skopeo and busybox-static must be installed");
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        common::remove_fixtures_of_finished_runs(tmp, "registry-fixtures-");
        let base = tmp.join(format!("registry-fixtures-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let busybox = testkit::build_busybox_image(&base.join("busybox"), "latest").unwrap();
        let layered = testkit::build_layered_image(&base.join("layered"), "v1").unwrap();
        let layered_zstd = layered.layout.copy_as_zstd("v1", &base.join("layered-zstd")).unwrap();

        copy_tree(&busybox.layout.dir, &base.join("derived"));
        let derived = OciLayout { dir: base.join("derived") };
        let bundle = base.join("derived-bundle");
        derived.unpack("latest", &bundle).unwrap();
        std::fs::write(bundle.join("rootfs/etc/derived"), b"one more layer\n").unwrap();
        derived.repack("latest", &bundle).unwrap();

        copy_tree(&busybox.layout.dir, &base.join("multi"));
        let multi = OciLayout { dir: base.join("multi") };
        multi.new_image("arm64").unwrap();
        let arm_layer = base.join("arm-layer.tar");
        std::fs::write(&arm_layer, craft::layer_tar(&[craft::RawEntry::file(b"arch", b"arm64\n")])).unwrap();
        multi.add_raw_layer("arm64", &arm_layer).unwrap();
        multi.config("arm64", &["--architecture=arm64"]).unwrap();
        multi.add_index("multi", &[("arm64", "arm64"), ("latest", "amd64")]).unwrap();
        multi.add_index("arm-only", &[("arm64", "arm64")]).unwrap();
        let wide = common::build_wide_image(&base.join("wide"), "wide", 4, 1 << 20);
        Fixtures { busybox, layered, layered_zstd, derived, multi, wide }
    })
}

/// A registry holding `images` (`(layout, tag, repo:tag)`), pushed anonymously or as the
/// htpasswd user.
fn registry_with(auth: Auth, images: &[(&OciLayout, &str, &str)]) -> Registry {
    let registry = Registry::start(auth).unwrap();
    for (layout, tag, repo_tag) in images {
        registry.push(layout, tag, repo_tag, None).unwrap();
    }
    registry
}

fn config(insecure: &[&str]) -> PullConfig {
    PullConfig {
        insecure_registries: insecure.iter().map(|s| (*s).to_owned()).collect(),
        max_attempts: 3,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
        max_concurrent_layers: PullConfig::default().max_concurrent_layers,
    }
}

/// A fresh store (in the returned temp dir) and a puller into it.
fn harness(insecure: &[&str]) -> (tempfile::TempDir, Arc<ImageStore>, Puller) {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path());
    let puller = puller(&store, insecure);
    (dir, store, puller)
}

/// Like [`harness`], with up to four layers of a pull streamed at once.
fn concurrent_harness(insecure: &[&str]) -> (tempfile::TempDir, Arc<ImageStore>, Puller) {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path());
    let puller = Puller::new(Arc::clone(&store), PullConfig { max_concurrent_layers: 4, ..config(insecure) });
    (dir, store, puller)
}

fn new_store(dir: &Path) -> Arc<ImageStore> {
    Arc::new(common::store(dir))
}

fn small_store(dir: &Path, limit: ByteSize) -> Arc<ImageStore> {
    Arc::new(ImageStore::open(dir.join("store"), shift()).unwrap().with_max_image_size(limit))
}

fn puller(store: &Arc<ImageStore>, insecure: &[&str]) -> Puller {
    Puller::new(Arc::clone(store), config(insecure))
}

fn quiet(_: PullProgress) {}

fn creds(user: &str, password: &str) -> Option<RegistryCredentials> {
    Some(RegistryCredentials::new(user, password))
}

fn reference(s: &str) -> ImageReference {
    ImageReference::parse(s).unwrap()
}

/// The manifest of `tag` in a layout, and the digests of its config and layers.
fn blob_digests(layout: &OciLayout, tag: &str) -> Vec<String> {
    let manifest = layout.manifest(tag).unwrap();
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in manifest["layers"].as_array().unwrap() {
        digests.push(layer["digest"].as_str().unwrap().to_owned());
    }
    digests
}

/// Neither the message, the debug form nor any source of `error` contains `secret`.
fn assert_secret_absent(error: &PullError, secret: &str) {
    let mut texts = vec![error.to_string(), format!("{error:?}")];
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        texts.push(e.to_string());
        source = e.source();
    }
    for text in texts {
        assert!(!text.contains(secret), "the secret leaked into {text:?}");
    }
}

/// Nothing of a failed pull in the store: no image, no layer, no temp entry.
fn assert_store_empty(store: &ImageStore) {
    let (layers, tmp, images) = store_contents(store);
    assert!(layers.is_empty(), "layers left: {layers:?}");
    assert!(tmp.is_empty(), "temp entries left: {tmp:?}");
    assert!(images.is_empty(), "images left: {images:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_pull_of_a_layered_image_keeps_layers_config_and_the_reference_as_written() {
    let f = fixtures();
    let registry = registry_with(Auth::None, &[(&f.layered.layout, "v1", "sandpit/layered:v1")]);
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path());
    let written = format!("{}/sandpit/layered:v1", registry.addr());

    let record = puller(&store, &[registry.addr()]).pull(&written, None, quiet).await.unwrap();
    assert_eq!(record.references, [reference(&written)]);
    assert_eq!(
        record.source,
        ImageSource::Registry {
            registry: registry.addr().to_owned(),
            repository: "sandpit/layered".to_owned(),
            anonymous: true
        }
    );
    assert_eq!(record.layers.len(), 3);
    assert!(record.layers.iter().all(|l| l.media_type == LayerMediaType::TarGzip));
    let c = &record.config;
    assert_eq!(c.entrypoint, ["/bin/sh"]);
    assert_eq!(c.cmd, ["-c", "echo hello"]);
    assert_eq!(c.env, ["PATH=/bin", "GREETING=hello"]);
    assert_eq!((c.os.as_str(), c.architecture.as_str()), ("linux", "amd64"));

    let dirs = store.layer_dirs(&record).unwrap();
    let user_file = meta(&dirs[0].join(layered::USER_FILE));
    assert_eq!((user_file.uid(), user_file.gid()), (101_000, 101_000));
    assert_eq!(meta(&dirs[0].join(layered::SETUID_FILE)).mode() & 0o7777, 0o4755);
    assert!(is_whiteout(&dirs[1].join(layered::DELETED_FILE)));
    assert!(is_whiteout(&dirs[1].join(layered::DELETED_DIR)));
    assert_eq!(store.get(&ImageSelector::Reference(reference(&written))).unwrap(), record);

    // The same image imported from its layout is the same manifest with the same layers.
    let local =
        store.import_oci_layout(&f.layered.layout.dir, Some("v1"), &reference("sandpit/layered:v1")).unwrap();
    assert_eq!(local.manifest_digest, record.manifest_digest);
    assert_eq!(store.get(&ImageSelector::Digest(record.manifest_digest)).unwrap().source, ImageSource::Local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_and_gzip_images_pull_to_the_same_layers() {
    let f = fixtures();
    let registry = registry_with(
        Auth::None,
        &[(&f.layered.layout, "v1", "img/gzip:1"), (&f.layered_zstd, "v1", "img/zstd:1")],
    );
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (gzip_store, zstd_store) = (new_store(a.path()), new_store(b.path()));
    let insecure = [registry.addr()];

    let (gzip_puller, zstd_puller) = (puller(&gzip_store, &insecure), puller(&zstd_store, &insecure));
    let (gzip_ref, zstd_ref) =
        (format!("{}/img/gzip:1", registry.addr()), format!("{}/img/zstd:1", registry.addr()));
    let (gz, zs) =
        tokio::join!(gzip_puller.pull(&gzip_ref, None, quiet), zstd_puller.pull(&zstd_ref, None, quiet));
    let (gz, zs) = (gz.unwrap(), zs.unwrap());
    assert!(zs.layers.iter().all(|l| l.media_type == LayerMediaType::TarZstd));
    let diff_ids = |r: &ImageRecord| r.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>();
    assert_eq!(diff_ids(&gz), diff_ids(&zs));
    assert_ne!(gz.layers[0].blob_digest, zs.layers[0].blob_digest);
    let opaque = zstd_store.layer_dirs(&zs).unwrap()[2].join(layered::OPAQUE_DIR);
    assert_eq!(common::xattr(&opaque, "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_resolves_to_the_amd64_image_and_one_without_it_is_unsupported() {
    let f = fixtures();
    let registry = registry_with(
        Auth::None,
        &[(&f.multi, "multi", "multi/busybox:1"), (&f.multi, "arm-only", "multi/arm:1")],
    );
    let (_dir, store, puller) = harness(&[registry.addr()]);

    let record = puller.pull(&format!("{}/multi/busybox:1", registry.addr()), None, quiet).await.unwrap();
    assert_eq!(record.config.architecture, "amd64");
    let amd64_manifest = f.multi.manifest("latest").unwrap();
    assert_eq!(
        record.layers[0].blob_digest.to_string(),
        amd64_manifest["layers"][0]["digest"].as_str().unwrap()
    );

    let err = puller.pull(&format!("{}/multi/arm:1", registry.addr()), None, quiet).await.unwrap_err();
    assert_eq!(err.reason(), "image_unsupported", "{err}");
    assert!(
        matches!(&err, PullError::Unsupported(e) if matches!(**e, ImageError::NoMatchingPlatform { .. }))
    );
    assert!(
        store.get(&ImageSelector::Reference(reference(&format!("{}/multi/arm:1", registry.addr())))).is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pull_fetches_no_blob_and_a_cached_lookup_makes_no_request() {
    let f = fixtures();
    let registry = registry_with(Auth::None, &[(&f.layered.layout, "v1", "cache/layered:v1")]);
    let proxy = CountingProxy::start(registry.addr()).unwrap();
    let (_dir, _store, puller) = harness(&[proxy.addr()]);
    let written = format!("{}/cache/layered:v1", proxy.addr());

    let first = puller.pull(&written, None, quiet).await.unwrap();
    for digest in blob_digests(&f.layered.layout, "v1") {
        assert_eq!(proxy.blob_gets_of(&digest), 1, "{digest}: {:?}", proxy.requests());
    }
    proxy.reset();
    let second = puller.pull(&written, None, quiet).await.unwrap();
    assert_eq!(second.manifest_digest, first.manifest_digest);
    assert_eq!(proxy.blob_gets(), 0, "{:?}", proxy.requests());
    assert_eq!(proxy.manifest_requests(), 1);

    proxy.reset();
    let cached = puller.get_or_pull(&written, None, quiet).await.unwrap();
    assert_eq!(cached.manifest_digest, first.manifest_digest);
    assert_eq!((proxy.requests(), proxy.connections()), (vec![], 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_fetch_each_blob_once() {
    let f = fixtures();
    let registry = registry_with(Auth::None, &[(&f.layered.layout, "v1", "flight/layered:v1")]);
    let proxy = CountingProxy::start(registry.addr()).unwrap();
    let (_dir, _store, puller) = harness(&[proxy.addr()]);
    let written = format!("{}/flight/layered:v1", proxy.addr());

    let (a, b) = tokio::join!(puller.pull(&written, None, quiet), puller.pull(&written, None, quiet));
    assert_eq!(a.unwrap(), b.unwrap());
    for digest in blob_digests(&f.layered.layout, "v1") {
        assert_eq!(proxy.blob_gets_of(&digest), 1, "{digest}: {:?}", proxy.requests());
    }
    assert_eq!(proxy.manifest_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_images_sharing_a_layer_fetch_it_once() {
    let f = fixtures();
    let registry = registry_with(
        Auth::None,
        &[(&f.busybox.layout, "latest", "share/busybox:1"), (&f.derived, "latest", "share/derived:1")],
    );
    let proxy = CountingProxy::start(registry.addr()).unwrap();
    let (_dir, _store, puller) = harness(&[proxy.addr()]);
    let shared = blob_digests(&f.busybox.layout, "latest")[1].clone();
    assert_eq!(blob_digests(&f.derived, "latest")[1], shared);

    let (busybox_ref, derived_ref) =
        (format!("{}/share/busybox:1", proxy.addr()), format!("{}/share/derived:1", proxy.addr()));
    let (a, b) = tokio::join!(puller.pull(&busybox_ref, None, quiet), puller.pull(&derived_ref, None, quiet));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.layers[0].diff_id, b.layers[0].diff_id);
    assert_eq!(b.layers.len(), 2);
    assert_eq!(proxy.blob_gets_of(&shared), 1, "{:?}", proxy.requests());
}

// The default single-threaded runtime, as most callers' tests use: the blocking import drives
// its network reads through the runtime the caller awaits on.
#[tokio::test]
async fn basic_auth_pull_works_and_the_image_is_private() {
    let f = fixtures();
    let registry = registry_with(
        Auth::htpasswd("alice", "s3cret-basic"),
        &[(&f.busybox.layout, "latest", "private/busybox:1")],
    );
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path());
    let written = format!("{}/private/busybox:1", registry.addr());

    let record = puller(&store, &[registry.addr()])
        .pull(&written, creds("alice", "s3cret-basic"), quiet)
        .await
        .unwrap();
    assert!(matches!(record.source, ImageSource::Registry { anonymous: false, .. }));
    assert!(!record.source.is_public());
    assert!(store.layer_dirs(&record).unwrap()[0].join("bin/busybox").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_auth_failed_and_no_error_text_contains_it() {
    let f = fixtures();
    let registry = registry_with(
        Auth::htpasswd("alice", "s3cret-basic"),
        &[(&f.busybox.layout, "latest", "private/busybox:1")],
    );
    let (_dir, store, puller) = harness(&[registry.addr()]);
    let written = format!("{}/private/busybox:1", registry.addr());
    let wrong = "wr0ng-PASSWORD-value";

    let err = puller.pull(&written, creds("alice", wrong), quiet).await.unwrap_err();
    assert!(matches!(err, PullError::AuthFailed { .. }), "{err:?}");
    assert_eq!(err.reason(), "registry_auth_failed");
    assert_secret_absent(&err, wrong);
    let anonymous = puller.pull(&written, None, quiet).await.unwrap_err();
    assert!(matches!(anonymous, PullError::AuthFailed { .. }), "{anonymous:?}");
    let check = puller.check_access(&written, creds("alice", wrong).as_ref()).await.unwrap_err();
    assert!(matches!(check, PullError::AuthFailed { .. }), "{check:?}");
    assert_secret_absent(&check, wrong);
    assert_store_empty(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_repository_or_tag_is_not_found() {
    let f = fixtures();
    let registry = registry_with(Auth::None, &[(&f.busybox.layout, "latest", "there/busybox:1")]);
    let (_dir, store, puller) = harness(&[registry.addr()]);

    for missing in ["there/busybox:2", "nowhere/busybox:1"] {
        let written = format!("{}/{missing}", registry.addr());
        let err = puller.pull(&written, None, quiet).await.unwrap_err();
        assert!(matches!(err, PullError::NotFound { .. }), "{missing}: {err:?}");
        assert_eq!(err.reason(), "image_not_found");
        let check = puller.check_access(&written, None).await.unwrap_err();
        assert!(matches!(check, PullError::NotFound { .. }), "{missing}: {check:?}");
    }
    assert_store_empty(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_but_401_and_404_are_not() {
    let f = fixtures();
    let registry = registry_with(
        Auth::htpasswd("alice", "s3cret-basic"),
        &[(&f.busybox.layout, "latest", "retry/busybox:1")],
    );
    let proxy = CountingProxy::start(registry.addr()).unwrap();
    let (_dir, _store, puller) = harness(&[proxy.addr()]);
    let written = format!("{}/retry/busybox:1", proxy.addr());

    proxy.fail_next(2, 503);
    puller.pull(&written, creds("alice", "s3cret-basic"), quiet).await.unwrap();
    let paths: Vec<String> = proxy.requests().into_iter().take(3).map(|r| r.path).collect();
    assert_eq!(paths, ["/v2/", "/v2/", "/v2/"], "two 503s, then success");

    proxy.reset();
    let err = puller.pull(&written, creds("alice", "wrong"), quiet).await.unwrap_err();
    assert!(matches!(err, PullError::AuthFailed { .. }), "{err:?}");
    assert_eq!(proxy.manifest_requests(), 1, "{:?}", proxy.requests());

    proxy.reset();
    let missing = format!("{}/retry/busybox:404", proxy.addr());
    let err = puller.pull(&missing, creds("alice", "s3cret-basic"), quiet).await.unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err:?}");
    assert_eq!(proxy.manifest_requests(), 1, "{:?}", proxy.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_fails_after_the_configured_attempts() {
    let mut registry = Registry::start(Auth::None).unwrap();
    let proxy = CountingProxy::start(registry.addr()).unwrap();
    registry.stop();
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path());
    let closed = format!("127.0.0.1:{}", free_port().unwrap());
    let puller = puller(&store, &[proxy.addr(), &closed]);

    let started = Instant::now();
    let err = puller.pull(&format!("{}/gone/busybox:1", proxy.addr()), None, quiet).await.unwrap_err();
    assert!(
        matches!(err, PullError::Unreachable { attempts: 3, cause: NetworkCause::ConnectionLost, .. }),
        "{err:?}"
    );
    assert_eq!(err.reason(), "registry_unreachable");
    assert_eq!(proxy.connections(), 3, "one connection per attempt");
    // Backoff 20 ms, then 40 ms.
    assert!(started.elapsed() >= Duration::from_millis(60));

    let err = puller.pull(&format!("{closed}/gone/busybox:1"), None, quiet).await.unwrap_err();
    assert!(
        matches!(err, PullError::Unreachable { attempts: 3, cause: NetworkCause::Connect, .. }),
        "{err:?}"
    );
    assert_store_empty(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_registry_not_listed_as_insecure_is_refused_with_a_hint() {
    let f = fixtures();
    let registry = registry_with(Auth::None, &[(&f.busybox.layout, "latest", "tls/busybox:1")]);
    let proxy = CountingProxy::start(registry.addr()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path());

    // The registry never answers the TLS client hello: the handshake times out.
    let config = PullConfig { connect_timeout: Duration::from_millis(500), ..config(&[]) };
    let puller = Puller::new(Arc::clone(&store), config);

    let err = puller.pull(&format!("{}/tls/busybox:1", proxy.addr()), None, quiet).await.unwrap_err();
    assert!(matches!(err, PullError::TlsFailed { .. }), "{err:?}");
    assert_eq!(err.reason(), "registry_tls_failed");
    assert!(err.to_string().contains("insecure_registries"), "{err}");
    assert_eq!(proxy.connections(), 2, "one TLS attempt, one plain-HTTP probe, no retries");
    let gets: Vec<_> = proxy.requests().into_iter().filter(|r| r.method == "GET").collect();
    assert_eq!(gets.len(), 1, "only the probe is plain HTTP: {gets:?}");
    assert_store_empty(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_over_the_size_limit_is_too_large_and_leaves_nothing() {
    let f = fixtures();
    let registry = registry_with(Auth::None, &[(&f.layered.layout, "v1", "big/layered:v1")]);
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path(), ByteSize(512 << 10));

    let err = puller(&store, &[registry.addr()])
        .pull(&format!("{}/big/layered:v1", registry.addr()), None, quiet)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::TooLarge { limit } if limit == ByteSize(512 << 10)), "{err:?}");
    assert_eq!(err.reason(), "image_too_large");
    assert_store_empty(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_in_the_registry_is_a_digest_mismatch_and_commits_nothing() {
    let f = fixtures();
    let registry = registry_with(Auth::None, &[(&f.busybox.layout, "latest", "bad/busybox:1")]);
    let layer = blob_digests(&f.busybox.layout, "latest")[1].clone();
    let data = registry.blob_data_path(layer.strip_prefix("sha256:").unwrap());
    let len = std::fs::metadata(&data).unwrap().len();
    let garbage: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
    std::fs::write(&data, garbage).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path());

    let err = puller(&store, &[registry.addr()])
        .pull(&format!("{}/bad/busybox:1", registry.addr()), None, quiet)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PullError::Image(e) if matches!(**e, ImageError::DigestMismatch { what: DigestSubject::LayerBlob, .. })),
        "{err:?}"
    );
    assert_eq!(err.reason(), "image_digest_mismatch");
    assert_store_empty(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_pull_works_with_good_credentials_and_refuses_bad_ones() {
    let f = fixtures();
    let tokens = TokenServer::start(&[("bob", "t0ken-pass")], &["public/busybox"]).unwrap();
    let registry = Registry::start(Auth::Token(tokens.auth())).unwrap();
    registry.push(&f.busybox.layout, "latest", "private/busybox:1", Some(("bob", "t0ken-pass"))).unwrap();
    registry.push(&f.busybox.layout, "latest", "public/busybox:1", Some(("bob", "t0ken-pass"))).unwrap();
    let (_dir, store, puller) = harness(&[registry.addr()]);
    let private = format!("{}/private/busybox:1", registry.addr());

    let wrong = "not-the-t0ken-pass";
    let err = puller.pull(&private, creds("bob", wrong), quiet).await.unwrap_err();
    assert!(matches!(err, PullError::AuthFailed { .. }), "{err:?}");
    assert_secret_absent(&err, wrong);
    assert!(tokens.refused() >= 1);
    let err = puller.pull(&private, None, quiet).await.unwrap_err();
    assert!(matches!(err, PullError::AuthFailed { .. }), "{err:?}");
    assert_store_empty(&store);

    let record = puller.pull(&private, creds("bob", "t0ken-pass"), quiet).await.unwrap();
    assert!(matches!(record.source, ImageSource::Registry { anonymous: false, .. }));
    let public = puller.pull(&format!("{}/public/busybox:1", registry.addr()), None, quiet).await.unwrap();
    assert!(public.source.is_public());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_cached_image_needs_credentials_the_registry_accepts() {
    let f = fixtures();
    let tokens = TokenServer::start(&[("bob", "t0ken-pass")], &["public/busybox"]).unwrap();
    let registry = Registry::start(Auth::Token(tokens.auth())).unwrap();
    registry.push(&f.busybox.layout, "latest", "private/busybox:1", Some(("bob", "t0ken-pass"))).unwrap();
    registry.push(&f.busybox.layout, "latest", "public/busybox:1", Some(("bob", "t0ken-pass"))).unwrap();
    let proxy = CountingProxy::start(registry.addr()).unwrap();
    let (_dir, store, puller) = harness(&[proxy.addr()]);
    let private = format!("{}/private/busybox:1", proxy.addr());
    let public = format!("{}/public/busybox:1", proxy.addr());

    let record = puller.pull(&private, creds("bob", "t0ken-pass"), quiet).await.unwrap();
    proxy.reset();
    // Another caller names the cached private image.
    let err = puller.get_or_pull(&private, None, quiet).await.unwrap_err();
    assert!(matches!(err, PullError::AuthFailed { .. }), "{err:?}");
    let err = puller.authorize(&record, creds("bob", "guess").as_ref()).await.unwrap_err();
    assert!(matches!(err, PullError::AuthFailed { .. }), "{err:?}");
    puller.authorize(&record, creds("bob", "t0ken-pass").as_ref()).await.unwrap();
    let again = puller.get_or_pull(&private, creds("bob", "t0ken-pass"), quiet).await.unwrap();
    assert_eq!(again.manifest_digest, record.manifest_digest);
    assert_eq!(proxy.blob_gets(), 0, "access checks transferred blobs: {:?}", proxy.requests());
    assert!(proxy.manifest_requests() >= 1);

    puller.check_access(&public, None).await.unwrap();
    let err = puller.check_access(&private, None).await.unwrap_err();
    assert!(matches!(err, PullError::AuthFailed { .. }), "{err:?}");

    // An anonymous pull of the same content makes it public: no check any more.
    puller.pull(&public, None, quiet).await.unwrap();
    let now_public = store.get(&ImageSelector::Digest(record.manifest_digest)).unwrap();
    assert!(now_public.source.is_public());
    proxy.reset();
    puller.get_or_pull(&private, None, quiet).await.unwrap();
    assert_eq!(proxy.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_growing_bytes_up_to_each_layer_total() {
    let f = fixtures();
    let registry = registry_with(Auth::None, &[(&f.layered.layout, "v1", "progress/layered:v1")]);
    let (_dir, _store, puller) = harness(&[registry.addr()]);
    let written = format!("{}/progress/layered:v1", registry.addr());
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let events = Arc::clone(&events);
        move |p: PullProgress| events.lock().unwrap().push(p)
    };

    let record = puller.pull(&written, None, sink.clone()).await.unwrap();
    let manifest = f.layered.layout.manifest("v1").unwrap();
    let seen = std::mem::take(&mut *events.lock().unwrap());
    let mut many_updates = false;
    for (layer, descriptor) in record.layers.iter().zip(manifest["layers"].as_array().unwrap()) {
        let total = descriptor["size"].as_u64().unwrap();
        let mine: Vec<&PullProgress> = seen.iter().filter(|p| p.layer == layer.blob_digest).collect();
        assert!(mine.len() >= 2, "{mine:?}");
        assert!(mine.windows(2).all(|w| w[0].done <= w[1].done), "bytes went down: {mine:?}");
        assert!(mine.iter().all(|p| p.total == ByteSize(total)));
        let (last, before) = mine.split_last().unwrap();
        assert_eq!((last.status, last.done), (LayerStatus::Done, ByteSize(total)));
        assert!(before.iter().all(|p| p.status == LayerStatus::Downloading));
        many_updates |= before.len() >= 3;
    }
    assert!(many_updates, "a layer of a megabyte or more should report several times: {seen:?}");

    puller.pull(&written, None, sink).await.unwrap();
    let again = events.lock().unwrap();
    assert_eq!(again.len(), record.layers.len());
    assert!(again.iter().all(|p| p.status == LayerStatus::Cached && p.done == p.total));
}

/// The progress events seen so far, shared with a progress callback.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<PullProgress>>>);

impl Events {
    fn sink(&self) -> impl Fn(PullProgress) + Send + Sync + 'static {
        let events = Arc::clone(&self.0);
        move |p| events.lock().unwrap().push(p)
    }

    fn all(&self) -> Vec<PullProgress> {
        self.0.lock().unwrap().clone()
    }

    /// Whether `layer` (a blob digest as written) reported `Done`.
    fn done(&self, layer: &str) -> bool {
        self.all().iter().any(|p| p.layer.to_string() == layer && p.status == LayerStatus::Done)
    }
}

/// Waits until `condition` holds (at most 30 s).
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_of_one_pull_download_at_once_and_a_slow_one_holds_back_no_other() {
    let f = fixtures();
    let registry = registry_with(Auth::None, &[(&f.wide, "wide", "wide/image:1")]);
    let proxy = CountingProxy::start(registry.addr()).unwrap();
    let (_dir, store, puller) = concurrent_harness(&[proxy.addr()]);
    let layers = blob_digests(&f.wide, "wide").split_off(1);
    assert_eq!(layers.len(), 4);
    // The lowest layer's blob does not come until the others are in the store.
    proxy.hold(&layers[0]);
    let events = Events::default();
    let pull = {
        let (puller, sink) = (puller.clone(), events.sink());
        let written = format!("{}/wide/image:1", proxy.addr());
        tokio::spawn(async move { puller.pull(&written, None, sink).await })
    };
    until("the other layers are done", || layers[1..].iter().all(|l| events.done(l))).await;
    assert_eq!(proxy.blob_gets_of(&layers[0]), 1, "the held blob was asked for: {:?}", proxy.requests());
    assert!(!events.done(&layers[0]));
    proxy.release();
    let record = pull.await.unwrap().unwrap();

    // Committed in plan order, every layer in place, each reported from its first bytes to Done.
    let manifest = f.wide.manifest("wide").unwrap();
    let seen = events.all();
    for (i, (layer, descriptor)) in
        record.layers.iter().zip(manifest["layers"].as_array().unwrap()).enumerate()
    {
        assert_eq!(layer.blob_digest.to_string(), layers[i]);
        let total = ByteSize(descriptor["size"].as_u64().unwrap());
        let mine: Vec<&PullProgress> = seen.iter().filter(|p| p.layer == layer.blob_digest).collect();
        let (last, before) = mine.split_last().unwrap();
        assert_eq!((last.status, last.done, last.total), (LayerStatus::Done, total, total));
        assert!(!before.is_empty() && before.iter().all(|p| p.status == LayerStatus::Downloading));
        assert!(before.windows(2).all(|w| w[0].done <= w[1].done), "{mine:?}");
        let file = store.layer_dirs(&record).unwrap()[i].join(format!("data/{i}.bin"));
        assert_eq!(std::fs::read(&file).unwrap(), common::noise(1 << 20, i as u64));
    }
    for layer in &layers {
        assert_eq!(proxy.blob_gets_of(layer), 1, "{layer}: {:?}", proxy.requests());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_layer_fails_the_pull_and_takes_back_the_layers_unpacked_beside_it() {
    let f = fixtures();
    let registry = registry_with(Auth::None, &[(&f.wide, "wide", "wide/bad:1")]);
    let layers = blob_digests(&f.wide, "wide").split_off(1);
    let data = registry.blob_data_path(layers[0].strip_prefix("sha256:").unwrap());
    let mut corrupted = std::fs::read(&data).unwrap();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0xff;
    std::fs::write(&data, corrupted).unwrap();
    let proxy = CountingProxy::start(registry.addr()).unwrap();
    let (_dir, store, puller) = concurrent_harness(&[proxy.addr()]);
    proxy.hold(&layers[0]);
    let events = Events::default();
    let pull = {
        let (puller, sink) = (puller.clone(), events.sink());
        let written = format!("{}/wide/bad:1", proxy.addr());
        tokio::spawn(async move { puller.pull(&written, None, sink).await })
    };
    // The three good layers are unpacked into the store while the corrupted one waits.
    until("the good layers are done", || layers[1..].iter().all(|l| events.done(l))).await;
    assert_eq!(store_contents(&store).0.len(), 6, "three layer dirs and their records");
    proxy.release();
    let err = pull.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, PullError::Image(e) if matches!(**e, ImageError::DigestMismatch { what: DigestSubject::LayerBlob, .. })),
        "{err:?}"
    );
    assert!(!events.done(&layers[0]));
    assert_store_empty(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_that_fit_alone_but_not_together_are_too_large_and_leave_nothing() {
    let f = fixtures();
    let registry = registry_with(Auth::None, &[(&f.wide, "wide", "wide/big:1")]);
    let written = format!("{}/wide/big:1", registry.addr());
    let total = {
        let dir = tempfile::tempdir().unwrap();
        let probe = new_store(dir.path());
        probe.import_oci_layout(&f.wide.dir, None, &reference("probe")).unwrap().size
    };
    // Each layer is about a quarter of the total.
    for limit in [ByteSize(total.bytes() / 2), ByteSize(total.bytes() - 1)] {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path(), limit);
        let err = puller(&store, &[registry.addr()]).pull(&written, None, quiet).await.unwrap_err();
        assert!(matches!(err, PullError::TooLarge { limit: l } if l == limit), "{limit:?}: {err:?}");
        assert_store_empty(&store);
    }
    // The exact size fits.
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path(), total);
    let record = puller(&store, &[registry.addr()]).pull(&written, None, quiet).await.unwrap();
    assert_eq!(record.size, total);
}

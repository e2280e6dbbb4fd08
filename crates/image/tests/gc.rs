//! Layer cache garbage collection with crafted images: LRU eviction to a target, pinned and
//! in-use images, shared and unreferenced layers, restarts, and running imports.
// A test crate: helpers outside #[test] functions report failures by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{import, plan_for, small_layer, store};
use sandpit_image::{ImageError, ImageRecord, ImageReference, ImageSelector, ImageStore, LayerMediaType};
use sandpit_types::ByteSize;

fn reference(s: &str) -> ImageReference {
    ImageReference::parse(s).unwrap()
}

fn selector(s: &str) -> ImageSelector {
    ImageSelector::Reference(reference(s))
}

/// An image of uncompressed layers, one per marker.
fn image(store: &ImageStore, markers: &[&str], name: &str) -> ImageRecord {
    let tars: Vec<Vec<u8>> = markers.iter().map(|m| small_layer(m)).collect();
    let layers: Vec<(&[u8], &[u8], LayerMediaType)> =
        tars.iter().map(|t| (&t[..], &t[..], LayerMediaType::Tar)).collect();
    import(store, &layers, name)
}

fn nothing() -> HashSet<sandpit_image::Sha256Digest> {
    HashSet::new()
}

fn no_pins() -> HashSet<ImageReference> {
    HashSet::new()
}

fn has_layer(store: &ImageStore, record: &ImageRecord, index: usize) -> bool {
    store.layer(&record.layers[index].diff_id).unwrap().is_some()
}

#[test]
fn gc_evicts_least_recently_used_images_until_the_target_is_met() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let a = image(&store, &["a"], "x/a");
    let b = image(&store, &["b"], "x/b");
    let c = image(&store, &["c"], "x/c");
    store.touch(&selector("x/a")).unwrap();
    let total = store.total_size().unwrap();
    assert_eq!(total.bytes(), a.size.bytes() + b.size.bytes() + c.size.bytes());

    // Room for two of the three: the least recently used (b, older than c; a was touched) goes.
    let target = ByteSize(total.bytes() - b.size.bytes());
    let report = store.gc(&nothing(), &no_pins(), target).unwrap();
    assert_eq!(report.removed_images, [b.manifest_digest]);
    assert_eq!(report.removed_references, [reference("x/b")]);
    assert_eq!(report.removed_layers, [b.layers[0].diff_id]);
    assert_eq!(report.freed(), b.size);
    assert!(store.total_size().unwrap() <= target);
    assert!(matches!(store.get(&selector("x/b")), Err(ImageError::NotFound { .. })));
    assert!(!store.layer_dir(&b.layers[0].diff_id).exists());
    assert!(store.get(&selector("x/a")).is_ok() && store.get(&selector("x/c")).is_ok());

    // Already under the target: a second run removes nothing.
    assert_eq!(store.gc(&nothing(), &no_pins(), target).unwrap().removed_images, []);
    // A tighter target takes c next (a was used last).
    let report = store.gc(&nothing(), &no_pins(), a.size).unwrap();
    assert_eq!(report.removed_images, [c.manifest_digest]);
    assert!(has_layer(&store, &a, 0));
}

#[test]
fn gc_keeps_pinned_and_in_use_images_and_layers_shared_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let pinned = image(&store, &["base", "pinned"], "x/default");
    let in_use = image(&store, &["used"], "x/running");
    let other = image(&store, &["base", "other"], "x/other");
    assert_eq!(pinned.layers[0].diff_id, other.layers[0].diff_id);
    let counts = store.layer_refcounts().unwrap();
    assert_eq!(counts[&pinned.layers[0].diff_id], 2);

    let report = store
        .prune(&HashSet::from([in_use.manifest_digest]), &HashSet::from([reference("x/default")]))
        .unwrap();
    assert_eq!(report.removed_images, [other.manifest_digest]);
    assert_eq!(report.removed_layers, [other.layers[1].diff_id]);
    assert!(has_layer(&store, &pinned, 0), "a layer shared with a pinned image was removed");
    assert!(has_layer(&store, &pinned, 1) && has_layer(&store, &in_use, 0));
    assert!(!has_layer(&store, &other, 1));
    assert_eq!(store.layer_refcounts().unwrap()[&pinned.layers[0].diff_id], 1);
    // The target cannot be met without touching kept images: they stay anyway.
    assert_eq!(store.total_size().unwrap(), ByteSize(pinned.size.bytes() + in_use.size.bytes()));
}

#[test]
fn gc_removes_layers_no_image_references_even_under_target() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let kept = image(&store, &["kept"], "x/kept");
    let dropped = image(&store, &["dropped", "kept"], "x/dropped");
    store.remove(&selector("x/dropped")).unwrap();
    assert!(!store.layer_refcounts().unwrap().contains_key(&dropped.layers[0].diff_id));

    let report = store.gc(&nothing(), &no_pins(), ByteSize::gib(1)).unwrap();
    assert_eq!(report.removed_images, []);
    assert_eq!(report.removed_layers, [dropped.layers[0].diff_id]);
    assert!(has_layer(&store, &kept, 0));
    assert_eq!(store.total_size().unwrap(), kept.size);
}

#[test]
fn gc_state_survives_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let store = store(dir.path());
        let a = image(&store, &["a"], "x/a");
        let b = image(&store, &["b"], "x/b");
        store.touch(&selector("x/a")).unwrap();
        (a, b)
    };
    let store = store(dir.path());
    let record = store.get(&selector("x/a")).unwrap();
    assert!(record.last_used.is_some_and(|used| used >= record.imported_at));
    let report = store.gc(&nothing(), &no_pins(), a.size).unwrap();
    assert_eq!(report.removed_images, [b.manifest_digest]);
    assert!(store.get(&selector("x/a")).is_ok());
}

#[test]
fn gc_waits_for_a_running_import_and_keeps_what_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store(dir.path()));
    let tar = small_layer("late");
    let plan = plan_for(&[(&tar, &tar, LayerMediaType::Tar)]);
    let session = store.begin_import().unwrap();
    let layer = &plan.layers()[0];
    session.unpack_layer_blob(&tar[..], layer.media_type, &layer.blob_digest, &layer.diff_id).unwrap();

    let gc = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            store.prune(&HashSet::new(), &HashSet::from([reference("x/late")])).unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(!gc.is_finished(), "gc ran while an import held the store");
    session.commit(&plan, Some(&reference("x/late"))).unwrap();
    let report = gc.join().unwrap();
    // Had gc run before the commit, the layer would have looked unreferenced.
    assert_eq!(report.removed_layers, []);
    assert!(store.layer(&layer.diff_id).unwrap().is_some());
}

#[test]
fn touching_an_unknown_image_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    assert!(matches!(store.touch(&selector("x/none")), Err(ImageError::NotFound { .. })));
}

//! Building an image from a host directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;

use sandpit_image::{IdShift, ImageReference, ImageSelector, ImageStore, RunConfig, import_directory};

#[test]
fn a_directory_becomes_a_one_layer_image_with_its_run_config() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::write(rootfs.join("bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
    std::os::unix::fs::symlink("tool", rootfs.join("bin/alias")).unwrap();
    let store = ImageStore::open(tmp.path().join("store"), IdShift::new(1_000_000, 65536).unwrap()).unwrap();
    let run = RunConfig {
        env: vec!["PATH=/bin".into()],
        cmd: vec!["/bin/tool".into()],
        working_dir: Some("/bin".into()),
        ..Default::default()
    };
    let reference = ImageReference::parse("local/built:1").unwrap();
    let rec = import_directory(&store, &rootfs, &run, &reference).unwrap();
    assert_eq!(rec.layers.len(), 1);
    assert_eq!(rec.config.cmd, ["/bin/tool"]);
    assert_eq!(rec.config.working_dir.as_deref(), Some("/bin"));
    let got = store.get(&"local/built:1".parse::<ImageSelector>().unwrap()).unwrap();
    assert_eq!(got.manifest_digest, rec.manifest_digest);
    let dir = &store.layer_dirs(&rec).unwrap()[0];
    assert_eq!(std::fs::read_to_string(dir.join("bin/tool")).unwrap(), "#!/bin/sh\necho hi\n");
    assert_eq!(std::fs::read_link(dir.join("bin/alias")).unwrap().to_str(), Some("tool"));
    // Owned by root on the host, so by sandbox root (the shifted base) in the store.
    assert_eq!(std::fs::metadata(dir.join("bin/tool")).unwrap().uid(), 1_000_000);
    // Building the same directory again reuses the layer.
    let again = import_directory(&store, &rootfs, &run, &reference).unwrap();
    assert_eq!(again.layers[0].diff_id, rec.layers[0].diff_id);
}

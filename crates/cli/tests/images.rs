//! `sandpit image …` against a real server: pull from a real registry on loopback (with an
//! htpasswd user and the password on stdin), list, remove, prune; and `image build`, which makes
//! the curated Debian images with mmdebstrap that sandboxes then run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{Serve, Start, show, stderr, stdout};
use sandpit_image::testkit::build_busybox_image;
use sandpit_image::testkit::registry::{Auth, Registry};
use serde_json::Value;

const PASSWORD: &str = "cli-registry-passw0rd-9f8e7d";

fn references(ls: &Value) -> Vec<String> {
    ls["local"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["references"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()))
        .collect()
}

/// `sandpit image pull REF --username alice --password-stdin` with `password` on stdin.
fn pull_with_password(s: &Serve, reference: &str, password: &str, json: bool) -> std::process::Output {
    let mut args = vec![];
    if json {
        args.push("--json");
    }
    args.extend(["image", "pull", reference, "--username", "alice", "--password-stdin"]);
    let mut child =
        s.cmd(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn image_pull_ls_rm_and_prune_through_the_cli() {
    let work = tempfile::tempdir().unwrap();
    let image = build_busybox_image(work.path(), "latest").unwrap();
    let registry = Registry::start(Auth::htpasswd("alice", PASSWORD)).unwrap();
    registry.push(&image.layout, "latest", "tests/busybox:1", None).unwrap();
    let s = Serve::start_with(Start {
        env: vec![("SANDPIT_INSECURE_REGISTRIES".into(), registry.addr().to_string())],
        ..Start::default()
    });
    let reference = format!("{}/tests/busybox:1", registry.addr());

    // Anonymous: refused by the registry, with the reason and a failing exit code.
    let o = s.cli(&["image", "pull", &reference]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(stderr(&o).contains("registry"), "{}", show(&o));
    // A wrong password: refused, and the attempt does not echo it.
    let o = pull_with_password(&s, &reference, "not-the-password", false);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(!stderr(&o).contains("not-the-password"), "{}", show(&o));
    // The right one, read from stdin.
    let o = pull_with_password(&s, &reference, PASSWORD, false);
    assert!(o.status.success(), "{}", show(&o));
    assert!(stdout(&o).starts_with(&format!("pulled {reference} (")), "{}", show(&o));

    // Listed: the curated catalog first, then the store, the pulled image marked private.
    let table = s.ok(&["image", "ls"]);
    for cell in ["NAME", "CATEGORY", "busybox", "python", "pytorch-cuda", "vllm", "IMAGE", "SIZE"] {
        assert!(table.contains(cell), "{cell:?} missing from\n{table}");
    }
    let row = table.lines().find(|l| l.starts_with(&reference)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("registry (private)"), "{row}");
    let ls = s.json(&["image", "ls"]);
    assert!(references(&ls).contains(&reference), "{ls}");
    let curated = ls["curated"].as_array().unwrap();
    let busybox = curated.iter().find(|c| c["name"] == "busybox").unwrap();
    assert_eq!(busybox["available"], true, "the default image is in the store: {busybox}");

    // The private image in the store is not handed to a create without credentials.
    let o = s.cli(&["create", "--wait", "--image", &reference]);
    assert!(!o.status.success() && stderr(&o).contains("registry_auth_failed"), "{}", show(&o));
    // With them (password on stdin) it runs; rm is refused while it lives.
    let mut child = s
        .cmd(&["--json", "create", "--wait", "--keep-running", "--image", &reference])
        .args(["--image-username", "alice", "--image-password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "running", "{v}");
    assert!(!stdout(&o).contains(PASSWORD), "the password is echoed: {v}");
    let id = v["id"].as_str().unwrap();
    let o = s.cli(&["image", "rm", &reference]);
    assert!(!o.status.success() && stderr(&o).contains("used by a sandbox"), "{}", show(&o));
    s.ok(&["delete", id]);
    assert_eq!(s.ok(&["image", "rm", &reference]).trim(), format!("removed {reference}"));
    assert!(!references(&s.json(&["image", "ls"])).contains(&reference));
    let o = s.cli(&["image", "rm", &reference]);
    assert!(!o.status.success() && stderr(&o).contains("not found"), "{}", show(&o));

    // Pulled again (JSON answer), then pruned: unused, so removed; the default image stays.
    let o = pull_with_password(&s, &reference, PASSWORD, true);
    assert!(o.status.success(), "{}", show(&o));
    let pulled: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(pulled["digest"].as_str().unwrap().starts_with("sha256:"), "{pulled}");
    let report = s.json(&["image", "prune"]);
    assert!(
        report["removed_references"].as_array().unwrap().iter().any(|r| r == reference.as_str()),
        "{report}"
    );
    let left = references(&s.json(&["image", "ls"]));
    assert!(!left.contains(&reference) && left.iter().any(|r| r == "sandpit/busybox:latest"), "{left:?}");

    // The password is nowhere in the server's logs or its data directory.
    let log = s.log();
    assert!(!log.contains(PASSWORD), "the password is in the server log");
    assert_no_file_contains(&s.data_dir(), PASSWORD.as_bytes());
    s.stop();
}

/// `sandpit image import` of an OCI layout, an oci-archive and a root file system directory, each
/// then run by a sandbox; bad input is refused with the reason and imports nothing.
#[test]
fn image_import_takes_layouts_archives_and_directories() {
    let s = Serve::start();
    let work = common::traversable_dir();
    let image = build_busybox_image(work.path(), "v1").unwrap();
    let archive = work.path().join("busybox.tar");
    image.layout.to_archive("v1", &archive).unwrap();
    let rootfs = work.path().join("rootfs");
    sandpit_image::testkit::busybox_rootfs(&rootfs).unwrap();
    std::fs::write(rootfs.join("marker"), "from a directory\n").unwrap();

    let import = |path: &std::path::Path, extra: &[&str]| {
        let mut c = s.cmd(&["image", "import"]);
        c.arg(path)
            .args(extra)
            .arg("--data-dir")
            .arg(s.data_dir())
            .arg("--config")
            .arg(s.path("sandpit.toml"));
        c.output().unwrap()
    };
    for (path, reference, kind) in [
        (image.layout.dir.clone(), "team/layout:1", "OCI layout"),
        (archive.clone(), "team/archive:1", "oci-archive"),
        (rootfs.clone(), "team/dir:1", "root file system"),
    ] {
        let o = import(&path, &["--as", reference]);
        assert!(o.status.success(), "{}", show(&o));
        assert!(stdout(&o).contains(&format!("({kind}) as {reference} (")), "{}", show(&o));
    }
    let refs = references(&s.json(&["image", "ls"]));
    for r in ["team/layout:1", "team/archive:1", "team/dir:1"] {
        assert!(refs.iter().any(|x| x == r), "{r} missing: {refs:?}");
    }
    // The layout's own config applies; the directory image idles and holds its files.
    for r in ["team/layout:1", "team/archive:1"] {
        let id = s.create_running(&["--image", r, "--keep-running"]);
        let o = s.cli(&["exec", &id, "--", "sh", "-c", "echo $GREETING"]);
        assert_eq!(stdout(&o), "hello\n", "{}", show(&o));
    }
    let id = s.create_running(&["--image", "team/dir:1"]);
    let o = s.cli(&["exec", &id, "--", "cat", "/marker"]);
    assert_eq!(stdout(&o), "from a directory\n", "{}", show(&o));

    // Bad input: a clear error, nothing imported.
    let o = import(&work.path().join("nope"), &["--as", "team/nope:1"]);
    assert!(!o.status.success() && stderr(&o).contains("cannot read"), "{}", show(&o));
    let o = import(&rootfs, &["--as", "Not A Ref"]);
    assert!(!o.status.success() && stderr(&o).contains("--as"), "{}", show(&o));
    let o = import(&archive, &["--as", "team/cmd:1", "--cmd", "true"]);
    assert!(
        !o.status.success() && stderr(&o).contains("--cmd applies to a root file system"),
        "{}",
        show(&o)
    );
    let junk = work.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tar archive at all").unwrap();
    let o = import(&junk, &["--as", "team/junk:1"]);
    assert!(!o.status.success(), "{}", show(&o));
    let refs = references(&s.json(&["image", "ls"]));
    assert!(!refs.iter().any(|r| r == "team/nope:1" || r == "team/cmd:1" || r == "team/junk:1"), "{refs:?}");
    s.stop();
}

fn assert_no_file_contains(dir: &std::path::Path, needle: &[u8]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            assert_no_file_contains(&entry.path(), needle);
        } else if ft.is_file() {
            let data = std::fs::read(entry.path()).unwrap_or_default();
            assert!(
                !data.windows(needle.len()).any(|w| w == needle),
                "the secret is in {}",
                entry.path().display()
            );
        }
    }
}

/// Builds every buildable curated image (`base`, `python`, `pytorch-cpu`) from Debian packages
/// (needs the Debian mirror; a few minutes) into a running server's store, and runs sandboxes
/// of them by their curated names.
#[test]
fn image_build_makes_debian_images_that_sandboxes_run_by_curated_name() {
    let s = Serve::start();
    let ls = s.json(&["image", "ls"]);
    let python = ls["curated"].as_array().unwrap().iter().find(|c| c["name"] == "python").unwrap().clone();
    assert_eq!((python["available"].as_bool(), python["build"].as_str()), (Some(false), Some("python")));
    assert!(s.ok(&["image", "ls"]).contains("run `sandpit image build python`"));

    // Not a buildable name: a clear error, nothing built.
    let data = s.data_dir();
    let config = s.path("sandpit.toml");
    let build = |names: &[&str]| {
        let mut args = vec!["image", "build"];
        args.extend_from_slice(names);
        let mut c = s.cmd(&args);
        c.arg("--data-dir").arg(&data).arg("--config").arg(&config);
        c.output().unwrap()
    };
    let o = build(&["vllm"]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        stderr(&o).contains("not a buildable curated image (buildable: base, python, pytorch-cpu)"),
        "{}",
        show(&o)
    );

    let o = build(&[]);
    assert!(o.status.success(), "{}", show(&o));
    for (name, reference) in [
        ("base", "sandpit/base:bookworm"),
        ("python", "sandpit/python:bookworm"),
        ("pytorch-cpu", "sandpit/pytorch-cpu:bookworm"),
    ] {
        assert!(stdout(&o).contains(&format!("built {name} as {reference}")), "{}", show(&o));
    }

    // The running server sees them at once.
    let ls = s.json(&["image", "ls"]);
    for name in ["base", "python", "pytorch-cpu"] {
        let c = ls["curated"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(c["available"], true, "{c}");
        assert!(c["size"].is_string(), "{c}");
    }

    let base = s.create_running(&["--image", "base", "--keep-running", "--memory", "256Mi"]);
    let o = s.cli(&[
        "exec",
        &base,
        "--",
        "sh",
        "-c",
        "grep VERSION_CODENAME /etc/os-release; id -u user; ls -d /home/user",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "VERSION_CODENAME=bookworm\n1000\n/home/user\n");

    let py = s.create_running(&["--image", "python", "--keep-running", "--memory", "512Mi"]);
    let script = "import numpy, pandas, matplotlib, ipykernel\n\
                  matplotlib.use('Agg')\n\
                  df = pandas.DataFrame({'x': numpy.arange(4)})\n\
                  print(int(df.x.sum()), numpy.__version__.split('.')[0])";
    let o = s.cli(&["exec", &py, "--", "python3", "-c", script]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "6 1\n");
    s.ok(&["delete", &py]);

    let torch = s.create_running(&["--image", "pytorch-cpu", "--keep-running", "--memory", "1Gi"]);
    let o =
        s.cli(&["exec", &torch, "--", "python3", "-c", "import torch; print(torch.ones(2, 3).sum().item())"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "6.0\n");
    s.ok(&["delete", &torch]);

    // Prune keeps the curated images built here, even when no sandbox uses them.
    s.ok(&["delete", &base]);
    let report = s.json(&["image", "prune"]);
    let removed = report["removed_references"].as_array().unwrap();
    assert!(!removed.iter().any(|r| r.as_str().unwrap().starts_with("sandpit/")), "{report}");
    s.stop();
}

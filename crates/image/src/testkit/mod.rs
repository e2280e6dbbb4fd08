//! Test support, behind the `testkit` feature: builds real OCI images with umoci and skopeo from
//! the Debian busybox-static binary, crafts hostile layer tars, and mounts layers with overlayfs.
//!
//! [`registry`] runs real registries (`docker-registry`, with basic or token auth) on loopback,
//! a request-counting proxy and a token service, for pull tests here and in the server.
//!
//! Another crate's tests use it with
//! `sandpit-image = { workspace = true, features = ["testkit"] }` under `[dev-dependencies]`.
//! The image builders need root (`umoci unpack` keeps owners) and the tools `umoci`, `skopeo`
//! and `busybox` (Debian packages `umoci`, `skopeo`, `busybox-static`).

pub mod craft;
pub mod registry;

use std::ffi::OsStr;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What can go wrong while building test images.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A tool could not be started (usually: not installed).
    #[error("could not run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// The error from `exec`.
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed; its exit status and output are kept.
    #[error("{program} {args:?} failed with status {status:?}: {stderr}")]
    CommandFailed {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
        /// Exit code (`None` when killed by a signal).
        status: Option<i32>,
        /// Captured standard output.
        stdout: String,
        /// Captured standard error.
        stderr: String,
    },
    /// A server the test needs did not start listening.
    #[error("{what} did not start: {output}")]
    NotReady {
        /// What was started.
        what: String,
        /// What it printed.
        output: String,
    },
    /// Making a key, certificate or signature failed.
    #[error("could not {what}: {detail}")]
    Crypto {
        /// What was being made.
        what: &'static str,
        /// The library's message.
        detail: String,
    },
    /// A file operation failed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> TestkitError + 'p {
    move |source| TestkitError::Io { action, path: path.to_owned(), source }
}

/// Runs a program and returns its output; a non-zero exit is [`TestkitError::CommandFailed`].
pub fn run<I, S>(program: &str, args: I) -> Result<Output, TestkitError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let output = Command::new(program)
        .args(&args)
        .output()
        .map_err(|source| TestkitError::Spawn { program: program.to_owned(), source })?;
    if !output.status.success() {
        return Err(TestkitError::CommandFailed {
            program: program.to_owned(),
            args: args.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(output)
}

/// Checks that umoci, skopeo and busybox can be run.
pub fn require_tools() -> Result<(), TestkitError> {
    run("umoci", ["--version"])?;
    run("skopeo", ["--version"])?;
    run("busybox", ["true"])?;
    Ok(())
}

/// The busybox binary on this host (`busybox-static`).
pub fn busybox_binary() -> Result<PathBuf, TestkitError> {
    let out = run("sh", ["-c", "command -v busybox"])?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    std::fs::canonicalize(&path).map_err(io_err("resolve", &path))
}

/// Fills `rootfs` with a minimal busybox system: `/bin/busybox`, a relative symlink
/// `/bin/<applet> -> busybox` for every applet, `/etc/passwd`, `/etc/group`, and the usual empty
/// mount points (`/proc`, `/sys`, `/dev`, `/tmp` with mode 1777).
pub fn busybox_rootfs(rootfs: &Path) -> Result<(), TestkitError> {
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "home"] {
        let path = rootfs.join(dir);
        std::fs::create_dir_all(&path).map_err(io_err("create", &path))?;
    }
    let tmp = rootfs.join("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).map_err(io_err("chmod", &tmp))?;
    let busybox = rootfs.join("bin/busybox");
    std::fs::copy(busybox_binary()?, &busybox).map_err(io_err("copy", &busybox))?;
    std::fs::set_permissions(&busybox, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod", &busybox))?;
    let list = run("busybox", ["--list"])?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = rootfs.join("bin").join(applet);
        symlink("busybox", &link).map_err(io_err("symlink", &link))?;
    }
    write(
        &rootfs.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    write(&rootfs.join("etc/group"), b"root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), TestkitError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    std::fs::write(path, bytes).map_err(io_err("write", path))
}

/// An OCI image layout directory driven with umoci.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciLayout {
    /// The layout directory.
    pub dir: PathBuf,
}

impl OciLayout {
    /// `umoci init --layout dir`.
    pub fn init(dir: &Path) -> Result<Self, TestkitError> {
        run("umoci", [OsStr::new("init"), OsStr::new("--layout"), dir.as_os_str()])?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// `dir:tag` as umoci and skopeo's `oci:` transport spell it.
    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }

    /// `umoci new --image dir:tag` (an image with no layers).
    pub fn new_image(&self, tag: &str) -> Result<(), TestkitError> {
        run("umoci", ["new", "--image", &self.image(tag)]).map(drop)
    }

    /// `umoci unpack --image dir:tag bundle` (as root: owners kept). The rootfs is `bundle/rootfs`.
    pub fn unpack(&self, tag: &str, bundle: &Path) -> Result<(), TestkitError> {
        run(
            "umoci",
            [OsStr::new("unpack"), OsStr::new("--image"), OsStr::new(&self.image(tag)), bundle.as_os_str()],
        )
        .map(drop)
    }

    /// `umoci repack --refresh-bundle --image dir:tag bundle`: one new layer with the changes.
    pub fn repack(&self, tag: &str, bundle: &Path) -> Result<(), TestkitError> {
        run(
            "umoci",
            [
                OsStr::new("repack"),
                OsStr::new("--refresh-bundle"),
                OsStr::new("--image"),
                OsStr::new(&self.image(tag)),
                bundle.as_os_str(),
            ],
        )
        .map(drop)
    }

    /// `umoci config --image dir:tag <args>` (e.g. `--config.entrypoint /bin/sh`).
    pub fn config(&self, tag: &str, args: &[&str]) -> Result<(), TestkitError> {
        let image = self.image(tag);
        let mut all = vec!["config", "--image", image.as_str()];
        all.extend_from_slice(args);
        run("umoci", all).map(drop)
    }

    /// `umoci raw add-layer --image dir:tag layer.tar`: appends an uncompressed tar verbatim.
    pub fn add_raw_layer(&self, tag: &str, layer_tar: &Path) -> Result<(), TestkitError> {
        run(
            "umoci",
            [
                OsStr::new("raw"),
                OsStr::new("add-layer"),
                OsStr::new("--image"),
                OsStr::new(&self.image(tag)),
                layer_tar.as_os_str(),
            ],
        )
        .map(drop)
    }

    /// `skopeo copy oci:dir:tag oci-archive:out:tag`.
    pub fn to_archive(&self, tag: &str, out: &Path) -> Result<(), TestkitError> {
        let src = format!("oci:{}", self.image(tag));
        let dst = format!("oci-archive:{}:{tag}", out.display());
        run("skopeo", ["copy", "--quiet", &src, &dst]).map(drop)
    }

    /// `skopeo copy --dest-compress-format zstd oci:dir:tag oci:dest:tag`: the same image with
    /// zstd layers (same diff_ids, other blob digests).
    pub fn copy_as_zstd(&self, tag: &str, dest: &Path) -> Result<OciLayout, TestkitError> {
        let src = format!("oci:{}", self.image(tag));
        let dst = format!("oci:{}:{tag}", dest.display());
        run("skopeo", ["copy", "--quiet", "--dest-compress-format", "zstd", &src, &dst])?;
        Ok(OciLayout { dir: dest.to_owned() })
    }

    /// The path of a blob in the layout.
    pub fn blob_path(&self, digest_hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest_hex)
    }

    /// The manifest (parsed JSON) that `tag` names.
    pub fn manifest(&self, tag: &str) -> Result<serde_json::Value, TestkitError> {
        let index_path = self.dir.join("index.json");
        let index: serde_json::Value = read_json(&index_path)?;
        let digest = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .and_then(|m| m["digest"].as_str())
            .and_then(|d| d.strip_prefix("sha256:"))
            .map(str::to_owned)
            .ok_or_else(|| TestkitError::Io {
                action: "find tag in",
                path: index_path.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        read_json(&self.blob_path(&digest))
    }
}

impl OciLayout {
    /// Adds an image index tagged `index_tag` whose entries are the images tagged in `entries`
    /// (`(tag, architecture)`, all `linux`), in that order; skopeo pushes it with every image.
    pub fn add_index(&self, index_tag: &str, entries: &[(&str, &str)]) -> Result<(), TestkitError> {
        let index_path = self.dir.join("index.json");
        let mut index = read_json(&index_path)?;
        let mut manifests = Vec::new();
        for (tag, arch) in entries {
            let entry = index["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == *tag)
                .cloned()
                .ok_or_else(|| TestkitError::Io {
                    action: "find tag in",
                    path: index_path.clone(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                })?;
            manifests.push(serde_json::json!({
                "mediaType": entry["mediaType"],
                "digest": entry["digest"],
                "size": entry["size"],
                "platform": {"os": "linux", "architecture": arch},
            }));
        }
        let nested = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let bytes = serde_json::to_vec(&nested).map_err(|e| TestkitError::Io {
            action: "serialise index for",
            path: index_path.clone(),
            source: e.into(),
        })?;
        let hex = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        let blob = self.blob_path(&hex);
        std::fs::write(&blob, &bytes).map_err(io_err("write", &blob))?;
        let list = index["manifests"].as_array_mut().ok_or_else(|| TestkitError::Io {
            action: "read manifests of",
            path: index_path.clone(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        })?;
        list.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": index_tag},
        }));
        let text = serde_json::to_vec(&index).map_err(|e| TestkitError::Io {
            action: "serialise",
            path: index_path.clone(),
            source: e.into(),
        })?;
        std::fs::write(&index_path, text).map_err(io_err("write", &index_path))
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, TestkitError> {
    let bytes = std::fs::read(path).map_err(io_err("read", path))?;
    serde_json::from_slice(&bytes).map_err(|e| TestkitError::Io {
        action: "parse",
        path: path.to_owned(),
        source: e.into(),
    })
}

/// Paths (relative to the rootfs) that [`build_layered_image`] creates, deletes or replaces.
pub mod layered {
    /// Created in layer 1, whited out (`etc/.wh.gone-file`) in layer 2.
    pub const DELETED_FILE: &str = "etc/gone-file";
    /// Created in layer 1 with content, whited out (`.wh.gone-dir`) in layer 2.
    pub const DELETED_DIR: &str = "gone-dir";
    /// Holds `old` in layer 1; layer 3 marks it opaque and adds `new`.
    pub const OPAQUE_DIR: &str = "opaque";
    /// Added in layer 2.
    pub const ADDED_FILE: &str = "etc/added";
    /// Owned by uid/gid 1000 in layer 1.
    pub const USER_FILE: &str = "home/user/owned";
    /// Mode 04755 in layer 1.
    pub const SETUID_FILE: &str = "bin/setuid-tool";
    /// Owned by uid 70000 (outside a 65536-id range) in layer 1.
    pub const OVERFLOW_FILE: &str = "var/overflow-owned";
    /// A FIFO in layer 1.
    pub const FIFO: &str = "var/fifo";
    /// A hard link to [`USER_FILE`] in layer 1.
    pub const HARD_LINK: &str = "var/hardlink";
}

/// An image built into a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The layout.
    pub layout: OciLayout,
    /// The tag (`org.opencontainers.image.ref.name`) of the image in it.
    pub tag: String,
}

/// Builds a one-layer busybox image in a new layout `work/layout`, tagged `tag`, with entrypoint
/// `/bin/sh`, cmd `-c "echo hello"`, env `PATH=/bin` and `GREETING=hello`, working dir `/tmp`,
/// user `0:0`, exposed port `8080/tcp` and label `org.sandpit.test=busybox`.
pub fn build_busybox_image(work: &Path, tag: &str) -> Result<BuiltImage, TestkitError> {
    let layout = OciLayout::init(&work.join("layout"))?;
    layout.new_image(tag)?;
    let bundle = work.join("bundle");
    layout.unpack(tag, &bundle)?;
    busybox_rootfs(&bundle.join("rootfs"))?;
    layout.repack(tag, &bundle)?;
    configure_busybox(&layout, tag)?;
    Ok(BuiltImage { layout, tag: tag.to_owned() })
}

fn configure_busybox(layout: &OciLayout, tag: &str) -> Result<(), TestkitError> {
    layout.config(
        tag,
        &[
            "--clear=config.env",
            "--config.env=PATH=/bin",
            "--config.env=GREETING=hello",
            "--config.entrypoint=/bin/sh",
            "--config.cmd=-c",
            "--config.cmd=echo hello",
            "--config.workingdir=/tmp",
            "--config.user=0:0",
            "--config.exposedports=8080/tcp",
            "--config.label=org.sandpit.test=busybox",
        ],
    )
}

/// Builds a three-layer busybox image in `work/layout`, tagged `tag` (configured like
/// [`build_busybox_image`]):
///
/// 1. busybox rootfs plus every path of [`layered`] except [`layered::ADDED_FILE`]
///    (owners 1000 and 70000, a setuid file, a FIFO, a hard link), via `umoci repack`;
/// 2. deletes [`layered::DELETED_FILE`] and [`layered::DELETED_DIR`] (whiteouts) and adds
///    [`layered::ADDED_FILE`], via `umoci repack`;
/// 3. `opaque/` with `opaque/.wh..wh..opq` and `opaque/new`, via `umoci raw add-layer`
///    (umoci itself never writes opaque markers).
pub fn build_layered_image(work: &Path, tag: &str) -> Result<BuiltImage, TestkitError> {
    let layout = OciLayout::init(&work.join("layout"))?;
    layout.new_image(tag)?;
    let bundle = work.join("bundle");
    layout.unpack(tag, &bundle)?;
    let rootfs = bundle.join("rootfs");
    busybox_rootfs(&rootfs)?;
    write(&rootfs.join(layered::DELETED_FILE), b"deleted in layer 2\n")?;
    write(&rootfs.join(layered::DELETED_DIR).join("inner/file"), b"deleted with its directory\n")?;
    write(&rootfs.join(layered::OPAQUE_DIR).join("old"), b"hidden by the opaque marker\n")?;
    write(&rootfs.join(layered::USER_FILE), b"owned by 1000\n")?;
    chown(&rootfs.join(layered::USER_FILE), 1000, 1000)?;
    chown(&rootfs.join("home/user"), 1000, 1000)?;
    let setuid = rootfs.join(layered::SETUID_FILE);
    write(&setuid, b"#!/bin/sh\nid\n")?;
    chmod(&setuid, 0o4755)?;
    write(&rootfs.join(layered::OVERFLOW_FILE), b"owned by 70000\n")?;
    chown(&rootfs.join(layered::OVERFLOW_FILE), 70000, 70000)?;
    run("mkfifo", [rootfs.join(layered::FIFO)])?;
    let hard_link = rootfs.join(layered::HARD_LINK);
    std::fs::hard_link(rootfs.join(layered::USER_FILE), &hard_link).map_err(io_err("link", &hard_link))?;
    layout.repack(tag, &bundle)?;

    let gone = rootfs.join(layered::DELETED_FILE);
    std::fs::remove_file(&gone).map_err(io_err("remove", &gone))?;
    let gone = rootfs.join(layered::DELETED_DIR);
    std::fs::remove_dir_all(&gone).map_err(io_err("remove", &gone))?;
    write(&rootfs.join(layered::ADDED_FILE), b"added in layer 2\n")?;
    layout.repack(tag, &bundle)?;

    let opaque_tar = work.join("opaque-layer.tar");
    let tar = craft::layer_tar(&[
        craft::RawEntry::dir(b"opaque/"),
        craft::RawEntry::file(b"opaque/.wh..wh..opq", b""),
        craft::RawEntry::file(b"opaque/new", b"the only file left in opaque/\n"),
    ]);
    std::fs::write(&opaque_tar, tar).map_err(io_err("write", &opaque_tar))?;
    layout.add_raw_layer(tag, &opaque_tar)?;
    configure_busybox(&layout, tag)?;
    Ok(BuiltImage { layout, tag: tag.to_owned() })
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), TestkitError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err("chown", path))
}

fn chmod(path: &Path, mode: u32) -> Result<(), TestkitError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

/// A read-only overlayfs mount of layer directories; unmounted on drop.
#[derive(Debug)]
pub struct OverlayMount {
    target: PathBuf,
}

impl OverlayMount {
    /// Mounts `layers` (lowest first, as [`crate::ImageStore::layer_dirs`] returns them) at
    /// `target`, which must exist.
    pub fn mount(layers: &[PathBuf], target: &Path) -> Result<Self, TestkitError> {
        let lowerdir: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
        let options = format!("lowerdir={}", lowerdir.join(":"));
        run(
            "mount",
            [
                OsStr::new("-t"),
                OsStr::new("overlay"),
                OsStr::new("overlay"),
                OsStr::new("-o"),
                OsStr::new(&options),
                target.as_os_str(),
            ],
        )?;
        Ok(Self { target: target.to_owned() })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if run("umount", [self.target.as_os_str()]).is_err() {
            let _ = run("umount", [OsStr::new("-l"), self.target.as_os_str()]);
        }
    }
}

//! Curated images built on this machine from Debian packages with `mmdebstrap`, so a server
//! without an image registry has them: `base` (minimal Debian), `python` (a code interpreter)
//! and `pytorch-cpu`. Each gets a user `user` (uid 1000, home `/home/user`).

use std::path::Path;
use std::process::Command;

use crate::build::{RunConfig, import_directory};
use crate::error::ImageError;
use crate::reference::ImageReference;
use crate::store::{ImageRecord, ImageStore};

/// Debian release the recipes use.
pub const SUITE: &str = "bookworm";

/// A recipe of `sandpit image build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// Minimal Debian.
    Base,
    /// Python 3 with numpy, pandas, matplotlib and ipykernel.
    Python,
    /// Debian's python3-torch (CPU).
    PytorchCpu,
}

impl Recipe {
    /// Every recipe.
    pub const ALL: [Recipe; 3] = [Self::Base, Self::Python, Self::PytorchCpu];

    /// The recipe's name (`base`, `python`, `pytorch-cpu`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Python => "python",
            Self::PytorchCpu => "pytorch-cpu",
        }
    }

    /// The recipe named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Debian packages beyond `minbase`.
    pub fn packages(self) -> &'static [&'static str] {
        match self {
            Self::Base => &["ca-certificates", "procps", "less", "curl"],
            Self::Python => &[
                "ca-certificates",
                "procps",
                "curl",
                "python3",
                "python3-pip",
                "python3-venv",
                "python3-numpy",
                "python3-pandas",
                "python3-matplotlib",
                "python3-ipykernel",
            ],
            Self::PytorchCpu => &[
                "ca-certificates",
                "procps",
                "curl",
                "python3",
                "python3-pip",
                "python3-numpy",
                "python3-torch",
            ],
        }
    }
}

/// Builds `recipe` and commits it to `store` as `reference`. `mirror` overrides Debian's mirror
/// (default: the one mmdebstrap chooses, `http://deb.debian.org/debian`). Needs root and
/// `mmdebstrap`; takes seconds (base) to minutes (pytorch-cpu), mostly downloading.
pub fn build(
    store: &ImageStore,
    recipe: Recipe,
    reference: &ImageReference,
    mirror: Option<&str>,
) -> Result<ImageRecord, ImageError> {
    let work = tempfile::Builder::new().prefix(".build-").tempdir_in(store.root()).map_err(|e| {
        ImageError::Io { action: "create build directory in", path: store.root().into(), source: e }
    })?;
    let rootfs = work.path().join("rootfs");
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--mode=root", "--quiet", "--format=directory"])
        .arg(format!("--include={}", recipe.packages().join(",")))
        .arg("--customize-hook=chroot \"$1\" useradd --create-home --uid 1000 --shell /bin/bash user")
        .arg("--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin")
        .arg(SUITE)
        .arg(&rootfs);
    if let Some(m) = mirror {
        cmd.arg(m);
    }
    let out = cmd.output().map_err(|e| ImageError::Io {
        action: "run mmdebstrap for",
        path: rootfs.clone(),
        source: e,
    })?;
    if !out.status.success() {
        return Err(ImageError::BuildFailed {
            recipe: recipe.name(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr)
                .chars()
                .rev()
                .take(2000)
                .collect::<String>()
                .chars()
                .rev()
                .collect(),
        });
    }
    let run = RunConfig {
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "LANG=C.UTF-8".into(),
            "PYTHONUNBUFFERED=1".into(),
        ],
        working_dir: Some("/root".into()),
        labels: vec![
            ("org.sandpit.image".into(), recipe.name().into()),
            ("org.opencontainers.image.base.name".into(), format!("debian:{SUITE}")),
        ],
        ..Default::default()
    };
    let rec = import_directory(store, &rootfs, &run, reference)?;
    drop(work);
    Ok(rec)
}

/// Whether `mmdebstrap` is installed.
pub fn available() -> bool {
    Path::new("/usr/bin/mmdebstrap").exists()
}

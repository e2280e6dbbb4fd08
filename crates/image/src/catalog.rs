//! The curated image catalog: images by category (base, code interpreter, PyTorch, vLLM, …) with
//! a description and a reference. Operators edit it as a TOML file; sandpit ships a default.
//!
//! ```toml
//! [[image]]
//! name = "python"                       # what users write as `image`
//! category = "code-interpreter"
//! description = "Python 3 with numpy, pandas, matplotlib and ipykernel"
//! reference = "sandpit/python:bookworm"  # a local name or a registry reference
//! build = "python"                       # optional: `sandpit image build python` makes it
//! gpu = false                            # optional: meant for GPU sandboxes
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ImageError;
use crate::reference::ImageReference;

/// The catalog shipped with sandpit, written to the data directory on first start.
pub const DEFAULT_CATALOG: &str = r#"# sandpit's curated images. Edit freely: `name` is what users pass as `image`, `reference` is
# a local image name or a registry reference (pulled on first use). Entries with `build` can be
# made on this machine from Debian packages with `sandpit image build NAME`.

[[image]]
name = "busybox"
category = "base"
description = "BusyBox from the host's busybox-static: the smallest image, starts fastest"
reference = "sandpit/busybox:latest"

[[image]]
name = "base"
category = "base"
description = "Minimal Debian 12 (bookworm) with a user `user`"
reference = "sandpit/base:bookworm"
build = "base"

[[image]]
name = "python"
category = "code-interpreter"
description = "Python 3.11 with numpy, pandas, matplotlib and ipykernel, from Debian packages"
reference = "sandpit/python:bookworm"
build = "python"

[[image]]
name = "pytorch-cpu"
category = "pytorch"
description = "PyTorch on CPU (Debian's python3-torch) with numpy"
reference = "sandpit/pytorch-cpu:bookworm"
build = "pytorch-cpu"

[[image]]
name = "pytorch-cuda"
category = "pytorch"
description = "PyTorch 2.5 with CUDA 12.4 and cuDNN 9, pulled from Docker Hub on first use"
reference = "docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
gpu = true

[[image]]
name = "vllm"
category = "vllm"
description = "vLLM's OpenAI-compatible server, pulled from Docker Hub on first use"
reference = "docker.io/vllm/vllm-openai:v0.6.4"
gpu = true
"#;

/// One curated image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Short name users write as the image (`python`).
    pub name: String,
    /// Category (`base`, `code-interpreter`, `pytorch`, `vllm`, …).
    pub category: String,
    /// What it is.
    pub description: String,
    /// Local name or registry reference.
    pub reference: String,
    /// Which recipe of `sandpit image build` makes it, if any.
    #[serde(default)]
    pub build: Option<String>,
    /// Meant for GPU sandboxes.
    #[serde(default)]
    pub gpu: bool,
}

/// The catalog file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The images, in the file's order.
    #[serde(default, rename = "image")]
    pub images: Vec<CatalogEntry>,
}

impl Catalog {
    /// Parses and checks a catalog.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        let c: Catalog =
            toml::from_str(text).map_err(|e| ImageError::InvalidCatalog { problem: e.to_string() })?;
        let mut names = std::collections::HashSet::new();
        for e in &c.images {
            if !names.insert(e.name.as_str()) {
                return Err(ImageError::InvalidCatalog {
                    problem: format!("image {:?} appears twice", e.name),
                });
            }
            if e.name.is_empty()
                || !e.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(ImageError::InvalidCatalog {
                    problem: format!("image name {:?} must be lowercase letters, digits and '-'", e.name),
                });
            }
            ImageReference::parse(&e.reference).map_err(|err| ImageError::InvalidCatalog {
                problem: format!("image {:?}: {err}", e.name),
            })?;
        }
        Ok(c)
    }

    /// The shipped default.
    pub fn default_catalog() -> Self {
        // The default is a constant checked by a test; it always parses.
        Self::parse(DEFAULT_CATALOG).unwrap_or_default()
    }

    /// Loads `path`, writing the default there first if it does not exist.
    pub fn load_or_init(path: &Path) -> Result<Self, ImageError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::write(path, DEFAULT_CATALOG).map_err(|e| ImageError::Io {
                    action: "write",
                    path: path.into(),
                    source: e,
                })?;
                Ok(Self::default_catalog())
            }
            Err(e) => Err(ImageError::Io { action: "read", path: path.into(), source: e }),
        }
    }

    /// The entry named `name`.
    pub fn find(&self, name: &str) -> Option<&CatalogEntry> {
        self.images.iter().find(|e| e.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_catalog_parses_and_has_every_category() {
        let c = Catalog::parse(DEFAULT_CATALOG).unwrap();
        for cat in ["base", "code-interpreter", "pytorch", "vllm"] {
            assert!(c.images.iter().any(|e| e.category == cat), "{cat}");
        }
        assert_eq!(c.find("python").unwrap().build.as_deref(), Some("python"));
    }

    #[test]
    fn a_bad_catalog_is_refused_with_the_reason() {
        let dup = "[[image]]\nname='a'\ncategory='x'\ndescription='d'\nreference='r:1'\n[[image]]\nname='a'\ncategory='x'\ndescription='d'\nreference='r:2'\n";
        assert!(Catalog::parse(dup).unwrap_err().to_string().contains("twice"));
        let bad_ref = "[[image]]\nname='a'\ncategory='x'\ndescription='d'\nreference='UPPER CASE'\n";
        assert!(Catalog::parse(bad_ref).is_err());
        let unknown = "[[image]]\nname='a'\ncategory='x'\ndescription='d'\nreference='r'\ncolour='red'\n";
        assert!(Catalog::parse(unknown).is_err());
    }
}

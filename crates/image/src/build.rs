//! Building an image from a directory on the host: the directory becomes one uncompressed layer
//! and the image is committed to the store like any import. Used for images made on the machine
//! itself (the default image at first start, `sandpit image build`).

use std::io::{BufWriter, Read, Seek, Write};
use std::path::Path;

use oci_spec::image::{
    ConfigBuilder, DescriptorBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType,
    RootFsBuilder,
};
use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;
use crate::error::ImageError;
use crate::media::LayerMediaType;
use crate::plan::ImagePlan;
use crate::reference::ImageReference;
use crate::store::{ImageRecord, ImageStore};

/// What the built image runs, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    /// `Env` (`KEY=value`).
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Labels`.
    pub labels: Vec<(String, String)>,
}

/// Writes everything to `inner` while hashing it.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn json_err(what: &'static str) -> impl Fn(oci_spec::OciSpecError) -> ImageError {
    move |e| ImageError::io(what, "<generated>", std::io::Error::other(e.to_string()))
}

/// Builds an image whose only layer is the content of `rootfs` (owners, modes, symlinks and
/// hard links as they are on disk) and points `reference` at it.
pub fn import_directory(
    store: &ImageStore,
    rootfs: &Path,
    run: &RunConfig,
    reference: &ImageReference,
) -> Result<ImageRecord, ImageError> {
    // The layer tar goes to an unlinked temporary file, hashed as it is written.
    let mut file = tempfile::tempfile_in(store.root())
        .map_err(|e| ImageError::io("create temporary file in", store.root(), e))?;
    let (diff_id, size) = {
        let mut w = HashingWriter { inner: BufWriter::new(&mut file), hash: Sha256::new(), len: 0 };
        {
            let mut tar = tar::Builder::new(&mut w);
            tar.follow_symlinks(false);
            tar.mode(tar::HeaderMode::Complete);
            tar.append_dir_all(".", rootfs).map_err(|e| ImageError::io("archive", rootfs, e))?;
            tar.finish().map_err(|e| ImageError::io("archive", rootfs, e))?;
        }
        w.flush().map_err(|e| ImageError::io("write layer of", rootfs, e))?;
        let digest: [u8; 32] = w.hash.finalize().into();
        (Sha256Digest::from_bytes(digest), w.len)
    };
    file.rewind().map_err(|e| ImageError::io("rewind layer of", rootfs, e))?;

    let oci_digest = |d: &Sha256Digest| -> Result<oci_spec::image::Digest, ImageError> {
        d.to_string().parse().map_err(|e: oci_spec::OciSpecError| json_err("digest")(e))
    };
    let mut cfg =
        ConfigBuilder::default().env(run.env.clone()).entrypoint(run.entrypoint.clone()).cmd(run.cmd.clone());
    if let Some(w) = &run.working_dir {
        cfg = cfg.working_dir(w.clone());
    }
    if let Some(u) = &run.user {
        cfg = cfg.user(u.clone());
    }
    if !run.labels.is_empty() {
        cfg = cfg.labels(run.labels.iter().cloned().collect::<std::collections::HashMap<_, _>>());
    }
    let config = ImageConfigurationBuilder::default()
        .architecture(oci_spec::image::Arch::Amd64)
        .os(oci_spec::image::Os::Linux)
        .config(cfg.build().map_err(json_err("image config"))?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.to_string()])
                .build()
                .map_err(json_err("rootfs"))?,
        )
        .build()
        .map_err(json_err("image config"))?;
    let config_bytes = serde_json::to_vec(&config)
        .map_err(|e| ImageError::io("serialise image config", rootfs, std::io::Error::other(e)))?;
    let config_digest = Sha256Digest::of(&config_bytes);
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageConfig)
                .digest(oci_digest(&config_digest)?)
                .size(config_bytes.len() as u64)
                .build()
                .map_err(json_err("descriptor"))?,
        )
        .layers(vec![
            DescriptorBuilder::default()
                .media_type(MediaType::ImageLayer)
                .digest(oci_digest(&diff_id)?)
                .size(size)
                .build()
                .map_err(json_err("descriptor"))?,
        ])
        .build()
        .map_err(json_err("manifest"))?;
    let manifest_bytes = serde_json::to_vec(&manifest)
        .map_err(|e| ImageError::io("serialise manifest", rootfs, std::io::Error::other(e)))?;
    let plan = ImagePlan::new(Sha256Digest::of(&manifest_bytes), &manifest, config_digest, &config)?;
    let session = store.begin_import()?;
    session.unpack_layer_blob((&mut file).take(size), LayerMediaType::Tar, &diff_id, &diff_id)?;
    session.commit(&plan, Some(reference))
}

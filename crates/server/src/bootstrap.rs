//! First start: an admin user, a `default` project and an API key for the CLI; and the default
//! image, built from the host's static busybox so that a new machine has an image without any
//! registry.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sandpit_image::{ImageReference, ImageSelector, ImageStore, RunConfig};
use sandpit_store::{KycStatus, MemberRole, NewApiKey, Role, Store};
use tracing::{info, warn};

use crate::auth::{display_prefix, generate_key, hash_key};
use crate::config::{Credentials, ServerConfig};

/// What bootstrap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    /// The new admin key (shown once).
    pub api_key: String,
    /// Where it was written for the CLI.
    pub credentials_file: PathBuf,
}

/// Bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] sandpit_store::StoreError),
    /// The credentials file could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `SANDPIT_BOOTSTRAP_KEY` is not a usable key.
    #[error("SANDPIT_BOOTSTRAP_KEY must be 20 to 256 printable characters without spaces")]
    BadKey,
}

/// Creates the admin user, `default` project and first key if the database is empty.
/// `preset_key` (from `SANDPIT_BOOTSTRAP_KEY`) becomes the key instead of a random one.
pub async fn first_start(
    store: &dyn Store,
    config: &ServerConfig,
    preset_key: Option<String>,
) -> Result<Option<Bootstrapped>, BootstrapError> {
    if !store.is_empty().await? {
        return Ok(None);
    }
    let key = match preset_key {
        Some(k) if (20..=256).contains(&k.len()) && k.chars().all(|c| c.is_ascii_graphic()) => k,
        Some(_) => return Err(BootstrapError::BadKey),
        None => generate_key(),
    };
    let user = store.create_user("admin", Role::Admin).await?;
    // The operator who starts the server is the first verified user.
    store.set_kyc(user.id, KycStatus::Verified, None).await?;
    let project = store.create_project("default").await?;
    store.add_member(project.id, user.id, MemberRole::Owner).await?;
    store.set_low_threshold(project.id, config.billing.low_balance_default.micros()).await?;
    if config.billing.bootstrap_credit.is_positive() {
        store
            .credit(
                project.id,
                config.billing.bootstrap_credit.micros(),
                Some("bootstrap credit"),
                Some(user.id),
            )
            .await?;
    }
    store
        .create_api_key(NewApiKey {
            user: user.id,
            project: None,
            name: "bootstrap".into(),
            hash: hash_key(&key),
            prefix: display_prefix(&key),
        })
        .await?;
    let path = config.credentials_path();
    write_credentials(&path, &Credentials { url: base_url(config), api_key: key.clone() })?;
    info!(file = %path.display(), "bootstrapped an admin user, the default project and an API key");
    Ok(Some(Bootstrapped { api_key: key, credentials_file: path }))
}

/// The URL a local client reaches the server at.
pub fn base_url(config: &ServerConfig) -> String {
    let addr = config.listen;
    let scheme = if config.tls_cert_file.is_some() { "https" } else { "http" };
    if addr.ip().is_unspecified() {
        format!("{scheme}://127.0.0.1:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    }
}

fn write_credentials(path: &Path, creds: &Credentials) -> Result<(), BootstrapError> {
    let err = |source| BootstrapError::Write { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        // Directories it creates are private; an existing one is left as it is.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(err)?;
    }
    let json = serde_json::to_vec_pretty(creds).map_err(|e| err(std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&json).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Builds the default image (`sandpit/busybox:latest`) from the host's static busybox if the
/// store does not have it. A dynamically linked busybox cannot run in an image without its
/// libraries, so it is skipped with a warning.
pub fn default_image(images: &ImageStore, config: &ServerConfig) -> Result<(), sandpit_image::ImageError> {
    let Ok(selector) = config.default_image.parse::<ImageSelector>() else { return Ok(()) };
    if images.get(&selector).is_ok() || config.default_image != crate::config::DEFAULT_IMAGE {
        return Ok(());
    }
    let Some(busybox) =
        ["/bin/busybox", "/usr/bin/busybox"].into_iter().map(PathBuf::from).find(|p| p.exists())
    else {
        warn!("no busybox on this host: install busybox-static to get the default image");
        return Ok(());
    };
    if !is_static(&busybox) {
        warn!(path = %busybox.display(), "busybox is dynamically linked; install busybox-static for the default image");
        return Ok(());
    }
    let work = tempfile::Builder::new().prefix(".default-image").tempdir_in(images.root()).map_err(|e| {
        sandpit_image::ImageError::Io {
            action: "create build directory in",
            path: images.root().into(),
            source: e,
        }
    })?;
    let rootfs = work.path().join("rootfs");
    build_busybox_rootfs(&rootfs, &busybox).map_err(|e| sandpit_image::ImageError::Io {
        action: "assemble",
        path: rootfs.clone(),
        source: e,
    })?;
    let run = RunConfig {
        env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into(), "HOME=/root".into()],
        working_dir: Some("/root".into()),
        labels: vec![("org.sandpit.image".into(), "busybox".into())],
        ..Default::default()
    };
    let reference = ImageReference::parse(&config.default_image)?;
    let rec = sandpit_image::import_directory(images, &rootfs, &run, &reference)?;
    info!(image = %config.default_image, digest = %rec.manifest_digest, "built the default image");
    Ok(())
}

fn build_busybox_rootfs(rootfs: &Path, busybox: &Path) -> std::io::Result<()> {
    for d in [
        "bin",
        "usr/bin",
        "usr/local/bin",
        "etc",
        "tmp",
        "root",
        "home/user",
        "proc",
        "sys",
        "dev",
        "var/tmp",
    ] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::set_permissions(rootfs.join("var/tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::set_permissions(rootfs.join("root"), std::fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::chown(rootfs.join("home/user"), Some(1000), Some(1000))?;
    std::fs::copy(busybox, rootfs.join("bin/busybox"))?;
    std::fs::set_permissions(rootfs.join("bin/busybox"), std::fs::Permissions::from_mode(0o755))?;
    let out = std::process::Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&out.stdout).lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n")?;
    std::fs::write(rootfs.join("etc/hosts"), "127.0.0.1 localhost\n::1 localhost\n")?;
    Ok(())
}

/// Whether an ELF executable has no program interpreter (is statically linked).
fn is_static(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else { return false };
    // ELF64 little-endian: program headers at e_phoff (0x20), e_phentsize (0x36), e_phnum (0x38).
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at =
        |o: usize| bytes.get(o..o + 8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_le_bytes);
    let (Some(phoff), Some(entsize), Some(num)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else { return false };
    // PT_INTERP = 3.
    !(0..num).any(|i| {
        bytes
            .get(phoff + i * entsize..phoff + i * entsize + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) == 3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        // The test binary itself is dynamically linked.
        let me = std::env::current_exe().unwrap();
        assert!(!is_static(&me));
        if Path::new("/bin/busybox").exists() {
            let out = std::process::Command::new("file").arg("-L").arg("/bin/busybox").output();
            if let Ok(o) = out {
                let text = String::from_utf8_lossy(&o.stdout);
                assert_eq!(
                    is_static(Path::new("/bin/busybox")),
                    text.contains("statically linked"),
                    "{text}"
                );
            }
        }
    }
}

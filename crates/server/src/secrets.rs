//! Secrets at rest: registry credentials are sealed with XChaCha20-Poly1305 under a key kept in
//! the data directory (`secret.key`, mode 0600, created on first start). The sandbox id is the
//! associated data, so a sealed blob copied onto another sandbox's row does not open.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Sealing failed or a sealed value is damaged.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file could not be read or created.
    #[error("secret key {path}: {source}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file has the wrong size.
    #[error("secret key {0} is damaged (it must hold 32 bytes)")]
    BadKey(std::path::PathBuf),
    /// A sealed value does not open (damaged, or sealed for another sandbox or key).
    #[error("a sealed secret does not open")]
    Open,
}

/// Registry credentials, as sealed into the store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryLogin {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Seals and opens secrets with the server's key.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// The raw key, for [`SecretBox::derive`].
    key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key>)")
    }
}

impl SecretBox {
    /// Loads the key at `path`, creating it (32 random bytes, mode 0600) if missing.
    pub fn open_or_create(path: &Path) -> Result<Self, SecretError> {
        let err = |source| SecretError::KeyFile { path: path.to_path_buf(), source };
        let key = match std::fs::read(path) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = vec![0u8; 32];
                rand::rng().fill_bytes(&mut k);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(err)?;
                f.write_all(&k).map_err(err)?;
                f.sync_all().map_err(err)?;
                k
            }
            Err(e) => return Err(err(e)),
        };
        let cipher =
            XChaCha20Poly1305::new_from_slice(&key).map_err(|_| SecretError::BadKey(path.to_path_buf()))?;
        let key =
            <[u8; 32]>::try_from(key.as_slice()).map_err(|_| SecretError::BadKey(path.to_path_buf()))?;
        Ok(Self { cipher, key })
    }

    /// A secret of its own for `context` (HMAC-SHA256 of it under the server's key): stable
    /// across restarts, stored nowhere, and unrelated to the key or to any other context's.
    pub fn derive(&self, context: &str) -> [u8; 32] {
        use hmac::{KeyInit as _, Mac as _};
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(context.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Seals `plain` bound to `context` (the sandbox id): 24-byte nonce, then ciphertext and tag.
    pub fn seal(&self, plain: &[u8], context: &str) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad: context.as_bytes() })
            // Encryption only fails for inputs beyond the cipher's length limit (~256 GiB).
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`SecretBox::seal`] made for the same `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < 24 {
            return Err(SecretError::Open);
        }
        let (nonce, body) = sealed.split_at(24);
        let nonce = XNonce::try_from(nonce).map_err(|_| SecretError::Open)?;
        self.cipher
            .decrypt(&nonce, Payload { msg: body, aad: context.as_bytes() })
            .map_err(|_| SecretError::Open)
    }

    /// Seals registry credentials for a sandbox.
    pub fn seal_login(&self, login: &RegistryLogin, sandbox: &str) -> Vec<u8> {
        self.seal(&serde_json::to_vec(login).unwrap_or_default(), sandbox)
    }

    /// Opens a sandbox's registry credentials.
    pub fn open_login(&self, sealed: &[u8], sandbox: &str) -> Result<RegistryLogin, SecretError> {
        let plain = self.open(sealed, sandbox)?;
        serde_json::from_slice(&plain).map_err(|_| SecretError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_credentials_open_only_for_their_sandbox_and_hide_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let b = SecretBox::open_or_create(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        let login = RegistryLogin { username: "u".into(), password: "hunter2-secret".into() };
        let sealed = b.seal_login(&login, "sandbox-a");
        assert!(!sealed.windows(b"hunter2".len()).any(|w| w == b"hunter2"));
        assert_eq!(b.open_login(&sealed, "sandbox-a").unwrap(), login);
        assert!(b.open_login(&sealed, "sandbox-b").is_err());
        // The same key after a restart.
        let again = SecretBox::open_or_create(&path).unwrap();
        assert_eq!(again.open_login(&sealed, "sandbox-a").unwrap(), login);
        assert!(!format!("{login:?}").contains("hunter2"));
    }
}

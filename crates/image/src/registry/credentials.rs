//! Registry credentials: a user name and a password that no `Debug` output or error shows.

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;

/// A user name and password (or access token used as a password) for one registry.
///
/// `Debug` shows the user name only. Compare callers with [`Self::identity`], which reveals
/// neither part.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    username: String,
    password: String,
}

impl RegistryCredentials {
    /// Credentials from a user name and a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self { username: username.into(), password: password.into() }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password. Never put it in a message or a log.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A digest of both parts: equal for equal credentials, and what single-flight pulls are
    /// keyed by (two callers share a pull only when they present the same credentials).
    pub fn identity(&self) -> Sha256Digest {
        let mut hasher = Sha256::new();
        for part in [&self.username, &self.password] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        Sha256Digest::from_bytes(hasher.finalize().into())
    }
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_user_but_never_the_password() {
        let c = RegistryCredentials::new("alice", "hunter2");
        let text = format!("{c:?} {c:#?}");
        assert!(text.contains("alice"));
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn identity_tells_credentials_apart_without_ambiguity() {
        let a = RegistryCredentials::new("ab", "c").identity();
        let b = RegistryCredentials::new("a", "bc").identity();
        assert_ne!(a, b);
        assert_eq!(a, RegistryCredentials::new("ab", "c").identity());
    }
}

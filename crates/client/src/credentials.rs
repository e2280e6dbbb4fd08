//! Where the CLI finds its server and key: `$SANDPIT_URL` / `$SANDPIT_API_KEY`, else the file
//! `sandpit serve` writes on a first start (`~/.config/sandpit/credentials.json`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The server URL used when neither the environment nor the credentials file names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7700";
/// The variable naming the server's base URL.
pub const URL_VAR: &str = "SANDPIT_URL";
/// The variable holding the API key.
pub const KEY_VAR: &str = "SANDPIT_API_KEY";

/// The credentials file's JSON shape, as `sandpit serve` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsFile {
    /// The server's base URL.
    pub url: String,
    /// The API key.
    pub api_key: String,
}

/// Where a value of [`Credentials`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// An environment variable.
    Env(&'static str),
    /// The credentials file.
    File(PathBuf),
    /// Built in (only the URL has a default).
    Default,
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => write!(f, "${var}"),
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Default => f.write_str("the default"),
        }
    }
}

/// A server URL and an API key, with where each was read from.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The server's base URL.
    pub url: String,
    /// The API key.
    pub api_key: String,
    /// Where the URL came from.
    pub url_source: CredentialSource,
    /// Where the key came from.
    pub key_source: CredentialSource,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("api_key", &"<redacted>")
            .field("url_source", &self.url_source)
            .field("key_source", &self.key_source)
            .finish()
    }
}

/// No usable credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Neither the environment nor a credentials file holds a key.
    #[error(
        "no API key found: set {KEY_VAR} (and {URL_VAR}), or start a server with `sandpit serve`, which writes {}",
        .path.display()
    )]
    NotFound {
        /// The credentials file looked for.
        path: PathBuf,
    },
    /// The credentials file exists but cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The credentials file is not `{"url": "...", "api_key": "..."}`.
    #[error("{} is not a sandpit credentials file ({{\"url\": …, \"api_key\": …}}): {source}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// `$HOME` is not set, so the credentials file cannot be located.
    #[error(
        "no API key found: set {KEY_VAR} (and {URL_VAR}); HOME is not set, so there is no credentials file"
    )]
    NoHome,
}

/// `$HOME/.config/sandpit/credentials.json`, where `sandpit serve` writes the first key.
pub fn default_credentials_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/sandpit/credentials.json"))
}

impl Credentials {
    /// Reads `$SANDPIT_URL` and `$SANDPIT_API_KEY`; what they leave out comes from
    /// `~/.config/sandpit/credentials.json`; the URL defaults to [`DEFAULT_URL`].
    pub fn discover() -> Result<Self, CredentialsError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match default_credentials_path() {
            Some(path) => Self::discover_with(env, &path),
            None => match (env(KEY_VAR), env(URL_VAR)) {
                (Some(key), url) => Ok(Self::from_env(key, url)),
                (None, _) => Err(CredentialsError::NoHome),
            },
        }
    }

    /// [`Credentials::discover`] with the environment and the file's path given.
    pub fn discover_with(
        env: impl Fn(&str) -> Option<String>,
        file: &Path,
    ) -> Result<Self, CredentialsError> {
        let key = env(KEY_VAR);
        let url = env(URL_VAR);
        if let (Some(key), Some(_)) = (&key, &url) {
            return Ok(Self::from_env(key.clone(), url));
        }
        let from_file = read_file(file)?;
        match (key, from_file) {
            (Some(key), None) => Ok(Self::from_env(key, url)),
            (Some(key), Some(f)) => Ok(Self {
                url: f.url,
                api_key: key,
                url_source: CredentialSource::File(file.to_path_buf()),
                key_source: CredentialSource::Env(KEY_VAR),
            }),
            (None, Some(f)) => {
                let (url, url_source) = match url {
                    Some(u) => (u, CredentialSource::Env(URL_VAR)),
                    None => (f.url, CredentialSource::File(file.to_path_buf())),
                };
                Ok(Self {
                    url,
                    api_key: f.api_key,
                    url_source,
                    key_source: CredentialSource::File(file.to_path_buf()),
                })
            }
            (None, None) => Err(CredentialsError::NotFound { path: file.to_path_buf() }),
        }
    }

    fn from_env(key: String, url: Option<String>) -> Self {
        let (url, url_source) = match url {
            Some(u) => (u, CredentialSource::Env(URL_VAR)),
            None => (DEFAULT_URL.to_string(), CredentialSource::Default),
        };
        Self { url, api_key: key, url_source, key_source: CredentialSource::Env(KEY_VAR) }
    }
}

/// The file's content, or `None` when it does not exist.
fn read_file(path: &Path) -> Result<Option<CredentialsFile>, CredentialsError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CredentialsError::Read { path: path.to_path_buf(), source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| CredentialsError::Parse { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials.json");
        std::fs::write(&file, r#"{"url":"http://file:1","api_key":"file-key"}"#).unwrap();
        let c = Credentials::discover_with(env(&[(URL_VAR, "http://env:2"), (KEY_VAR, "env-key")]), &file)
            .unwrap();
        assert_eq!((c.url.as_str(), c.api_key.as_str()), ("http://env:2", "env-key"));
        assert_eq!(c.key_source, CredentialSource::Env(KEY_VAR));
    }

    #[test]
    fn the_file_fills_in_what_the_environment_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials.json");
        std::fs::write(&file, r#"{"url":"http://file:1","api_key":"file-key"}"#).unwrap();
        let c = Credentials::discover_with(env(&[]), &file).unwrap();
        assert_eq!((c.url.as_str(), c.api_key.as_str()), ("http://file:1", "file-key"));
        assert_eq!(c.key_source, CredentialSource::File(file.clone()));
        let c = Credentials::discover_with(env(&[(URL_VAR, "http://env:2")]), &file).unwrap();
        assert_eq!((c.url.as_str(), c.api_key.as_str()), ("http://env:2", "file-key"));
        let c = Credentials::discover_with(env(&[(KEY_VAR, "env-key")]), &file).unwrap();
        assert_eq!((c.url.as_str(), c.api_key.as_str()), ("http://file:1", "env-key"));
    }

    #[test]
    fn a_key_alone_talks_to_the_default_url() {
        let dir = tempfile::tempdir().unwrap();
        let c = Credentials::discover_with(env(&[(KEY_VAR, "k")]), &dir.path().join("none.json")).unwrap();
        assert_eq!(c.url, DEFAULT_URL);
        assert_eq!(c.url_source, CredentialSource::Default);
    }

    #[test]
    fn nothing_found_says_how_to_get_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let e = Credentials::discover_with(env(&[]), &dir.path().join("none.json")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("SANDPIT_API_KEY") && msg.contains("sandpit serve") && msg.contains("none.json"),
            "{msg}"
        );
    }

    #[test]
    fn a_malformed_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials.json");
        std::fs::write(&file, "{").unwrap();
        let e = Credentials::discover_with(env(&[]), &file).unwrap_err();
        assert!(
            matches!(e, CredentialsError::Parse { .. }) && e.to_string().contains("credentials.json"),
            "{e}"
        );
    }

    #[test]
    fn debug_output_hides_the_key() {
        let c = Credentials::from_env("secret-key".into(), None);
        assert!(!format!("{c:?}").contains("secret-key"));
    }
}

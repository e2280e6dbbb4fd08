//! Environment variables given to a sandbox, validated.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most variables one sandbox may be given.
pub const MAX_ENV_VARS: usize = 1000;
/// Largest total size of names and values, in bytes.
pub const MAX_ENV_BYTES: usize = 128 * 1024;

/// Why an environment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A name is empty, starts with a digit, or has a character other than `[A-Za-z0-9_]`.
    #[error(
        "environment variable name {0:?} is invalid: use letters, digits and '_', not starting with a digit"
    )]
    InvalidName(String),
    /// A value holds a NUL byte.
    #[error("environment variable {0:?} has a NUL byte in its value")]
    NulInValue(String),
    /// Too many variables.
    #[error("too many environment variables (at most {MAX_ENV_VARS})")]
    TooMany,
    /// Names and values together are too large.
    #[error("environment variables are too large (at most {MAX_ENV_BYTES} bytes in all)")]
    TooLarge,
}

/// A validated set of environment variables, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct EnvVars(BTreeMap<String, String>);

impl EnvVars {
    /// Validates `vars`.
    pub fn new(vars: BTreeMap<String, String>) -> Result<Self, EnvError> {
        if vars.len() > MAX_ENV_VARS {
            return Err(EnvError::TooMany);
        }
        let mut total = 0usize;
        for (k, v) in &vars {
            if !valid_name(k) {
                return Err(EnvError::InvalidName(k.chars().take(64).collect()));
            }
            if v.contains('\0') {
                return Err(EnvError::NulInValue(k.clone()));
            }
            total += k.len() + v.len() + 2;
        }
        if total > MAX_ENV_BYTES {
            return Err(EnvError::TooLarge);
        }
        Ok(Self(vars))
    }

    /// The variables.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// `NAME=value` strings, sorted by name.
    pub fn to_pairs(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

impl<'de> Deserialize<'de> for EnvVars {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(BTreeMap::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Whether `name` is a portable environment variable name.
pub fn valid_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c.is_ascii_alphanumeric())
        && name.len() <= 256
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<EnvVars, EnvError> {
        EnvVars::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn good_names_pass_and_bad_names_are_named_in_the_error() {
        assert!(env(&[("PATH", "/bin"), ("_x1", ""), ("a", "b=c")]).is_ok());
        for bad in ["", "1A", "A-B", "A=B", "A B", "É"] {
            assert_eq!(env(&[(bad, "v")]), Err(EnvError::InvalidName(bad.into())), "{bad}");
        }
        assert_eq!(env(&[("A", "x\0y")]), Err(EnvError::NulInValue("A".into())));
    }

    #[test]
    fn size_and_count_are_bounded() {
        let big = "x".repeat(MAX_ENV_BYTES);
        assert_eq!(env(&[("A", &big)]), Err(EnvError::TooLarge));
        let many: BTreeMap<String, String> =
            (0..=MAX_ENV_VARS).map(|i| (format!("V{i}"), String::new())).collect();
        assert_eq!(EnvVars::new(many), Err(EnvError::TooMany));
    }
}

//! Typed identifiers.
//!
//! A [`SandboxId`] is 20 characters of lowercase `[0-9a-v]` (base32hex): 48 bits of Unix
//! milliseconds then 52 random bits, so IDs sort by creation time and fit in a DNS label
//! (`<port>-<id>.<domain>` routing).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
const LEN: usize = 20;

/// The identifier of a sandbox.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId([u8; LEN]);

/// A string that is not a valid ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sandbox id {0:?}: expected 20 characters of [0-9a-v]")]
pub struct IdError(pub String);

impl SandboxId {
    /// A new, time-ordered ID.
    pub fn generate() -> Self {
        let u = uuid::Uuid::now_v7().as_u128();
        // UUIDv7: 48 bits of ms timestamp, 4 bits version, 12 random, 2 variant, 62 random.
        let ms = u >> 80;
        let rand_a = (u >> 64) & 0xfff;
        let rand_b = u & ((1u128 << 62) - 1);
        let bits: u128 = (ms << 52) | (rand_a << 40) | (rand_b & ((1u128 << 40) - 1));
        let mut out = [0u8; LEN];
        for (i, c) in out.iter_mut().enumerate() {
            let shift = 5 * (LEN - 1 - i);
            let idx = usize::try_from((bits >> shift) & 0x1f).unwrap_or(0);
            *c = ALPHABET[idx];
        }
        Self(out)
    }

    /// The ID as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes from ALPHABET are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl FromStr for SandboxId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != LEN || !b.iter().all(|c| ALPHABET.contains(c)) {
            return Err(IdError(s.chars().take(64).collect()));
        }
        let mut out = [0u8; LEN];
        out.copy_from_slice(b);
        Ok(Self(out))
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SandboxId({})", self.as_str())
    }
}

impl Serialize for SandboxId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SandboxId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_dns_labels_and_time_ordered() {
        let a = SandboxId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = SandboxId::generate();
        assert!(a < b, "{a} !< {b}");
        assert_eq!(a.as_str().len(), 20);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_eq!(a.as_str().parse::<SandboxId>().unwrap(), a);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "abc",
            "ABCDEFGHIJKLMNOPQRST",
            "0123456789abcdefghiz",
            "0123456789abcdefghij0",
            "../../../etc/passw",
        ] {
            assert!(bad.parse::<SandboxId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_round_trip_through_json() {
        let a = SandboxId::generate();
        let s = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<SandboxId>(&s).unwrap(), a);
        assert!(serde_json::from_str::<SandboxId>("\"nope\"").is_err());
    }
}

//! Content digests (`sha256:<hex>`) and a reader that hashes and counts what passes through it.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::ImageError;

/// A sha256 content digest, written `sha256:<64 lowercase hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// A digest from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix (used as file names in the store).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the bare 64-hex form used as file names.
    pub fn from_hex(hex_digits: &str) -> Result<Self, ImageError> {
        let invalid = |reason| ImageError::InvalidDigest { input: truncate(hex_digits), reason };
        if hex_digits.len() != 64 {
            return Err(invalid("the hex part must be 64 characters"));
        }
        if !hex_digits.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid("the hex part must be lowercase hexadecimal"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut out)
            .map_err(|_| invalid("the hex part must be lowercase hexadecimal"))?;
        Ok(Self(out))
    }

    /// Parses a digest as written in an OCI descriptor; other algorithms are a typed error.
    pub fn from_oci(digest: &oci_spec::image::Digest) -> Result<Self, ImageError> {
        digest.as_ref().parse()
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for Sha256Digest {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("sha256", hex_digits)) => {
                Self::from_hex(hex_digits).map_err(|_| ImageError::InvalidDigest {
                    input: truncate(s),
                    reason: "the hex part must be 64 lowercase hexadecimal characters",
                })
            }
            Some((_, _)) => Err(ImageError::UnsupportedDigestAlgorithm { digest: truncate(s) }),
            None => {
                Err(ImageError::InvalidDigest { input: truncate(s), reason: "missing \"sha256:\" prefix" })
            }
        }
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Keeps error messages short when the input is hostile.
pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

/// A number of bytes shared by several readers at once (the uncompressed bytes of one image's
/// layers, unpacked concurrently): every byte read through a [`Charge`] takes from it, and a read
/// that takes it past its limit fails.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    limit: u64,
    used: AtomicU64,
}

impl ByteBudget {
    /// A budget of `limit` bytes, none used.
    pub(crate) fn new(limit: u64) -> Self {
        Self { limit, used: AtomicU64::new(0) }
    }

    /// The bytes not yet taken.
    pub(crate) fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used.load(Ordering::SeqCst))
    }

    /// Takes `bytes`; `false` when the total taken is then past the limit (they are taken all
    /// the same: give them back when the taker stops).
    pub(crate) fn take(&self, bytes: u64) -> bool {
        let before = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| Some(used.saturating_add(bytes)))
            .unwrap_or_else(|used| used);
        before.saturating_add(bytes) <= self.limit
    }

    /// Returns bytes taken earlier.
    pub(crate) fn give_back(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| Some(used.saturating_sub(bytes)));
    }
}

/// What one reader took from a [`ByteBudget`]: given back when dropped, unless [`Self::keep`]
/// is called.
#[derive(Debug)]
pub(crate) struct Charge<'b> {
    budget: &'b ByteBudget,
    taken: AtomicU64,
}

impl<'b> Charge<'b> {
    /// Nothing taken yet from `budget`.
    pub(crate) fn new(budget: &'b ByteBudget) -> Self {
        Self { budget, taken: AtomicU64::new(0) }
    }

    /// Takes `bytes` from the budget; `false` when that exceeds it.
    fn take(&self, bytes: u64) -> bool {
        self.taken.fetch_add(bytes, Ordering::Relaxed);
        self.budget.take(bytes)
    }

    /// The bytes taken so far.
    pub(crate) fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Leaves what was taken in the budget for good.
    pub(crate) fn keep(self) {
        self.taken.store(0, Ordering::Relaxed);
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.taken.load(Ordering::Relaxed));
    }
}

/// A reader that hashes (sha256) and counts every byte read through it, and can refuse to pass
/// more than a limit, of its own or of a shared [`ByteBudget`].
#[derive(Debug)]
pub(crate) struct DigestReader<'c, R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
    charge: Option<&'c Charge<'c>>,
    exceeded: bool,
    inner_failed: bool,
}

impl<'c, R: Read> DigestReader<'c, R> {
    /// Wraps `inner` with no limit.
    pub(crate) fn new(inner: R) -> Self {
        Self::with_limit(inner, u64::MAX)
    }

    /// Wraps `inner`; reading past `limit` bytes fails (and [`Self::exceeded`] says so).
    pub(crate) fn with_limit(inner: R, limit: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
            charge: None,
            exceeded: false,
            inner_failed: false,
        }
    }

    /// Also charges every byte read to `charge`: a read that exceeds its budget fails like one
    /// past the limit.
    pub(crate) fn charging(mut self, charge: &'c Charge<'c>) -> Self {
        self.charge = Some(charge);
        self
    }

    /// Whether a read failed because the limit or the budget was reached.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// Whether the wrapped reader itself returned an error.
    pub(crate) fn inner_failed(&self) -> bool {
        self.inner_failed
    }

    /// The digest of everything read, and its length.
    pub(crate) fn finish(self) -> (Sha256Digest, u64) {
        (Sha256Digest(self.hasher.finalize().into()), self.count)
    }
}

impl<R: Read> Read for DigestReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.exceeded {
            return Err(io::Error::other("size limit reached"));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.inner_failed = true;
                return Err(e);
            }
        };
        let data = buf.get(..n).unwrap_or_default();
        self.hasher.update(data);
        self.count = self.count.saturating_add(n as u64);
        let within_budget = self.charge.is_none_or(|charge| charge.take(n as u64));
        if self.count > self.limit || !within_budget {
            self.exceeded = true;
            return Err(io::Error::other("size limit reached"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_through_its_text_form() {
        let d = Sha256Digest::of(b"hello");
        let text = d.to_string();
        assert_eq!(text, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(text.parse::<Sha256Digest>().unwrap(), d);
    }

    #[test]
    fn digest_parse_refuses_other_algorithms_and_bad_hex() {
        assert!(matches!(
            "sha512:abcd".parse::<Sha256Digest>(),
            Err(ImageError::UnsupportedDigestAlgorithm { .. })
        ));
        assert!(matches!("sha256:ABCD".parse::<Sha256Digest>(), Err(ImageError::InvalidDigest { .. })));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(matches!(upper.parse::<Sha256Digest>(), Err(ImageError::InvalidDigest { .. })));
        assert!(matches!("deadbeef".parse::<Sha256Digest>(), Err(ImageError::InvalidDigest { .. })));
    }

    #[test]
    fn digest_reader_hashes_counts_and_stops_at_its_limit() {
        let mut r = DigestReader::new(&b"hello"[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.finish(), (Sha256Digest::of(b"hello"), 5));

        let mut limited = DigestReader::with_limit(&b"hello world"[..], 4);
        assert!(io::copy(&mut limited, &mut io::sink()).is_err());
        assert!(limited.exceeded());
    }

    #[test]
    fn readers_sharing_a_budget_stop_at_its_limit_together_and_give_back_what_they_drop() {
        let budget = ByteBudget::new(10);
        let kept = Charge::new(&budget);
        let mut a = DigestReader::new(&b"123456"[..]).charging(&kept);
        io::copy(&mut a, &mut io::sink()).unwrap();
        assert_eq!(kept.taken(), 6);
        kept.keep();
        assert_eq!(budget.remaining(), 4);

        {
            let dropped = Charge::new(&budget);
            let mut b = DigestReader::new(&b"12345"[..]).charging(&dropped);
            assert!(io::copy(&mut b, &mut io::sink()).is_err());
            assert!(b.exceeded());
            assert_eq!(budget.remaining(), 0);
        }
        assert_eq!(budget.remaining(), 4, "a dropped charge gives its bytes back");
        let fits = Charge::new(&budget);
        let mut c = DigestReader::new(&b"1234"[..]).charging(&fits);
        io::copy(&mut c, &mut io::sink()).unwrap();
        assert!(!c.exceeded());
    }
}

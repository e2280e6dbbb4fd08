//! Typed quantities: CPU in millicores and sizes in bytes, with the string forms users write
//! (`"1"`, `"0.5"`, `"500m"` for CPU; `"2Gi"`, `"512Mi"`, `"1G"`, `"1048576"` for sizes).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A quantity string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text is not a number with an optional known suffix.
    #[error("{text:?} is not a valid {what} (examples: {examples})")]
    Malformed {
        /// The offending text (shortened).
        text: String,
        /// CPU or size.
        what: &'static str,
        /// Valid examples.
        examples: &'static str,
    },
    /// The value does not fit.
    #[error("{text:?} is too large")]
    TooLarge {
        /// The offending text (shortened).
        text: String,
    },
    /// The value has a fraction smaller than the unit allows.
    #[error("{text:?} is not a whole number of {unit}")]
    Fraction {
        /// The offending text (shortened).
        text: String,
        /// The smallest unit.
        unit: &'static str,
    },
}

/// Parses `digits[.digits]` into (integer part, fraction digits as numerator, denominator).
fn parse_decimal(s: &str) -> Option<(u128, u128, u128)> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if int.len() > 20 || frac.len() > 9 {
        return None;
    }
    let i: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let f: u128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    Some((i, f, 10u128.pow(u32::try_from(frac.len()).ok()?)))
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// CPU in thousandths of a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MilliCpu(pub u32);

impl MilliCpu {
    /// Whole cores, rounded up.
    pub fn cores_ceil(self) -> u32 {
        self.0.div_ceil(1000)
    }
}

impl FromStr for MilliCpu {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let malformed = || QuantityError::Malformed {
            text: short(s),
            what: "CPU amount",
            examples: "\"1\", \"0.5\", \"500m\"",
        };
        let (num, scale) = match t.strip_suffix('m') {
            Some(n) => (n, 1u128),
            None => (t, 1000u128),
        };
        let (i, f, d) = parse_decimal(num).ok_or_else(malformed)?;
        let total = i * scale * d + f * scale;
        if !total.is_multiple_of(d) {
            return Err(QuantityError::Fraction { text: short(s), unit: "millicores" });
        }
        let m = u32::try_from(total / d).map_err(|_| QuantityError::TooLarge { text: short(s) })?;
        Ok(Self(m))
    }
}

impl fmt::Display for MilliCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) { write!(f, "{}", self.0 / 1000) } else { write!(f, "{}m", self.0) }
    }
}

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// One kibibyte.
    pub const KIB: u64 = 1 << 10;
    /// One mebibyte.
    pub const MIB: u64 = 1 << 20;
    /// One gibibyte.
    pub const GIB: u64 = 1 << 30;

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n * Self::MIB)
    }

    /// `n` gibibytes.
    pub const fn gib(n: u64) -> Self {
        Self(n * Self::GIB)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

const SIZE_SUFFIXES: &[(&str, u128)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

impl FromStr for ByteSize {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let malformed = || QuantityError::Malformed {
            text: short(s),
            what: "size",
            examples: "\"2Gi\", \"512Mi\", \"1G\", \"1048576\"",
        };
        let t = t.strip_suffix('B').unwrap_or(t);
        let (num, scale) = SIZE_SUFFIXES
            .iter()
            .find_map(|(suf, mul)| t.strip_suffix(suf).map(|n| (n, *mul)))
            .unwrap_or((t, 1));
        let (i, f, d) = parse_decimal(num).ok_or_else(malformed)?;
        let total = i
            .checked_mul(scale)
            .and_then(|v| v.checked_mul(d))
            .and_then(|v| v.checked_add(f * scale))
            .ok_or_else(|| QuantityError::TooLarge { text: short(s) })?;
        if !total.is_multiple_of(d) {
            return Err(QuantityError::Fraction { text: short(s), unit: "bytes" });
        }
        let b = u64::try_from(total / d).map_err(|_| QuantityError::TooLarge { text: short(s) })?;
        Ok(Self(b))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suf, mul) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if self.0 >= mul && self.0.is_multiple_of(mul) {
                return write!(f, "{}{suf}", self.0 / mul);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Accepts a string (`"2Gi"`) or a plain JSON number.
#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Str(String),
    Num(u64),
}

macro_rules! serde_as_string {
    ($t:ty, $from_num:expr) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match StrOrNum::deserialize(d)? {
                    StrOrNum::Str(s) => s.parse().map_err(serde::de::Error::custom),
                    StrOrNum::Num(n) => $from_num(n).map_err(serde::de::Error::custom),
                }
            }
        }
    };
}

serde_as_string!(MilliCpu, |n: u64| {
    // A bare number is whole cores, as in the string form.
    n.checked_mul(1000)
        .and_then(|m| u32::try_from(m).ok())
        .map(MilliCpu)
        .ok_or_else(|| QuantityError::TooLarge { text: n.to_string() })
});
serde_as_string!(ByteSize, |n: u64| Ok::<_, QuantityError>(ByteSize(n)));

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_forms_parse_to_millicores() {
        for (s, m) in [("1", 1000), ("0.5", 500), ("500m", 500), ("2.25", 2250), ("16", 16000), (".5", 500)] {
            assert_eq!(s.parse::<MilliCpu>().unwrap(), MilliCpu(m), "{s}");
        }
        for bad in ["", "m", "1.2.3", "-1", "1e3", "0.0005", "abc", "1 m", "99999999999"] {
            assert!(bad.parse::<MilliCpu>().is_err(), "{bad}");
        }
    }

    #[test]
    fn size_forms_parse_to_bytes() {
        for (s, b) in [
            ("2Gi", 2 << 30),
            ("512Mi", 512 << 20),
            ("1G", 1_000_000_000),
            ("1048576", 1 << 20),
            ("1.5Gi", 3 << 29),
            ("64KiB", 64 << 10),
        ] {
            assert_eq!(s.parse::<ByteSize>().unwrap(), ByteSize(b), "{s}");
        }
        for bad in ["", "Gi", "2Xi", "-1Gi", "0.3Ki", "99999999999Ti"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities_serialize_as_canonical_strings() {
        assert_eq!(serde_json::to_string(&ByteSize::gib(2)).unwrap(), "\"2Gi\"");
        assert_eq!(serde_json::to_string(&MilliCpu(1500)).unwrap(), "\"1500m\"");
        assert_eq!(serde_json::from_str::<ByteSize>("1024").unwrap(), ByteSize(1024));
        assert_eq!(serde_json::from_str::<MilliCpu>("2").unwrap(), MilliCpu(2000));
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(b in any::<u64>(), m in any::<u32>()) {
            prop_assert_eq!(ByteSize(b).to_string().parse::<ByteSize>().unwrap(), ByteSize(b));
            prop_assert_eq!(MilliCpu(m).to_string().parse::<MilliCpu>().unwrap(), MilliCpu(m));
        }
    }
}

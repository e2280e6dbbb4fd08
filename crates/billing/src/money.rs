//! Exact money: [`Money`] is a signed count of micro-units (millionths) of the account currency,
//! written as a plain decimal (`"12.50"`, `"-0.000001"`) with at most six decimals.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-units in one unit of currency.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// Decimal places of a micro-unit.
const DECIMALS: usize = 6;

/// An amount of the account currency, in micro-units. Currency-agnostic: the currency code is
/// configuration, shown by callers next to the number.
///
/// It is written (by [`fmt::Display`] and in serde) as a decimal string with exactly six
/// decimals, e.g. `12.345678`, so no JSON float ever carries money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

/// An arithmetic result that does not fit in the range of [`Money`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount is outside the range money can hold")]
pub struct MoneyOverflow;

/// A money string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not an optional `-`, digits, and optionally `.` and more digits.
    #[error("{text:?} is not an amount of money (examples: \"12\", \"12.50\", \"0.000001\")")]
    Malformed {
        /// The offending text (shortened).
        text: String,
    },
    /// More decimals than a micro-unit has.
    #[error("{text:?} has more than 6 decimals")]
    TooManyDecimals {
        /// The offending text (shortened).
        text: String,
    },
    /// The amount does not fit.
    #[error("{text:?} is too large")]
    TooLarge {
        /// The offending text (shortened).
        text: String,
    },
}

impl Money {
    /// Nothing.
    pub const ZERO: Self = Self(0);
    /// The largest amount.
    pub const MAX: Self = Self(i64::MAX);
    /// The smallest (most negative) amount.
    pub const MIN: Self = Self(i64::MIN);

    /// `micros` micro-units.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// `units` whole units of currency, or `None` if that does not fit.
    pub const fn from_units(units: i64) -> Option<Self> {
        match units.checked_mul(MICROS_PER_UNIT) {
            Some(m) => Some(Self(m)),
            None => None,
        }
    }

    /// The amount in micro-units.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    pub const fn checked_add(self, other: Self) -> Option<Self> {
        match self.0.checked_add(other.0) {
            Some(m) => Some(Self(m)),
            None => None,
        }
    }

    /// `self - other`, or `None` on overflow.
    pub const fn checked_sub(self, other: Self) -> Option<Self> {
        match self.0.checked_sub(other.0) {
            Some(m) => Some(Self(m)),
            None => None,
        }
    }

    /// The sum of `amounts`, or `None` if any partial sum overflows.
    pub fn checked_sum<I: IntoIterator<Item = Self>>(amounts: I) -> Option<Self> {
        amounts.into_iter().try_fold(Self::ZERO, Self::checked_add)
    }

    /// Whether the amount is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Whether the amount is above zero.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

impl FromStr for Money {
    type Err = MoneyError;

    /// Parses `[-]digits[.digits]` exactly: no exponent, no `+`, no thousands separators, at
    /// most six decimals (never rounded away), surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let malformed = || MoneyError::Malformed { text: short(s) };
        let (negative, body) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (int, frac) = match body.split_once('.') {
            Some((_, "")) => return Err(malformed()),
            Some((i, f)) => (i, f),
            None => (body, ""),
        };
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(malformed());
        }
        if frac.len() > DECIMALS {
            return Err(MoneyError::TooManyDecimals { text: short(s) });
        }
        let too_large = || MoneyError::TooLarge { text: short(s) };
        // 30 digits keep the integer part well inside i128 before the range check below.
        let int = int.trim_start_matches('0');
        if int.len() > 30 {
            return Err(too_large());
        }
        let whole: i128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| malformed())? };
        let mut fraction: i128 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| malformed())? };
        for _ in frac.len()..DECIMALS {
            fraction *= 10;
        }
        let magnitude = whole * i128::from(MICROS_PER_UNIT) + fraction;
        let signed = if negative { -magnitude } else { magnitude };
        i64::try_from(signed).map(Self).map_err(|_| too_large())
    }
}

impl fmt::Display for Money {
    /// Writes `[-]units.micros` with exactly six decimals; width and alignment flags apply.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per = MICROS_PER_UNIT.unsigned_abs();
        f.pad(&format!("{sign}{}.{:06}", abs / per, abs % per))
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    /// Only strings: a JSON or TOML float would already have lost exactness.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn decimal_strings_parse_to_exact_micro_units() {
        for (s, micros) in [
            ("12.50", 12_500_000),
            ("12", 12_000_000),
            ("0.000001", 1),
            ("-0.000001", -1),
            ("-3.8", -3_800_000),
            ("007.25", 7_250_000),
            ("  1.5 ", 1_500_000),
            ("-0", 0),
            ("9223372036854.775807", i64::MAX),
            ("-9223372036854.775808", i64::MIN),
        ] {
            assert_eq!(m(s), Money::from_micros(micros), "{s}");
        }
    }

    #[test]
    fn malformed_and_inexact_strings_are_refused() {
        for bad in [
            "", "-", ".", "12.", ".5", "+1", "1e3", "1E-6", "1.5e2", "1,000.00", "1 000", "--1", "abc",
            "1.2.3", "NaN", "inf", "0x10",
        ] {
            assert!(matches!(bad.parse::<Money>(), Err(MoneyError::Malformed { .. })), "{bad:?}");
        }
        assert!(matches!("0.0000001".parse::<Money>(), Err(MoneyError::TooManyDecimals { .. })));
        assert!(matches!("1.1234567".parse::<Money>(), Err(MoneyError::TooManyDecimals { .. })));
        assert!(matches!("9223372036854.775808".parse::<Money>(), Err(MoneyError::TooLarge { .. })));
        assert!(matches!("1".repeat(40).parse::<Money>(), Err(MoneyError::TooLarge { .. })));
    }

    #[test]
    fn display_writes_six_decimals_and_sign() {
        assert_eq!(Money::from_micros(12_345_678).to_string(), "12.345678");
        assert_eq!(Money::from_micros(12_500_000).to_string(), "12.500000");
        assert_eq!(Money::from_micros(-1).to_string(), "-0.000001");
        assert_eq!(Money::ZERO.to_string(), "0.000000");
        assert_eq!(Money::MIN.to_string(), "-9223372036854.775808");
        assert_eq!(format!("{:>10}", Money::from_micros(1_000_000)), "  1.000000");
    }

    #[test]
    fn money_serializes_as_a_string_and_refuses_json_numbers() {
        assert_eq!(serde_json::to_string(&m("0.4")).unwrap(), "\"0.400000\"");
        assert_eq!(serde_json::from_str::<Money>("\"3.80\"").unwrap(), m("3.8"));
        assert!(serde_json::from_str::<Money>("3.8").is_err());
        assert!(serde_json::from_str::<Money>("3").is_err());
    }

    #[test]
    fn checked_arithmetic_reports_overflow() {
        assert_eq!(Money::MAX.checked_add(Money::from_micros(1)), None);
        assert_eq!(Money::MIN.checked_sub(Money::from_micros(1)), None);
        assert_eq!(m("1.5").checked_add(m("2.25")), Some(m("3.75")));
        assert_eq!(m("1.5").checked_sub(m("2.25")), Some(m("-0.75")));
        assert_eq!(Money::checked_sum([m("1"), m("2"), m("-0.5")]), Some(m("2.5")));
        assert_eq!(Money::checked_sum([Money::MAX, m("1")]), None);
        assert_eq!(Money::from_units(3), Some(m("3")));
        assert_eq!(Money::from_units(i64::MAX), None);
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(micros in any::<i64>()) {
            let a = Money::from_micros(micros);
            prop_assert_eq!(a.to_string().parse::<Money>().unwrap(), a);
            let json = serde_json::to_string(&a).unwrap();
            prop_assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), a);
        }

        #[test]
        fn short_decimals_parse_exactly(units in 0i64..1_000_000_000, frac in 0u32..1_000_000, digits in 1usize..=6) {
            let frac_text = format!("{frac:06}");
            let text = format!("{units}.{}", &frac_text[..digits]);
            let kept: i64 = frac_text[..digits].parse::<i64>().unwrap() * 10i64.pow(u32::try_from(6 - digits).unwrap());
            prop_assert_eq!(text.parse::<Money>().unwrap(), Money::from_micros(units * 1_000_000 + kept));
        }
    }
}

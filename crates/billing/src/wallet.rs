//! Wallet arithmetic: a [`Balance`] takes credits (top-ups) and charges (usage); a charge may
//! take it below zero, and callers decide what to do about that with [`Balance::would_go_negative`]
//! and [`Balance::is_low`].

use serde::{Deserialize, Serialize};

use crate::money::Money;

/// The money in a wallet; negative when usage outran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Balance(Money);

/// A wallet operation that cannot be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// A credit must add money.
    #[error("a credit must be positive, not {0}")]
    CreditNotPositive(Money),
    /// A charge must not add money.
    #[error("a charge must not be negative, not {0}")]
    NegativeCharge(Money),
    /// The balance would leave the range of money.
    #[error("the balance would leave the range money can hold")]
    Overflow,
}

impl Balance {
    /// A balance of `amount`.
    pub const fn new(amount: Money) -> Self {
        Self(amount)
    }

    /// The amount in the wallet.
    pub const fn amount(self) -> Money {
        self.0
    }

    /// The balance after adding `amount` (a top-up, a refund).
    pub fn credit(self, amount: Money) -> Result<Self, WalletError> {
        if !amount.is_positive() {
            return Err(WalletError::CreditNotPositive(amount));
        }
        self.0.checked_add(amount).map(Self).ok_or(WalletError::Overflow)
    }

    /// The balance after taking `amount` (usage). The result may be negative: metered seconds
    /// already happened and are owed.
    pub fn charge(self, amount: Money) -> Result<Self, WalletError> {
        if amount.is_negative() {
            return Err(WalletError::NegativeCharge(amount));
        }
        self.0.checked_sub(amount).map(Self).ok_or(WalletError::Overflow)
    }

    /// Whether the balance is below zero.
    pub const fn is_negative(self) -> bool {
        self.0.is_negative()
    }

    /// Whether the balance is below `threshold` (time to warn the owner).
    pub fn is_low(self, threshold: Money) -> bool {
        self.0 < threshold
    }

    /// Whether charging `amount` would leave the balance below zero.
    pub fn would_go_negative(self, amount: Money) -> bool {
        i128::from(self.0.micros()) - i128::from(amount.micros()) < 0
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
    fn credits_add_and_charges_subtract() {
        let b = Balance::new(m("10")).credit(m("5.5")).unwrap().charge(m("0.25")).unwrap();
        assert_eq!(b.amount(), m("15.25"));
    }

    #[test]
    fn charges_may_take_the_balance_below_zero() {
        let b = Balance::new(m("1")).charge(m("1.000001")).unwrap();
        assert!(b.is_negative());
        assert_eq!(b.amount(), m("-0.000001"));
    }

    #[test]
    fn non_positive_credits_and_negative_charges_are_refused() {
        let b = Balance::new(m("1"));
        assert_eq!(b.credit(Money::ZERO), Err(WalletError::CreditNotPositive(Money::ZERO)));
        assert_eq!(b.credit(m("-1")), Err(WalletError::CreditNotPositive(m("-1"))));
        assert_eq!(b.charge(m("-1")), Err(WalletError::NegativeCharge(m("-1"))));
        assert_eq!(b.charge(Money::ZERO), Ok(b));
    }

    #[test]
    fn overflowing_operations_are_refused() {
        assert_eq!(Balance::new(Money::MAX).credit(m("0.000001")), Err(WalletError::Overflow));
        assert_eq!(Balance::new(Money::MIN).charge(m("0.000001")), Err(WalletError::Overflow));
    }

    #[test]
    fn low_balance_is_below_the_threshold() {
        let b = Balance::new(m("5"));
        assert!(b.is_low(m("5.000001")));
        assert!(!b.is_low(m("5")));
        assert!(!b.is_low(m("1")));
    }

    #[test]
    fn would_go_negative_only_past_zero() {
        let b = Balance::new(m("2"));
        assert!(!b.would_go_negative(m("2")));
        assert!(b.would_go_negative(m("2.000001")));
        assert!(Balance::new(Money::MIN).would_go_negative(Money::ZERO));
        assert!(!Balance::new(Money::MAX).would_go_negative(Money::MAX));
    }

    proptest! {
        #[test]
        fn would_go_negative_predicts_charge(start in -1_000_000_000_000i64..1_000_000_000_000, amount in 0i64..1_000_000_000_000) {
            let b = Balance::new(Money::from_micros(start));
            let amount = Money::from_micros(amount);
            prop_assert_eq!(b.would_go_negative(amount), b.charge(amount).unwrap().is_negative());
        }
    }
}

//! Billing math of sandpit: exact money, operator rates, per-second metering of persisted state
//! intervals into ledger lines, breakdowns of those lines, and wallet balance helpers.
//!
//! This crate is pure: no IO, no clock, no floats. Money is an integer count of micro-units
//! (millionths) of the account currency.
//!
//! # Rounding
//!
//! Every charge rounds **down** to a whole micro-unit, but never per tick: for one resource of
//! one interval, the charge for its first `n` whole seconds is always
//! `floor(exact_hourly_rate × n / 3600)`, and a line for `(a, b]` is the difference between the
//! cumulative charges at `b` and at `a`. Charging at any checkpoints therefore telescopes to
//! exactly the charge of the whole span at once, and the rounding remainder carries forward
//! instead of being lost on every tick. Timestamps are truncated to whole Unix seconds (toward
//! the past) before anything else, so a sub-second part of a watermark never matters.

pub mod breakdown;
pub mod meter;
pub mod money;
pub mod rates;
pub mod wallet;

pub use breakdown::Breakdown;
pub use meter::{ChargeLine, Interval, Meter, MeterError, UsageKind};
pub use money::{Money, MoneyError, MoneyOverflow};
pub use rates::{GpuUsage, HourlyPrice, Rates, RatesError, Resource, Spec};
pub use wallet::{Balance, WalletError};

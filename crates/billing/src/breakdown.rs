//! [`Breakdown`]: charge lines summed by resource, sandbox, project and UTC day, each grouping
//! adding up exactly to the total.

use std::collections::BTreeMap;

use sandpit_types::SandboxId;
use time::{Date, UtcOffset};

use crate::meter::ChargeLine;
use crate::money::{Money, MoneyOverflow};
use crate::rates::Resource;

/// Sums of charge lines; every map's values add up to [`Breakdown::total`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakdown<P> {
    /// By resource.
    pub by_resource: BTreeMap<Resource, Money>,
    /// By sandbox.
    pub by_sandbox: BTreeMap<SandboxId, Money>,
    /// By project key.
    pub by_project: BTreeMap<P, Money>,
    /// By the UTC date of a line's seconds (the date of its `from`: lines from [`crate::Meter`]
    /// never cross a UTC midnight).
    pub by_day: BTreeMap<Date, Money>,
    /// All lines.
    pub total: Money,
}

impl<P> Default for Breakdown<P> {
    fn default() -> Self {
        Self {
            by_resource: BTreeMap::new(),
            by_sandbox: BTreeMap::new(),
            by_project: BTreeMap::new(),
            by_day: BTreeMap::new(),
            total: Money::ZERO,
        }
    }
}

fn add_to<K: Ord>(map: &mut BTreeMap<K, Money>, key: K, amount: Money) -> Result<(), MoneyOverflow> {
    let slot = map.entry(key).or_insert(Money::ZERO);
    *slot = slot.checked_add(amount).ok_or(MoneyOverflow)?;
    Ok(())
}

impl<P: Ord + Clone> Breakdown<P> {
    /// Sums `lines`; fails only if a sum leaves the range of [`Money`].
    pub fn from_lines(lines: &[ChargeLine<P>]) -> Result<Self, MoneyOverflow> {
        let mut b = Self::default();
        for line in lines {
            let a = line.amount;
            b.total = b.total.checked_add(a).ok_or(MoneyOverflow)?;
            add_to(&mut b.by_resource, line.resource, a)?;
            add_to(&mut b.by_sandbox, line.sandbox, a)?;
            add_to(&mut b.by_project, line.project.clone(), a)?;
            add_to(&mut b.by_day, line.from.to_offset(UtcOffset::UTC).date(), a)?;
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::{Duration, Month, OffsetDateTime};

    fn line(sandbox: &str, project: &str, resource: Resource, micros: i64, from: i64) -> ChargeLine<String> {
        let from = OffsetDateTime::from_unix_timestamp(from).unwrap();
        ChargeLine {
            sandbox: sandbox.parse().unwrap(),
            project: project.to_owned(),
            resource,
            seconds: 10,
            amount: Money::from_micros(micros),
            from,
            to: from + Duration::seconds(10),
        }
    }

    const A: &str = "0000000000000000000a";
    const B: &str = "0000000000000000000b";
    const DAY1: i64 = 1_767_225_600; // 2026-01-01 00:00:00 UTC

    #[test]
    fn lines_are_grouped_by_resource_sandbox_project_and_day() {
        let lines = [
            line(A, "p1", Resource::Gpu, 300, DAY1 - 10),
            line(A, "p1", Resource::Cpu, 20, DAY1),
            line(B, "p2", Resource::Gpu, 5, DAY1 + 100),
            line(B, "p2", Resource::Storage, 1, DAY1 + 86_400),
        ];
        let b = Breakdown::from_lines(&lines).unwrap();
        let m = Money::from_micros;
        assert_eq!(b.total, m(326));
        assert_eq!(b.by_resource[&Resource::Gpu], m(305));
        assert_eq!(b.by_resource[&Resource::Cpu], m(20));
        assert_eq!(b.by_resource[&Resource::Storage], m(1));
        assert!(!b.by_resource.contains_key(&Resource::Memory));
        assert_eq!(b.by_sandbox[&A.parse().unwrap()], m(320));
        assert_eq!(b.by_project["p2"], m(6));
        let day = |d| Date::from_calendar_date(2026, Month::January, d).unwrap();
        let dec31 = Date::from_calendar_date(2025, Month::December, 31).unwrap();
        assert_eq!(b.by_day[&dec31], m(300));
        assert_eq!(b.by_day[&day(1)], m(25));
        assert_eq!(b.by_day[&day(2)], m(1));
    }

    #[test]
    fn no_lines_give_an_empty_breakdown() {
        let b = Breakdown::<String>::from_lines(&[]).unwrap();
        assert_eq!(b, Breakdown::default());
    }

    #[test]
    fn sums_beyond_the_money_range_are_an_error() {
        let lines = [line(A, "p", Resource::Gpu, i64::MAX, DAY1), line(B, "q", Resource::Cpu, 1, DAY1)];
        assert_eq!(Breakdown::from_lines(&lines), Err(MoneyOverflow));
    }

    proptest! {
        #[test]
        fn every_grouping_sums_to_the_total(
            raw in prop::collection::vec(
                (prop::sample::select(vec![A, B, "0000000000000000000c"]), 0u8..4, 0usize..4, 0i64..10_000_000_000, 0i64..30 * 86_400),
                0..200,
            )
        ) {
            let lines: Vec<_> = raw
                .iter()
                .map(|&(sb, project, r, micros, at)| line(sb, &format!("p{project}"), Resource::ALL[r], micros, DAY1 + at))
                .collect();
            let b = Breakdown::from_lines(&lines).unwrap();
            let expected: i64 = lines.iter().map(|l| l.amount.micros()).sum();
            prop_assert_eq!(b.total.micros(), expected);
            for sum in [
                Money::checked_sum(b.by_resource.values().copied()),
                Money::checked_sum(b.by_sandbox.values().copied()),
                Money::checked_sum(b.by_project.values().copied()),
                Money::checked_sum(b.by_day.values().copied()),
            ] {
                prop_assert_eq!(sum, Some(b.total));
            }
        }
    }
}

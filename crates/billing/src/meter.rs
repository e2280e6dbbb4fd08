//! Metering: persisted state intervals of a sandbox, and a "charged up to" watermark, become
//! per-resource [`ChargeLine`]s for the seconds not yet charged.
//!
//! ```text
//!   interval.start        charged_until              now        interval.end (or open)
//!        |---------------------|=========================|- - - - - - - -|
//!                               lines for (charged_until, now], split at UTC midnight
//! ```
//!
//! * **Whole seconds.** Every timestamp is truncated to its whole Unix second (toward the past)
//!   first; a line covers the seconds `(from, to]`.
//! * **No drift.** For each resource the charge of an interval's first `n` seconds is
//!   `floor(exact_rate × n / 3600)` (see [`crate::rates`]); a line is the difference of that
//!   cumulative charge at its two ends. Any sequence of checkpoints, regular, irregular, or
//!   recomputed after a crash from the last persisted watermark, sums to exactly the charge of
//!   the whole span at once.
//! * **Idempotent.** Calling again with the same watermark gives the same lines; the caller
//!   stores the lines and advances the watermark to `now` in one transaction, so a restart
//!   neither loses nor double-counts a second.
//! * **Days.** Lines never cross a UTC midnight, so a breakdown by day is exact.

use sandpit_types::SandboxId;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::money::{Money, MoneyOverflow};
use crate::rates::{Rates, Resource, Spec};

const SECONDS_PER_DAY: i64 = 86_400;

/// What a sandbox was doing during an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageKind {
    /// Running: GPU, CPU and memory are charged.
    Running,
    /// Paused: only the disk kept is charged.
    Paused,
}

impl UsageKind {
    /// The resources charged in this state.
    pub fn resources(self) -> &'static [Resource] {
        match self {
            Self::Running => &[Resource::Gpu, Resource::Cpu, Resource::Memory],
            Self::Paused => &[Resource::Storage],
        }
    }
}

/// A span between two persisted state changes of one sandbox, with what it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    /// When the state was entered.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// When the state was left; `None` while it lasts.
    #[serde(with = "time::serde::rfc3339::option")]
    pub end: Option<OffsetDateTime>,
    /// Running or paused.
    pub kind: UsageKind,
    /// What the sandbox held.
    pub spec: Spec,
}

/// One ledger line: a resource of a sandbox charged for the whole seconds `(from, to]`.
///
/// `P` is the key of the project the sandbox belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeLine<P> {
    /// The sandbox.
    pub sandbox: SandboxId,
    /// Its project.
    pub project: P,
    /// What is charged.
    pub resource: Resource,
    /// Whole seconds covered: `to - from`.
    pub seconds: u64,
    /// The charge; never negative, possibly zero (the remainder carries to later lines).
    pub amount: Money,
    /// Start of the span, exclusive, on a whole second, UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    /// End of the span, inclusive, on a whole second, UTC; at most the next UTC midnight.
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
}

/// Intervals or times that cannot be metered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    /// An interval ends before it starts.
    #[error("interval {index} ends before it starts")]
    EndsBeforeStart {
        /// Its position in the list.
        index: usize,
    },
    /// An interval starts before the previous one ends.
    #[error("interval {index} starts before the previous one ends")]
    Overlap {
        /// Its position in the list.
        index: usize,
    },
    /// An open interval is followed by another one.
    #[error("interval {index} is open but not the last one")]
    OpenNotLast {
        /// Its position in the list.
        index: usize,
    },
    /// A charge does not fit in the range of money.
    #[error(transparent)]
    Overflow(#[from] MoneyOverflow),
    /// A time is outside the range of dates.
    #[error("time is outside the supported range of dates")]
    TimeOutOfRange,
}

/// Meters one sandbox of one project at the given rates.
#[derive(Debug, Clone)]
pub struct Meter<'a, P> {
    rates: &'a Rates,
    sandbox: SandboxId,
    project: P,
}

/// A whole Unix second, the floor of `t`.
fn whole_second(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn at(second: i64) -> Result<OffsetDateTime, MeterError> {
    OffsetDateTime::UNIX_EPOCH.checked_add(Duration::seconds(second)).ok_or(MeterError::TimeOutOfRange)
}

/// Seconds from `start` to `t` (`t ≥ start`).
fn elapsed(start: i64, t: i64) -> u64 {
    // Callers pass t ≥ start; a negative difference cannot occur and would mean "nothing".
    u64::try_from(t - start).unwrap_or(0)
}

impl<'a, P: Clone> Meter<'a, P> {
    /// A meter for `sandbox` of `project`.
    pub fn new(rates: &'a Rates, sandbox: SandboxId, project: P) -> Self {
        Self { rates, sandbox, project }
    }

    /// The lines for the seconds of `interval` within `(charged_until, now]`, per resource and
    /// per UTC day, in time order. Empty when nothing is due (`now ≤ charged_until`, or the
    /// interval lies outside the span). A `charged_until` before the interval's start counts
    /// from the start. Repeated calls with increasing `now`, each passing the previous `now`
    /// as `charged_until`, sum exactly to one call over the whole span.
    pub fn accrue(
        &self,
        interval: &Interval,
        charged_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Vec<ChargeLine<P>>, MeterError> {
        let start = whole_second(interval.start);
        let end = interval.end.map(whole_second);
        if end.is_some_and(|e| e < start) {
            return Err(MeterError::EndsBeforeStart { index: 0 });
        }
        let lo = whole_second(charged_until).max(start);
        let hi = end.map_or(whole_second(now), |e| e.min(whole_second(now)));
        let mut lines = Vec::new();
        let rates: Vec<_> = interval
            .kind
            .resources()
            .iter()
            .filter_map(|&r| self.rates.exact(r, &interval.spec).map(|rate| (r, rate)))
            .collect();
        if rates.is_empty() {
            return Ok(lines);
        }
        let mut a = lo;
        while a < hi {
            let next_midnight = (a.div_euclid(SECONDS_PER_DAY) + 1) * SECONDS_PER_DAY;
            let b = hi.min(next_midnight);
            let (from, to) = (at(a)?, at(b)?);
            for &(resource, rate) in &rates {
                let before = rate.cumulative(elapsed(start, a))?;
                let after = rate.cumulative(elapsed(start, b))?;
                lines.push(ChargeLine {
                    sandbox: self.sandbox,
                    project: self.project.clone(),
                    resource,
                    seconds: elapsed(a, b),
                    // The cumulative charge never decreases, so this is never negative.
                    amount: after.checked_sub(before).ok_or(MoneyOverflow)?,
                    from,
                    to,
                });
            }
            a = b;
        }
        Ok(lines)
    }

    /// [`Meter::accrue`] over a sandbox's intervals, in time order: the lines for every second
    /// of them within `(charged_until, now]`. Intervals must be ordered, not overlap (in whole
    /// seconds), and only the last may be open.
    pub fn accrue_all(
        &self,
        intervals: &[Interval],
        charged_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Vec<ChargeLine<P>>, MeterError> {
        let mut prev_end: Option<i64> = None;
        for (index, iv) in intervals.iter().enumerate() {
            let start = whole_second(iv.start);
            if iv.end.is_some_and(|e| whole_second(e) < start) {
                return Err(MeterError::EndsBeforeStart { index });
            }
            if index > 0 {
                match prev_end {
                    None => return Err(MeterError::OpenNotLast { index: index - 1 }),
                    Some(e) if start < e => return Err(MeterError::Overlap { index }),
                    Some(_) => {}
                }
            }
            prev_end = iv.end.map(whole_second);
        }
        let mut lines = Vec::new();
        for iv in intervals {
            lines.extend(self.accrue(iv, charged_until, now)?);
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rates::GpuUsage;
    use proptest::prelude::*;
    use sandpit_types::{ByteSize, MilliCpu};

    const T0: i64 = 1_767_225_600 - 3 * 3600; // 2025-12-31 21:00:00 UTC

    fn t(second: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(second).unwrap()
    }

    fn t_nanos(second: i64, nanos: i64) -> OffsetDateTime {
        t(second) + Duration::nanoseconds(nanos)
    }

    fn sandbox() -> SandboxId {
        "0123456789abcdefghij".parse().unwrap()
    }

    fn h100_spec() -> Spec {
        Spec {
            cpu: MilliCpu(4000),
            memory: ByteSize::gib(16),
            gpu: Some(GpuUsage { model: "H100".into(), count: 1, fraction: 100 }),
            disk: ByteSize::gib(20),
        }
    }

    fn running(start: i64, end: Option<i64>, spec: Spec) -> Interval {
        Interval { start: t(start), end: end.map(t), kind: UsageKind::Running, spec }
    }

    fn total(lines: &[ChargeLine<u32>]) -> Money {
        Money::checked_sum(lines.iter().map(|l| l.amount)).unwrap()
    }

    fn total_of(lines: &[ChargeLine<u32>], r: Resource) -> Money {
        Money::checked_sum(lines.iter().filter(|l| l.resource == r).map(|l| l.amount)).unwrap()
    }

    #[test]
    fn one_running_hour_charges_the_hourly_price() {
        let rates = Rates::default();
        let meter = Meter::new(&rates, sandbox(), 7u32);
        let iv = running(T0, None, h100_spec());
        let lines = meter.accrue(&iv, t(T0), t(T0 + 3600)).unwrap();
        let h = rates.hourly(&h100_spec()).unwrap();
        assert_eq!(total(&lines), h.total);
        assert_eq!(total_of(&lines, Resource::Gpu), "3.00".parse().unwrap());
        assert_eq!(total_of(&lines, Resource::Cpu), "0.16".parse().unwrap());
        assert_eq!(total_of(&lines, Resource::Memory), "0.08".parse().unwrap());
        assert!(lines.iter().all(|l| l.seconds == 3600 && l.project == 7 && l.sandbox == sandbox()));
        assert!(lines.iter().all(|l| l.resource != Resource::Storage));
    }

    #[test]
    fn paused_interval_charges_only_storage() {
        let rates = Rates::default();
        let meter = Meter::new(&rates, sandbox(), 0u32);
        let iv = Interval { start: t(T0), end: None, kind: UsageKind::Paused, spec: h100_spec() };
        let lines = meter.accrue(&iv, t(T0), t(T0 + 3600)).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].resource, Resource::Storage);
        assert_eq!(lines[0].amount, rates.paused_hourly(ByteSize::gib(20)).unwrap());
    }

    #[test]
    fn rounding_remainders_carry_to_later_ticks() {
        // 1 vCPU at 0.04/h is 11.11… micro-units a second: per-tick rounding would lose 0.11
        // each second; carried, 9 one-second ticks are exactly floor(9 × 11.11…) = 100.
        let rates = Rates::default();
        let meter = Meter::new(&rates, sandbox(), 0u32);
        let spec = Spec { cpu: MilliCpu(1000), memory: ByteSize(0), gpu: None, disk: ByteSize(0) };
        let iv = running(T0, None, spec);
        let amounts: Vec<i64> =
            (0..9).map(|i| total(&meter.accrue(&iv, t(T0 + i), t(T0 + i + 1)).unwrap()).micros()).collect();
        assert_eq!(amounts, [11, 11, 11, 11, 11, 11, 11, 11, 12]);
    }

    #[test]
    fn subsecond_times_are_truncated_to_whole_seconds() {
        let rates = Rates::default();
        let meter = Meter::new(&rates, sandbox(), 0u32);
        let iv = Interval { start: t_nanos(T0, 900_000_000), ..running(T0, None, h100_spec()) };
        assert!(meter.accrue(&iv, t_nanos(T0, 100), t_nanos(T0, 999_999_999)).unwrap().is_empty());
        let lines = meter.accrue(&iv, t_nanos(T0, 999_999_999), t_nanos(T0 + 10, 500_000_000)).unwrap();
        assert!(lines.iter().all(|l| l.seconds == 10 && l.from == t(T0) && l.to == t(T0 + 10)));
    }

    #[test]
    fn nothing_is_due_at_or_before_the_watermark() {
        let rates = Rates::default();
        let meter = Meter::new(&rates, sandbox(), 0u32);
        let iv = running(T0, None, h100_spec());
        assert!(meter.accrue(&iv, t(T0 + 50), t(T0 + 50)).unwrap().is_empty());
        assert!(meter.accrue(&iv, t(T0 + 50), t(T0 + 10)).unwrap().is_empty());
        assert!(meter.accrue(&iv, t(T0 - 100), t(T0 - 10)).unwrap().is_empty());
    }

    #[test]
    fn closed_interval_stops_charging_at_its_end() {
        let rates = Rates::default();
        let meter = Meter::new(&rates, sandbox(), 0u32);
        let iv = running(T0, Some(T0 + 60), h100_spec());
        let lines = meter.accrue(&iv, t(T0 + 30), t(T0 + 1000)).unwrap();
        assert!(lines.iter().all(|l| l.seconds == 30 && l.to == t(T0 + 60)));
        assert!(meter.accrue(&iv, t(T0 + 60), t(T0 + 1000)).unwrap().is_empty());
    }

    #[test]
    fn lines_are_split_at_utc_midnight() {
        let rates = Rates::default();
        let meter = Meter::new(&rates, sandbox(), 0u32);
        let iv = running(T0, None, h100_spec());
        // T0 is 21:00; 27 hours later is 00:00 two days on.
        let lines = meter.accrue(&iv, t(T0), t(T0 + 27 * 3600 + 5)).unwrap();
        let gpu: Vec<_> = lines.iter().filter(|l| l.resource == Resource::Gpu).collect();
        let secs: Vec<u64> = gpu.iter().map(|l| l.seconds).collect();
        assert_eq!(secs, [3 * 3600, 24 * 3600, 5]);
        assert_eq!(gpu[0].to, t(T0 + 3 * 3600));
        assert_eq!(gpu[0].to.time(), time::Time::MIDNIGHT);
        assert_eq!(
            total_of(&lines, Resource::Gpu),
            rates
                .hourly(&h100_spec())
                .unwrap()
                .gpu
                .checked_add(Money::from_micros(26 * 3_000_000 + 5 * 3_000_000 / 3600))
                .unwrap()
        );
    }

    #[test]
    fn interval_list_is_charged_per_state() {
        let rates = Rates::default();
        let meter = Meter::new(&rates, sandbox(), 0u32);
        let ivs = [
            running(T0, Some(T0 + 3600), h100_spec()),
            Interval {
                start: t(T0 + 3600),
                end: Some(t(T0 + 7200)),
                kind: UsageKind::Paused,
                spec: h100_spec(),
            },
            running(T0 + 7200, None, h100_spec()),
        ];
        let lines = meter.accrue_all(&ivs, t(T0), t(T0 + 9000)).unwrap();
        let hourly = rates.hourly(&h100_spec()).unwrap();
        assert_eq!(total_of(&lines, Resource::Storage), rates.paused_hourly(ByteSize::gib(20)).unwrap());
        assert_eq!(total_of(&lines, Resource::Gpu), Money::from_micros(hourly.gpu.micros() * 3 / 2));
        // From a watermark inside the second interval, the first one is not charged again.
        let later = meter.accrue_all(&ivs, t(T0 + 5400), t(T0 + 9000)).unwrap();
        assert!(later.iter().all(|l| l.from >= t(T0 + 5400)));
    }

    #[test]
    fn malformed_interval_lists_are_refused() {
        let rates = Rates::default();
        let meter = Meter::new(&rates, sandbox(), 0u32);
        let spec = h100_spec();
        let now = t(T0 + 9000);
        let backwards = [running(T0 + 10, Some(T0), spec.clone())];
        assert_eq!(meter.accrue_all(&backwards, t(T0), now), Err(MeterError::EndsBeforeStart { index: 0 }));
        let overlap = [running(T0, Some(T0 + 100), spec.clone()), running(T0 + 50, None, spec.clone())];
        assert_eq!(meter.accrue_all(&overlap, t(T0), now), Err(MeterError::Overlap { index: 1 }));
        let open_first = [running(T0, None, spec.clone()), running(T0 + 50, None, spec)];
        assert_eq!(meter.accrue_all(&open_first, t(T0), now), Err(MeterError::OpenNotLast { index: 0 }));
    }

    fn gpu_model() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["T4", "A10", "L40", "L40S", "A100-40GB", "A100-80GB", "H100", "H200", "X9"])
            .prop_map(str::to_owned)
    }

    fn any_spec() -> impl Strategy<Value = Spec> {
        (
            0u32..=64_000,
            0u64..=512 * ByteSize::GIB,
            prop::option::of((gpu_model(), 1u32..=8, prop::sample::select(vec![25u32, 50, 75, 100]))),
            0u64..=2048 * ByteSize::GIB,
        )
            .prop_map(|(cpu, mem, gpu, disk)| Spec {
                cpu: MilliCpu(cpu),
                memory: ByteSize(mem),
                gpu: gpu.map(|(model, count, fraction)| GpuUsage { model, count, fraction }),
                disk: ByteSize(disk),
            })
    }

    fn any_kind() -> impl Strategy<Value = UsageKind> {
        prop_oneof![Just(UsageKind::Running), Just(UsageKind::Paused)]
    }

    /// Sums of amounts and seconds per resource.
    fn sums(lines: &[ChargeLine<u32>]) -> Vec<(Resource, i64, u64)> {
        Resource::ALL
            .iter()
            .map(|&r| {
                let of = lines.iter().filter(|l| l.resource == r);
                (r, of.clone().map(|l| l.amount.micros()).sum(), of.map(|l| l.seconds).sum())
            })
            .collect()
    }

    proptest! {
        #[test]
        fn accrual_at_random_checkpoints_sums_to_the_one_shot_charge(
            spec in any_spec(),
            kind in any_kind(),
            start in 1_600_000_000i64..1_900_000_000,
            start_nanos in 0i64..1_000_000_000,
            duration in 0i64..=1_000_000,
            cuts in prop::collection::vec((0i64..=1_000_000, 0i64..1_000_000_000), 0..40),
        ) {
            let rates = Rates::default();
            let meter = Meter::new(&rates, sandbox(), 1u32);
            let iv = Interval { start: t_nanos(start, start_nanos), end: None, kind, spec };
            let end = t(start + duration);
            let mut points: Vec<OffsetDateTime> =
                cuts.iter().map(|&(s, n)| t_nanos(start + s % (duration + 1), n)).filter(|&p| p <= end).collect();
            points.push(iv.start);
            points.push(end);
            points.sort();
            let mut ticked = Vec::new();
            for w in points.windows(2) {
                ticked.extend(meter.accrue(&iv, w[0], w[1]).unwrap());
            }
            let once = meter.accrue(&iv, iv.start, end).unwrap();
            prop_assert_eq!(sums(&ticked), sums(&once));
            prop_assert!(ticked.iter().chain(&once).all(|l| !l.amount.is_negative()));
            prop_assert!(ticked.iter().all(|l| l.from.date() == (l.to - Duration::seconds(1)).date()));
        }

        #[test]
        fn accrual_never_charges_negative_amounts(
            spec in any_spec(),
            kind in any_kind(),
            start in 1_600_000_000i64..1_900_000_000,
            a in -1_000_000i64..=1_000_000,
            b in -1_000_000i64..=1_000_000,
            end in prop::option::of(0i64..=1_000_000),
        ) {
            let rates = Rates::default();
            let meter = Meter::new(&rates, sandbox(), 1u32);
            let iv = Interval { start: t(start), end: end.map(|e| t(start + e)), kind, spec };
            let lines = meter.accrue(&iv, t(start + a), t(start + b)).unwrap();
            prop_assert!(lines.iter().all(|l| !l.amount.is_negative() && l.seconds > 0 && l.from < l.to));
            prop_assert!(lines.iter().all(|l| l.from >= iv.start && iv.end.is_none_or(|e| l.to <= e)));
        }

        #[test]
        fn realistic_maxima_for_thirty_days_do_not_overflow(
            model in gpu_model(),
            fraction in prop::sample::select(vec![25u32, 50, 75, 100]),
            seconds in 0i64..=30 * 86_400,
        ) {
            let rates = Rates::default();
            let meter = Meter::new(&rates, sandbox(), 1u32);
            let spec = Spec {
                cpu: MilliCpu(64_000),
                memory: ByteSize::gib(512),
                gpu: Some(GpuUsage { model: model.clone(), count: 8, fraction }),
                disk: ByteSize::gib(4096),
            };
            let iv = running(T0, None, spec.clone());
            let lines = meter.accrue(&iv, t(T0), t(T0 + seconds)).unwrap();
            // Independent check: floor(rate × quantity × seconds / (unit × 3600)) per resource.
            let s = i128::from(seconds);
            let gpu = i128::from(rates.gpu_rate(&model).micros()) * 8 * i128::from(fraction) * s / (100 * 3600);
            let cpu = 40_000 * 64_000 * s / (1000 * 3600);
            let mem = 5_000 * i128::from(512 * ByteSize::GIB) * s / (i128::from(ByteSize::GIB) * 3600);
            prop_assert_eq!(i128::from(total_of(&lines, Resource::Gpu).micros()), gpu);
            prop_assert_eq!(i128::from(total_of(&lines, Resource::Cpu).micros()), cpu);
            prop_assert_eq!(i128::from(total_of(&lines, Resource::Memory).micros()), mem);
            let paused = Interval { kind: UsageKind::Paused, ..iv };
            prop_assert!(meter.accrue(&paused, t(T0), t(T0 + seconds)).is_ok());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn ten_second_ticks_for_a_million_seconds_do_not_drift(spec in any_spec(), kind in any_kind()) {
            let rates = Rates::default();
            let meter = Meter::new(&rates, sandbox(), 1u32);
            let iv = Interval { start: t(T0), end: None, kind, spec };
            let mut sum = vec![0i64; Resource::ALL.len()];
            for tick in 0..100_000 {
                for l in meter.accrue(&iv, t(T0 + tick * 10), t(T0 + tick * 10 + 10)).unwrap() {
                    sum[l.resource as usize] += l.amount.micros();
                }
            }
            let once = sums(&meter.accrue(&iv, t(T0), t(T0 + 1_000_000)).unwrap());
            prop_assert_eq!(sum, once.iter().map(|&(_, m, _)| m).collect::<Vec<_>>());
        }
    }
}

//! Operator rates ([`Rates`]) and what a sandbox [`Spec`] costs per hour.
//!
//! Rates are money per hour of one unit: one whole GPU of a model, one vCPU (1000 millicores),
//! one GiB (2³⁰ bytes) of memory, one GiB of disk held while paused. A spec's exact hourly price
//! per resource is a fraction (`rate × quantity / unit`); it is only ever rounded down at the
//! very end, see the crate docs.

use std::collections::BTreeMap;

use sandpit_types::{ByteSize, MilliCpu};
use serde::{Deserialize, Serialize};

use crate::money::{Money, MoneyOverflow};

/// Seconds in an hour.
pub(crate) const SECONDS_PER_HOUR: u64 = 3600;

/// A billed resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// GPUs (count × share) while running.
    Gpu,
    /// vCPUs while running.
    Cpu,
    /// Memory while running.
    Memory,
    /// Disk held while paused.
    Storage,
}

impl Resource {
    /// Every resource, in display order.
    pub const ALL: [Self; 4] = [Self::Gpu, Self::Cpu, Self::Memory, Self::Storage];
}

/// The GPUs a sandbox holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuUsage {
    /// GPU model, e.g. `H100`, `A100-80GB`; looked up case-insensitively in [`Rates::gpu`].
    pub model: String,
    /// Number of GPUs.
    pub count: u32,
    /// Share of each GPU in percent (25, 50, 75 or 100; validated where requests are).
    pub fraction: u32,
}

/// What a sandbox holds, as far as billing is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Spec {
    /// CPU limit.
    pub cpu: MilliCpu,
    /// Memory limit.
    pub memory: ByteSize,
    /// GPUs, if any.
    pub gpu: Option<GpuUsage>,
    /// Disk kept while the sandbox is paused.
    pub disk: ByteSize,
}

/// The hourly price of a running spec, each part rounded down to a micro-unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HourlyPrice {
    /// GPUs.
    pub gpu: Money,
    /// CPU.
    pub cpu: Money,
    /// Memory.
    pub memory: Money,
    /// `gpu + cpu + memory`: exactly what one running hour is charged.
    pub total: Money,
}

/// Rates that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatesError {
    /// A rate below zero.
    #[error("rate {name} is negative ({amount})")]
    Negative {
        /// Which rate (`cpu_per_vcpu_hour`, `gpu.H100`).
        name: String,
        /// The configured amount.
        amount: Money,
    },
}

/// Prices per hour, as the operator configures them (every field optional in a config file;
/// missing ones take the defaults of [`Rates::default`]). Amounts are decimal strings
/// (`"0.04"`), never floats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RatesFile")]
pub struct Rates {
    /// Per whole GPU-hour, by model name (matched case-insensitively). A configured map
    /// replaces the default one as a whole.
    pub gpu: BTreeMap<String, Money>,
    /// Per whole GPU-hour of a model missing from [`Rates::gpu`].
    pub gpu_unknown_model: Money,
    /// Per vCPU-hour (1000 millicores).
    pub cpu_per_vcpu_hour: Money,
    /// Per GiB-hour of memory.
    pub memory_per_gib_hour: Money,
    /// Per GiB-hour of disk held while paused.
    pub paused_disk_per_gib_hour: Money,
}

/// A price of `micros` micro-units, usable in constants.
const fn price(micros: i64) -> Money {
    Money::from_micros(micros)
}

/// Default per-GPU-hour prices by model, in line with public cloud on-demand prices.
const DEFAULT_GPU: [(&str, Money); 8] = [
    ("T4", price(400_000)),
    ("A10", price(750_000)),
    ("L40", price(1_000_000)),
    ("L40S", price(1_200_000)),
    ("A100-40GB", price(1_600_000)),
    ("A100-80GB", price(2_000_000)),
    ("H100", price(3_000_000)),
    ("H200", price(3_800_000)),
];

impl Default for Rates {
    /// T4 0.40, A10 0.75, L40 1.00, L40S 1.20, A100-40GB 1.60, A100-80GB 2.00, H100 3.00,
    /// H200 3.80 per GPU-hour; an unknown model 3.80 (the dearest known one, so a missing
    /// entry never sells a GPU below cost); 0.04 per vCPU-hour; 0.005 per GiB-hour of memory;
    /// 0.0002 per GiB-hour of disk held while paused.
    fn default() -> Self {
        Self {
            gpu: DEFAULT_GPU.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            gpu_unknown_model: price(3_800_000),
            cpu_per_vcpu_hour: price(40_000),
            memory_per_gib_hour: price(5_000),
            paused_disk_per_gib_hour: price(200),
        }
    }
}

/// The config-file form of [`Rates`]: every field optional, validated on the way in.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RatesFile {
    gpu: BTreeMap<String, Money>,
    gpu_unknown_model: Money,
    cpu_per_vcpu_hour: Money,
    memory_per_gib_hour: Money,
    paused_disk_per_gib_hour: Money,
}

impl Default for RatesFile {
    fn default() -> Self {
        let r = Rates::default();
        Self {
            gpu: r.gpu,
            gpu_unknown_model: r.gpu_unknown_model,
            cpu_per_vcpu_hour: r.cpu_per_vcpu_hour,
            memory_per_gib_hour: r.memory_per_gib_hour,
            paused_disk_per_gib_hour: r.paused_disk_per_gib_hour,
        }
    }
}

impl TryFrom<RatesFile> for Rates {
    type Error = RatesError;

    fn try_from(f: RatesFile) -> Result<Self, Self::Error> {
        let rates = Self {
            gpu: f.gpu,
            gpu_unknown_model: f.gpu_unknown_model,
            cpu_per_vcpu_hour: f.cpu_per_vcpu_hour,
            memory_per_gib_hour: f.memory_per_gib_hour,
            paused_disk_per_gib_hour: f.paused_disk_per_gib_hour,
        };
        rates.validate()?;
        Ok(rates)
    }
}

/// An exact price per hour: `num / den` micro-units. Never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExactRate {
    num: u128,
    den: u128,
}

impl ExactRate {
    /// `rate × quantity / unit` per hour. A negative rate (refused by [`Rates::validate`])
    /// counts as zero so that no charge is ever negative.
    fn new(rate: Money, quantity: u128, unit: u128) -> Self {
        let rate = u128::try_from(rate.micros()).unwrap_or(0);
        // rate < 2⁶³ and quantity < 2⁶⁴ (bytes, or count × percent of two u32): fits in u128.
        Self { num: rate.saturating_mul(quantity), den: unit }
    }

    /// The charge of the first `seconds` whole seconds: `floor(num × seconds / (den × 3600))`.
    ///
    /// Computed as `q × seconds + floor(r × seconds / d)` with `num = q × d + r`, so the only
    /// overflow possible is a result that truly does not fit in [`Money`].
    pub(crate) fn cumulative(self, seconds: u64) -> Result<Money, MoneyOverflow> {
        let d = self.den * u128::from(SECONDS_PER_HOUR);
        let (q, r) = (self.num / d, self.num % d);
        let s = u128::from(seconds);
        // Every unit here is at most 2³⁰, so r < d < 2⁴² and r × s < 2¹⁰⁶: only q × s can overflow.
        let total = q
            .checked_mul(s)
            .and_then(|whole| r.checked_mul(s).map(|part| part / d).and_then(|part| whole.checked_add(part)))
            .ok_or(MoneyOverflow)?;
        i64::try_from(total).map(Money::from_micros).map_err(|_| MoneyOverflow)
    }

    /// The charge of one whole hour, rounded down.
    fn hourly(self) -> Result<Money, MoneyOverflow> {
        self.cumulative(SECONDS_PER_HOUR)
    }
}

impl Rates {
    /// The per-GPU-hour price of `model`: its configured price (case-insensitive match), or
    /// [`Rates::gpu_unknown_model`].
    pub fn gpu_rate(&self, model: &str) -> Money {
        self.gpu
            .get(model)
            .or_else(|| self.gpu.iter().find(|(k, _)| k.eq_ignore_ascii_case(model)).map(|(_, v)| v))
            .copied()
            .unwrap_or(self.gpu_unknown_model)
    }

    /// Refuses negative rates. Deserialization runs this; call it after building rates in code.
    pub fn validate(&self) -> Result<(), RatesError> {
        let named = [
            ("gpu_unknown_model".to_owned(), self.gpu_unknown_model),
            ("cpu_per_vcpu_hour".to_owned(), self.cpu_per_vcpu_hour),
            ("memory_per_gib_hour".to_owned(), self.memory_per_gib_hour),
            ("paused_disk_per_gib_hour".to_owned(), self.paused_disk_per_gib_hour),
        ];
        let gpus = self.gpu.iter().map(|(k, v)| (format!("gpu.{k}"), *v));
        match named.into_iter().chain(gpus).find(|(_, v)| v.is_negative()) {
            Some((name, amount)) => Err(RatesError::Negative { name, amount }),
            None => Ok(()),
        }
    }

    /// The exact hourly price of `resource` for `spec`, or `None` where the spec does not hold
    /// that resource (no GPU, zero CPU, memory or disk).
    pub(crate) fn exact(&self, resource: Resource, spec: &Spec) -> Option<ExactRate> {
        match resource {
            Resource::Gpu => spec.gpu.as_ref().filter(|g| g.count > 0 && g.fraction > 0).map(|g| {
                ExactRate::new(self.gpu_rate(&g.model), u128::from(g.count) * u128::from(g.fraction), 100)
            }),
            Resource::Cpu => {
                (spec.cpu.0 > 0).then(|| ExactRate::new(self.cpu_per_vcpu_hour, spec.cpu.0.into(), 1000))
            }
            Resource::Memory => (spec.memory.bytes() > 0).then(|| {
                ExactRate::new(self.memory_per_gib_hour, spec.memory.bytes().into(), ByteSize::GIB.into())
            }),
            Resource::Storage => (spec.disk.bytes() > 0).then(|| {
                ExactRate::new(self.paused_disk_per_gib_hour, spec.disk.bytes().into(), ByteSize::GIB.into())
            }),
        }
    }

    fn hourly_of(&self, resource: Resource, spec: &Spec) -> Result<Money, MoneyOverflow> {
        self.exact(resource, spec).map_or(Ok(Money::ZERO), ExactRate::hourly)
    }

    /// What one hour of `spec` running costs: GPU price `rate × count × fraction / 100`, CPU
    /// per millicore, memory per byte, each rounded down to a micro-unit.
    pub fn hourly(&self, spec: &Spec) -> Result<HourlyPrice, MoneyOverflow> {
        let gpu = self.hourly_of(Resource::Gpu, spec)?;
        let cpu = self.hourly_of(Resource::Cpu, spec)?;
        let memory = self.hourly_of(Resource::Memory, spec)?;
        let total = Money::checked_sum([gpu, cpu, memory]).ok_or(MoneyOverflow)?;
        Ok(HourlyPrice { gpu, cpu, memory, total })
    }

    /// What one hour of holding `disk` while paused costs, rounded down to a micro-unit.
    pub fn paused_hourly(&self, disk: ByteSize) -> Result<Money, MoneyOverflow> {
        let spec = Spec { cpu: MilliCpu(0), memory: ByteSize(0), gpu: None, disk };
        self.hourly_of(Resource::Storage, &spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    fn gpu_spec(model: &str, count: u32, fraction: u32) -> Spec {
        Spec {
            cpu: MilliCpu(0),
            memory: ByteSize(0),
            gpu: Some(GpuUsage { model: model.to_owned(), count, fraction }),
            disk: ByteSize(0),
        }
    }

    #[test]
    fn default_rates_are_the_documented_ones() {
        let r = Rates::default();
        for (model, price) in [
            ("T4", "0.40"),
            ("A10", "0.75"),
            ("L40", "1.00"),
            ("L40S", "1.20"),
            ("A100-40GB", "1.60"),
            ("A100-80GB", "2.00"),
            ("H100", "3.00"),
            ("H200", "3.80"),
        ] {
            assert_eq!(r.gpu_rate(model), m(price), "{model}");
        }
        assert_eq!(r.cpu_per_vcpu_hour, m("0.04"));
        assert_eq!(r.memory_per_gib_hour, m("0.005"));
        assert_eq!(r.paused_disk_per_gib_hour, m("0.0002"));
        assert!(r.validate().is_ok());
    }

    #[test]
    fn unknown_gpu_model_uses_the_unknown_model_rate() {
        let r = Rates::default();
        assert_eq!(r.gpu_rate("B200"), r.gpu_unknown_model);
        assert_eq!(r.hourly(&gpu_spec("B200", 1, 100)).unwrap().gpu, m("3.80"));
    }

    #[test]
    fn gpu_model_lookup_ignores_case() {
        let r = Rates::default();
        assert_eq!(r.gpu_rate("h100"), m("3.00"));
        assert_eq!(r.gpu_rate("a100-80gb"), m("2.00"));
    }

    #[test]
    fn gpu_price_scales_with_count_and_fraction() {
        let r = Rates::default();
        assert_eq!(r.hourly(&gpu_spec("H100", 1, 100)).unwrap().gpu, m("3.00"));
        assert_eq!(r.hourly(&gpu_spec("H100", 1, 25)).unwrap().gpu, m("0.75"));
        assert_eq!(r.hourly(&gpu_spec("H100", 2, 50)).unwrap().gpu, m("3.00"));
        assert_eq!(r.hourly(&gpu_spec("H200", 8, 100)).unwrap().gpu, m("30.40"));
        assert_eq!(r.hourly(&gpu_spec("T4", 3, 75)).unwrap().gpu, m("0.90"));
        assert_eq!(r.hourly(&gpu_spec("H100", 0, 100)).unwrap().gpu, Money::ZERO);
    }

    #[test]
    fn cpu_and_memory_are_priced_per_millicore_and_byte() {
        let r = Rates::default();
        let spec =
            Spec { cpu: MilliCpu(1500), memory: ByteSize::mib(512), gpu: None, disk: ByteSize::gib(10) };
        let h = r.hourly(&spec).unwrap();
        assert_eq!(h.cpu, m("0.06"));
        assert_eq!(h.memory, m("0.0025"));
        assert_eq!(h.gpu, Money::ZERO);
        assert_eq!(h.total, m("0.0625"));
        // One byte of memory for an hour is far below a micro-unit: rounds down to zero.
        let tiny = Spec { cpu: MilliCpu(1), memory: ByteSize(1), gpu: None, disk: ByteSize(0) };
        let h = r.hourly(&tiny).unwrap();
        assert_eq!((h.cpu, h.memory), (m("0.00004"), Money::ZERO));
    }

    #[test]
    fn hourly_total_is_the_sum_of_its_parts() {
        let r = Rates::default();
        let spec = Spec {
            cpu: MilliCpu(3333),
            memory: ByteSize(7 * ByteSize::GIB / 3),
            gpu: Some(GpuUsage { model: "L40S".into(), count: 3, fraction: 75 }),
            disk: ByteSize(0),
        };
        let h = r.hourly(&spec).unwrap();
        assert_eq!(Money::checked_sum([h.gpu, h.cpu, h.memory]), Some(h.total));
        assert_eq!(h.cpu, m("0.13332"));
        assert_eq!(h.memory, m("0.011666"));
    }

    #[test]
    fn paused_disk_is_priced_per_gib_hour() {
        let r = Rates::default();
        assert_eq!(r.paused_hourly(ByteSize::gib(50)).unwrap(), m("0.01"));
        assert_eq!(r.paused_hourly(ByteSize(0)).unwrap(), Money::ZERO);
    }

    #[test]
    fn config_fills_missing_rates_with_defaults_and_refuses_negative_ones() {
        let r: Rates =
            serde_json::from_str(r#"{"cpu_per_vcpu_hour": "0.05", "gpu": {"H100": "2.50"}}"#).unwrap();
        assert_eq!(r.cpu_per_vcpu_hour, m("0.05"));
        assert_eq!(r.gpu_rate("H100"), m("2.50"));
        assert_eq!(r.gpu_rate("T4"), r.gpu_unknown_model);
        assert_eq!(r.memory_per_gib_hour, Rates::default().memory_per_gib_hour);

        let err = serde_json::from_str::<Rates>(r#"{"gpu": {"T4": "-0.40"}}"#).unwrap_err();
        assert!(err.to_string().contains("gpu.T4"), "{err}");
        assert!(serde_json::from_str::<Rates>(r#"{"cpu_per_vcpu_hour": 0.04}"#).is_err());
        assert!(serde_json::from_str::<Rates>(r#"{"cpu_per_hour": "0.04"}"#).is_err());

        let back: Rates = serde_json::from_str(&serde_json::to_string(&Rates::default()).unwrap()).unwrap();
        assert_eq!(back, Rates::default());
    }

    #[test]
    fn negative_rates_never_produce_negative_prices() {
        let r = Rates { cpu_per_vcpu_hour: m("-1"), ..Rates::default() };
        assert!(r.validate().is_err());
        let spec = Spec { cpu: MilliCpu(2000), memory: ByteSize(0), gpu: None, disk: ByteSize(0) };
        assert_eq!(r.hourly(&spec).unwrap().cpu, Money::ZERO);
    }

    #[test]
    fn absurd_rates_overflow_as_an_error_not_a_panic() {
        let r = Rates { gpu_unknown_model: Money::MAX, ..Rates::default() };
        assert_eq!(r.hourly(&gpu_spec("X", u32::MAX, u32::MAX)), Err(MoneyOverflow));
    }
}

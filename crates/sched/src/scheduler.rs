//! The scheduler: reserves CPU, memory and GPU slots for sandboxes on one host.
//!
//! # GPU rules
//!
//! A GPU holds one whole sandbox, or shares of a single size: 4 × 25 %, 2 × 50 % or 1 × 75 %
//! (a 75 % share takes a GPU alone). A request for `count` GPUs gets `count` distinct GPUs of one
//! type, each with the request's fraction. Placement is best fit, to keep whole GPUs free:
//!
//! - a share goes to a GPU already holding shares of its size with the fewest free slots left,
//!   and only then to an empty GPU;
//! - a whole GPU needs an empty one;
//! - ties go to the lowest index, and when a family alias (`A100`) matches several types, to
//!   the type whose chosen GPUs open the fewest empty GPUs and leave the fewest free slots,
//!   then to the first type by name.
//!
//! CPU is accounted against the host's CPU times the [`Overcommit`] factor (default 1), memory
//! against the host's memory, without overcommit.
//!
//! The caller holds the scheduler behind a mutex: [`Scheduler::place`] checks and reserves in one
//! call, so a placement is never handed out twice.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use sandpit_types::api::GpuRequest;
use sandpit_types::{ByteSize, MilliCpu, SandboxId};
use serde::{Deserialize, Serialize};

use crate::error::{PlaceError, Resource, RestoreConflict};
use crate::inventory::{GpuDevice, HostCapacity};
use crate::model::type_matches;

/// What a sandbox asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// CPU.
    pub cpu: MilliCpu,
    /// Memory.
    pub memory: ByteSize,
    /// GPUs, if any.
    pub gpu: Option<GpuRequest>,
}

/// One GPU slot reserved for a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuSlot {
    /// Host NVML index.
    pub index: u32,
    /// Device node number: `/dev/nvidia<minor>`.
    pub minor: u32,
    /// NVML UUID.
    pub uuid: String,
    /// Canonical type name.
    pub model: String,
    /// The sandbox's part of the GPU's memory: memory × fraction (rounded down).
    pub memory_share: ByteSize,
    /// Percent of the GPU: 25, 50, 75 or 100.
    pub fraction: u32,
    /// Which of the GPU's slots for this fraction (0 for a whole GPU).
    pub slot: u8,
}

/// The GPUs reserved for a sandbox, by index; empty when it has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// The slots, one per distinct GPU, sorted by index.
    pub gpus: Vec<GpuSlot>,
}

/// What a placement is billed for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuUsage {
    /// Canonical type name.
    pub model: String,
    /// Number of GPUs.
    pub count: u32,
    /// Percent of each GPU.
    pub fraction: u32,
}

impl Placement {
    /// The GPU usage to bill, or `None` without GPUs. A placement's GPUs are all one type and
    /// one fraction.
    pub fn billing(&self) -> Option<GpuUsage> {
        let first = self.gpus.first()?;
        Some(GpuUsage {
            model: first.model.clone(),
            count: u32::try_from(self.gpus.len()).unwrap_or(u32::MAX),
            fraction: first.fraction,
        })
    }
}

/// How many more sandboxes of each share size fit, each counted alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FreeSlots {
    /// 25 % shares.
    #[serde(rename = "25")]
    pub quarter: u32,
    /// 50 % shares.
    #[serde(rename = "50")]
    pub half: u32,
    /// 75 % shares.
    #[serde(rename = "75")]
    pub three_quarters: u32,
}

/// What is free of one GPU type (and memory size) on the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuAvailability {
    /// Canonical type name.
    pub model: String,
    /// Memory of one device.
    pub memory: ByteSize,
    /// Devices of this type.
    pub total: u32,
    /// Empty devices: whole-GPU sandboxes that fit.
    pub free_whole: u32,
    /// Sandboxes of each share size that fit.
    pub free_slots: FreeSlots,
    /// Simulated devices.
    pub simulated: bool,
}

/// How far CPU reservations may exceed the host's CPU, as a factor from 1 to 10 kept in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Overcommit {
    percent: u32,
}

/// An overcommit factor out of range or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "CPU overcommit must be a factor from 1 to 10 with at most two decimals (\"1.5\", \"150%\"), not {text:?}"
)]
pub struct OvercommitError {
    /// The offending text (shortened).
    pub text: String,
}

impl Overcommit {
    /// No overcommit: reservations stop at the host's CPU.
    pub const NONE: Self = Self { percent: 100 };

    /// A factor in percent: 100 to 1000.
    pub fn from_percent(percent: u32) -> Result<Self, OvercommitError> {
        if (100..=1000).contains(&percent) {
            Ok(Self { percent })
        } else {
            Err(OvercommitError { text: format!("{percent}%") })
        }
    }

    /// The factor in percent.
    pub fn percent(self) -> u32 {
        self.percent
    }
}

impl Default for Overcommit {
    fn default() -> Self {
        Self::NONE
    }
}

impl FromStr for Overcommit {
    type Err = OvercommitError;

    /// `"1"`, `"1.5"`, `"1.25"`, or percent: `"150%"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bad = || OvercommitError { text: s.chars().take(40).collect() };
        let digits = |d: &str| !d.is_empty() && d.len() <= 4 && d.bytes().all(|b| b.is_ascii_digit());
        let percent = if let Some(p) = t.strip_suffix('%') {
            let p = p.trim_end();
            if !digits(p) {
                return Err(bad());
            }
            p.parse::<u32>().map_err(|_| bad())?
        } else {
            let (int, frac) = match t.split_once('.') {
                Some((_, "")) => return Err(bad()),
                Some(parts) => parts,
                None => (t, ""),
            };
            if !digits(int) || frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let int: u32 = int.parse().map_err(|_| bad())?;
            let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
            int * 100 + frac
        };
        Self::from_percent(percent).map_err(|_| bad())
    }
}

impl fmt::Display for Overcommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.percent / 100, self.percent % 100);
        match frac {
            0 => write!(f, "{int}"),
            n if n % 10 == 0 => write!(f, "{int}.{}", n / 10),
            n => write!(f, "{int}.{n:02}"),
        }
    }
}

/// A share size, and so how many sandboxes one GPU holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Quarter,
    Half,
    ThreeQuarters,
    Whole,
}

impl Class {
    fn from_fraction(fraction: u32) -> Option<Self> {
        match fraction {
            25 => Some(Self::Quarter),
            50 => Some(Self::Half),
            75 => Some(Self::ThreeQuarters),
            100 => Some(Self::Whole),
            _ => None,
        }
    }

    fn fraction(self) -> u32 {
        match self {
            Self::Quarter => 25,
            Self::Half => 50,
            Self::ThreeQuarters => 75,
            Self::Whole => 100,
        }
    }

    fn slots(self) -> u8 {
        match self {
            Self::Quarter => 4,
            Self::Half => 2,
            Self::ThreeQuarters | Self::Whole => 1,
        }
    }
}

/// Who holds one GPU.
#[derive(Debug, Clone, Default)]
struct GpuUse {
    /// The share size of its holders; `None` when empty.
    class: Option<Class>,
    /// Holders by slot; only the first `class.slots()` are used.
    holders: [Option<SandboxId>; 4],
}

impl GpuUse {
    fn is_empty(&self) -> bool {
        self.class.is_none()
    }

    /// Free slots for a share of `class`, or `None` when it cannot take one.
    fn free_for(&self, class: Class) -> Option<u8> {
        match self.class {
            None => Some(class.slots()),
            Some(c) if c == class => {
                let held = self.holders.iter().filter(|h| h.is_some()).count();
                let free = usize::from(c.slots()).saturating_sub(held);
                u8::try_from(free).ok().filter(|&n| n > 0)
            }
            Some(_) => None,
        }
    }

    fn first_free_slot(&self, class: Class) -> Option<u8> {
        (0..class.slots()).find(|&s| self.holders[usize::from(s)].is_none())
    }

    fn take(&mut self, class: Class, slot: u8, id: SandboxId) {
        self.class = Some(class);
        self.holders[usize::from(slot)] = Some(id);
    }

    fn free(&mut self, slot: u8) {
        self.holders[usize::from(slot)] = None;
        if self.holders.iter().all(Option::is_none) {
            self.class = None;
        }
    }
}

/// A GPU slot picked for a sandbox, not yet reserved.
#[derive(Debug, Clone, Copy)]
struct Chosen {
    /// Position of the device in the inventory.
    pos: usize,
    class: Class,
    slot: u8,
}

#[derive(Debug, Clone)]
struct Reservation {
    cpu: MilliCpu,
    memory: ByteSize,
    /// (device position, slot) per GPU.
    slots: Vec<(usize, u8)>,
    placement: Placement,
}

/// Reserves host resources for sandboxes; see the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct Scheduler {
    host: HostCapacity,
    overcommit: Overcommit,
    gpus: Vec<GpuUse>,
    reservations: BTreeMap<SandboxId, Reservation>,
    used_cpu: u64,
    used_memory: u64,
}

impl Scheduler {
    /// A scheduler with nothing reserved. Device UUIDs and indexes should be distinct
    /// ([`HostCapacity::validate`]); reservations are restored by UUID.
    pub fn new(host: HostCapacity) -> Self {
        let gpus = vec![GpuUse::default(); host.gpus.len()];
        Self {
            host,
            overcommit: Overcommit::NONE,
            gpus,
            reservations: BTreeMap::new(),
            used_cpu: 0,
            used_memory: 0,
        }
    }

    /// The same scheduler with CPU reservations allowed up to the host's CPU × `overcommit`.
    pub fn with_cpu_overcommit(mut self, overcommit: Overcommit) -> Self {
        self.overcommit = overcommit;
        self
    }

    /// The host this scheduler hands out.
    pub fn host(&self) -> &HostCapacity {
        &self.host
    }

    /// The CPU that may be reserved in all: the host's CPU × overcommit.
    fn cpu_limit(&self) -> u64 {
        u64::from(self.host.cpu.0) * u64::from(self.overcommit.percent) / 100
    }

    /// CPU not yet reserved (with overcommit).
    pub fn free_cpu(&self) -> MilliCpu {
        let free = self.cpu_limit().saturating_sub(self.used_cpu);
        MilliCpu(u32::try_from(free).unwrap_or(u32::MAX))
    }

    /// Memory not yet reserved.
    pub fn free_memory(&self) -> ByteSize {
        ByteSize(self.host.memory.bytes().saturating_sub(self.used_memory))
    }

    /// The placement reserved for a sandbox.
    pub fn reserved(&self, id: SandboxId) -> Option<&Placement> {
        self.reservations.get(&id).map(|r| &r.placement)
    }

    /// Checks the request against what is free and reserves it for `id`, or reserves nothing and
    /// says why. Invalid GPU requests (400s) are reported before a lack of GPUs (507), which is
    /// reported before a lack of CPU or memory (503).
    pub fn place(&mut self, id: SandboxId, req: &Request) -> Result<Placement, PlaceError> {
        if self.reservations.contains_key(&id) {
            return Err(PlaceError::AlreadyPlaced { id });
        }
        let chosen = match &req.gpu {
            Some(g) => self.choose_gpus(g)?,
            None => Vec::new(),
        };
        self.check_cpu_memory(req)?;
        Ok(self.commit(id, req, &chosen))
    }

    /// Frees what `id` holds. Returns whether it held anything; releasing twice is harmless.
    pub fn release(&mut self, id: SandboxId) -> bool {
        let Some(r) = self.reservations.remove(&id) else {
            return false;
        };
        for (pos, slot) in r.slots {
            self.gpus[pos].free(slot);
        }
        self.used_cpu = self.used_cpu.saturating_sub(u64::from(r.cpu.0));
        self.used_memory = self.used_memory.saturating_sub(r.memory.bytes());
        true
    }

    /// Reserves a persisted placement again, e.g. after a restart, so that the scheduler's state
    /// matches the sandboxes that still hold resources.
    ///
    /// GPUs are found by UUID; the stored placement takes the device's current index, minor,
    /// type and memory. A reservation that conflicts with what is already reserved, names
    /// a GPU the host does not have, does not match its request, or exceeds the CPU or memory
    /// is refused, and nothing is reserved.
    pub fn restore(&mut self, id: SandboxId, req: &Request, placement: &Placement) -> Result<(), PlaceError> {
        if self.reservations.contains_key(&id) {
            return Err(PlaceError::AlreadyPlaced { id });
        }
        let conflict = |conflict| PlaceError::RestoreConflict { id, conflict };
        let chosen = match &req.gpu {
            None if placement.gpus.is_empty() => Vec::new(),
            None => {
                return Err(conflict(RestoreConflict::ShapeMismatch {
                    count: 0,
                    fraction: 0,
                    found_count: placement.gpus.len(),
                    found_fraction: placement.gpus.first().map_or(0, |s| s.fraction),
                }));
            }
            Some(g) => {
                let class = validate_gpu_request(g)?;
                let odd_fraction = placement.gpus.iter().find(|s| s.fraction != g.fraction);
                let same_count = u32::try_from(placement.gpus.len()).is_ok_and(|n| n == g.count);
                if !same_count || odd_fraction.is_some() {
                    return Err(conflict(RestoreConflict::ShapeMismatch {
                        count: g.count,
                        fraction: g.fraction,
                        found_count: placement.gpus.len(),
                        found_fraction: odd_fraction.map_or(g.fraction, |s| s.fraction),
                    }));
                }
                let mut chosen: Vec<Chosen> = Vec::new();
                for s in &placement.gpus {
                    let Some(pos) = self.host.gpus.iter().position(|d| d.uuid == s.uuid) else {
                        return Err(conflict(RestoreConflict::UnknownGpu { uuid: s.uuid.clone() }));
                    };
                    if chosen.iter().any(|c| c.pos == pos) {
                        return Err(conflict(RestoreConflict::DuplicateGpu { uuid: s.uuid.clone() }));
                    }
                    let device = &self.host.gpus[pos];
                    let first_model = chosen.first().map(|c| &self.host.gpus[c.pos].model);
                    let wrong = match first_model {
                        Some(m) if *m != device.model => Some(m.clone()),
                        _ if !type_matches(&g.gpu_type, &device.model) => Some(g.gpu_type.clone()),
                        _ => None,
                    };
                    if let Some(requested) = wrong {
                        return Err(conflict(RestoreConflict::WrongType {
                            uuid: s.uuid.clone(),
                            model: device.model.clone(),
                            requested,
                        }));
                    }
                    if s.slot >= class.slots() {
                        return Err(conflict(RestoreConflict::NoSuchSlot {
                            uuid: s.uuid.clone(),
                            slot: s.slot,
                            fraction: g.fraction,
                        }));
                    }
                    let state = &self.gpus[pos];
                    if let Some(held) = state.class.filter(|&c| c != class) {
                        return Err(conflict(RestoreConflict::OtherClass {
                            uuid: s.uuid.clone(),
                            held: held.fraction(),
                            wanted: g.fraction,
                        }));
                    }
                    if let Some(holder) = state.holders[usize::from(s.slot)] {
                        return Err(conflict(RestoreConflict::SlotTaken {
                            uuid: s.uuid.clone(),
                            slot: s.slot,
                            holder,
                        }));
                    }
                    chosen.push(Chosen { pos, class, slot: s.slot });
                }
                chosen
            }
        };
        self.check_cpu_memory(req)?;
        self.commit(id, req, &chosen);
        Ok(())
    }

    /// What is free of each GPU type, sorted by type, then memory, with real devices first.
    pub fn availability(&self) -> Vec<GpuAvailability> {
        let mut groups: BTreeMap<(&str, ByteSize, bool), GpuAvailability> = BTreeMap::new();
        for (device, state) in self.host.gpus.iter().zip(&self.gpus) {
            let a = groups.entry((&device.model, device.memory, device.simulated)).or_insert_with(|| {
                GpuAvailability {
                    model: device.model.clone(),
                    memory: device.memory,
                    total: 0,
                    free_whole: 0,
                    free_slots: FreeSlots::default(),
                    simulated: device.simulated,
                }
            });
            a.total += 1;
            let free = |class| u32::from(state.free_for(class).unwrap_or(0));
            if state.is_empty() {
                a.free_whole += 1;
            }
            a.free_slots.quarter += free(Class::Quarter);
            a.free_slots.half += free(Class::Half);
            a.free_slots.three_quarters += free(Class::ThreeQuarters);
        }
        groups.into_values().collect()
    }

    /// Picks `count` distinct GPUs of one type for the request, best fit, and a free slot on
    /// each: (device position, share size, slot). Reserves nothing.
    fn choose_gpus(&self, g: &GpuRequest) -> Result<Vec<Chosen>, PlaceError> {
        let class = validate_gpu_request(g)?;
        let mut by_model: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (pos, d) in self.host.gpus.iter().enumerate() {
            if type_matches(&g.gpu_type, &d.model) {
                by_model.entry(&d.model).or_default().push(pos);
            }
        }
        if by_model.is_empty() {
            let mut available: Vec<String> = self.host.gpus.iter().map(|d| d.model.clone()).collect();
            available.sort();
            available.dedup();
            return Err(PlaceError::UnknownType { requested: g.gpu_type.trim().to_string(), available });
        }
        let count = usize::try_from(g.count).unwrap_or(usize::MAX);
        let largest = by_model.values().map(Vec::len).max().unwrap_or(0);
        if largest < count {
            return Err(PlaceError::TooManyGpus {
                gpu_type: g.gpu_type.trim().to_string(),
                requested: g.count,
                total: u32::try_from(largest).unwrap_or(u32::MAX),
            });
        }
        // Best fit: GPUs already in use before empty ones, then the fewest free slots, then index.
        let mut best: Option<((usize, usize), Vec<Chosen>)> = None;
        let mut most_candidates = 0;
        for positions in by_model.values() {
            let mut candidates: Vec<((bool, u8, u32), Chosen)> = positions
                .iter()
                .filter_map(|&pos| {
                    let state = &self.gpus[pos];
                    let free = state.free_for(class)?;
                    let slot = state.first_free_slot(class)?;
                    Some(((state.is_empty(), free, self.host.gpus[pos].index), Chosen { pos, class, slot }))
                })
                .collect();
            most_candidates = most_candidates.max(candidates.len());
            if candidates.len() < count {
                continue;
            }
            candidates.sort_by_key(|(key, _)| *key);
            candidates.truncate(count);
            let opened = candidates.iter().filter(|((empty, _, _), _)| *empty).count();
            let left: usize = candidates.iter().map(|((_, free, _), _)| usize::from(*free)).sum();
            let score = (opened, left);
            if best.as_ref().is_none_or(|(s, _)| score < *s) {
                best = Some((score, candidates.into_iter().map(|(_, chosen)| chosen).collect()));
            }
        }
        match best {
            Some((_, chosen)) => Ok(chosen),
            None => Err(PlaceError::NoGpuCapacity {
                message: self.no_gpu_message(g, class, &by_model, most_candidates),
            }),
        }
    }

    fn no_gpu_message(
        &self,
        g: &GpuRequest,
        class: Class,
        by_model: &BTreeMap<&str, Vec<usize>>,
        candidates: usize,
    ) -> String {
        let gpu_type = g.gpu_type.trim();
        let lead = match (g.count, class) {
            (1, Class::Whole) => format!("no {gpu_type} is free as a whole GPU"),
            (1, _) => format!("no {gpu_type} has a free {}% share", class.fraction()),
            (n, Class::Whole) => {
                format!("fewer than {n} {gpu_type} GPUs are free as whole GPUs ({candidates} are)")
            }
            (n, _) => format!(
                "fewer than {n} {gpu_type} GPUs have a free {}% share ({candidates} do)",
                class.fraction()
            ),
        };
        let (mut total, mut whole, mut quarter, mut half) = (0usize, 0usize, 0usize, 0usize);
        for &pos in by_model.values().flatten() {
            let state = &self.gpus[pos];
            total += 1;
            match state.class {
                None => whole += 1,
                Some(Class::Quarter) => {
                    quarter += usize::from(state.free_for(Class::Quarter).unwrap_or(0));
                }
                Some(Class::Half) => half += usize::from(state.free_for(Class::Half).unwrap_or(0)),
                Some(Class::ThreeQuarters | Class::Whole) => {}
            }
        }
        let mut parts = vec![format!("{total} {gpu_type} in all"), format!("{whole} whole free")];
        for (n, fraction) in [(quarter, 25), (half, 50)] {
            if n > 0 {
                let s = if n == 1 { "" } else { "s" };
                parts.push(format!("{n} free {fraction}% slot{s}"));
            }
        }
        format!("{lead}: {}", parts.join(", "))
    }

    fn check_cpu_memory(&self, req: &Request) -> Result<(), PlaceError> {
        let limit = self.cpu_limit();
        if self.used_cpu + u64::from(req.cpu.0) > limit {
            return Err(PlaceError::NoCapacity {
                resource: Resource::Cpu,
                message: format!(
                    "not enough CPU: {} requested, {} free of {}",
                    req.cpu,
                    self.free_cpu(),
                    MilliCpu(u32::try_from(limit).unwrap_or(u32::MAX)),
                ),
            });
        }
        let fits =
            self.used_memory.checked_add(req.memory.bytes()).is_some_and(|m| m <= self.host.memory.bytes());
        if !fits {
            return Err(PlaceError::NoCapacity {
                resource: Resource::Memory,
                message: format!(
                    "not enough memory: {} requested, {} free of {}",
                    req.memory,
                    self.free_memory(),
                    self.host.memory,
                ),
            });
        }
        Ok(())
    }

    /// Reserves checked slots, CPU and memory for `id`.
    fn commit(&mut self, id: SandboxId, req: &Request, chosen: &[Chosen]) -> Placement {
        let mut gpus: Vec<GpuSlot> = chosen
            .iter()
            .map(|c| {
                self.gpus[c.pos].take(c.class, c.slot, id);
                slot_of(&self.host.gpus[c.pos], c.class, c.slot)
            })
            .collect();
        gpus.sort_by_key(|s| s.index);
        let placement = Placement { gpus };
        self.used_cpu += u64::from(req.cpu.0);
        self.used_memory += req.memory.bytes();
        self.reservations.insert(
            id,
            Reservation {
                cpu: req.cpu,
                memory: req.memory,
                slots: chosen.iter().map(|c| (c.pos, c.slot)).collect(),
                placement: placement.clone(),
            },
        );
        placement
    }
}

fn validate_gpu_request(g: &GpuRequest) -> Result<Class, PlaceError> {
    let class =
        Class::from_fraction(g.fraction).ok_or(PlaceError::InvalidFraction { fraction: g.fraction })?;
    if g.count == 0 {
        return Err(PlaceError::ZeroCount);
    }
    Ok(class)
}

fn slot_of(device: &GpuDevice, class: Class, slot: u8) -> GpuSlot {
    let share = u128::from(device.memory.bytes()) * u128::from(class.fraction()) / 100;
    GpuSlot {
        index: device.index,
        minor: device.minor,
        uuid: device.uuid.clone(),
        model: device.model.clone(),
        memory_share: ByteSize(u64::try_from(share).unwrap_or(u64::MAX)),
        fraction: class.fraction(),
        slot,
    }
}

#[cfg(test)]
mod tests;

//! What a host offers: CPU, memory and its GPUs, and the simulated GPU inventory of
//! `SANDPIT_SIMULATE_GPUS` and the config file.
//!
//! # Simulated inventory spec
//!
//! A comma-separated list of `TYPE[:MEMORY][xCOUNT]` entries, e.g. `"H100x2,T4x4"`,
//! `"A100-80GBx1"`, `"MI300:192Gix2"`:
//!
//! - Whitespace around entries and their parts is ignored; a blank spec means no GPUs.
//! - `TYPE` is a product-sheet type in any case (`h100`, `a100-80gb`), written back in its
//!   canonical spelling; `A100` alone is refused as ambiguous (write `A100-40GB` or `A100-80GB`).
//! - Any other type must give its memory (`MI300:192Gi`); without one it is refused, so a typo
//!   (`H10x2`) is not silently a new type. Its name must be 1 to 64 of `[A-Za-z0-9-]`.
//! - `MEMORY` uses the size forms of requests (`80Gi`, `192G`); for a product-sheet type it
//!   overrides the nominal memory.
//! - `COUNT` (after the last `x` or `X`) is 1 when absent and at least 1; a host has at most
//!   [`MAX_SIMULATED_GPUS`] devices in all.
//!
//! Devices are numbered in order (index and minor both count from 0) and marked simulated; their
//! UUIDs are `GPU-sim-<type>-<n>` with `n` counting devices of that type from 0, so a reservation
//! persisted against one survives reordering the spec.

use sandpit_types::{ByteSize, MilliCpu, QuantityError};
use serde::{Deserialize, Serialize};

use crate::model::{GpuModel, MAX_TYPE_NAME};

/// The most devices a simulated inventory may hold.
pub const MAX_SIMULATED_GPUS: u32 = 64;

/// One GPU of the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuDevice {
    /// Host NVML index.
    pub index: u32,
    /// Device node number: `/dev/nvidia<minor>`.
    pub minor: u32,
    /// NVML UUID (`GPU-…`); stable across reboots, so reservations are restored by it.
    pub uuid: String,
    /// Canonical type name (see [`crate::model`]).
    pub model: String,
    /// Total memory.
    pub memory: ByteSize,
    /// Not a real device: sandboxes get no device node.
    pub simulated: bool,
}

/// Everything a host can hand out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCapacity {
    /// CPU for sandboxes.
    pub cpu: MilliCpu,
    /// Memory for sandboxes.
    pub memory: ByteSize,
    /// The GPUs.
    pub gpus: Vec<GpuDevice>,
}

/// A GPU inventory that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// Two devices share a UUID or an index.
    #[error("GPU {what} {value:?} appears twice in the inventory")]
    Duplicate {
        /// `uuid` or `index`.
        what: &'static str,
        /// The repeated value.
        value: String,
    },
}

impl HostCapacity {
    /// Checks that devices have distinct UUIDs and indexes (reservations refer to both).
    pub fn validate(&self) -> Result<(), InventoryError> {
        for (i, d) in self.gpus.iter().enumerate() {
            for e in &self.gpus[..i] {
                if e.uuid == d.uuid {
                    return Err(InventoryError::Duplicate { what: "uuid", value: d.uuid.clone() });
                }
                if e.index == d.index {
                    return Err(InventoryError::Duplicate { what: "index", value: d.index.to_string() });
                }
            }
        }
        Ok(())
    }
}

/// A simulated inventory spec that cannot be parsed; each names the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// An entry between commas is blank.
    #[error("empty entry {position} in GPU spec (expected e.g. \"H100x2,T4x4\")")]
    EmptyEntry {
        /// 1-based position of the entry.
        position: usize,
    },
    /// The type name is empty or has characters other than `[A-Za-z0-9-]`, or is too long.
    #[error("invalid GPU type {entry:?}: expected 1 to 64 of A-Z, a-z, 0-9 and '-'")]
    BadType {
        /// The entry.
        entry: String,
    },
    /// A type not on the product sheet, without a memory size.
    #[error(
        "unknown GPU type {gpu_type:?}: give its memory (e.g. \"{gpu_type}:48Gix1\") or use one of {known}"
    )]
    UnknownType {
        /// The type as written.
        gpu_type: String,
        /// The product sheet's types, comma-separated.
        known: String,
    },
    /// `A100` without its size.
    #[error("GPU type {gpu_type:?} is ambiguous: write one of {choices}")]
    AmbiguousType {
        /// The type as written.
        gpu_type: String,
        /// The sizes to choose from, comma-separated.
        choices: String,
    },
    /// The memory size does not parse, or is zero.
    #[error("invalid GPU memory in {entry:?}: {reason}")]
    BadMemory {
        /// The entry.
        entry: String,
        /// What is wrong.
        reason: MemoryProblem,
    },
    /// The count after `x` is 0.
    #[error("GPU count in {entry:?} must be at least 1")]
    ZeroCount {
        /// The entry.
        entry: String,
    },
    /// More devices than [`MAX_SIMULATED_GPUS`].
    #[error("GPU spec lists more than {max} GPUs")]
    TooMany {
        /// The limit.
        max: u32,
    },
}

/// Why a memory size in a spec entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryProblem {
    /// Not a size.
    #[error(transparent)]
    Malformed(#[from] QuantityError),
    /// Zero bytes.
    #[error("it must be more than 0")]
    Zero,
}

/// Parses a simulated inventory spec (rules in the module documentation).
pub fn parse_simulated(spec: &str) -> Result<Vec<GpuDevice>, SpecError> {
    let mut devices: Vec<GpuDevice> = Vec::new();
    if spec.trim().is_empty() {
        return Ok(devices);
    }
    for (i, raw) in spec.split(',').enumerate() {
        let entry = raw.trim();
        if entry.is_empty() {
            return Err(SpecError::EmptyEntry { position: i + 1 });
        }
        let (model, count) = parse_entry(entry)?;
        for _ in 0..count {
            let index =
                u32::try_from(devices.len()).map_err(|_| SpecError::TooMany { max: MAX_SIMULATED_GPUS })?;
            if index >= MAX_SIMULATED_GPUS {
                return Err(SpecError::TooMany { max: MAX_SIMULATED_GPUS });
            }
            let n = devices.iter().filter(|d| d.model == model.name).count();
            devices.push(GpuDevice {
                index,
                minor: index,
                uuid: format!("GPU-sim-{}-{n}", model.name),
                model: model.name.clone(),
                memory: model.memory,
                simulated: true,
            });
        }
    }
    Ok(devices)
}

fn parse_entry(entry: &str) -> Result<(GpuModel, u32), SpecError> {
    let (rest, count) = match entry.rfind(['x', 'X']) {
        Some(at) => {
            let digits = entry[at + 1..].trim();
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                // More digits than fit is more GPUs than the limit.
                let count = digits.parse::<u32>().unwrap_or(u32::MAX);
                (entry[..at].trim(), count)
            } else {
                (entry, 1)
            }
        }
        None => (entry, 1),
    };
    if count == 0 {
        return Err(SpecError::ZeroCount { entry: entry.to_string() });
    }
    if count > MAX_SIMULATED_GPUS {
        return Err(SpecError::TooMany { max: MAX_SIMULATED_GPUS });
    }
    let (name, memory) = match rest.split_once(':') {
        Some((n, m)) => (n.trim(), Some(m.trim())),
        None => (rest, None),
    };
    let valid_name = !name.is_empty()
        && name.len() <= MAX_TYPE_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid_name {
        return Err(SpecError::BadType { entry: entry.to_string() });
    }
    let memory = memory
        .map(|m| match m.parse::<ByteSize>() {
            Ok(ByteSize(0)) => Err(MemoryProblem::Zero),
            Ok(size) => Ok(size),
            Err(e) => Err(MemoryProblem::from(e)),
        })
        .transpose()
        .map_err(|reason| SpecError::BadMemory { entry: entry.to_string(), reason })?;
    let model = match (GpuModel::known(name), memory) {
        (Some(k), memory) => GpuModel { name: k.name.to_string(), memory: memory.unwrap_or(k.memory) },
        (None, Some(memory)) => GpuModel { name: name.to_string(), memory },
        (None, None) => {
            let family: Vec<&str> = crate::model::KNOWN_MODELS
                .iter()
                .filter(|k| crate::model::family_of(k.name).is_some_and(|f| f.eq_ignore_ascii_case(name)))
                .map(|k| k.name)
                .collect();
            if family.is_empty() {
                let known: Vec<&str> = crate::model::KNOWN_MODELS.iter().map(|k| k.name).collect();
                return Err(SpecError::UnknownType { gpu_type: name.to_string(), known: known.join(", ") });
            }
            return Err(SpecError::AmbiguousType { gpu_type: name.to_string(), choices: family.join(", ") });
        }
    };
    Ok((model, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(devices: &[GpuDevice]) -> Vec<(u32, u32, String, String, u64)> {
        devices
            .iter()
            .map(|d| (d.index, d.minor, d.uuid.clone(), d.model.clone(), d.memory.bytes() >> 30))
            .collect()
    }

    #[test]
    fn simulated_spec_lists_devices_in_order_with_stable_uuids() {
        let d = parse_simulated("H100x2,T4x1,H100").unwrap();
        assert_eq!(
            summary(&d),
            vec![
                (0, 0, "GPU-sim-H100-0".into(), "H100".into(), 80),
                (1, 1, "GPU-sim-H100-1".into(), "H100".into(), 80),
                (2, 2, "GPU-sim-T4-0".into(), "T4".into(), 16),
                (3, 3, "GPU-sim-H100-2".into(), "H100".into(), 80),
            ]
        );
        assert!(d.iter().all(|g| g.simulated));
    }

    #[test]
    fn simulated_spec_tolerates_whitespace_and_any_case() {
        let a = parse_simulated(" h100 x 2 ,  t4X4 ").unwrap();
        assert_eq!(a, parse_simulated("H100x2,T4x4").unwrap());
        assert_eq!(a.len(), 6);
        let b = parse_simulated("a100-80gbx1").unwrap();
        assert_eq!(summary(&b), vec![(0, 0, "GPU-sim-A100-80GB-0".into(), "A100-80GB".into(), 80)]);
        assert!(parse_simulated("   ").unwrap().is_empty());
        assert!(parse_simulated("").unwrap().is_empty());
    }

    #[test]
    fn simulated_spec_takes_unknown_types_with_their_memory() {
        let d = parse_simulated("MI300:192Gix2, RTX-6000-Ada : 48Gi").unwrap();
        assert_eq!(
            summary(&d),
            vec![
                (0, 0, "GPU-sim-MI300-0".into(), "MI300".into(), 192),
                (1, 1, "GPU-sim-MI300-1".into(), "MI300".into(), 192),
                (2, 2, "GPU-sim-RTX-6000-Ada-0".into(), "RTX-6000-Ada".into(), 48),
            ]
        );
        let t4 = parse_simulated("T4:8Gi").unwrap();
        assert_eq!(t4[0].memory, ByteSize::gib(8), "explicit memory overrides the sheet");
    }

    #[test]
    fn simulated_spec_errors_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("MI300x2", "unknown GPU type \"MI300\": give its memory"),
            ("H10x2", "unknown GPU type \"H10\""),
            ("A100x2", "\"A100\" is ambiguous: write one of A100-40GB, A100-80GB"),
            ("H100x0", "GPU count in \"H100x0\" must be at least 1"),
            ("H100x2,,T4", "empty entry 2"),
            ("H100x2,", "empty entry 2"),
            ("MI300:lotsx2", "invalid GPU memory in \"MI300:lotsx2\""),
            ("MI300:0x2", "it must be more than 0"),
            ("H 100x1", "invalid GPU type \"H 100x1\""),
            ("x2", "invalid GPU type \"x2\""),
            ("H100x65", "more than 64 GPUs"),
            ("H100x40,T4x40", "more than 64 GPUs"),
            ("H100x99999999999", "more than 64 GPUs"),
        ];
        for &(spec, want) in cases {
            let e = parse_simulated(spec).unwrap_err().to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn inventories_with_repeated_uuids_or_indexes_are_refused() {
        let mut host = HostCapacity { gpus: parse_simulated("T4x2").unwrap(), ..Default::default() };
        assert_eq!(host.validate(), Ok(()));
        host.gpus[1].index = 0;
        assert!(host.validate().unwrap_err().to_string().contains("index \"0\""));
        host.gpus[1].index = 1;
        host.gpus[1].uuid = host.gpus[0].uuid.clone();
        assert!(host.validate().unwrap_err().to_string().contains("uuid"));
    }
}

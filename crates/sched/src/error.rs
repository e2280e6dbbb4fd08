//! Why a placement or a restore is refused, and how each refusal reaches the API.

use std::fmt;

use sandpit_types::{ApiError, SandboxId};
use serde::{Deserialize, Serialize};

/// A host resource other than GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// CPU.
    Cpu,
    /// Memory.
    Memory,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
        })
    }
}

/// A request the scheduler refuses. Nothing is reserved when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// No GPU on this host has the requested type (400, field `gpu.type`).
    #[error("{}", unknown_type_message(requested, available))]
    UnknownType {
        /// The type as requested.
        requested: String,
        /// The types this host has, sorted, without repeats.
        available: Vec<String>,
    },
    /// More GPUs than this host has of the type (400, field `gpu.count`).
    #[error(
        "{requested} {gpu_type} GPUs requested, but this server has {total} of that type for one sandbox"
    )]
    TooManyGpus {
        /// The type as requested.
        gpu_type: String,
        /// GPUs requested.
        requested: u32,
        /// The most GPUs of one type this host has (a sandbox's GPUs are all one type).
        total: u32,
    },
    /// The fraction is not 25, 50, 75 or 100 (400, field `gpu.fraction`).
    #[error("GPU fraction must be 25, 50, 75 or 100, not {fraction}")]
    InvalidFraction {
        /// The fraction requested.
        fraction: u32,
    },
    /// A GPU request for no GPUs (400, field `gpu.count`).
    #[error("GPU count must be at least 1")]
    ZeroCount,
    /// The type exists here but not enough of it is free now (507); the message says what is.
    #[error("{message}")]
    NoGpuCapacity {
        /// What was refused and what is free, e.g. `no H100 has a free 50% share: 2 H100 in all,
        /// 0 whole free, 1 free 25% slot`.
        message: String,
    },
    /// Not enough CPU or memory is free now (503).
    #[error("{message}")]
    NoCapacity {
        /// Which resource.
        resource: Resource,
        /// What was requested and what is free.
        message: String,
    },
    /// The sandbox already holds a reservation (a caller bug: release it first).
    #[error("sandbox {id} already holds a reservation")]
    AlreadyPlaced {
        /// The sandbox.
        id: SandboxId,
    },
    /// A persisted reservation does not fit the scheduler's current state.
    #[error("cannot restore the reservation of sandbox {id}: {conflict}")]
    RestoreConflict {
        /// The sandbox.
        id: SandboxId,
        /// What is in the way.
        conflict: RestoreConflict,
    },
}

fn unknown_type_message(requested: &str, available: &[String]) -> String {
    if available.is_empty() {
        format!("no {requested} GPU on this server: it has no GPUs")
    } else {
        format!("no {requested} GPU on this server; it has {}", available.join(", "))
    }
}

/// Why a persisted reservation cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreConflict {
    /// No device of the inventory has the UUID.
    #[error("GPU {uuid} is not in the inventory")]
    UnknownGpu {
        /// The UUID in the reservation.
        uuid: String,
    },
    /// The reservation names a GPU twice.
    #[error("GPU {uuid} appears twice")]
    DuplicateGpu {
        /// The UUID.
        uuid: String,
    },
    /// The GPUs of the reservation do not agree with its request.
    #[error(
        "{found_count} GPU slot(s) of {found_fraction}% do not match a request for {count} of {fraction}%"
    )]
    ShapeMismatch {
        /// GPUs requested.
        count: u32,
        /// Fraction requested.
        fraction: u32,
        /// GPUs in the reservation.
        found_count: usize,
        /// The first fraction in the reservation that differs, or the requested one.
        found_fraction: u32,
    },
    /// The GPU's type does not match the requested type, or the GPUs differ in type.
    #[error("GPU {uuid} is a {model}, not a {requested}")]
    WrongType {
        /// The UUID.
        uuid: String,
        /// Its type.
        model: String,
        /// The type requested.
        requested: String,
    },
    /// The slot number does not exist for the fraction.
    #[error("GPU {uuid} has no slot {slot} for {fraction}% shares")]
    NoSuchSlot {
        /// The UUID.
        uuid: String,
        /// The slot.
        slot: u8,
        /// The fraction.
        fraction: u32,
    },
    /// Another sandbox holds the slot.
    #[error("slot {slot} of GPU {uuid} is held by sandbox {holder}")]
    SlotTaken {
        /// The UUID.
        uuid: String,
        /// The slot.
        slot: u8,
        /// Who holds it.
        holder: SandboxId,
    },
    /// The GPU holds shares of another size.
    #[error("GPU {uuid} holds {held}% shares, not {wanted}%")]
    OtherClass {
        /// The UUID.
        uuid: String,
        /// The share size it holds (100 for a whole sandbox).
        held: u32,
        /// The share size of the reservation.
        wanted: u32,
    },
}

impl From<PlaceError> for ApiError {
    fn from(e: PlaceError) -> Self {
        let message = e.to_string();
        match e {
            PlaceError::UnknownType { .. } => Self::invalid("gpu.type", message),
            PlaceError::TooManyGpus { .. } | PlaceError::ZeroCount => Self::invalid("gpu.count", message),
            PlaceError::InvalidFraction { .. } => Self::invalid("gpu.fraction", message),
            PlaceError::NoGpuCapacity { message } => Self::NoGpuCapacity { message },
            PlaceError::NoCapacity { message, .. } => Self::NoCapacity { message },
            PlaceError::AlreadyPlaced { .. } | PlaceError::RestoreConflict { .. } => {
                Self::Conflict { field: "id".to_string(), message }
            }
        }
    }
}

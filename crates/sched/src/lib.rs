//! sandpit's capacity model and placement: CPU, memory, and GPUs by type, count and fraction.
//!
//! Pure: no IO. The inventory comes from NVML, the config file or a simulated spec
//! ([`parse_simulated`]); the [`Scheduler`] reserves CPU, memory and GPU slots for sandboxes
//! (whole GPUs or 25/50/75 % shares) and rebuilds its state from persisted reservations after a
//! restart.

pub mod error;
pub mod inventory;
pub mod model;
pub mod scheduler;

pub use error::{PlaceError, Resource, RestoreConflict};
pub use inventory::{
    GpuDevice, HostCapacity, InventoryError, MAX_SIMULATED_GPUS, MemoryProblem, SpecError, parse_simulated,
};
pub use model::{GpuModel, KNOWN_MODELS, KnownModel, type_matches};
pub use scheduler::{
    FreeSlots, GpuAvailability, GpuSlot, GpuUsage, Overcommit, OvercommitError, Placement, Request, Scheduler,
};

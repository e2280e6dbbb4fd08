//! The host's capacity as the control plane schedules it: GPUs from NVML or a simulated
//! inventory (`SANDPIT_SIMULATE_GPUS=H100x2,T4x4`), CPU and memory, and the scheduler that
//! reserves them for sandboxes (placement is atomic with the reservation: one mutex).
//!
//! Fractional GPUs need the GPU's compute mode to be EXCLUSIVE_PROCESS (only the MPS server then
//! holds a context, so sandboxes cannot bypass MPS's limits). Otherwise a fractional request is
//! refused with a message saying so, unless the operator opted into **soft sharing**
//! (`gpu_soft_sharing = true`): then shares run under MPS in the DEFAULT compute mode, where a
//! sandbox that creates a CUDA context without MPS (unsetting `CUDA_MPS_PIPE_DIRECTORY`) gets the
//! whole GPU's memory and SMs; only the memory watchdog stands between it and its neighbours.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sandpit_runtime::GpuAttachment;
use sandpit_runtime::gpu::{ComputeMode, GpuHost, NvmlHost};
use sandpit_sched::{GpuDevice, GpuModel, HostCapacity, Placement, Request, Scheduler};
use sandpit_types::api::GpuTypeView;
use sandpit_types::{ApiError, ByteSize, MilliCpu, SandboxId};

use crate::config::ServerConfig;

/// The schedulable host.
pub struct Gpus {
    sched: Mutex<Scheduler>,
    devices: HashMap<String, GpuDevice>,
    modes: HashMap<String, ComputeMode>,
    soft_sharing: bool,
    /// NVML, when the host has real GPUs (for the watchdog).
    pub host: Option<Arc<dyn GpuHost>>,
}

impl std::fmt::Debug for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpus").field("devices", &self.devices.len()).finish_non_exhaustive()
    }
}

/// Devices, their compute modes, and NVML when real.
type Inventory = (Vec<GpuDevice>, HashMap<String, ComputeMode>, Option<Arc<dyn GpuHost>>);

/// The inventory could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The simulated spec is malformed.
    #[error("simulate_gpus: {0}")]
    Spec(#[from] sandpit_sched::SpecError),
    /// The inventory is inconsistent.
    #[error("GPU inventory: {0}")]
    Inventory(#[from] sandpit_sched::InventoryError),
}

fn host_memory() -> ByteSize {
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    ByteSize(kib * 1024)
}

impl Gpus {
    /// Builds the inventory: simulated GPUs when configured, else NVML's, else none.
    pub fn detect(config: &ServerConfig) -> Result<Self, InventoryError> {
        let (devices, modes, host): Inventory =
            match config.simulate_gpus.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(spec) => (sandpit_sched::parse_simulated(spec)?, HashMap::new(), None),
                None => match NvmlHost::detect() {
                    Some(nvml) => {
                        let gpus = nvml.gpus();
                        let devices = gpus
                            .iter()
                            .map(|g| GpuDevice {
                                index: g.index,
                                minor: g.minor,
                                uuid: g.uuid.clone(),
                                model: GpuModel::from_nvml_name(&g.name, g.memory).name,
                                memory: ByteSize(g.memory),
                                simulated: false,
                            })
                            .collect();
                        let modes = gpus.iter().map(|g| (g.uuid.clone(), g.compute_mode)).collect();
                        (devices, modes, Some(Arc::new(nvml)))
                    }
                    None => (Vec::new(), HashMap::new(), None),
                },
            };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let factor = usize::try_from(config.cpu_overcommit.max(1)).unwrap_or(1);
        let cpu = u32::try_from(cores.saturating_mul(1000).saturating_mul(factor)).unwrap_or(u32::MAX);
        let memory =
            ByteSize(host_memory().bytes() / 100 * u64::from(config.memory_overcommit_percent.max(1)));
        let capacity = HostCapacity { cpu: MilliCpu(cpu), memory, gpus: devices.clone() };
        capacity.validate()?;
        Ok(Self {
            sched: Mutex::new(Scheduler::new(capacity)),
            devices: devices.into_iter().map(|d| (d.uuid.clone(), d)).collect(),
            modes,
            soft_sharing: config.gpu_soft_sharing,
            host,
        })
    }

    fn sched(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves CPU, memory and GPUs for a sandbox, refusing a fractional share on a GPU whose
    /// compute mode does not allow hard sharing (unless soft sharing is on).
    pub fn place(&self, id: SandboxId, req: &Request) -> Result<Placement, ApiError> {
        let mut sched = self.sched();
        let placement = sched.place(id, req).map_err(ApiError::from)?;
        for slot in placement.gpus.iter().filter(|s| s.fraction < 100) {
            match self.modes.get(&slot.uuid) {
                Some(ComputeMode::ExclusiveProcess) | None => {}
                Some(mode) if !self.soft_sharing => {
                    sched.release(id);
                    return Err(ApiError::invalid(
                        "gpu.fraction",
                        format!(
                            "fractional GPUs need the GPU's compute mode EXCLUSIVE_PROCESS, but {} ({}) is in {mode:?} mode: \
                             ask the operator to run `nvidia-smi -i {} -c EXCLUSIVE_PROCESS`, or to enable soft sharing \
                             (gpu_soft_sharing = true, weaker isolation)",
                            slot.model, slot.uuid, slot.index
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(placement)
    }

    /// Releases a sandbox's reservation (idempotent).
    pub fn release(&self, id: SandboxId) {
        self.sched().release(id);
    }

    /// Rebuilds a reservation after a restart.
    pub fn restore(&self, id: SandboxId, req: &Request, placement: &Placement) -> Result<(), ApiError> {
        self.sched().restore(id, req, placement).map_err(ApiError::from)
    }

    /// What the runtime needs for a placement.
    pub fn attachments(&self, placement: &Placement) -> Vec<GpuAttachment> {
        placement
            .gpus
            .iter()
            .map(|s| GpuAttachment {
                index: s.index,
                minor: s.minor,
                uuid: s.uuid.clone(),
                fraction: s.fraction,
                memory_limit: s.memory_share,
                simulated: self.devices.get(&s.uuid).is_none_or(|d| d.simulated),
            })
            .collect()
    }

    /// `GET /v1/gpus`.
    pub fn view(&self) -> Vec<GpuTypeView> {
        self.sched()
            .availability()
            .into_iter()
            .map(|a| GpuTypeView {
                gpu_type: a.model,
                memory: a.memory,
                total: a.total,
                free_whole: a.free_whole,
                free_25: a.free_slots.quarter,
                free_50: a.free_slots.half,
                free_75: a.free_slots.three_quarters,
                simulated: a.simulated,
            })
            .collect()
    }

    /// Share limits of the sandboxes holding real GPU shares, for the watchdog:
    /// (sandbox, GPU uuid) → memory.
    pub fn share_limits(&self, placements: &[(SandboxId, Placement)]) -> BTreeMap<(SandboxId, String), u64> {
        placements
            .iter()
            .flat_map(|(id, p)| p.gpus.iter().map(move |s| ((*id, s.uuid.clone()), s.memory_share.bytes())))
            .filter(|((_, uuid), _)| self.devices.get(uuid).is_some_and(|d| !d.simulated))
            .collect()
    }

    /// UUIDs of the GPUs (for tests and logs).
    pub fn uuids(&self) -> HashSet<String> {
        self.devices.keys().cloned().collect()
    }
}

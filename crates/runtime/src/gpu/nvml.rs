//! The host's GPUs through NVML (`nvml-wrapper`, which loads `libnvidia-ml.so` at run time, so
//! sandpit builds and runs on hosts without a driver).

use std::sync::Mutex;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::ComputeMode as NvmlComputeMode;
use nvml_wrapper::enums::device::UsedGpuMemory;

use super::watchdog::GpuProcess;

/// A GPU's compute mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeMode {
    /// Many contexts; required to be `ExclusiveProcess` for hard sharing through MPS.
    Default,
    /// One context (the MPS server's): what fractional sharing needs.
    ExclusiveProcess,
    /// No contexts.
    Prohibited,
    /// Anything else.
    Other,
}

/// One GPU as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGpu {
    /// NVML index.
    pub index: u32,
    /// Device node number.
    pub minor: u32,
    /// UUID.
    pub uuid: String,
    /// Model name as NVML reports it (`NVIDIA H200`).
    pub name: String,
    /// Total memory in bytes.
    pub memory: u64,
    /// Compute mode.
    pub compute_mode: ComputeMode,
}

/// Something that knows the host's GPUs (NVML here; a fake in tests).
pub trait GpuHost: Send + Sync {
    /// The GPUs.
    fn gpus(&self) -> Vec<HostGpu>;
    /// Processes using each GPU, with their memory.
    fn processes(&self) -> Vec<GpuProcess>;
}

/// NVML.
pub struct NvmlHost {
    nvml: Mutex<Nvml>,
}

impl std::fmt::Debug for NvmlHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NvmlHost")
    }
}

impl NvmlHost {
    /// NVML if it loads and sees at least one GPU; `None` otherwise (no driver, no GPU).
    pub fn detect() -> Option<Self> {
        let nvml = Nvml::init().ok()?;
        if nvml.device_count().ok()? == 0 {
            return None;
        }
        Some(Self { nvml: Mutex::new(nvml) })
    }

    /// The driver version.
    pub fn driver_version(&self) -> Option<String> {
        self.nvml.lock().unwrap_or_else(|p| p.into_inner()).sys_driver_version().ok()
    }
}

impl GpuHost for NvmlHost {
    fn gpus(&self) -> Vec<HostGpu> {
        let nvml = self.nvml.lock().unwrap_or_else(|p| p.into_inner());
        let n = nvml.device_count().unwrap_or(0);
        (0..n)
            .filter_map(|i| {
                let d = nvml.device_by_index(i).ok()?;
                let compute_mode = match d.compute_mode() {
                    Ok(NvmlComputeMode::Default) => ComputeMode::Default,
                    Ok(NvmlComputeMode::ExclusiveProcess) => ComputeMode::ExclusiveProcess,
                    Ok(NvmlComputeMode::Prohibited) => ComputeMode::Prohibited,
                    _ => ComputeMode::Other,
                };
                Some(HostGpu {
                    index: i,
                    minor: d.minor_number().ok()?,
                    uuid: d.uuid().ok()?,
                    name: d.name().ok()?,
                    memory: d.memory_info().ok()?.total,
                    compute_mode,
                })
            })
            .collect()
    }

    fn processes(&self) -> Vec<GpuProcess> {
        let nvml = self.nvml.lock().unwrap_or_else(|p| p.into_inner());
        let n = nvml.device_count().unwrap_or(0);
        let mut out = Vec::new();
        for i in 0..n {
            let Ok(d) = nvml.device_by_index(i) else { continue };
            let Ok(uuid) = d.uuid() else { continue };
            for p in d.running_compute_processes().unwrap_or_default() {
                let used = match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => b,
                    UsedGpuMemory::Unavailable => 0,
                };
                out.push(GpuProcess { gpu: uuid.clone(), pid: p.pid, used_bytes: used });
            }
        }
        out
    }
}

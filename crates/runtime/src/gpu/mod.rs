//! NVIDIA GPUs on this host: the inventory (NVML, loaded at run time), what a sandbox gets to use
//! a GPU (device nodes, device-cgroup rules, the driver's user-space files, environment), CUDA MPS
//! control daemons for fractional shares, and the memory watchdog.
//!
//! Whole GPU: the sandbox gets `/dev/nvidia<minor>` of its GPU only, plus `/dev/nvidiactl`,
//! `/dev/nvidia-uvm` and `/dev/nvidia-uvm-tools`, with matching device-cgroup allow rules; never
//! `/dev/nvidia-caps/*`. The driver's libraries and tools are bind-mounted read-only at their
//! host paths.
//!
//! Share (25/50/75 %): additionally the pipe directory of the GPU's MPS control daemon, whose
//! default pinned-memory and active-thread limits equal the share; client-side variables can only
//! lower them. MPS caps memory per client process, so the watchdog sums memory per sandbox.

pub mod inject;
pub mod mps;
pub mod nvml;
pub mod watchdog;

pub use inject::{DriverFiles, GpuFragment};
pub use mps::MpsManager;
pub use nvml::{ComputeMode, GpuHost, HostGpu, NvmlHost};
pub use watchdog::{GpuProcess, Violation};

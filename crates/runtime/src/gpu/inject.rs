//! What goes into a sandbox's OCI config for its GPUs.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, Mount,
    MountBuilder,
};

use crate::error::{Result, RuntimeError};
use crate::spec::GpuAttachment;

/// Major number of `/dev/nvidia*` and `/dev/nvidiactl`.
const NVIDIA_MAJOR: i64 = 195;
/// Minor number of `/dev/nvidiactl`.
const NVIDIACTL_MINOR: i64 = 255;
/// Where a share's MPS pipe directory appears inside the sandbox.
pub const MPS_PIPE_IN_SANDBOX: &str = "/run/nvidia-mps";

/// The driver's user-space files on the host, mounted read-only into GPU sandboxes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DriverFiles {
    /// Libraries and tools, by host path (mounted at the same path).
    pub files: Vec<PathBuf>,
    /// Major number of `nvidia-uvm` (from `/proc/devices`).
    pub uvm_major: Option<i64>,
}

/// Library name prefixes of the user-space driver (what `nvidia-container-cli list` shows).
const LIBRARIES: &[&str] = &[
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-ml.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-nvvm.so",
    "libnvidia-opencl.so",
    "libnvidia-cfg.so",
    "libnvidia-gpucomp.so",
    "libnvidia-allocator.so",
    "libnvidia-pkcs11.so",
];

/// Tools of the driver.
const TOOLS: &[&str] = &[
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
];

impl DriverFiles {
    /// Finds the driver's files on this host: libraries through the dynamic linker's cache
    /// (`ldconfig -p`), tools in the usual directories, the uvm major in `/proc/devices`.
    /// `None` when there is no NVIDIA driver.
    pub fn detect() -> Option<Self> {
        if !Path::new("/dev/nvidiactl").exists() {
            return None;
        }
        let mut files = Vec::new();
        if let Ok(out) = std::process::Command::new("ldconfig").arg("-p").output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some((name, path)) = line.trim().split_once(" => ") else { continue };
                let name = name.split_whitespace().next().unwrap_or_default();
                if LIBRARIES.iter().any(|l| name.starts_with(l)) && line.contains("x86-64") {
                    let p = PathBuf::from(path.trim());
                    // Mount the real file and the soname link both (the link resolves inside).
                    if let Ok(real) = std::fs::canonicalize(&p)
                        && !files.contains(&real)
                    {
                        files.push(real);
                    }
                    if !files.contains(&p) {
                        files.push(p);
                    }
                }
            }
        }
        for tool in TOOLS {
            for dir in ["/usr/bin", "/usr/local/bin", "/usr/local/nvidia/bin"] {
                let p = Path::new(dir).join(tool);
                if p.exists() && !files.contains(&p) {
                    files.push(p);
                }
            }
        }
        files.sort();
        let uvm_major = std::fs::read_to_string("/proc/devices").ok().and_then(|d| {
            d.lines().find_map(|l| {
                let (num, name) = l.trim().split_once(' ')?;
                (name == "nvidia-uvm").then(|| num.parse().ok()).flatten()
            })
        });
        Some(Self { files, uvm_major })
    }
}

/// The OCI parts for a sandbox's GPUs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuFragment {
    /// Device nodes to create.
    pub devices: Vec<LinuxDevice>,
    /// Device-cgroup allow rules.
    pub cgroup_rules: Vec<LinuxDeviceCgroup>,
    /// Read-only mounts of driver files and the MPS pipe directory.
    pub mounts: Vec<Mount>,
    /// Environment (`NAME=value`).
    pub env: Vec<String>,
}

fn oci(e: oci_spec::OciSpecError) -> RuntimeError {
    RuntimeError::InvalidSpec { field: "gpu", reason: e.to_string() }
}

fn char_device(path: &str, major: i64, minor: i64) -> Result<(LinuxDevice, LinuxDeviceCgroup)> {
    let dev = LinuxDeviceBuilder::default()
        .path(path)
        .typ(LinuxDeviceType::C)
        .major(major)
        .minor(minor)
        .file_mode(0o666u32)
        .uid(0u32)
        .gid(0u32)
        .build()
        .map_err(oci)?;
    let rule = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(LinuxDeviceType::C)
        .major(major)
        .minor(minor)
        .access("rwm")
        .build()
        .map_err(oci)?;
    Ok((dev, rule))
}

/// The fragment for `gpus`. Simulated GPUs inject nothing but their environment. `mps_pipe`
/// gives the host pipe directory of a shared GPU's MPS daemon.
pub fn fragment(
    gpus: &[GpuAttachment],
    driver: Option<&DriverFiles>,
    mps_pipe: &dyn Fn(&GpuAttachment) -> Option<PathBuf>,
) -> Result<GpuFragment> {
    let mut f = GpuFragment::default();
    if gpus.is_empty() {
        return Ok(f);
    }
    let uuids: Vec<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
    f.env.push(format!("NVIDIA_VISIBLE_DEVICES={}", uuids.join(",")));
    f.env.push(format!("SANDPIT_GPUS={}", uuids.join(",")));
    let real: Vec<&GpuAttachment> = gpus.iter().filter(|g| !g.simulated).collect();
    if real.is_empty() {
        f.env.push("SANDPIT_GPU_SIMULATED=1".into());
        return Ok(f);
    }
    let driver = driver.ok_or_else(|| RuntimeError::Host {
        what: "NVIDIA driver",
        detail: "a GPU was assigned but this host has no NVIDIA driver".into(),
    })?;
    let mut add = |path: &str, major: i64, minor: i64| -> Result<()> {
        let (d, r) = char_device(path, major, minor)?;
        f.devices.push(d);
        f.cgroup_rules.push(r);
        Ok(())
    };
    add("/dev/nvidiactl", NVIDIA_MAJOR, NVIDIACTL_MINOR)?;
    if let Some(uvm) = driver.uvm_major {
        add("/dev/nvidia-uvm", uvm, 0)?;
        add("/dev/nvidia-uvm-tools", uvm, 1)?;
    }
    for g in &real {
        add(&format!("/dev/nvidia{}", g.minor), NVIDIA_MAJOR, i64::from(g.minor))?;
    }
    for file in &driver.files {
        f.mounts.push(
            MountBuilder::default()
                .destination(file)
                .typ("bind")
                .source(file)
                .options(vec!["bind".into(), "ro".into(), "nosuid".into(), "nodev".into()])
                .build()
                .map_err(oci)?,
        );
    }
    f.env.push("CUDA_DEVICE_ORDER=PCI_BUS_ID".into());
    let shared: Vec<&&GpuAttachment> = real.iter().filter(|g| g.fraction < 100).collect();
    if let Some(first) = shared.first() {
        if shared.len() > 1 {
            // One MPS pipe directory per sandbox: a multi-GPU share would need one per GPU,
            // which CUDA clients cannot be pointed at. The scheduler never asks for this.
            return Err(RuntimeError::InvalidSpec {
                field: "gpu",
                reason: "a sandbox can hold a share of at most one GPU".into(),
            });
        }
        let pipe = mps_pipe(first).ok_or_else(|| RuntimeError::Host {
            what: "CUDA MPS",
            detail: format!("no MPS daemon for GPU {}", first.uuid),
        })?;
        f.mounts.push(
            MountBuilder::default()
                .destination(MPS_PIPE_IN_SANDBOX)
                .typ("bind")
                .source(pipe)
                .options(vec!["bind".into(), "rw".into(), "nosuid".into(), "nodev".into()])
                .build()
                .map_err(oci)?,
        );
        f.env.push(format!("CUDA_MPS_PIPE_DIRECTORY={MPS_PIPE_IN_SANDBOX}"));
        f.env.push(format!("SANDPIT_GPU_SHARE={}", first.fraction));
    }
    Ok(f)
}

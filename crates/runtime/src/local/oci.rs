//! The OCI runtime `config.json` of a sandbox: the isolation defaults of DESIGN.md in one place.
//!
//! - all namespaces, with a user namespace mapping sandbox ids `0..size` to host ids
//!   `base..base+size` (sandbox root is an unprivileged host uid);
//! - a minimal capability set without `CAP_SYS_ADMIN`, `CAP_NET_RAW`, `CAP_MKNOD`,
//!   `CAP_SYS_PTRACE`, `CAP_SYS_MODULE`; `no_new_privileges`;
//! - the default-deny seccomp profile of [`super::seccomp`];
//! - masked and read-only `/proc` and `/sys` paths;
//! - cgroup limits for CPU, memory (no swap) and pids, and a default-deny device cgroup;
//! - a network namespace with loopback only;
//! - sandpit-init bind-mounted read-only at [`INIT_PATH`] as PID 1.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use sandpit_image::IdShift;
use sandpit_types::{ByteSize, MilliCpu};

use crate::error::{Result, RuntimeError};

/// Where sandpit-init appears inside every sandbox.
pub const INIT_PATH: &str = "/.sandpit/init";
/// CFS period used for CPU limits.
const CPU_PERIOD_US: u64 = 100_000;
/// Open files per process, when the host allows that many.
const NOFILE: u64 = 65_536;

/// Capabilities of sandbox root: what ordinary package installs and servers need, nothing that
/// reaches past the sandbox.
const CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::AuditWrite,
    Capability::Setfcap,
];

/// Paths masked inside the sandbox (an empty file or directory is mounted over them).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only inside the sandbox.
pub const READONLY_PATHS: &[&str] =
    &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Everything the config depends on.
#[derive(Debug, Clone)]
pub struct BundleParams {
    /// The mounted overlay root filesystem (host path).
    pub rootfs: PathBuf,
    /// The host path of the sandpit-init binary.
    pub init_binary: PathBuf,
    /// Arguments after the init binary.
    pub init_args: Vec<String>,
    /// `NAME=value` environment of init (and so of every process).
    pub env: Vec<String>,
    /// Host name inside the sandbox.
    pub hostname: String,
    /// CPU limit.
    pub cpu: MilliCpu,
    /// Memory limit.
    pub memory: ByteSize,
    /// Whether the host accounts swap, so that swap can be forbidden.
    pub limit_swap: bool,
    /// Pids limit.
    pub pids: u32,
    /// User-namespace id mapping.
    pub ids: IdShift,
    /// cgroup path (relative to the cgroup root).
    pub cgroups_path: PathBuf,
    /// Open-file limit (the runtime cannot raise it above its own hard limit from inside a user
    /// namespace); see [`nofile_limit`].
    pub nofile: u64,
    /// Devices, rules, mounts and environment for the sandbox's GPUs.
    pub gpu: crate::gpu::GpuFragment,
}

/// The open-file limit to give sandboxes: [`NOFILE`], or this process's hard limit if lower.
pub fn nofile_limit() -> u64 {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.unwrap_or(NOFILE);
    hard.min(NOFILE)
}

fn mount(dest: &str, typ: &str, source: &Path, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| (*o).to_string()).collect::<Vec<_>>())
        .build()
        .map_err(oci)
}

fn oci(e: oci_spec::OciSpecError) -> RuntimeError {
    RuntimeError::InvalidSpec { field: "oci config", reason: e.to_string() }
}

/// Builds the config.
pub fn build_spec(p: &BundleParams) -> Result<Spec> {
    let caps: oci_spec::runtime::Capabilities = CAPABILITIES.iter().copied().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()
        .map_err(oci)?;
    let mut args = vec![INIT_PATH.to_string()];
    args.extend(p.init_args.iter().cloned());
    let mut env = p.env.clone();
    env.extend(p.gpu.env.iter().cloned());
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build().map_err(oci)?)
        .args(args)
        .env(env)
        .cwd("/")
        .no_new_privileges(true)
        .capabilities(capabilities)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(p.nofile)
                .soft(p.nofile)
                .build()
                .map_err(oci)?,
        ])
        .oom_score_adj(500)
        .build()
        .map_err(oci)?;

    let none = Path::new("none");
    let mut mounts = vec![
        mount("/proc", "proc", Path::new("proc"), &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", Path::new("tmpfs"), &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount(
            "/dev/pts",
            "devpts",
            Path::new("devpts"),
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            Path::new("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount("/dev/mqueue", "mqueue", Path::new("mqueue"), &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", Path::new("sysfs"), &["nosuid", "noexec", "nodev", "ro"])?,
        mount("/sys/fs/cgroup", "cgroup", none, &["nosuid", "noexec", "nodev", "relatime", "ro"])?,
        mount(INIT_PATH, "bind", &p.init_binary, &["bind", "ro", "nosuid", "nodev"])?,
    ];
    mounts.extend(p.gpu.mounts.iter().cloned());

    let quota = i64::try_from(u64::from(p.cpu.0) * CPU_PERIOD_US / 1000).unwrap_or(i64::MAX);
    let mem = i64::try_from(p.memory.bytes()).unwrap_or(i64::MAX);
    let mut memory = LinuxMemoryBuilder::default().limit(mem);
    if p.limit_swap {
        // Memory plus swap equal to memory: no swap.
        memory = memory.swap(mem);
    }
    let mut devices =
        vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().map_err(oci)?];
    // null, zero, full, random, urandom, tty, console, ptmx and the pty slaves.
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, -1)] {
        let mut d = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(major)
            .access("rwm");
        if minor >= 0 {
            d = d.minor(minor);
        }
        devices.push(d.build().map_err(oci)?);
    }
    devices.extend(p.gpu.cgroup_rules.iter().cloned());
    let resources = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().quota(quota).period(CPU_PERIOD_US).build().map_err(oci)?)
        .memory(memory.build().map_err(oci)?)
        .pids(LinuxPidsBuilder::default().limit(i64::from(p.pids)).build().map_err(oci)?)
        .devices(devices)
        .build()
        .map_err(oci)?;

    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::User,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build().map_err(oci))
    .collect::<Result<Vec<_>>>()?;
    let idmap = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(p.ids.host_base())
        .size(p.ids.size())
        .build()
        .map_err(oci)?;
    let mut linux = LinuxBuilder::default();
    if !p.gpu.devices.is_empty() {
        linux = linux.devices(p.gpu.devices.clone());
    }
    let linux = linux
        .uid_mappings(vec![idmap])
        .gid_mappings(vec![idmap])
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(p.cgroups_path.clone())
        .seccomp(super::seccomp::default_profile())
        .masked_paths(MASKED_PATHS.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
        .readonly_paths(READONLY_PATHS.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
        .build()
        .map_err(oci)?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path(p.rootfs.clone()).readonly(false).build().map_err(oci)?)
        .process(process)
        .hostname(p.hostname.clone())
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(oci)
}

/// The config as JSON with set-valued fields sorted, so the same inputs give the same bytes.
pub fn to_json(spec: &Spec) -> Result<Vec<u8>> {
    let mut v = serde_json::to_value(spec)
        .map_err(|e| RuntimeError::InvalidSpec { field: "oci config", reason: e.to_string() })?;
    if let Some(caps) = v.pointer_mut("/process/capabilities").and_then(|c| c.as_object_mut()) {
        for set in caps.values_mut() {
            if let Some(a) = set.as_array_mut() {
                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
            }
        }
    }
    serde_json::to_vec_pretty(&v)
        .map_err(|e| RuntimeError::InvalidSpec { field: "oci config", reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BundleParams {
        BundleParams {
            rootfs: "/r/rootfs".into(),
            init_binary: "/r/bin/init".into(),
            init_args: vec!["--listen-fd".into(), "3".into()],
            env: vec!["PATH=/bin".into()],
            hostname: "sandbox".into(),
            cpu: MilliCpu(1500),
            memory: ByteSize::mib(256),
            limit_swap: true,
            pids: 64,
            ids: IdShift::new(1_000_000, 65_536).unwrap(),
            cgroups_path: "/sandpit/x".into(),
            nofile: 1024,
            gpu: crate::gpu::GpuFragment::default(),
        }
    }

    #[test]
    fn config_carries_the_isolation_defaults() {
        let json: serde_json::Value =
            serde_json::from_slice(&to_json(&build_spec(&params()).unwrap()).unwrap()).unwrap();
        let caps = json["process"]["capabilities"]["bounding"].as_array().unwrap();
        for banned in ["CAP_SYS_ADMIN", "CAP_NET_RAW", "CAP_MKNOD", "CAP_SYS_PTRACE", "CAP_SYS_MODULE"] {
            assert!(!caps.iter().any(|c| c == banned), "{banned} present");
        }
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["process"]["args"][0], INIT_PATH);
        let ns: Vec<&str> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for want in ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"] {
            assert!(ns.contains(&want), "{want} namespace missing: {ns:?}");
        }
        assert_eq!(json["linux"]["uidMappings"][0]["hostID"], 1_000_000);
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 150_000);
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 256 << 20);
        assert_eq!(json["linux"]["resources"]["memory"]["swap"], 256 << 20);
        assert_eq!(json["linux"]["resources"]["pids"]["limit"], 64);
        assert!(json["linux"]["maskedPaths"].as_array().unwrap().iter().any(|p| p == "/proc/kcore"));
        let init_mount =
            json["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == INIT_PATH).unwrap();
        assert!(init_mount["options"].as_array().unwrap().iter().any(|o| o == "ro"));
    }

    #[test]
    fn config_bytes_are_deterministic() {
        let a = to_json(&build_spec(&params()).unwrap()).unwrap();
        let b = to_json(&build_spec(&params()).unwrap()).unwrap();
        assert_eq!(a, b);
    }
}

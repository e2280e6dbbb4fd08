//! The GPU memory watchdog. MPS caps memory per client *process*, so a sandbox running several
//! CUDA processes could together exceed its share; the watchdog sums the GPU memory of each
//! sandbox's processes (NVML processes → host pid → the sandbox whose cgroup holds it) and reports
//! every sandbox above its share. The documented action (taken by the server) is to kill the
//! sandbox's GPU processes on that GPU, so the sandbox keeps running but gives the memory back,
//! and to record an event saying so.

use std::collections::BTreeMap;

use sandpit_types::SandboxId;

/// A process using a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuProcess {
    /// The GPU's UUID.
    pub gpu: String,
    /// Host pid.
    pub pid: u32,
    /// GPU memory it uses.
    pub used_bytes: u64,
}

/// A sandbox above its share of a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The sandbox.
    pub sandbox: SandboxId,
    /// The GPU.
    pub gpu: String,
    /// Memory it uses there, summed over its processes.
    pub used_bytes: u64,
    /// Its share.
    pub limit_bytes: u64,
    /// Its processes on that GPU.
    pub pids: Vec<u32>,
}

/// Which sandbox a host pid belongs to, from `/proc/<pid>/cgroup` (sandpit names each sandbox's
/// cgroup after its id).
pub fn sandbox_of(pid: u32, cgroup_parent: &str) -> Option<SandboxId> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    sandbox_in_cgroup_file(&text, cgroup_parent)
}

/// The sandbox named in a `/proc/<pid>/cgroup` text (`…:/<parent>/<id>…`).
pub fn sandbox_in_cgroup_file(text: &str, cgroup_parent: &str) -> Option<SandboxId> {
    let marker = format!("/{cgroup_parent}/");
    text.lines().find_map(|l| {
        let path = l.splitn(3, ':').nth(2)?;
        let rest = &path[path.find(&marker)? + marker.len()..];
        rest.split('/').next()?.parse().ok()
    })
}

/// Sandboxes above their share: `limits` maps (sandbox, GPU uuid) to the share's memory;
/// `owner` maps a pid to its sandbox.
pub fn violations(
    processes: &[GpuProcess],
    limits: &BTreeMap<(SandboxId, String), u64>,
    owner: &dyn Fn(u32) -> Option<SandboxId>,
) -> Vec<Violation> {
    let mut usage: BTreeMap<(SandboxId, String), (u64, Vec<u32>)> = BTreeMap::new();
    for p in processes {
        if let Some(sandbox) = owner(p.pid) {
            let e = usage.entry((sandbox, p.gpu.clone())).or_default();
            e.0 = e.0.saturating_add(p.used_bytes);
            e.1.push(p.pid);
        }
    }
    usage
        .into_iter()
        .filter_map(|((sandbox, gpu), (used, pids))| {
            let limit = *limits.get(&(sandbox, gpu.clone()))?;
            (used > limit).then_some(Violation { sandbox, gpu, used_bytes: used, limit_bytes: limit, pids })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_map_to_sandboxes_by_cgroup_on_v1_and_v2() {
        let id = SandboxId::generate();
        let v1 = format!("12:pids:/sandpit/{id}\n11:memory:/sandpit/{id}\n0::/\n");
        let v2 = format!("0::/sandpit/{id}\n");
        assert_eq!(sandbox_in_cgroup_file(&v1, "sandpit"), Some(id));
        assert_eq!(sandbox_in_cgroup_file(&v2, "sandpit"), Some(id));
        assert_eq!(sandbox_in_cgroup_file("0::/user.slice/x\n", "sandpit"), None);
    }

    #[test]
    fn memory_is_summed_per_sandbox_and_gpu_against_the_share() {
        let (a, b) = (SandboxId::generate(), SandboxId::generate());
        let procs = vec![
            GpuProcess { gpu: "G0".into(), pid: 1, used_bytes: 6 << 30 },
            GpuProcess { gpu: "G0".into(), pid: 2, used_bytes: 6 << 30 },
            GpuProcess { gpu: "G0".into(), pid: 3, used_bytes: 1 << 30 },
            GpuProcess { gpu: "G0".into(), pid: 99, used_bytes: 40 << 30 },
        ];
        let owner = |pid: u32| match pid {
            1 | 2 => Some(a),
            3 => Some(b),
            _ => None,
        };
        let limits =
            BTreeMap::from([((a, "G0".to_string()), 10u64 << 30), ((b, "G0".to_string()), 10u64 << 30)]);
        let v = violations(&procs, &limits, &owner);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!((v[0].sandbox, v[0].used_bytes, v[0].pids.clone()), (a, 12 << 30, vec![1, 2]));
    }
}

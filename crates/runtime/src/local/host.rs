//! What the host offers: cgroup version, swap accounting, and where a sandbox's cgroups live.

use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup layout of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Separate hierarchies per controller (possibly hybrid with a v2 mount at `unified`).
    V1,
    /// One unified hierarchy.
    V2,
}

/// Facts about the host, read once at start-up.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// cgroup version.
    pub cgroups: CgroupVersion,
    /// Whether memory+swap can be limited (so that a sandbox gets no swap).
    pub swap_accounting: bool,
}

impl HostInfo {
    /// Reads the host.
    pub fn detect() -> Self {
        let v2 = Path::new(CGROUP_ROOT).join("cgroup.controllers").exists();
        let cgroups = if v2 { CgroupVersion::V2 } else { CgroupVersion::V1 };
        let swap_accounting = match cgroups {
            CgroupVersion::V1 => Path::new(CGROUP_ROOT).join("memory/memory.memsw.limit_in_bytes").exists(),
            CgroupVersion::V2 => std::fs::read_dir(CGROUP_ROOT)
                .map(|d| d.flatten().any(|e| e.path().join("memory.swap.max").exists()))
                .unwrap_or(false),
        };
        Self { cgroups, swap_accounting }
    }

    /// Directories of the cgroup `parent/name` that exist on the host.
    pub fn cgroup_dirs(&self, parent: &str, name: &str) -> Vec<PathBuf> {
        self.cgroup_parents(parent).into_iter().map(|p| p.join(name)).filter(|p| p.is_dir()).collect()
    }

    /// The directories that hold sandpit's cgroups (`parent` under each hierarchy).
    pub fn cgroup_parents(&self, parent: &str) -> Vec<PathBuf> {
        match self.cgroups {
            CgroupVersion::V2 => vec![Path::new(CGROUP_ROOT).join(parent)],
            CgroupVersion::V1 => std::fs::read_dir(CGROUP_ROOT)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path())
                        // Skip the named hierarchies' aliases (symlinks like cpu,cpuacct).
                        .filter(|p| p.is_dir() && !p.is_symlink())
                        .map(|p| p.join(parent))
                        .filter(|p| p.is_dir())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Removes an empty cgroup directory tree (children first). Returns whether `dir` is gone.
pub fn remove_cgroup(dir: &Path) -> bool {
    if let Ok(children) = std::fs::read_dir(dir) {
        for c in children.flatten() {
            if c.path().is_dir() {
                remove_cgroup(&c.path());
            }
        }
    }
    std::fs::remove_dir(dir).is_ok() || !dir.exists()
}

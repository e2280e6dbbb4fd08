//! Runtime benchmarks: what `scripts/bench` records in `docs/benchmarks.md` for the local
//! backend, with a raw `runc run` of the same image measured in the same run as the baseline.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandpit_init::protocol::{Command, ExecRequest};
use sandpit_runtime::{Backend, ExecEvent, LocalBackend, SandboxSpec};
use sandpit_types::{ByteSize, SandboxId};

/// Latency samples.
struct Samples(Vec<Duration>);

impl Samples {
    /// The `p`th percentile (nearest rank), `p` in 0..=100.
    fn pct(&self, p: usize) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v[(p * (v.len() - 1)).div_ceil(100).min(v.len() - 1)]
    }

    fn row(&self, what: &str, target: &str) -> String {
        format!(
            "| {what} | {} | {:.2} ms | {:.2} ms | {target} |\n",
            self.0.len(),
            ms(self.pct(50)),
            ms(self.pct(99))
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn spec(image: &str) -> SandboxSpec {
    let mut s = SandboxSpec::new(SandboxId::generate(), image);
    s.memory = ByteSize::mib(256);
    s.disk = ByteSize::gib(10);
    s
}

async fn first_output(backend: &LocalBackend, id: &SandboxId, argv: &[&str]) -> Result<(), String> {
    let client = backend.init(id).await.map_err(|e| e.to_string())?;
    let req = ExecRequest {
        command: Some(Command::Argv(argv.iter().map(|a| (*a).to_string()).collect())),
        ..Default::default()
    };
    let mut s = client.exec(req).await.map_err(|e| e.to_string())?;
    while let Some(ev) = s.next().await.map_err(|e| e.to_string())? {
        if matches!(ev, ExecEvent::Stdout(_) | ExecEvent::Exited(_)) {
            break;
        }
    }
    Ok(())
}

async fn exec_true(backend: &LocalBackend, id: &SandboxId) -> Result<(), String> {
    let client = backend.init(id).await.map_err(|e| e.to_string())?;
    let req = ExecRequest { command: Some(Command::Argv(vec!["true".into()])), ..Default::default() };
    client.exec(req).await.map_err(|e| e.to_string())?.collect().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// `runc run` (foreground) of `echo hello` in a plain bundle over `rootfs`.
async fn raw_runc(rootfs: &Path, n: usize) -> Result<Samples, String> {
    let dir = tempfile_dir("raw-runc")?;
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
    let out = tokio::process::Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("runc spec: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    cfg["root"]["path"] = serde_json::Value::String(rootfs.display().to_string());
    cfg["process"]["terminal"] = serde_json::Value::Bool(false);
    cfg["process"]["args"] = serde_json::json!(["/bin/echo", "hello"]);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mut samples = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let out = tokio::process::Command::new("runc")
            .arg("--root")
            .arg(dir.join("state"))
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("bench-raw-{i}"))
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| e.to_string())?;
        samples.push(t.elapsed());
        if !out.status.success() {
            return Err(format!("runc run: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Samples(samples))
}

fn tempfile_dir(name: &str) -> Result<std::path::PathBuf, String> {
    let d = std::env::temp_dir().join(format!("sandpit-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    Ok(d)
}

fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn proc_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs every measurement and returns the Markdown section.
pub async fn run(
    backend: &Arc<LocalBackend>,
    root: &Path,
    image: &str,
    rootfs: &Path,
    idle: usize,
) -> Result<String, String> {
    let err = |e: sandpit_runtime::RuntimeError| e.to_string();
    let mut md = String::new();
    let host = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(
        md,
        "Machine: {} CPUs ({host}), {} GiB RAM, Linux {}, runc from PATH, state under {}.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        meminfo_kib("MemTotal:") / (1 << 20),
        kernel.trim(),
        root.display()
    );
    md.push_str("| measurement | n | p50 | p99 | target |\n|---|---|---|---|---|\n");

    let raw = raw_runc(rootfs, 20).await?;
    md.push_str(&raw.row("raw `runc run` of busybox `echo hello` (baseline)", "—"));

    // Warm up: the first creates fill the pool of pre-formatted disks and the page cache.
    for _ in 0..5 {
        let s = spec(image);
        let id = s.id;
        backend.create(s).await.map_err(err)?;
        backend.destroy(&id).await.map_err(err)?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Create → first output of an exec, one at a time.
    let mut create = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..30 {
        let s = spec(image);
        let id = s.id;
        let t = Instant::now();
        backend.create(s).await.map_err(err)?;
        first_output(backend, &id, &["echo", "hi"]).await?;
        create.push(t.elapsed());
        ids.push(id);
    }
    md.push_str(&Samples(create).row("create → first exec output (image cached)", "≤ 50 ms"));

    let id = ids[0];
    let mut execs = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        exec_true(backend, &id).await?;
        execs.push(t.elapsed());
    }
    md.push_str(&Samples(execs).row("exec round trip (`true`)", "≤ 5 ms"));

    let (mut pauses, mut resumes) = (Vec::new(), Vec::new());
    for id in ids.iter().take(20) {
        let t = Instant::now();
        backend.pause(id).await.map_err(err)?;
        pauses.push(t.elapsed());
        let t = Instant::now();
        backend.resume(id, Vec::new()).await.map_err(err)?;
        resumes.push(t.elapsed());
    }
    md.push_str(&Samples(pauses).row("pause", "≤ 100 ms"));
    md.push_str(&Samples(resumes).row("resume (until init answers)", "≤ 100 ms"));

    let pid = backend.status(&id).await.map_err(err)?.pid.unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss, anon) = (proc_kib(pid, "VmRSS:"), proc_kib(pid, "RssAnon:"));
    let _ = writeln!(
        md,
        "\nsandpit-init idle: VmRSS {:.2} MiB (target ≤ 2 MiB), of which private (RssAnon) {} KiB; the rest is \
         the binary's pages, shared by every sandbox through the page cache.\n",
        rss as f64 / 1024.0,
        anon
    );
    for id in &ids {
        backend.destroy(id).await.map_err(err)?;
    }

    // Many idle sandboxes at once.
    let before = meminfo_kib("MemAvailable:");
    let t = Instant::now();
    let mut idle_ids = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    let mut started = 0;
    while idle_ids.len() + set.len() < idle || !set.is_empty() {
        while set.len() < 8 && started < idle {
            let s = spec(image);
            idle_ids.push(s.id);
            let b = Arc::clone(backend);
            set.spawn(async move { b.create(s).await.map(|_| ()) });
            started += 1;
        }
        if let Some(r) = set.join_next().await {
            r.map_err(|e| e.to_string())?.map_err(err)?;
        }
        if started >= idle && set.is_empty() {
            break;
        }
    }
    let create_all = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = meminfo_kib("MemAvailable:");
    let mut probe = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        exec_true(backend, &idle_ids[idle_ids.len() / 2]).await?;
        probe.push(t.elapsed());
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let per = (before.saturating_sub(after)) as f64 / idle as f64;
    let _ = writeln!(
        md,
        "{idle} idle sandboxes: created in {:.1} s (8 at a time); host memory used {:.1} MiB in all, {:.2} MiB per \
         sandbox (MemAvailable before − after: init, kernel objects of the mounts, loop devices, cgroups); with all \
         of them up, exec round trip p50 {:.2} ms / p99 {:.2} ms, load average {}.",
        create_all.as_secs_f64(),
        (before.saturating_sub(after)) as f64 / 1024.0,
        per / 1024.0,
        ms(Samples(probe.clone()).pct(50)),
        ms(Samples(probe).pct(99)),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    for id in &idle_ids {
        backend.destroy(id).await.map_err(err)?;
    }
    Ok(md)
}

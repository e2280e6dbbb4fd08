//! API benchmark, run by `scripts/bench` against a fresh `sandpit serve`: drives the HTTP API as a
//! user would (through `sandpit-client`) and prints a Markdown section for `docs/benchmarks.md`.
//!
//! ```text
//! bench_api URL KEY DATA_DIR [--seed 10000]
//! ```
//! `DATA_DIR` is the server's; the 10,000 sandboxes for the list measurement are written straight
//! into its database (as ended sandboxes) while it runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use sandpit_client::{Client, ListFilter};
use sandpit_store::{Desired, NewEvent, SandboxRecord, SqliteStore, Store};
use sandpit_types::api::{CreateSandbox, ExecRequest, ExecStreamEvent};
use sandpit_types::{ByteSize, MilliCpu, SandboxId, SandboxState};

fn pct(v: &[Duration], p: usize) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[(p * (v.len() - 1)).div_ceil(100).min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(what: &str, v: &[Duration], target: &str) -> String {
    format!("| {what} | {} | {:.2} ms | {:.2} ms | {target} |\n", v.len(), ms(pct(v, 50)), ms(pct(v, 99)))
}

fn small() -> CreateSandbox {
    CreateSandbox { memory: Some(ByteSize::mib(128)), ..Default::default() }
}

/// Create (waiting until running) then stream `echo hi` until its first output.
async fn create_to_first_output(c: &Client) -> Result<(Duration, String)> {
    let t = Instant::now();
    let v = c.create(&small(), true).await?;
    if v.state != SandboxState::Running {
        bail!("sandbox {} is {}: {:?}", v.id, v.state, v.state_reason);
    }
    let id = v.id.to_string();
    let req = ExecRequest { command: Some(vec!["echo".into(), "hi".into()]), ..Default::default() };
    let mut s = c.exec_stream(&id, &req).await?;
    while let Some(ev) = s.next().await {
        if matches!(ev?, ExecStreamEvent::Stdout { .. } | ExecStreamEvent::Exited { .. }) {
            break;
        }
    }
    Ok((t.elapsed(), id))
}

/// Sum and count of a Prometheus histogram on the server's `/metrics`.
async fn histogram(url: &str, name: &str) -> Result<(f64, f64)> {
    let text = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    let value = |suffix: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{suffix} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((value("_sum"), value("_count")))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, key, data) = match &args[..] {
        [u, k, d, ..] => (u.clone(), k.clone(), PathBuf::from(d)),
        _ => bail!("usage: bench_api URL KEY DATA_DIR [--seed N]"),
    };
    let seed: usize = args
        .iter()
        .position(|a| a == "--seed")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let c = Arc::new(Client::new(&url, &key)?);
    let mut md = String::new();
    md.push_str("| measurement | n | p50 | p99 | target |\n|---|---|---|---|---|\n");

    // Warm up: the first creates fill the pool of pre-formatted disks and the page cache.
    for _ in 0..5 {
        let (_, id) = create_to_first_output(&c).await?;
        c.delete(&id).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Concurrency 1. The server's own histograms tell how much of each create was the backend's.
    let before = histogram(&url, "sandpit_backend_create_seconds").await?;
    let mut seq = Vec::new();
    let mut creates = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let v = c.create(&small(), true).await?;
        creates.push(t.elapsed());
        let id = v.id.to_string();
        let req = ExecRequest { command: Some(vec!["echo".into(), "hi".into()]), ..Default::default() };
        let mut s = c.exec_stream(&id, &req).await?;
        while let Some(ev) = s.next().await {
            if matches!(ev?, ExecStreamEvent::Stdout { .. } | ExecStreamEvent::Exited { .. }) {
                break;
            }
        }
        seq.push(t.elapsed());
        ids.push(id);
    }
    let after = histogram(&url, "sandpit_backend_create_seconds").await?;
    let backend_mean = (after.0 - before.0) / (after.1 - before.1).max(1.0);
    let api_mean = creates.iter().map(Duration::as_secs_f64).sum::<f64>() / creates.len() as f64;
    md.push_str(&row("create → first exec output, concurrency 1", &seq, "≤ 50 ms + API overhead ≤ 5 ms"));
    md.push_str(&row("create with `?wait=true` (request → running)", &creates, "—"));

    let id = ids[0].clone();
    let mut execs = Vec::new();
    let req = ExecRequest { command: Some(vec!["true".into()]), ..Default::default() };
    for _ in 0..200 {
        let t = Instant::now();
        c.exec(&id, &req).await?;
        execs.push(t.elapsed());
    }
    md.push_str(&row("exec round trip (`true`, JSON)", &execs, "≤ 5 ms"));

    let (mut pauses, mut resumes) = (Vec::new(), Vec::new());
    for id in ids.iter().take(20) {
        let t = Instant::now();
        c.pause(id).await?;
        pauses.push(t.elapsed());
        let t = Instant::now();
        c.resume(id).await?;
        resumes.push(t.elapsed());
    }
    md.push_str(&row("pause", &pauses, "≤ 100 ms"));
    md.push_str(&row("resume", &resumes, "≤ 100 ms"));
    for id in &ids {
        c.delete(id).await?;
    }

    // Concurrency 50.
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let c = c.clone();
        set.spawn(async move { create_to_first_output(&c).await });
    }
    let mut conc = Vec::new();
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        let (d, id) = r??;
        conc.push(d);
        ids.push(id);
    }
    let wall = t.elapsed();
    md.push_str(&row("create → first exec output, 50 at once (each)", &conc, "—"));
    for id in &ids {
        c.delete(id).await?;
    }

    // Listing with many sandboxes in the store.
    let store = SqliteStore::open(&data.join("sandpit.db")).await.context("open the server's database")?;
    let project = store.project_by_name("default").await?.context("no default project")?;
    let user = store.get_user(sandpit_store::UserId(1)).await?.context("no admin user")?;
    let now = time::OffsetDateTime::now_utc();
    for i in 0..seed {
        let r = SandboxRecord {
            id: SandboxId::generate(),
            project: project.id,
            created_by: user.id,
            name: None,
            state: SandboxState::Terminated,
            state_reason: Some("deleted".into()),
            desired: Desired::Deleted,
            image: "sandpit/busybox:latest".into(),
            cpu: MilliCpu(1000),
            memory: ByteSize::mib(128),
            gpu: None,
            env: BTreeMap::new(),
            command: None,
            keep_running: false,
            timeout_s: 3600,
            metadata: BTreeMap::from([("n".to_string(), i.to_string())]),
            created_at: sandpit_store::truncate_to_millis(now),
            started_at: None,
            ends_at: None,
            remaining_ms: None,
            paused_at: None,
            terminated_at: Some(sandpit_store::truncate_to_millis(now)),
            exit_code: None,
            credentials: None,
            placement: None,
            generation: 1,
        };
        store.insert_sandbox(&r, NewEvent::state(SandboxState::Terminated, None)).await?;
    }
    let total = c.list_all(&ListFilter { limit: Some(1000), ..Default::default() }).await?.len();
    let mut first = Vec::new();
    let mut middle = Vec::new();
    let mid_cursor = c.list(&ListFilter { limit: Some(1000), ..Default::default() }).await?.next_cursor;
    for _ in 0..50 {
        let t = Instant::now();
        let p = c.list(&ListFilter { limit: Some(100), ..Default::default() }).await?;
        first.push(t.elapsed());
        assert_eq!(p.items.len(), total.min(100));
        let t = Instant::now();
        c.list(&ListFilter { limit: Some(100), cursor: mid_cursor.clone(), ..Default::default() }).await?;
        middle.push(t.elapsed());
    }
    md.push_str(&row(&format!("list, first page of 100 of {total} sandboxes"), &first, "≤ 50 ms"));
    md.push_str(&row(&format!("list, a page of 100 deep in {total} sandboxes"), &middle, "≤ 50 ms"));
    let _ = writeln!(
        md,
        "\nAPI overhead over the backend, same run: a create answered running after {:.2} ms on average, of \
         which the backend (disk, mounts, `runc run`, init answering) took {:.2} ms: {:.2} ms for HTTP, auth, \
         SQLite and the workflow (target ≤ 5 ms). Exec through the API vs the runtime: see the two tables.",
        api_mean * 1000.0,
        backend_mean * 1000.0,
        (api_mean - backend_mean) * 1000.0
    );
    let _ = writeln!(
        md,
        "\n50 concurrent create → first output: all done in {:.2} s on 2 cores (creation serializes on `runc`).",
        wall.as_secs_f64()
    );
    println!("{md}");
    Ok(())
}

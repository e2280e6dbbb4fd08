//! Reconcilers: background tasks that look at the world and move it one step toward the desired
//! state. Each is idempotent: running it twice changes nothing more.
//!
//! - [`startup`]: after a start or crash, makes every sandbox's stored state match the backend.
//! - [`deadlines`]: ends running sandboxes whose deadline passed (reason `timeout`), within a
//!   second, also right after a restart.
//! - [`retention`]: deletes sandboxes paused for longer than the retention (reason `retention`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandpit_runtime::{Phase, RuntimeError};
use sandpit_store::{Desired, NewEvent};
use sandpit_types::{SandboxEvent, SandboxState};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::app::App;
use crate::error::AppResult;

/// Longest pause of the deadline loop: a sandbox ends at most this long after its deadline.
const DEADLINE_TICK: Duration = Duration::from_millis(250);
/// Period of the retention check.
const RETENTION_TICK: Duration = Duration::from_secs(60);

/// Makes stored states match the backend after a (re)start:
///
/// - the backend's own recovery first (re-attach, finish or undo interrupted operations);
/// - provisioning sandboxes are provisioned (again), or adopted if the backend has them running;
/// - running ones the backend runs are watched again; ones whose workload exited are terminated
///   (`exit`); vanished ones fail (`lost`);
/// - an interrupted pause or resume is finished toward the desired state;
/// - a sandbox meant to be deleted is deleted;
/// - backend sandboxes the store does not know (or knows as ended) are removed.
pub async fn startup(app: &Arc<App>) -> AppResult<()> {
    let report = app.backend.recover().await?;
    info!(?report, "backend recovered");
    let live = app
        .store
        .sandboxes_in_states(&[SandboxState::Provisioning, SandboxState::Running, SandboxState::Paused])
        .await?;
    let known: HashSet<_> = live.iter().map(|r| r.id).collect();
    // Reservations of sandboxes that hold one (a paused sandbox holds none, even if an
    // interrupted resume stored one: the resume is redone or rolled back below).
    for r in live.iter().filter(|r| matches!(r.state, SandboxState::Provisioning | SandboxState::Running)) {
        if let Some(p) = app.placement_of(r)
            && let Err(e) = app.gpus.restore(r.id, &App::request_of(r), &p)
        {
            warn!(sandbox_id = %r.id, error = %e, "could not restore the sandbox's reservation");
        }
    }
    for r in live {
        if let Err(e) = reconcile_one(app, r.id).await {
            warn!(sandbox_id = %r.id, error = ?e.0, "could not reconcile sandbox at startup");
        }
    }
    for s in app.backend.list().await? {
        if !known.contains(&s.id) {
            warn!(sandbox_id = %s.id, "removing a sandbox the store does not know");
            app.backend.destroy(&s.id).await?;
        }
    }
    Ok(())
}

async fn reconcile_one(app: &Arc<App>, id: sandpit_types::SandboxId) -> AppResult<()> {
    let Some(r) = app.store.get_sandbox(&id).await? else { return Ok(()) };
    if r.desired == Desired::Deleted {
        return app.delete_record(id, r.state_reason.as_deref().unwrap_or("deleted")).await;
    }
    let observed = match app.backend.status(&id).await {
        Ok(s) => Some(s),
        Err(RuntimeError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    match (r.state, observed.as_ref().map(|s| s.phase)) {
        (SandboxState::Provisioning, None) => app.spawn_provision(id, Instant::now()),
        (SandboxState::Provisioning, Some(Phase::Running)) => adopt_running(app, id).await?,
        (SandboxState::Running, Some(Phase::Running)) => {
            if r.desired == Desired::Paused {
                // A pause was asked for and not done.
                app.backend.pause(&id).await?;
                mark_paused(app, id).await?;
            } else {
                app.watch_exit(id);
            }
        }
        (SandboxState::Running, Some(Phase::Paused)) => mark_paused(app, id).await?,
        (SandboxState::Paused, Some(Phase::Running)) => {
            if r.desired == Desired::Running {
                adopt_running(app, id).await?;
            } else {
                app.backend.pause(&id).await?;
            }
        }
        (SandboxState::Paused, Some(Phase::Paused)) => {
            if r.desired == Desired::Running {
                // A resume was asked for and not done: leave it paused, as the caller saw an error.
                let lock = app.lock(&id);
                let _g = lock.lock().await;
                if let Some(mut r) = app.store.get_sandbox(&id).await? {
                    r.desired = Desired::Paused;
                    r.placement = None;
                    app.store.update_sandbox(&r, None).await?;
                }
            }
        }
        (_, Some(Phase::Exited)) => app.on_exit(id, observed.and_then(|s| s.exit)).await?,
        (SandboxState::Running | SandboxState::Paused, None) => {
            fail(app, id, "lost: the sandbox vanished from its host").await?;
        }
        (state, phase) => {
            warn!(sandbox_id = %id, %state, ?phase, "unexpected state at startup; leaving it");
        }
    }
    Ok(())
}

/// Records a sandbox the backend runs as running (provisioning or resume finished by the backend
/// before a crash).
async fn adopt_running(app: &Arc<App>, id: sandpit_types::SandboxId) -> AppResult<()> {
    let lock = app.lock(&id);
    let _g = lock.lock().await;
    let Some(mut r) = app.store.get_sandbox(&id).await? else { return Ok(()) };
    let event = match r.state {
        SandboxState::Provisioning => SandboxEvent::Provisioned,
        SandboxState::Paused => SandboxEvent::Resume,
        _ => return Ok(()),
    };
    let restored = match app.placement_of(&r) {
        // A provisioning sandbox's reservation was restored at startup; an interrupted resume's
        // was not (paused sandboxes hold none), so take it again.
        Some(p) if r.state == SandboxState::Paused => app.gpus.restore(id, &App::request_of(&r), &p).is_ok(),
        Some(_) => true,
        None => false,
    };
    if !restored {
        match app.gpus.place(id, &App::request_of(&r)) {
            Ok(p) => r.placement = Some(serde_json::to_string(&p).unwrap_or_default()),
            Err(e) => {
                // The resume finished on the host but there is no room for it any more.
                warn!(sandbox_id = %id, error = %e, "no capacity for a sandbox found running; pausing it");
                drop(_g);
                app.backend.pause(&id).await?;
                return Ok(());
            }
        }
    }
    r.state = r.state.apply(event).map_err(sandpit_types::ApiError::from)?;
    r.state_reason = Some("recovered".into());
    let t = OffsetDateTime::now_utc();
    let remaining = r.remaining_ms.unwrap_or(r.timeout_s * 1000);
    r.started_at = Some(t);
    r.ends_at = Some(t + time::Duration::milliseconds(i64::try_from(remaining).unwrap_or(i64::MAX / 4)));
    r.remaining_ms = None;
    r.paused_at = None;
    let ev = app.state_event(&r, t);
    let (_, ev) = app.store.update_sandbox(&r, Some(ev)).await?;
    if let Some(ev) = ev {
        app.hub.publish(&id, &ev);
    }
    drop(_g);
    app.watch_exit(id);
    Ok(())
}

async fn mark_paused(app: &Arc<App>, id: sandpit_types::SandboxId) -> AppResult<()> {
    let lock = app.lock(&id);
    let _g = lock.lock().await;
    let Some(mut r) = app.store.get_sandbox(&id).await? else { return Ok(()) };
    r.state = r.state.apply(SandboxEvent::Pause).map_err(sandpit_types::ApiError::from)?;
    let t = OffsetDateTime::now_utc();
    r.remaining_ms = r.ends_at.map(|e| u64::try_from((e - t).whole_milliseconds().max(0)).unwrap_or(0));
    r.ends_at = None;
    r.paused_at = Some(t);
    r.desired = Desired::Paused;
    r.placement = None;
    app.gpus.release(id);
    r.state_reason = Some("paused".into());
    let (_, ev) = app.store.update_sandbox(&r, Some(app.state_event(&r, t))).await?;
    if let Some(ev) = ev {
        app.hub.publish(&id, &ev);
    }
    Ok(())
}

async fn fail(app: &Arc<App>, id: sandpit_types::SandboxId, reason: &str) -> AppResult<()> {
    let lock = app.lock(&id);
    let _g = lock.lock().await;
    let Some(mut r) = app.store.get_sandbox(&id).await? else { return Ok(()) };
    r.state = r.state.apply(SandboxEvent::RuntimeFailed).map_err(sandpit_types::ApiError::from)?;
    r.state_reason = Some(reason.to_string());
    let t = OffsetDateTime::now_utc();
    r.terminated_at = Some(t);
    r.ends_at = None;
    r.desired = Desired::Deleted;
    r.placement = None;
    app.gpus.release(id);
    let (_, ev) = app.store.update_sandbox(&r, Some(app.state_event(&r, t))).await?;
    if let Some(ev) = ev {
        app.hub.publish(&id, &ev);
    }
    let _ = app.backend.destroy(&id).await;
    warn!(sandbox_id = %id, reason, "sandbox failed");
    Ok(())
}

/// Ends running sandboxes whose deadline passed, until shutdown.
pub async fn deadlines(app: Arc<App>) {
    loop {
        if let Err(e) = deadlines_once(&app).await {
            warn!(error = ?e.0, "timeout reconciler failed; retrying");
        }
        let sleep = match app.store.next_deadline().await {
            Ok(Some(next)) => {
                let wait = (next - OffsetDateTime::now_utc()).whole_milliseconds().max(0);
                Duration::from_millis(u64::try_from(wait).unwrap_or(0)).min(DEADLINE_TICK)
            }
            _ => DEADLINE_TICK,
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = app.shutdown.cancelled() => return,
        }
    }
}

/// One pass of the timeout reconciler.
pub async fn deadlines_once(app: &Arc<App>) -> AppResult<()> {
    let now = OffsetDateTime::now_utc();
    for id in app.store.due_timeouts(now).await? {
        let Some(r) = app.store.get_sandbox(&id).await? else { continue };
        if let Some(deadline) = r.ends_at {
            let lag = (OffsetDateTime::now_utc() - deadline).whole_milliseconds().max(0);
            app.metrics.observe_reconciler_lag(Duration::from_millis(u64::try_from(lag).unwrap_or(0)));
        }
        info!(sandbox_id = %id, "sandbox timed out");
        app.delete_record(id, "timeout").await?;
    }
    Ok(())
}

/// Deletes sandboxes paused longer than the retention, until shutdown.
pub async fn retention(app: Arc<App>) {
    loop {
        if let Err(e) = retention_once(&app).await {
            warn!(error = ?e.0, "retention reconciler failed; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(RETENTION_TICK) => {}
            () = app.shutdown.cancelled() => return,
        }
    }
}

/// One pass of the retention reconciler.
pub async fn retention_once(app: &Arc<App>) -> AppResult<()> {
    let cutoff = OffsetDateTime::now_utc()
        - time::Duration::seconds(i64::try_from(app.config.paused_retention_s).unwrap_or(i64::MAX / 4));
    for id in app.store.due_retention(cutoff).await? {
        info!(sandbox_id = %id, "paused sandbox past retention; deleting");
        app.delete_record(id, "retention").await?;
    }
    Ok(())
}

/// Keeps the per-state gauges current.
pub async fn gauges(app: Arc<App>) {
    loop {
        if let Ok(counts) = app.store.count_by_state().await {
            for s in SandboxState::ALL {
                let n = counts.iter().find(|(st, _)| *st == s).map_or(0, |(_, n)| *n);
                app.metrics.set_sandboxes(s.as_str(), n);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = app.shutdown.cancelled() => return,
        }
    }
}

/// Period of the GPU memory watchdog.
const WATCHDOG_TICK: Duration = Duration::from_secs(5);

/// Enforces GPU shares: every few seconds, sums each sandbox's GPU memory (NVML's processes, mapped
/// to sandboxes by cgroup) and, for a sandbox above its share of a GPU, kills its processes on
/// that GPU (SIGKILL) and records a progress event saying why. The sandbox keeps running.
pub async fn gpu_watchdog(app: Arc<App>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(WATCHDOG_TICK) => {}
            () = app.shutdown.cancelled() => return,
        }
        if let Err(e) = gpu_watchdog_once(&app).await {
            warn!(error = ?e.0, "GPU watchdog failed; retrying");
        }
    }
}

/// One pass of the GPU watchdog.
pub async fn gpu_watchdog_once(app: &Arc<App>) -> AppResult<()> {
    let Some(host) = app.gpus.host.clone() else { return Ok(()) };
    let live = app.store.sandboxes_in_states(&[SandboxState::Running]).await?;
    let placements: Vec<_> = live.iter().filter_map(|r| app.placement_of(r).map(|p| (r.id, p))).collect();
    let limits = app.gpus.share_limits(&placements);
    if limits.is_empty() {
        return Ok(());
    }
    let processes = tokio::task::spawn_blocking(move || host.processes())
        .await
        .map_err(|e| crate::error::AppError::internal("GPU watchdog", &e))?;
    let owner = |pid: u32| sandpit_runtime::gpu::watchdog::sandbox_of(pid, "sandpit");
    for v in sandpit_runtime::gpu::watchdog::violations(&processes, &limits, &owner) {
        for pid in &v.pids {
            // SAFETY: kill(2) with a pid NVML reported for a process of this sandbox.
            unsafe { libc::kill(i32::try_from(*pid).unwrap_or(0), libc::SIGKILL) };
        }
        let message = format!(
            "GPU memory above the share: {} MiB used on {} where the share is {} MiB; its GPU processes were killed",
            v.used_bytes >> 20,
            v.gpu,
            v.limit_bytes >> 20
        );
        warn!(sandbox_id = %v.sandbox, gpu = %v.gpu, used = v.used_bytes, limit = v.limit_bytes, "GPU share exceeded");
        let ev = app.store.append_event(&v.sandbox, NewEvent::progress(message, None)).await?;
        app.hub.publish(&v.sandbox, &ev);
    }
    Ok(())
}

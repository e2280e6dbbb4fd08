//! Metering, wallets, prices and usage.
//!
//! ```text
//!  state change (running / paused / ended), dated t ──► sandbox_events (at = t, usage = Spec JSON)
//!                                                            │ persisted transitions
//!  every meter_interval_s (≤ 10 s):                          ▼
//!    for each sandbox to meter:  intervals ◄── state_changes(id)
//!      lines = Meter::accrue_all(intervals, watermark, now)      (pure, whole seconds)
//!      store.charge(id, expected = watermark, until = now, lines) (one transaction: lines,
//!                                                                  wallet, watermark)
//!    wallets at or below zero ──► their running sandboxes are paused (reason out_of_funds)
//! ```
//!
//! Exactly once across crashes: a charge writes its lines, the wallet and the new watermark in
//! one transaction, and only if the watermark is still the one the lines were computed from;
//! the meter telescopes (see `sandpit-billing`), so however often the server stops, the total
//! charged equals the usage of the persisted transitions at once, to the second.
//!
//! Wallets belong to **projects**, not users: sandboxes belong to projects, a team shares a
//! project's budget and members come and go, and a key restricted to a project then spends only
//! that project's money. Each user is verified (KYC) on their own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sandpit_billing::{Breakdown, ChargeLine, GpuUsage, Interval, Meter, Money, Resource, Spec, UsageKind};
use sandpit_store::{
    LedgerEntry, LedgerFilter, LedgerKind, NewCharge, ProjectId, SandboxRecord, StateChange,
};
use sandpit_types::accounts::{EstimateRequest, EstimateView, SandboxUsage, UsageView, WalletView};
use sandpit_types::{ApiError, SandboxId, SandboxState};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::app::App;
use crate::error::{AppError, AppResult};

/// What `r` holds in its current state, for metering: CPU, memory and the GPUs of its
/// placement while running; the disk kept while paused; nothing otherwise.
pub fn usage_of(app: &App, r: &SandboxRecord) -> Option<Spec> {
    let disk = app.config.sandbox_disk;
    match r.state {
        SandboxState::Running => Some(Spec {
            cpu: r.cpu,
            memory: r.memory,
            gpu: app.placement_of(r).and_then(|p| p.billing()).map(|g| GpuUsage {
                model: g.model,
                count: g.count,
                fraction: g.fraction,
            }),
            disk,
        }),
        SandboxState::Paused => Some(Spec { cpu: r.cpu, memory: r.memory, gpu: None, disk }),
        _ => None,
    }
}

/// The running and paused intervals of a sandbox from its persisted state changes. A change
/// without usage (written before metering existed) falls back to the record's own spec.
/// Times are made monotonic (a clock that stepped back never makes intervals overlap).
pub fn intervals(app: &App, r: &SandboxRecord, changes: &[StateChange]) -> Vec<Interval> {
    let mut times: Vec<OffsetDateTime> = Vec::with_capacity(changes.len());
    for c in changes {
        let t = times.last().map_or(c.at, |prev| c.at.max(*prev));
        times.push(t);
    }
    let mut out = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        let kind = match c.state {
            SandboxState::Running => UsageKind::Running,
            SandboxState::Paused => UsageKind::Paused,
            _ => continue,
        };
        let spec =
            c.usage.as_deref().and_then(|u| serde_json::from_str::<Spec>(u).ok()).unwrap_or_else(|| {
                let mut like = r.clone();
                like.state = c.state;
                usage_of(app, &like).unwrap_or(Spec {
                    cpu: r.cpu,
                    memory: r.memory,
                    gpu: None,
                    disk: app.config.sandbox_disk,
                })
            });
        out.push(Interval { start: times[i], end: times.get(i + 1).copied(), kind, spec });
    }
    out
}

/// What one metering pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MeterReport {
    /// Sandboxes charged.
    pub charged: usize,
    /// Sandboxes paused because their wallet ran dry.
    pub paused: usize,
}

/// One metering pass over every sandbox to meter, then the out-of-funds pauses.
pub async fn meter_once(app: &Arc<App>) -> AppResult<MeterReport> {
    let now = crate::app::now();
    let mut report = MeterReport::default();
    let mut balances: BTreeMap<ProjectId, i64> = BTreeMap::new();
    for m in app.store.sandboxes_to_meter().await? {
        let r = &m.sandbox;
        if m.charged_until.is_some_and(|c| c >= now) {
            continue;
        }
        let changes = app.store.state_changes(&r.id).await?;
        let ivs = intervals(app, r, &changes);
        let since = m.charged_until.unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let lines = match Meter::new(&app.config.billing.rates, r.id, r.project).accrue_all(&ivs, since, now)
        {
            Ok(lines) => lines,
            Err(e) => {
                warn!(sandbox_id = %r.id, error = %e, "cannot meter this sandbox's intervals");
                continue;
            }
        };
        let charges: Vec<NewCharge> = lines
            .iter()
            .map(|l| NewCharge {
                resource: resource_name(l.resource).to_string(),
                amount: l.amount.micros(),
                seconds: l.seconds,
                period_from: l.from,
                period_to: l.to,
            })
            .collect();
        sandpit_runtime::failpoint::hit("server.meter.before_charge");
        match app.store.charge(&r.id, m.charged_until, now, &charges).await {
            Ok(wallet) => {
                sandpit_runtime::failpoint::hit("server.meter.after_charge");
                report.charged += 1;
                balances.insert(r.project, wallet.balance);
            }
            // Charged meanwhile by someone else (another pass): next pass sees the new watermark.
            Err(sandpit_store::StoreError::Stale(_) | sandpit_store::StoreError::InvalidPeriod(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for (project, balance) in balances {
        if balance > 0 {
            continue;
        }
        let running = app.store.sandboxes_in_states(&[SandboxState::Running]).await?;
        for r in running.into_iter().filter(|r| r.project == project) {
            match app.pause_record(r.id, "out_of_funds").await {
                Ok(_) => {
                    report.paused += 1;
                    info!(sandbox_id = %r.id, "paused: the project's wallet is empty");
                }
                Err(e) => warn!(sandbox_id = %r.id, error = ?e.0, "could not pause a sandbox out of funds"),
            }
        }
    }
    Ok(report)
}

/// Meters every `billing.meter_interval_s` until shutdown.
pub async fn meter_loop(app: Arc<App>) {
    let tick = Duration::from_secs(app.config.billing.meter_interval_s.clamp(1, 10));
    loop {
        if let Err(e) = meter_once(&app).await {
            warn!(error = ?e.0, "metering failed; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = app.shutdown.cancelled() => return,
        }
    }
}

/// The name a resource has in the ledger and the API.
pub fn resource_name(r: Resource) -> &'static str {
    match r {
        Resource::Gpu => "gpu",
        Resource::Cpu => "cpu",
        Resource::Memory => "memory",
        Resource::Storage => "storage",
    }
}

fn resource_of(name: &str) -> Option<Resource> {
    Resource::ALL.into_iter().find(|r| resource_name(*r) == name)
}

fn overflow() -> AppError {
    ApiError::invalid("amount", "the amount is out of range").into()
}

impl App {
    /// Refuses a create or resume in `project` unless its wallet holds money (402).
    pub async fn ensure_funds(&self, project: ProjectId, project_name: &str) -> AppResult<()> {
        let wallet = self.store.wallet(project).await?;
        if wallet.balance <= 0 {
            return Err(ApiError::InsufficientFunds {
                message: format!(
                    "the wallet of project {project_name} is empty ({} {}): an administrator credits it (`sandpit wallet credit {project_name} AMOUNT`)",
                    Money::from_micros(wallet.balance),
                    self.config.billing.currency
                ),
            }
            .into());
        }
        Ok(())
    }

    /// The wallet of `project` as the API shows it.
    pub async fn wallet_view(&self, project: &sandpit_store::Project) -> AppResult<WalletView> {
        let w = self.store.wallet(project.id).await?;
        let rates = &self.config.billing.rates;
        let mut burn = Money::ZERO;
        let live = self.store.sandboxes_in_states(&[SandboxState::Running, SandboxState::Paused]).await?;
        for r in live.iter().filter(|r| r.project == project.id) {
            let hourly = match (r.state, usage_of(self, r)) {
                (SandboxState::Running, Some(spec)) => rates.hourly(&spec).map(|h| h.total),
                (SandboxState::Paused, Some(spec)) => rates.paused_hourly(spec.disk),
                _ => Ok(Money::ZERO),
            }
            .map_err(|_| overflow())?;
            burn = burn.checked_add(hourly).ok_or_else(overflow)?;
        }
        Ok(WalletView {
            project: project.name.clone(),
            currency: self.config.billing.currency.clone(),
            balance: Money::from_micros(w.balance).to_string(),
            balance_micros: w.balance,
            low_threshold: Money::from_micros(w.low_threshold).to_string(),
            low: w.balance < w.low_threshold,
            burn_per_hour: burn.to_string(),
            updated_at: w.updated_at,
        })
    }

    /// The price per hour of a spec.
    pub fn estimate(&self, req: &EstimateRequest) -> AppResult<EstimateView> {
        let limits = &self.config.limits;
        let cpu = req.cpu.unwrap_or(limits.cpu_default);
        let memory = req.memory.unwrap_or(limits.memory_default);
        if let Some(g) = &req.gpu {
            g.validate()?;
        }
        let rates = &self.config.billing.rates;
        let gpu = req.gpu.as_ref().map(|g| {
            // The dearest model of this server matching the requested type (a family such as
            // `A100` may be placed on either memory size), else the type as written.
            let model = self
                .gpus
                .view()
                .into_iter()
                .map(|t| t.gpu_type)
                .filter(|m| sandpit_sched::type_matches(&g.gpu_type, m))
                .max_by_key(|m| rates.gpu_rate(m))
                .unwrap_or_else(|| g.gpu_type.trim().to_string());
            GpuUsage { model, count: g.count, fraction: g.fraction }
        });
        let spec = Spec { cpu, memory, gpu: gpu.clone(), disk: self.config.sandbox_disk };
        let h = rates.hourly(&spec).map_err(|_| overflow())?;
        let paused = rates.paused_hourly(spec.disk).map_err(|_| overflow())?;
        Ok(EstimateView {
            currency: self.config.billing.currency.clone(),
            gpu_per_hour: h.gpu.to_string(),
            cpu_per_hour: h.cpu.to_string(),
            memory_per_hour: h.memory.to_string(),
            running_per_hour: h.total.to_string(),
            paused_per_hour: paused.to_string(),
            gpu_model: gpu.map(|g| g.model),
        })
    }

    /// Charge lines of `projects` (`None`: all) with usage starting in `[from, to)`.
    pub async fn charge_lines(
        &self,
        projects: Option<Vec<ProjectId>>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> AppResult<Vec<LedgerEntry>> {
        let filter = LedgerFilter {
            projects,
            from: Some(from),
            to: Some(to),
            kind: Some(LedgerKind::Charge),
            ..LedgerFilter::default()
        };
        Ok(self.store.ledger(&filter).await?)
    }

    /// The usage breakdown of charge lines.
    pub async fn usage_view(
        &self,
        lines: &[LedgerEntry],
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> AppResult<UsageView> {
        let mut charge_lines = Vec::with_capacity(lines.len());
        for l in lines {
            let (Some(sandbox), Some(resource), Some(seconds), Some(p_from), Some(p_to)) = (
                l.sandbox,
                l.resource.as_deref().and_then(resource_of),
                l.seconds,
                l.period_from,
                l.period_to,
            ) else {
                continue;
            };
            charge_lines.push(ChargeLine {
                sandbox,
                project: l.project,
                resource,
                seconds,
                amount: Money::from_micros(l.amount),
                from: p_from,
                to: p_to,
            });
        }
        let b: Breakdown<ProjectId> = Breakdown::from_lines(&charge_lines).map_err(|_| overflow())?;
        let mut names: BTreeMap<ProjectId, String> = BTreeMap::new();
        for p in self.store.list_projects().await? {
            names.insert(p.id, p.name);
        }
        let mut owners: BTreeMap<SandboxId, ProjectId> = BTreeMap::new();
        for l in &charge_lines {
            owners.insert(l.sandbox, l.project);
        }
        let mut by_sandbox = Vec::with_capacity(b.by_sandbox.len());
        for (id, amount) in &b.by_sandbox {
            let name = self.store.get_sandbox(id).await?.and_then(|r| r.name);
            let project = owners.get(id).and_then(|p| names.get(p)).cloned().unwrap_or_default();
            by_sandbox
                .push((*amount, SandboxUsage { sandbox: *id, name, project, amount: amount.to_string() }));
        }
        by_sandbox.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.sandbox.cmp(&b.1.sandbox)));
        Ok(UsageView {
            currency: self.config.billing.currency.clone(),
            from,
            to,
            total: b.total.to_string(),
            by_resource: b
                .by_resource
                .iter()
                .map(|(r, m)| (resource_name(*r).to_string(), m.to_string()))
                .collect(),
            by_sandbox: by_sandbox.into_iter().map(|(_, v)| v).collect(),
            by_project: b
                .by_project
                .iter()
                .map(|(p, m)| (names.get(p).cloned().unwrap_or_else(|| p.0.to_string()), m.to_string()))
                .collect(),
            by_day: b.by_day.iter().map(|(d, m)| (d.to_string(), m.to_string())).collect(),
        })
    }
}

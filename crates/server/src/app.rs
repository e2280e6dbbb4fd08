//! The application layer: sandbox workflows over the store (desired and observed state) and the
//! backend. HTTP handlers parse, authorize and call one function here.
//!
//! ```text
//!  create ─► provisioning ──(backend.create ok)──► running ──(pause)──► paused
//!                 │ error                             │  ▲                │
//!                 ▼                                   │  └───(resume)─────┘
//!               failed                                │ timeout, exit, delete
//!                                                     ▼
//!                                                 terminated   (paused ─► terminated on delete,
//!                                                               retention)
//! ```
//!
//! Every change goes through `SandboxState::apply` (the one transition table) and
//! `Store::update_sandbox` (optimistic, with its event, in one transaction). The desired state is
//! written before the backend is asked to act, so that startup recovery ([`crate::reconcile`])
//! can finish the work after a crash. Operations on one sandbox are serialized by a per-sandbox
//! lock; the backend serializes them too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sandpit_image::ImageStore;
use sandpit_runtime::{Backend, RuntimeError, SandboxSpec};
use sandpit_store::{Desired, NewEvent, Project, ProjectId, SandboxFilter, SandboxRecord, Store};
use sandpit_types::api::{CreateSandbox, Page, SandboxEventView, SandboxView};
use sandpit_types::{ApiError, SandboxEvent, SandboxId, SandboxState};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::Caller;
use crate::config::ServerConfig;
use crate::error::{AppError, AppResult};
use crate::gpus::Gpus;
use crate::hub::EventHub;
use crate::metrics::Metrics;

/// Shared state of the server.
pub struct App {
    /// Configuration.
    pub config: ServerConfig,
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Runs sandboxes.
    pub backend: Arc<dyn Backend>,
    /// Local images.
    pub images: Arc<ImageStore>,
    /// CPU, memory and GPUs, and their reservations.
    pub gpus: Gpus,
    /// Pulls images from registries into `images`.
    pub puller: sandpit_image::Puller,
    /// The curated images, and the modification time of the file they were read from.
    pub catalog: RwLock<(Option<std::time::SystemTime>, sandpit_image::Catalog)>,
    /// Seals registry credentials at rest.
    pub secrets: crate::secrets::SecretBox,
    /// Live events.
    pub hub: EventHub,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// Background work (provisioning, exit watchers), awaited on shutdown.
    pub tasks: TaskTracker,
    locks: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
    project_names: RwLock<HashMap<ProjectId, String>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("config", &self.config).finish_non_exhaustive()
    }
}

/// How long `?wait=true` waits at most.
const WAIT_LIMIT: Duration = Duration::from_secs(600);

pub(crate) fn now() -> OffsetDateTime {
    // Millisecond precision, as the store keeps it.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000).unwrap_or(t)
}

impl App {
    /// Assembles the application.
    pub fn new(
        config: ServerConfig,
        store: Arc<dyn Store>,
        backend: Arc<dyn Backend>,
        images: Arc<ImageStore>,
        gpus: Gpus,
        catalog: sandpit_image::Catalog,
        secrets: crate::secrets::SecretBox,
    ) -> Arc<Self> {
        let puller = sandpit_image::Puller::new(images.clone(), config.pull_config());
        let catalog_modified = crate::images::modified(&config.catalog_path());
        Arc::new(Self {
            config,
            store,
            backend,
            images,
            gpus,
            puller,
            catalog: RwLock::new((catalog_modified, catalog)),
            secrets,
            hub: EventHub::default(),
            metrics: Metrics::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            locks: Mutex::new(HashMap::new()),
            project_names: RwLock::new(HashMap::new()),
        })
    }

    /// The per-sandbox lock.
    pub fn lock(&self, id: &SandboxId) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(*id).or_default().clone()
    }

    fn forget_lock(&self, id: &SandboxId) {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// A project's name (cached).
    pub async fn project_name(&self, id: ProjectId) -> AppResult<String> {
        if let Some(n) = self.project_names.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(n.clone());
        }
        let p = self
            .store
            .get_project(id)
            .await?
            .ok_or_else(|| AppError::internal("project", &"missing project"))?;
        self.project_names.write().unwrap_or_else(|p| p.into_inner()).insert(id, p.name.clone());
        Ok(p.name)
    }

    /// The API view of a record.
    pub async fn view(&self, r: &SandboxRecord) -> AppResult<SandboxView> {
        let project = self.project_name(r.project).await?;
        Ok(SandboxView {
            id: r.id,
            name: r.name.clone(),
            project,
            state: r.state,
            state_reason: r.state_reason.clone(),
            exit_code: r.exit_code,
            image: r.image.clone(),
            cpu: r.cpu,
            memory: r.memory,
            gpu: r.gpu.clone(),
            timeout_s: r.timeout_s,
            keep_running: r.keep_running,
            created_at: r.created_at,
            started_at: r.started_at,
            ends_at: r.ends_at,
            remaining_s: r.remaining_ms.map(|ms| ms.div_ceil(1000)),
            paused_at: r.paused_at,
            terminated_at: r.terminated_at,
            metadata: r.metadata.clone(),
        })
    }

    /// The project a create goes to: the named one, or the key's, or `default`.
    async fn target_project(&self, caller: &Caller, name: Option<&str>) -> AppResult<Project> {
        let name = match (name, caller.key_project) {
            (Some(n), _) => n.to_string(),
            (None, Some(p)) => return self.store.get_project(p).await?.ok_or_else(|| not_found_project("?")),
            (None, None) if caller.user.role == sandpit_store::Role::Admin => "default".to_string(),
            (None, None) => match caller.memberships.as_slice() {
                [only] => {
                    return self.store.get_project(only.project).await?.ok_or_else(|| not_found_project("?"));
                }
                [] => {
                    return Err(ApiError::Forbidden {
                        message: "you are not a member of any project: an owner of one adds you, or create one with POST /v1/projects".into(),
                    }
                    .into());
                }
                _ => {
                    return Err(ApiError::invalid(
                        "project",
                        "you are a member of several projects: name one in `project`",
                    )
                    .into());
                }
            },
        };
        let project = self.store.project_by_name(&name).await?.ok_or_else(|| not_found_project(&name))?;
        if !caller.can_access(project.id) {
            return Err(not_found_project(&name));
        }
        Ok(project)
    }

    /// Refuses to start a sandbox (create or resume) unless the caller's identity is verified
    /// (403 `kyc_required`) and the project's wallet holds money (402 `insufficient_funds`).
    pub async fn ensure_may_run(&self, caller: &Caller, project: &Project) -> AppResult<()> {
        if caller.user.kyc != sandpit_store::KycStatus::Verified {
            let how = match caller.user.kyc {
                sandpit_store::KycStatus::Pending => {
                    "your identity verification is pending: finish it with the provider (`sandpit kyc status`)"
                }
                sandpit_store::KycStatus::Rejected => {
                    "your identity verification was rejected: contact an administrator"
                }
                _ => "verify your identity first: `sandpit kyc start` (POST /v1/kyc)",
            };
            return Err(ApiError::KycRequired {
                message: format!("running sandboxes needs a verified account; {how}"),
            }
            .into());
        }
        self.ensure_funds(project.id, &project.name).await
    }

    /// Finds a sandbox by id or name among what the caller may see; 404 otherwise.
    pub async fn find(&self, caller: &Caller, id_or_name: &str) -> AppResult<SandboxRecord> {
        if let Ok(id) = id_or_name.parse::<SandboxId>()
            && let Some(r) = self.store.get_sandbox(&id).await?
            && caller.can_access(r.project)
        {
            return Ok(r);
        }
        if sandpit_types::api::validate_name("name", id_or_name).is_ok() {
            let filter = SandboxFilter {
                projects: caller.visible_projects(),
                states: vec![SandboxState::Provisioning, SandboxState::Running, SandboxState::Paused],
                metadata: Vec::new(),
            };
            let (page, _) = self.store.list_sandboxes(&filter, 1000, None).await?;
            if let Some(r) = page.into_iter().find(|r| r.name.as_deref() == Some(id_or_name)) {
                return Ok(r);
            }
        }
        Err(ApiError::sandbox_not_found(id_or_name).into())
    }

    /// Writes a state change with its event and publishes it. `Stale` means someone else changed
    /// the sandbox meanwhile, which the per-sandbox lock rules out for lifecycle work.
    async fn commit(&self, r: &SandboxRecord, event: Option<NewEvent>) -> AppResult<SandboxRecord> {
        let (stored, ev) = self.store.update_sandbox(r, event).await?;
        if let Some(ev) = ev {
            self.hub.publish(&stored.id, &ev);
        }
        Ok(stored)
    }

    /// Applies a lifecycle event to a record (the transition table decides).
    fn transition(r: &mut SandboxRecord, event: SandboxEvent, reason: Option<String>) -> AppResult<()> {
        r.state = r.state.apply(event).map_err(ApiError::from)?;
        r.state_reason = reason;
        Ok(())
    }

    /// The event of `r`'s (new) state, dated `at` (the time also written into the record), with
    /// what the sandbox holds from then on for metering: CPU, memory and the GPUs of its
    /// placement while running, its disk while paused.
    pub fn state_event(&self, r: &SandboxRecord, at: OffsetDateTime) -> NewEvent {
        let usage = crate::billing::usage_of(self, r).and_then(|u| serde_json::to_string(&u).ok());
        NewEvent::state(r.state, r.state_reason.clone()).at(at).with_usage(usage)
    }

    /// `POST /v1/sandboxes`.
    pub async fn create(
        self: &Arc<Self>,
        caller: &Caller,
        req: CreateSandbox,
        wait: bool,
    ) -> AppResult<SandboxView> {
        let limits = &self.config.limits;
        req.validate(limits)?;
        let project = self.target_project(caller, req.project.as_deref()).await?;
        self.ensure_may_run(caller, &project).await?;
        let resolved = self.resolve_image(req.image.as_ref())?;
        let image = resolved.reference.clone();
        let id = SandboxId::generate();
        let cpu = req.cpu.unwrap_or(limits.cpu_default);
        let memory = req.memory.unwrap_or(limits.memory_default);
        let placement = self.gpus.place(id, &sandpit_sched::Request { cpu, memory, gpu: req.gpu.clone() })?;
        let record = SandboxRecord {
            id,
            project: project.id,
            created_by: caller.user.id,
            name: req.name.clone(),
            state: SandboxState::Provisioning,
            state_reason: None,
            desired: Desired::Running,
            image,
            cpu,
            memory,
            gpu: req.gpu.clone(),
            env: req.env.clone(),
            command: req.command.clone(),
            keep_running: req.keep_running,
            timeout_s: req.timeout_s.unwrap_or(limits.timeout_default_s),
            metadata: req.metadata.clone(),
            created_at: now(),
            started_at: None,
            ends_at: None,
            remaining_ms: None,
            paused_at: None,
            terminated_at: None,
            exit_code: None,
            credentials: resolved.login.as_ref().map(|l| crate::images::seal_login(self, l, &id)),
            placement: Some(serde_json::to_string(&placement).unwrap_or_default()),
            generation: 1,
        };
        let mut events = self.hub.subscribe(&id);
        let ev =
            match self.store.insert_sandbox(&record, NewEvent::state(SandboxState::Provisioning, None)).await
            {
                Ok(ev) => ev,
                Err(e) => {
                    self.gpus.release(id);
                    return Err(e.into());
                }
            };
        self.hub.publish(&id, &ev);
        sandpit_runtime::failpoint::hit("server.create.after_insert");
        info!(sandbox_id = %id, project = %project.name, image = %record.image, "sandbox created");
        self.spawn_provision(id, Instant::now());
        if wait {
            let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
            loop {
                let current = self
                    .store
                    .get_sandbox(&id)
                    .await?
                    .ok_or_else(|| ApiError::sandbox_not_found(id.to_string()))?;
                if current.state != SandboxState::Provisioning {
                    return self.view(&current).await;
                }
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                    Ok(Err(_)) | Err(_) => return self.view(&current).await,
                }
            }
        }
        self.view(&record).await
    }

    /// Provisions in the background.
    pub fn spawn_provision(self: &Arc<Self>, id: SandboxId, started: Instant) {
        let app = Arc::clone(self);
        self.tasks.spawn(async move {
            if let Err(e) = app.provision(id, started).await {
                warn!(sandbox_id = %id, error = ?e.0, "provisioning failed to record its outcome");
            }
        });
    }

    /// The runtime spec of a record.
    fn runtime_spec(&self, r: &SandboxRecord) -> SandboxSpec {
        let mut spec = SandboxSpec::new(r.id, r.image.clone());
        spec.cpu = r.cpu;
        spec.memory = r.memory;
        spec.pids_limit = self.config.sandbox_pids;
        spec.disk = self.config.sandbox_disk;
        spec.env = r.env.clone();
        spec.entrypoint = r.command.clone();
        spec.keep_running = r.keep_running;
        spec.log_max_bytes = self.config.log_max_bytes;
        spec.gpus = self.placement_of(r).map(|p| self.gpus.attachments(&p)).unwrap_or_default();
        spec
    }

    /// The reservation stored with a record.
    pub fn placement_of(&self, r: &SandboxRecord) -> Option<sandpit_sched::Placement> {
        r.placement.as_deref().and_then(|p| serde_json::from_str(p).ok())
    }

    /// The scheduler request a record stands for.
    pub fn request_of(r: &SandboxRecord) -> sandpit_sched::Request {
        sandpit_sched::Request { cpu: r.cpu, memory: r.memory, gpu: r.gpu.clone() }
    }

    /// Creates the sandbox on the backend and records the outcome. Idempotent: does nothing
    /// unless the sandbox is provisioning and meant to run.
    async fn provision(self: &Arc<Self>, id: SandboxId, started: Instant) -> AppResult<()> {
        let lock = self.lock(&id);
        let _g = lock.lock().await;
        let Some(mut r) = self.store.get_sandbox(&id).await? else { return Ok(()) };
        if r.state != SandboxState::Provisioning || r.desired != Desired::Running {
            return Ok(());
        }
        let result = match self.ensure_image(&r).await {
            Ok(_) => {
                let backend_started = Instant::now();
                let created = self.backend.create(self.runtime_spec(&r)).await;
                self.metrics.observe_backend_create(backend_started.elapsed());
                created.map_err(|e| failure_reason(&e))
            }
            Err(e) => Err(crate::images::pull_failure(&r.image, &e)),
        };
        sandpit_runtime::failpoint::hit("server.provision.after_backend");
        match result {
            Ok(status) => {
                Self::transition(&mut r, SandboxEvent::Provisioned, None)?;
                let t = now();
                r.started_at = Some(t);
                r.ends_at =
                    Some(t + time::Duration::seconds(i64::try_from(r.timeout_s).unwrap_or(i64::MAX / 4)));
                let ev = self.state_event(&r, t);
                let r = self.commit(&r, Some(ev)).await?;
                self.metrics.observe_create(started.elapsed());
                info!(sandbox_id = %id, "sandbox running");
                if status.phase == sandpit_runtime::Phase::Exited {
                    drop(_g);
                    self.on_exit(id, status.exit).await?;
                } else {
                    self.watch_exit(r.id);
                }
            }
            Err(reason) => {
                warn!(sandbox_id = %id, reason = %reason, "provisioning failed");
                Self::transition(&mut r, SandboxEvent::ProvisionFailed, Some(reason))?;
                let t = now();
                r.terminated_at = Some(t);
                r.placement = None;
                let ev = self.state_event(&r, t);
                self.commit(&r, Some(ev)).await?;
                self.gpus.release(id);
                // Nothing is left of a failed create on the backend; make sure.
                let _ = self.backend.destroy(&id).await;
            }
        }
        Ok(())
    }

    /// Watches a running sandbox's workload and ends the sandbox when it exits.
    pub fn watch_exit(self: &Arc<Self>, id: SandboxId) {
        let app = Arc::clone(self);
        self.tasks.spawn(async move {
            let exit = tokio::select! {
                r = app.backend.wait_exit(&id) => r,
                () = app.shutdown.cancelled() => return,
            };
            match exit {
                Ok(exit) => {
                    if let Err(e) = app.on_exit(id, Some(exit)).await {
                        warn!(sandbox_id = %id, error = ?e.0, "could not record a workload exit");
                    }
                }
                // Paused or deleted meanwhile: nothing to watch.
                Err(RuntimeError::WrongState { .. } | RuntimeError::NotFound(_)) => {}
                Err(e) => warn!(sandbox_id = %id, error = %e, "watching the workload failed"),
            }
        });
    }

    /// The workload of a running sandbox exited: terminate it (reason `exit`, its code kept).
    pub async fn on_exit(
        self: &Arc<Self>,
        id: SandboxId,
        exit: Option<sandpit_runtime::WorkloadExit>,
    ) -> AppResult<()> {
        let lock = self.lock(&id);
        let _g = lock.lock().await;
        let Some(mut r) = self.store.get_sandbox(&id).await? else { return Ok(()) };
        if r.state != SandboxState::Running {
            return Ok(());
        }
        // Confirm with the backend: a pause also ends the container's processes.
        match self.backend.status(&id).await {
            Ok(s) if s.phase == sandpit_runtime::Phase::Exited => {}
            Ok(_) => return Ok(()),
            Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let status = exit.as_ref().and_then(|e| e.status);
        r.exit_code = status.and_then(|s| s.code.or(s.signal.map(|sig| 128 + sig)));
        let reason = match exit.as_ref().and_then(|e| e.error.clone()) {
            Some(err) => format!("exit: {err}"),
            None => "exit".to_string(),
        };
        self.end(&mut r, SandboxEvent::Terminate, reason).await
    }

    /// Ends a sandbox: keeps its logs, removes it from the backend, records the final state.
    /// Caller holds the lock.
    async fn end(&self, r: &mut SandboxRecord, event: SandboxEvent, reason: String) -> AppResult<()> {
        self.archive_logs(&r.id).await;
        let destroyed = self.backend.destroy(&r.id).await;
        sandpit_runtime::failpoint::hit("server.end.after_destroy");
        if let Err(e) = destroyed {
            // Keep the record as it is; recovery and the next attempt retry the delete.
            return Err(AppError::internal("delete sandbox", &e));
        }
        Self::transition(r, event, Some(reason.clone()))?;
        let t = now();
        r.terminated_at = Some(t);
        if r.state == SandboxState::Terminated || r.state == SandboxState::Failed {
            r.ends_at = None;
            r.remaining_ms = None;
        }
        r.desired = Desired::Deleted;
        r.placement = None;
        let ev = self.state_event(r, t);
        self.commit(r, Some(ev)).await?;
        self.gpus.release(r.id);
        info!(sandbox_id = %r.id, state = %r.state, reason = %reason, "sandbox ended");
        Ok(())
    }

    /// Copies the backend's log of a sandbox to the archive, so it outlives the sandbox.
    async fn archive_logs(&self, id: &SandboxId) {
        let path = self.config.logs_dir().join(format!("{id}.log"));
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            match self.backend.read_logs(id, offset, 1 << 20).await {
                Ok(chunk) if !chunk.records.is_empty() => {
                    for rec in &chunk.records {
                        if let Ok(mut line) = serde_json::to_vec(rec) {
                            line.push(b'\n');
                            out.extend_from_slice(&line);
                        }
                    }
                    offset = chunk.next_offset;
                }
                _ => break,
            }
        }
        if out.is_empty() {
            return;
        }
        if let Err(e) = tokio::fs::write(&path, &out).await {
            warn!(sandbox_id = %id, error = %e, "could not archive logs");
        }
    }

    /// `DELETE /v1/sandboxes/{id}`: idempotent.
    pub async fn delete(&self, caller: &Caller, id_or_name: &str) -> AppResult<()> {
        match self.find(caller, id_or_name).await {
            Ok(r) => self.delete_record(r.id, "deleted").await,
            // By name, a sandbox that already ended is found among the ended ones: deleting it
            // again succeeds, as by id.
            Err(e) if self.ended_by_name(caller, id_or_name).await? => {
                drop(e);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the caller has an ended sandbox named `name`.
    async fn ended_by_name(&self, caller: &Caller, name: &str) -> AppResult<bool> {
        if sandpit_types::api::validate_name("name", name).is_err() {
            return Ok(false);
        }
        let filter = SandboxFilter {
            projects: caller.visible_projects(),
            states: vec![SandboxState::Terminated, SandboxState::Failed],
            metadata: Vec::new(),
        };
        let (page, _) = self.store.list_sandboxes(&filter, 1000, None).await?;
        Ok(page.iter().any(|r| r.name.as_deref() == Some(name)))
    }

    /// Deletes a sandbox for `reason` (`deleted`, `timeout`, `retention`).
    pub async fn delete_record(&self, id: SandboxId, reason: &str) -> AppResult<()> {
        let lock = self.lock(&id);
        let _g = lock.lock().await;
        let Some(mut r) = self.store.get_sandbox(&id).await? else { return Ok(()) };
        if r.state.is_final() {
            return Ok(());
        }
        if r.desired != Desired::Deleted {
            r.desired = Desired::Deleted;
            r = self.commit(&r, None).await?;
        }
        sandpit_runtime::failpoint::hit("server.delete.after_desired");
        self.end(&mut r, SandboxEvent::Terminate, reason.to_string()).await?;
        drop(_g);
        self.forget_lock(&id);
        Ok(())
    }

    /// `POST …/pause`.
    pub async fn pause(&self, caller: &Caller, id_or_name: &str) -> AppResult<SandboxView> {
        let found = self.find(caller, id_or_name).await?;
        self.pause_record(found.id, "paused").await
    }

    /// Pauses a sandbox for `reason` (`paused` by its user, `out_of_funds` by metering).
    pub async fn pause_record(&self, id: SandboxId, reason: &str) -> AppResult<SandboxView> {
        let lock = self.lock(&id);
        let _g = lock.lock().await;
        let mut r =
            self.store.get_sandbox(&id).await?.ok_or_else(|| ApiError::sandbox_not_found(id.to_string()))?;
        r.state.apply(SandboxEvent::Pause).map_err(ApiError::from)?;
        r.desired = Desired::Paused;
        let mut r = self.commit(&r, None).await?;
        sandpit_runtime::failpoint::hit("server.pause.after_desired");
        let paused = self.backend.pause(&r.id).await;
        sandpit_runtime::failpoint::hit("server.pause.after_backend");
        if let Err(e) = paused {
            r.desired = Desired::Running;
            self.commit(&r, None).await?;
            return Err(e.into());
        }
        let t = now();
        Self::transition(&mut r, SandboxEvent::Pause, Some(reason.to_string()))?;
        r.remaining_ms = r.ends_at.map(|e| u64::try_from((e - t).whole_milliseconds().max(0)).unwrap_or(0));
        r.ends_at = None;
        r.paused_at = Some(t);
        r.placement = None;
        let ev = self.state_event(&r, t);
        let r = self.commit(&r, Some(ev)).await?;
        self.gpus.release(r.id);
        info!(sandbox_id = %r.id, reason, "sandbox paused");
        self.view(&r).await
    }

    /// `POST …/resume`.
    pub async fn resume(self: &Arc<Self>, caller: &Caller, id_or_name: &str) -> AppResult<SandboxView> {
        let found = self.find(caller, id_or_name).await?;
        if found.state == SandboxState::Paused {
            let project = self
                .store
                .get_project(found.project)
                .await?
                .ok_or_else(|| ApiError::sandbox_not_found(id_or_name))?;
            self.ensure_may_run(caller, &project).await?;
        }
        let lock = self.lock(&found.id);
        let _g = lock.lock().await;
        let mut r = self
            .store
            .get_sandbox(&found.id)
            .await?
            .ok_or_else(|| ApiError::sandbox_not_found(id_or_name))?;
        r.state.apply(SandboxEvent::Resume).map_err(ApiError::from)?;
        // Schedule again: maybe other GPUs; with nothing free the sandbox stays paused.
        let placement = self.gpus.place(r.id, &Self::request_of(&r))?;
        r.desired = Desired::Running;
        r.placement = Some(serde_json::to_string(&placement).unwrap_or_default());
        let mut r = match self.commit(&r, None).await {
            Ok(r) => r,
            Err(e) => {
                self.gpus.release(r.id);
                return Err(e);
            }
        };
        sandpit_runtime::failpoint::hit("server.resume.after_desired");
        let resumed = self.backend.resume(&r.id, self.gpus.attachments(&placement)).await;
        sandpit_runtime::failpoint::hit("server.resume.after_backend");
        let status = match resumed {
            Ok(s) => s,
            Err(e) => {
                r.desired = Desired::Paused;
                r.placement = None;
                self.commit(&r, None).await?;
                self.gpus.release(r.id);
                return Err(e.into());
            }
        };
        let t = now();
        Self::transition(&mut r, SandboxEvent::Resume, Some("resumed".into()))?;
        let remaining = r.remaining_ms.unwrap_or(r.timeout_s * 1000);
        r.ends_at = Some(t + time::Duration::milliseconds(i64::try_from(remaining).unwrap_or(i64::MAX / 4)));
        r.remaining_ms = None;
        r.paused_at = None;
        r.started_at = Some(t);
        let ev = self.state_event(&r, t);
        let r = self.commit(&r, Some(ev)).await?;
        info!(sandbox_id = %r.id, "sandbox resumed");
        drop(_g);
        if status.phase == sandpit_runtime::Phase::Exited {
            self.on_exit(r.id, status.exit).await?;
        } else {
            self.watch_exit(r.id);
        }
        let r =
            self.store.get_sandbox(&r.id).await?.ok_or_else(|| ApiError::sandbox_not_found(id_or_name))?;
        self.view(&r).await
    }

    /// `POST …/timeout`: the deadline becomes now + `timeout_s` (running), or the remaining
    /// running time becomes `timeout_s` (paused).
    pub async fn set_timeout(
        &self,
        caller: &Caller,
        id_or_name: &str,
        timeout_s: u64,
    ) -> AppResult<SandboxView> {
        self.config.limits.check_timeout("timeout_s", timeout_s)?;
        let found = self.find(caller, id_or_name).await?;
        let lock = self.lock(&found.id);
        let _g = lock.lock().await;
        let mut r = self
            .store
            .get_sandbox(&found.id)
            .await?
            .ok_or_else(|| ApiError::sandbox_not_found(id_or_name))?;
        match r.state {
            SandboxState::Running | SandboxState::Provisioning => {
                r.ends_at =
                    Some(now() + time::Duration::seconds(i64::try_from(timeout_s).unwrap_or(i64::MAX / 4)));
            }
            SandboxState::Paused => r.remaining_ms = Some(timeout_s * 1000),
            s => {
                return Err(ApiError::WrongState {
                    state: s,
                    message: format!("cannot set the timeout of a sandbox that is {s}"),
                }
                .into());
            }
        }
        if r.state == SandboxState::Provisioning {
            // Provisioning sets the deadline from timeout_s when it finishes.
            r.ends_at = None;
        }
        r.timeout_s = timeout_s;
        let r = self.commit(&r, None).await?;
        self.view(&r).await
    }

    /// `GET /v1/sandboxes`.
    pub async fn list(
        &self,
        caller: &Caller,
        project: Option<&str>,
        states: Vec<SandboxState>,
        metadata: Vec<(String, String)>,
        limit: u32,
        cursor: Option<&str>,
    ) -> AppResult<Page<SandboxView>> {
        let projects = match project {
            Some(name) => {
                let p = self.store.project_by_name(name).await?;
                match p {
                    Some(p) if caller.can_access(p.id) => Some(vec![p.id]),
                    // Unknown, or not the caller's: the same answer.
                    _ => return Err(not_found_project(name)),
                }
            }
            None => caller.visible_projects(),
        };
        if let Some(c) = cursor
            && c.parse::<SandboxId>().is_err()
        {
            return Err(
                ApiError::invalid("cursor", "cursor must be the next_cursor of a previous page").into()
            );
        }
        let filter = SandboxFilter { projects, states, metadata };
        let (rows, next) = self.store.list_sandboxes(&filter, limit, cursor).await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            items.push(self.view(r).await?);
        }
        Ok(Page { items, next_cursor: next })
    }

    /// The events of a sandbox after `after`.
    pub async fn events(&self, id: &SandboxId, after: u64) -> AppResult<Vec<SandboxEventView>> {
        Ok(self.store.list_events(id, after, 1000).await?)
    }

    /// The init client of a running sandbox.
    pub async fn init(&self, r: &SandboxRecord) -> AppResult<sandpit_runtime::InitClient> {
        if r.state != SandboxState::Running {
            return Err(ApiError::WrongState {
                state: r.state,
                message: format!("sandbox {} is {}, not running", r.id, r.state),
            }
            .into());
        }
        match self.backend.init(&r.id).await {
            Ok(c) => Ok(c),
            Err(RuntimeError::WrongState { .. } | RuntimeError::NotFound(_)) => {
                Err(ApiError::Unavailable { message: format!("sandbox {} is not running on its host", r.id) }
                    .into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn not_found_project(name: &str) -> AppError {
    ApiError::NotFound { what: "project", id: name.to_string() }.into()
}

/// The reason recorded when provisioning fails: a stable code first, then the details.
pub fn failure_reason(e: &RuntimeError) -> String {
    match e {
        RuntimeError::Image(sandpit_image::ImageError::NotFound { .. }) => format!("image_not_found: {e}"),
        RuntimeError::Image(_) => format!("image_error: {e}"),
        RuntimeError::InvalidSpec { .. } => format!("invalid_spec: {e}"),
        _ => format!("runtime_error: {e}"),
    }
}

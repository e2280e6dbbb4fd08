//! Images for sandboxes: curated names resolved through the catalog, private-registry
//! credentials sealed at rest, pulls with progress events, and the layer cache's garbage
//! collection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandpit_image::{
    Catalog, ImageRecord, ImageReference, ImageSelector, LayerStatus, PullError, PullProgress,
    RegistryCredentials,
};
use sandpit_store::{NewEvent, SandboxRecord};
use sandpit_types::api::ImageSpec;
use sandpit_types::{ApiError, SandboxId, SandboxState};
use tracing::{info, warn};

use crate::app::App;
use crate::error::{AppError, AppResult};
use crate::secrets::RegistryLogin;

/// Period of the layer-cache garbage collection.
const GC_TICK: Duration = Duration::from_secs(600);
/// Most one progress event per layer per this long (plus every status change).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What a create's `image` resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The reference to run.
    pub reference: String,
    /// Registry credentials given with it.
    pub login: Option<RegistryLogin>,
}

/// When `path` was last modified, if it exists.
pub(crate) fn modified(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl App {
    /// The catalog, read again from its file when that changed since (an operator edits it while
    /// the server runs). A file that no longer parses is reported in the log once and the last
    /// good catalog stays in use.
    pub fn catalog(&self) -> Catalog {
        let path = self.config.catalog_path();
        let now = modified(&path);
        {
            let current = self.catalog.read().unwrap_or_else(|p| p.into_inner());
            if current.0 == now || now.is_none() {
                return current.1.clone();
            }
        }
        let mut current = self.catalog.write().unwrap_or_else(|p| p.into_inner());
        if current.0 != now {
            current.0 = now;
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| Catalog::parse(&t).map_err(|e| e.to_string()))
            {
                Ok(c) => {
                    tracing::info!(path = %path.display(), images = c.images.len(), "catalog reloaded");
                    current.1 = c;
                }
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "the catalog file is not valid; keeping the previous catalog"
                ),
            }
        }
        current.1.clone()
    }

    /// Resolves a create's image: a curated name becomes its reference (refused with a clear
    /// message if it must be built on this server and is not); anything else is a reference.
    pub fn resolve_image(&self, spec: Option<&ImageSpec>) -> Result<ResolvedImage, ApiError> {
        let Some(spec) = spec else {
            return Ok(ResolvedImage { reference: self.config.default_image.clone(), login: None });
        };
        let mut reference = spec.reference().to_string();
        if let Some(entry) = self.catalog().find(&reference).cloned() {
            if let Some(recipe) = &entry.build {
                let built = entry
                    .reference
                    .parse::<ImageSelector>()
                    .ok()
                    .is_some_and(|s| self.images.get(&s).is_ok());
                if !built {
                    return Err(ApiError::invalid(
                        "image",
                        format!(
                            "the curated image {:?} is not built on this server yet: an operator runs `sandpit image build {recipe}` once",
                            entry.name
                        ),
                    ));
                }
            }
            reference = entry.reference;
        }
        ImageReference::parse(&reference).map_err(|e| ApiError::invalid("image", e.to_string()))?;
        let login = match spec {
            ImageSpec::WithCredentials { username: Some(u), password: Some(p), .. } => {
                Some(RegistryLogin { username: u.clone(), password: p.clone() })
            }
            _ => None,
        };
        Ok(ResolvedImage { reference, login })
    }

    /// Makes sure a sandbox's image is in the store and the sandbox may use it: a public cached
    /// image needs no request; a private one is checked against its registry with the sandbox's
    /// credentials; a missing one is pulled, with progress events. Errors carry the pull's code.
    pub async fn ensure_image(&self, r: &SandboxRecord) -> Result<ImageRecord, PullError> {
        let auth = match &r.credentials {
            Some(sealed) => match self.secrets.open_login(sealed, r.id.as_str()) {
                Ok(l) => Some(RegistryCredentials::new(l.username, l.password)),
                Err(_) => {
                    return Err(PullError::Internal {
                        what: "the sandbox's registry credentials do not open",
                    });
                }
            },
            None => None,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PullProgress>();
        let pull = self.puller.get_or_pull(&r.image, auth, move |p| {
            let _ = tx.send(p);
        });
        let id = r.id;
        let reference = r.image.clone();
        let report = async {
            let mut last: HashMap<String, (Instant, LayerStatus)> = HashMap::new();
            while let Some(p) = rx.recv().await {
                let key = p.layer.to_string();
                let due = match last.get(&key) {
                    None => true,
                    Some((at, status)) => {
                        *status != p.status || at.elapsed() >= PROGRESS_EVERY || p.done == p.total
                    }
                };
                if !due {
                    continue;
                }
                last.insert(key.clone(), (Instant::now(), p.status));
                let status = match p.status {
                    LayerStatus::Downloading => "downloading",
                    LayerStatus::Cached => "cached",
                    LayerStatus::Done => "done",
                };
                let detail = serde_json::json!({
                    "image": reference,
                    "layer": key,
                    "done_bytes": p.done.bytes(),
                    "total_bytes": p.total.bytes(),
                    "status": status,
                });
                if let Ok(ev) = self
                    .store
                    .append_event(&id, NewEvent::progress(format!("pulling {reference}"), Some(detail)))
                    .await
                {
                    self.hub.publish(&id, &ev);
                }
            }
        };
        let (result, ()) = tokio::join!(pull, report);
        let record = result?;
        let selector = ImageSelector::Digest(record.manifest_digest);
        let images = self.images.clone();
        let _ = tokio::task::spawn_blocking(move || images.touch(&selector)).await;
        Ok(record)
    }

    /// Manifest digests of the images live sandboxes use (never collected).
    pub async fn images_in_use(&self) -> AppResult<HashSet<sandpit_image::Sha256Digest>> {
        let live = self
            .store
            .sandboxes_in_states(&[SandboxState::Provisioning, SandboxState::Running, SandboxState::Paused])
            .await?;
        let refs: HashSet<String> = live.into_iter().map(|r| r.image).collect();
        let images = self.images.clone();
        let digests = tokio::task::spawn_blocking(move || {
            refs.iter()
                .filter_map(|r| r.parse::<ImageSelector>().ok())
                .filter_map(|s| images.get(&s).ok())
                .map(|rec| rec.manifest_digest)
                .collect()
        })
        .await
        .map_err(|e| AppError::internal("images in use", &e))?;
        Ok(digests)
    }

    /// Images never collected: the default image and the curated images built on this server.
    pub fn pinned_images(&self) -> HashSet<ImageReference> {
        let mut keep: HashSet<ImageReference> = self
            .catalog()
            .images
            .iter()
            .filter(|e| e.build.is_some())
            .filter_map(|e| ImageReference::parse(&e.reference).ok())
            .collect();
        if let Ok(r) = ImageReference::parse(&self.config.default_image) {
            keep.insert(r);
        }
        keep
    }

    /// Collects the layer cache down to `image_cache_max_bytes`.
    pub async fn collect_images(&self) -> AppResult<sandpit_image::store::GcReport> {
        let in_use = self.images_in_use().await?;
        let keep = self.pinned_images();
        let (images, target) = (self.images.clone(), self.config.image_cache_max_bytes);
        let report = tokio::task::spawn_blocking(move || images.gc(&in_use, &keep, target))
            .await
            .map_err(|e| AppError::internal("image gc", &e))?
            .map_err(|e| AppError::internal("image gc", &e))?;
        if !report.removed_images.is_empty() || !report.removed_layers.is_empty() {
            info!(
                freed = report.freed().bytes(),
                images = report.removed_images.len(),
                "collected the image cache"
            );
        }
        Ok(report)
    }
}

/// The reason recorded when an image cannot be had: the pull's code, then its message (which
/// never holds a password).
pub fn pull_failure(reference: &str, e: &PullError) -> String {
    format!("{}: cannot pull {reference}: {e}", e.reason())
}

/// Collects the image cache periodically, until shutdown.
pub async fn gc_loop(app: Arc<App>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(GC_TICK) => {}
            () = app.shutdown.cancelled() => return,
        }
        if let Err(e) = app.collect_images().await {
            warn!(error = ?e.0, "image cache collection failed; retrying later");
        }
    }
}

/// Seals a create's credentials for its sandbox.
pub fn seal_login(app: &App, login: &RegistryLogin, id: &SandboxId) -> Vec<u8> {
    app.secrets.seal_login(login, id.as_str())
}

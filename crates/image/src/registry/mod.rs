//! Registry pulls (anonymous, basic and bearer-token auth) into the [`ImageStore`], and the access
//! check for images already in it.
//!
//! ```text
//!  pull(reference as written, credentials, progress)
//!   ├─ normalise like Docker: no domain → docker.io, one component → library/
//!   ├─ single flight: same reference + same credentials in this process → one pull, shared
//!   └─ pull task:
//!       authenticate ─► manifest ─► (index? → entry for linux/<host arch>) ─► config ─► ImagePlan
//!       (GET /v2/, token)  (digest and size checked at every step)                   │
//!       layers, lowest first, up to max_concurrent_layers at once                    ▼
//!       (one blocking thread each, one shared ImportSession), per layer:
//!         in the store? ─► Cached
//!         else wait for any other download of that diff_id in this process, look again
//!         else stream the blob into unpack_layer_blob (blob digest + diff_id verified,
//!              gzip/zstd/tar, foreign layers refused; max image size enforced across the
//!              layers in flight) ─► Done; a connection lost mid-blob starts that blob again
//!       first layer failure: the other layers stop at their next read or wait and are joined
//!       commit in plan order under the reference as written,
//!       source Registry { registry, repository, anonymous }
//!   failure at any step: nothing committed, layers this pull unpacked are rolled back
//! ```
//!
//! Network requests are retried with exponential backoff on transient failures only (connect
//! errors, timeouts, broken connections, 5xx, 429), never on 401/403/404. Each pull and access
//! check makes its own `oci-client` client, because that client keeps the first credentials it
//! sees per registry: a client is never shared between callers. Plain HTTP is used only for the
//! registries listed in [`PullConfig::insecure_registries`].
//!
//! ## Access to cached images
//!
//! Each [`ImageRecord`] says how the image was obtained ([`ImageSource`]):
//!
//! - `Local` (imported or built on this machine) and `Registry { anonymous: true }` (pulled
//!   without credentials) are public: anyone who names the image may use it, with no request.
//! - `Registry { anonymous: false }` (pulled with credentials) is private to whoever the registry
//!   lets pull it: before a caller uses it, [`Puller::authorize`] asks the registry for its
//!   manifest (by digest, with the caller's credentials; no layer is transferred) and refuses
//!   with [`PullError::AuthFailed`] or [`PullError::NotFound`] when the registry does.
//! - When an image arrives again, the more public source is kept: once anyone pulled it
//!   anonymously, it is public.
//!
//! [`Puller::get_or_pull`] applies the rule: the store lookup is local, a public cached image
//! needs no request at all, a private one one manifest request, a missing one is pulled.

mod credentials;
mod error;
mod flight;
mod pull;
mod remote;

use std::sync::Arc;
use std::time::Duration;

use oci_client::Reference;
use sandpit_types::ByteSize;
use tokio::sync::broadcast::error::RecvError;

pub use credentials::RegistryCredentials;
pub use error::{NetworkCause, PullError};

use crate::digest::{Sha256Digest, truncate};
use crate::error::ImageError;
use crate::reference::{ImageReference, ImageSelector};
use crate::store::{ImageRecord, ImageSource, ImageStore};
use flight::{FlightKey, ImageFlights, LayerFlights};
use remote::Remote;

/// How pulls talk to registries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullConfig {
    /// Registries (`host:port`, as written in references) reached over plain HTTP; every other
    /// registry is reached over HTTPS only.
    pub insecure_registries: Vec<String>,
    /// Attempts per request (and per layer download) before a transient failure is final.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubled for each further one.
    pub backoff: Duration,
    /// The longest delay between attempts.
    pub max_backoff: Duration,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed between two reads of a response.
    pub read_timeout: Duration,
    /// Layers of one pull downloaded and unpacked at once (default 3; 0 counts as 1). Each takes
    /// a thread, a connection and decompressor memory; more than the CPUs can keep busy with
    /// decompression and hashing gains nothing.
    pub max_concurrent_layers: usize,
}

impl Default for PullConfig {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            max_attempts: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_concurrent_layers: crate::concurrent::DEFAULT_CONCURRENT_LAYERS,
        }
    }
}

/// What happened to one layer of a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerStatus {
    /// Bytes are arriving.
    Downloading,
    /// The store already had the layer: nothing was downloaded.
    Cached,
    /// Downloaded, verified and unpacked.
    Done,
}

/// Progress of one layer, reported as bytes arrive (at most every 256 KiB or 100 ms per layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullProgress {
    /// The layer's blob digest (as in the manifest).
    pub layer: Sha256Digest,
    /// Blob bytes received so far.
    pub done: ByteSize,
    /// The blob's size from the manifest.
    pub total: ByteSize,
    /// Where the layer stands.
    pub status: LayerStatus,
}

/// Pulls images from registries into one store. Cheap to clone; share one per process so that
/// concurrent pulls are deduplicated.
#[derive(Debug, Clone)]
pub struct Puller {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<ImageStore>,
    config: PullConfig,
    images: ImageFlights,
    layers: Arc<LayerFlights>,
}

/// A reference as the caller wrote it (the store name) and as the registry knows it.
struct Target {
    written: ImageReference,
    remote: Reference,
}

impl Target {
    fn parse(input: &str) -> Result<Self, PullError> {
        let written = ImageReference::parse(input)?;
        let remote = written.as_str().parse::<Reference>().map_err(|_| PullError::InvalidReference {
            input: truncate(input),
            reason: "the registry client cannot parse it",
        })?;
        Ok(Self { written, remote })
    }
}

/// The reference as a registry knows it, normalised like Docker does: no domain means
/// `docker.io`, a single path component gets `library/`, no tag means `latest`
/// (`busybox` → `docker.io/library/busybox:latest`).
pub fn normalise_reference(reference: &str) -> Result<String, PullError> {
    Target::parse(reference).map(|t| t.remote.whole())
}

impl Puller {
    /// A puller that stores into `store`.
    pub fn new(store: Arc<ImageStore>, config: PullConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                images: ImageFlights::default(),
                layers: Arc::new(LayerFlights::default()),
            }),
        }
    }

    /// The store pulls go into.
    pub fn store(&self) -> &Arc<ImageStore> {
        &self.inner.store
    }

    /// Pulls `reference` with `auth` (anonymously without) and commits it under `reference` as
    /// written (`sandpit/busybox` → `sandpit/busybox:latest`), whatever registry it came from.
    ///
    /// Layers the store has are not downloaded. `progress` is called on the caller's task as
    /// layers advance. Concurrent calls with the same reference and credentials share one pull
    /// (and its progress); concurrent pulls of images that share a layer download it once.
    /// The pull runs on its own task: dropping the returned future does not stop it.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<RegistryCredentials>,
        progress: impl Fn(PullProgress) + Send + Sync,
    ) -> Result<ImageRecord, PullError> {
        let target = Target::parse(reference)?;
        let key =
            FlightKey { reference: target.written.clone(), identity: auth.as_ref().map(|a| a.identity()) };
        let (flight, leader, mut events, mut outcome) = self.inner.images.join(&key);
        if leader {
            let remote = match Remote::new(&self.inner.config, target.remote, auth.as_ref()) {
                Ok(remote) => remote,
                Err(e) => {
                    self.inner.images.finish(&key, &flight, Err(e.clone()));
                    return Err(e);
                }
            };
            let job = pull::PullJob {
                store: Arc::clone(&self.inner.store),
                layers: Arc::clone(&self.inner.layers),
                remote,
                written: target.written,
                anonymous: auth.is_none(),
                events: flight.events.clone(),
                max_concurrent_layers: self.inner.config.max_concurrent_layers.max(1),
            };
            let inner = Arc::clone(&self.inner);
            let task_flight = Arc::clone(&flight);
            tokio::spawn(async move {
                let result = pull::run(job).await;
                if let Err(e) = &result {
                    tracing::info!(image = %key.reference, reason = e.reason(), error = %e, "pull failed");
                }
                inner.images.finish(&key, &task_flight, result);
            });
        }
        drop(flight);
        loop {
            tokio::select! {
                biased;
                event = events.recv() => match event {
                    Ok(event) => progress(event),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                done = outcome.wait_for(Option::is_some) => {
                    if done.is_err() {
                        break;
                    }
                    // Events sent before the outcome are still queued.
                    loop {
                        match events.try_recv() {
                            Ok(event) => progress(event),
                            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                            Err(_) => break,
                        }
                    }
                    break;
                }
            }
        }
        let result = outcome.borrow().clone();
        result.unwrap_or(Err(PullError::Internal { what: "the pull task stopped before it finished" }))
    }

    /// Whether `auth` (anonymous without) may pull `reference` from its registry: asks for the
    /// manifest only (HEAD, or GET when the registry sends no digest header), no layer.
    pub async fn check_access(
        &self,
        reference: &str,
        auth: Option<&RegistryCredentials>,
    ) -> Result<(), PullError> {
        let target = Target::parse(reference)?;
        let remote = Remote::new(&self.inner.config, target.remote, auth)?;
        remote.authenticate().await?;
        remote.check_manifest().await
    }

    /// Applies the access rule (module docs) to an image in the store: public images pass with
    /// no request; a private one passes when its registry lets `auth` fetch its manifest by
    /// digest from the repository it was pulled from.
    pub async fn authorize(
        &self,
        record: &ImageRecord,
        auth: Option<&RegistryCredentials>,
    ) -> Result<(), PullError> {
        let ImageSource::Registry { registry, repository, anonymous: false } = &record.source else {
            return Ok(());
        };
        let reference =
            Reference::with_digest(registry.clone(), repository.clone(), record.manifest_digest.to_string());
        let remote = Remote::new(&self.inner.config, reference, auth)?;
        remote.authenticate().await?;
        remote.check_manifest().await
    }

    /// The image `reference` names: from the store when it is there and `auth` may use it
    /// ([`Self::authorize`]), else pulled ([`Self::pull`]).
    pub async fn get_or_pull(
        &self,
        reference: &str,
        auth: Option<RegistryCredentials>,
        progress: impl Fn(PullProgress) + Send + Sync,
    ) -> Result<ImageRecord, PullError> {
        let selector = ImageSelector::Reference(ImageReference::parse(reference)?);
        let store = Arc::clone(&self.inner.store);
        let found = tokio::task::spawn_blocking(move || store.get(&selector))
            .await
            .map_err(|_| PullError::Internal { what: "the store lookup stopped" })?;
        match found {
            Ok(record) => {
                self.authorize(&record, auth.as_ref()).await?;
                Ok(record)
            }
            Err(ImageError::NotFound { .. }) => self.pull(reference, auth, progress).await,
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalised_like_docker_does() {
        assert_eq!(normalise_reference("busybox").unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(normalise_reference("sandpit/busybox:1").unwrap(), "docker.io/sandpit/busybox:1");
        assert_eq!(normalise_reference("127.0.0.1:5000/x/y:2").unwrap(), "127.0.0.1:5000/x/y:2");
        assert_eq!(normalise_reference("localhost:5000/x").unwrap(), "localhost:5000/x:latest");
        assert!(matches!(normalise_reference("Bad/Name"), Err(PullError::InvalidReference { .. })));
        assert!(matches!(normalise_reference("x@sha256:00"), Err(PullError::InvalidReference { .. })));
    }
}

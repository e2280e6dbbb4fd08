//! One pull: manifest and config over the network, then the layers streamed into an
//! [`ImportSession`] on a blocking thread, one at a time, with bounded memory.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandpit_types::ByteSize;
use tokio::runtime::Handle;
use tokio::sync::broadcast;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::error::{NetworkCause, PullError};
use super::flight::LayerFlights;
use super::remote::Remote;
use super::{LayerStatus, PullProgress};
use crate::document;
use crate::error::ImageError;
use crate::plan::{ImagePlan, PlannedLayer};
use crate::reference::{ImageReference, ImageSelector};
use crate::store::{ImageRecord, ImageSource, ImageStore, ImportSession};

/// Bytes between two `Downloading` events of one layer, at most.
const PROGRESS_BYTES: u64 = 256 << 10;
/// Time between two `Downloading` events of one layer, at most (when bytes arrive).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Everything a pull task needs.
pub(crate) struct PullJob {
    pub(crate) store: Arc<ImageStore>,
    pub(crate) layers: Arc<LayerFlights>,
    pub(crate) remote: Remote,
    pub(crate) written: ImageReference,
    pub(crate) anonymous: bool,
    pub(crate) events: broadcast::Sender<PullProgress>,
}

/// Runs a pull to its end: authenticate, manifest (through an index), config, plan, layers,
/// commit under the reference as written.
pub(crate) async fn run(job: PullJob) -> Result<ImageRecord, PullError> {
    let remote = &job.remote;
    remote.authenticate().await?;
    let (manifest_digest, manifest) = remote.manifest().await?;
    let store = Arc::clone(&job.store);
    let known = tokio::task::spawn_blocking(move || store.get(&ImageSelector::Digest(manifest_digest)))
        .await
        .map_err(|_| PullError::Internal { what: "the store lookup stopped" })?;
    let plan = match known {
        // The store has this manifest: its config was verified then; only missing layers move.
        Ok(record) => ImagePlan::from_record(&record, &manifest)?,
        Err(ImageError::NotFound { .. }) => {
            let config_digest = crate::Sha256Digest::from_oci(manifest.config().digest())?;
            let config = remote.document(&config_digest, manifest.config().size()).await?;
            document::plan(manifest_digest, &manifest, &config)?
        }
        Err(e) => return Err(e.into()),
    };
    let source = ImageSource::Registry {
        registry: remote.registry().to_owned(),
        repository: remote.repository().to_owned(),
        anonymous: job.anonymous,
    };
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || import(&job, &handle, &plan, source))
        .await
        .map_err(|_| PullError::Internal { what: "the pull's import task stopped" })?
}

/// The blocking half: one import session for the whole image.
fn import(
    job: &PullJob,
    handle: &Handle,
    plan: &ImagePlan,
    source: ImageSource,
) -> Result<ImageRecord, PullError> {
    let mut session = job.store.begin_import()?;
    for layer in plan.layers() {
        if present(&mut session, layer, job)? {
            continue;
        }
        // Another pull of this process may be fetching the same layer: wait for it, then look
        // again (a failed download leaves the layer missing, and this pull fetches it).
        let _ticket = handle.block_on(job.layers.enter(layer.diff_id));
        if present(&mut session, layer, job)? {
            continue;
        }
        download(&mut session, handle, job, layer)?;
    }
    Ok(session.commit_from(plan, Some(&job.written), source)?)
}

/// Whether the store has the layer (then reported as cached).
fn present(session: &mut ImportSession<'_>, layer: &PlannedLayer, job: &PullJob) -> Result<bool, PullError> {
    match session.layer(&layer.diff_id)? {
        Some(_) => {
            let _ = job.events.send(PullProgress {
                layer: layer.blob_digest,
                done: ByteSize(layer.blob_size),
                total: ByteSize(layer.blob_size),
                status: LayerStatus::Cached,
            });
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Streams one layer blob into the session; a connection lost mid-blob starts it again.
fn download(
    session: &mut ImportSession<'_>,
    handle: &Handle,
    job: &PullJob,
    layer: &PlannedLayer,
) -> Result<(), PullError> {
    let policy = job.remote.retry_policy();
    let mut attempt = 1;
    loop {
        let stream = handle.block_on(job.remote.blob(&layer.blob_digest))?;
        let bridge = SyncIoBridge::new_with_handle(StreamReader::new(stream), handle.clone());
        // One byte more than declared: a longer blob then fails its digest check.
        let reader = Progress::new(bridge.take(layer.blob_size.saturating_add(1)), layer, &job.events);
        match session.unpack_layer_blob(reader, layer.media_type, &layer.blob_digest, &layer.diff_id) {
            Ok(_) => {
                let _ = job.events.send(PullProgress {
                    layer: layer.blob_digest,
                    done: ByteSize(layer.blob_size),
                    total: ByteSize(layer.blob_size),
                    status: LayerStatus::Done,
                });
                return Ok(());
            }
            Err(ImageError::BlobRead { .. }) if attempt < policy.max_attempts => {
                tracing::debug!(layer = %layer.blob_digest, attempt, "layer download broke off; starting again");
                std::thread::sleep(policy.delay(attempt));
                attempt += 1;
            }
            Err(ImageError::BlobRead { .. }) => {
                return Err(job.remote.unreachable(NetworkCause::ConnectionLost, attempt));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Counts the bytes of a layer blob as they are read and reports them, at most every
/// [`PROGRESS_BYTES`] or [`PROGRESS_INTERVAL`].
struct Progress<'e, R> {
    inner: R,
    layer: crate::Sha256Digest,
    total: u64,
    done: u64,
    reported: u64,
    reported_at: Instant,
    events: &'e broadcast::Sender<PullProgress>,
}

impl<'e, R> Progress<'e, R> {
    fn new(inner: R, layer: &PlannedLayer, events: &'e broadcast::Sender<PullProgress>) -> Self {
        let progress = Self {
            inner,
            layer: layer.blob_digest,
            total: layer.blob_size,
            done: 0,
            reported: 0,
            reported_at: Instant::now(),
            events,
        };
        progress.report();
        progress
    }

    fn report(&self) {
        let _ = self.events.send(PullProgress {
            layer: self.layer,
            done: ByteSize(self.done.min(self.total)),
            total: ByteSize(self.total),
            status: LayerStatus::Downloading,
        });
    }
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done = self.done.saturating_add(n as u64);
        if n > 0
            && (self.done - self.reported >= PROGRESS_BYTES
                || self.reported_at.elapsed() >= PROGRESS_INTERVAL)
        {
            self.report();
            self.reported = self.done;
            self.reported_at = Instant::now();
        }
        Ok(n)
    }
}

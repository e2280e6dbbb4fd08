//! One pull: manifest and config over the network, then the layers streamed into one
//! [`ImportSession`] on blocking threads, a few at once ([`super::PullConfig::max_concurrent_layers`]),
//! each with bounded memory.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sandpit_types::ByteSize;
use tokio::runtime::Handle;
use tokio::sync::broadcast;
use tokio_util::io::{StreamReader, SyncIoBridge};
use tokio_util::sync::CancellationToken;

use super::error::{NetworkCause, PullError};
use super::flight::LayerFlights;
use super::remote::Remote;
use super::{LayerStatus, PullProgress};
use crate::concurrent::{self, LayerReader, Slots};
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
    /// Layers downloaded and unpacked at once, at least one.
    pub(crate) max_concurrent_layers: usize,
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

/// The blocking half: one import session for the whole image, its layers fetched a few at once.
/// The first failure stops the others (each at its next read or wait); the session, dropped
/// with every layer thread joined, rolls back the layers this pull unpacked.
fn import(
    job: &PullJob,
    handle: &Handle,
    plan: &ImagePlan,
    source: ImageSource,
) -> Result<ImageRecord, PullError> {
    let session = job.store.begin_import()?;
    let cancel = CancellationToken::new();
    // Twice as many threads as streams: a layer being synced, or waiting for another pull's
    // download of it, leaves its stream to the next layer.
    let streams = Slots::new(job.max_concurrent_layers);
    concurrent::for_each(plan.layers(), job.max_concurrent_layers.saturating_mul(2), &cancel, |layer| {
        fetch_layer(&session, handle, job, layer, &streams, &cancel)
    })?;
    Ok(session.commit_from(plan, Some(&job.written), source)?)
}

/// Brings one layer into the store unless it is there.
fn fetch_layer(
    session: &ImportSession<'_>,
    handle: &Handle,
    job: &PullJob,
    layer: &PlannedLayer,
    streams: &Slots,
    cancel: &CancellationToken,
) -> Result<(), PullError> {
    if present(session, layer, job)? {
        return Ok(());
    }
    // Another pull of this process may be fetching the same layer: wait for it, then look
    // again (a failed download leaves the layer missing, and this pull fetches it).
    let _ticket = until_cancelled(handle, cancel, job.layers.enter(layer.diff_id)).ok_or_else(stopped)?;
    if present(session, layer, job)? {
        return Ok(());
    }
    download(session, handle, job, layer, streams, cancel)
}

/// Whether the store has the layer (then reported as cached).
fn present(session: &ImportSession<'_>, layer: &PlannedLayer, job: &PullJob) -> Result<bool, PullError> {
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
    session: &ImportSession<'_>,
    handle: &Handle,
    job: &PullJob,
    layer: &PlannedLayer,
    streams: &Slots,
    cancel: &CancellationToken,
) -> Result<(), PullError> {
    let policy = job.remote.retry_policy();
    let mut attempt = 1;
    loop {
        // Held by the reader until the blob is read (not while the layer syncs).
        let stream_slot = streams.acquire(cancel).ok_or_else(stopped)?;
        let stream = until_cancelled(handle, cancel, job.remote.blob(&layer.blob_digest, layer.blob_size))
            .ok_or_else(stopped)??;
        // A cancelled pull ends the stream: a read waiting for bytes returns at once.
        let stream = stream.take_until(Box::pin(cancel.clone().cancelled_owned()));
        let bridge = SyncIoBridge::new_with_handle(StreamReader::new(stream), handle.clone());
        // One byte more than declared: a longer blob then fails its digest check.
        let bounded = LayerReader::new(bridge.take(layer.blob_size.saturating_add(1)), cancel, stream_slot);
        let reader = Progress::new(bounded, layer, &job.events);
        let result = session.unpack_layer_blob(reader, layer.media_type, &layer.blob_digest, &layer.diff_id);
        if cancel.is_cancelled() {
            // Whatever this layer came to, another one failed first: that error is the pull's.
            return Err(stopped());
        }
        match result {
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
                until_cancelled(handle, cancel, tokio::time::sleep(policy.delay(attempt)))
                    .ok_or_else(stopped)?;
                attempt += 1;
            }
            Err(ImageError::BlobRead { .. }) => {
                return Err(job.remote.unreachable(NetworkCause::ConnectionLost, attempt));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs `future` on the runtime from a blocking thread, unless the pull is cancelled first
/// (then `None`).
fn until_cancelled<F: Future>(handle: &Handle, cancel: &CancellationToken, future: F) -> Option<F::Output> {
    handle.block_on(async {
        tokio::select! {
            output = future => Some(output),
            () = cancel.cancelled() => None,
        }
    })
}

/// What a layer returns when the pull stopped because another layer failed (never the pull's
/// outcome: the first failure is).
fn stopped() -> PullError {
    PullError::Internal { what: "the layer stopped after another layer of the pull failed" }
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
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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

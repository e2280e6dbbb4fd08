//! Work on the layers of one image at once, on a few scoped threads.
//!
//! ```text
//!  items (plan order) ─► next free thread takes the next item (at most `threads` in flight)
//!    each holds one of the Slots only while it streams (download, decompress, unpack), not
//!    while it waits for its layer or syncs it: a layer syncing leaves its slot to the next one
//!  an item fails ──► its error is kept (the first one only), `cancel` is cancelled, no item
//!                    starts any more, the items in flight see `cancel` and stop early
//!  every thread joined ─► Ok, or the first error
//! ```

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The default number of layers of one image streamed (downloaded or read, decompressed,
/// unpacked) at once.
pub(crate) const DEFAULT_CONCURRENT_LAYERS: usize = 2;

/// How often a thread waiting for a slot looks at its cancellation token.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Runs `work` on every item, up to `workers` items at once, in item order as workers free up.
/// Callers that stream layers run twice as many workers as [`Slots`], so that layers being
/// synced or waited for do not hold back the next ones.
///
/// The first error cancels `cancel` (which `work` should watch, to stop early) and is returned
/// once every item started has ended; items not started by then are skipped. With one worker, or
/// one item, everything runs on the calling thread.
pub(crate) fn for_each<T, E, F>(
    items: &[T],
    workers: usize,
    cancel: &CancellationToken,
    work: F,
) -> Result<(), E>
where
    T: Sync,
    E: Send,
    F: Fn(&T) -> Result<(), E> + Sync,
{
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<E>> = Mutex::new(None);
    let worker = || {
        while !cancel.is_cancelled() {
            let Some(item) = items.get(next.fetch_add(1, Ordering::SeqCst)) else { return };
            if let Err(e) = work(item) {
                first_error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
                cancel.cancel();
            }
        }
    };
    let workers = workers.clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        for n in 1..workers {
            let spawned =
                std::thread::Builder::new().name(format!("layer-worker-{n}")).spawn_scoped(scope, worker);
            if let Err(e) = spawned {
                // Fewer workers do the same work, more slowly.
                tracing::warn!(error = %e, "could not start a layer worker thread");
                break;
            }
        }
        worker();
    });
    match first_error.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A counting semaphore for threads: the number of layers streamed at once.
#[derive(Debug)]
pub(crate) struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One slot of [`Slots`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot<'s> {
    slots: &'s Slots,
}

impl Slots {
    /// `count` slots (at least one).
    pub(crate) fn new(count: usize) -> Self {
        Self { free: Mutex::new(count.max(1)), freed: Condvar::new() }
    }

    /// Waits for a free slot; `None` once `cancel` is cancelled.
    pub(crate) fn acquire(&self, cancel: &CancellationToken) -> Option<Slot<'_>> {
        let mut free = self.free();
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            if *free > 0 {
                *free -= 1;
                return Some(Slot { slots: self });
            }
            free = self.freed.wait_timeout(free, CANCEL_POLL).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn free(&self) -> MutexGuard<'_, usize> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.slots.free() += 1;
        self.slots.freed.notify_one();
    }
}

/// The reader of one layer blob while it streams: fails once `cancel` is cancelled (so that an
/// unpack in flight stops early), and holds a [`Slot`] until the unpack drops it, which it does
/// once the blob is read, before the layer is synced.
#[derive(Debug)]
pub(crate) struct LayerReader<'c, R> {
    inner: R,
    cancel: &'c CancellationToken,
    _slot: Slot<'c>,
}

impl<'c, R> LayerReader<'c, R> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: R, cancel: &'c CancellationToken, slot: Slot<'c>) -> Self {
        Self { inner, cancel, _slot: slot }
    }
}

impl<R: Read> Read for LayerReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let cancelled = || io::Error::other("cancelled after another layer failed");
        if self.cancel.is_cancelled() {
            return Err(cancelled());
        }
        let n = self.inner.read(buf)?;
        if n == 0 && self.cancel.is_cancelled() {
            return Err(cancelled());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::time::Duration;

    use super::*;

    #[test]
    fn items_run_at_once_up_to_the_worker_count() {
        let items: Vec<usize> = (0..6).collect();
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let barrier = Barrier::new(3);
        let done = Mutex::new(Vec::new());
        let cancel = CancellationToken::new();
        for_each(&items, 3, &cancel, |&i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            if i < 3 {
                // The first three items wait for each other: they must all be in flight at once.
                barrier.wait();
            }
            running.fetch_sub(1, Ordering::SeqCst);
            done.lock().unwrap().push(i);
            Ok::<(), ()>(())
        })
        .unwrap();
        let mut done = done.into_inner().unwrap();
        done.sort_unstable();
        assert_eq!(done, items);
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn the_first_error_cancels_the_rest_and_waits_for_the_items_in_flight() {
        let items: Vec<usize> = (0..100).collect();
        let finished = AtomicUsize::new(0);
        let cancel = CancellationToken::new();
        let result = for_each(&items, 2, &cancel, |&i| {
            if i == 1 {
                std::thread::sleep(Duration::from_millis(20));
                return Err(format!("item {i} failed"));
            }
            if i == 0 {
                // In flight when item 1 fails: sees the cancellation and stops.
                while !cancel.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                finished.fetch_add(1, Ordering::SeqCst);
                return Err("cancelled".to_owned());
            }
            finished.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        assert_eq!(result, Err("item 1 failed".to_owned()));
        assert!(cancel.is_cancelled());
        assert_eq!(finished.load(Ordering::SeqCst), 1, "no item started after the failure");
    }

    #[test]
    fn one_worker_runs_in_order_on_the_calling_thread() {
        let caller = std::thread::current().id();
        let seen = Mutex::new(Vec::new());
        let cancel = CancellationToken::new();
        for_each(&[1, 2, 3], 1, &cancel, |&i| {
            assert_eq!(std::thread::current().id(), caller);
            seen.lock().unwrap().push(i);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(seen.into_inner().unwrap(), [1, 2, 3]);
        assert_eq!(for_each::<u8, (), _>(&[], 4, &cancel, |_| Ok(())), Ok(()));
    }

    #[test]
    fn slots_bound_the_holders_and_a_cancelled_wait_gives_up() {
        let slots = Slots::new(2);
        let cancel = CancellationToken::new();
        let a = slots.acquire(&cancel).unwrap();
        let _b = slots.acquire(&cancel).unwrap();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| slots.acquire(&cancel).is_some());
            std::thread::sleep(Duration::from_millis(30));
            assert!(!waiter.is_finished(), "a third holder did not wait");
            drop(a);
            assert!(waiter.join().unwrap());
        });
        let cancelled = CancellationToken::new();
        let _c = slots.acquire(&cancel).unwrap();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| slots.acquire(&cancelled).is_none());
            cancelled.cancel();
            assert!(waiter.join().unwrap());
        });
    }

    #[test]
    fn a_layer_reader_fails_once_cancelled_and_frees_its_slot_when_dropped() {
        let slots = Slots::new(1);
        let cancel = CancellationToken::new();
        let mut reader = LayerReader::new(&b"abcdef"[..], &cancel, slots.acquire(&cancel).unwrap());
        let mut buf = [0u8; 3];
        assert_eq!(reader.read(&mut buf).unwrap(), 3);
        cancel.cancel();
        assert!(reader.read(&mut buf).is_err());
        drop(reader);
        assert!(slots.acquire(&CancellationToken::new()).is_some());
    }
}

//! Single flight in one process: concurrent pulls of one image (same reference, same
//! credentials) share one pull, and concurrent downloads of one layer (by diff_id, across
//! images) happen once.
//!
//! ```text
//!  pull(ref, creds) ─► images[(ref, identity)] ─┬─ absent: insert, spawn the pull task (leader)
//!                                               └─ present: follow it
//!  every caller: forward the flight's progress events to its callback until the outcome is set
//!  the task: run the pull ─► remove the entry ─► publish the outcome (shared by every caller)
//!
//!  layer download ─► layers[diff_id] gate (async mutex) held while downloading and unpacking;
//!                    a second puller waits on it (or gives up when its pull fails), then finds
//!                    the layer in the store
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedMutexGuard, broadcast, watch};

use super::PullProgress;
use super::error::PullError;
use crate::digest::Sha256Digest;
use crate::reference::ImageReference;
use crate::store::ImageRecord;

/// Progress events kept for a slow follower before it starts missing some.
const EVENT_CAPACITY: usize = 1024;

/// What identifies one pull: the reference as written and who asks (credentials identity).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FlightKey {
    pub(crate) reference: ImageReference,
    pub(crate) identity: Option<Sha256Digest>,
}

/// The outcome of a finished pull, shared by every caller.
pub(crate) type Outcome = Result<ImageRecord, PullError>;

/// One pull in progress.
#[derive(Debug)]
pub(crate) struct ImageFlight {
    /// Progress of the layers, for every caller.
    pub(crate) events: broadcast::Sender<PullProgress>,
    /// `None` until the pull ends.
    pub(crate) outcome: watch::Sender<Option<Outcome>>,
}

/// The pulls in progress.
#[derive(Debug, Default)]
pub(crate) struct ImageFlights {
    map: Mutex<HashMap<FlightKey, Arc<ImageFlight>>>,
}

impl ImageFlights {
    /// Joins the pull for `key`, or starts one: the flag says whether the caller must run it.
    /// The receivers are taken while the entry is held, so no event of a new pull is missed.
    pub(crate) fn join(
        &self,
        key: &FlightKey,
    ) -> (Arc<ImageFlight>, bool, broadcast::Receiver<PullProgress>, watch::Receiver<Option<Outcome>>) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let (flight, leader) = match map.get(key) {
            Some(flight) => (Arc::clone(flight), false),
            None => {
                let flight = Arc::new(ImageFlight {
                    events: broadcast::channel(EVENT_CAPACITY).0,
                    outcome: watch::channel(None).0,
                });
                map.insert(key.clone(), Arc::clone(&flight));
                (flight, true)
            }
        };
        let events = flight.events.subscribe();
        let outcome = flight.outcome.subscribe();
        (flight, leader, events, outcome)
    }

    /// Ends the pull for `key`: later callers start a new one (and find the store filled).
    pub(crate) fn finish(&self, key: &FlightKey, flight: &ImageFlight, outcome: Outcome) {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
        flight.outcome.send_replace(Some(outcome));
    }
}

/// Layer downloads in progress, by diff_id.
#[derive(Debug, Default)]
pub(crate) struct LayerFlights {
    map: Mutex<HashMap<Sha256Digest, LayerGate>>,
}

/// The gate of one layer and how many tickets (held or waiting) use it.
#[derive(Debug)]
struct LayerGate {
    lock: Arc<tokio::sync::Mutex<()>>,
    users: usize,
}

/// The right to download one layer; others wait until it is dropped.
#[derive(Debug)]
pub(crate) struct LayerTicket {
    flights: Arc<LayerFlights>,
    diff_id: Sha256Digest,
    guard: Option<OwnedMutexGuard<()>>,
}

impl LayerFlights {
    /// Waits until no other pull of this process downloads `diff_id`, then holds it. Dropping
    /// the future while it waits is fine (a cancelled pull stops waiting).
    pub(crate) async fn enter(self: &Arc<Self>, diff_id: Sha256Digest) -> LayerTicket {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            let gate = map.entry(diff_id).or_insert_with(|| LayerGate { lock: Arc::default(), users: 0 });
            gate.users += 1;
            Arc::clone(&gate.lock)
        };
        // Made before waiting, so that a dropped wait still counts itself out.
        let mut ticket = LayerTicket { flights: Arc::clone(self), diff_id, guard: None };
        ticket.guard = Some(lock.lock_owned().await);
        ticket
    }

    /// How many layers have a gate (held or waited for).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for LayerTicket {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.flights.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(gate) = map.get_mut(&self.diff_id) {
            gate.users = gate.users.saturating_sub(1);
            if gate.users == 0 {
                map.remove(&self.diff_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_layer_gate_is_exclusive_and_removed_when_nobody_holds_it() {
        let flights = Arc::new(LayerFlights::default());
        let d = Sha256Digest::of(b"layer");
        let first = flights.enter(d).await;
        let waiter = {
            let flights = Arc::clone(&flights);
            tokio::spawn(async move { flights.enter(d).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a second download of the layer did not wait");
        drop(first);
        let second = waiter.await.unwrap();
        assert_eq!(flights.len(), 1);
        drop(second);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_wait_given_up_leaves_no_gate_behind() {
        let flights = Arc::new(LayerFlights::default());
        let d = Sha256Digest::of(b"layer");
        let first = flights.enter(d).await;
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(20), flights.enter(d)).await;
        assert!(gave_up.is_err(), "the second download did not wait");
        assert_eq!(flights.len(), 1);
        drop(first);
        assert_eq!(flights.len(), 0);
        let again = flights.enter(d).await;
        drop(again);
        assert_eq!(flights.len(), 0);
    }
}

//! Live sandbox events for server-sent-event subscribers: one broadcast channel per sandbox that
//! has listeners, plus one for every change (list views).

use std::collections::HashMap;
use std::sync::Mutex;

use sandpit_types::SandboxId;
use sandpit_types::api::SandboxEventView;
use tokio::sync::broadcast;

const CAPACITY: usize = 256;

/// Fans out sandbox events.
#[derive(Debug)]
pub struct EventHub {
    per_sandbox: Mutex<HashMap<SandboxId, broadcast::Sender<SandboxEventView>>>,
    all: broadcast::Sender<(SandboxId, SandboxEventView)>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self { per_sandbox: Mutex::new(HashMap::new()), all: broadcast::channel(CAPACITY * 4).0 }
    }
}

impl EventHub {
    /// Publishes an event (already stored).
    pub fn publish(&self, id: &SandboxId, event: &SandboxEventView) {
        let _ = self.all.send((*id, event.clone()));
        let mut map = self.per_sandbox.lock().unwrap_or_else(|p| p.into_inner());
        // A failed send means nobody listens any more.
        if let Some(tx) = map.get(id)
            && tx.send(event.clone()).is_err()
        {
            map.remove(id);
        }
    }

    /// Subscribes to one sandbox's events.
    pub fn subscribe(&self, id: &SandboxId) -> broadcast::Receiver<SandboxEventView> {
        let mut map = self.per_sandbox.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(*id).or_insert_with(|| broadcast::channel(CAPACITY).0).subscribe()
    }

    /// Subscribes to every sandbox's events.
    pub fn subscribe_all(&self) -> broadcast::Receiver<(SandboxId, SandboxEventView)> {
        self.all.subscribe()
    }
}

//! The connections that are clients, not replicas, so `CLIENT KILL TYPE normal|pubsub` (which
//! Sentinel sends in every re-pointing transaction) closes them. A connection leaves this
//! registry when it becomes a replica session: replica links are never killed by a command.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Which clients a `CLIENT KILL TYPE` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    PubSub,
}

struct Entry {
    kind: Kind,
    close: CancellationToken,
}

#[derive(Default)]
pub struct Clients {
    map: Mutex<BTreeMap<u64, Entry>>,
}

/// A client's place in the registry; dropping it leaves.
pub struct Registered {
    clients: Arc<Clients>,
    id: u64,
    /// Cancelled when the client is to be closed (CLIENT KILL, or a subscriber too slow).
    pub close: CancellationToken,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.id);
    }
}

impl Registered {
    /// The client subscribed to something (or left subscribed mode).
    pub fn set_kind(&self, kind: Kind) {
        if let Some(e) = self.clients.lock().get_mut(&self.id) {
            e.kind = kind;
        }
    }
}

impl Clients {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn join(self: &Arc<Clients>, id: u64) -> Registered {
        let close = CancellationToken::new();
        self.lock().insert(
            id,
            Entry {
                kind: Kind::Normal,
                close: close.clone(),
            },
        );
        Registered {
            clients: self.clone(),
            id,
            close,
        }
    }

    /// Closes every client of `kind` but `except` (Redis' default `SKIPME yes`); returns how
    /// many.
    pub fn kill(&self, kind: Kind, except: Option<u64>) -> usize {
        let map = self.lock();
        let doomed = map
            .iter()
            .filter(|(id, e)| e.kind == kind && Some(**id) != except);
        doomed.map(|(_, e)| e.close.cancel()).count()
    }

    /// Closes the client `id` if it is a client (not a replica); returns whether it was.
    pub fn kill_id(&self, id: u64) -> bool {
        self.lock().get(&id).map(|e| e.close.cancel()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_by_type_skips_the_caller_and_those_who_left() {
        let clients = Arc::new(Clients::default());
        let me = clients.join(1);
        let other = clients.join(2);
        let sub = clients.join(3);
        sub.set_kind(Kind::PubSub);
        let gone = clients.join(4);
        drop(gone);
        assert_eq!(clients.kill(Kind::Normal, Some(1)), 1);
        assert!(other.close.is_cancelled() && !me.close.is_cancelled());
        assert!(!sub.close.is_cancelled());
        assert_eq!(clients.kill(Kind::PubSub, Some(1)), 1);
        assert!(sub.close.is_cancelled());
        assert!(!clients.kill_id(4));
    }
}

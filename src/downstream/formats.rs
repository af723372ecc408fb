//! Replicas that cannot load the snapshot's format. A Valkey replica says its version
//! (`REPLCONF version`); any other is recognised by the pattern it shows: it drops the
//! connection right after the snapshot, without ever acknowledging, again and again. Such a
//! replica is named in the log, in INFO and in metrics, and its full syncs are backed off
//! (it gets `-NOMASTERLINK` with the reason, which its own log shows) instead of being sent a
//! snapshot it will throw away every second.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::compat::requirement;

/// Drops right after the snapshot before a replica is taken as unable to load it.
const STRIKES: u32 = 2;
/// A drop this soon after the snapshot, without an ACK, counts as a strike.
pub const DROP_WINDOW: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Incompatible {
    pub signature: String,
    pub strikes: u32,
    until: Instant,
}

#[derive(Default)]
pub struct Formats {
    replicas: Mutex<BTreeMap<String, Incompatible>>,
}

impl Formats {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Incompatible>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why `replica` gets no full sync now, if it is backed off.
    pub fn refusal(&self, replica: &str) -> Option<String> {
        let all = self.lock();
        let r = all
            .get(replica)
            .filter(|r| r.strikes >= STRIKES && Instant::now() < r.until)?;
        Some(format!(
            "NOMASTERLINK replica-relay: this replica could not load the snapshot ({}; it needs {}); next full sync in {} s",
            r.signature,
            requirement(&r.signature),
            r.until.saturating_duration_since(Instant::now()).as_secs()
        ))
    }

    /// The replica dropped right after a snapshot in `signature` without acknowledging it.
    pub fn strike(&self, replica: &str, signature: &str) {
        let mut all = self.lock();
        let r = all.entry(replica.to_string()).or_insert(Incompatible {
            signature: signature.to_string(),
            strikes: 0,
            until: Instant::now(),
        });
        r.strikes += 1;
        r.signature = signature.to_string();
        if r.strikes >= STRIKES {
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << (r.strikes - STRIKES).min(5))
                .min(MAX_BACKOFF);
            r.until = Instant::now() + backoff;
            warn!(
                "Replica {replica} dropped the connection right after the snapshot {} times: it cannot load RDB format {signature}, which needs {}. Upgrade the replica; next full sync to it in {} s",
                r.strikes,
                requirement(signature),
                backoff.as_secs()
            );
        }
    }

    /// A Valkey replica that announced a version too old for the snapshot: known at once.
    pub fn known_incompatible(&self, replica: &str, signature: &str) {
        let mut all = self.lock();
        let first = !all.contains_key(replica);
        all.insert(
            replica.to_string(),
            Incompatible {
                signature: signature.to_string(),
                strikes: STRIKES,
                until: Instant::now() + FIRST_BACKOFF,
            },
        );
        if first {
            warn!(
                "Replica {replica} announced a Valkey version that cannot load RDB format {signature}, which needs {}",
                requirement(signature)
            );
        }
    }

    /// The replica loaded a snapshot: whatever was recorded no longer holds.
    pub fn clear(&self, replica: &str) {
        self.lock().remove(replica);
    }

    /// Replicas taken as unable to load the snapshot.
    pub fn flagged(&self) -> Vec<(String, Incompatible)> {
        let all = self.lock();
        all.iter()
            .filter(|(_, r)| r.strikes >= STRIKES)
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_drops_back_off_and_a_good_sync_clears() {
        let f = Formats::default();
        f.strike("r:1", "REDIS0012");
        assert_eq!(f.refusal("r:1"), None, "one drop may be anything");
        f.strike("r:1", "REDIS0012");
        let why = f.refusal("r:1").unwrap();
        assert!(
            why.starts_with("NOMASTERLINK") && why.contains("Redis 7.4"),
            "{why}"
        );
        assert_eq!(f.flagged().len(), 1);
        f.clear("r:1");
        assert_eq!(f.refusal("r:1"), None);
    }
}

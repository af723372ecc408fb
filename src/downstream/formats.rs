//! Replicas that cannot load the snapshot's format. A Valkey replica says its version
//! (`REPLCONF version`); any other is recognised by the pattern it shows: it drops the
//! connection right after the snapshot, without ever acknowledging, again and again. Such a
//! replica is named in the log, in INFO and in metrics.
//!
//! What is recorded must never let one client deny service to another, and a wrong guess must
//! cost a real replica seconds, not minutes:
//! - a Valkey replica that announces a version too old is refused on that connection alone, by
//!   its own word; nothing is recorded against a name for it;
//! - the drop-after-snapshot evidence is recorded against the peer's own IP address (which TCP
//!   does not let another host claim) and the listening port it announced, only for
//!   connections that look like real replicas (PSYNC with a listening port, not `rdb-only`);
//! - a replica flagged by that evidence waits a few seconds before its next full sync, on its
//!   own connection, and then gets it: nothing is refused on the evidence, so however often
//!   another client strikes, a real replica is delayed by seconds at most. A full sync from
//!   the relay costs the master nothing, so a long back-off would protect little;
//! - the record is bounded in size, oldest dropped first.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::compat::requirement;

/// Drops right after the snapshot before a replica is taken as unable to load it.
const STRIKES: u32 = 2;
/// A drop this soon after the snapshot, without an ACK, counts as a strike.
pub const DROP_WINDOW: Duration = Duration::from_secs(10);
/// The wait before the next full sync of a replica flagged by the evidence.
pub const BACKOFF: Duration = Duration::from_secs(5);
/// Replicas remembered at once.
const TRACKED: usize = 1024;

#[derive(Debug, Clone)]
pub struct Incompatible {
    pub signature: String,
    pub strikes: u32,
    /// True when the replica said so itself (`REPLCONF version`).
    pub announced: bool,
    until: Instant,
    seen: Instant,
}

#[derive(Default)]
pub struct Formats {
    replicas: Mutex<BTreeMap<String, Incompatible>>,
}

impl Formats {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Incompatible>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long the replica at `key` (peer IP and listening port) waits before its next full
    /// sync, and why: at most `BACKOFF`, counted from its last strike, whatever others do.
    pub fn delay(&self, key: &str) -> Option<(Duration, String)> {
        let all = self.lock();
        let r = all
            .get(key)
            .filter(|r| r.strikes >= STRIKES && !r.announced)?;
        let wait = r.until.saturating_duration_since(Instant::now());
        let why = format!(
            "it dropped the last {} snapshots without loading them ({}; it needs {})",
            r.strikes,
            r.signature,
            requirement(&r.signature)
        );
        (!wait.is_zero()).then_some((wait, why))
    }

    /// The replica at `key` dropped right after a snapshot in `signature` without acknowledging.
    pub fn strike(&self, key: &str, signature: &str) {
        let mut all = self.lock();
        let now = Instant::now();
        let r = entry(&mut all, key, signature);
        r.strikes += 1;
        r.signature = signature.to_string();
        r.seen = now;
        if r.strikes >= STRIKES {
            r.until = now + BACKOFF;
            warn!(
                "Replica {key} dropped the connection right after the snapshot {} times: it most likely cannot load RDB format {signature}, which needs {}. Upgrade the replica; next full sync to it in {} s",
                r.strikes,
                requirement(signature),
                BACKOFF.as_secs()
            );
        }
    }

    /// A Valkey replica announced a version too old for the snapshot: it is refused on its own
    /// connection; this only names it.
    pub fn announced_incompatible(&self, key: &str, signature: &str) {
        let mut all = self.lock();
        let first = !all.get(key).is_some_and(|r| r.announced);
        let r = entry(&mut all, key, signature);
        (r.strikes, r.announced, r.seen) = (STRIKES, true, Instant::now());
        r.signature = signature.to_string();
        if first {
            warn!(
                "Replica {key} announced a Valkey version that cannot load RDB format {signature}, which needs {}",
                requirement(signature)
            );
        }
    }

    /// The replica loaded a snapshot: whatever was recorded no longer holds.
    pub fn clear(&self, key: &str) {
        self.lock().remove(key);
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

/// The record of `key`, made room for if it is new.
fn entry<'a>(
    all: &'a mut BTreeMap<String, Incompatible>,
    key: &str,
    signature: &str,
) -> &'a mut Incompatible {
    if !all.contains_key(key) && all.len() >= TRACKED {
        let oldest = all
            .iter()
            .min_by_key(|(_, r)| r.seen)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            all.remove(&k);
        }
    }
    let now = Instant::now();
    all.entry(key.to_string()).or_insert(Incompatible {
        signature: signature.to_string(),
        strikes: 0,
        announced: false,
        until: now,
        seen: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_drops_wait_a_few_seconds_and_a_good_sync_clears() {
        let f = Formats::default();
        f.strike("10.0.0.1:6379", "REDIS0012");
        assert_eq!(f.delay("10.0.0.1:6379"), None, "one drop may be anything");
        f.strike("10.0.0.1:6379", "REDIS0012");
        let (wait, why) = f.delay("10.0.0.1:6379").unwrap();
        assert!(wait <= BACKOFF, "{wait:?}");
        assert!(
            why.contains("REDIS0012") && why.contains("Redis 7.4"),
            "{why}"
        );
        assert_eq!(
            f.delay("10.0.0.2:6379"),
            None,
            "another host is not affected"
        );
        assert_eq!(f.flagged().len(), 1);
        f.clear("10.0.0.1:6379");
        assert_eq!(f.delay("10.0.0.1:6379"), None);
    }

    #[test]
    fn an_announced_version_names_but_never_refuses_by_key() {
        let f = Formats::default();
        f.announced_incompatible("10.0.0.1:6379", "VALKEY080");
        assert_eq!(f.delay("10.0.0.1:6379"), None);
        assert!(f.flagged()[0].1.announced);
    }

    #[test]
    fn the_record_is_bounded() {
        let f = Formats::default();
        for port in 0..TRACKED as u32 + 100 {
            f.strike(&format!("10.0.0.1:{port}"), "REDIS0012");
        }
        assert_eq!(f.lock().len(), TRACKED);
    }
}

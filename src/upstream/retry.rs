//! How long the link waits before its next attempt, by what ended the last ones. A second
//! after most failures, as a Redis replica does; longer and longer after full syncs that failed
//! (each one is a fork on the master) and while the store cannot write (each attempt is a PSYNC
//! the master answers and a link it drops at once). A store that failed resumes as soon as its
//! disk has room again, not when the longest wait ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::info;

use super::failure::{FailureReason, LinkError};
use crate::store::disk_space;

/// Longest wait between full syncs that failed: on the master's side, or whose snapshot was
/// rejected (corrupt, or the disk is full).
const MAX_SYNC_BACKOFF: Duration = Duration::from_secs(60);

/// Longest wait between attempts while the store cannot write.
const MAX_STORE_BACKOFF: Duration = Duration::from_secs(30);

/// Room the store's disk must gain before a store that failed tries again early: less is
/// noise (other files on the disk), not room for the stream.
const ROOM: u64 = 1 << 20;

/// The failures in a row that lengthen the wait.
#[derive(Default)]
pub struct Retry {
    failed_syncs: u32,
    failed_stores: u32,
}

/// The wait before the next attempt.
pub struct Wait {
    delay: Duration,
    why: Why,
}

enum Why {
    Plain,
    FullSync,
    /// The store failed with `free` bytes free on its disk.
    Store {
        free: Option<u64>,
    },
}

impl Retry {
    /// The wait after a link that ended with `error` (or was changed or ended cleanly: `None`).
    pub fn after(&mut self, error: Option<&LinkError>, dir: &Path) -> Wait {
        let reason = error.map(|e| e.reason);
        let sync = error.is_some_and(LinkError::backs_off);
        let store = reason == Some(FailureReason::Store);
        self.failed_syncs = if sync { self.failed_syncs + 1 } else { 0 };
        self.failed_stores = if store { self.failed_stores + 1 } else { 0 };
        if sync {
            Wait::longer(self.failed_syncs, MAX_SYNC_BACKOFF, Why::FullSync)
        } else if store {
            let free = disk_space(dir).map(|(free, _)| free);
            Wait::longer(self.failed_stores, MAX_STORE_BACKOFF, Why::Store { free })
        } else {
            Wait::longer(1, Duration::from_secs(1), Why::Plain)
        }
    }
}

impl Wait {
    /// One second, doubled for each failure in a row after the first, up to `max`.
    fn longer(failures: u32, max: Duration, why: Why) -> Wait {
        let doubled = Duration::from_secs(1) * 2u32.saturating_pow(failures.saturating_sub(1));
        Wait {
            delay: doubled.min(max),
            why,
        }
    }

    /// What the log adds to the failure.
    pub fn says(&self) -> String {
        let secs = self.delay.as_secs();
        match self.why {
            Why::Plain => String::new(),
            Why::FullSync => format!("; next full sync attempt in {secs} s"),
            Why::Store { .. } => format!(
                "; next attempt in {secs} s, or as soon as the store's disk has {} MB more room",
                ROOM >> 20
            ),
        }
    }

    /// Ends when the wait has passed, or when a store that failed has room again.
    pub async fn done(self, dir: &Path) {
        let sleep = tokio::time::sleep(self.delay);
        match self.why {
            Why::Store { free: Some(free) } => tokio::select! {
                _ = sleep => {}
                _ = room(dir.to_path_buf(), free + ROOM) => {}
            },
            _ => sleep.await,
        }
    }
}

/// Ends once the disk holding `dir` has `wanted` bytes free: looked at every second, off the
/// runtime (a disk that fills may also hang).
async fn room(dir: PathBuf, wanted: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let d = dir.clone();
        let free = tokio::task::spawn_blocking(move || disk_space(&d))
            .await
            .ok()
            .flatten()
            .map(|(free, _)| free);
        if let Some(free) = free.filter(|&f| f >= wanted) {
            info!(
                "The store's disk has room again ({} MB free): resuming the link",
                free >> 20
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::failure::{Failure, during};
    use super::*;

    #[test]
    fn waits_double_up_to_their_bound_and_reset_after_a_success() {
        let dir = std::env::temp_dir();
        let store = during(FailureReason::Link)(Failure::Store("No space left on device".into()));
        let mut retry = Retry::default();
        let waits: Vec<u64> = (0..7)
            .map(|_| retry.after(Some(&store), &dir).delay.as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry.after(None, &dir).delay.as_secs(), 1);
        assert_eq!(retry.after(Some(&store), &dir).delay.as_secs(), 1);
    }
}

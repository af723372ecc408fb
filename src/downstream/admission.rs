//! Full-sync admission and pacing: at most `--max-full-syncs` snapshots are sent at once, the
//! others wait in arrival order with a newline a second (as replicas wait while a master runs
//! BGSAVE), and the bytes of full syncs are paced to `--full-sync-rate` across all of them and
//! `--replica-rate` for each, so that a storm of resyncs after an outage cannot take the link
//! from the replicas that already stream. Streaming replicas are never paced.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The relay's full syncs: the slots, who waits for one, and the shared pace.
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    waiting: AtomicUsize,
    shared: Option<Pace>,
    per_replica: Option<u64>,
}

impl Admission {
    pub fn new(max: usize, rate: Option<u64>, per_replica: Option<u64>) -> Admission {
        let max = max.max(1);
        Admission {
            slots: Arc::new(Semaphore::new(max)),
            max,
            waiting: AtomicUsize::new(0),
            shared: rate.map(Pace::new),
            per_replica,
        }
    }

    /// A slot at once, if one is free.
    pub fn try_admit(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok().map(Slot::new)
    }

    /// Waits for a slot, in arrival order; counted as waiting meanwhile.
    pub async fn admit(&self) -> Slot {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waited = Waiting(&self.waiting);
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Slot::new(permit)
    }

    pub fn running(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Waits until `n` more bytes of a full sync may go, under both rates; `own` is the
    /// replica's pace, from `Slot`.
    pub async fn pace(&self, slot: &Slot, n: u64) {
        let shared = self.shared.as_ref().map(|p| p.reserve(n));
        let own = self.per_replica.map(|r| slot.own.reserve_at(r, n));
        if let Some(at) = shared.into_iter().chain(own).max() {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// A running full sync's slot; frees it when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    own: Schedule,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            _permit: permit,
            own: Schedule::default(),
        }
    }
}

/// Counts a waiter out when its wait ends, however it ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A byte rate shared by many senders.
struct Pace {
    rate: u64,
    schedule: Schedule,
}

impl Pace {
    fn new(rate: u64) -> Pace {
        Pace {
            rate: rate.max(1),
            schedule: Schedule::default(),
        }
    }

    fn reserve(&self, n: u64) -> Instant {
        self.schedule.reserve_at(self.rate, n)
    }
}

/// When the next byte may go, at a rate (the virtual-scheduling form of a token bucket): each
/// reservation of `n` bytes moves it on by n/rate, from now if it fell behind, so an idle spell
/// earns no burst. The bytes reserved may go when the reservation starts.
#[derive(Default)]
struct Schedule {
    next: Mutex<Option<Instant>>,
}

impl Schedule {
    fn reserve_at(&self, rate: u64, n: u64) -> Instant {
        self.reserve_from(Instant::now(), rate, n)
    }

    fn reserve_from(&self, now: Instant, rate: u64, n: u64) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let start = next.map_or(now, |t| t.max(now));
        *next = Some(start + Duration::from_secs_f64(n as f64 / rate.max(1) as f64));
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_follow_the_rate_without_a_burst() {
        let s = Schedule::default();
        let t0 = Instant::now();
        assert_eq!(s.reserve_from(t0, 1000, 500), t0);
        let ms = Duration::from_millis;
        assert_eq!(s.reserve_from(t0, 1000, 500), t0 + ms(500));
        assert_eq!(s.reserve_from(t0 + ms(100), 1000, 1000), t0 + ms(1000));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            s.reserve_from(later, 1000, 1),
            later,
            "idle time earns no burst"
        );
    }

    #[tokio::test]
    async fn slots_are_bounded_and_waiters_counted() {
        let a = Arc::new(Admission::new(1, None, None));
        let first = a.try_admit().expect("a free slot");
        assert!(a.try_admit().is_none());
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.admit().await }
        });
        while a.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!((a.running(), a.waiting()), (1, 1));
        drop(first);
        let second = waiter.await.unwrap();
        assert_eq!((a.running(), a.waiting()), (1, 0));
        drop(second);
        assert_eq!(a.running(), 0);
    }
}

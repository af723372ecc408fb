//! Full-sync admission and pacing: at most `--max-full-syncs` snapshots are sent at once, the
//! others wait in arrival order with a newline a second (as replicas wait while a master runs
//! BGSAVE), and the bytes of full syncs are paced to `--full-sync-rate` across all of them and
//! `--replica-rate` for each, so that a storm of resyncs after an outage cannot take the link
//! from the replicas that already stream. Streaming replicas are never paced. A replica that
//! stops taking bytes for `STALLED` gives its slot up, so what the limit counts is full syncs
//! that move, and a client that asks for one and never reads cannot hold a slot.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a piece of a full sync may wait in a write before its slot goes to the next one.
pub const STALLED: Duration = Duration::from_secs(10);

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
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit))
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
        self.slot(permit)
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            permit: Mutex::new(Some(permit)),
            own: self.per_replica.map(Pace::new),
        }
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

    /// Waits until `n` more bytes of the full sync holding `slot` may go, under both rates.
    pub async fn pace(&self, slot: &Slot, n: u64) {
        let at = [self.shared.as_ref(), slot.own.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| p.reserve(n))
            .max();
        if let Some(at) = at {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// A running full sync's slot, freed when it is dropped or when its replica stalls.
pub struct Slot {
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// The replica's own pace (`--replica-rate`).
    own: Option<Pace>,
}

impl Slot {
    /// The replica stopped taking bytes: its slot goes to the next one waiting, so a client
    /// that asks for a full sync and never reads holds no slot. The sync itself goes on.
    /// Returns whether the slot was still held.
    pub fn release(&self) -> bool {
        let mut permit = self.permit.lock().unwrap_or_else(|e| e.into_inner());
        permit.take().is_some()
    }
}

/// Counts a waiter out when its wait ends, however it ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A byte rate, for all full syncs or for one.
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
        self.schedule.reserve_from(Instant::now(), self.rate, n)
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

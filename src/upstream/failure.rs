//! Why the upstream link failed: each failure typed where it happens (`Failure`, the wire's
//! `WireError`), sorted into the reason metrics count and back-off follows (`FailureReason`),
//! and said in the master's or the system's own words (`LinkError`).

use super::wire::WireError;
use crate::instruments::Label;

/// Why the upstream link failed, for `upstream_sync_failures_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    Connect,
    Auth,
    Psync,
    FullSync,
    SnapshotRejected,
    Timeout,
    Store,
    Link,
    /// A compressed link's frame arrived damaged (`--upstream-compression`).
    CorruptFrame,
    /// Not a failure of the link: the empty-master guard held the relay back.
    EmptyMaster,
}

impl Label for FailureReason {
    const NAME: &'static str = "reason";
    const ALL: &'static [FailureReason] = &[
        FailureReason::Connect,
        FailureReason::Auth,
        FailureReason::Psync,
        FailureReason::FullSync,
        FailureReason::SnapshotRejected,
        FailureReason::Timeout,
        FailureReason::Store,
        FailureReason::Link,
        FailureReason::CorruptFrame,
        FailureReason::EmptyMaster,
    ];

    fn value(self) -> &'static str {
        match self {
            FailureReason::Connect => "connect",
            FailureReason::Auth => "auth",
            FailureReason::Psync => "psync",
            FailureReason::FullSync => "full_sync",
            FailureReason::SnapshotRejected => "snapshot_rejected",
            FailureReason::Timeout => "timeout",
            FailureReason::Store => "store",
            FailureReason::Link => "link",
            FailureReason::CorruptFrame => "corrupt_frame",
            FailureReason::EmptyMaster => "empty_master",
        }
    }
}

/// What ended a phase of the link.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Wire(#[from] WireError),
    /// No data nor PING from the master within `repl-timeout`.
    #[error("MASTER timeout: no data nor PING received...")]
    Timeout,
    /// The empty-master guard: the master holds no keys and has another history than the one
    /// the relay serves.
    #[error("{0}")]
    EmptyMaster(String),
    /// The store could not keep what the master sent.
    #[error("Dropping the link with master: the store could not keep the stream ({0})")]
    Store(String),
    /// A full sync whose snapshot failed verification or could not be stored.
    #[error("{0:#}")]
    SnapshotRejected(anyhow::Error),
    /// The store's writer and the rest, in their own words.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Failure {
    /// The reason of a failure in `phase`: what the failure is says more than the phase does,
    /// except that whatever ends a full sync the master started (a timeout too: its BGSAVE may
    /// be slow) is a failed full sync, which backs off.
    fn reason(&self, phase: FailureReason) -> FailureReason {
        match self {
            Failure::EmptyMaster(_) => FailureReason::EmptyMaster,
            Failure::SnapshotRejected(_) => FailureReason::SnapshotRejected,
            // Damaged on the way, not refused by the master: nothing of it was stored.
            Failure::Wire(w) if w.corrupt() => FailureReason::CorruptFrame,
            _ if phase == FailureReason::FullSync => FailureReason::FullSync,
            Failure::Wire(WireError::Auth(_)) => FailureReason::Auth,
            Failure::Timeout | Failure::Wire(WireError::TimedOut) => FailureReason::Timeout,
            Failure::Store(_) => FailureReason::Store,
            _ => phase,
        }
    }

    fn closed(&self) -> bool {
        matches!(self, Failure::Wire(w) if w.closed())
    }
}

/// Why the link ended: the reason, for the metrics and the back-off, and the failure in the
/// master's or the system's own words.
#[derive(Debug, thiserror::Error)]
#[error("{}{error:#}{}", prefix(*.reason), hint(*.reason, .error))]
pub struct LinkError {
    pub reason: FailureReason,
    error: Failure,
}

impl LinkError {
    /// Full syncs that failed wait longer and longer before the next attempt: each attempt is
    /// a fork on the master.
    pub fn backs_off(&self) -> bool {
        matches!(
            self.reason,
            FailureReason::FullSync | FailureReason::SnapshotRejected
        )
    }
}

/// Sorts a failure of one phase of the link into its reason.
pub fn during(phase: FailureReason) -> impl FnOnce(Failure) -> LinkError {
    move |error| LinkError {
        reason: error.reason(phase),
        error,
    }
}

fn prefix(reason: FailureReason) -> &'static str {
    match reason {
        FailureReason::FullSync => "Full sync failed on the master's side: ",
        _ => "",
    }
}

/// The master gives no reason on the wire when its BGSAVE fails: it just closes the link.
fn hint(reason: FailureReason, e: &Failure) -> &'static str {
    if reason == FailureReason::FullSync && e.closed() {
        " (a master closes the link this way when its BGSAVE for the replica fails; its log says why)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_sorted_by_what_they_are_then_by_phase() {
        let sorted = |phase, e: Failure| during(phase)(e).reason;
        let auth = WireError::Auth("-WRONGPASS".into()).into();
        assert_eq!(sorted(FailureReason::Link, auth), FailureReason::Auth);
        assert_eq!(
            sorted(FailureReason::Link, Failure::Timeout),
            FailureReason::Timeout
        );
        assert_eq!(
            sorted(FailureReason::Link, Failure::Store("ENOSPC".into())),
            FailureReason::Store
        );
        let rejected = Failure::SnapshotRejected(anyhow::anyhow!("bad CRC"));
        let e = during(FailureReason::FullSync)(rejected);
        assert_eq!(e.reason, FailureReason::SnapshotRejected);
        assert!(e.backs_off());
        let slow = during(FailureReason::FullSync)(WireError::TimedOut.into());
        assert_eq!(
            slow.reason,
            FailureReason::FullSync,
            "a slow BGSAVE backs off"
        );
        let closed = WireError::Closed.truncating("the snapshot ended before its EOF mark".into());
        let text = during(FailureReason::FullSync)(closed.into()).to_string();
        assert!(
            text.starts_with("Full sync failed on the master's side: the snapshot ended before its EOF mark: Connection with master lost.")
                && text.contains("its log says why"),
            "{text}"
        );
        let refused = WireError::Connect(anyhow::anyhow!("Connection refused"));
        let e = during(FailureReason::Connect)(refused.into());
        assert_eq!((e.reason, e.backs_off()), (FailureReason::Connect, false));
        let damaged = WireError::Corrupt("the checksum of its bytes does not match".into())
            .truncating("the snapshot ended with 10 of its announced bytes missing".into());
        let e = during(FailureReason::FullSync)(damaged.into());
        assert_eq!(
            (e.reason, e.backs_off()),
            (FailureReason::CorruptFrame, false)
        );
        assert!(!e.to_string().contains("master's side"), "{e}");
        let writer = anyhow::anyhow!("the store writer has stopped");
        assert_eq!(
            sorted(FailureReason::Link, writer.into()),
            FailureReason::Link
        );
    }
}

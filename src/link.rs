//! The upstream link as the other rooms see it, and how they steer it. The upstream room owns
//! the link's status (`LinkReporter`, the one sender); downstream and observe read it
//! (`LinkWatch`). Which master to follow is set through `LinkControl` (REPLICAOF, and later
//! Sentinel), and the upstream room follows it. Neither room imports the other: both hold
//! these handles, made by the relay when it wires them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use tracing::info;

use crate::config::MasterAddr;
use crate::instruments::{Collectors, Label, Labelled};

/// The upstream link's state, named as Redis' ROLE names a replica's `repl_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No master configured (REPLICAOF NO ONE).
    None,
    /// Waiting to retry.
    Connect,
    Connecting,
    Handshake,
    /// Receiving the snapshot.
    Transfer,
    Connected,
}

impl LinkState {
    pub const ALL: [LinkState; 6] = [
        LinkState::None,
        LinkState::Connect,
        LinkState::Connecting,
        LinkState::Handshake,
        LinkState::Transfer,
        LinkState::Connected,
    ];

    pub fn role_name(self) -> &'static str {
        match self {
            LinkState::None => "none",
            LinkState::Connect => "connect",
            LinkState::Connecting => "connecting",
            LinkState::Handshake => "handshake",
            LinkState::Transfer => "sync",
            LinkState::Connected => "connected",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LinkStatus {
    pub state: LinkState,
    pub last_io: Option<Instant>,
    /// `None` until the link has been up once, like Redis' repl_down_since = 0.
    pub down_since: Option<Instant>,
    /// Size of the snapshot being received, when the master announced it (`$<len>`).
    pub sync_total: Option<u64>,
    /// PSYNC was sent without a snapshot, or +FULLRESYNC received: a snapshot is on its way and
    /// replicas asking now should wait for it rather than be refused.
    pub snapshot_pending: bool,
    /// A snapshot refresh was asked of the master and has not fully arrived yet: the master may
    /// still be waiting out its `repl-diskless-sync-delay` before it forks.
    pub refresh_requested: bool,
    /// The master's own `master_repl_offset`, as last read from its INFO, and when.
    pub master_offset: Option<u64>,
    pub master_offset_read: Option<Instant>,
    /// The master's `redis_version`, from its INFO at the last handshake.
    pub master_version: Option<String>,
    /// The master's `valkey_version` when it is Valkey.
    pub master_valkey: Option<String>,
    /// Whether the master's INFO said `role:slave` when last read: the relay follows a replica.
    pub master_is_replica: bool,
    /// The master's keyspace is empty while its history is not the relay's: the relay keeps
    /// what it serves (`--empty-master-guard`).
    pub empty_master_held: bool,
    /// The master is a relay that compresses the link (`--upstream-compression`).
    pub compressed: bool,
}

impl Default for LinkStatus {
    fn default() -> LinkStatus {
        LinkStatus {
            state: LinkState::None,
            last_io: None,
            down_since: None,
            sync_total: None,
            snapshot_pending: false,
            refresh_requested: false,
            master_offset: None,
            master_offset_read: None,
            master_version: None,
            master_valkey: None,
            master_is_replica: false,
            empty_master_held: false,
            compressed: false,
        }
    }
}

impl LinkStatus {
    /// The master's offset if it was read within `max_age`; `None` when it is unknown (the
    /// master cannot be reached, or is not read at all): never a stale number that would look
    /// like no lag.
    pub fn known_master_offset(&self, max_age: Option<std::time::Duration>) -> Option<u64> {
        let fresh = self
            .master_offset_read
            .zip(max_age)
            .is_some_and(|(at, max)| at.elapsed() <= max);
        self.master_offset.filter(|_| fresh)
    }

    /// How long since the last byte from the master, while the link is up; `None` while it is
    /// down (Redis' `master_last_io_seconds_ago`, -1 then; the time down is `down_since`).
    /// INFO, `/status` and `/metrics` all show this one value.
    pub fn last_io_age(&self) -> Option<std::time::Duration> {
        self.last_io
            .filter(|_| self.state == LinkState::Connected)
            .map(|t| t.elapsed())
    }
}

/// The sending side of the link's status: the upstream room's alone.
pub struct LinkReporter(watch::Sender<LinkStatus>);

/// The reading side of the link's status.
#[derive(Clone)]
pub struct LinkWatch(watch::Receiver<LinkStatus>);

/// A new link status, its reporter and a watch on it.
pub fn status() -> (LinkReporter, LinkWatch) {
    let (tx, rx) = watch::channel(LinkStatus::default());
    (LinkReporter(tx), LinkWatch(rx))
}

impl LinkReporter {
    pub fn update(&self, f: impl FnOnce(&mut LinkStatus)) {
        self.0.send_modify(f);
    }

    /// Moves to `state`, noting when a connected link went down.
    pub fn set_state(&self, state: LinkState) {
        self.update(|l| {
            if l.state == LinkState::Connected && state != LinkState::Connected {
                l.down_since = Some(Instant::now());
            }
            l.state = state;
        });
    }

    /// The status as the reporter last set it.
    pub fn status(&self) -> LinkStatus {
        self.0.borrow().clone()
    }
}

impl LinkWatch {
    pub fn status(&self) -> LinkStatus {
        self.0.borrow().clone()
    }
}

/// Why the relay moved to another master, for the log and `master_changes_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repoint {
    /// `REPLICAOF` from a client, outside a transaction.
    Operator,
    /// `REPLICAOF` inside `MULTI` … `EXEC`: how Sentinel re-points a replica after a failover
    /// (and in `+fix-slave-config`).
    Transaction,
    /// A Sentinel announced a failover (`+switch-master`).
    SwitchMaster,
    /// A Sentinel named the master (`SENTINEL get-master-addr-by-name`) at start or after a
    /// change the relay did not see announced.
    Sentinel,
    /// The cluster shard the relay follows has another primary (a failover).
    Cluster,
}

impl Label for Repoint {
    const NAME: &'static str = "reason";
    const ALL: &'static [Repoint] = &[
        Repoint::Operator,
        Repoint::Transaction,
        Repoint::SwitchMaster,
        Repoint::Sentinel,
        Repoint::Cluster,
    ];

    fn value(self) -> &'static str {
        match self {
            Repoint::Operator => "operator",
            Repoint::Transaction => "transaction",
            Repoint::SwitchMaster => "switch_master",
            Repoint::Sentinel => "sentinel",
            Repoint::Cluster => "cluster",
        }
    }
}

/// The last re-point, for INFO and `/status`.
#[derive(Debug, Clone)]
pub struct Change {
    pub from: Option<MasterAddr>,
    pub to: Option<MasterAddr>,
    pub reason: Repoint,
    pub at: Instant,
}

/// Which master the relay follows.
#[derive(Clone)]
pub struct LinkControl {
    master: Arc<watch::Sender<Option<MasterAddr>>>,
    /// An operator's REPLICAOF named the master followed already: take its history even if it
    /// is empty (past the empty-master guard).
    accept_history: Arc<AtomicBool>,
    /// A backup asked for a fresh snapshot (a refresh now).
    snapshot_wanted: Arc<AtomicBool>,
    last: Arc<Mutex<Option<Change>>>,
    changes: Labelled<Repoint>,
}

impl LinkControl {
    pub fn new(master: Option<MasterAddr>) -> LinkControl {
        LinkControl {
            master: Arc::new(watch::Sender::new(master)),
            accept_history: Arc::default(),
            snapshot_wanted: Arc::default(),
            last: Arc::default(),
            changes: Labelled::new(
                "master_changes_total",
                "Times the relay moved to another master, by reason.",
            ),
        }
    }

    pub fn master(&self) -> Option<MasterAddr> {
        self.master.borrow().clone()
    }

    /// Follows `master` from now on (`None`: no master), logging the old and the new master and
    /// `why` (who asked, in words); returns whether it changed anything.
    pub fn set(&self, master: Option<MasterAddr>, reason: Repoint, why: &str) -> bool {
        let show = |m: &Option<MasterAddr>| match m {
            Some(m) => m.to_string(),
            None => "no master".to_string(),
        };
        let mut changed = None;
        self.master.send_if_modified(|current| {
            if *current == master {
                return false;
            }
            changed = Some(std::mem::replace(current, master.clone()));
            true
        });
        let Some(from) = changed else {
            return false;
        };
        info!(
            "Master changed from {} to {} ({}: {why})",
            show(&from),
            show(&master),
            reason.value()
        );
        self.changes.inc(reason);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Change {
            from,
            to: master,
            reason,
            at: Instant::now(),
        });
        true
    }

    /// The operator asked again for the master followed: its history is taken even if empty.
    pub fn accept_history(&self) {
        self.accept_history.store(true, Ordering::Relaxed);
    }

    /// Whether the operator asked for that since the last call.
    pub fn take_accepted_history(&self) -> bool {
        self.accept_history.swap(false, Ordering::Relaxed)
    }

    /// A backup wants a fresh snapshot from the master.
    pub fn request_snapshot(&self) {
        self.snapshot_wanted.store(true, Ordering::Relaxed);
    }

    /// Whether one was asked for since the last call.
    pub fn take_snapshot_request(&self) -> bool {
        self.snapshot_wanted.swap(false, Ordering::Relaxed)
    }

    pub fn last_change(&self) -> Option<Change> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Told of every change.
    pub fn subscribe(&self) -> watch::Receiver<Option<MasterAddr>> {
        self.master.subscribe()
    }
}

impl Collectors for LinkControl {
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![self.changes.collector()]
    }
}

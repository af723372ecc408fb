//! The upstream link as the other rooms see it, and how they steer it. The upstream room owns
//! the link's status (`LinkReporter`, the one sender); downstream and observe read it
//! (`LinkWatch`). Which master to follow is set through `LinkControl` (REPLICAOF, and later
//! Sentinel), and the upstream room follows it. Neither room imports the other: both hold
//! these handles, made by the relay when it wires them.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::config::MasterAddr;

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
    /// The master's own `master_repl_offset`, as last read from its INFO.
    pub master_offset: Option<u64>,
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
        }
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
}

impl LinkWatch {
    pub fn status(&self) -> LinkStatus {
        self.0.borrow().clone()
    }
}

/// Which master the relay follows.
#[derive(Clone)]
pub struct LinkControl(Arc<watch::Sender<Option<MasterAddr>>>);

impl LinkControl {
    pub fn new(master: Option<MasterAddr>) -> LinkControl {
        LinkControl(Arc::new(watch::Sender::new(master)))
    }

    pub fn master(&self) -> Option<MasterAddr> {
        self.0.borrow().clone()
    }

    /// Follows `master` from now on (`None`: no master); returns the one followed before.
    pub fn set(&self, master: Option<MasterAddr>) -> Option<MasterAddr> {
        self.0.send_replace(master)
    }

    /// Told of every change.
    pub fn subscribe(&self) -> watch::Receiver<Option<MasterAddr>> {
        self.0.subscribe()
    }
}

//! What the upstream room knows beyond the link itself, for observe to show: where fresh
//! snapshots come from and the compactor's last run, and what the Sentinels said. The room
//! owns each behind a `Shown` handle; observe holds clones and only reads.

use std::sync::{Arc, Mutex};

use crate::config::MasterAddr;

/// State one room writes and others read, whole, at a moment.
#[derive(Debug, Default)]
pub struct Shown<T>(Arc<Mutex<T>>);

impl<T> Clone for Shown<T> {
    fn clone(&self) -> Self {
        Shown(self.0.clone())
    }
}

impl<T: Clone> Shown<T> {
    pub fn get(&self) -> T {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut T)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Where fresh snapshots come from, and the compactor's last run (`--snapshot-source`).
#[derive(Debug, Clone, Default)]
pub struct CompactorView {
    /// As decided at start; `None` before.
    pub source: Option<crate::config::SnapshotSource>,
    pub origin: SnapshotOrigin,
    /// The server binary of the last run, and its version (`Redis 7.2.4`).
    pub server: Option<String>,
    pub last: Option<CompactorRun>,
}

/// What made the snapshot in service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotOrigin {
    /// It was in service when the relay started.
    #[default]
    Disk,
    Master,
    Compactor,
}

impl SnapshotOrigin {
    pub fn name(self) -> &'static str {
        match self {
            SnapshotOrigin::Disk => "disk",
            SnapshotOrigin::Master => "master",
            SnapshotOrigin::Compactor => "compactor",
        }
    }
}

/// One run of the compactor.
#[derive(Debug, Clone)]
pub struct CompactorRun {
    /// Why it failed; `None` when its snapshot went into service.
    pub error: Option<String>,
    pub duration: std::time::Duration,
    pub bytes: u64,
    pub peak_rss: u64,
}

/// The cluster shard the relay follows (`--cluster-node`), as its nodes said last.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// The shard's id (`CLUSTER MYSHARDID`, Redis 7.2+ and Valkey 8+).
    pub shard_id: Option<String>,
    /// The shard's nodes: the primary first.
    pub nodes: Vec<crate::upstream::cluster::Node>,
    /// The nodes of the whole cluster the relay knows of.
    pub known: usize,
    /// Why the last look at the cluster failed, while none answers.
    pub unreachable: Option<String>,
}

impl ClusterView {
    /// The slots of the shard's primary, as CLUSTER NODES writes them: `0-5460,5462`.
    pub fn slots(&self) -> String {
        let primary = self.nodes.first().filter(|n| n.primary);
        let ranges = primary.iter().flat_map(|p| p.slots.iter());
        let shown: Vec<String> = ranges
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        shown.join(",")
    }
}

/// What the Sentinels (`--sentinel`) told the relay.
#[derive(Debug, Clone, Default)]
pub struct SentinelView {
    /// The Sentinel the relay listens to now, when one answers.
    pub watching: Option<MasterAddr>,
    /// The master the Sentinels named last.
    pub named: Option<MasterAddr>,
    /// Sentinels that did not answer on the last attempt.
    pub unreachable: usize,
}

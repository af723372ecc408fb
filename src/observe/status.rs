//! `/status`: the facts of INFO replication, the store and the replicas, as JSON.

use serde::Serialize;

use super::RelayView;
use super::facts::{Archived, Compression, Facts};
use crate::decode::{SnapshotStats, StreamStats};
use crate::instruments::Label;

#[derive(Serialize)]
pub struct Status {
    role: &'static str,
    ready: bool,
    not_ready: Option<String>,
    master: Option<Master>,
    replid: Option<String>,
    replid2: Option<String>,
    second_repl_offset: Option<i64>,
    master_repl_offset: u64,
    last_master_change: Option<MasterChange>,
    sentinel: Option<Sentinel>,
    cluster: Option<Cluster>,
    empty_master_held: bool,
    store: Store,
    stream: StreamStats,
    compression: Compressions,
    archive: Option<Archived>,
    replicas: Vec<Replica>,
}

/// The compressed links: from an upstream relay, and to the relays behind this one.
#[derive(Serialize)]
struct Compressions {
    upstream: Compression,
    downstream: Compression,
}

/// What the Sentinels said, with `--sentinel`.
#[derive(Serialize)]
struct Sentinel {
    sentinels: Vec<String>,
    master_name: String,
    watching: Option<String>,
    unreachable: usize,
    named_master: Option<String>,
}

/// The cluster shard followed, with `--cluster-node`.
#[derive(Serialize)]
struct Cluster {
    /// `CLUSTER MYSHARDID` of the primary; null before Redis 7.2.
    shard_id: Option<String>,
    /// The primary's slots, as CLUSTER NODES writes them.
    slots: String,
    /// The shard's nodes, the primary first.
    nodes: Vec<ClusterNode>,
    nodes_known: usize,
    /// Why the last look at the cluster failed.
    unreachable: Option<String>,
}

#[derive(Serialize)]
struct ClusterNode {
    id: String,
    addr: String,
    role: &'static str,
    failing: bool,
}

/// The last time the relay moved to another master, and why.
#[derive(Serialize)]
struct MasterChange {
    from: Option<String>,
    to: Option<String>,
    reason: &'static str,
    seconds_ago: u64,
}

#[derive(Serialize)]
struct Master {
    host: String,
    port: u16,
    link_status: &'static str,
    state: &'static str,
    last_io_seconds_ago: Option<u64>,
    link_down_since_seconds: Option<u64>,
    sync_in_progress: bool,
    sync_received_bytes: Option<u64>,
    sync_total_bytes: Option<u64>,
    /// The master's own offset, from its INFO; null while it cannot be read.
    master_offset: Option<u64>,
    /// Null while the master's offset is unknown.
    lag_bytes: Option<u64>,
}

#[derive(Serialize)]
struct Store {
    dir: String,
    snapshot: Option<String>,
    snapshot_offset: Option<u64>,
    snapshot_bytes: Option<u64>,
    snapshot_contents: Option<SnapshotStats>,
    refreshing: bool,
    /// `local` (the compactor) or `master`.
    snapshot_source: &'static str,
    /// What made the snapshot in service: `master`, `compactor`, or `disk` (there at start).
    snapshot_made_by: &'static str,
    /// Snapshots the relay asked of its master since it started: each a fork there.
    master_forks: u64,
    /// Compactor snapshots refused for an identity other than the relay's own log gives.
    compactor_mismatches: u64,
    compactor: Option<CompactorLast>,
    backlog_first_offset: u64,
    backlog_next_offset: u64,
    backlog_disk_bytes: u64,
    restore: Restore,
}

/// The compactor's last run.
#[derive(Serialize)]
struct CompactorLast {
    server: Option<String>,
    ok: bool,
    error: Option<String>,
    duration_seconds: f64,
    bytes: u64,
    peak_rss_bytes: u64,
}

/// What `replica-relay restore` can reach (`--restore-window`).
#[derive(Serialize)]
struct Restore {
    from_offset: u64,
    /// Null until the relay stored bytes after that point.
    from: Option<String>,
    window_seconds: u64,
    configured_seconds: u64,
    points: usize,
    disk_bytes: u64,
    shrunk: bool,
}

#[derive(Serialize)]
struct Replica {
    ip: String,
    port: u16,
    state: &'static str,
    ack_offset: u64,
    lag_bytes: u64,
    ack_age_seconds: f64,
    compressed: bool,
}

impl Status {
    pub fn of(relay: &RelayView) -> Status {
        Status::from_facts(relay, &Facts::gather(relay))
    }

    pub fn from_facts(relay: &RelayView, facts: &Facts) -> Status {
        let state = &facts.store;
        let offset = facts.offset();
        let ident = state.ident.as_ref();
        let not_ready = facts.not_ready();
        let compactor = &facts.compactor;
        Status {
            role: if facts.master.is_some() {
                "slave"
            } else {
                "master"
            },
            ready: not_ready.is_none(),
            not_ready,
            master: master(facts),
            replid: ident.map(|i| i.replid.clone()),
            replid2: ident.map(|i| i.replid2.clone()),
            second_repl_offset: ident.map(|i| i.second_replid_offset),
            master_repl_offset: offset,
            last_master_change: relay.control.last_change().map(|c| MasterChange {
                from: c.from.map(|m| m.to_string()),
                to: c.to.map(|m| m.to_string()),
                reason: c.reason.value(),
                seconds_ago: c.at.elapsed().as_secs(),
            }),
            sentinel: sentinel(relay, facts),
            cluster: cluster(relay, facts),
            empty_master_held: facts.link.empty_master_held,
            store: Store {
                dir: relay.config.dir.display().to_string(),
                snapshot: ident.map(|i| i.snapshot.clone()),
                snapshot_offset: ident.map(|i| i.snapshot_offset),
                snapshot_bytes: ident.map(|i| i.snapshot_size),
                snapshot_contents: facts.snapshot.as_ref().map(|s| (**s).clone()),
                refreshing: facts.refreshing(),
                snapshot_source: compactor.source.map_or("", |s| s.name()),
                snapshot_made_by: compactor.origin.name(),
                master_forks: relay.upstream.master_forks.get(),
                compactor_mismatches: relay.upstream.compactor_mismatches.get(),
                compactor: compactor.last.as_ref().map(|r| CompactorLast {
                    server: compactor.server.clone(),
                    ok: r.error.is_none(),
                    error: r.error.clone(),
                    duration_seconds: r.duration.as_secs_f64(),
                    bytes: r.bytes,
                    peak_rss_bytes: r.peak_rss,
                }),
                backlog_first_offset: state.first,
                backlog_next_offset: state.next,
                backlog_disk_bytes: facts.log_disk_bytes,
                restore: Restore {
                    from_offset: state.restore.from_offset,
                    from: state.restore.from_ms.map(crate::store::utc),
                    window_seconds: facts.restore_window_seconds(),
                    configured_seconds: relay.config.restore_window.map_or(0, |d| d.as_secs()),
                    points: state.restore.kept,
                    disk_bytes: state.restore.disk_bytes,
                    shrunk: state.restore.shrunk,
                },
            },
            stream: facts.stream.clone(),
            compression: Compressions {
                upstream: facts.upstream_compression.clone(),
                downstream: facts.downstream_compression.clone(),
            },
            archive: facts.archive.clone(),
            replicas: replicas(facts),
        }
    }
}

fn master(facts: &Facts) -> Option<Master> {
    let addr = facts.master.clone()?;
    let receiving = facts.store.receiving.as_ref();
    Some(Master {
        host: addr.host,
        port: addr.port,
        link_status: if facts.link_up() { "up" } else { "down" },
        state: facts.link.state.role_name(),
        last_io_seconds_ago: facts.last_io_seconds(),
        link_down_since_seconds: facts.down_seconds(),
        sync_in_progress: receiving.is_some(),
        sync_received_bytes: receiving.map(|r| r.received),
        sync_total_bytes: facts.link.sync_total,
        master_offset: facts.master_offset,
        lag_bytes: facts.lag_bytes(),
    })
}

fn sentinel(relay: &RelayView, facts: &Facts) -> Option<Sentinel> {
    let name = relay.config.sentinel_master.clone()?;
    let view = &facts.sentinel;
    Some(Sentinel {
        sentinels: relay
            .config
            .sentinels
            .iter()
            .map(|s| s.to_string())
            .collect(),
        master_name: name,
        watching: view.watching.as_ref().map(|m| m.to_string()),
        unreachable: view.unreachable,
        named_master: view.named.as_ref().map(|m| m.to_string()),
    })
}

fn cluster(relay: &RelayView, facts: &Facts) -> Option<Cluster> {
    if relay.config.cluster_nodes.is_empty() {
        return None;
    }
    let c = &facts.cluster;
    let nodes = c.nodes.iter().map(|n| ClusterNode {
        id: n.id.clone(),
        addr: n.addr.to_string(),
        role: if n.primary { "primary" } else { "replica" },
        failing: n.failing,
    });
    Some(Cluster {
        shard_id: c.shard_id.clone(),
        slots: c.slots(),
        nodes: nodes.collect(),
        nodes_known: c.known,
        unreachable: c.unreachable.clone(),
    })
}

fn replicas(facts: &Facts) -> Vec<Replica> {
    let all = facts.replicas.iter();
    all.map(|r| Replica {
        ip: r.ip.clone(),
        port: r.port,
        state: r.state.name(),
        ack_offset: r.ack_offset,
        lag_bytes: facts.replica_lag_bytes(r),
        ack_age_seconds: r.ack_time.elapsed().as_secs_f64(),
        compressed: r.compressed,
    })
    .collect()
}

//! `/status`: the facts of INFO replication, the store and the replicas, as JSON.

use serde::Serialize;

use super::RelayView;
use crate::decode::{SnapshotStats, StreamStats};
use crate::downstream::ReplicaState;
use crate::instruments::Label;
use crate::link::LinkState;

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
    empty_master_held: bool,
    store: Store,
    stream: StreamStats,
    replicas: Vec<Replica>,
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
}

impl Status {
    pub fn of(relay: &RelayView) -> Status {
        let state = relay.store.view();
        let offset = state.master_repl_offset();
        let ident = state.ident.as_ref();
        let not_ready = relay.not_ready();
        let link = relay.link.status();
        Status {
            role: if relay.master_addr().is_some() {
                "slave"
            } else {
                "master"
            },
            ready: not_ready.is_none(),
            not_ready,
            master: master(relay, offset),
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
            sentinel: sentinel(relay),
            empty_master_held: relay.link.status().empty_master_held,
            store: Store {
                dir: relay.config.dir.display().to_string(),
                snapshot: ident.map(|i| i.snapshot.clone()),
                snapshot_offset: ident.map(|i| i.snapshot_offset),
                snapshot_bytes: ident.map(|i| i.snapshot_size),
                snapshot_contents: relay.store.snapshot_stats().map(|s| (*s).clone()),
                refreshing: relay.refreshing(&state),
                snapshot_source: link.compactor.source.map_or("", |s| s.name()),
                snapshot_made_by: link.compactor.origin.name(),
                master_forks: relay.upstream.master_forks.get(),
                compactor_mismatches: relay.upstream.compactor_mismatches.get(),
                compactor: link.compactor.last.as_ref().map(|r| CompactorLast {
                    server: link.compactor.server.clone(),
                    ok: r.error.is_none(),
                    error: r.error.clone(),
                    duration_seconds: r.duration.as_secs_f64(),
                    bytes: r.bytes,
                    peak_rss_bytes: r.peak_rss,
                }),
                backlog_first_offset: state.first,
                backlog_next_offset: state.next,
                backlog_disk_bytes: relay.store.log_disk_bytes(),
                restore: Restore {
                    from_offset: state.restore.from_offset,
                    from: state.restore.from_ms.map(crate::store::utc),
                    window_seconds: super::info::window_seconds(&state.restore),
                    configured_seconds: relay.config.restore_window.map_or(0, |d| d.as_secs()),
                    points: state.restore.kept,
                    disk_bytes: state.restore.disk_bytes,
                    shrunk: state.restore.shrunk,
                },
            },
            stream: relay.store.stream_stats(),
            replicas: replicas(relay, offset),
        }
    }
}

fn master(relay: &RelayView, offset: u64) -> Option<Master> {
    let addr = relay.master_addr()?;
    let link = relay.link.status();
    let up = link.state == LinkState::Connected;
    let receiving = relay.store.view().receiving;
    let master_offset = relay.master_offset();
    Some(Master {
        host: addr.host,
        port: addr.port,
        link_status: if up { "up" } else { "down" },
        state: link.state.role_name(),
        last_io_seconds_ago: link.last_io_age().map(|t| t.as_secs()),
        link_down_since_seconds: link
            .down_since
            .filter(|_| !up)
            .map(|t| t.elapsed().as_secs()),
        sync_in_progress: receiving.is_some(),
        sync_received_bytes: receiving.map(|r| r.received),
        sync_total_bytes: link.sync_total,
        master_offset,
        lag_bytes: master_offset.map(|m| m.saturating_sub(offset)),
    })
}

fn sentinel(relay: &RelayView) -> Option<Sentinel> {
    let name = relay.config.sentinel_master.clone()?;
    let view = relay.link.status().sentinel;
    Some(Sentinel {
        sentinels: relay
            .config
            .sentinels
            .iter()
            .map(|s| s.to_string())
            .collect(),
        master_name: name,
        watching: view.watching.map(|m| m.to_string()),
        unreachable: view.unreachable,
        named_master: view.named.map(|m| m.to_string()),
    })
}

fn replicas(relay: &RelayView, offset: u64) -> Vec<Replica> {
    let all = relay.replicas.list().into_iter();
    all.map(|r| Replica {
        ip: r.ip,
        port: r.port,
        state: r.state.name(),
        ack_offset: r.ack_offset,
        lag_bytes: if r.state == ReplicaState::Online {
            offset.saturating_sub(r.ack_offset)
        } else {
            0
        },
        ack_age_seconds: r.ack_time.elapsed().as_secs_f64(),
    })
    .collect()
}

//! INFO, ROLE and CONFIG GET, with Redis' field names and formats (PROTOCOL §4.5, §4.6), so
//! `redis-cli info replication`, Sentinel-style probes and dashboards read the relay like a
//! chained replica.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::RelayView;
use super::facts::Facts;
use crate::decode::{SnapshotStats, counts};
use crate::downstream::ReplicaState;
use crate::instruments::Label;
use crate::resp::Reply;
use crate::store::NULL_REPLID;

const SECTIONS: [&str; 7] = [
    "server",
    "clients",
    "memory",
    "replication",
    "stats",
    "keyspace",
    "relay",
];

pub fn info(relay: &RelayView, args: &[bytes::Bytes]) -> String {
    render(relay, &Facts::gather(relay), args)
}

/// INFO of the facts of one moment.
pub fn render(relay: &RelayView, facts: &Facts, args: &[bytes::Bytes]) -> String {
    let wanted: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| ["all", "everything", "default"].contains(&w.as_str()));
    let mut out = String::new();
    for section in SECTIONS {
        if !all && !wanted.iter().any(|w| w == section) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        match section {
            "server" => server(relay, facts, &mut out),
            "clients" => clients(relay, facts, &mut out),
            "memory" => memory(&mut out),
            "replication" => replication(relay, facts, &mut out),
            "stats" => stats(relay, &mut out),
            "keyspace" => keyspace(facts, &mut out),
            _ => relay_section(relay, facts, &mut out),
        }
    }
    out
}

/// `redis_version` is the master's: the snapshot and the stream the relay serves are in the
/// master's formats, and tools choose what to send by it. The relay's own is `relay_version`.
/// Absent until the relay has reached its master once.
fn server(relay: &RelayView, facts: &Facts, out: &mut String) {
    let up = relay.started.elapsed().as_secs();
    out.push_str("# Server\r\n");
    if let Some(v) = &facts.link.master_version {
        let _ = write!(out, "redis_version:{v}\r\n");
    }
    let _ = write!(
        out,
        "relay_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\nexecutable:{}\r\nconfig_file:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::process::id(),
        relay.run_id,
        relay.config.port,
        up / 86400,
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        relay
            .config
            .config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
}

/// Redis counts replicas among its connected clients, as the registry of connections does.
fn clients(relay: &RelayView, facts: &Facts, out: &mut String) {
    let _ = write!(
        out,
        "# Clients\r\nconnected_clients:{}\r\nconnected_slaves:{}\r\nblocked_clients:0\r\nmaxclients:{}\r\n",
        relay.clients.count(),
        facts.replicas.len(),
        relay.config.maxclients
    );
}

/// The relay's resident memory, for both of Redis' fields: it holds no dataset, and its
/// allocator's count is not kept apart.
fn memory(out: &mut String) {
    let rss = resident_bytes();
    let _ = write!(
        out,
        "# Memory\r\nused_memory:{rss}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{:.2}M\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n",
        rss as f64 / 1048576.0,
        rss as f64 / 1048576.0
    );
}

/// Resident set size from /proc/self/statm (pages).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

fn replication(relay: &RelayView, facts: &Facts, out: &mut String) {
    let (state, link) = (&facts.store, &facts.link);
    let offset = facts.offset();
    match &facts.master {
        Some(master) => {
            let up = facts.link_up();
            let _ = write!(
                out,
                "# Replication\r\nrole:slave\r\nmaster_host:{}\r\nmaster_port:{}\r\nmaster_link_status:{}\r\nmaster_last_io_seconds_ago:{}\r\nmaster_sync_in_progress:{}\r\nslave_read_repl_offset:{offset}\r\nslave_repl_offset:{offset}\r\n",
                master.host,
                master.port,
                if up { "up" } else { "down" },
                facts.last_io_seconds().map_or(-1, |t| t as i64),
                u8::from(state.receiving.is_some()),
            );
            if let Some(r) = &state.receiving {
                let total = link.sync_total.map_or(-1, |t| t as i64);
                let _ = write!(
                    out,
                    "master_sync_total_bytes:{total}\r\nmaster_sync_read_bytes:{}\r\nmaster_sync_left_bytes:{}\r\nmaster_sync_perc:{:.2}\r\n",
                    r.received,
                    if total < 0 {
                        -1
                    } else {
                        total - r.received as i64
                    },
                    if total > 0 {
                        r.received as f64 * 100.0 / total as f64
                    } else {
                        0.0
                    }
                );
            }
            if !up {
                let down = facts.down_seconds().map_or(-1, |t| t as i64);
                let _ = write!(out, "master_link_down_since_seconds:{down}\r\n");
            }
            // Priority 0: Sentinel never promotes the relay, which holds no keys; not announced:
            // clients that find replicas through Sentinel do not send reads to it.
            let priority = relay.config.replica_priority;
            let _ = write!(
                out,
                "slave_priority:{priority}\r\nreplica_priority:{priority}\r\nslave_read_only:1\r\nreplica_announced:{}\r\n",
                u8::from(relay.config.replica_announced)
            );
        }
        None => out.push_str("# Replication\r\nrole:master\r\n"),
    }
    let _ = write!(out, "connected_slaves:{}\r\n", facts.replicas.len());
    for (i, r) in facts.replicas.iter().enumerate() {
        let lag = if r.state == ReplicaState::Online {
            r.ack_time.elapsed().as_secs()
        } else {
            0
        };
        let _ = write!(
            out,
            "slave{i}:ip={},port={},state={},offset={},lag={lag}\r\n",
            r.ip,
            r.port,
            r.state.name(),
            r.ack_offset
        );
    }
    let (replid, replid2, second) = state.ident.as_ref().map_or(
        (NULL_REPLID.to_string(), NULL_REPLID.to_string(), -1),
        |id| {
            (
                id.replid.clone(),
                id.replid2.clone(),
                id.second_replid_offset,
            )
        },
    );
    let has_log = state.ident.is_some();
    let _ = write!(
        out,
        "master_failover_state:no-failover\r\nmaster_replid:{replid}\r\nmaster_replid2:{replid2}\r\nmaster_repl_offset:{offset}\r\nsecond_repl_offset:{second}\r\nrepl_backlog_active:{}\r\nrepl_backlog_size:{}\r\nrepl_backlog_first_byte_offset:{}\r\nrepl_backlog_histlen:{}\r\n",
        u8::from(has_log),
        relay.config.backlog_size.0,
        state.first,
        state.next - state.first,
    );
}

fn stats(relay: &RelayView, out: &mut String) {
    let (up, down) = (&relay.upstream, &relay.downstream);
    let _ = write!(
        out,
        "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{:.0}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nsync_full:{}\r\nsync_partial_ok:{}\r\nsync_partial_err:{}\r\nrelay_upstream_full_syncs:{}\r\nrelay_upstream_partial_syncs:{}\r\nrelay_upstream_sync_failures:{}\r\nrelay_snapshot_refreshes:{}\r\n",
        down.connections_received.get(),
        down.commands.get(),
        relay.ops_per_sec(),
        down.net_input.get() + up.received.total(),
        down.net_output.get() + down.sent.total(),
        down.rejected.total(),
        down.full_syncs.get(),
        down.partial_syncs.get(),
        down.partial_sync_errors.get(),
        up.full_syncs.get(),
        up.partial_syncs.get(),
        up.failures.total(),
        up.snapshot_refreshes.get(),
    );
}

/// Keys per db as the snapshot in service holds them (at its offset, not live: the relay
/// applies no commands).
fn keyspace(facts: &Facts, out: &mut String) {
    out.push_str("# Keyspace\r\n");
    if let Some(stats) = &facts.snapshot {
        for (db, d) in &stats.dbs {
            let _ = write!(
                out,
                "db{db}:keys={},expires={},avg_ttl=0\r\n",
                d.keys, d.expires
            );
        }
    }
}

/// The store: the snapshot in service, what decoding learned of it, and the log.
fn relay_section(relay: &RelayView, facts: &Facts, out: &mut String) {
    let state = &facts.store;
    out.push_str("# Relay\r\n");
    if let Some(id) = &state.ident {
        let _ = write!(
            out,
            "relay_snapshot_file:{}\r\nrelay_snapshot_offset:{}\r\nrelay_snapshot_bytes:{}\r\nrelay_snapshot_verification:{}\r\n",
            id.snapshot,
            id.snapshot_offset,
            id.snapshot_size,
            state.verification.name()
        );
    }
    match &facts.snapshot {
        Some(s) => snapshot_facts(s, out),
        None if state.ident.is_some() => out.push_str("relay_snapshot_decoded:pending\r\n"),
        None => {}
    }
    stream_facts(&facts.stream, out);
    incompatible(relay, out);
    master_change(relay, out);
    compactor(relay, facts, out);
    sentinel(relay, facts, out);
    cluster(relay, facts, out);
    restore_window(relay, facts, out);
    archive(facts, out);
    let _ = write!(
        out,
        "relay_full_syncs_running:{}\r\nrelay_full_syncs_waiting:{}\r\nrelay_max_full_syncs:{}\r\n",
        facts.full_syncs_running,
        facts.full_syncs_waiting,
        relay.admission.max()
    );
    let _ = write!(
        out,
        "relay_log_first_offset:{}\r\nrelay_log_next_offset:{}\r\nrelay_log_disk_bytes:{}\r\nrelay_snapshot_refreshing:{}\r\n",
        state.first,
        state.next,
        facts.log_disk_bytes,
        u8::from(facts.refreshing())
    );
    let _ = write!(
        out,
        "relay_upstream_compression:{}\r\nrelay_downstream_compression:{}\r\n",
        facts.upstream_compression.info(),
        facts.downstream_compression.info()
    );
}

/// What `replica-relay restore` can restore to, and what `--restore-window` asked for.
fn restore_window(relay: &RelayView, facts: &Facts, out: &mut String) {
    let w = &facts.store.restore;
    let configured = relay.config.restore_window.map_or(0, |d| d.as_secs());
    let from = w.from_ms.map_or(String::new(), crate::store::utc);
    let _ = write!(
        out,
        "relay_restore_from:{from}\r\nrelay_restore_from_offset:{}\r\nrelay_restore_window_seconds:{}\r\nrelay_restore_window_configured_seconds:{configured}\r\nrelay_restore_points:{}\r\nrelay_restore_disk_bytes:{}\r\nrelay_restore_window_shrunk:{}\r\n",
        w.from_offset,
        facts.restore_window_seconds(),
        w.kept,
        w.disk_bytes,
        u8::from(w.shrunk)
    );
}

/// The archive in object storage, with `--archive`.
fn archive(facts: &Facts, out: &mut String) {
    let Some(a) = &facts.archive else { return };
    let _ = write!(
        out,
        "relay_archive:{}\r\nrelay_archive_behind_bytes:{}\r\nrelay_archive_behind_seconds:{}\r\nrelay_archive_uploaded_bytes:{}\r\nrelay_archive_uploaded_objects:{}\r\nrelay_archive_deleted_objects:{}\r\nrelay_archive_failures:{}\r\nrelay_archive_last_upload:{}\r\n",
        a.url,
        a.behind_bytes,
        a.behind_seconds,
        a.uploaded_bytes,
        a.uploaded_objects,
        a.deleted_objects,
        a.failures,
        a.last_upload.as_deref().unwrap_or("")
    );
}

/// A master address for INFO, `none` without one.
fn show(m: Option<crate::config::MasterAddr>) -> String {
    m.map_or("none".into(), |m| m.to_string())
}

/// What the Sentinels said (`--sentinel`), and the guard against an empty master.
fn sentinel(relay: &RelayView, facts: &Facts, out: &mut String) {
    let (link, view) = (&facts.link, &facts.sentinel);
    let _ = write!(
        out,
        "relay_empty_master_held:{}\r\nrelay_master_is_replica:{}\r\n",
        u8::from(link.empty_master_held),
        u8::from(facts.master_is_replica())
    );
    if relay.config.sentinels.is_empty() {
        return;
    }
    let list: Vec<String> = relay
        .config
        .sentinels
        .iter()
        .map(|s| s.to_string())
        .collect();
    let _ = write!(
        out,
        "relay_sentinels:{}\r\nrelay_sentinel_master_name:{}\r\nrelay_sentinel_watching:{}\r\nrelay_sentinel_unreachable:{}\r\nrelay_sentinel_named_master:{}\r\n",
        list.join(","),
        relay.config.sentinel_master.as_deref().unwrap_or(""),
        show(view.watching.clone()),
        view.unreachable,
        show(view.named.clone())
    );
}

/// The cluster shard followed (`--cluster-node`): its nodes, the primary first, and its slots.
fn cluster(relay: &RelayView, facts: &Facts, out: &mut String) {
    if relay.config.cluster_nodes.is_empty() {
        return;
    }
    let c = &facts.cluster;
    let _ = write!(
        out,
        "relay_cluster_shard_id:{}\r\nrelay_cluster_shard_slots:{}\r\nrelay_cluster_shard_nodes:{}\r\nrelay_cluster_nodes_known:{}\r\nrelay_cluster_reachable:{}\r\n",
        c.shard_id.as_deref().unwrap_or(""),
        c.slots(),
        c.nodes.len(),
        c.known,
        u8::from(c.unreachable.is_none() && !c.nodes.is_empty())
    );
    for (i, n) in c.nodes.iter().enumerate() {
        let _ = write!(
            out,
            "relay_cluster_shard_node{i}:id={},addr={},role={},fail={}\r\n",
            n.id,
            n.addr,
            if n.primary { "primary" } else { "replica" },
            u8::from(n.failing)
        );
    }
}

/// The last time the relay moved to another master, and why.
fn master_change(relay: &RelayView, out: &mut String) {
    let Some(c) = relay.control.last_change() else {
        return;
    };
    let _ = write!(
        out,
        "relay_last_master_change:from={},to={},reason={},seconds_ago={}\r\n",
        show(c.from),
        show(c.to),
        c.reason.value(),
        c.at.elapsed().as_secs()
    );
}

/// Where fresh snapshots come from, what made the one in service, the compactor's last run and
/// the forks the relay caused on its master.
fn compactor(relay: &RelayView, facts: &Facts, out: &mut String) {
    let c = &facts.compactor;
    let _ = write!(
        out,
        "relay_snapshot_source:{}\r\nrelay_snapshot_made_by:{}\r\nrelay_master_forks:{}\r\nrelay_compactor_runs:{}\r\nrelay_compactor_failures:{}\r\nrelay_compactor_mismatches:{}\r\n",
        c.source.map_or("", |s| s.name()),
        c.origin.name(),
        relay.upstream.master_forks.get(),
        relay.upstream.compactor_runs.get(),
        relay.upstream.compactor_failures.get(),
        relay.upstream.compactor_mismatches.get()
    );
    if let Some(server) = &c.server {
        let _ = write!(out, "relay_compactor_server:{server}\r\n");
    }
    if let Some(r) = &c.last {
        let _ = write!(
            out,
            "relay_compactor_last:status={},duration_ms={},bytes={},peak_rss={}\r\n",
            if r.error.is_some() { "failed" } else { "ok" },
            r.duration.as_millis(),
            r.bytes,
            r.peak_rss
        );
    }
}

/// Replicas that cannot load the snapshot's format, with what it needs.
fn incompatible(relay: &RelayView, out: &mut String) {
    let flagged = relay.replicas.formats.flagged();
    let _ = write!(out, "relay_incompatible_replicas:{}\r\n", flagged.len());
    for (i, (name, r)) in flagged.iter().enumerate() {
        let _ = write!(
            out,
            "relay_incompatible_replica{i}:name={name},format={},needs={},drops={}\r\n",
            r.signature,
            crate::compat::requirement(&r.signature),
            r.strikes
        );
    }
}

fn stream_facts(s: &crate::decode::StreamStats, out: &mut String) {
    let dbs: Vec<String> = s.dbs.iter().map(|(db, n)| format!("db{db}={n}")).collect();
    let _ = write!(
        out,
        "relay_stream_bytes:{}\r\nrelay_stream_bytes_per_sec:{:.0}\r\nrelay_stream_commands:{}\r\nrelay_stream_commands_per_db:{}\r\nrelay_stream_multi_blocks:{}\r\nrelay_stream_pings:{}\r\nrelay_stream_getacks:{}\r\n",
        s.bytes,
        s.bytes_per_sec,
        counts(&s.commands, ","),
        dbs.join(","),
        s.multi_blocks,
        s.pings,
        s.getacks
    );
}

fn snapshot_facts(s: &SnapshotStats, out: &mut String) {
    let mut types = BTreeMap::new();
    for d in s.dbs.values() {
        for (k, n) in &d.types {
            *types.entry(*k).or_insert(0) += n;
        }
    }
    let aux = |k: &str| s.aux.get(k).cloned().unwrap_or_default();
    let server = if s.aux.contains_key("valkey-ver") {
        aux("valkey-ver")
    } else {
        aux("redis-ver")
    };
    let decoded = s
        .error
        .as_deref()
        .map_or("ok".to_string(), |e| format!("incomplete ({e})"));
    let _ = write!(
        out,
        "relay_snapshot_decoded:{decoded}\r\nrelay_snapshot_format:{}\r\nrelay_snapshot_rdb_version:{}\r\nrelay_snapshot_server_version:{server}\r\nrelay_snapshot_ctime:{}\r\nrelay_snapshot_keys:{}\r\nrelay_snapshot_types:{}\r\nrelay_snapshot_not_decoded:{}\r\n",
        s.signature,
        s.rdb_version,
        aux("ctime"),
        s.keys(),
        counts(&types, ","),
        counts(&s.not_decoded, ","),
    );
}

/// ROLE: `slave host port state offset` while following a master, else `master offset replicas`.
pub fn role(relay: &RelayView) -> Reply {
    let offset = relay.store.view().master_repl_offset() as i64;
    match relay.master_addr() {
        Some(m) => Reply::Array(vec![
            Reply::bulk("slave"),
            Reply::bulk(m.host),
            Reply::Int(i64::from(m.port)),
            Reply::bulk(relay.link.status().state.role_name()),
            Reply::Int(offset),
        ]),
        None => {
            let online = relay
                .replicas
                .list()
                .into_iter()
                .filter(|r| r.state == ReplicaState::Online);
            let replicas = online
                .map(|r| {
                    Reply::Array(vec![
                        Reply::bulk(r.ip),
                        Reply::bulk(r.port.to_string()),
                        Reply::bulk(r.ack_offset.to_string()),
                    ])
                })
                .collect();
            Reply::Array(vec![
                Reply::bulk("master"),
                Reply::Int(offset),
                Reply::Array(replicas),
            ])
        }
    }
}

/// What CONFIG GET answers: the options the table names for it, the master followed now (not
/// the one configured at start), and what a relay is as a server.
pub fn config_values(relay: &RelayView) -> Vec<(&'static str, String)> {
    let master = relay
        .master_addr()
        .map(|m| format!("{} {}", m.host, m.port))
        .unwrap_or_default();
    let mut values = relay.config.config_get();
    values.extend([
        ("replicaof", master.clone()),
        ("slaveof", master),
        ("repl-diskless-sync", "no".into()),
        ("databases", "16".into()),
    ]);
    values
}

//! The relay's facts at one moment. Each request (an INFO, a `/status`, a scrape, a `/readyz`)
//! gathers them once, so everything one answer says comes from the same moment; and every fact
//! INFO, `/status` and `/metrics` share is worked out here once, so the three cannot disagree
//! (`tests` renders all three from one `Facts` and compares them).

use std::sync::Arc;

use super::RelayView;
use crate::config::MasterAddr;
use crate::decode::{SnapshotStats, StreamStats};
use crate::downstream::{ReplicaInfo, ReplicaState};
use crate::link::{LinkState, LinkStatus};
use crate::store::{Verification, View};
use crate::upstream::{ClusterView, CompactorView, SentinelView};

pub struct Facts {
    pub store: View,
    pub link: LinkStatus,
    pub compactor: CompactorView,
    pub sentinel: SentinelView,
    pub cluster: ClusterView,
    /// The master followed now.
    pub master: Option<MasterAddr>,
    /// The master's offset, when it was read recently enough to say how far behind the relay
    /// is: within three polls (`--master-info-interval`), at least 3 s.
    pub master_offset: Option<u64>,
    pub replicas: Vec<ReplicaInfo>,
    pub snapshot: Option<Arc<SnapshotStats>>,
    pub stream: StreamStats,
    pub log_disk_bytes: u64,
    pub full_syncs_running: usize,
    pub full_syncs_waiting: usize,
    /// What arrives compressed from an upstream relay, and what leaves compressed for the
    /// relays behind this one.
    pub upstream_compression: Compression,
    pub downstream_compression: Compression,
    /// The archive in object storage, with `--archive`.
    pub archive: Option<Archived>,
}

/// How the archive stands: how far behind the store, what it took, what failed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Archived {
    pub url: String,
    pub behind_bytes: u64,
    pub behind_seconds: u64,
    pub uploaded_bytes: u64,
    pub uploaded_objects: u64,
    pub deleted_objects: u64,
    pub failures: u64,
    /// When it last took an object (RFC 3339), `None` before.
    pub last_upload: Option<String>,
}

impl Archived {
    fn of(url: &str, m: &crate::archive::ArchiveMetrics) -> Archived {
        let last = m.last_upload.get() as u64;
        Archived {
            url: url.to_string(),
            behind_bytes: m.behind_bytes.get() as u64,
            behind_seconds: m.behind_seconds.get() as u64,
            uploaded_bytes: m.uploaded_bytes.get(),
            uploaded_objects: m.uploaded_objects.get(),
            deleted_objects: m.deleted_objects.get(),
            failures: m.failures.get(),
            last_upload: (last > 0).then(|| crate::store::utc(last * 1000)),
        }
    }
}

/// One side's compressed links: how many now (the upstream link: 0 or 1), and what they
/// carried since the start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Compression {
    pub links: usize,
    pub wire_bytes: u64,
    pub stream_bytes: u64,
    /// Wire bytes per stream byte; 1 before anything crossed.
    pub ratio: f64,
    /// Spent compressing or decompressing.
    pub seconds: f64,
}

impl Compression {
    fn of(links: usize, c: &crate::compress::Counters) -> Compression {
        Compression {
            links,
            wire_bytes: c.wire.get(),
            stream_bytes: c.stream.get(),
            ratio: c.ratio(),
            seconds: c.seconds.get(),
        }
    }

    /// INFO's form, `links=1,wire_bytes=...`, as Redis writes a replica's line.
    pub fn info(&self) -> String {
        format!(
            "links={},wire_bytes={},stream_bytes={},ratio={:.4},seconds={:.3}",
            self.links, self.wire_bytes, self.stream_bytes, self.ratio, self.seconds
        )
    }
}

impl Facts {
    pub fn gather(relay: &RelayView) -> Facts {
        let link = relay.link.status();
        let max_age = relay
            .config
            .master_info_interval
            .map(|every| (every * 3).max(std::time::Duration::from_secs(3)));
        let replicas = relay.replicas.list();
        let behind = replicas.iter().filter(|r| r.compressed).count();
        Facts {
            upstream_compression: Compression::of(
                usize::from(link.compressed && link.state == LinkState::Connected),
                &relay.upstream.compression,
            ),
            downstream_compression: Compression::of(behind, &relay.downstream.compression),
            store: relay.store.view(),
            master_offset: link.known_master_offset(max_age),
            link,
            compactor: relay.compactor.get(),
            sentinel: relay.sentinel.get(),
            cluster: relay.cluster.get(),
            master: relay.control.master(),
            replicas,
            snapshot: relay.store.snapshot_stats(),
            stream: relay.store.stream_stats(),
            log_disk_bytes: relay.store.log_disk_bytes(),
            full_syncs_running: relay.admission.running(),
            full_syncs_waiting: relay.admission.waiting(),
            archive: (relay.config.archive.as_deref()).map(|url| Archived::of(url, &relay.archive)),
        }
    }

    /// Redis' `master_repl_offset`: the last byte the relay holds.
    pub fn offset(&self) -> u64 {
        self.store.master_repl_offset()
    }

    pub fn link_up(&self) -> bool {
        self.link.state == LinkState::Connected
    }

    /// Seconds since the last byte from the master, while the link is up.
    pub fn last_io_seconds(&self) -> Option<u64> {
        self.link.last_io_age().map(|t| t.as_secs())
    }

    /// Seconds the link has been down; `None` while it is up or before it was ever up.
    pub fn down_seconds(&self) -> Option<u64> {
        let since = self.link.down_since.filter(|_| !self.link_up());
        since.map(|t| t.elapsed().as_secs())
    }

    /// How far the relay is behind its master, while the master's offset is known.
    pub fn lag_bytes(&self) -> Option<u64> {
        self.master_offset.map(|m| m.saturating_sub(self.offset()))
    }

    /// The relay follows a master that says it is a replica.
    pub fn master_is_replica(&self) -> bool {
        self.link.master_is_replica && self.master.is_some()
    }

    /// A replica's lag: what it has not acknowledged yet once it streams; 0 while it syncs
    /// (its offset is the snapshot's, not yet acknowledged).
    pub fn replica_lag_bytes(&self, r: &ReplicaInfo) -> u64 {
        if r.state == ReplicaState::Online {
            self.offset().saturating_sub(r.ack_offset)
        } else {
            0
        }
    }

    /// A snapshot refresh is under way: asked of the master (the link's word), arriving, or
    /// waiting for the log to reach its offset (the store's).
    pub fn refreshing(&self) -> bool {
        self.store.refreshing || self.link.refresh_requested
    }

    /// Seconds from the start of the restorable window to now; 0 before any time is known.
    pub fn restore_window_seconds(&self) -> u64 {
        let from = self.store.restore.from_ms;
        from.map_or(0, |t| crate::store::now_ms().saturating_sub(t) / 1000)
    }

    /// Why the relay should not receive replicas yet, if it should not.
    pub fn not_ready(&self) -> Option<String> {
        if self.store.ident.is_none() {
            return Some("no verified snapshot in service yet".into());
        }
        match &self.store.verification {
            Verification::Verified => {}
            Verification::Verifying => return Some("the stored snapshot is being verified".into()),
            Verification::Corrupt(why) => {
                return Some(format!(
                    "the stored snapshot failed verification ({why}); waiting for a fresh one from the master"
                ));
            }
        }
        match (&self.master, self.link.state) {
            (None, _) => Some("no master configured (REPLICAOF NO ONE)".into()),
            (Some(_), LinkState::Connected) => None,
            (Some(m), state) => Some(format!("link with master {m} is {}", state.role_name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::{Config, RelayArgs};
    use crate::downstream::{Admission, DownstreamMetrics};
    use crate::link::LinkControl;
    use crate::observe::metrics::Metrics;
    use crate::observe::status::Status;
    use crate::store::{Store, StoreConfig, StoreMetrics};
    use crate::upstream::{SnapshotOrigin, UpstreamMetrics};

    fn relay(dir: &std::path::Path) -> RelayView {
        let flags = [
            ("dir", dir.to_str().unwrap()),
            ("restore-window", "1h"),
            ("sentinel", "127.0.0.1:26379"),
            ("sentinel-master", "mymaster"),
        ];
        let config = Config::resolve(RelayArgs::flags(&flags)).unwrap();
        let (_, store, _thread) = Store::open(StoreConfig {
            metrics: StoreMetrics::new(),
            dir: config.dir.clone(),
            fsync: config.appendfsync,
            segment_size: config.log_segment_size.0,
            backlog_size: config.backlog_size.0,
            restore: config.restore(),
        })
        .unwrap();
        let master = MasterAddr::parse("127.0.0.1", "6379").unwrap();
        RelayView {
            config: Arc::new(config),
            store,
            link: crate::link::status().1,
            control: LinkControl::new(Some(master)),
            replicas: Arc::default(),
            clients: Arc::default(),
            admission: Arc::new(Admission::new(4, None, None)),
            upstream: Arc::new(UpstreamMetrics::new()),
            downstream: Arc::new(DownstreamMetrics::new()),
            compactor: Default::default(),
            sentinel: Default::default(),
            cluster: Default::default(),
            archive: crate::archive::ArchiveMetrics::new(),
            started: Instant::now(),
            run_id: "0".repeat(40),
            ops: Default::default(),
        }
    }

    /// A moment with something in every fact the three share.
    fn facts(relay: &RelayView, up: bool) -> Facts {
        let mut f = Facts::gather(relay);
        let ago = |s| Instant::now() - Duration::from_secs(s);
        f.store.first = 1000;
        f.store.next = 5001;
        f.store.restore.from_ms = Some(crate::store::now_ms() - 90_000);
        (f.store.restore.kept, f.store.restore.shrunk) = (2, true);
        f.link.state = if up {
            LinkState::Connected
        } else {
            LinkState::Connect
        };
        (f.link.last_io, f.link.down_since) = (Some(ago(3)), Some(ago(7)));
        (f.link.sync_total, f.link.master_is_replica) = (Some(777), true);
        f.link.empty_master_held = true;
        f.master_offset = Some(5100);
        f.log_disk_bytes = 12345;
        (f.full_syncs_running, f.full_syncs_waiting) = (1, 2);
        f.compactor.origin = SnapshotOrigin::Compactor;
        f.sentinel.watching = Some(MasterAddr::parse("127.0.0.1", "26379").unwrap());
        let replica = |port, state, ack_offset| ReplicaInfo {
            ip: "10.0.0.9".into(),
            port,
            state,
            ack_offset,
            ack_time: ago(1),
            acked: true,
            compressed: port == 7001,
        };
        f.replicas = vec![
            replica(7001, ReplicaState::Online, 4000),
            replica(7002, ReplicaState::WaitBgsave, 0),
        ];
        let c = &relay.upstream.compression;
        c.wire.inc_by(300);
        c.stream.inc_by(1000);
        c.seconds.inc_by(0.25);
        f.upstream_compression = Compression::of(1, c);
        f.downstream_compression = Compression::of(1, &relay.downstream.compression);
        let a = &relay.archive;
        a.behind_bytes.set(4096);
        a.behind_seconds.set(42);
        a.failures.inc_by(3);
        a.uploaded_bytes.inc_by(1 << 20);
        a.uploaded_objects.inc_by(9);
        a.last_upload.set(1_796_000_000);
        f.archive = Some(Archived::of("s3://bucket/relay", a));
        f
    }

    fn info_map(text: &str) -> BTreeMap<String, String> {
        let lines = text.lines().filter_map(|l| l.split_once(':'));
        lines.map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn metric_map(text: &str) -> BTreeMap<String, f64> {
        let lines = text.lines().filter(|l| !l.starts_with('#'));
        let pairs = lines.filter_map(|l| l.rsplit_once(' '));
        let strip = |k: &str| k.trim_start_matches("replica_relay_").to_string();
        pairs.map(|(k, v)| (strip(k), v.parse().unwrap())).collect()
    }

    /// Every fact INFO, `/status` and `/metrics` share says the same in all three, link up and
    /// link down.
    #[test]
    fn info_status_and_metrics_agree_on_every_shared_fact() {
        let dir = tempfile::tempdir().unwrap();
        let relay = relay(dir.path());
        let metrics = Metrics::new(&[&relay.archive]);
        for up in [true, false] {
            let f = facts(&relay, up);
            let i = info_map(&crate::observe::info::render(&relay, &f, &[]));
            let s = serde_json::to_value(Status::from_facts(&relay, &f)).unwrap();
            let m = metric_map(&metrics.render_facts(&relay, &f));
            let int = |k: &str| i[k].parse::<f64>().unwrap();
            let num = |v: &serde_json::Value| v.as_f64().unwrap_or(-1.0);
            let flag = |v: &serde_json::Value| f64::from(u8::from(v.as_bool().unwrap()));
            let same = |what: &str, values: &[f64]| {
                assert!(
                    values.windows(2).all(|w| w[0] == w[1]),
                    "{what} (up: {up}): {values:?}"
                );
            };
            let (master, store) = (&s["master"], &s["store"]);
            same(
                "offset",
                &[
                    int("master_repl_offset"),
                    num(&s["master_repl_offset"]),
                    m["upstream_offset_bytes"],
                    m["backlog_last_offset"],
                ],
            );
            same(
                "first",
                &[
                    int("relay_log_first_offset"),
                    num(&store["backlog_first_offset"]),
                    m["backlog_first_offset"],
                ],
            );
            same(
                "next",
                &[
                    int("relay_log_next_offset"),
                    num(&store["backlog_next_offset"]),
                ],
            );
            same(
                "disk",
                &[
                    int("relay_log_disk_bytes"),
                    num(&store["backlog_disk_bytes"]),
                    m["backlog_disk_bytes"],
                ],
            );
            let link_up = f64::from(u8::from(i["master_link_status"] == "up"));
            same(
                "link up",
                &[
                    link_up,
                    f64::from(u8::from(master["link_status"] == "up")),
                    m["upstream_link_up"],
                ],
            );
            same(
                "last io",
                &[
                    int("master_last_io_seconds_ago"),
                    num(&master["last_io_seconds_ago"]),
                    m["upstream_last_io_seconds"].floor(),
                ],
            );
            let down = i
                .get("master_link_down_since_seconds")
                .map_or(0.0, |v| v.parse().unwrap());
            let status_down = master["link_down_since_seconds"].as_f64().unwrap_or(0.0);
            same(
                "down since",
                &[
                    down,
                    status_down,
                    m["upstream_link_down_since_seconds"].floor(),
                ],
            );
            same("lag", &[num(&master["lag_bytes"]), m["upstream_lag_bytes"]]);
            same(
                "master offset",
                &[
                    num(&master["master_offset"]),
                    m["upstream_master_offset_bytes"],
                ],
            );
            same(
                "sync total",
                &[
                    num(&master["sync_total_bytes"]),
                    m["upstream_sync_total_bytes"],
                ],
            );
            same(
                "replicas",
                &[
                    int("connected_slaves"),
                    s["replicas"].as_array().unwrap().len() as f64,
                    m["replicas_connected"],
                ],
            );
            for (n, r) in s["replicas"].as_array().unwrap().iter().enumerate() {
                let name = format!("{}:{}", r["ip"].as_str().unwrap(), r["port"]);
                let slave = &i[&format!("slave{n}")];
                let offset: f64 = slave
                    .split("offset=")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                same("replica offset", &[offset, num(&r["ack_offset"])]);
                same(
                    "replica lag",
                    &[
                        num(&r["lag_bytes"]),
                        m[&format!("replica_lag_bytes{{replica=\"{name}\"}}")],
                    ],
                );
            }
            for (k, metric) in [
                ("behind_bytes", "archive_behind_bytes"),
                ("behind_seconds", "archive_behind_seconds"),
                ("uploaded_bytes", "archive_uploaded_bytes_total"),
                ("uploaded_objects", "archive_uploaded_objects_total"),
                ("deleted_objects", "archive_deleted_objects_total"),
                ("failures", "archive_failures_total"),
            ] {
                let fields = [int(&format!("relay_archive_{k}")), num(&s["archive"][k])];
                same(&format!("archive {k}"), &[fields[0], fields[1], m[metric]]);
            }
            same(
                "archive last upload",
                &[
                    f64::from(u8::from(
                        i["relay_archive_last_upload"] == s["archive"]["last_upload"],
                    )),
                    1.0,
                ],
            );
            let compression = &s["compression"];
            for side in ["upstream", "downstream"] {
                let line = &i[&format!("relay_{side}_compression")];
                let field = |k: &str| {
                    let kv = line
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='));
                    kv.unwrap().parse::<f64>().unwrap()
                };
                let of = &compression[side];
                for k in ["links", "wire_bytes", "stream_bytes"] {
                    same(&format!("{side} compression {k}"), &[field(k), num(&of[k])]);
                }
                same(
                    &format!("{side} ratio"),
                    &[field("ratio"), (num(&of["ratio"]) * 1e4).round() / 1e4],
                );
            }
            same(
                "compressed links",
                &[
                    num(&compression["upstream"]["links"]),
                    m["upstream_compressed"],
                ],
            );
            same(
                "compressed links behind",
                &[
                    num(&compression["downstream"]["links"]),
                    m["downstream_compressed_links"],
                ],
            );
            same(
                "syncs running",
                &[int("relay_full_syncs_running"), m["full_syncs_running"]],
            );
            same(
                "syncs waiting",
                &[int("relay_full_syncs_waiting"), m["full_syncs_waiting"]],
            );
            let restore = &store["restore"];
            same(
                "window",
                &[
                    int("relay_restore_window_seconds"),
                    num(&restore["window_seconds"]),
                    m["restore_window_seconds"],
                ],
            );
            same(
                "configured",
                &[
                    int("relay_restore_window_configured_seconds"),
                    num(&restore["configured_seconds"]),
                    m["restore_window_configured_seconds"],
                ],
            );
            same(
                "points",
                &[
                    int("relay_restore_points"),
                    num(&restore["points"]),
                    m["restore_points"],
                ],
            );
            same(
                "shrunk",
                &[
                    int("relay_restore_window_shrunk"),
                    flag(&restore["shrunk"]),
                    m["restore_window_shrunk"],
                ],
            );
            same(
                "held",
                &[
                    int("relay_empty_master_held"),
                    flag(&s["empty_master_held"]),
                    m["empty_master_held"],
                ],
            );
            same(
                "master is replica",
                &[int("relay_master_is_replica"), m["master_is_replica"]],
            );
            let compactor = f64::from(u8::from(i["relay_snapshot_made_by"] == "compactor"));
            let made_by = f64::from(u8::from(store["snapshot_made_by"] == "compactor"));
            same(
                "made by",
                &[compactor, made_by, m["snapshot_from_compactor"]],
            );
            let watching = f64::from(u8::from(i["relay_sentinel_watching"] != "none"));
            let status_watching = f64::from(u8::from(!s["sentinel"]["watching"].is_null()));
            same(
                "sentinel",
                &[watching, status_watching, m["sentinel_watching"]],
            );
        }
    }
}

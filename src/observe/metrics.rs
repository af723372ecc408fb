//! Every Prometheus metric the relay exports, in one registry. Counters are incremented where
//! things happen (and INFO reads them back); gauges that describe state are set from the
//! relay's state when `/metrics` is scraped, so they are never stale and cost nothing between
//! scrapes. Label sets are bounded: command names come from a fixed list, replicas from the
//! connected ones (their series are removed when they leave).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use super::RelayView;
use super::facts::Facts;
use crate::downstream::ReplicaState;
use crate::instruments::{Collectors, PREFIX};
use crate::link::LinkState;
use crate::upstream::SnapshotOrigin;

pub struct Metrics {
    registry: Registry,
    pub upstream_link_up: IntGauge,
    pub upstream_state: IntGaugeVec,
    pub upstream_offset: IntGauge,
    /// No labels: without a sample while the master's offset is unknown.
    pub upstream_master_offset: IntGaugeVec,
    pub upstream_lag: IntGaugeVec,
    pub upstream_lag_known: IntGauge,
    pub upstream_last_io: Gauge,
    pub upstream_link_down_since: Gauge,
    pub upstream_sync_received: IntGauge,
    pub upstream_sync_total: IntGauge,
    pub master_is_replica: IntGauge,
    pub empty_master_held: IntGauge,
    pub sentinel_watching: IntGauge,
    pub snapshot_from_compactor: IntGauge,
    pub compactor_last_seconds: Gauge,
    pub compactor_last_bytes: IntGauge,
    pub compactor_last_peak_rss: IntGauge,
    pub snapshot_bytes: IntGauge,
    pub snapshot_offset: IntGauge,
    pub snapshot_age: Gauge,
    pub snapshot_keys: IntGaugeVec,
    pub backlog_first_offset: IntGauge,
    pub backlog_last_offset: IntGauge,
    pub backlog_disk_bytes: IntGauge,
    pub restore_window: IntGauge,
    pub restore_window_configured: IntGauge,
    pub restore_window_shrunk: IntGauge,
    pub restore_points: IntGauge,
    pub disk_free: IntGauge,
    pub disk_total: IntGauge,
    pub commands: IntCounterVec,
    pub stream_bytes: IntCounter,
    pub replicas_connected: IntGauge,
    pub full_syncs_running: IntGauge,
    pub full_syncs_waiting: IntGauge,
    pub upstream_compressed: IntGauge,
    pub downstream_compressed_links: IntGauge,
    pub incompatible_replicas: IntGauge,
    pub replica_lag: IntGaugeVec,
    pub replica_ack_age: GaugeVec,
    pub replica_state: IntGaugeVec,
}

/// Registers metrics under the relay's prefix.
struct Builder<'a>(&'a Registry);

impl Builder<'_> {
    fn opts(name: &str, help: &str) -> Opts {
        Opts::new(name, help).namespace(PREFIX)
    }

    fn register<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> M {
        self.0
            .register(Box::new(m.clone()))
            .expect("metric names are unique");
        m
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::with_opts(Self::opts(name, help)).expect("valid"))
    }

    fn fgauge(&self, name: &str, help: &str) -> Gauge {
        self.register(Gauge::with_opts(Self::opts(name, help)).expect("valid"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Self::opts(name, help), labels).expect("valid"))
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::with_opts(Self::opts(name, help)).expect("valid"))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Self::opts(name, help), labels).expect("valid"))
    }
}

impl Metrics {
    /// The relay's gauges, and the counters every room made of its own (`rooms`), in one
    /// registry.
    pub fn new(rooms: &[&dyn Collectors]) -> Metrics {
        let registry = Registry::new();
        let b = Builder(&registry);
        let metrics = Metrics {
            upstream_link_up: b.gauge(
                "upstream_link_up",
                "1 while the link with the master is up.",
            ),
            upstream_state: b.gauges(
                "upstream_state",
                "1 for the upstream link's current state.",
                &["state"],
            ),
            upstream_offset: b.gauge(
                "upstream_offset_bytes",
                "Replication offset the relay has stored (master_repl_offset).",
            ),
            upstream_master_offset: b.gauges(
                "upstream_master_offset_bytes",
                "The master's master_repl_offset, read with INFO on a separate connection; absent while it cannot be read.",
                &[],
            ),
            upstream_lag: b.gauges(
                "upstream_lag_bytes",
                "Bytes the master has that the relay has not stored yet; absent while the master's offset is unknown.",
                &[],
            ),
            upstream_lag_known: b.gauge(
                "upstream_lag_known",
                "1 when the master's offset was read recently, so upstream_lag_bytes is exact; 0 when the lag is unknown.",
            ),
            upstream_last_io: b.fgauge(
                "upstream_last_io_seconds",
                "Seconds since the last byte from the master while the link is up; -1 while it is down (see upstream_link_down_since_seconds).",
            ),
            upstream_link_down_since: b.fgauge(
                "upstream_link_down_since_seconds",
                "Seconds the link has been down; 0 while up, -1 if it never was.",
            ),
            upstream_sync_received: b.gauge(
                "upstream_sync_received_bytes",
                "Bytes of the snapshot being received so far.",
            ),
            upstream_sync_total: b.gauge(
                "upstream_sync_total_bytes",
                "Size of the snapshot being received, when announced; else -1.",
            ),
            master_is_replica: b.gauge(
                "master_is_replica",
                "1 when the master the relay follows says role:slave in its INFO.",
            ),
            empty_master_held: b.gauge(
                "empty_master_held",
                "1 while the empty-master guard keeps the stored data from an empty master with another history.",
            ),
            sentinel_watching: b.gauge(
                "sentinel_watching",
                "1 when the relay listens to a Sentinel for failovers (with --sentinel).",
            ),
            snapshot_from_compactor: b.gauge(
                "snapshot_from_compactor",
                "1 when the compactor made the snapshot in service, 0 when the master did (or it was on disk at start).",
            ),
            compactor_last_seconds: b.fgauge(
                "compactor_last_duration_seconds",
                "How long the compactor's last run took; -1 before the first.",
            ),
            compactor_last_bytes: b.gauge(
                "compactor_last_snapshot_bytes",
                "Size of the snapshot the compactor's last successful run made; 0 after a failed one.",
            ),
            compactor_last_peak_rss: b.gauge(
                "compactor_last_peak_rss_bytes",
                "Peak memory (RSS) of the compactor's server in its last successful run.",
            ),
            snapshot_bytes: b.gauge("snapshot_bytes", "Size of the snapshot in service."),
            snapshot_offset: b.gauge(
                "snapshot_offset",
                "Replication offset the snapshot in service was taken at.",
            ),
            snapshot_age: b.fgauge("snapshot_age_seconds", "Age of the snapshot in service."),
            snapshot_keys: b.gauges(
                "snapshot_keys",
                "Keys in the snapshot in service, per db.",
                &["db"],
            ),
            backlog_first_offset: b.gauge(
                "backlog_first_offset",
                "Offset of the first byte the relay keeps.",
            ),
            backlog_last_offset: b.gauge(
                "backlog_last_offset",
                "Offset of the last byte the relay keeps.",
            ),
            backlog_disk_bytes: b.gauge("backlog_disk_bytes", "Disk used by the stream log."),
            restore_window: b.gauge(
                "restore_window_seconds",
                "How far back replica-relay restore can go from now (0 before the relay stored any time).",
            ),
            restore_window_configured: b.gauge(
                "restore_window_configured_seconds",
                "The window --restore-window asks for; 0 when it is off.",
            ),
            restore_window_shrunk: b.gauge(
                "restore_window_shrunk",
                "1 while --restore-max-disk holds the restore window shorter than --restore-window.",
            ),
            restore_points: b.gauge(
                "restore_points",
                "Older snapshots kept for restore besides the one in service.",
            ),
            disk_free: b.gauge(
                "store_disk_free_bytes",
                "Free bytes on the filesystem of --dir, for unprivileged users.",
            ),
            disk_total: b.gauge("store_disk_total_bytes", "Size of the filesystem of --dir."),
            commands: b.counters(
                "commands_total",
                "Commands in the replication stream, by name (others as \"other\").",
                &["command"],
            ),
            stream_bytes: b.counter("stream_bytes_total", "Bytes of replication stream stored."),
            replicas_connected: b.gauge("replicas_connected", "Replicas attached to the relay."),
            full_syncs_running: b.gauge(
                "full_syncs_running",
                "Full syncs being sent, at most --max-full-syncs.",
            ),
            full_syncs_waiting: b.gauge(
                "full_syncs_waiting",
                "Full syncs waiting for a slot (--max-full-syncs), in arrival order.",
            ),
            upstream_compressed: b.gauge(
                "upstream_compressed",
                "1 while the link from an upstream relay is compressed (--upstream-compression).",
            ),
            downstream_compressed_links: b.gauge(
                "downstream_compressed_links",
                "Relays behind this one served over a compressed link.",
            ),
            incompatible_replicas: b.gauge("incompatible_replicas", "Replicas taken as unable to load the snapshot's format; their full syncs are backed off."),
            replica_lag: b.gauges(
                "replica_lag_bytes",
                "Bytes between the relay's offset and the replica's last ACK.",
                &["replica"],
            ),
            replica_ack_age: b.register(
                GaugeVec::new(
                    Builder::opts(
                        "replica_ack_age_seconds",
                        "Seconds since the replica's last ACK.",
                    ),
                    &["replica"],
                )
                .expect("valid"),
            ),
            replica_state: b.gauges(
                "replica_state",
                "1 for the replica's current state.",
                &["replica", "state"],
            ),
            registry,
        };
        for c in rooms.iter().flat_map(|r| r.collectors()) {
            metrics
                .registry
                .register(c)
                .expect("metric names are unique");
        }
        registry_process_collector(&metrics.registry);
        metrics
    }

    /// The text exposition, with state gauges brought up to date first.
    pub fn render(&self, relay: &RelayView) -> String {
        self.render_facts(relay, &Facts::gather(relay))
    }

    /// The exposition of the facts of one moment.
    pub fn render_facts(&self, relay: &RelayView, facts: &Facts) -> String {
        self.refresh(relay, facts);
        let mut out = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!("Encoding metrics: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn refresh(&self, relay: &RelayView, facts: &Facts) {
        self.refresh_upstream(facts);
        self.refresh_store(relay, facts);
        self.refresh_feed(facts);
        self.refresh_replicas(relay, facts);
    }

    fn refresh_upstream(&self, facts: &Facts) {
        let link = &facts.link;
        self.upstream_link_up.set(i64::from(facts.link_up()));
        for s in LinkState::ALL {
            self.upstream_state
                .with_label_values(&[s.role_name()])
                .set(i64::from(s == link.state));
        }
        self.upstream_offset.set(facts.offset() as i64);
        let known = facts.master_offset.filter(|_| facts.master.is_some());
        self.upstream_lag_known.set(i64::from(known.is_some()));
        match known.zip(facts.lag_bytes()) {
            Some((master, lag)) => {
                self.upstream_master_offset
                    .with_label_values::<&str>(&[])
                    .set(master as i64);
                self.upstream_lag
                    .with_label_values::<&str>(&[])
                    .set(lag as i64);
            }
            None => {
                self.upstream_master_offset.reset();
                self.upstream_lag.reset();
            }
        }
        self.upstream_last_io
            .set(facts.last_io_seconds().map_or(-1.0, |t| t as f64));
        let down = match facts.down_seconds() {
            Some(t) => t as f64,
            None if facts.link_up() => 0.0,
            None => -1.0,
        };
        self.upstream_link_down_since.set(down);
        self.master_is_replica
            .set(i64::from(facts.master_is_replica()));
        self.empty_master_held
            .set(i64::from(link.empty_master_held));
        self.sentinel_watching
            .set(i64::from(facts.sentinel.watching.is_some()));
        let compactor = &facts.compactor;
        self.snapshot_from_compactor
            .set(i64::from(compactor.origin == SnapshotOrigin::Compactor));
        let last = compactor.last.as_ref();
        self.compactor_last_seconds
            .set(last.map_or(-1.0, |r| r.duration.as_secs_f64()));
        self.compactor_last_bytes
            .set(last.map_or(0, |r| r.bytes as i64));
        self.compactor_last_peak_rss
            .set(last.map_or(0, |r| r.peak_rss as i64));
        let received = facts
            .store
            .receiving
            .as_ref()
            .map_or(0, |r| r.received as i64);
        self.upstream_sync_received.set(received);
        self.upstream_sync_total
            .set(link.sync_total.map_or(-1, |t| t as i64));
    }

    fn refresh_store(&self, relay: &RelayView, facts: &Facts) {
        let state = &facts.store;
        if let Some(id) = &state.ident {
            self.snapshot_bytes.set(id.snapshot_size as i64);
            self.snapshot_offset.set(id.snapshot_offset as i64);
        }
        let stats = &facts.snapshot;
        let ctime = stats
            .as_ref()
            .and_then(|s| s.aux.get("ctime")?.parse::<u64>().ok());
        if let Some(ctime) = ctime {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            self.snapshot_age
                .set(now.as_secs().saturating_sub(ctime) as f64);
        }
        self.snapshot_keys.reset();
        for (db, d) in stats.iter().flat_map(|s| s.dbs.iter()) {
            self.snapshot_keys
                .with_label_values(&[&db.to_string()])
                .set(d.keys as i64);
        }
        self.backlog_first_offset.set(state.first as i64);
        self.backlog_last_offset.set(facts.offset() as i64);
        self.backlog_disk_bytes.set(facts.log_disk_bytes as i64);
        let w = &state.restore;
        self.restore_window
            .set(facts.restore_window_seconds() as i64);
        self.restore_window_configured
            .set(relay.config.restore_window.map_or(0, |d| d.as_secs()) as i64);
        self.restore_window_shrunk.set(i64::from(w.shrunk));
        self.restore_points.set(w.kept as i64);
        if let Some((free, total)) = crate::store::disk_space(&relay.config.dir) {
            self.disk_free.set(free as i64);
            self.disk_total.set(total as i64);
        }
    }

    /// The stream counters live in the store; counters here catch up with them.
    fn refresh_feed(&self, facts: &Facts) {
        let feed = &facts.stream;
        for (name, n) in &feed.commands {
            let c = self.commands.with_label_values(&[name]);
            c.inc_by(n.saturating_sub(c.get()));
        }
        self.stream_bytes
            .inc_by(feed.bytes.saturating_sub(self.stream_bytes.get()));
    }

    fn refresh_replicas(&self, relay: &RelayView, facts: &Facts) {
        self.replicas_connected.set(facts.replicas.len() as i64);
        self.full_syncs_running.set(facts.full_syncs_running as i64);
        self.full_syncs_waiting.set(facts.full_syncs_waiting as i64);
        self.upstream_compressed
            .set(facts.upstream_compression.links as i64);
        self.downstream_compressed_links
            .set(facts.downstream_compression.links as i64);
        self.incompatible_replicas
            .set(relay.replicas.formats.flagged().len() as i64);
        self.replica_lag.reset();
        self.replica_ack_age.reset();
        self.replica_state.reset();
        for r in &facts.replicas {
            let name = format!("{}:{}", r.ip, r.port);
            self.replica_lag
                .with_label_values(&[&name])
                .set(facts.replica_lag_bytes(r) as i64);
            self.replica_ack_age
                .with_label_values(&[&name])
                .set(r.ack_time.elapsed().as_secs_f64());
            for s in [
                ReplicaState::WaitBgsave,
                ReplicaState::SendBulk,
                ReplicaState::Online,
            ] {
                self.replica_state
                    .with_label_values(&[&name, s.name()])
                    .set(i64::from(s == r.state));
            }
        }
    }
}

fn registry_process_collector(registry: &Registry) {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(e) = registry.register(Box::new(collector)) {
        tracing::warn!("Process metrics unavailable: {e}");
    }
}

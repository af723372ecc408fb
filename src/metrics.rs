//! Every Prometheus metric the relay exports, in one registry. Counters are incremented where
//! things happen (and INFO reads them back); gauges that describe state are set from the
//! relay's state when `/metrics` is scraped, so they are never stale and cost nothing between
//! scrapes. Label sets are bounded: command names come from a fixed list, replicas from the
//! connected ones (their series are removed when they leave).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::downstream::ReplicaState;
use crate::relay::{LinkState, Relay};

const PREFIX: &str = "replica_relay";

const STATES: [LinkState; 6] = [
    LinkState::None,
    LinkState::Connect,
    LinkState::Connecting,
    LinkState::Handshake,
    LinkState::Transfer,
    LinkState::Connected,
];

/// Why the upstream link failed, for `upstream_sync_failures_total{reason}`.
#[derive(Debug, Clone, Copy)]
pub enum FailureReason {
    Connect,
    Auth,
    Psync,
    FullSync,
    SnapshotRejected,
    Timeout,
    Store,
    Link,
}

impl FailureReason {
    fn label(self) -> &'static str {
        match self {
            FailureReason::Connect => "connect",
            FailureReason::Auth => "auth",
            FailureReason::Psync => "psync",
            FailureReason::FullSync => "full_sync",
            FailureReason::SnapshotRejected => "snapshot_rejected",
            FailureReason::Timeout => "timeout",
            FailureReason::Store => "store",
            FailureReason::Link => "link",
        }
    }
}

/// Every `FailureReason` label, so the series exist from the start.
const FAILURE_REASONS: [&str; 8] = [
    "connect",
    "auth",
    "psync",
    "full_sync",
    "snapshot_rejected",
    "timeout",
    "store",
    "link",
];

/// Why a downstream connection or sync was refused.
pub const REJECT_REASONS: [&str; 6] = [
    "maxclients",
    "protected_mode",
    "protocol_error",
    "auth",
    "nomasterlink",
    "rdb_format",
];

/// The store's own instruments, handed to its writer thread.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    pub fsync_seconds: Histogram,
    pub write_errors: IntCounter,
    pub snapshot_corrupt: IntCounter,
}

impl StoreMetrics {
    /// Instruments no registry sees, for tools that open a store read-only.
    pub fn unregistered() -> StoreMetrics {
        StoreMetrics {
            fsync_seconds: Histogram::with_opts(HistogramOpts::new("fsync", "fsync"))
                .expect("valid"),
            write_errors: IntCounter::new("errors", "errors").expect("valid"),
            snapshot_corrupt: IntCounter::new("corrupt", "corrupt").expect("valid"),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pub upstream_link_up: IntGauge,
    pub upstream_state: IntGaugeVec,
    pub upstream_offset: IntGauge,
    pub upstream_master_offset: IntGauge,
    pub upstream_lag: IntGauge,
    pub upstream_last_io: Gauge,
    pub upstream_link_down_since: Gauge,
    pub upstream_full_syncs: IntCounter,
    pub upstream_partial_syncs: IntCounter,
    pub upstream_sync_failures: IntCounterVec,
    pub upstream_received: IntCounterVec,
    pub upstream_sync_received: IntGauge,
    pub upstream_sync_total: IntGauge,
    pub snapshot_refreshes: IntCounter,
    pub snapshot_bytes: IntGauge,
    pub snapshot_offset: IntGauge,
    pub snapshot_age: Gauge,
    pub snapshot_keys: IntGaugeVec,
    pub backlog_first_offset: IntGauge,
    pub backlog_last_offset: IntGauge,
    pub backlog_disk_bytes: IntGauge,
    pub disk_free: IntGauge,
    pub disk_total: IntGauge,
    pub store: StoreMetrics,
    pub commands: IntCounterVec,
    pub stream_bytes: IntCounter,
    pub replicas_connected: IntGauge,
    pub incompatible_replicas: IntGauge,
    pub replica_lag: IntGaugeVec,
    pub replica_ack_age: GaugeVec,
    pub replica_state: IntGaugeVec,
    pub downstream_full_syncs: IntCounter,
    pub downstream_partial_syncs: IntCounter,
    pub downstream_partial_sync_errors: IntCounter,
    pub downstream_rejected: IntCounterVec,
    pub downstream_sent: IntCounterVec,
    pub connections_received: IntCounter,
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
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let b = Builder(&registry);
        let fsync = HistogramOpts::new("store_fsync_seconds", "Time each fsync of the log took.")
            .namespace(PREFIX)
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]);
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
            upstream_master_offset: b.gauge(
                "upstream_master_offset_bytes",
                "The master's master_repl_offset, read with INFO on a separate connection.",
            ),
            upstream_lag: b.gauge(
                "upstream_lag_bytes",
                "Bytes the master has that the relay has not stored yet.",
            ),
            upstream_last_io: b.fgauge(
                "upstream_last_io_seconds",
                "Seconds since the last byte from the master.",
            ),
            upstream_link_down_since: b.fgauge(
                "upstream_link_down_since_seconds",
                "Seconds the link has been down; 0 while up, -1 if it never was.",
            ),
            upstream_full_syncs: b.counter(
                "upstream_full_syncs_total",
                "Full syncs the relay made with its master.",
            ),
            upstream_partial_syncs: b.counter(
                "upstream_partial_syncs_total",
                "Partial resyncs the relay made with its master.",
            ),
            upstream_sync_failures: b.counters(
                "upstream_sync_failures_total",
                "Upstream links that failed, by reason.",
                &["reason"],
            ),
            upstream_received: b.counters(
                "upstream_received_bytes_total",
                "Bytes received from the master.",
                &["phase"],
            ),
            upstream_sync_received: b.gauge(
                "upstream_sync_received_bytes",
                "Bytes of the snapshot being received so far.",
            ),
            upstream_sync_total: b.gauge(
                "upstream_sync_total_bytes",
                "Size of the snapshot being received, when announced; else -1.",
            ),
            snapshot_refreshes: b.counter(
                "snapshot_refreshes_total",
                "Fresh snapshots fetched on a second connection.",
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
            disk_free: b.gauge(
                "store_disk_free_bytes",
                "Free bytes on the filesystem of --dir, for unprivileged users.",
            ),
            disk_total: b.gauge("store_disk_total_bytes", "Size of the filesystem of --dir."),
            store: StoreMetrics {
                fsync_seconds: b.register(Histogram::with_opts(fsync).expect("valid")),
                write_errors: b.counter(
                    "store_write_errors_total",
                    "Writes or fsyncs of the store that failed.",
                ),
                snapshot_corrupt: b.counter(
                    "store_snapshot_corrupt_total",
                    "Stored snapshots taken out of service because they failed verification, at start or while serving a full sync.",
                ),
            },
            commands: b.counters(
                "commands_total",
                "Commands in the replication stream, by name (others as \"other\").",
                &["command"],
            ),
            stream_bytes: b.counter("stream_bytes_total", "Bytes of replication stream stored."),
            replicas_connected: b.gauge("replicas_connected", "Replicas attached to the relay."),
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
            downstream_full_syncs: b.counter(
                "downstream_full_syncs_total",
                "Full syncs served to replicas.",
            ),
            downstream_partial_syncs: b.counter(
                "downstream_partial_syncs_total",
                "Partial resyncs served to replicas.",
            ),
            downstream_partial_sync_errors: b.counter(
                "downstream_partial_sync_errors_total",
                "Partial resyncs asked for that had to be full syncs.",
            ),
            downstream_rejected: b.counters(
                "downstream_rejected_total",
                "Connections or syncs refused, by reason.",
                &["reason"],
            ),
            downstream_sent: b.counters(
                "downstream_sent_bytes_total",
                "Bytes sent to replicas.",
                &["phase"],
            ),
            connections_received: b
                .counter("connections_received_total", "Client connections accepted."),
            registry,
        };
        metrics.initialise_labels();
        registry_process_collector(&metrics.registry);
        metrics
    }

    /// Series with known labels exist from the start, at zero, so rates and alerts see them.
    fn initialise_labels(&self) {
        for reason in FAILURE_REASONS {
            self.upstream_sync_failures.with_label_values(&[reason]);
        }
        for phase in ["snapshot", "stream"] {
            self.upstream_received.with_label_values(&[phase]);
            self.downstream_sent.with_label_values(&[phase]);
        }
        for reason in REJECT_REASONS {
            self.downstream_rejected.with_label_values(&[reason]);
        }
    }

    pub fn failure(&self, reason: FailureReason) {
        self.upstream_sync_failures
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub fn failures(&self) -> u64 {
        FAILURE_REASONS
            .iter()
            .map(|r| self.upstream_sync_failures.with_label_values(&[r]).get())
            .sum()
    }

    pub fn rejected(&self, reason: &str) {
        self.downstream_rejected.with_label_values(&[reason]).inc();
    }

    pub fn rejections(&self) -> u64 {
        REJECT_REASONS
            .iter()
            .map(|r| self.downstream_rejected.with_label_values(&[r]).get())
            .sum()
    }

    /// The text exposition, with state gauges brought up to date first.
    pub fn render(relay: &Relay) -> String {
        relay.metrics.refresh(relay);
        let mut out = Vec::new();
        let families = relay.metrics.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!("Encoding metrics: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn refresh(&self, relay: &Relay) {
        self.refresh_upstream(relay);
        self.refresh_store(relay);
        self.refresh_feed(relay);
        self.refresh_replicas(relay);
    }

    fn refresh_upstream(&self, relay: &Relay) {
        let link = relay.link();
        let state = relay.store.view();
        self.upstream_link_up
            .set(i64::from(link.state == LinkState::Connected));
        for s in STATES {
            self.upstream_state
                .with_label_values(&[s.role_name()])
                .set(i64::from(s == link.state));
        }
        let offset = state.master_repl_offset() as i64;
        self.upstream_offset.set(offset);
        let master = self.upstream_master_offset.get();
        self.upstream_lag.set(if master > 0 {
            (master - offset).max(0)
        } else {
            0
        });
        let secs = |t: Option<std::time::Instant>| t.map_or(-1.0, |t| t.elapsed().as_secs_f64());
        self.upstream_last_io.set(secs(link.last_io));
        let down = if link.state == LinkState::Connected {
            0.0
        } else {
            secs(link.down_since)
        };
        self.upstream_link_down_since.set(down);
        let received = state.receiving.as_ref().map_or(0, |r| r.received as i64);
        self.upstream_sync_received.set(received);
        self.upstream_sync_total
            .set(link.sync_total.map_or(-1, |t| t as i64));
    }

    fn refresh_store(&self, relay: &Relay) {
        let state = relay.store.view();
        if let Some(id) = &state.ident {
            self.snapshot_bytes.set(id.snapshot_size as i64);
            self.snapshot_offset.set(id.snapshot_offset as i64);
        }
        let stats = relay.store.snapshot_stats();
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
        self.backlog_last_offset
            .set(state.master_repl_offset() as i64);
        self.backlog_disk_bytes
            .set(relay.store.log_disk_bytes() as i64);
        if let Some((free, total)) = disk_space(&relay.config.dir) {
            self.disk_free.set(free as i64);
            self.disk_total.set(total as i64);
        }
    }

    /// The stream counters live in the store; counters here catch up with them.
    fn refresh_feed(&self, relay: &Relay) {
        let feed = relay.store.stream_stats();
        for (name, n) in &feed.commands {
            let c = self.commands.with_label_values(&[name]);
            c.inc_by(n.saturating_sub(c.get()));
        }
        self.stream_bytes
            .inc_by(feed.bytes.saturating_sub(self.stream_bytes.get()));
    }

    fn refresh_replicas(&self, relay: &Relay) {
        let replicas = relay.replicas.list();
        let offset = relay.store.view().master_repl_offset();
        self.replicas_connected.set(replicas.len() as i64);
        self.incompatible_replicas
            .set(relay.replicas.formats.flagged().len() as i64);
        self.replica_lag.reset();
        self.replica_ack_age.reset();
        self.replica_state.reset();
        for r in replicas {
            let name = format!("{}:{}", r.ip, r.port);
            self.replica_lag
                .with_label_values(&[&name])
                .set(offset.saturating_sub(r.ack_offset) as i64);
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

/// Free (for unprivileged users) and total bytes of the filesystem holding `dir`.
fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let block = st.f_frsize as u64;
    Some((st.f_bavail as u64 * block, st.f_blocks as u64 * block))
}

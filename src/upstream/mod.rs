//! The upstream link: the relay as one replica of the master (PROTOCOL §1–3, §8).
//!
//! One task follows the configured master: connect, PING, AUTH, REPLCONF, PSYNC, then either
//! receive a snapshot or continue, then stream. Everything received goes to the store in order;
//! the only bytes ever sent upstream after PSYNC are `REPLCONF ACK <offset>`. On a failure the
//! link is retried (`retry`: after a second, or longer), resuming with
//! `PSYNC <replid> <offset+1>`. A second, short
//! connection fetches a fresh snapshot now and then (`refresh`) so the log can be trimmed.

pub mod cluster;
mod compact;
mod failure;
pub use compact::decide as decide_snapshot_source;
pub mod master_info;
mod refresh;
mod retry;
pub mod sentinel;
mod state;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tracing::{debug, info, warn};

use tokio_util::sync::CancellationToken;

use crate::config::{
    AnnounceVersion, ClusterShard, Config, MasterAddr, SnapshotRefresh, SnapshotSource, ZstdLink,
};
use crate::decode::SnapshotFacts;
use crate::instruments::{self, Collectors, Labelled, Phase};
use crate::link::{LinkControl, LinkReporter, LinkState};
use crate::progress::Progress;
use crate::store::{Slot, Store, StoreWriter};
use crate::tls::Dialer;
pub use failure::FailureReason;
use failure::{Failure, LinkError, during};
pub use state::{ClusterView, CompactorRun, CompactorView, SentinelView, Shown, SnapshotOrigin};
use wire::{Auth, Framing, MasterConn, PsyncReply};

/// What the upstream room works with: the store (its reading side, and the writing side, which
/// it alone holds), the link's status (which it alone reports), the master to follow, its
/// counters.
pub struct Upstream {
    pub settings: Settings,
    pub store: Store,
    pub writer: StoreWriter,
    pub link: LinkReporter,
    pub control: LinkControl,
    /// TCP, or TLS with `--tls-replication yes`.
    pub dialer: Dialer,
    pub metrics: Arc<UpstreamMetrics>,
    /// Where fresh snapshots come from and the compactor's last run, for observe.
    pub compactor: Shown<CompactorView>,
    /// What the Sentinels said, for observe.
    pub sentinel: Shown<SentinelView>,
    /// The cluster shard followed, for observe.
    pub cluster: Shown<ClusterView>,
    /// The link to the master failed: the cluster watcher looks at the cluster at once.
    pub link_lost: tokio::sync::Notify,
    pub shutdown: CancellationToken,
}

/// The upstream room's counters.
pub struct UpstreamMetrics {
    pub full_syncs: prometheus::IntCounter,
    pub partial_syncs: prometheus::IntCounter,
    pub failures: Labelled<FailureReason>,
    pub received: Labelled<Phase>,
    pub snapshot_refreshes: prometheus::IntCounter,
    pub master_forks: prometheus::IntCounter,
    pub compactor_runs: prometheus::IntCounter,
    pub compactor_failures: prometheus::IntCounter,
    pub compactor_mismatches: prometheus::IntCounter,
    /// What arrives compressed from an upstream relay (`--upstream-compression`).
    pub compression: crate::compress::Counters,
}

impl UpstreamMetrics {
    pub fn new() -> UpstreamMetrics {
        UpstreamMetrics {
            full_syncs: instruments::counter(
                "upstream_full_syncs_total",
                "Full syncs the relay made with its master.",
            ),
            partial_syncs: instruments::counter(
                "upstream_partial_syncs_total",
                "Partial resyncs the relay made with its master.",
            ),
            failures: Labelled::new(
                "upstream_sync_failures_total",
                "Upstream links that failed, by reason.",
            ),
            received: Labelled::new(
                "upstream_received_bytes_total",
                "Bytes received from the master.",
            ),
            snapshot_refreshes: instruments::counter(
                "snapshot_refreshes_total",
                "Snapshot refreshes started, by the compactor or from the master.",
            ),
            master_forks: instruments::counter(
                "master_forks_total",
                "Snapshots the relay asked of its master (+FULLRESYNC): each one a fork there.",
            ),
            compactor_runs: instruments::counter(
                "compactor_runs_total",
                "Fresh snapshots the compactor was asked to make (--snapshot-source local).",
            ),
            compactor_failures: instruments::counter(
                "compactor_failures_total",
                "Compactor runs that failed, each followed by a refresh from the master.",
            ),
            compactor_mismatches: instruments::counter(
                "compactor_mismatches_total",
                "Compactor snapshots refused because their replication identity (offset, stream database) is not what the relay's own log gives: never served. Any is a defect to report.",
            ),
            compression: crate::compress::Counters::new(
                "upstream",
                "received from the upstream relay",
            ),
        }
    }
}

impl Collectors for UpstreamMetrics {
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.full_syncs.clone()),
            Box::new(self.partial_syncs.clone()),
            self.failures.collector(),
            self.received.collector(),
            Box::new(self.snapshot_refreshes.clone()),
            Box::new(self.master_forks.clone()),
            Box::new(self.compactor_runs.clone()),
            Box::new(self.compactor_failures.clone()),
            Box::new(self.compactor_mismatches.clone()),
        ]
        .into_iter()
        .chain(self.compression.collectors())
        .collect()
    }
}

/// What the upstream room reads of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub replicaof: Option<MasterAddr>,
    pub masterauth: Option<String>,
    pub masteruser: Option<String>,
    /// Where the relay's replicas connect (`REPLCONF listening-port`).
    pub announced_port: u16,
    pub announce_version: AnnounceVersion,
    pub repl_timeout: Duration,
    pub master_info_interval: Option<Duration>,
    pub empty_master_guard: bool,
    pub dir: std::path::PathBuf,
    pub snapshot_refresh: SnapshotRefresh,
    pub snapshot_source: Option<SnapshotSource>,
    pub compactor_server: Option<std::path::PathBuf>,
    pub compactor_maxmemory: Option<crate::config::Bytes>,
    pub sentinels: Vec<MasterAddr>,
    pub sentinel_master: Option<String>,
    pub sentinel_user: Option<String>,
    pub sentinel_password: Option<String>,
    pub cluster_nodes: Vec<MasterAddr>,
    pub cluster_shard: Option<ClusterShard>,
    /// A compressed link to ask of an upstream relay.
    pub compression: Option<ZstdLink>,
}

impl Settings {
    pub fn of(c: &Config) -> Settings {
        Settings {
            replicaof: c.replicaof.clone(),
            masterauth: c.masterauth.clone(),
            masteruser: c.masteruser.clone(),
            announced_port: c.announced_port(),
            announce_version: c.announce_version.clone(),
            repl_timeout: c.repl_timeout,
            master_info_interval: c.master_info_interval,
            empty_master_guard: c.empty_master_guard,
            dir: c.dir.clone(),
            snapshot_refresh: c.snapshot_refresh,
            snapshot_source: c.snapshot_source,
            compactor_server: c.compactor_server.clone(),
            compactor_maxmemory: c.compactor_maxmemory,
            sentinels: c.sentinels.clone(),
            sentinel_master: c.sentinel_master.clone(),
            sentinel_user: c.sentinel_user.clone(),
            sentinel_password: c.sentinel_password.clone(),
            cluster_nodes: c.cluster_nodes.clone(),
            cluster_shard: c.cluster_shard.clone(),
            compression: c
                .upstream_compression
                .settings(c)
                .expect("checked with the configuration"),
        }
    }
}

/// Follows `relay.master` until shutdown.
pub async fn run(up: Arc<Upstream>) {
    let mut master_rx = up.control.subscribe();
    let mut retry = retry::Retry::default();
    // The master the empty-master guard holds the relay back from, said once per master.
    let mut held_from: Option<MasterAddr> = None;
    loop {
        let Some(master) = master_rx.borrow_and_update().clone() else {
            up.link.set_state(LinkState::None);
            tokio::select! {
                r = master_rx.changed() => if r.is_err() { return },
                _ = up.shutdown.cancelled() => return,
            }
            continue;
        };
        let ended = tokio::select! {
            r = Link::run(&up, &master) => Some(r),
            _ = master_rx.changed() => None,
            _ = up.shutdown.cancelled() => None,
        };
        up.link.set_state(LinkState::Connect);
        up.link.update(|l| {
            l.sync_total = None;
            l.snapshot_pending = false;
        });
        if let Err(e) = up.writer.abort_snapshot(Slot::Main).await {
            warn!("{e:#}");
        }
        let error = ended.as_ref().and_then(|r| r.as_ref().err());
        let wait = retry.after(error, &up.settings.dir);
        let held = error.is_some_and(|e| e.reason == FailureReason::EmptyMaster);
        if let Some(e) = error
            && !held
        {
            up.metrics.failures.inc(e.reason);
            up.link_lost.notify_one();
        }
        up.link.update(|l| l.empty_master_held = held);
        let said = held && held_from.as_ref() == Some(&master);
        held_from = held.then(|| master.clone());
        match ended {
            Some(Err(e)) if said => debug!("{e:#}"),
            Some(Err(e)) => warn!("{e:#}{}", wait.says()),
            Some(Ok(())) => {}
            None if up.shutdown.is_cancelled() => return,
            None => {
                info!("Dropping the link with master {master}: the master was changed");
                continue;
            }
        }
        tokio::select! {
            _ = wait.done(&up.settings.dir) => {}
            _ = master_rx.changed() => {}
            _ = up.shutdown.cancelled() => return,
        }
    }
}

/// One connection to the master: the replication link (`Slot::Main`) or a snapshot refresh.
struct Link<'a> {
    up: &'a Arc<Upstream>,
    master: MasterAddr,
    slot: Slot,
    conn: MasterConn,
}

impl<'a> Link<'a> {
    async fn run(up: &'a Arc<Upstream>, master: &MasterAddr) -> Result<(), LinkError> {
        let mut link = Link::connect(up, master, Slot::Main)
            .await
            .map_err(during(FailureReason::Connect))?;
        let server = link
            .handshake()
            .await
            .map_err(during(FailureReason::Link))?;
        link.guard(&server)
            .map_err(during(FailureReason::EmptyMaster))?;
        up.link.update(|l| l.empty_master_held = false);
        let reply = link.psync().await.map_err(during(FailureReason::Psync))?;
        if let PsyncReply::Full { replid, offset } = reply {
            link.full_sync(replid, offset)
                .await
                .map_err(during(FailureReason::FullSync))?;
            up.compactor.update(|c| c.origin = SnapshotOrigin::Master);
        }
        link.stream().await.map_err(during(FailureReason::Link))
    }

    fn is_main(&self) -> bool {
        self.slot == Slot::Main
    }

    async fn connect(
        up: &'a Arc<Upstream>,
        master: &MasterAddr,
        slot: Slot,
    ) -> Result<Link<'a>, Failure> {
        if slot == Slot::Main {
            up.link.set_state(LinkState::Connecting);
            info!("Connecting to MASTER {master}");
        }
        let mut conn = MasterConn::connect(&up.dialer, master, up.settings.repl_timeout).await?;
        if let Some(link) = up.settings.compression {
            conn.ask_compression(link, up.metrics.compression.clone());
        }
        if slot == Slot::Main {
            info!("MASTER <-> REPLICA sync started");
            up.link.set_state(LinkState::Handshake);
        }
        Ok(Link {
            up,
            master: master.clone(),
            slot,
            conn,
        })
    }

    /// The empty-master guard (`--empty-master-guard`): a master that cannot continue the
    /// relay's history and holds no keys, while the relay serves data, is most likely one
    /// without persistence restarted empty. Its full sync would empty every replica behind
    /// the relay; the relay waits instead (retrying every second) until it holds data, the
    /// operator runs REPLICAOF for it again, or the relay is moved to another master.
    fn guard(&self, server: &wire::MasterServer) -> Result<(), Failure> {
        let up = self.up;
        let Some(history) = server.history.as_ref().filter(|h| h.keys == 0) else {
            return Ok(());
        };
        let view = up.store.view();
        let Some(ident) = view.ident.as_ref() else {
            return Ok(());
        };
        if !up.settings.empty_master_guard
            || history.continues(&ident.replid, view.next)
            || !up.store.serves_data()
            || up.control.take_accepted_history()
        {
            return Ok(());
        }
        Err(Failure::EmptyMaster(format!(
            "Master {} holds no keys and has another history (replid {}) than the relay's ({}): keeping the stored data and the replicas behind the relay as they are (--empty-master-guard). The relay takes its history once it holds data, or when REPLICAOF {} {} is run again",
            self.master, history.replid, ident.replid, self.master.host, self.master.port
        )))
    }

    async fn handshake(&mut self) -> Result<wire::MasterServer, Failure> {
        let cfg = &self.up.settings;
        let auth = Auth {
            user: cfg.masteruser.as_deref(),
            pass: cfg.masterauth.as_deref(),
        };
        let server = self
            .conn
            .handshake(
                auth,
                cfg.announced_port,
                !self.is_main(),
                &cfg.announce_version,
            )
            .await?;
        if self.is_main() {
            info!("Master replied to PING, replication can continue...");
            let (version, valkey) = (server.redis_version.clone(), server.valkey.clone());
            let compressed = self.conn.compressed();
            self.up.link.update(|l| {
                l.master_version = version;
                l.master_valkey = valkey;
                l.compressed = compressed;
            });
            if let (Some(valkey), Some(announced)) = (&server.valkey, &server.announced) {
                info!(
                    "Master is Valkey {valkey}: announcing version {announced} (REPLCONF version), by which it picks the snapshot's format"
                );
            }
        }
        Ok(server)
    }

    async fn psync(&mut self) -> Result<PsyncReply, Failure> {
        let (replid, offset) = self.psync_request().await?;
        if self.is_main() {
            let pending = replid == "?";
            self.up.link.update(|l| l.snapshot_pending = pending);
        }
        let reply = self.conn.psync(&replid, &offset).await?;
        if let PsyncReply::Full { .. } = &reply {
            self.up.metrics.master_forks.inc();
        }
        match &reply {
            PsyncReply::Full { replid, offset } if self.is_main() => {
                info!("Full resync from master: {replid}:{offset}");
                self.up.link.update(|l| l.snapshot_pending = true);
            }
            PsyncReply::Full { .. } => {}
            PsyncReply::Continue(_) if !self.is_main() => {
                let why = "the master continued a snapshot refresh instead of sending a snapshot";
                return Err(anyhow!(why).into());
            }
            PsyncReply::Continue(new_id) => {
                info!("Successful partial resynchronization with master.");
                self.up.metrics.partial_syncs.inc();
                if let Some(id) = new_id {
                    self.up.writer.continue_with(id.clone()).await?;
                }
            }
        }
        Ok(reply)
    }

    /// `PSYNC <replid> <offset+1>` when the store holds a history, else `PSYNC ? -1`; a refresh
    /// always asks for a full sync.
    async fn psync_request(&self) -> Result<(String, String)> {
        let full = ("?".to_string(), "-1".to_string());
        if !self.is_main() {
            return Ok(full);
        }
        let resume = self.up.writer.flush().await?;
        Ok(match self.up.store.view().ident {
            Some(id) => {
                info!(
                    "Trying a partial resynchronization (request {}:{resume}).",
                    id.replid
                );
                (id.replid, resume.to_string())
            }
            None => {
                info!("Partial resynchronization not possible (no cached master)");
                full
            }
        })
    }

    async fn full_sync(&mut self, replid: String, offset: u64) -> Result<(), Failure> {
        let up = self.up;
        up.link.set_state(LinkState::Transfer);
        up.metrics.full_syncs.inc();
        let (bytes, facts) = self.receive_snapshot(replid, offset).await?;
        info!(
            "MASTER <-> REPLICA sync: Finished with success ({bytes} bytes, {}{:04}, checksum {})",
            facts.family,
            facts.rdb_version,
            if facts.checksummed {
                "verified"
            } else {
                "disabled by the master"
            }
        );
        self.send_ack().await
    }

    /// Receives the snapshot that follows `+FULLRESYNC` into the store, which verifies it.
    async fn receive_snapshot(
        &mut self,
        replid: String,
        offset: u64,
    ) -> Result<(u64, SnapshotFacts), Failure> {
        let store = &self.up.writer;
        store.begin_snapshot(self.slot, replid, offset).await?;
        let mut framing = self.conn.payload_header().await?;
        let total = match framing {
            Framing::Len(len) => Some(len),
            _ => None,
        };
        if self.is_main() {
            match total {
                Some(len) => {
                    info!("MASTER <-> REPLICA sync: receiving {len} bytes from master to disk")
                }
                None => info!(
                    "MASTER <-> REPLICA sync: receiving streamed RDB from master with EOF to disk"
                ),
            }
            self.up.link.update(|l| l.sync_total = total);
        }
        let mut progress = Progress::new("MASTER <-> REPLICA sync: received", total);
        let mut received = 0;
        let counter = self.up.metrics.received.get(Phase::Snapshot);
        while let Some(chunk) = self.conn.payload_chunk(&mut framing).await? {
            received += chunk.len() as u64;
            counter.inc_by(chunk.len() as u64);
            progress.advance(chunk.len() as u64);
            store.snapshot_data(self.slot, chunk).await?;
            self.touch();
        }
        match store.finish_snapshot(self.slot).await {
            Ok(facts) => Ok((received, facts)),
            Err(e) => Err(Failure::SnapshotRejected(
                e.context("the snapshot was rejected"),
            )),
        }
    }

    async fn stream(&mut self) -> Result<(), Failure> {
        let up = self.up;
        up.link.update(|l| {
            l.state = LinkState::Connected;
            l.down_since = None;
            l.sync_total = None;
            l.snapshot_pending = false;
        });
        let mut status = up.writer.writer_status();
        let (mut getacks, failed) = {
            let s = status.borrow_and_update();
            (s.getacks, s.failed.clone())
        };
        if let Some(why) = failed {
            return Err(Failure::Store(why));
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut refresh = refresh::Refresher::default();
        let counter = up.metrics.received.get(Phase::Stream);
        loop {
            tokio::select! {
                chunk = self.conn.stream_chunk() => {
                    let chunk = chunk?;
                    counter.inc_by(chunk.len() as u64);
                    up.writer.append(chunk).await?;
                    self.touch();
                }
                _ = tick.tick() => {
                    up.writer.tick().await?;
                    self.send_ack().await?;
                    self.check_timeout()?;
                    refresh.poll(up, &self.master).await;
                }
                changed = status.changed() => {
                    changed.context("the store writer has stopped")?;
                    let s = status.borrow_and_update().clone();
                    if let Some(why) = s.failed {
                        return Err(Failure::Store(why));
                    }
                    if s.getacks != getacks {
                        getacks = s.getacks;
                        self.send_ack().await?;
                    }
                }
            }
        }
    }

    fn check_timeout(&self) -> Result<(), Failure> {
        if self.conn.last_io().elapsed() > self.up.settings.repl_timeout {
            return Err(Failure::Timeout);
        }
        Ok(())
    }

    /// `REPLCONF ACK <offset>`: what the store holds per the fsync policy.
    async fn send_ack(&mut self) -> Result<(), Failure> {
        let ack = self.up.writer.writer_status().borrow().ack;
        match ack {
            Some(offset) => Ok(self.conn.send_ack(offset).await?),
            None => Ok(()),
        }
    }

    fn touch(&self) {
        if self.is_main() {
            let last = self.conn.last_io();
            self.up.link.update(|l| l.last_io = Some(last));
        }
    }
}

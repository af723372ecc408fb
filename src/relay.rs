//! The running relay: what its tasks share (store, upstream link status, replicas, counters)
//! and how they are started and stopped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{Config, MasterAddr};
use crate::downstream::{self, Replicas};
use crate::metrics::Metrics;
use crate::store::{State, Store, StoreConfig};
use crate::{admin, upstream};

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
}

pub struct Relay {
    pub config: Config,
    pub store: Store,
    /// The master to replicate from; REPLICAOF changes it, the upstream task follows it.
    pub master: watch::Sender<Option<MasterAddr>>,
    link: Mutex<LinkStatus>,
    pub replicas: Replicas,
    pub metrics: Metrics,
    pub started: Instant,
    pub run_id: String,
    pub shutdown: CancellationToken,
}

impl Relay {
    pub fn link(&self) -> LinkStatus {
        self.link.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn update_link(&self, f: impl FnOnce(&mut LinkStatus)) {
        f(&mut self.link.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn set_link_state(&self, state: LinkState) {
        self.update_link(|l| {
            if l.state == LinkState::Connected && state != LinkState::Connected {
                l.down_since = Some(Instant::now());
            }
            l.state = state;
        });
    }

    /// A snapshot refresh is under way: asked of the master, arriving, or waiting for the log
    /// to reach its offset.
    pub fn refreshing(&self, state: &State) -> bool {
        state.refreshing || self.link().refresh_requested
    }

    pub fn master_addr(&self) -> Option<MasterAddr> {
        self.master.borrow().clone()
    }
}

/// A relay with its store in `dir` and no tasks running, for the tests of what it answers.
#[cfg(test)]
pub fn for_tests(dir: &std::path::Path) -> Relay {
    let config = Config::resolve(crate::config::RelayArgs {
        dir: Some(dir.into()),
        replicaof: Some(vec!["127.0.0.1".into(), "1".into()]),
        ..Default::default()
    })
    .expect("a valid config");
    let metrics = Metrics::new();
    let (store, _writer) =
        Store::open(store_config(&config, &metrics)).expect("a store in a fresh directory");
    Relay::new(config, store, metrics)
}

fn store_config(config: &Config, metrics: &Metrics) -> StoreConfig {
    StoreConfig {
        metrics: metrics.store.clone(),
        dir: config.dir.clone(),
        fsync: config.appendfsync,
        segment_size: config.log_segment_size,
        backlog_size: config.backlog_size,
    }
}

impl Relay {
    fn new(config: Config, store: Store, metrics: Metrics) -> Relay {
        Relay {
            master: watch::Sender::new(config.replicaof.clone()),
            config,
            store,
            link: Mutex::new(LinkStatus {
                state: LinkState::None,
                last_io: None,
                down_since: None,
                sync_total: None,
                snapshot_pending: false,
                refresh_requested: false,
            }),
            replicas: Replicas::default(),
            metrics,
            started: Instant::now(),
            run_id: random_hex(40),
            shutdown: CancellationToken::new(),
        }
    }
}

/// Runs the relay until SIGTERM or SIGINT, then shuts down cleanly.
pub async fn run(config: Config) -> Result<()> {
    let metrics = Metrics::new();
    let store_cfg = store_config(&config, &metrics);
    let (store, writer) = tokio::task::spawn_blocking(move || Store::open(store_cfg))
        .await?
        .context("opening the store")?;
    let listener = TcpListener::bind((config.bind.as_str(), config.port))
        .await
        .with_context(|| format!("listening on {}:{}", config.bind, config.port))?;
    let admin = admin::bind(&config).await?;
    let relay = Arc::new(Relay::new(config, store, metrics));
    info!(
        "replica-relay {} ready to accept replicas on {}:{} (store {})",
        env!("CARGO_PKG_VERSION"),
        relay.config.bind,
        relay.config.port,
        relay.config.dir.display()
    );
    let tasks = [
        tokio::spawn(upstream::run(relay.clone())),
        tokio::spawn(upstream::master_info::run(relay.clone())),
        tokio::spawn(downstream::serve(relay.clone(), listener)),
        tokio::spawn(admin::serve(relay.clone(), admin)),
    ];
    wait_for_signal().await;
    info!("Received SIGTERM, shutting down: closing links and flushing the store");
    relay.shutdown.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if let Err(e) = relay.store.close().await {
        error!("Closing the store: {e:#}");
    }
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    info!("replica-relay is now ready to exit, bye bye...");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("Cannot install signal handlers; stop the relay with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Random lowercase hex, like Redis' run_id, from the standard library's per-process keys.
pub fn random_hex(n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let words = (0..n.div_ceil(16)).map(|i| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        format!("{:016x}", h.finish())
    });
    words.collect::<String>()[..n].to_string()
}

//! The running relay: makes each room's handles, wires the rooms together, starts their tasks
//! and stops them. It is the only module that sees every room; none of them sees it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::archive::{self, Archive, ArchiveMetrics};
use crate::config::{Config, MasterAddr};
use crate::downstream::{self, DownstreamMetrics, Replicas};
use crate::link::{self, LinkControl};
use crate::master_file;
use crate::observe::RelayView;
use crate::observe::admin::{self, Admin};
use crate::observe::metrics::Metrics;
use crate::store::{Store, StoreConfig, StoreMetrics, StoreWriter};
use crate::tls::{self, Dialer, Tls};
use crate::upstream::{self, Shown, Upstream, UpstreamMetrics};

/// The handles of every room, made once.
struct Rooms {
    upstream: Arc<Upstream>,
    downstream: Arc<downstream::Context>,
    view: Arc<RelayView>,
    store_metrics: StoreMetrics,
    downstream_metrics: Arc<DownstreamMetrics>,
}

impl Rooms {
    fn wire(
        config: Config,
        (writer, store): (StoreWriter, Store),
        store_metrics: StoreMetrics,
        master: Option<MasterAddr>,
        tls: Option<&Arc<Tls>>,
    ) -> Rooms {
        let config = Arc::new(config);
        let shutdown = CancellationToken::new();
        let (reporter, link) = link::status();
        let control = LinkControl::new(master);
        let replicas = Arc::new(Replicas::default());
        let clients = Arc::new(downstream::Clients::default());
        let up_metrics = Arc::new(UpstreamMetrics::new());
        let down_metrics = Arc::new(DownstreamMetrics::new());
        let (compactor, sentinel, cluster) = (Shown::default(), Shown::default(), Shown::default());
        let admission = Arc::new(downstream::Admission::new(
            config.max_full_syncs,
            config.full_sync_rate.map(|r| r.0),
            config.replica_rate.map(|r| r.0),
        ));
        let view = Arc::new(RelayView {
            config: config.clone(),
            store: store.clone(),
            link: link.clone(),
            control: control.clone(),
            replicas: replicas.clone(),
            clients: clients.clone(),
            admission: admission.clone(),
            upstream: up_metrics.clone(),
            downstream: down_metrics.clone(),
            compactor: compactor.clone(),
            sentinel: sentinel.clone(),
            cluster: cluster.clone(),
            archive: ArchiveMetrics::new(),
            started: Instant::now(),
            run_id: random_hex(40),
            ops: Default::default(),
        });
        let downstream = Arc::new(downstream::Context::new(
            &config,
            downstream::Handles {
                store: store.clone(),
                link,
                control: control.clone(),
                replicas,
                clients,
                admission,
                metrics: down_metrics.clone(),
                server: view.clone(),
                shutdown: shutdown.clone(),
            },
        ));
        let upstream = Arc::new(Upstream {
            dialer: Dialer::for_master(tls, &config.tls()),
            settings: upstream::Settings::of(&config),
            store,
            writer,
            link: reporter,
            control,
            metrics: up_metrics,
            compactor,
            sentinel,
            cluster,
            link_lost: Default::default(),
            shutdown,
        });
        // Before anything answers INFO: where fresh snapshots come from is part of it.
        upstream::decide_snapshot_source(&upstream);
        Rooms {
            upstream,
            downstream,
            view,
            store_metrics,
            downstream_metrics: down_metrics,
        }
    }
}

fn store_config(config: &Config, metrics: &StoreMetrics) -> StoreConfig {
    StoreConfig {
        metrics: metrics.clone(),
        dir: config.dir.clone(),
        fsync: config.appendfsync,
        segment_size: config.log_segment_size.0,
        backlog_size: config.backlog_size.0,
        restore: config.restore(),
    }
}

/// Runs the relay until SIGTERM or SIGINT, then shuts down cleanly.
pub async fn run(config: Config) -> Result<()> {
    if let Some(url) = &config.bootstrap_from {
        bootstrap(url, &config).await;
    }
    let store_metrics = StoreMetrics::new();
    let store_cfg = store_config(&config, &store_metrics);
    let (writes, store, writer) = tokio::task::spawn_blocking(move || Store::open(store_cfg))
        .await?
        .context("opening the store")?;
    let master = first_master(&config).await?;
    let tls_config = config.tls();
    let tls = tokio::task::spawn_blocking(move || Tls::load(&tls_config)).await??;
    let plain = listen(&config, config.port).await?;
    let secure = listen(&config, config.tls_port).await?;
    let admin_listener = admin::bind(&config).await?;
    let archive = (config.archive.as_deref())
        .map(|url| Archive::open(url, config.archive_endpoint.as_deref()))
        .transpose()?;
    let rooms = Rooms::wire(config, (writes, store), store_metrics, master, tls.as_ref());
    let metrics = Metrics::new(&[
        &rooms.store_metrics,
        &rooms.view.control,
        rooms.upstream.metrics.as_ref(),
        rooms.downstream_metrics.as_ref(),
        &rooms.view.archive,
    ]);
    let admin = Arc::new(Admin {
        view: rooms.view.clone(),
        metrics,
        tls: tls.clone().filter(|_| rooms.view.config.metrics_tls),
    });
    let cfg = &rooms.view.config;
    let ports: Vec<String> = [(cfg.port, ""), (cfg.tls_port, " (TLS)")]
        .iter()
        .filter(|(p, _)| *p != 0)
        .map(|(p, what)| format!("{}:{p}{what}", cfg.bind))
        .collect();
    info!(
        "replica-relay {} ready to accept replicas on {} (store {})",
        env!("CARGO_PKG_VERSION"),
        ports.join(" and "),
        cfg.dir.display()
    );
    let shutdown = rooms.upstream.shutdown.clone();
    let mut tasks = vec![
        tokio::spawn(upstream::run(rooms.upstream.clone())),
        tokio::spawn(upstream::master_info::run(rooms.upstream.clone())),
        tokio::spawn(upstream::sentinel::run(rooms.upstream.clone())),
        tokio::spawn(upstream::cluster::run(rooms.upstream.clone())),
        tokio::spawn(admin::serve(admin, admin_listener, shutdown.clone())),
    ];
    if let Some(listener) = plain {
        tasks.push(tokio::spawn(downstream::serve(
            rooms.downstream.clone(),
            listener,
            None,
        )));
    }
    if let Some(listener) = secure {
        tasks.push(tokio::spawn(downstream::serve(
            rooms.downstream.clone(),
            listener,
            tls.clone(),
        )));
    }
    if let Some(tls) = &tls {
        tasks.push(tokio::spawn(tls::watch(tls.clone(), shutdown.clone())));
    }
    if let Some(archive) = archive {
        let settings = archive::Settings {
            store: rooms.view.store.clone(),
            dir: cfg.dir.clone(),
            rate: cfg.archive_rate.map(|r| r.0),
            window: cfg.archive_window,
        };
        let (stop, metrics) = (shutdown.clone(), rooms.view.archive.clone());
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = archive::run(archive, settings, metrics) => {}
                _ = stop.cancelled() => {}
            }
        }));
    }
    wait_for_signal().await;
    info!("Received SIGTERM, shutting down: closing links and flushing the store");
    shutdown.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if let Err(e) = rooms.upstream.writer.close().await {
        error!("Closing the store: {e:#}");
    }
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    info!("replica-relay is now ready to exit, bye bye...");
    Ok(())
}

/// `--bootstrap-from`: an empty `--dir` filled from the archive before the store opens.
/// A bootstrap that fails leaves the relay to attach as a new replica would (a full sync):
/// the archive may be empty yet (the first start) or unreachable.
async fn bootstrap(url: &str, config: &Config) {
    let endpoint = config.archive_endpoint.as_deref();
    match archive::bootstrap(url, endpoint, &config.dir).await {
        Err(e) => warn!(
            "Bootstrapping from the archive {url} failed: {e:#}; attaching to the master as a new replica (a full sync)"
        ),
        Ok(Some(filled)) => info!(
            "Bootstrapped from the archive {url}: line {}, the snapshot at offset {} and the log to offset {} ({} bytes); the master is asked to continue from there",
            filled.line,
            filled.snapshot_offset,
            filled.end - 1,
            filled.bytes
        ),
        Ok(None) => info!(
            "--bootstrap-from {url} is not used: {} holds a store already",
            config.dir.display()
        ),
    }
}

/// A listener for replicas on `port`; none for port 0.
async fn listen(config: &Config, port: u16) -> Result<Option<TcpListener>> {
    if port == 0 {
        return Ok(None);
    }
    let listener = TcpListener::bind((config.bind.as_str(), port))
        .await
        .with_context(|| format!("listening on {}:{port}", config.bind))?;
    Ok(Some(listener))
}

/// The master to follow at start: the configured one, or the one a CONFIG REWRITE recorded
/// (Sentinel's choice after a failover) while the configuration still names the same as then.
async fn first_master(config: &Config) -> Result<Option<MasterAddr>> {
    let dir = config.dir.clone();
    let rewritten = tokio::task::spawn_blocking(move || master_file::read(&dir)).await??;
    let recorded = rewritten.is_some();
    let (master, why) = master_file::choose(config.replicaof.clone(), rewritten);
    if recorded || master.is_some() {
        match &master {
            Some(m) => info!("Following master {m}, {why}"),
            None => info!("Following no master, {why}"),
        }
    }
    Ok(master)
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

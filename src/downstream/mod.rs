//! The master side: accepts clients, answers their commands, and turns a connection that sends
//! PSYNC or SYNC into a replica session (`replica`).
//!
//! Each connection is its own task with a bounded query buffer; a client that sends garbage gets
//! a protocol error and is closed without affecting anyone else.

mod admission;
mod backup;
mod clients;
mod commands;
mod formats;
mod psync;
mod pubsub;
mod replica;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::duplex::{self, Reader, Writer};
use crate::instruments::{self, Collectors, Label, Labelled, Phase};
use crate::link::{LinkControl, LinkWatch};
use crate::resp::{self, Reply};
use crate::store::Store;
use crate::tls::{Listener, Tls};
use commands::Action;

pub use admission::Admission;
pub use clients::Clients;
pub use psync::{Decision, ahead_of_store, decide};
pub use pubsub::PubSub;

/// What the downstream room works with: its slice of the configuration, the handles the relay
/// gives it (`Handles`), and what only it uses (pub/sub, the client slots, backups in
/// progress). Its fields are the room's own.
pub struct Context {
    settings: Settings,
    store: Store,
    link: LinkWatch,
    control: LinkControl,
    replicas: Arc<Replicas>,
    clients: Arc<Clients>,
    pubsub: PubSub,
    accepting: Accepting,
    backups: backup::Backups,
    admission: Arc<Admission>,
    metrics: Arc<DownstreamMetrics>,
    server: Arc<dyn ServerInfo>,
    shutdown: CancellationToken,
}

/// The handles the downstream room shares with the others.
pub struct Handles {
    pub store: Store,
    pub link: LinkWatch,
    pub control: LinkControl,
    pub replicas: Arc<Replicas>,
    pub clients: Arc<Clients>,
    pub admission: Arc<Admission>,
    pub metrics: Arc<DownstreamMetrics>,
    /// What INFO, ROLE and CONFIG GET say of the relay, which the observe room writes.
    pub server: Arc<dyn ServerInfo>,
    pub shutdown: CancellationToken,
}

/// What the downstream room reads of the configuration.
#[derive(Debug, Clone)]
struct Settings {
    bind: String,
    protected_mode: bool,
    requirepass: Option<String>,
    renamed: crate::config::Renames,
    repl_timeout: std::time::Duration,
    rdb_only_max_age: Option<std::time::Duration>,
    maxclients: usize,
    /// Where CONFIG REWRITE records the master followed, beside the one configured.
    dir: std::path::PathBuf,
    replicaof: Option<crate::config::MasterAddr>,
}

impl Settings {
    fn of(config: &Config) -> Settings {
        Settings {
            bind: config.bind.clone(),
            protected_mode: config.protected_mode,
            requirepass: config.requirepass.clone(),
            renamed: config.renamed.clone(),
            repl_timeout: config.repl_timeout,
            rdb_only_max_age: config.rdb_only_max_age,
            maxclients: config.maxclients,
            dir: config.dir.clone(),
            replicaof: config.replicaof.clone(),
        }
    }
}

impl Context {
    pub fn new(config: &Config, h: Handles) -> Context {
        let settings = Settings::of(config);
        Context {
            accepting: Accepting::new(settings.maxclients),
            settings,
            store: h.store,
            link: h.link,
            control: h.control,
            replicas: h.replicas,
            clients: h.clients,
            pubsub: PubSub::default(),
            backups: Default::default(),
            admission: h.admission,
            metrics: h.metrics,
            server: h.server,
            shutdown: h.shutdown,
        }
    }
}

/// What INFO, ROLE and CONFIG GET answer: written by the observe room, which sees every room.
pub trait ServerInfo: Send + Sync {
    /// The INFO text of the sections asked for (all when none).
    fn info(&self, sections: &[Bytes]) -> String;
    fn role(&self) -> Reply;
    /// The settings CONFIG GET shows.
    fn config_values(&self) -> Vec<(&'static str, String)>;
}

/// Why a downstream connection or sync was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Maxclients,
    ProtectedMode,
    ProtocolError,
    Auth,
    NoMasterLink,
    RdbFormat,
    Tls,
}

impl Label for Rejection {
    const NAME: &'static str = "reason";
    const ALL: &'static [Rejection] = &[
        Rejection::Maxclients,
        Rejection::ProtectedMode,
        Rejection::ProtocolError,
        Rejection::Auth,
        Rejection::NoMasterLink,
        Rejection::RdbFormat,
        Rejection::Tls,
    ];

    fn value(self) -> &'static str {
        match self {
            Rejection::Maxclients => "maxclients",
            Rejection::ProtectedMode => "protected_mode",
            Rejection::ProtocolError => "protocol_error",
            Rejection::Auth => "auth",
            Rejection::NoMasterLink => "nomasterlink",
            Rejection::RdbFormat => "rdb_format",
            Rejection::Tls => "tls",
        }
    }
}

/// The downstream room's counters.
pub struct DownstreamMetrics {
    pub connections_received: prometheus::IntCounter,
    pub rejected: Labelled<Rejection>,
    pub full_syncs: prometheus::IntCounter,
    pub partial_syncs: prometheus::IntCounter,
    pub partial_sync_errors: prometheus::IntCounter,
    pub sent: Labelled<Phase>,
    pub commands: prometheus::IntCounter,
    pub net_input: prometheus::IntCounter,
    pub net_output: prometheus::IntCounter,
    /// What the relay sends compressed to relays behind it.
    pub compression: crate::compress::Counters,
}

impl DownstreamMetrics {
    pub fn new() -> DownstreamMetrics {
        DownstreamMetrics {
            connections_received: instruments::counter(
                "connections_received_total",
                "Client connections accepted.",
            ),
            rejected: Labelled::new(
                "downstream_rejected_total",
                "Connections or syncs refused, by reason.",
            ),
            full_syncs: instruments::counter(
                "downstream_full_syncs_total",
                "Full syncs served to replicas.",
            ),
            partial_syncs: instruments::counter(
                "downstream_partial_syncs_total",
                "Partial resyncs served to replicas.",
            ),
            partial_sync_errors: instruments::counter(
                "downstream_partial_sync_errors_total",
                "Partial resyncs asked for that had to be full syncs.",
            ),
            sent: Labelled::new("downstream_sent_bytes_total", "Bytes sent to replicas."),
            commands: instruments::counter(
                "commands_processed_total",
                "Commands clients sent the relay (not the replication stream).",
            ),
            net_input: instruments::counter(
                "client_input_bytes_total",
                "Bytes clients and replicas sent before their sync.",
            ),
            net_output: instruments::counter(
                "client_output_bytes_total",
                "Bytes of replies to clients (not the replication stream).",
            ),
            compression: crate::compress::Counters::new(
                "downstream",
                "sent to relays behind this one",
            ),
        }
    }
}

impl Collectors for DownstreamMetrics {
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.connections_received.clone()),
            self.rejected.collector(),
            Box::new(self.full_syncs.clone()),
            Box::new(self.partial_syncs.clone()),
            Box::new(self.partial_sync_errors.clone()),
            self.sent.collector(),
            Box::new(self.commands.clone()),
            Box::new(self.net_input.clone()),
            Box::new(self.net_output.clone()),
        ]
        .into_iter()
        .chain(self.compression.collectors())
        .collect()
    }
}

/// Most bytes buffered from a client that has not completed a command.
const MAX_QUERY: usize = 256 * 1024;

/// Per-connection state that commands read and change.
pub struct Client {
    pub id: u64,
    pub peer: SocketAddr,
    pub authed: bool,
    pub name: Option<String>,
    /// From `REPLCONF listening-port`.
    pub listening_port: Option<u16>,
    /// From `REPLCONF ip-address`.
    pub announced_ip: Option<String>,
    pub capa_psync2: bool,
    /// From `REPLCONF version` (Valkey replicas).
    pub version: Option<String>,
    pub rdb_only: bool,
    /// From `REPLCONF rdb-filter-only` (redis-cli --functions-rdb).
    pub rdb_filter: Option<String>,
    /// From `REPLCONF relay-compression` (a relay of this project behind this one).
    pub compression: Option<crate::config::ZstdLink>,
    /// Commands queued since MULTI.
    pub multi: Option<commands::Transaction>,
    /// Its subscriptions, once it has subscribed to something.
    subscriber: Option<pubsub::Subscriber>,
    /// Closes the connection (CLIENT KILL, a subscriber too slow).
    close: CancellationToken,
    /// The last command's name, for CLIENT LIST's `cmd=`.
    pub last_cmd: String,
}

impl Client {
    /// A client that has just connected; `authed` when no password is required.
    pub fn new(id: u64, peer: SocketAddr, authed: bool) -> Client {
        Client {
            id,
            peer,
            authed,
            name: None,
            listening_port: None,
            announced_ip: None,
            capa_psync2: false,
            version: None,
            rdb_only: false,
            rdb_filter: None,
            compression: None,
            multi: None,
            subscriber: None,
            close: CancellationToken::new(),
            last_cmd: "NULL".into(),
        }
    }

    /// In RESP2's subscribed mode: subscribed to at least one channel or pattern.
    pub fn subscribed(&self) -> bool {
        self.subscriber.as_ref().is_some_and(|s| s.count() > 0)
    }

    fn subscriber(&mut self) -> &mut pubsub::Subscriber {
        let (id, close) = (self.id, self.close.clone());
        self.subscriber
            .get_or_insert_with(|| pubsub::Subscriber::new(id, close))
    }

    /// The next message for a subscriber; never, for a client that has not subscribed.
    async fn next_message(&mut self) -> Bytes {
        match self.subscriber.as_mut() {
            Some(s) => match s.next().await {
                Some(m) => m,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// `ip:port` as Redis names a replica: announced address, else the peer's.
    pub fn replica_name(&self) -> String {
        let ip = self
            .announced_ip
            .clone()
            .unwrap_or_else(|| self.peer.ip().to_string());
        match self.listening_port {
            Some(p) => format!("{ip}:{p}"),
            None => self.peer.to_string(),
        }
    }
}

/// A replica's state, as INFO reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    WaitBgsave,
    SendBulk,
    Online,
}

impl ReplicaState {
    pub fn name(self) -> &'static str {
        match self {
            ReplicaState::WaitBgsave => "wait_bgsave",
            ReplicaState::SendBulk => "send_bulk",
            ReplicaState::Online => "online",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReplicaInfo {
    pub ip: String,
    pub port: u16,
    pub state: ReplicaState,
    pub ack_offset: u64,
    pub ack_time: Instant,
    /// Whether a `REPLCONF ACK` has come since the sync (a newline does not count).
    pub acked: bool,
    /// A relay behind this one that asked for a compressed link.
    pub compressed: bool,
}

/// The replicas attached now, for INFO and ROLE, and those that cannot load the snapshot.
#[derive(Default)]
pub struct Replicas {
    next_id: AtomicU64,
    map: Mutex<BTreeMap<u64, ReplicaInfo>>,
    pub formats: formats::Formats,
}

impl Replicas {
    pub fn list(&self) -> Vec<ReplicaInfo> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ReplicaInfo>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, info: ReplicaInfo) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, info);
        id
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut ReplicaInfo)) {
        if let Some(r) = self.lock().get_mut(&id) {
            f(r);
        }
    }

    /// Whether the replica has acknowledged since its sync.
    fn acked(&self, id: u64) -> bool {
        self.lock().get(&id).is_some_and(|r| r.acked)
    }

    /// Time since the replica last sent an ACK or a newline.
    fn ack_age(&self, id: u64) -> std::time::Duration {
        self.lock()
            .get(&id)
            .map(|r| r.ack_time.elapsed())
            .unwrap_or_default()
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// What every listener shares: the `maxclients` slots and the client ids.
pub struct Accepting {
    slots: Arc<Semaphore>,
    next_id: AtomicU64,
}

impl Accepting {
    pub fn new(maxclients: usize) -> Accepting {
        Accepting {
            slots: Arc::new(Semaphore::new(maxclients)),
            next_id: AtomicU64::new(1),
        }
    }
}

/// Accepts clients on `listener` until shutdown: plain TCP, or TLS when `tls` is given.
pub async fn serve(cx: Arc<Context>, listener: TcpListener, tls: Option<Arc<Tls>>) {
    loop {
        let (mut sock, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!("Accepting client connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = cx.shutdown.cancelled() => return,
        };
        cx.metrics.connections_received.inc();
        let (reason, refusal) = match cx.accepting.slots.clone().try_acquire_owned() {
            Err(_) => (
                Rejection::Maxclients,
                "ERR max number of clients reached".to_string(),
            ),
            Ok(slot) => match protected_mode_refusal(&cx.settings, &peer) {
                Some(denied) => (Rejection::ProtectedMode, denied),
                None => {
                    let id = cx.accepting.next_id.fetch_add(1, Ordering::Relaxed);
                    let registered = cx.clients.join(id, peer, sock.local_addr().ok());
                    tokio::spawn(handshake(
                        cx.clone(),
                        sock,
                        peer,
                        registered,
                        slot,
                        tls.clone(),
                    ));
                    continue;
                }
            },
        };
        cx.metrics.rejected.inc(reason);
        warn!("Refusing connection from {peer}: {refusal}");
        tokio::spawn(async move {
            let mut out = BytesMut::new();
            Reply::err(refusal).encode(&mut out);
            let _ = sock.write_all(&out).await;
        });
    }
}

/// A new connection's TLS handshake, if on the TLS port, then its commands. The handshake runs
/// in the connection's own task, holding its slot, so slow ones delay nobody.
async fn handshake(
    cx: Arc<Context>,
    sock: tokio::net::TcpStream,
    peer: SocketAddr,
    registered: clients::Registered,
    slot: tokio::sync::OwnedSemaphorePermit,
    tls: Option<Arc<Tls>>,
) {
    let halves = match tls {
        None => duplex::tcp(sock),
        Some(tls) => match tls.accept(sock, peer, Listener::Replicas).await {
            Ok(stream) => {
                let (rd, wr) = tokio::io::split(stream);
                (Box::new(rd) as Reader, Box::new(wr) as Writer)
            }
            Err(e) => {
                cx.metrics.rejected.inc(Rejection::Tls);
                warn!("Refusing connection on the TLS port: {e:#}");
                return;
            }
        },
    };
    connection(cx, halves, peer, registered, slot).await;
}

/// Redis' protected mode: without a password, only loopback clients may connect.
fn protected_mode_refusal(cfg: &Settings, peer: &SocketAddr) -> Option<String> {
    let loopback_bind = cfg.bind == "localhost"
        || cfg
            .bind
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    // A dual-stack listener (`--bind ::`) sees IPv4 clients as `::ffff:a.b.c.d`.
    let loopback_peer = peer.ip().to_canonical().is_loopback();
    if !cfg.protected_mode || cfg.requirepass.is_some() || loopback_bind || loopback_peer {
        return None;
    }
    Some("DENIED replica-relay is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers, either set a password with --requirepass (replicas then use it as their masterauth), bind to the loopback interface only, or disable protected mode with --protected-mode no.".into())
}

/// One client, over any byte stream: its commands until it leaves or becomes a replica.
async fn connection(
    cx: Arc<Context>,
    (mut rd, mut wr): (Reader, Writer),
    peer: SocketAddr,
    registered: clients::Registered,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let id = registered.id();
    let mut client = Client::new(id, peer, cx.settings.requirepass.is_none());
    client.close = registered.close.clone();
    debug!("Accepted {peer}");
    let mut buf = BytesMut::with_capacity(1024);
    let mut parser = resp::CommandParser::default();
    let mut out = BytesMut::new();
    let request = loop {
        let action = next_action(&cx, &mut client, &mut parser, &mut buf, &mut out).await;
        let subscriptions = client.subscriber.as_ref().map_or(0, |s| s.count());
        registered.touch(&client.last_cmd, client.name.as_deref(), subscriptions);
        if !out.is_empty() {
            cx.metrics.net_output.inc_by(out.len() as u64);
            if wr.write_all(&out.split()).await.is_err() {
                break None;
            }
        }
        match action {
            Ok(Turn::Sync(request)) => break Some(request),
            Ok(Turn::Close) => break None,
            // More complete commands wait in `buf`: let other tasks (the stream) run first.
            Ok(Turn::Yield) => {
                tokio::task::yield_now().await;
                continue;
            }
            Ok(Turn::Read) => {}
            Err(why) => {
                cx.metrics.rejected.inc(Rejection::ProtocolError);
                info!("Closing client {peer}: {why}");
                break None;
            }
        }
        if buf.len() > MAX_QUERY {
            info!("Closing client {peer}: query buffer over {MAX_QUERY} bytes");
            break None;
        }
        tokio::select! {
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break None,
                Ok(n) => cx.metrics.net_input.inc_by(n as u64),
            },
            message = client.next_message() => messages(&mut client, message, &mut out),
            _ = registered.close.cancelled() => {
                debug!("Closing client {peer}: killed");
                break None;
            }
        }
    };
    if let Some(sub) = client.subscriber.take() {
        cx.pubsub.leave(&sub);
    }
    let Some(request) = request else {
        return;
    };
    // Still registered, as a replica: CLIENT LIST shows it, CLIENT KILL closes it as if its
    // link dropped (the session's end cleans up either way).
    registered.set_kind(clients::Kind::Replica);
    tokio::select! {
        _ = replica::serve(cx, (rd, wr), client, buf, request) => {}
        _ = registered.close.cancelled() => {
            info!("Connection with replica {peer} lost: closed by CLIENT KILL");
        }
    }
}

/// A message for a subscriber, and those already waiting behind it, up to one turn's output.
fn messages(client: &mut Client, first: Bytes, out: &mut BytesMut) {
    out.extend_from_slice(&first);
    let Some(sub) = client.subscriber.as_mut() else {
        return;
    };
    while out.len() < TURN_OUTPUT {
        match sub.ready() {
            Some(m) => out.extend_from_slice(&m),
            None => break,
        }
    }
}

/// What the connection does after answering what it could.
enum Turn {
    /// Every complete command is answered: read more.
    Read,
    /// Commands are left, but this turn's share is used: write, yield, go on.
    Yield,
    Close,
    Sync(commands::SyncRequest),
}

/// Commands answered in one turn before the connection writes and yields, and the most reply
/// bytes gathered before it does: a client pipelining many commands holds a worker for a
/// bounded time and its replies are written (and wait for it to read) before more are made.
const TURN_COMMANDS: usize = 32;
const TURN_OUTPUT: usize = 64 * 1024;

/// Answers the complete commands in `buf` into `out`, up to one turn's share; stops at one that
/// ends the conversation (QUIT, PSYNC/SYNC) or at a protocol error, which is answered and closes.
async fn next_action(
    cx: &Context,
    client: &mut Client,
    parser: &mut resp::CommandParser,
    buf: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<Turn, resp::ProtocolError> {
    for _ in 0..TURN_COMMANDS {
        if out.len() >= TURN_OUTPUT {
            break;
        }
        let args = match parser.parse(buf) {
            Ok(Some(args)) if args.is_empty() => continue,
            Ok(Some(args)) => args,
            Ok(None) => return Ok(Turn::Read),
            Err(e) => {
                Reply::err(format!("ERR {e}")).encode(out);
                return Err(e);
            }
        };
        cx.metrics.commands.inc();
        client.last_cmd = String::from_utf8_lossy(&args[0][..args[0].len().min(32)]).to_lowercase();
        match commands::dispatch(cx, client, &args).await {
            Action::Reply(reply) => reply.encode(out),
            Action::Replies(replies) => replies.iter().for_each(|r| r.encode(out)),
            Action::NoReply => {}
            Action::Quit => {
                Reply::ok().encode(out);
                return Ok(Turn::Close);
            }
            Action::Sync(request) => return Ok(Turn::Sync(request)),
        }
    }
    Ok(Turn::Yield)
}

/// A context with its store in `dir` and a fixed INFO, for the tests of what clients are
/// answered.
#[cfg(test)]
pub(crate) fn context_for_tests(dir: &std::path::Path) -> Context {
    struct Fixed;
    impl ServerInfo for Fixed {
        fn info(&self, _: &[Bytes]) -> String {
            "# Server\r\n".repeat(64)
        }
        fn role(&self) -> Reply {
            Reply::Array(vec![Reply::bulk("master"), Reply::Int(0)])
        }
        fn config_values(&self) -> Vec<(&'static str, String)> {
            [
                "port",
                "bind",
                "dir",
                "replicaof",
                "repl-timeout",
                "repl-backlog-size",
            ]
            .into_iter()
            .map(|k| (k, "value".to_string()))
            .collect()
        }
    }
    let dir = dir.to_str().expect("a UTF-8 test directory");
    let config =
        Config::resolve(crate::config::RelayArgs::flags(&[("dir", dir)])).expect("a valid config");
    let (_, store, _thread) = Store::open(crate::store::StoreConfig {
        metrics: crate::store::StoreMetrics::new(),
        dir: config.dir.clone(),
        fsync: config.appendfsync,
        segment_size: config.log_segment_size.0,
        backlog_size: config.backlog_size.0,
        restore: config.restore(),
    })
    .expect("a store in a fresh directory");
    let (_, link) = crate::link::status();
    let master = crate::config::MasterAddr::parse("127.0.0.1", "1").unwrap();
    Context::new(
        &config,
        Handles {
            control: LinkControl::new(Some(master)),
            store,
            link,
            replicas: Arc::new(Replicas::default()),
            clients: Arc::default(),
            admission: Arc::new(Admission::new(4, None, None)),
            metrics: Arc::new(DownstreamMetrics::new()),
            server: Arc::new(Fixed),
            shutdown: CancellationToken::new(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RelayArgs;

    fn config(bind: &str, pass: Option<&str>, protected: Option<&str>) -> Settings {
        let mut flags = vec![("bind", bind)];
        flags.extend(pass.map(|p| ("requirepass", p)));
        flags.extend(protected.map(|p| ("protected-mode", p)));
        Settings::of(&Config::resolve(RelayArgs::flags(&flags)).unwrap())
    }

    #[test]
    fn protected_mode_refuses_only_remote_clients_without_a_password() {
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let open = config("0.0.0.0", None, None);
        let denied = protected_mode_refusal(&open, &remote).unwrap();
        assert!(denied.starts_with("DENIED"), "{denied}");
        assert_eq!(protected_mode_refusal(&open, &local), None);
        assert_eq!(
            protected_mode_refusal(&config("0.0.0.0", Some("pw"), None), &remote),
            None
        );
        assert_eq!(
            protected_mode_refusal(&config("127.0.0.1", None, None), &remote),
            None
        );
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let dual = config("::", None, None);
        assert_eq!(protected_mode_refusal(&dual, &mapped), None);
        let mapped_remote: SocketAddr = "[::ffff:10.1.2.3]:5000".parse().unwrap();
        assert!(protected_mode_refusal(&dual, &mapped_remote).is_some());
        let off = config("0.0.0.0", None, Some("no"));
        assert_eq!(protected_mode_refusal(&off, &remote), None);
    }
}

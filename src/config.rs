//! Configuration: redis-server-style flags, `REPLICA_RELAY_*` environment variables and a TOML
//! file, resolved into one validated `Config`.
//!
//! Precedence is flag, then environment, then file, then default. Names follow redis.conf
//! (`replicaof`, `masterauth`, `repl-timeout`, `appendfsync`) so Redis operators know them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterAddr {
    pub host: String,
    pub port: u16,
}

impl MasterAddr {
    pub fn parse(host: &str, port: &str) -> Result<MasterAddr> {
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .with_context(|| format!("invalid master port {port:?}"))?;
        if host.is_empty() || host.len() > 255 || host.contains(char::is_whitespace) {
            bail!("invalid master host {host:?}");
        }
        Ok(MasterAddr {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for MasterAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum YesNo {
    Yes,
    No,
}

/// Where a fresh snapshot comes from when the log outgrows the one in service (or a backup
/// asks for the data as it is now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotSource {
    /// A fork on the master (`REPLCONF rdb-only` + `PSYNC ? -1`).
    Master,
    /// The compactor: a server child of the relay loads the snapshot in service and the log
    /// after it, and saves.
    Local,
}

impl SnapshotSource {
    pub fn name(self) -> &'static str {
        match self {
            SnapshotSource::Master => "master",
            SnapshotSource::Local => "local",
        }
    }
}

/// When stream bytes reach the disk, like Redis' `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Before they are acknowledged upstream or sent downstream.
    Always,
    /// At least once a second.
    Everysec,
    /// When the kernel decides.
    No,
}

/// The version the relay announces to a Valkey master (`REPLCONF version`), which picks the
/// snapshot's format by it: RDB 11 for a version before 9.0, its native format from 9.0 on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnounceVersion {
    /// The master's own version, so it sends its native format as to a replica of its kind.
    Auto,
    Fixed(String),
}

impl AnnounceVersion {
    fn parse(s: &str) -> Result<AnnounceVersion> {
        let s = s.trim();
        if s == "auto" {
            return Ok(AnnounceVersion::Auto);
        }
        let parts: Vec<&str> = s.split('.').collect();
        if !(2..=3).contains(&parts.len())
            || parts
                .iter()
                .any(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            bail!("announce-version must be \"auto\" or a version like 8.1.0, got {s:?}");
        }
        Ok(AnnounceVersion::Fixed(s.to_string()))
    }
}

/// When to fetch a fresh snapshot so the log before it can be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotRefresh {
    /// When the log since the snapshot exceeds the snapshot's size (and at least 64mb).
    Auto,
    Never,
    /// When the log since the snapshot exceeds this many bytes.
    After(u64),
}

impl SnapshotRefresh {
    fn parse(s: &str) -> Result<SnapshotRefresh> {
        Ok(match s.trim() {
            "auto" => SnapshotRefresh::Auto,
            "never" | "0" => SnapshotRefresh::Never,
            size => SnapshotRefresh::After(parse_size(size)?),
        })
    }
}

/// Flags of the relay itself. Every one can also come from the environment or the config file.
#[derive(Debug, Default, Args)]
pub struct RelayArgs {
    /// TOML config file (see config/relay.toml); flags and environment override it.
    #[arg(long, env = "REPLICA_RELAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Port replicas connect to [default: 6380].
    #[arg(long, env = "REPLICA_RELAY_PORT")]
    pub port: Option<u16>,
    /// Address to listen on for replicas [default: 127.0.0.1].
    #[arg(long, env = "REPLICA_RELAY_BIND")]
    pub bind: Option<String>,
    /// The master to replicate from. Also settable at run time with REPLICAOF/SLAVEOF.
    #[arg(
        long,
        alias = "slaveof",
        num_args = 2,
        value_names = ["HOST", "PORT"],
        env = "REPLICA_RELAY_REPLICAOF",
        value_delimiter = ' '
    )]
    pub replicaof: Option<Vec<String>>,
    /// Password for the master (its requirepass, or the password of --masteruser).
    #[arg(long, env = "REPLICA_RELAY_MASTERAUTH", hide_env_values = true)]
    pub masterauth: Option<String>,
    /// ACL user on the master (AUTH <masteruser> <masterauth>).
    #[arg(long, env = "REPLICA_RELAY_MASTERUSER")]
    pub masteruser: Option<String>,
    /// Password replicas and clients must AUTH with (replicas set it as their masterauth).
    #[arg(long, env = "REPLICA_RELAY_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<String>,
    /// Refuse non-loopback clients when no requirepass is set and bind is not loopback
    /// [default: yes].
    #[arg(long, env = "REPLICA_RELAY_PROTECTED_MODE")]
    pub protected_mode: Option<YesNo>,
    /// Directory of the store: snapshot, stream log, identity [default: ./replica-relay-data].
    #[arg(long, env = "REPLICA_RELAY_DIR")]
    pub dir: Option<PathBuf>,
    /// When stream bytes are fsynced: always, everysec or no [default: everysec].
    #[arg(long, env = "REPLICA_RELAY_APPENDFSYNC")]
    pub appendfsync: Option<Fsync>,
    /// Log bytes kept for partial resyncs beyond what the snapshot in service needs, like
    /// repl-backlog-size [default: 1gb].
    #[arg(long, env = "REPLICA_RELAY_BACKLOG_SIZE")]
    pub backlog_size: Option<String>,
    /// When to fetch a fresh snapshot on a second connection: "auto" (when the log since the
    /// snapshot outgrows the snapshot, and at least 64mb), "never", or a size [default: auto].
    #[arg(long, env = "REPLICA_RELAY_SNAPSHOT_REFRESH")]
    pub snapshot_refresh: Option<String>,
    /// Where fresh snapshots come from: "local" (a redis-server/valkey-server child of the
    /// relay, the compactor, rebuilds the data from the relay's store and saves it: the master
    /// never forks for it) or "master" (a fork on the master) [default: local when a server
    /// binary of the master's family and major version is found, else master].
    #[arg(long, env = "REPLICA_RELAY_SNAPSHOT_SOURCE")]
    pub snapshot_source: Option<SnapshotSource>,
    /// The compactor's server binary [default: valkey-server or redis-server on PATH, as the
    /// master is].
    #[arg(long, env = "REPLICA_RELAY_COMPACTOR_SERVER", value_name = "PATH")]
    pub compactor_server: Option<PathBuf>,
    /// The most memory the compactor may take (its RSS); a dataset that does not fit is
    /// refreshed from the master instead [default: no bound].
    #[arg(long, env = "REPLICA_RELAY_COMPACTOR_MAXMEMORY")]
    pub compactor_maxmemory: Option<String>,
    /// Version announced to a Valkey master (REPLCONF version), which picks the snapshot's
    /// format by it: "auto" (the master's own version: its native format, which Valkey
    /// replicas as new as the master load), or the oldest Valkey version of the replicas
    /// behind the relay, e.g. 8.1.0 (RDB 11, which Redis 7.2+ replicas load too, but which
    /// cannot hold hash field expiry) [default: auto].
    #[arg(long, env = "REPLICA_RELAY_ANNOUNCE_VERSION")]
    pub announce_version: Option<String>,
    /// Size at which a new log segment is started, like 64mb [default: 64mb].
    #[arg(long, env = "REPLICA_RELAY_LOG_SEGMENT_SIZE")]
    pub log_segment_size: Option<String>,
    /// Seconds without data before a link is considered dead, like repl-timeout [default: 60].
    #[arg(long, env = "REPLICA_RELAY_REPL_TIMEOUT")]
    pub repl_timeout: Option<u64>,
    /// Most client connections at once [default: 10000].
    #[arg(long, env = "REPLICA_RELAY_MAXCLIENTS")]
    pub maxclients: Option<usize>,
    /// Seconds between reads of the master's offset (INFO replication on a separate short
    /// connection) for the exact lag metric; 0 disables them [default: 1].
    #[arg(long, env = "REPLICA_RELAY_MASTER_INFO_INTERVAL")]
    pub master_info_interval: Option<u64>,
    /// Port of the admin HTTP server (/healthz, /readyz); 0 disables it [default: 9480].
    #[arg(long, env = "REPLICA_RELAY_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Address of the admin HTTP server [default: 127.0.0.1].
    #[arg(long, env = "REPLICA_RELAY_METRICS_BIND")]
    pub metrics_bind: Option<String>,
    /// Port of the TLS listener for replicas and clients, beside or instead of --port (0, the
    /// default, turns it off; --port 0 turns plain TCP off) [default: 0].
    #[arg(long, env = "REPLICA_RELAY_TLS_PORT")]
    pub tls_port: Option<u16>,
    /// The relay's certificate (PEM; the chain after it), for --tls-port and --metrics-tls,
    /// and as its client certificate towards the master unless --tls-client-cert-file is set.
    #[arg(long, env = "REPLICA_RELAY_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, env = "REPLICA_RELAY_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// The certificate presented to a master that requires client certificates.
    #[arg(long, env = "REPLICA_RELAY_TLS_CLIENT_CERT_FILE", value_name = "FILE")]
    pub tls_client_cert_file: Option<PathBuf>,
    /// The private key of --tls-client-cert-file.
    #[arg(long, env = "REPLICA_RELAY_TLS_CLIENT_KEY_FILE", value_name = "FILE")]
    pub tls_client_key_file: Option<PathBuf>,
    /// CA certificates (PEM) that the master's and the clients' certificates must chain to.
    #[arg(long, env = "REPLICA_RELAY_TLS_CA_CERT_FILE", value_name = "FILE")]
    pub tls_ca_cert_file: Option<PathBuf>,
    /// A directory of CA certificates (PEM files), as --tls-ca-cert-file.
    #[arg(long, env = "REPLICA_RELAY_TLS_CA_CERT_DIR", value_name = "DIR")]
    pub tls_ca_cert_dir: Option<PathBuf>,
    /// Whether clients on --tls-port must present a certificate signed by the CA: yes, no or
    /// optional (verified when given), as in Redis [default: yes].
    #[arg(long, env = "REPLICA_RELAY_TLS_AUTH_CLIENTS")]
    pub tls_auth_clients: Option<AuthClients>,
    /// TLS on the link to the master (and the relay's other connections to it) [default: no].
    #[arg(long, env = "REPLICA_RELAY_TLS_REPLICATION")]
    pub tls_replication: Option<YesNo>,
    /// The name the master's certificate must be valid for [default: the master's host].
    #[arg(long, env = "REPLICA_RELAY_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// TLS versions, as in Redis: "TLSv1.2 TLSv1.3" [default: both].
    #[arg(long, env = "REPLICA_RELAY_TLS_PROTOCOLS")]
    pub tls_protocols: Option<String>,
    /// TLS 1.3 cipher suites, colon-separated, e.g. TLS_AES_256_GCM_SHA384 [default: rustls'].
    #[arg(long, env = "REPLICA_RELAY_TLS_CIPHERSUITES")]
    pub tls_ciphersuites: Option<String>,
    /// TLS 1.2 ciphers, colon-separated OpenSSL names, e.g. ECDHE-RSA-AES256-GCM-SHA384
    /// [default: rustls'].
    #[arg(long, env = "REPLICA_RELAY_TLS_CIPHERS")]
    pub tls_ciphers: Option<String>,
    /// Serve the admin endpoints over HTTPS with --tls-cert-file [default: no].
    #[arg(long, env = "REPLICA_RELAY_METRICS_TLS")]
    pub metrics_tls: Option<YesNo>,
    /// Sentinels to find the master through, as HOST:PORT,HOST:PORT: the relay asks them for
    /// --sentinel-master (SENTINEL get-master-addr-by-name), checks it with its INFO, and
    /// moves when they announce a failover (+switch-master). With --replicaof too, the relay
    /// attaches there (a replica, another relay) until the next failover.
    #[arg(long, env = "REPLICA_RELAY_SENTINEL", value_name = "HOST:PORT,...")]
    pub sentinel: Option<String>,
    /// The name the Sentinels monitor the master by (sentinel monitor <name> ...).
    #[arg(long, env = "REPLICA_RELAY_SENTINEL_MASTER", value_name = "NAME")]
    pub sentinel_master: Option<String>,
    /// ACL user on the Sentinels (AUTH <sentinel-user> <sentinel-password>).
    #[arg(long, env = "REPLICA_RELAY_SENTINEL_USER")]
    pub sentinel_user: Option<String>,
    /// Password of the Sentinels (their requirepass, or the password of --sentinel-user).
    #[arg(long, env = "REPLICA_RELAY_SENTINEL_PASSWORD", hide_env_values = true)]
    pub sentinel_password: Option<String>,
    /// Keep the snapshot in service and the replicas where they are while a master with
    /// another history holds no keys (a master without persistence restarted empty), instead
    /// of giving them its empty dataset [default: yes].
    #[arg(long, env = "REPLICA_RELAY_EMPTY_MASTER_GUARD")]
    pub empty_master_guard: Option<YesNo>,
    /// Backups asked of the relay (redis-cli --rdb) get the stored snapshot when it is younger
    /// than this, like 30m; otherwise, unless it covers the current offset, a fresh one from
    /// the master [default: none: always current].
    #[arg(long, env = "REPLICA_RELAY_RDB_ONLY_MAX_AGE", value_name = "DURATION")]
    pub rdb_only_max_age: Option<String>,
    /// Keep the snapshots and log that `replica-relay restore` needs to restore any moment of
    /// this last stretch of time, like 24h: a refreshed snapshot's predecessor is kept while
    /// the window needs it [default: off: only the snapshot in service].
    #[arg(long, env = "REPLICA_RELAY_RESTORE_WINDOW", value_name = "DURATION")]
    pub restore_window: Option<String>,
    /// With --restore-window: the most the store (snapshots and log) may take on disk, like
    /// 20gb; the oldest restore points go first and the window shrinks, with a log line and
    /// relay_restore_window_shrunk in INFO [default: no bound].
    #[arg(long, env = "REPLICA_RELAY_RESTORE_MAX_DISK", value_name = "SIZE")]
    pub restore_max_disk: Option<String>,
    /// Full syncs sent at once; the others wait in arrival order, with a newline a second as
    /// while a master runs BGSAVE [default: 4].
    #[arg(long, env = "REPLICA_RELAY_MAX_FULL_SYNCS")]
    pub max_full_syncs: Option<usize>,
    /// Bytes per second for all full syncs together, like 200mb; streaming replicas are never
    /// paced [default: unlimited].
    #[arg(long, env = "REPLICA_RELAY_FULL_SYNC_RATE", value_name = "RATE")]
    pub full_sync_rate: Option<String>,
    /// Bytes per second for each replica's full sync, like 50mb [default: unlimited].
    #[arg(long, env = "REPLICA_RELAY_REPLICA_RATE", value_name = "RATE")]
    pub replica_rate: Option<String>,
    /// What INFO reports as slave_priority/replica_priority. 0 (the default) tells Sentinel
    /// never to promote the relay, which holds no keys; another value only for setups that know
    /// why [default: 0].
    #[arg(long, env = "REPLICA_RELAY_REPLICA_PRIORITY")]
    pub replica_priority: Option<u32>,
    /// What INFO reports as replica_announced. "no" (the default) hides the relay from
    /// `SENTINEL REPLICAS`, so clients that find replicas through Sentinel do not send reads
    /// to it: it holds no keys [default: no].
    #[arg(long, env = "REPLICA_RELAY_REPLICA_ANNOUNCED")]
    pub replica_announced: Option<YesNo>,
    /// Renames a command, as redis.conf's rename-command (and Sentinel's), given as
    /// NAME=NEWNAME; an empty NEWNAME disables NAME. Repeatable.
    #[arg(
        long = "rename-command",
        env = "REPLICA_RELAY_RENAME_COMMAND",
        value_delimiter = ',',
        value_name = "NAME=NEWNAME"
    )]
    pub rename_command: Vec<String>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive [default: info].
    #[arg(long, env = "REPLICA_RELAY_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log line format [default: text].
    #[arg(long, env = "REPLICA_RELAY_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Whether clients on the TLS port must present a certificate, as Redis' `tls-auth-clients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthClients {
    #[default]
    Yes,
    No,
    Optional,
}

/// What the operator asked to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreRetention {
    /// `None`: only the snapshot in service is kept (the default).
    pub window: Option<Duration>,
    /// Bytes the whole store (snapshots and log) may take for the window.
    pub max_disk: Option<u64>,
}

/// The TLS options, as redis.conf names them; checked and loaded by the `tls` room.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// 0: no TLS listener.
    pub port: u16,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub ca_cert_file: Option<PathBuf>,
    pub ca_cert_dir: Option<PathBuf>,
    pub auth_clients: AuthClients,
    pub replication: bool,
    pub server_name: Option<String>,
    pub protocols: Option<String>,
    pub ciphersuites: Option<String>,
    pub ciphers: Option<String>,
    pub metrics: bool,
}

impl TlsConfig {
    /// Whether anything uses TLS.
    pub fn enabled(&self) -> bool {
        self.port != 0 || self.replication || self.metrics
    }
}

/// The TOML file: the same options, with redis.conf-style names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    port: Option<u16>,
    bind: Option<String>,
    /// `"HOST PORT"`, as in redis.conf.
    replicaof: Option<String>,
    masterauth: Option<String>,
    masteruser: Option<String>,
    requirepass: Option<String>,
    protected_mode: Option<YesNo>,
    dir: Option<PathBuf>,
    appendfsync: Option<Fsync>,
    backlog_size: Option<String>,
    snapshot_refresh: Option<String>,
    snapshot_source: Option<SnapshotSource>,
    compactor_server: Option<PathBuf>,
    compactor_maxmemory: Option<String>,
    announce_version: Option<String>,
    log_segment_size: Option<String>,
    repl_timeout: Option<u64>,
    maxclients: Option<usize>,
    master_info_interval: Option<u64>,
    metrics_port: Option<u16>,
    metrics_bind: Option<String>,
    tls_port: Option<u16>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_cert_file: Option<PathBuf>,
    tls_client_key_file: Option<PathBuf>,
    tls_ca_cert_file: Option<PathBuf>,
    tls_ca_cert_dir: Option<PathBuf>,
    tls_auth_clients: Option<AuthClients>,
    tls_replication: Option<YesNo>,
    tls_server_name: Option<String>,
    tls_protocols: Option<String>,
    tls_ciphersuites: Option<String>,
    tls_ciphers: Option<String>,
    metrics_tls: Option<YesNo>,
    sentinel: Option<String>,
    sentinel_master: Option<String>,
    sentinel_user: Option<String>,
    sentinel_password: Option<String>,
    empty_master_guard: Option<YesNo>,
    rdb_only_max_age: Option<String>,
    restore_window: Option<String>,
    restore_max_disk: Option<String>,
    max_full_syncs: Option<usize>,
    full_sync_rate: Option<String>,
    replica_rate: Option<String>,
    replica_priority: Option<u32>,
    replica_announced: Option<YesNo>,
    /// `["NAME NEWNAME", ...]`, as redis.conf's lines.
    rename_command: Option<Vec<String>>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub config_file: Option<PathBuf>,
    pub port: u16,
    pub bind: String,
    pub replicaof: Option<MasterAddr>,
    pub masterauth: Option<String>,
    pub masteruser: Option<String>,
    pub requirepass: Option<String>,
    pub protected_mode: bool,
    pub dir: PathBuf,
    pub appendfsync: Fsync,
    pub backlog_size: u64,
    pub snapshot_refresh: SnapshotRefresh,
    /// `None`: local when a compactor binary is found (decided at start).
    pub snapshot_source: Option<SnapshotSource>,
    pub compactor_server: Option<PathBuf>,
    pub compactor_maxmemory: Option<u64>,
    pub announce_version: AnnounceVersion,
    pub log_segment_size: u64,
    pub repl_timeout: Duration,
    pub maxclients: usize,
    /// `None` when disabled.
    pub master_info_interval: Option<Duration>,
    pub metrics_port: u16,
    pub metrics_bind: String,
    pub tls: TlsConfig,
    /// Sentinels to find the master through; empty without `--sentinel`.
    pub sentinels: Vec<MasterAddr>,
    pub sentinel_master: Option<String>,
    pub sentinel_user: Option<String>,
    pub sentinel_password: Option<String>,
    pub empty_master_guard: bool,
    pub rdb_only_max_age: Option<Duration>,
    pub restore: RestoreRetention,
    pub max_full_syncs: usize,
    /// Bytes per second; `None` when unlimited.
    pub full_sync_rate: Option<u64>,
    pub replica_rate: Option<u64>,
    pub replica_priority: u32,
    pub replica_announced: bool,
    /// Lowercase original name to lowercase new name (empty: disabled).
    pub renamed: BTreeMap<String, String>,
    pub log_level: String,
    pub log_format: LogFormat,
}

impl Config {
    /// The relay's configuration from flags, environment, the `--config` file and defaults,
    /// checked as a whole.
    pub fn resolve(args: RelayArgs) -> Result<Config> {
        let config = Config::read(args)?;
        config.validate()?;
        Ok(config)
    }

    /// The same values without the checks across options, for a tool that needs a few of them
    /// (`healthcheck`: where the admin server listens).
    pub fn read(args: RelayArgs) -> Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("in config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let replicaof = match (args.replicaof, file.replicaof) {
            (Some(v), _) => match &v[..] {
                [host, port] => Some(MasterAddr::parse(host, port)?),
                _ => bail!("replicaof must be HOST PORT, got {:?}", v.join(" ")),
            },
            (None, Some(s)) => Some(parse_replicaof(&s)?),
            (None, None) => None,
        };
        let segment = args.log_segment_size.or(file.log_segment_size);
        let backlog = args.backlog_size.or(file.backlog_size);
        let refresh = args.snapshot_refresh.or(file.snapshot_refresh);
        let announce = args.announce_version.or(file.announce_version);
        let config = Config {
            config_file: args.config.clone(),
            port: args.port.or(file.port).unwrap_or(6380),
            bind: args
                .bind
                .or(file.bind)
                .unwrap_or_else(|| "127.0.0.1".into()),
            replicaof,
            masterauth: args
                .masterauth
                .or(file.masterauth)
                .filter(|s| !s.is_empty()),
            masteruser: args
                .masteruser
                .or(file.masteruser)
                .filter(|s| !s.is_empty()),
            requirepass: args
                .requirepass
                .or(file.requirepass)
                .filter(|s| !s.is_empty()),
            protected_mode: args.protected_mode.or(file.protected_mode) != Some(YesNo::No),
            dir: args
                .dir
                .or(file.dir)
                .unwrap_or_else(|| "replica-relay-data".into()),
            appendfsync: args
                .appendfsync
                .or(file.appendfsync)
                .unwrap_or(Fsync::Everysec),
            backlog_size: backlog
                .as_deref()
                .map(parse_size)
                .transpose()?
                .unwrap_or(1 << 30),
            snapshot_refresh: refresh
                .as_deref()
                .map(SnapshotRefresh::parse)
                .transpose()?
                .unwrap_or(SnapshotRefresh::Auto),
            announce_version: announce
                .as_deref()
                .map(AnnounceVersion::parse)
                .transpose()?
                .unwrap_or(AnnounceVersion::Auto),
            log_segment_size: segment
                .as_deref()
                .map(parse_size)
                .transpose()?
                .unwrap_or(64 << 20),
            repl_timeout: Duration::from_secs(
                args.repl_timeout.or(file.repl_timeout).unwrap_or(60),
            ),
            maxclients: args.maxclients.or(file.maxclients).unwrap_or(10_000),
            master_info_interval: Some(
                args.master_info_interval
                    .or(file.master_info_interval)
                    .unwrap_or(1),
            )
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
            metrics_port: args.metrics_port.or(file.metrics_port).unwrap_or(9480),
            metrics_bind: args
                .metrics_bind
                .or(file.metrics_bind)
                .unwrap_or_else(|| "127.0.0.1".into()),
            tls: TlsConfig {
                port: args.tls_port.or(file.tls_port).unwrap_or(0),
                cert_file: args.tls_cert_file.or(file.tls_cert_file),
                key_file: args.tls_key_file.or(file.tls_key_file),
                client_cert_file: args.tls_client_cert_file.or(file.tls_client_cert_file),
                client_key_file: args.tls_client_key_file.or(file.tls_client_key_file),
                ca_cert_file: args.tls_ca_cert_file.or(file.tls_ca_cert_file),
                ca_cert_dir: args.tls_ca_cert_dir.or(file.tls_ca_cert_dir),
                auth_clients: args
                    .tls_auth_clients
                    .or(file.tls_auth_clients)
                    .unwrap_or_default(),
                replication: args.tls_replication.or(file.tls_replication) == Some(YesNo::Yes),
                server_name: args.tls_server_name.or(file.tls_server_name),
                protocols: args.tls_protocols.or(file.tls_protocols),
                ciphersuites: args.tls_ciphersuites.or(file.tls_ciphersuites),
                ciphers: args.tls_ciphers.or(file.tls_ciphers),
                metrics: args.metrics_tls.or(file.metrics_tls) == Some(YesNo::Yes),
            },
            sentinels: args
                .sentinel
                .or(file.sentinel)
                .as_deref()
                .map(parse_addresses)
                .transpose()?
                .unwrap_or_default(),
            sentinel_master: args.sentinel_master.or(file.sentinel_master),
            sentinel_user: args
                .sentinel_user
                .or(file.sentinel_user)
                .filter(|s| !s.is_empty()),
            sentinel_password: args
                .sentinel_password
                .or(file.sentinel_password)
                .filter(|s| !s.is_empty()),
            empty_master_guard: args.empty_master_guard.or(file.empty_master_guard)
                != Some(YesNo::No),
            snapshot_source: args.snapshot_source.or(file.snapshot_source),
            compactor_server: args.compactor_server.or(file.compactor_server),
            compactor_maxmemory: args
                .compactor_maxmemory
                .or(file.compactor_maxmemory)
                .as_deref()
                .map(parse_size)
                .transpose()?
                .filter(|n| *n > 0),
            rdb_only_max_age: args
                .rdb_only_max_age
                .or(file.rdb_only_max_age)
                .as_deref()
                .map(parse_duration)
                .transpose()?,
            restore: RestoreRetention {
                window: args
                    .restore_window
                    .or(file.restore_window)
                    .as_deref()
                    .map(parse_duration)
                    .transpose()?
                    .filter(|w| !w.is_zero()),
                max_disk: args
                    .restore_max_disk
                    .or(file.restore_max_disk)
                    .as_deref()
                    .map(parse_size)
                    .transpose()?,
            },
            max_full_syncs: match args.max_full_syncs.or(file.max_full_syncs).unwrap_or(4) {
                0 => bail!("max-full-syncs must be at least 1"),
                n => n,
            },
            full_sync_rate: args
                .full_sync_rate
                .or(file.full_sync_rate)
                .as_deref()
                .map(parse_rate)
                .transpose()?,
            replica_rate: args
                .replica_rate
                .or(file.replica_rate)
                .as_deref()
                .map(parse_rate)
                .transpose()?,
            replica_priority: args.replica_priority.or(file.replica_priority).unwrap_or(0),
            replica_announced: args.replica_announced.or(file.replica_announced)
                == Some(YesNo::Yes),
            renamed: renames(&args.rename_command, file.rename_command.as_deref())?,
            log_level: args
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
        };
        Ok(config)
    }

    /// The port the relay names to its master (`REPLCONF listening-port`), where its replicas
    /// connect: the plain one, or the TLS one when plain TCP is off.
    pub fn announced_port(&self) -> u16 {
        if self.port != 0 {
            self.port
        } else {
            self.tls.port
        }
    }

    fn validate(&self) -> Result<()> {
        if self.port == 0 && self.tls.port == 0 {
            bail!(
                "port must be between 1 and 65535 (port 0 turns plain TCP off only with a tls-port)"
            );
        }
        let t = &self.tls;
        if (t.port != 0 || t.metrics) && (t.cert_file.is_none() || t.key_file.is_none()) {
            bail!("tls-port and metrics-tls need tls-cert-file and tls-key-file");
        }
        if t.enabled() && t.ca_cert_file.is_none() && t.ca_cert_dir.is_none() {
            bail!(
                "TLS needs tls-ca-cert-file or tls-ca-cert-dir: the CA the master's and the clients' certificates are checked against"
            );
        }
        if t.client_cert_file.is_some() != t.client_key_file.is_some() {
            bail!("tls-client-cert-file and tls-client-key-file go together");
        }
        if self.masteruser.is_some() && self.masterauth.is_none() {
            bail!("masteruser needs masterauth (the user's password)");
        }
        if self.log_segment_size < 4096 {
            bail!("log-segment-size must be at least 4kb");
        }
        if self.repl_timeout.is_zero() {
            bail!("repl-timeout must be at least 1 second");
        }
        if self.maxclients == 0 {
            bail!("maxclients must be at least 1");
        }
        if self.sentinels.is_empty() != self.sentinel_master.is_none() {
            bail!(
                "sentinel and sentinel-master go together: the Sentinels, and the name they monitor the master by"
            );
        }
        if self.sentinel_user.is_some() && self.sentinel_password.is_none() {
            bail!("sentinel-user needs sentinel-password (the user's password)");
        }
        Ok(())
    }
}

/// `rename-command` from the flags (`NAME=NEWNAME`) or else the file (`"NAME NEWNAME"`).
fn renames(flags: &[String], file: Option<&[String]>) -> Result<BTreeMap<String, String>> {
    let pairs: Vec<(String, String)> = if !flags.is_empty() {
        flags
            .iter()
            .map(|f| match f.split_once('=') {
                Some((old, new)) => Ok((old.to_string(), new.to_string())),
                None => bail!("rename-command must be NAME=NEWNAME, got {f:?}"),
            })
            .collect::<Result<_>>()?
    } else {
        file.unwrap_or_default()
            .iter()
            .map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                [old, new] => Ok((old.to_string(), new.trim_matches('"').to_string())),
                [old] => Ok((old.to_string(), String::new())),
                _ => bail!("rename-command must be \"NAME NEWNAME\", got {l:?}"),
            })
            .collect::<Result<_>>()?
    };
    let mut out = BTreeMap::new();
    for (old, new) in pairs {
        let (old, new) = (old.to_ascii_lowercase(), new.to_ascii_lowercase());
        if old.is_empty() || old.len() > 64 || new.len() > 64 || new.contains(char::is_whitespace) {
            bail!("rename-command: invalid command name in {old:?} -> {new:?}");
        }
        out.insert(old, new);
    }
    Ok(out)
}

/// `HOST:PORT,HOST:PORT`, IPv6 hosts in brackets (`[::1]:26379`).
fn parse_addresses(s: &str) -> Result<Vec<MasterAddr>> {
    let addrs = s.split(',').map(str::trim).filter(|a| !a.is_empty());
    let parsed = addrs
        .map(|a| {
            let (host, port) = a
                .rsplit_once(':')
                .with_context(|| format!("sentinel address must be HOST:PORT, got {a:?}"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            MasterAddr::parse(host, port)
        })
        .collect::<Result<Vec<_>>>()?;
    if parsed.is_empty() {
        bail!("sentinel needs at least one HOST:PORT");
    }
    Ok(parsed)
}

fn parse_replicaof(s: &str) -> Result<MasterAddr> {
    match s.split_whitespace().collect::<Vec<_>>()[..] {
        [host, port] => MasterAddr::parse(host, port),
        _ => bail!("replicaof must be \"HOST PORT\", got {s:?}"),
    }
}

/// A duration like `90s`, `30m`, `24h`, `7d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let lower = s.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = match &lower[digits.len()..] {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        other => bail!("unknown duration unit {other:?} in {s:?} (use s, m, h or d)"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("invalid duration {s:?}"))?;
    n.checked_mul(unit)
        .map(Duration::from_secs)
        .with_context(|| format!("duration {s:?} is too long"))
}

/// A byte rate: a size per second, like `100mb` or `100mb/s`; at least one byte.
pub fn parse_rate(s: &str) -> Result<u64> {
    let size = s.trim().strip_suffix("/s").unwrap_or(s);
    match parse_size(size)? {
        0 => bail!("rate {s:?} must be more than 0 bytes per second"),
        n => Ok(n),
    }
}

/// A size like redis.conf writes them: `1gb`, `64mb`, `512k`, `4096`.
pub fn parse_size(s: &str) -> Result<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = match &lower[digits.len()..] {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1000 * 1000,
        "mb" => 1 << 20,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1 << 30,
        other => bail!("unknown size unit {other:?} in {s:?}"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("invalid size {s:?}"))?;
    n.checked_mul(unit)
        .with_context(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_redis_conf() {
        assert_eq!(parse_size("1gb").unwrap(), 1 << 30);
        assert_eq!(parse_size("64MB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1k").unwrap(), 1000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12xb").is_err());
        assert!(parse_size("mb").is_err());
    }

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("5w").is_err() && parse_duration("h").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "port = 7000\nreplicaof = \"10.0.0.1 6379\"\nrepl-timeout = 5\n",
        )
        .unwrap();
        let args = RelayArgs {
            config: Some(path.clone()),
            port: Some(7100),
            ..Default::default()
        };
        let c = Config::resolve(args).unwrap();
        assert_eq!(c.port, 7100);
        assert_eq!(
            c.replicaof,
            Some(MasterAddr {
                host: "10.0.0.1".into(),
                port: 6379
            })
        );
        assert_eq!(c.repl_timeout, Duration::from_secs(5));
        std::fs::write(&path, "prot = 1\n").unwrap();
        let err = Config::resolve(RelayArgs {
            config: Some(path),
            ..Default::default()
        });
        assert!(format!("{:#}", err.unwrap_err()).contains("unknown field"));
    }

    #[test]
    fn the_restore_window_is_off_by_default_and_read_from_the_file() {
        assert_eq!(
            Config::resolve(RelayArgs::default()).unwrap().restore,
            RestoreRetention::default()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "restore-window = \"24h\"\nrestore-max-disk = \"2gb\"\n",
        )
        .unwrap();
        let c = Config::resolve(RelayArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.restore.window, Some(Duration::from_secs(86400)));
        assert_eq!(c.restore.max_disk, Some(2 << 30));
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/relay.toml");
        let c = Config::resolve(RelayArgs {
            config: Some(path.into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.port, 6380);
        assert_eq!(
            c.replicaof,
            Some(MasterAddr {
                host: "127.0.0.1".into(),
                port: 6379
            })
        );
    }

    #[test]
    fn announced_versions_are_auto_or_numbers() {
        assert_eq!(
            AnnounceVersion::parse("auto").unwrap(),
            AnnounceVersion::Auto
        );
        assert_eq!(
            AnnounceVersion::parse("8.1.0").unwrap(),
            AnnounceVersion::Fixed("8.1.0".into())
        );
        for bad in ["8", "8.x", "8.1.0.1", "", "8..1", "v9.1"] {
            assert!(AnnounceVersion::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_one_word_replicaof_is_an_error() {
        let err = Config::resolve(RelayArgs {
            replicaof: Some(vec!["10.0.0.1".into()]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("HOST PORT"), "{err}");
    }

    #[test]
    fn sentinels_are_host_port_lists_and_need_a_master_name() {
        let list = parse_addresses("10.0.0.1:26379, [::1]:26380").unwrap();
        assert_eq!(list[1].to_string(), "[::1]:26380");
        assert!(parse_addresses("10.0.0.1").is_err());
        assert!(parse_addresses(",").is_err());
        let alone = Config::resolve(RelayArgs {
            sentinel: Some("10.0.0.1:26379".into()),
            ..Default::default()
        });
        assert!(alone.unwrap_err().to_string().contains("sentinel-master"));
    }

    #[test]
    fn bad_master_addresses_are_refused() {
        assert!(parse_replicaof("host").is_err());
        assert!(MasterAddr::parse("h", "0").is_err());
        assert!(MasterAddr::parse("h", "70000").is_err());
        assert_eq!(
            MasterAddr::parse("::1", "6379").unwrap().to_string(),
            "[::1]:6379"
        );
    }
}

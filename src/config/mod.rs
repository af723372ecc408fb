//! Configuration: redis-server-style flags, `REPLICA_RELAY_*` environment variables and a TOML
//! file, resolved into one validated `Config`.
//!
//! Every option is one row of the `options!` table below: its field and type, its name (the
//! flag and the TOML key), its environment variable, its default as a person writes it, its
//! help, and the names CONFIG GET knows it by. The flags, the file's keys, the parsing, the
//! defaults in `--help` and CONFIG GET all come from that row. Precedence is flag, then
//! environment, then file, then default. Names follow redis.conf (`replicaof`, `masterauth`,
//! `repl-timeout`, `appendfsync`) so Redis operators know them.

mod source;
mod value;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{ArgMatches, Command, FromArgMatches};

use source::{Given, Opt, Shape};
pub use value::{
    AnnounceVersion, AuthClients, Bytes, ClusterShard, Compression, Fsync, LogFormat, MasterAddr,
    Rate, Renames, Setting, SnapshotRefresh, SnapshotSource, ZstdLink,
};

/// Makes `Config` (one field per row), `OPTIONS` (the table clap and the file reader use) and
/// `Config::config_get` from the rows.
macro_rules! options {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty = $default:literal, $name:literal, $env:literal
        $(, get $($get:literal)|+)? $(, as $shape:ident)?;
    )+) => {
        /// The resolved configuration: one field per option.
        #[derive(Debug, Clone)]
        pub struct Config {
            /// The `--config` file the values were read with.
            pub config_file: Option<PathBuf>,
            $( $(#[doc = $doc])+ pub $field: $ty, )+
        }

        /// Every option, in the order `--help` lists them.
        static OPTIONS: &[Opt] = &[$(Opt {
            name: $name,
            env: $env,
            default: $default,
            help: concat!($($doc, "\n"),+),
            choices: <$ty as Setting>::CHOICES,
            check: |s| <$ty as Setting>::parse(s).map(drop),
            shape: shape!($($shape)?),
        }),+];

        impl Config {
            fn from_given(given: &Given) -> Result<Config> {
                Ok(Config {
                    config_file: given.config_file.clone(),
                    $( $field: given.parse::<$ty>($name, $default)?, )+
                })
            }

            /// The options CONFIG GET answers for, under redis-server's names, as it shows
            /// them (sizes in bytes, durations in seconds, yes/no).
            pub fn config_get(&self) -> Vec<(&'static str, String)> {
                vec![$($($( ($get, Setting::show(&self.$field)), )+)?)+]
            }
        }
    };
}

macro_rules! shape {
    () => {
        Shape::One
    };
    ($shape:ident) => {
        Shape::$shape
    };
}

options! {
    /// Port replicas connect to.
    port: u16 = "6380", "port", "REPLICA_RELAY_PORT", get "port";
    /// Address to listen on for replicas.
    bind: String = "127.0.0.1", "bind", "REPLICA_RELAY_BIND", get "bind";
    /// The master to replicate from: HOST PORT. Also settable at run time with
    /// REPLICAOF/SLAVEOF.
    replicaof: Option<MasterAddr> = "", "replicaof", "REPLICA_RELAY_REPLICAOF", as HostPort;
    /// Password for the master (its requirepass, or the password of --masteruser).
    masterauth: Option<String> = "", "masterauth", "REPLICA_RELAY_MASTERAUTH", as Secret;
    /// ACL user on the master (AUTH <masteruser> <masterauth>).
    masteruser: Option<String> = "", "masteruser", "REPLICA_RELAY_MASTERUSER",
        get "masteruser";
    /// Password replicas and clients must AUTH with (replicas set it as their masterauth).
    requirepass: Option<String> = "", "requirepass", "REPLICA_RELAY_REQUIREPASS", as Secret;
    /// Refuse non-loopback clients when no requirepass is set and bind is not loopback.
    protected_mode: bool = "yes", "protected-mode", "REPLICA_RELAY_PROTECTED_MODE",
        get "protected-mode";
    /// Directory of the store: snapshot, stream log, identity.
    dir: PathBuf = "replica-relay-data", "dir", "REPLICA_RELAY_DIR", get "dir";
    /// When stream bytes are fsynced: always, everysec or no.
    appendfsync: Fsync = "everysec", "appendfsync", "REPLICA_RELAY_APPENDFSYNC",
        get "appendfsync";
    /// Log bytes kept for partial resyncs beyond what the snapshot in service needs, like
    /// repl-backlog-size.
    backlog_size: Bytes = "1gb", "backlog-size", "REPLICA_RELAY_BACKLOG_SIZE",
        get "repl-backlog-size";
    /// When to fetch a fresh snapshot on a second connection: "auto" (when the log since the
    /// snapshot outgrows the snapshot, and at least 64mb), "never", or a size.
    snapshot_refresh: SnapshotRefresh = "auto", "snapshot-refresh",
        "REPLICA_RELAY_SNAPSHOT_REFRESH";
    /// Where fresh snapshots come from: "local" (a redis-server/valkey-server child of the
    /// relay, the compactor, rebuilds the data from the relay's store and saves it: the master
    /// never forks for it) or "master" (a fork on the master). Unset: local when a server
    /// binary of the master's family and major version is found, else master.
    snapshot_source: Option<SnapshotSource> = "", "snapshot-source",
        "REPLICA_RELAY_SNAPSHOT_SOURCE";
    /// The compactor's server binary. Unset: valkey-server or redis-server on PATH, as the
    /// master is.
    compactor_server: Option<PathBuf> = "", "compactor-server",
        "REPLICA_RELAY_COMPACTOR_SERVER";
    /// The most memory the compactor may take (its RSS); a dataset that does not fit is
    /// refreshed from the master instead. Unset: no bound.
    compactor_maxmemory: Option<Bytes> = "", "compactor-maxmemory",
        "REPLICA_RELAY_COMPACTOR_MAXMEMORY";
    /// Version announced to a Valkey master (REPLCONF version), which picks the snapshot's
    /// format by it: "auto" (the master's own version: its native format, which Valkey
    /// replicas as new as the master load), or the oldest Valkey version of the replicas
    /// behind the relay, e.g. 8.1.0 (RDB 11, which Redis 7.2+ replicas load too, but which
    /// cannot hold hash field expiry).
    announce_version: AnnounceVersion = "auto", "announce-version",
        "REPLICA_RELAY_ANNOUNCE_VERSION";
    /// Size at which a new log segment is started, like 64mb.
    log_segment_size: Bytes = "64mb", "log-segment-size", "REPLICA_RELAY_LOG_SEGMENT_SIZE";
    /// Seconds without data before a link is considered dead, like repl-timeout.
    repl_timeout: Duration = "60", "repl-timeout", "REPLICA_RELAY_REPL_TIMEOUT",
        get "repl-timeout";
    /// Most client connections at once.
    maxclients: usize = "10000", "maxclients", "REPLICA_RELAY_MAXCLIENTS", get "maxclients";
    /// Seconds between reads of the master's offset (INFO replication on a separate short
    /// connection) for the exact lag metric; 0 disables them.
    master_info_interval: Option<Duration> = "1", "master-info-interval",
        "REPLICA_RELAY_MASTER_INFO_INTERVAL";
    /// Port of the admin HTTP server (/healthz, /readyz, /status, /metrics); 0 disables it.
    metrics_port: u16 = "9480", "metrics-port", "REPLICA_RELAY_METRICS_PORT";
    /// Address of the admin HTTP server.
    metrics_bind: String = "127.0.0.1", "metrics-bind", "REPLICA_RELAY_METRICS_BIND";
    /// Port of the TLS listener for replicas and clients, beside or instead of --port (0 turns
    /// it off; --port 0 turns plain TCP off).
    tls_port: u16 = "0", "tls-port", "REPLICA_RELAY_TLS_PORT";
    /// The relay's certificate (PEM; the chain after it), for --tls-port and --metrics-tls,
    /// and as its client certificate towards the master unless --tls-client-cert-file is set.
    tls_cert_file: Option<PathBuf> = "", "tls-cert-file", "REPLICA_RELAY_TLS_CERT_FILE";
    /// The private key of --tls-cert-file (PEM).
    tls_key_file: Option<PathBuf> = "", "tls-key-file", "REPLICA_RELAY_TLS_KEY_FILE";
    /// The certificate presented to a master that requires client certificates.
    tls_client_cert_file: Option<PathBuf> = "", "tls-client-cert-file",
        "REPLICA_RELAY_TLS_CLIENT_CERT_FILE";
    /// The private key of --tls-client-cert-file.
    tls_client_key_file: Option<PathBuf> = "", "tls-client-key-file",
        "REPLICA_RELAY_TLS_CLIENT_KEY_FILE";
    /// CA certificates (PEM) that the master's and the clients' certificates must chain to.
    tls_ca_cert_file: Option<PathBuf> = "", "tls-ca-cert-file", "REPLICA_RELAY_TLS_CA_CERT_FILE";
    /// A directory of CA certificates (PEM files), as --tls-ca-cert-file.
    tls_ca_cert_dir: Option<PathBuf> = "", "tls-ca-cert-dir", "REPLICA_RELAY_TLS_CA_CERT_DIR";
    /// Whether clients on --tls-port must present a certificate signed by the CA: yes, no or
    /// optional (verified when given), as in Redis.
    tls_auth_clients: AuthClients = "yes", "tls-auth-clients", "REPLICA_RELAY_TLS_AUTH_CLIENTS";
    /// TLS on the link to the master (and the relay's other connections to it).
    tls_replication: bool = "no", "tls-replication", "REPLICA_RELAY_TLS_REPLICATION";
    /// The name the master's certificate must be valid for. Unset: the master's host.
    tls_server_name: Option<String> = "", "tls-server-name", "REPLICA_RELAY_TLS_SERVER_NAME";
    /// TLS versions, as in Redis: "TLSv1.2 TLSv1.3". Unset: both.
    tls_protocols: Option<String> = "", "tls-protocols", "REPLICA_RELAY_TLS_PROTOCOLS";
    /// TLS 1.3 cipher suites, colon-separated, e.g. TLS_AES_256_GCM_SHA384. Unset: rustls'.
    tls_ciphersuites: Option<String> = "", "tls-ciphersuites", "REPLICA_RELAY_TLS_CIPHERSUITES";
    /// TLS 1.2 ciphers, colon-separated OpenSSL names, e.g. ECDHE-RSA-AES256-GCM-SHA384.
    /// Unset: rustls'.
    tls_ciphers: Option<String> = "", "tls-ciphers", "REPLICA_RELAY_TLS_CIPHERS";
    /// Serve the admin endpoints over HTTPS with --tls-cert-file.
    metrics_tls: bool = "no", "metrics-tls", "REPLICA_RELAY_METRICS_TLS";
    /// Sentinels to find the master through, as HOST:PORT,HOST:PORT: the relay asks them for
    /// --sentinel-master (SENTINEL get-master-addr-by-name), checks it with its INFO, and
    /// moves when they announce a failover (+switch-master). With --replicaof too, the relay
    /// attaches there (a replica, another relay) until the next failover.
    sentinels: Vec<MasterAddr> = "", "sentinel", "REPLICA_RELAY_SENTINEL";
    /// The name the Sentinels monitor the master by (sentinel monitor <name> ...).
    sentinel_master: Option<String> = "", "sentinel-master", "REPLICA_RELAY_SENTINEL_MASTER";
    /// ACL user on the Sentinels (AUTH <sentinel-user> <sentinel-password>).
    sentinel_user: Option<String> = "", "sentinel-user", "REPLICA_RELAY_SENTINEL_USER";
    /// Password of the Sentinels (their requirepass, or the password of --sentinel-user).
    sentinel_password: Option<String> = "", "sentinel-password",
        "REPLICA_RELAY_SENTINEL_PASSWORD", as Secret;
    /// Nodes of a Redis Cluster to find the shard through, HOST:PORT (repeatable, or
    /// comma-separated): any node of the cluster will do; the relay learns the others.
    cluster_nodes: Vec<MasterAddr> = "", "cluster-node", "REPLICA_RELAY_CLUSTER_NODE", as List;
    /// The cluster shard to follow, named at first start by a slot it holds (0-16383), its
    /// shard id (Redis 7.2+, Valkey 8+), the id of one of its nodes, or index:I, the I-th shard
    /// (from 0) in the order of the shards' first slots (a StatefulSet pod's ordinal); the relay
    /// records the shard in --dir and follows it, not the slot, through failovers and resharding.
    cluster_shard: Option<ClusterShard> = "", "cluster-shard", "REPLICA_RELAY_CLUSTER_SHARD";
    /// Ask for a compressed link (zstd) when the relay's master is another relay of this
    /// project (its INFO says relay_version): the snapshot and the stream cross compressed and
    /// are stored plain. A real master is never asked; a relay that does not offer it gives a
    /// plain link. "none" or "zstd".
    upstream_compression: Compression = "none", "upstream-compression",
        "REPLICA_RELAY_UPSTREAM_COMPRESSION";
    /// The zstd level the upstream relay compresses at, 1 (fastest) to 19.
    upstream_compression_level: u32 = "3", "upstream-compression-level",
        "REPLICA_RELAY_UPSTREAM_COMPRESSION_LEVEL";
    /// The longest the upstream relay may wait for more bytes before it compresses what it
    /// has, like 1ms (at most 100ms): longer waits make larger frames, which compress better.
    upstream_compression_max_delay: Duration = "1ms", "upstream-compression-max-delay",
        "REPLICA_RELAY_UPSTREAM_COMPRESSION_MAX_DELAY";
    /// Archive to object storage: every snapshot put in service and every sealed log segment,
    /// with its checksums and time index, uploaded in order, for `replica-relay restore --from`
    /// on any machine. s3://bucket/prefix (credentials from the environment: AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, a web identity, the instance's role) or file:///path.
    archive: Option<String> = "", "archive", "REPLICA_RELAY_ARCHIVE";
    /// The endpoint of an S3-compatible store for --archive, like http://minio:9000.
    archive_endpoint: Option<String> = "", "archive-endpoint", "REPLICA_RELAY_ARCHIVE_ENDPOINT";
    /// The most bytes a second uploads to --archive take, like 50mb. Unset: no bound.
    archive_rate: Option<Rate> = "", "archive-rate", "REPLICA_RELAY_ARCHIVE_RATE";
    /// Delete from --archive what restoring any moment of this last stretch does not need,
    /// like 30d: the newest snapshot before it and everything after it stay. Unset: keep all.
    archive_window: Option<Duration> = "", "archive-window", "REPLICA_RELAY_ARCHIVE_WINDOW";
    /// When --dir holds no store yet (a new relay, a volume lost), start from this archive's
    /// newest snapshot and log, and ask the master to continue from where the archive ends: a
    /// partial resync where its backlog still covers the gap, so the master does not fork even
    /// for a new relay. s3://bucket/prefix or file:///path, with --archive-endpoint.
    bootstrap_from: Option<String> = "", "bootstrap-from", "REPLICA_RELAY_BOOTSTRAP_FROM";
    /// Keep the snapshot in service and the replicas where they are while a master with
    /// another history holds no keys (a master without persistence restarted empty), instead
    /// of giving them its empty dataset.
    empty_master_guard: bool = "yes", "empty-master-guard", "REPLICA_RELAY_EMPTY_MASTER_GUARD";
    /// Backups asked of the relay (redis-cli --rdb) get the stored snapshot when it is younger
    /// than this, like 30m; otherwise, unless it covers the current offset, a fresh one from
    /// the master. Unset: always current.
    rdb_only_max_age: Option<Duration> = "", "rdb-only-max-age",
        "REPLICA_RELAY_RDB_ONLY_MAX_AGE";
    /// Keep the snapshots and log that `replica-relay restore` needs to restore any moment of
    /// this last stretch of time, like 24h: a refreshed snapshot's predecessor is kept while
    /// the window needs it. Unset: only the snapshot in service.
    restore_window: Option<Duration> = "", "restore-window", "REPLICA_RELAY_RESTORE_WINDOW";
    /// With --restore-window: the most the store (snapshots and log) may take on disk, like
    /// 20gb; the oldest restore points go first and the window shrinks, with a log line and
    /// relay_restore_window_shrunk in INFO. Unset: no bound.
    restore_max_disk: Option<Bytes> = "", "restore-max-disk", "REPLICA_RELAY_RESTORE_MAX_DISK";
    /// Full syncs sent at once; the others wait in arrival order, with a newline a second as
    /// while a master runs BGSAVE.
    max_full_syncs: usize = "4", "max-full-syncs", "REPLICA_RELAY_MAX_FULL_SYNCS";
    /// Bytes per second for all full syncs together, like 200mb; streaming replicas are never
    /// paced. Unset: unlimited.
    full_sync_rate: Option<Rate> = "", "full-sync-rate", "REPLICA_RELAY_FULL_SYNC_RATE";
    /// Bytes per second for each replica's full sync, like 50mb. Unset: unlimited.
    replica_rate: Option<Rate> = "", "replica-rate", "REPLICA_RELAY_REPLICA_RATE";
    /// What INFO reports as slave_priority/replica_priority. 0 tells Sentinel never to promote
    /// the relay, which holds no keys; another value only for setups that know why.
    replica_priority: u32 = "0", "replica-priority", "REPLICA_RELAY_REPLICA_PRIORITY",
        get "replica-priority" | "slave-priority";
    /// What INFO reports as replica_announced. "no" hides the relay from `SENTINEL REPLICAS`,
    /// so clients that find replicas through Sentinel do not send reads to it: it holds no
    /// keys.
    replica_announced: bool = "no", "replica-announced", "REPLICA_RELAY_REPLICA_ANNOUNCED",
        get "replica-announced";
    /// Renames a command, as redis.conf's rename-command (and Sentinel's), given as
    /// NAME=NEWNAME (a file's list: "NAME NEWNAME"); an empty NEWNAME disables NAME.
    /// Repeatable.
    renamed: Renames = "", "rename-command", "REPLICA_RELAY_RENAME_COMMAND", as List;
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    log_level: String = "info", "log-level", "REPLICA_RELAY_LOG_LEVEL";
    /// Log line format.
    log_format: LogFormat = "text", "log-format", "REPLICA_RELAY_LOG_FORMAT";
}

/// The relay's own arguments for clap: every option of the table, and `--config`.
#[derive(Debug, Default)]
pub struct RelayArgs(Given);

impl clap::Args for RelayArgs {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(source::config_arg())
            .args(OPTIONS.iter().map(source::arg))
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for RelayArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(RelayArgs(source::from_matches(m, OPTIONS)))
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl RelayArgs {
    /// Values as if given as flags, for tests: `[("port", "7100")]`.
    #[cfg(test)]
    pub fn flags(pairs: &[(&'static str, &str)]) -> RelayArgs {
        RelayArgs(Given::flags(pairs))
    }
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
        Config::from_given(&source::with_file(args.0, OPTIONS)?)
    }

    /// The port the relay names to its master (`REPLCONF listening-port`), where its replicas
    /// connect: the plain one, or the TLS one when plain TCP is off.
    pub fn announced_port(&self) -> u16 {
        if self.port != 0 {
            self.port
        } else {
            self.tls_port
        }
    }

    /// The `tls` room's slice.
    pub fn tls(&self) -> TlsConfig {
        TlsConfig {
            port: self.tls_port,
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
            client_cert_file: self.tls_client_cert_file.clone(),
            client_key_file: self.tls_client_key_file.clone(),
            ca_cert_file: self.tls_ca_cert_file.clone(),
            ca_cert_dir: self.tls_ca_cert_dir.clone(),
            auth_clients: self.tls_auth_clients,
            replication: self.tls_replication,
            server_name: self.tls_server_name.clone(),
            protocols: self.tls_protocols.clone(),
            ciphersuites: self.tls_ciphersuites.clone(),
            ciphers: self.tls_ciphers.clone(),
            metrics: self.metrics_tls,
        }
    }

    pub fn restore(&self) -> RestoreRetention {
        RestoreRetention {
            window: self.restore_window,
            max_disk: self.restore_max_disk.map(|b| b.0),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.port == 0 && self.tls_port == 0 {
            bail!(
                "port must be between 1 and 65535 (port 0 turns plain TCP off only with a tls-port)"
            );
        }
        let t = self.tls();
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
        if self.log_segment_size.0 < 4096 {
            bail!("log-segment-size must be at least 4kb");
        }
        if self.repl_timeout.is_zero() {
            bail!("repl-timeout must be at least 1 second");
        }
        if self.maxclients == 0 {
            bail!("maxclients must be at least 1");
        }
        if self.max_full_syncs == 0 {
            bail!("max-full-syncs must be at least 1");
        }
        if self.sentinels.is_empty() != self.sentinel_master.is_none() {
            bail!(
                "sentinel and sentinel-master go together: the Sentinels, and the name they monitor the master by"
            );
        }
        if self.cluster_nodes.is_empty() != self.cluster_shard.is_none() {
            bail!(
                "cluster-node and cluster-shard go together: a node of the cluster, and the shard to follow"
            );
        }
        if !self.cluster_nodes.is_empty()
            && (!self.sentinels.is_empty() || self.replicaof.is_some())
        {
            bail!(
                "cluster-node finds the master itself: it goes with neither sentinel nor replicaof"
            );
        }
        if self.sentinel_user.is_some() && self.sentinel_password.is_none() {
            bail!("sentinel-user needs sentinel-password (the user's password)");
        }
        for (name, url) in [
            ("archive", &self.archive),
            ("bootstrap-from", &self.bootstrap_from),
        ] {
            if let Some(url) = url
                && !(url.starts_with("s3://") || url.starts_with("file:///"))
            {
                bail!("{name} {url}: not s3://bucket/prefix or file:///path");
            }
        }
        if let Err(e) = self.upstream_compression.settings(self) {
            bail!("upstream-compression-level and upstream-compression-max-delay: {e}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str, flags: &[&str]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, text).unwrap();
        let cmd = <RelayArgs as clap::Args>::augment_args(Command::new("relay"));
        let mut argv = vec!["relay", "--config", path.to_str().unwrap()];
        argv.extend(flags);
        let m = cmd.try_get_matches_from(argv).unwrap();
        Config::resolve(RelayArgs::from_arg_matches(&m).unwrap())
    }

    #[test]
    fn flags_override_the_file() {
        let c = with_file(
            "port = 7000\nreplicaof = \"10.0.0.1 6379\"\nrepl-timeout = 5\n",
            &["--port", "7100"],
        )
        .unwrap();
        assert_eq!(c.port, 7100);
        assert_eq!(
            c.replicaof,
            Some(MasterAddr::parse("10.0.0.1", "6379").unwrap())
        );
        assert_eq!(c.repl_timeout, Duration::from_secs(5));
        let err = with_file("prot = 1\n", &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `prot`"),
            "{err:#}"
        );
    }

    #[test]
    fn a_bad_value_names_the_option_and_where_it_came_from() {
        let err = with_file("backlog-size = \"12xb\"\n", &[]).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("backlog-size (config file") && text.contains("12xb"),
            "{text}"
        );
        let err = Config::resolve(RelayArgs::flags(&[("repl-timeout", "5w")])).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("--repl-timeout: "),
            "{err:#}"
        );
    }

    #[test]
    fn every_default_parses_and_the_defaults_validate() {
        let c = Config::resolve(RelayArgs::default()).unwrap();
        assert_eq!(
            (c.port, c.backlog_size, c.appendfsync),
            (6380, Bytes(1 << 30), Fsync::Everysec)
        );
        assert_eq!(c.master_info_interval, Some(Duration::from_secs(1)));
        assert!(c.protected_mode && c.empty_master_guard && !c.replica_announced);
        assert_eq!(c.restore(), RestoreRetention::default());
    }

    #[test]
    fn the_restore_window_is_read_from_the_file() {
        let c = with_file(
            "restore-window = \"24h\"\nrestore-max-disk = \"2gb\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.restore().window, Some(Duration::from_secs(86400)));
        assert_eq!(c.restore().max_disk, Some(2 << 30));
    }

    #[test]
    fn renames_come_from_flags_or_the_file() {
        let c = with_file("rename-command = [\"flushall wipe\"]\n", &[]).unwrap();
        assert_eq!(c.renamed.0["flushall"], "wipe");
        let c = with_file(
            "",
            &["--rename-command", "config=", "--rename-command", "a=b"],
        )
        .unwrap();
        assert_eq!(
            (c.renamed.0["config"].as_str(), c.renamed.0["a"].as_str()),
            ("", "b")
        );
    }

    #[test]
    fn the_shipped_example_config_parses_and_names_every_option() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/relay.toml");
        let c = with_file(&std::fs::read_to_string(path).unwrap(), &[]).unwrap();
        assert_eq!(c.port, 6380);
        assert_eq!(
            c.replicaof,
            Some(MasterAddr::parse("127.0.0.1", "6379").unwrap())
        );
        let text = std::fs::read_to_string(path).unwrap();
        for opt in OPTIONS {
            assert!(
                text.contains(&format!("\n{} = ", opt.name))
                    || text.contains(&format!("\n# {} = ", opt.name)),
                "config/relay.toml does not show {}",
                opt.name
            );
        }
    }

    #[test]
    fn compression_settings_are_bounded_and_delays_take_milliseconds() {
        let flags = [
            ("upstream-compression", "zstd"),
            ("upstream-compression-max-delay", "5ms"),
        ];
        let c = Config::resolve(RelayArgs::flags(&flags)).unwrap();
        let link = c.upstream_compression.settings(&c).unwrap().unwrap();
        assert_eq!((link.level, link.max_delay), (3, Duration::from_millis(5)));
        for (opt, bad) in [
            ("upstream-compression-level", "20"),
            ("upstream-compression-level", "0"),
            ("upstream-compression-max-delay", "1s"),
        ] {
            let err = Config::resolve(RelayArgs::flags(&[(opt, bad)])).unwrap_err();
            assert!(
                format!("{err:#}").contains("zstd level"),
                "{opt} {bad}: {err:#}"
            );
        }
    }

    #[test]
    fn a_one_word_replicaof_is_an_error() {
        let err = Config::resolve(RelayArgs::flags(&[("replicaof", "10.0.0.1")])).unwrap_err();
        assert!(format!("{err:#}").contains("HOST PORT"), "{err:#}");
    }

    #[test]
    fn sentinels_need_a_master_name() {
        let alone = Config::resolve(RelayArgs::flags(&[("sentinel", "10.0.0.1:26379")]));
        assert!(alone.unwrap_err().to_string().contains("sentinel-master"));
    }

    #[test]
    fn config_get_shows_values_as_redis_does() {
        let c = Config::resolve(RelayArgs::flags(&[("backlog-size", "1mb")])).unwrap();
        let get = c.config_get();
        let value = |name| {
            get.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(value("repl-backlog-size"), Some("1048576"));
        assert_eq!(value("repl-timeout"), Some("60"));
        assert_eq!(value("protected-mode"), Some("yes"));
        assert_eq!(value("slave-priority"), value("replica-priority"));
    }

    #[test]
    fn the_help_shows_each_default_once_from_the_table() {
        let mut cmd = <RelayArgs as clap::Args>::augment_args(Command::new("relay"));
        let help = cmd.render_long_help().to_string();
        assert!(help.contains("[default: 6380]"), "{help}");
        assert!(
            help.contains("[possible values: always, everysec, no]"),
            "{help}"
        );
        assert!(!help.contains("[default: ]"));
    }
}

//! The kinds of value an option takes: each parsed from what a person writes (a flag, an
//! environment variable, a TOML value, the table's default) by one `Setting::parse`, and shown
//! by one `Setting::show` as CONFIG GET shows it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A type an option's value can have.
pub trait Setting: Sized {
    /// The words it accepts, checked by the flag parser and listed in the help; empty: any.
    const CHOICES: &'static [&'static str] = &[];
    fn parse(s: &str) -> Result<Self>;
    fn show(&self) -> String;
    /// A value that means "none" for an optional option (0 bytes, 0 seconds, an empty word).
    fn is_off(&self) -> bool {
        false
    }
}

macro_rules! numbers {
    ($($t:ty),+) => {$(
        impl Setting for $t {
            fn parse(s: &str) -> Result<Self> {
                s.trim().parse().with_context(|| format!("expected a number, got {s:?}"))
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )+};
}
numbers!(u16, u32, usize);

impl Setting for String {
    fn parse(s: &str) -> Result<Self> {
        Ok(s.to_string())
    }
    fn show(&self) -> String {
        self.clone()
    }
    fn is_off(&self) -> bool {
        self.is_empty()
    }
}

impl Setting for PathBuf {
    fn parse(s: &str) -> Result<Self> {
        Ok(s.into())
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
    fn is_off(&self) -> bool {
        self.as_os_str().is_empty()
    }
}

/// `yes` or `no`, as redis.conf writes them.
impl Setting for bool {
    const CHOICES: &'static [&'static str] = &["yes", "no"];
    fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => bail!("expected yes or no, got {s:?}"),
        }
    }
    fn show(&self) -> String {
        if *self { "yes" } else { "no" }.into()
    }
}

/// Unset (empty), or a value; a value that means "off" (`0` for a size or a duration) is unset
/// too.
impl<T: Setting> Setting for Option<T> {
    const CHOICES: &'static [&'static str] = T::CHOICES;
    fn parse(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Ok(None);
        }
        Ok(Some(T::parse(s)?).filter(|v| !v.is_off()))
    }
    fn show(&self) -> String {
        self.as_ref().map(T::show).unwrap_or_default()
    }
}

/// A duration like `90s`, `30m`, `24h`, `7d`, or plain seconds; shown in seconds.
impl Setting for Duration {
    fn parse(s: &str) -> Result<Self> {
        parse_duration(s)
    }
    fn show(&self) -> String {
        self.as_secs().to_string()
    }
    fn is_off(&self) -> bool {
        self.is_zero()
    }
}

/// A size in bytes, written as redis.conf writes them (`1gb`, `64mb`, `512k`, `4096`); shown
/// in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl Setting for Bytes {
    fn parse(s: &str) -> Result<Self> {
        parse_size(s).map(Bytes)
    }
    fn show(&self) -> String {
        self.0.to_string()
    }
    fn is_off(&self) -> bool {
        self.0 == 0
    }
}

/// Bytes per second, like `100mb` or `100mb/s`; more than 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub u64);

impl Setting for Rate {
    fn parse(s: &str) -> Result<Self> {
        parse_rate(s).map(Rate)
    }
    fn show(&self) -> String {
        self.0.to_string()
    }
}

/// Enums written as one lowercase word each.
macro_rules! words {
    ($t:ident { $($variant:ident = $word:literal),+ }) => {
        impl Setting for $t {
            const CHOICES: &'static [&'static str] = &[$($word),+];
            fn parse(s: &str) -> Result<Self> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($word => Ok($t::$variant),)+
                    _ => bail!("expected one of {}, got {s:?}", Self::CHOICES.join(", ")),
                }
            }
            fn show(&self) -> String {
                match self {
                    $($t::$variant => $word.into(),)+
                }
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}
words!(LogFormat { Text = "text", Json = "json" });

/// Where a fresh snapshot comes from when the log outgrows the one in service (or a backup
/// asks for the data as it is now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSource {
    /// A fork on the master (`REPLCONF rdb-only` + `PSYNC ? -1`).
    Master,
    /// The compactor: a server child of the relay loads the snapshot in service and the log
    /// after it, and saves.
    Local,
}
words!(SnapshotSource {
    Master = "master",
    Local = "local"
});

impl SnapshotSource {
    pub fn name(self) -> &'static str {
        match self {
            SnapshotSource::Master => "master",
            SnapshotSource::Local => "local",
        }
    }
}

/// Compression asked of an upstream relay (`--upstream-compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
}
words!(Compression {
    None = "none",
    Zstd = "zstd"
});

/// What a far relay asks of its upstream relay: the zstd level, and how long the sender may
/// wait for more bytes before it compresses what it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstdLink {
    pub level: i32,
    pub max_delay: Duration,
}

impl ZstdLink {
    /// Levels 20 and above need windows of 32 MB and more on both sides.
    pub const LEVELS: std::ops::RangeInclusive<i32> = 1..=19;
    pub const MAX_DELAY: Duration = Duration::from_millis(100);

    /// The settings, if within bounds (a far relay's request is a client's input).
    pub fn new(level: i64, max_delay: Duration) -> Result<ZstdLink, String> {
        match i32::try_from(level) {
            Ok(level) if Self::LEVELS.contains(&level) && max_delay <= Self::MAX_DELAY => {
                Ok(ZstdLink { level, max_delay })
            }
            _ => Err(format!(
                "the zstd level must be {} to {} and the delay at most {} ms",
                Self::LEVELS.start(),
                Self::LEVELS.end(),
                Self::MAX_DELAY.as_millis()
            )),
        }
    }
}

impl Compression {
    /// What to ask of an upstream relay, if anything, with the level and delay of `c`.
    pub fn settings(self, c: &super::Config) -> Result<Option<ZstdLink>> {
        let link = ZstdLink::new(
            c.upstream_compression_level.into(),
            c.upstream_compression_max_delay,
        )
        .map_err(anyhow::Error::msg)?;
        Ok((self == Compression::Zstd).then_some(link))
    }
}

/// When stream bytes reach the disk, like Redis' `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before they are acknowledged upstream or sent downstream.
    Always,
    /// At least once a second.
    Everysec,
    /// When the kernel decides.
    No,
}
words!(Fsync {
    Always = "always",
    Everysec = "everysec",
    No = "no"
});

/// Whether clients on the TLS port must present a certificate, as Redis' `tls-auth-clients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthClients {
    #[default]
    Yes,
    No,
    Optional,
}
words!(AuthClients {
    Yes = "yes",
    No = "no",
    Optional = "optional"
});

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

/// `HOST PORT`, as redis.conf's `replicaof`.
impl Setting for MasterAddr {
    fn parse(s: &str) -> Result<Self> {
        match s.split_whitespace().collect::<Vec<_>>()[..] {
            [host, port] => MasterAddr::parse(host, port),
            _ => bail!("replicaof must be \"HOST PORT\", got {s:?}"),
        }
    }
    fn show(&self) -> String {
        format!("{} {}", self.host, self.port)
    }
}

/// `HOST:PORT,HOST:PORT`, IPv6 hosts in brackets (`[::1]:26379`); empty: none.
impl Setting for Vec<MasterAddr> {
    fn parse(s: &str) -> Result<Self> {
        if s.trim().is_empty() {
            return Ok(Vec::new());
        }
        parse_addresses(s)
    }
    fn show(&self) -> String {
        let all: Vec<String> = self.iter().map(MasterAddr::to_string).collect();
        all.join(",")
    }
}

fn parse_addresses(s: &str) -> Result<Vec<MasterAddr>> {
    let addrs = s.split(',').map(str::trim).filter(|a| !a.is_empty());
    let parsed = addrs
        .map(|a| {
            let (host, port) = a
                .rsplit_once(':')
                .with_context(|| format!("an address must be HOST:PORT, got {a:?}"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            MasterAddr::parse(host, port)
        })
        .collect::<Result<Vec<_>>>()?;
    if parsed.is_empty() {
        bail!("expected at least one HOST:PORT");
    }
    Ok(parsed)
}

/// How `--cluster-shard` names the shard at first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterShard {
    /// The shard holding this slot.
    Slot(u16),
    /// The shard of this node (a 40-character node id), or with this shard id (Redis 7.2+).
    Id(String),
    /// The I-th shard (from 0) of those holding slots, in the order of their first slot: what a
    /// pod of a StatefulSet of relays names by its ordinal (`index:$(POD_INDEX)`).
    Index(usize),
}

impl Setting for ClusterShard {
    fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Ok(slot) = s.parse::<u16>() {
            if slot >= 16384 {
                bail!("a cluster slot is 0 to 16383, got {slot}");
            }
            return Ok(ClusterShard::Slot(slot));
        }
        if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(ClusterShard::Id(s.to_ascii_lowercase()));
        }
        let index = s.strip_prefix("index:").map(str::parse::<usize>);
        if let Some(Ok(i)) = index
            && i < 16384
        {
            return Ok(ClusterShard::Index(i));
        }
        bail!(
            "cluster-shard must be a slot (0-16383), a 40-character node or shard id, or index:I (the I-th shard in slot order, from 0), got {s:?}"
        )
    }
    fn show(&self) -> String {
        match self {
            ClusterShard::Slot(n) => n.to_string(),
            ClusterShard::Id(id) => id.clone(),
            ClusterShard::Index(i) => format!("index:{i}"),
        }
    }
}

/// The version the relay announces to a Valkey master (`REPLCONF version`), which picks the
/// snapshot's format by it: RDB 11 for a version before 9.0, its native format from 9.0 on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnounceVersion {
    /// The master's own version, so it sends its native format as to a replica of its kind.
    Auto,
    Fixed(String),
}

impl Setting for AnnounceVersion {
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
    fn show(&self) -> String {
        match self {
            AnnounceVersion::Auto => "auto".into(),
            AnnounceVersion::Fixed(v) => v.clone(),
        }
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

impl Setting for SnapshotRefresh {
    fn parse(s: &str) -> Result<SnapshotRefresh> {
        Ok(match s.trim() {
            "auto" => SnapshotRefresh::Auto,
            "never" | "0" => SnapshotRefresh::Never,
            size => SnapshotRefresh::After(parse_size(size)?),
        })
    }
    fn show(&self) -> String {
        match self {
            SnapshotRefresh::Auto => "auto".into(),
            SnapshotRefresh::Never => "never".into(),
            SnapshotRefresh::After(n) => n.to_string(),
        }
    }
}

/// Renamed commands, as redis.conf's `rename-command`: each entry `NAME NEWNAME` (a file's
/// line) or `NAME=NEWNAME` (a flag's), entries separated by commas; an empty NEWNAME disables
/// NAME. Lowercase original name to lowercase new name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renames(pub BTreeMap<String, String>);

impl Setting for Renames {
    fn parse(s: &str) -> Result<Self> {
        let mut out = BTreeMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (old, new) = match entry.split_once('=') {
                Some((old, new)) => (old, new),
                None => match entry.split_whitespace().collect::<Vec<_>>()[..] {
                    [old, new] => (old, new.trim_matches('"')),
                    [old] => (old, ""),
                    _ => bail!("rename-command must be \"NAME NEWNAME\", got {entry:?}"),
                },
            };
            let (old, new) = (
                old.trim().to_ascii_lowercase(),
                new.trim().to_ascii_lowercase(),
            );
            if old.is_empty()
                || old.len() > 64
                || new.len() > 64
                || new.contains(char::is_whitespace)
            {
                bail!("rename-command: invalid command name in {old:?} -> {new:?}");
            }
            out.insert(old, new);
        }
        Ok(Renames(out))
    }
    fn show(&self) -> String {
        let all: Vec<String> = self.0.iter().map(|(o, n)| format!("{o} {n}")).collect();
        all.join(",")
    }
}

/// A duration like `90s`, `30m`, `24h`, `7d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let lower = s.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit_ms = match &lower[digits.len()..] {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => bail!("unknown duration unit {other:?} in {s:?} (use ms, s, m, h or d)"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("invalid duration {s:?}"))?;
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
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
    fn bad_master_addresses_are_refused() {
        assert!(<MasterAddr as Setting>::parse("host").is_err());
        assert!(MasterAddr::parse("h", "0").is_err());
        assert!(MasterAddr::parse("h", "70000").is_err());
        assert_eq!(
            MasterAddr::parse("::1", "6379").unwrap().to_string(),
            "[::1]:6379"
        );
    }

    #[test]
    fn sentinels_are_host_port_lists() {
        let list = <Vec<MasterAddr>>::parse("10.0.0.1:26379, [::1]:26380").unwrap();
        assert_eq!(list[1].to_string(), "[::1]:26380");
        assert!(<Vec<MasterAddr>>::parse("10.0.0.1").is_err());
        assert!(<Vec<MasterAddr>>::parse(",").is_err());
        assert!(<Vec<MasterAddr>>::parse("").unwrap().is_empty());
    }

    #[test]
    fn renames_read_the_flag_and_the_file_forms() {
        let r = Renames::parse("CONFIG=,flushall wipe,debug").unwrap().0;
        assert_eq!(r["config"], "");
        assert_eq!(r["flushall"], "wipe");
        assert_eq!(r["debug"], "");
        assert!(Renames::parse("a b c").is_err());
    }

    #[test]
    fn zero_turns_an_optional_size_or_duration_off() {
        assert_eq!(<Option<Bytes>>::parse("0").unwrap(), None);
        assert_eq!(<Option<Duration>>::parse("0").unwrap(), None);
        assert_eq!(<Option<String>>::parse("0").unwrap(), Some("0".into()));
        assert_eq!(<Option<Bytes>>::parse("").unwrap(), None);
        assert!(<Option<Rate>>::parse("0").is_err());
    }
}

//! `replica-relay restore --dir <store> (--list | --offset N | --at TIME) --out <dir>`: the
//! data as it was at a replication offset or a moment, rebuilt from the relay's own store (the
//! snapshot in service and the stream after it), without touching the master. Given several
//! stores, one per shard of a Redis Cluster, every shard at one moment (`restore::cluster`).
//!
//! The output is an append-only file that begins with the snapshot (Redis' RDB-preamble AOF),
//! followed by the stream's commands up to the cut, which falls on a command boundary and
//! never inside MULTI … EXEC; what only makes sense on a replication link (the master's PINGs,
//! `REPLCONF GETACK`) is left out. `redis-server --dir <dir> --appendonly yes` loads it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

mod cluster;
pub mod compare;
mod expiry;
mod to_rdb;

use crate::feed::{Command, Scanner};
use crate::progress::Progress;
use crate::store::{self, TimeMark};

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The relay's --dir. Several, one per shard of a Redis Cluster: every shard restored to
    /// the same moment (--at, default now), into --out/shard-<i> in the order given, with
    /// --out/cluster.json.
    #[arg(long, required_unless_present = "from")]
    dir: Vec<PathBuf>,
    /// Restore from the archive a relay's --archive wrote (s3://bucket/prefix, file:///path)
    /// instead of a --dir: on any machine, the archive alone.
    #[arg(long, value_name = "URL", conflicts_with = "dir")]
    from: Option<String>,
    /// The endpoint of an S3-compatible store for --from, like http://minio:9000.
    #[arg(long, value_name = "URL", env = "REPLICA_RELAY_ARCHIVE_ENDPOINT")]
    archive_endpoint: Option<String>,
    /// Print the window that can be restored, and nothing else.
    #[arg(long)]
    list: bool,
    /// Restore to this replication offset (the last command ending at or before it).
    #[arg(long, conflicts_with = "at")]
    offset: Option<u64>,
    /// Restore to this moment: "now" (the default), an RFC 3339 time such as
    /// 2026-12-01T10:42:00Z or 2026-12-01T11:42:00.5+01:00, or @<unix seconds>.
    #[arg(long)]
    at: Option<String>,
    /// Restore to just before the first of these commands (e.g. FLUSHALL,FLUSHDB) after
    /// --after; before its MULTI when it is inside one.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["offset", "at"])]
    before: Vec<String>,
    /// With --before: look only after this moment (same forms as --at) [default: the start of
    /// the window].
    #[arg(long, requires = "before")]
    after: Option<String>,
    /// Directory to write appendonly.aof into (created; must not hold one already).
    #[arg(long)]
    out: Option<PathBuf>,
    /// `aof` (appendonly.aof, the default) or `rdb` (dump.rdb, made by loading the AOF into a
    /// redis-server of --redis-server and saving it, for tools that want an RDB).
    #[arg(long, default_value = "aof")]
    format: Format,
    /// The server that turns the AOF into an RDB with --format rdb [default: redis-server on
    /// PATH].
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    redis_server: PathBuf,
    /// With --format rdb: the replication ID to write in the RDB's AUX fields, with the cut's
    /// offset and database, so that a replica that loads it (or restarts from it) continues
    /// that history: what the relay's compactor asks for.
    #[arg(long, value_name = "REPLID")]
    repl_id: Option<String>,
    /// With --format rdb: stop the server, and fail, when its memory (RSS) exceeds this.
    #[arg(long, value_name = "BYTES")]
    max_rss: Option<u64>,
    /// Write what was made, as JSON (offset, stream_db, bytes, peak_rss, server_ms), here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Aof,
    Rdb,
}

pub fn run(mut args: RestoreArgs) -> Result<()> {
    if let Some(url) = args.from.clone() {
        // The archive's files are laid out as a store, beside what is made (or in the
        // system's temporary directory for --list), and removed after.
        let beside = args
            .out
            .as_ref()
            .and_then(|o| o.parent())
            .filter(|p| !p.as_os_str().is_empty());
        let staged = tempfile::Builder::new()
            .prefix(".replica-relay-archive-")
            .tempdir_in(beside.map_or_else(std::env::temp_dir, Path::to_path_buf))?;
        crate::archive::stage(&url, args.archive_endpoint.as_deref(), staged.path())?;
        args.dir = vec![staged.path().to_path_buf()];
        return restore(args).map(|_| ());
    }
    if args.dir.len() > 1 {
        return cluster::restore_all(args);
    }
    restore(args).map(|_| ())
}

/// The data at `offset` as an AOF in `out`, as `restore --offset` makes it; the offset of the
/// cut, the last command boundary at or before `offset`.
fn rebuild(dir: &Path, offset: u64, out: &Path) -> Result<u64> {
    restore(RestoreArgs {
        dir: vec![dir.to_path_buf()],
        from: None,
        archive_endpoint: None,
        list: false,
        offset: Some(offset),
        at: None,
        before: Vec::new(),
        after: None,
        out: Some(out.to_path_buf()),
        format: Format::Aof,
        redis_server: PathBuf::from("redis-server"),
        repl_id: None,
        max_rss: None,
        report: None,
    })
}

/// What `run` does; the offset of the cut (the last offset with `--list`).
fn restore(args: RestoreArgs) -> Result<u64> {
    let dir = &args.dir[0];
    let summary = store::describe(dir)?;
    let points = points(dir, &summary);
    let marks = store::time_index(dir, &store::history::segments(dir)?);
    let (first, last) = (points[0].offset, summary.log_next - 1);
    if args.list {
        list(&points, &marks, last);
        return Ok(last);
    }
    let out = args
        .out
        .clone()
        .context("--out DIR is needed (or --list)")?;
    if args.format == Format::Aof && (args.repl_id.is_some() || args.max_rss.is_some()) {
        bail!("--repl-id and --max-rss go with --format rdb");
    }
    let stop = search(&args.before, args.after.as_deref(), &marks, first)?;
    let target = match (args.offset, args.at.as_deref()) {
        (Some(n), _) => n,
        _ if stop.is_some() => last,
        (None, None | Some("now")) => last,
        (None, Some(at)) => offset_at(&marks, parse_time(at)?, first)?,
    };
    if target < first || target > last {
        bail!(
            "offset {target} is outside the restorable window {first}..={last}{}",
            window_times(first, &marks)
        );
    }
    // The scan starts from the newest snapshot at or before what it looks for; the relay's
    // retention keeps that snapshot and the log after it while the restore runs.
    let scan = newest_before(&points, stop.as_ref().map_or(target, |s| s.after) + 1);
    let _pin = store::history::Pin::hold(dir, scan.offset + 1)?;
    // Opened before planning: a refresh of the relay may unlink the snapshot in service, and
    // an open file outlives that.
    let mut snapshots = open_from(dir, &points, scan.offset)?;
    let db = stream_db_of(&snapshots, scan.offset)?;
    let plan = plan(dir, (scan.offset + 1, db), target + 1, stop.as_ref())?;
    if let Some(stop) = &stop {
        report_found(stop, plan.found.as_ref(), &marks, (first, last))?;
    }
    let at = snapshots
        .iter()
        .rposition(|(p, _)| p.offset < plan.cut)
        .context("no snapshot before the cut")?;
    let from_db = stream_db_of(&snapshots, snapshots[at].0.offset)?;
    let (from, snapshot) = snapshots.swap_remove(at);
    let aof_dir = match args.format {
        Format::Aof => out.clone(),
        Format::Rdb => out.join(".restore-aof"),
    };
    let dropped = write(
        snapshot,
        dir,
        (from.offset + 1, from_db),
        &plan,
        &marks,
        &aof_dir,
    )?;
    let (written, run) = match args.format {
        Format::Aof => (out.join("appendonly.aof"), to_rdb::ServerRun::default()),
        Format::Rdb => to_rdb::convert(&args.redis_server, &aof_dir, &out, args.max_rss)?,
    };
    if let Some(replid) = &args.repl_id {
        crate::hold::at("restore-identity");
        to_rdb::set_identity(&written, replid, plan.cut - 1, plan.db)?;
    }
    if let Some(report) = &args.report {
        let facts = serde_json::json!({
            "offset": plan.cut - 1,
            "stream_db": plan.db,
            "bytes": std::fs::metadata(&written)?.len(),
            "peak_rss": run.peak_rss,
            "server_ms": run.elapsed.as_millis() as u64,
        });
        std::fs::write(report, facts.to_string())?;
    }
    eprintln!(
        "restored to offset {} (asked {target}): {} stream bytes after the snapshot at offset {}, into {}",
        plan.cut - 1,
        plan.cut - (from.offset + 1) - dropped,
        from.offset,
        written.display()
    );
    Ok(plan.cut - 1)
}

/// The snapshots a restore can start from, oldest first: the restore points the relay keeps
/// (`--restore-window`) whose file is complete and whose log is still there, then the snapshot
/// in service.
fn points(dir: &Path, summary: &store::StoreSummary) -> Vec<store::RestorePoint> {
    let mut points: Vec<_> = store::restore_points(dir)
        .into_iter()
        .filter(|p| {
            let complete = std::fs::metadata(dir.join("snapshots").join(&p.name))
                .is_ok_and(|m| m.len() == p.size);
            complete && p.offset < summary.snapshot_offset && p.offset + 1 >= summary.log_first
        })
        .collect();
    points.sort_by_key(|p| p.offset);
    points.push(store::RestorePoint {
        name: summary
            .snapshot
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        offset: summary.snapshot_offset,
        size: std::fs::metadata(&summary.snapshot).map_or(0, |m| m.len()),
    });
    points
}

/// The snapshot files of the points from offset `from` on, opened.
fn open_from(
    dir: &Path,
    points: &[store::RestorePoint],
    from: u64,
) -> Result<Vec<(store::RestorePoint, std::fs::File)>> {
    points
        .iter()
        .filter(|p| p.offset >= from)
        .map(|p| {
            let path = dir.join("snapshots").join(&p.name);
            let file = std::fs::File::open(&path).with_context(|| {
                format!(
                    "opening the snapshot at offset {} ({}); the relay's retention may have just removed it: run the restore again",
                    p.offset,
                    path.display()
                )
            })?;
            Ok((p.clone(), file))
        })
        .collect()
}

/// The newest snapshot whose log starts at or before `offset`.
fn newest_before(points: &[store::RestorePoint], offset: u64) -> &store::RestorePoint {
    points
        .iter()
        .rev()
        .find(|p| p.offset < offset)
        .unwrap_or(&points[0])
}

fn list(points: &[store::RestorePoint], marks: &[TimeMark], last: u64) {
    let first = points[0].offset;
    match from_time(first, marks) {
        Some(t) => println!(
            "restorable from {} (offset {first}) to now (offset {last})",
            store::utc(t)
        ),
        None => println!(
            "restorable from offset {first} to now (offset {last}); no time is known for the start yet"
        ),
    }
    let offsets: Vec<String> = points.iter().map(|p| p.offset.to_string()).collect();
    println!(
        "restore points: snapshots at offsets {} (the last in service)",
        offsets.join(", ")
    );
}

/// The moments the store in `dir` can be restored to: from the arrival of the first bytes after
/// its oldest snapshot to its last arrival; `None` before its time index knows them.
fn time_window(dir: &Path) -> Result<Option<(u64, u64)>> {
    let summary = store::describe(dir)?;
    let points = points(dir, &summary);
    let marks = store::time_index(dir, &store::history::segments(dir)?);
    Ok(from_time(points[0].offset, &marks).zip(marks.last().map(|m| m.unix_ms)))
}

/// When the relay stored the first bytes after `offset`: the first moment `--at` reaches it.
fn from_time(offset: u64, marks: &[TimeMark]) -> Option<u64> {
    marks.iter().find(|m| m.offset > offset).map(|m| m.unix_ms)
}

fn window_times(first: u64, marks: &[TimeMark]) -> String {
    match (from_time(first, marks), marks.last()) {
        (Some(a), Some(b)) => format!(" (times {} to {})", store::utc(a), store::utc(b.unix_ms)),
        _ => String::new(),
    }
}

/// What `--before` found, on stderr; an error when it found nothing.
fn report_found(
    stop: &Stop,
    found: Option<&Found>,
    marks: &[TimeMark],
    (first, last): (u64, u64),
) -> Result<()> {
    let Some(found) = found else {
        bail!(
            "no {} after offset {} in the window (offsets {first}..={last})",
            stop.describe(),
            stop.after
        );
    };
    let stored = marks
        .iter()
        .find(|m| m.offset >= found.end)
        .map_or("after the last time mark".to_string(), |m| {
            store::utc(m.unix_ms)
        });
    eprintln!(
        "found {} at offset {} (db {}, received by {stored}); restoring to just before it{}",
        found.name.to_uppercase(),
        found.start,
        found.db.map_or("unknown".into(), |d| d.to_string()),
        if found.in_multi {
            ", before its MULTI"
        } else {
            ""
        }
    );
    Ok(())
}

/// The offset of everything received by `unix_ms`: the last time mark not after it.
fn offset_at(marks: &[TimeMark], unix_ms: u64, snapshot: u64) -> Result<u64> {
    match marks.iter().rev().find(|m| m.unix_ms <= unix_ms) {
        Some(m) => Ok(m.offset - 1),
        None => match marks.first() {
            Some(m) => bail!(
                "{} is before the first time the log knows ({}, offset {}); the window starts at the snapshot, offset {snapshot}",
                store::utc(unix_ms),
                store::utc(m.unix_ms),
                m.offset
            ),
            None => bail!(
                "this store's log has no time index (written by an older relay): restore with --offset"
            ),
        },
    }
}

/// `@<unix seconds>` or an RFC 3339 time (`2026-12-01T10:42:00Z`, `2026-12-01T11:42:00.5+01:00`),
/// in milliseconds since the epoch. A date or time that does not exist (month 13, hour 25,
/// February 30) is an error, not another moment.
fn parse_time(s: &str) -> Result<u64> {
    use time::format_description::well_known::Rfc3339;
    let bad = || {
        anyhow::anyhow!(
            "bad time {s:?}: use 2026-12-01T10:42:00Z (RFC 3339, any offset), @<unix seconds> or now"
        )
    };
    let ms = match s.strip_prefix('@') {
        Some(secs) => {
            let secs: f64 = secs.parse().map_err(|_| bad())?;
            if !secs.is_finite() || secs < 0.0 {
                return Err(bad());
            }
            (secs * 1000.0).round() as i128
        }
        None => {
            let t = time::OffsetDateTime::parse(s, &Rfc3339)
                .map_err(|e| bad().context(e.to_string()))?;
            t.unix_timestamp_nanos() / 1_000_000
        }
    };
    u64::try_from(ms).map_err(|_| bad())
}

/// What `--before` looks for: commands the scanner knows, each maybe with a key, after an
/// offset.
struct Stop {
    names: Vec<(&'static str, Option<Vec<u8>>)>,
    after: u64,
}

impl Stop {
    fn describe(&self) -> String {
        let each: Vec<String> = self
            .names
            .iter()
            .map(|(name, key)| match key {
                Some(k) => format!("{} {}", name.to_uppercase(), String::from_utf8_lossy(k)),
                None => name.to_uppercase(),
            })
            .collect();
        each.join(" or ")
    }

    /// Whether the command `name`, whose bytes are `held` (none for one too long to hold),
    /// is one looked for. A key matches the command's first argument, or any for DEL and
    /// UNLINK, whose every argument is a key.
    fn matches(&self, name: &str, held: Option<&[u8]>) -> bool {
        self.names.iter().any(|(n, key)| {
            *n == name
                && key.as_deref().is_none_or(|key| {
                    let Some(args) = held.and_then(args) else {
                        return false;
                    };
                    let keys = if matches!(name, "del" | "unlink") {
                        &args[1..]
                    } else {
                        &args[1..args.len().min(2)]
                    };
                    keys.iter().any(|k| k.as_ref() == key)
                })
        })
    }
}

/// The command found by `--before`.
struct Found {
    name: &'static str,
    start: u64,
    end: u64,
    db: Option<u32>,
    in_multi: bool,
}

/// `--before` and `--after`: what to look for (`FLUSHALL`, or `DEL:user:42` for a key), and
/// from which offset.
fn search(
    names: &[String],
    after: Option<&str>,
    marks: &[TimeMark],
    first: u64,
) -> Result<Option<Stop>> {
    if names.is_empty() {
        return Ok(None);
    }
    let names = names
        .iter()
        .map(|n| {
            let (name, key) = match n.trim().split_once(':') {
                Some((name, key)) => (name, Some(key.as_bytes().to_vec())),
                None => (n.trim(), None),
            };
            let known = crate::feed::known_name(name).with_context(|| {
                format!("--before {n}: not a command the stream scanner recognises (data commands such as FLUSHALL, FLUSHDB, DEL, SET; DEL:KEY for one key)")
            })?;
            Ok((known, key))
        })
        .collect::<Result<Vec<_>>>()?;
    let after = match after {
        None => first,
        Some(t) => offset_at(marks, parse_time(t)?, first)?.max(first),
    };
    Ok(Some(Stop { names, after }))
}

/// Commands longer than this are copied through as they come and keep a relative expiry (a
/// SET of a huge value is not held in memory).
const MAX_REWRITE: usize = 64 << 20;

/// Where to cut.
struct Plan {
    /// The offset after the last byte kept.
    cut: u64,
    /// The database the stream is in at the cut.
    db: u32,
    /// With `--before`: the command found.
    found: Option<Found>,
}

/// Scans the log from `from` (just after a snapshot whose stream continues in database
/// `from_db`) to `to`: the last command boundary outside MULTI at or before `to`, or before the
/// command `stop` looks for.
fn plan(dir: &Path, (from, from_db): (u64, u32), to: u64, stop: Option<&Stop>) -> Result<Plan> {
    let mut split = Split::at(from);
    let (mut start, mut depth, mut cut) = (from, 0u32, from);
    let mut cut_db = from_db;
    let (mut multi_start, mut db, mut found) = (from, None, None::<Found>);
    store::history::read_log(dir, from, to, |piece| {
        split.piece(piece, |part| {
            let (cmd, end, held) = match part {
                Part::Through(_) => return Ok(()),
                Part::Whole(cmd, end, held) => (cmd, end, Some(held)),
                Part::End(cmd, end) => (cmd, end, None),
            };
            if found.is_some() {
                return Ok(());
            }
            match cmd {
                Command::Select(n) => db = Some(n),
                Command::Data("multi") => {
                    depth += 1;
                    multi_start = start;
                }
                Command::Data("exec") => depth = depth.saturating_sub(1),
                Command::Data(name) => {
                    if stop.is_some_and(|s| start >= s.after && s.matches(name, held)) {
                        found = Some(Found {
                            name,
                            start,
                            end,
                            db,
                            in_multi: depth > 0,
                        });
                        cut = if depth > 0 { multi_start } else { start };
                        return Ok(());
                    }
                }
                Command::Ping | Command::Getack => {}
            }
            if depth == 0 {
                cut = end;
                cut_db = db.unwrap_or(from_db);
            }
            start = end;
            Ok(())
        })
    })?;
    Ok(Plan {
        cut,
        db: cut_db,
        found,
    })
}

/// The database the stream after the snapshot at `offset` starts in (its `repl-stream-db`).
fn stream_db_of(snapshots: &[(store::RestorePoint, std::fs::File)], offset: u64) -> Result<u32> {
    use std::os::unix::fs::FileExt;
    let Some((_, file)) = snapshots.iter().find(|(p, _)| p.offset == offset) else {
        return Ok(0);
    };
    // Read by position: the file's own cursor is the copy's, later.
    struct At<'a>(&'a std::fs::File, u64);
    impl Read for At<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read_at(buf, self.1)?;
            self.1 += n as u64;
            Ok(n)
        }
    }
    let db = crate::decode::stream_db(At(file, 0))
        .with_context(|| format!("reading the AUX fields of the snapshot at offset {offset}"))?;
    Ok(db.unwrap_or(0))
}

/// The log cut into whole commands as its pieces come: each command's bytes are held until
/// it is complete, at most `MAX_REWRITE` of them; a longer one is handed on as it comes.
struct Split {
    scanner: Scanner,
    /// Offset of the next byte.
    at: u64,
    pending: Vec<u8>,
    /// The command under way is too long to hold: its bytes go on as they come.
    through: bool,
}

/// What `Split` hands on: a whole command (its kind, the offset after it, its bytes), bytes of
/// one too long to hold, and the end of such a one.
enum Part<'a> {
    Whole(Command, u64, &'a [u8]),
    Through(&'a [u8]),
    End(Command, u64),
}

impl Split {
    fn at(offset: u64) -> Split {
        Split {
            scanner: Scanner::at(offset),
            at: offset,
            pending: Vec::new(),
            through: false,
        }
    }

    fn piece(&mut self, piece: &[u8], mut each: impl FnMut(Part<'_>) -> Result<()>) -> Result<()> {
        let mut ends = Vec::new();
        let base = self.at;
        self.scanner
            .scan(piece, |end, cmd| ends.push((end, cmd)))
            .map_err(|e| anyhow::anyhow!("the log does not parse near offset {base}: {e}"))?;
        let mut last = 0;
        for (end, cmd) in ends {
            self.bytes(&piece[last..end], &mut each)?;
            let at = base + end as u64;
            if std::mem::take(&mut self.through) {
                each(Part::End(cmd, at))?;
            } else {
                each(Part::Whole(cmd, at, &self.pending))?;
            }
            self.pending.clear();
            if self.pending.capacity() > 1 << 20 {
                self.pending = Vec::new();
            }
            last = end;
        }
        self.bytes(&piece[last..], &mut each)?;
        self.at += piece.len() as u64;
        Ok(())
    }

    /// Bytes of the command under way.
    fn bytes(&mut self, b: &[u8], each: &mut impl FnMut(Part<'_>) -> Result<()>) -> Result<()> {
        if self.through {
            return each(Part::Through(b));
        }
        self.pending.extend_from_slice(b);
        if self.pending.len() > MAX_REWRITE {
            each(Part::Through(&self.pending))?;
            self.pending = Vec::new();
            self.through = true;
        }
        Ok(())
    }

    /// Whether the bytes so far end on a command boundary.
    fn on_boundary(&self) -> bool {
        self.pending.is_empty() && !self.through
    }
}

/// When the relay stored the byte before `end`: the first time mark at or after it (the last
/// one for bytes after every mark).
fn time_of(marks: &[TimeMark], end: u64) -> u64 {
    let after = marks.iter().find(|m| m.offset >= end);
    after
        .or(marks.last())
        .map_or_else(store::now_ms, |m| m.unix_ms)
}

/// A command's arguments, name first: `None` for one that does not parse whole.
fn args(command: &[u8]) -> Option<Vec<bytes::Bytes>> {
    let lead = command.iter().take_while(|&&b| b == b'\n').count();
    let mut buf = bytes::BytesMut::from(&command[lead..]);
    match crate::resp::parse_stream_command(&mut buf) {
        Ok(Some(args)) if buf.is_empty() && !args.is_empty() => Some(args),
        _ => None,
    }
}

/// A command with a relative expiry, rewritten absolute at `at_ms`; itself otherwise.
fn absolute(command: &[u8], at_ms: u64) -> Vec<u8> {
    args(command)
        .and_then(|args| expiry::rewrite(&args, at_ms))
        .unwrap_or_else(|| command.to_vec())
}

/// `out/appendonly.aof`: the snapshot (checked against its CRC64 as it is copied), a SELECT of
/// the database its stream continues in (`from_db`, its `repl-stream-db`), then the log from
/// `from` to the plan's cut without what it skips. Written as `.tmp` and renamed once complete.
/// `rdb` is the snapshot, opened before: the relay's retention may unlink the file.
///
/// The SELECT because a server loading an AOF starts its commands in database 0, whatever the
/// RDB preamble says; the stream after a snapshot that the relay's compactor made goes on in
/// the database of its cut with no SELECT until the database changes.
fn write(
    mut rdb: std::fs::File,
    dir: &Path,
    (from, from_db): (u64, u32),
    plan: &Plan,
    marks: &[TimeMark],
    out: &Path,
) -> Result<u64> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("appendonly.aof");
    if path.exists() {
        bail!("{} exists already", path.display());
    }
    let tmp = out.join("appendonly.aof.tmp");
    let mut file = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let total = rdb.metadata()?.len() + (plan.cut - from);
    let mut progress = Progress::new("restore: read", Some(total));
    let mut check = crate::decode::SnapshotCheck::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = rdb.read(&mut buf)?;
        if n == 0 {
            break;
        }
        check.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        progress.advance(n as u64);
    }
    if let Err(e) = check.finish() {
        let _ = std::fs::remove_file(&tmp);
        bail!("the snapshot at offset {} is damaged: {e}", from - 1);
    }
    let db = from_db.to_string();
    write!(file, "*2\r\n$6\r\nSELECT\r\n${}\r\n{db}\r\n", db.len())?;
    let mut copy = Copy {
        out: &mut file,
        split: Split::at(from),
        marks,
        dropped: 0,
    };
    store::history::read_log(dir, from, plan.cut, |piece| {
        copy.piece(piece)?;
        progress.advance(piece.len() as u64);
        Ok(())
    })?;
    if !copy.split.on_boundary() {
        bail!(
            "the cut at offset {} is not on a command boundary",
            plan.cut
        );
    }
    let dropped = copy.dropped;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(dropped)
}

/// The log copied into the output command by command: left out (PING, GETACK), made absolute
/// (a relative expiry) or written as it is; one too long to hold goes through as it is.
struct Copy<'a, W: Write> {
    out: &'a mut W,
    split: Split,
    marks: &'a [TimeMark],
    /// Bytes left out.
    dropped: u64,
}

impl<W: Write> Copy<'_, W> {
    fn piece(&mut self, piece: &[u8]) -> Result<()> {
        let Copy {
            out,
            split,
            marks,
            dropped,
        } = self;
        split.piece(piece, |part| {
            match part {
                Part::Through(b) => out.write_all(b)?,
                Part::End(..) => {}
                Part::Whole(Command::Ping | Command::Getack, _, held) => {
                    *dropped += held.len() as u64
                }
                Part::Whole(Command::Data(name), end, held) if expiry::NAMES.contains(&name) => {
                    out.write_all(&absolute(held, time_of(marks, end)))?
                }
                Part::Whole(_, _, held) => out.write_all(held)?,
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_leaves_out_pings_and_makes_expiries_absolute_across_pieces() {
        let log = b"*1\r\n$4\r\nPING\r\n*3\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$2\r\n10\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        let marks = [TimeMark {
            offset: 1000,
            unix_ms: 5_000,
        }];
        for split in [1, 7, 20, log.len()] {
            let mut out = Vec::new();
            let mut copy = Copy {
                out: &mut out,
                split: Split::at(1),
                marks: &marks,
                dropped: 0,
            };
            for piece in log.chunks(split) {
                copy.piece(piece).unwrap();
            }
            assert_eq!(copy.dropped, 14);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(
                text,
                "*3\r\n$9\r\nPEXPIREAT\r\n$1\r\nk\r\n$5\r\n15000\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
                "split {split}"
            );
        }
    }

    #[test]
    fn times_parse_as_utc() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_time("2025-12-01T08:00:03Z").unwrap(),
            1_764_576_003_000
        );
        assert_eq!(
            parse_time("2025-12-01T08:00:03.25Z").unwrap(),
            1_764_576_003_250
        );
        assert_eq!(parse_time("@1764576003").unwrap(), 1_764_576_003_000);
        assert_eq!(
            parse_time("2025-12-01T09:00:03+01:00").unwrap(),
            1_764_576_003_000
        );
        assert!(parse_time("2025-12-01 08:00:03").is_err());
        assert!(
            parse_time("2025-12-01T08:00:03.1€Z").is_err(),
            "not a panic"
        );
        for impossible in [
            "2025-13-01T08:00:03Z",
            "2025-12-01T25:00:03Z",
            "2025-02-30T08:00:03Z",
            "2025-12-01T08:61:03Z",
            "@-1",
            "@nan",
        ] {
            assert!(parse_time(impossible).is_err(), "{impossible}");
        }
    }

    #[test]
    fn a_time_picks_the_last_mark_not_after_it() {
        let marks = [
            TimeMark {
                offset: 101,
                unix_ms: 1000,
            },
            TimeMark {
                offset: 201,
                unix_ms: 2000,
            },
        ];
        assert_eq!(offset_at(&marks, 1500, 50).unwrap(), 100);
        assert_eq!(offset_at(&marks, 2000, 50).unwrap(), 200);
        assert!(offset_at(&marks, 999, 50).is_err());
    }
}

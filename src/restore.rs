//! `replica-relay restore --dir <store> (--list | --offset N | --at TIME) --out <dir>`: the
//! data as it was at a replication offset or a moment, rebuilt from the relay's own store (the
//! snapshot in service and the stream after it), without touching the master.
//!
//! The output is an append-only file that begins with the snapshot (Redis' RDB-preamble AOF),
//! followed by the stream's commands up to the cut, which falls on a command boundary and
//! never inside MULTI … EXEC; what only makes sense on a replication link (the master's PINGs,
//! `REPLCONF GETACK`) is left out. `redis-server --dir <dir> --appendonly yes` loads it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

mod expiry;
mod to_rdb;

use crate::feed::{Command, Scanner};
use crate::progress::Progress;
use crate::store::{self, TimeMark};

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The relay's --dir.
    #[arg(long)]
    dir: PathBuf,
    /// Print the window that can be restored, and nothing else.
    #[arg(long)]
    list: bool,
    /// Restore to this replication offset (the last command ending at or before it).
    #[arg(long, conflicts_with = "at")]
    offset: Option<u64>,
    /// Restore to this moment: "now" (the default), an RFC 3339 UTC time such as
    /// 2026-12-01T10:42:00Z (fractions of a second allowed), or @<unix seconds>.
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Aof,
    Rdb,
}

pub fn run(args: RestoreArgs) -> Result<()> {
    let summary = store::describe(&args.dir)?;
    let marks = store::time_index(&args.dir, &store::history::segments(&args.dir)?);
    let (first, last) = (summary.snapshot_offset, summary.log_next - 1);
    if args.list {
        println!(
            "restorable from offset {first} (the snapshot in service) to offset {last}{}",
            match (marks.first(), marks.last()) {
                (Some(a), Some(b)) => format!(
                    "; times from {} (offset {}) to {} (offset {})",
                    store::utc(a.unix_ms),
                    a.offset,
                    store::utc(b.unix_ms),
                    b.offset
                ),
                _ => String::new(),
            }
        );
        return Ok(());
    }
    let out = args.out.context("--out DIR is needed (or --list)")?;
    let stop = search(&args.before, args.after.as_deref(), &marks, first)?;
    let target = match (args.offset, args.at.as_deref()) {
        (Some(n), _) => n,
        _ if stop.is_some() => last,
        (None, None | Some("now")) => last,
        (None, Some(at)) => offset_at(&marks, parse_time(at)?, first)?,
    };
    if target < first || target > last {
        bail!("offset {target} is outside the restorable window {first}..={last}");
    }
    // The relay's retention keeps the log this reads while the restore runs.
    let _pin = store::history::Pin::hold(&args.dir, first + 1)?;
    let snapshot = std::fs::File::open(&summary.snapshot)
        .with_context(|| format!("opening the snapshot {}", summary.snapshot.display()))?;
    let plan = plan(&args.dir, first + 1, target + 1, stop.as_ref())?;
    let aof_dir = match args.format {
        Format::Aof => out.clone(),
        Format::Rdb => out.join(".restore-aof"),
    };
    if let Some(stop) = &stop {
        let Some(found) = &plan.found else {
            bail!(
                "no {} after offset {} in the window (offsets {first}..={last})",
                stop.names.join(" or ").to_uppercase(),
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
            "found {} at offset {} (db {}, stored by {stored}); restoring to just before it{}",
            found.name.to_uppercase(),
            found.start,
            found.db.map_or("unknown".into(), |d| d.to_string()),
            if found.in_multi {
                ", before its MULTI"
            } else {
                ""
            }
        );
    }
    let dropped = write(snapshot, &args.dir, &plan, &marks, &aof_dir)?;
    let written = match args.format {
        Format::Aof => out.join("appendonly.aof"),
        Format::Rdb => to_rdb::convert(&args.redis_server, &aof_dir, &out)?,
    };
    eprintln!(
        "restored to offset {} (asked {target}): {} stream bytes after the snapshot at offset {first}, into {}",
        plan.cut - 1,
        plan.cut - (first + 1) - dropped,
        written.display()
    );
    Ok(())
}

/// The offset of everything stored by `unix_ms`: the last time mark not after it.
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

/// `now`, `@<unix seconds>` or `YYYY-MM-DDTHH:MM:SS[.fff]Z`, in milliseconds since the epoch.
fn parse_time(s: &str) -> Result<u64> {
    if let Some(secs) = s.strip_prefix('@') {
        let secs: f64 = secs.parse().with_context(|| format!("bad time {s:?}"))?;
        return Ok((secs * 1000.0) as u64);
    }
    let bad =
        || anyhow::anyhow!("bad time {s:?}: use 2026-12-01T10:42:00Z, @<unix seconds> or now");
    let t = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = t.split_once('T').ok_or_else(bad)?;
    let num = |p: &str| p.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let (time, frac) = time.split_once('.').unwrap_or((time, "0"));
    if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let h: Vec<&str> = time.split(':').collect();
    let ([y, mo, da], [hh, mi, ss]) = (&d[..], &h[..]) else {
        return Err(bad());
    };
    let (y, mo, da) = (num(y)?, num(mo)?, num(da)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86400 + num(hh)? * 3600 + num(mi)? * 60 + num(ss)?;
    let ms = format!("{frac:0<3}")[..3]
        .parse::<i64>()
        .map_err(|_| bad())?;
    u64::try_from(secs * 1000 + ms).map_err(|_| bad())
}

/// What `--before` looks for: command names the scanner knows, after an offset.
struct Stop {
    names: Vec<&'static str>,
    after: u64,
}

/// The command `--before` found.
struct Found {
    name: &'static str,
    start: u64,
    end: u64,
    db: Option<u32>,
    in_multi: bool,
}

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
            crate::feed::known_name(n.trim()).with_context(|| {
                format!("--before {n}: not a command the stream scanner recognises (data commands such as FLUSHALL, FLUSHDB, DEL, SET)")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let after = match after {
        None => first,
        Some(t) => offset_at(marks, parse_time(t)?, first)?,
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
    from: u64,
    /// With `--before`: the command found.
    found: Option<Found>,
}

/// Scans the log from `from` to `to`: the last command boundary outside MULTI at or before
/// `to`, or before the command `stop` looks for.
fn plan(dir: &Path, from: u64, to: u64, stop: Option<&Stop>) -> Result<Plan> {
    let mut scanner = Scanner::at(from);
    let (mut start, mut depth, mut cut) = (from, 0u32, from);
    let (mut multi_start, mut db, mut found) = (from, None, None::<Found>);
    let mut at = from;
    store::history::read_log(dir, from, to, |piece| {
        let base = at;
        scanner
            .scan(piece, |end, cmd| {
                let end = base + end as u64;
                if found.is_some() {
                    return;
                }
                match cmd {
                    Command::Select(n) => db = Some(n),
                    Command::Data("multi") => {
                        depth += 1;
                        multi_start = start;
                    }
                    Command::Data("exec") => depth = depth.saturating_sub(1),
                    Command::Data(name) => {
                        if stop.is_some_and(|s| start >= s.after && s.names.contains(&name)) {
                            found = Some(Found {
                                name,
                                start,
                                end,
                                db,
                                in_multi: depth > 0,
                            });
                            cut = if depth > 0 { multi_start } else { start };
                            return;
                        }
                    }
                    Command::Ping | Command::Getack => {}
                }
                if depth == 0 {
                    cut = end;
                }
                start = end;
            })
            .map_err(|e| anyhow::anyhow!("the log does not parse near offset {base}: {e}"))?;
        at += piece.len() as u64;
        Ok(())
    })?;
    Ok(Plan { cut, from, found })
}

/// When the relay stored the byte before `end`: the first time mark at or after it (the last
/// one for bytes after every mark).
fn time_of(marks: &[TimeMark], end: u64) -> u64 {
    let after = marks.iter().find(|m| m.offset >= end);
    after
        .or(marks.last())
        .map_or_else(store::now_ms, |m| m.unix_ms)
}

/// A command with a relative expiry, rewritten absolute at `at_ms`; itself otherwise.
fn absolute(command: &[u8], at_ms: u64) -> Vec<u8> {
    let lead = command.iter().take_while(|&&b| b == b'\n').count();
    let mut buf = bytes::BytesMut::from(&command[lead..]);
    match crate::resp::parse_stream_command(&mut buf) {
        Ok(Some(args)) if buf.is_empty() => {
            expiry::rewrite(&args, at_ms).unwrap_or_else(|| command.to_vec())
        }
        _ => command.to_vec(),
    }
}

/// `out/appendonly.aof`: the snapshot, then the log from the plan's start to its cut without
/// what it skips. Written as `.tmp` and renamed once complete.
/// `rdb` is the snapshot, opened before: a snapshot refresh of the relay may unlink the file.
fn write(
    mut rdb: std::fs::File,
    dir: &Path,
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
    let total = rdb.metadata()?.len() + (plan.cut - plan.from);
    let mut progress = Progress::new("restore: read", Some(total));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = rdb.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
        progress.advance(n as u64);
    }
    let mut copy = Copy {
        out: &mut file,
        scanner: Scanner::at(plan.from),
        at: plan.from,
        pending: Vec::new(),
        through: false,
        marks,
        dropped: 0,
    };
    store::history::read_log(dir, plan.from, plan.cut, |piece| {
        copy.piece(piece)?;
        progress.advance(piece.len() as u64);
        Ok(())
    })?;
    if !copy.pending.is_empty() || copy.through {
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

/// The log copied into the output command by command: each held until it is complete (at most
/// `MAX_REWRITE` bytes, beyond which it is copied through as it comes), then left out (PING,
/// GETACK), made absolute (a relative expiry) or written as it is.
struct Copy<'a, W: Write> {
    out: &'a mut W,
    scanner: Scanner,
    /// Offset of the next byte.
    at: u64,
    pending: Vec<u8>,
    /// The command under way is too long to hold: its bytes go straight out.
    through: bool,
    marks: &'a [TimeMark],
    /// Bytes left out.
    dropped: u64,
}

impl<W: Write> Copy<'_, W> {
    fn piece(&mut self, piece: &[u8]) -> Result<()> {
        let mut ends = Vec::new();
        let base = self.at;
        self.scanner
            .scan(piece, |end, cmd| ends.push((end, cmd)))
            .map_err(|e| anyhow::anyhow!("the log does not parse near offset {base}: {e}"))?;
        let mut last = 0;
        for (end, cmd) in ends {
            self.bytes(&piece[last..end])?;
            self.command(cmd, base + end as u64)?;
            last = end;
        }
        self.bytes(&piece[last..])?;
        self.at += piece.len() as u64;
        Ok(())
    }

    /// Bytes of the command under way.
    fn bytes(&mut self, b: &[u8]) -> Result<()> {
        if self.through {
            return Ok(self.out.write_all(b)?);
        }
        self.pending.extend_from_slice(b);
        if self.pending.len() > MAX_REWRITE {
            self.out.write_all(&self.pending)?;
            self.pending = Vec::new();
            self.through = true;
        }
        Ok(())
    }

    /// The command that ends at offset `end` is complete.
    fn command(&mut self, cmd: Command, end: u64) -> Result<()> {
        let held = std::mem::take(&mut self.pending);
        if std::mem::take(&mut self.through) {
            return Ok(());
        }
        match cmd {
            Command::Ping | Command::Getack => self.dropped += held.len() as u64,
            Command::Data(name) if expiry::NAMES.contains(&name) => self
                .out
                .write_all(&absolute(&held, time_of(self.marks, end)))?,
            _ => self.out.write_all(&held)?,
        }
        Ok(())
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
                scanner: Scanner::at(1),
                at: 1,
                pending: Vec::new(),
                through: false,
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
        assert!(parse_time("2025-12-01 08:00:03").is_err());
        assert!(
            parse_time("2025-12-01T08:00:03.1€Z").is_err(),
            "not a panic"
        );
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

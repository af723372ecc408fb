//! Backups through the relay: `redis-cli --rdb` (`REPLCONF rdb-only 1`, then SYNC or PSYNC).
//! A user asking for a backup asks for the data as it is now, and the stored snapshot may be
//! hours old. So the relay serves it only when it covers the current offset (nothing was
//! written since) or is younger than `--rdb-only-max-age`; otherwise it fetches a fresh one
//! from the master (a snapshot refresh: one fork, shared by every backup asked while it is
//! under way, and the new snapshot also goes into service for the replicas).
//!
//! `redis-cli --functions-rdb` (`REPLCONF rdb-filter-only functions`) gets a functions-only
//! snapshot made here, without the master: the libraries of the stored snapshot, changed by
//! the stream's `FUNCTION` commands since.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};

use super::Context;
use crate::decode::Libraries;
use crate::feed::{Command, Scanner};
use crate::link::LinkState;
use crate::resp;
use crate::store::View;

/// Backups make the master fork at most this often: a client asking for backups in a loop
/// gets the last one fetched meanwhile, however many writes it is behind (the log says its
/// age), never a fork each time.
pub const MIN_FETCH_INTERVAL: Duration = Duration::from_secs(60);

/// Longest FUNCTION command read from the log (libraries are source code).
const MAX_FUNCTION_COMMAND: u64 = 64 << 20;

/// What backups share: when one last made the master fork, and the right to make a
/// functions-only snapshot, which reads the whole log since the snapshot (one at a time).
pub struct Backups {
    last_fetch: std::sync::Mutex<Option<std::time::Instant>>,
    functions: tokio::sync::Semaphore,
}

impl Default for Backups {
    fn default() -> Backups {
        Backups {
            last_fetch: std::sync::Mutex::new(None),
            functions: tokio::sync::Semaphore::new(1),
        }
    }
}

impl Backups {
    fn fetched_within(&self, interval: Duration) -> bool {
        let last = self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|t| t.elapsed() < interval)
    }

    /// A fresh snapshot asked of the master for backups is in service: the backups asked
    /// while it came share it, later ones within the interval get it too.
    pub fn fetched(&self) {
        *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::time::Instant::now());
    }
}

/// What to do with a backup request.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// The stored snapshot will do, for this reason.
    Serve(String),
    /// Ask the master for a fresh snapshot and serve that.
    Fetch,
    /// Neither is possible: the error for the client.
    Refuse(String),
}

pub fn choose(cx: &Context, state: &View) -> Choice {
    let Some(ident) = state.ident.as_ref() else {
        return Choice::Refuse("NOMASTERLINK no snapshot in service yet".into());
    };
    if ident.snapshot_offset >= state.master_repl_offset() {
        return Choice::Serve("it covers the current offset: nothing was written since".into());
    }
    let age = snapshot_age(cx);
    let shown = age.map_or("of unknown age".to_string(), |a| {
        format!("{} s old", a.as_secs())
    });
    if cx.backups.fetched_within(MIN_FETCH_INTERVAL) {
        return Choice::Serve(format!(
            "it is {shown}: backups make the master fork at most once every {} s",
            MIN_FETCH_INTERVAL.as_secs()
        ));
    }
    if let (Some(max), Some(age)) = (cx.settings.rdb_only_max_age, age)
        && age <= max
    {
        return Choice::Serve(format!("it is {shown}, within --rdb-only-max-age"));
    }
    if cx.link.status().state != LinkState::Connected {
        return Choice::Refuse(format!(
            "ERR replica-relay cannot make a current backup: it has no link with its master to fetch a fresh snapshot, and the stored one is {shown} and {} bytes of writes behind (accept it with --rdb-only-max-age)",
            state.master_repl_offset() - ident.snapshot_offset
        ));
    }
    Choice::Fetch
}

/// Age of the snapshot in service, from its `ctime` AUX field (once decoded).
pub fn snapshot_age(cx: &Context) -> Option<Duration> {
    let stats = cx.store.snapshot_stats()?;
    let ctime: u64 = stats.aux.get("ctime")?.parse().ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(now.saturating_sub(ctime)))
}

/// The functions-only snapshot of the data at `state`'s offset, and its libraries' names.
pub async fn functions_rdb(cx: &Context, state: &View) -> Result<(Vec<u8>, String), String> {
    let _one = cx
        .backups
        .functions
        .acquire()
        .await
        .map_err(|e| e.to_string())?;
    let ident = state.ident.as_ref().ok_or("no snapshot in service yet")?;
    let path = cx.store.snapshot_path(ident);
    let mut libs = tokio::task::spawn_blocking(move || {
        let file =
            std::fs::File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        Libraries::from_snapshot(file).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    let (from, to) = (ident.snapshot_offset + 1, state.next);
    for (start, end) in function_commands(cx, state.epoch, from, to).await? {
        // Read whole before parsing: bounded like the libraries it can add.
        if end - start > MAX_FUNCTION_COMMAND {
            return Err(format!(
                "a FUNCTION command of {} bytes at offset {start}",
                end - start
            ));
        }
        let mut bytes = read_range(cx, state.epoch, start, end).await?;
        let skip = bytes.iter().take_while(|&&b| b == b'\n').count();
        bytes.advance(skip);
        let args = resp::parse_stream_command(&mut bytes)
            .map_err(|e| format!("parsing a FUNCTION command at offset {start}: {e}"))?
            .ok_or_else(|| format!("an incomplete FUNCTION command at offset {start}"))?;
        libs.apply(&args).map_err(|e| e.to_string())?;
    }
    Ok((libs.rdb(), libs.names().join(", ")))
}

/// Offsets (start, end) of the `FUNCTION` commands of the log between `from` and `to`, both
/// command boundaries.
async fn function_commands(
    cx: &Context,
    epoch: u64,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, u64)>, String> {
    let mut changes = cx.store.subscribe();
    let mut scratch = BytesMut::new();
    let mut scanner = Scanner::at(from);
    let (mut at, mut start, mut found) = (from, from, Vec::new());
    while at < to {
        let mut chunks = cx
            .store
            .read(at, epoch, &mut changes, &mut scratch)
            .await
            .map_err(|e| format!("reading the log at offset {at}: {e}"))?;
        while chunks.has_remaining() && at < to {
            let piece = chunks.chunk();
            let n = piece.len().min((to - at) as usize);
            let base = at;
            scanner
                .scan(&piece[..n], |end, cmd| {
                    let end = base + end as u64;
                    if cmd == Command::Data("function") {
                        found.push((start, end));
                    }
                    start = end;
                })
                .map_err(|e| e.to_string())?;
            at += n as u64;
            chunks.advance(n);
        }
    }
    Ok(found)
}

async fn read_range(cx: &Context, epoch: u64, from: u64, to: u64) -> Result<BytesMut, String> {
    let mut changes = cx.store.subscribe();
    let mut scratch = BytesMut::new();
    let mut out = BytesMut::with_capacity((to - from) as usize);
    while (out.len() as u64) < to - from {
        let at = from + out.len() as u64;
        let mut chunks = cx
            .store
            .read(at, epoch, &mut changes, &mut scratch)
            .await
            .map_err(|e| format!("reading the log at offset {at}: {e}"))?;
        while chunks.has_remaining() && (out.len() as u64) < to - from {
            let piece = chunks.chunk();
            let n = piece.len().min((to - from) as usize - out.len());
            out.extend_from_slice(&piece[..n]);
            chunks.advance(n);
        }
    }
    Ok(out)
}

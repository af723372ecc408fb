//! The relay's store: the snapshot in service, the replication stream log after it, and
//! upstream's identity, all on disk under `--dir`.
//!
//! One writer thread owns every file, every history change and the offset acknowledged upstream
//! (see `writer`); the upstream link feeds it through a bounded channel, after its intake (see
//! `intake`) has cut the stream into commands and, but under `appendfsync always`, made them
//! visible downstream. Downstream sessions only read: what is visible to them is published
//! in `State` and announced through a `watch`, so no lock is ever held around a socket. The most
//! recent stream bytes are also kept in memory (`Tail`), shared as `Bytes`, so replicas that keep
//! up never touch the disk and never copy.
//!
//! Layout:
//! ```text
//! <dir>/identity                      replids, snapshot in service (the commit point)
//! <dir>/snapshots/<replid>-<X0>.rdb   upstream's snapshot taken at offset X0
//! <dir>/log/<offset, 20 digits>.seg   raw stream bytes; each segment starts on a command
//! <dir>/restore-points                older snapshots kept for --restore-window
//! ```

mod cut;
pub mod history;
pub mod holdings;
mod identity;
mod index;
mod intake;
mod lock;
mod recover;
mod retention;
mod segment;
mod snapshot;
mod tail;
mod times;
mod verify;
mod visible;
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, watch};

pub use cut::stream_db_at;
pub use identity::{Identity, NULL_REPLID, is_replid};
pub use index::Damage;
use intake::Intake;
pub use retention::{RestorePoint, Window, restore_points};
pub use snapshot::Slot;
pub use tail::Chunks;
pub use times::{RESOLUTION_MS, now_ms, utc, utc_ms};
pub use verify::Verification;
use visible::{Found, Visible};
pub use writer::WriterStatus;
use writer::{Op, Writer};

use crate::config::{Fsync, RestoreRetention};
use crate::decode::{SnapshotFacts, SnapshotStats, StreamStats};
use crate::instruments::{self, Collectors};

/// Most bytes handed to a downstream session per read, from memory or from a segment file:
/// also what a replica stalled in a write can keep alive after the tail has moved on.
const READ_MAX: u64 = 512 * 1024;
/// Recent stream bytes kept in memory for replicas that keep up.
pub const TAIL_BYTES: usize = 4 * 1024 * 1024;
/// Decoded statistics kept: the snapshot in service and ones arriving.
const STATS_KEPT: usize = 3;
/// Stream chunks queued for the writer before the upstream link waits (about 16 MiB).
const QUEUE: usize = 256;

/// The store's own instruments, counted by its writer thread.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    pub fsync_seconds: prometheus::Histogram,
    pub write_errors: prometheus::IntCounter,
    pub snapshot_corrupt: prometheus::IntCounter,
    pub unarchived_dropped: prometheus::IntCounter,
}

impl StoreMetrics {
    pub fn new() -> StoreMetrics {
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        StoreMetrics {
            fsync_seconds: instruments::histogram(
                "store_fsync_seconds",
                "Time each fsync of the log took.",
                buckets,
            ),
            write_errors: instruments::counter(
                "store_write_errors_total",
                "Writes or fsyncs of the store that failed.",
            ),
            snapshot_corrupt: instruments::counter(
                "store_snapshot_corrupt_total",
                "Stored snapshots taken out of service because they failed verification, at start or while serving a full sync.",
            ),
            unarchived_dropped: instruments::counter(
                "store_unarchived_dropped_bytes_total",
                "Log bytes the store dropped before the archive (--archive) took them, because they were over --restore-max-disk.",
            ),
        }
    }
}

impl Collectors for StoreMetrics {
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.fsync_seconds.clone()),
            Box::new(self.write_errors.clone()),
            Box::new(self.snapshot_corrupt.clone()),
            Box::new(self.unarchived_dropped.clone()),
        ]
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub fsync: Fsync,
    pub segment_size: u64,
    /// Log bytes kept for partial resyncs beyond what the snapshot in service needs.
    pub backlog_size: u64,
    /// Older snapshots and log kept for point-in-time restore.
    pub restore: RestoreRetention,
    pub metrics: StoreMetrics,
}

/// A snapshot arriving from upstream.
#[derive(Debug, Clone)]
pub struct Receiving {
    pub received: u64,
}

/// What downstream sessions, the upstream link and INFO see: a consistent copy, taken at once.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// `None` until a verified snapshot is in service.
    pub ident: Option<Identity>,
    /// Offset of the first byte in the log.
    pub first: u64,
    /// Offset of the next byte: `master_repl_offset + 1`. Everything before it is complete commands.
    pub next: u64,
    /// Bumped whenever history changes (new snapshot, id shift): replicas must sync again.
    pub epoch: u64,
    pub receiving: Option<Receiving>,
    /// A refresh snapshot is arriving or waiting to go into service.
    pub refreshing: bool,
    /// Whether the snapshot named by `ident` may be served.
    pub verification: Verification,
    /// What can be restored to, as of the last second.
    pub restore: Window,
}

impl View {
    pub fn master_repl_offset(&self) -> u64 {
        self.next.saturating_sub(1)
    }
}

/// The store's state: the view, and what only the store itself uses.
#[derive(Debug)]
struct State {
    view: View,
    segments: BTreeSet<u64>,
    /// Offsets replicas catching up after a full sync still need, by session.
    pins: BTreeMap<u64, u64>,
    /// The memory tail and how far the files hold the stream; with `view`, what readers see.
    stream: Visible,
}

/// Why a downstream reader cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Gone {
    #[error("the replication history changed (new snapshot or replication id)")]
    Reset,
    #[error("offset {0} is no longer in the relay's backlog")]
    Trimmed(u64),
    #[error("reading the backlog failed: {0}")]
    Io(String),
}

struct Shared {
    dir: PathBuf,
    metrics: StoreMetrics,
    state: RwLock<State>,
    changed: watch::Sender<u64>,
    /// What decoding learned, by snapshot file name; only the newest few are kept.
    stats: Mutex<Vec<(String, Arc<SnapshotStats>)>>,
    /// What the stream carried since start, refreshed every second.
    feed: Mutex<StreamStats>,
    /// Offset after the last data command stored (not PING, SELECT, REPLCONF), or after the
    /// recovered log when it is not empty, which is not scanned: for telling whether the
    /// history the relay serves holds any writes after its snapshot.
    last_write: AtomicU64,
    /// A reader behind the memory tail waits for bytes not yet written: the writer wakes the
    /// readers once it has written more (otherwise only what is forwarded wakes them).
    disk_wait: AtomicBool,
    /// The first offset the archive has not taken yet, which the log keeps (within
    /// --restore-max-disk); `u64::MAX` without an archive.
    archive_needs: AtomicU64,
    /// `<dir>/LOCK`, held while any handle of the store lives: one relay per directory.
    _lock: std::fs::File,
}

impl Shared {
    fn file_stats(&self, name: String, stats: SnapshotStats) {
        let mut all = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(n, _)| *n != name);
        all.push((name, Arc::new(stats)));
        let excess = all.len().saturating_sub(STATS_KEPT);
        all.drain(..excess);
    }

    /// Records the standing of snapshot `name` if it is still the one in service and not
    /// already found corrupt; returns whether it changed.
    fn verified(&self, name: &str, to: Verification) -> bool {
        self.update(|st| {
            let current = st.view.ident.as_ref().is_some_and(|i| i.snapshot == name);
            let changed = current
                && st.view.verification != to
                && !matches!(st.view.verification, Verification::Corrupt(_));
            if changed {
                st.view.verification = to;
            }
            changed
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and wakes every reader: for what readers wait on.
    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = self.quietly(f);
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        out
    }

    /// Changes the state without waking readers: bytes not yet published (the memory tail),
    /// progress counters and pins, so the fan-out path is woken once per published batch.
    fn quietly<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.write().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The reading side of the store, for every room: consistent views, reads of the stream,
/// changes, pins. Cloning it is cheap.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// The writing side of the store, held by the upstream link alone: every operation goes to the
/// writer thread, in order.
pub struct StoreWriter {
    ops: mpsc::Sender<Op>,
    status: watch::Receiver<WriterStatus>,
    shared: Arc<Shared>,
    /// Only the main link appends; the lock is never contended, and never held across a wait.
    intake: Mutex<Intake>,
    /// Forward before the disk: not under `appendfsync always`.
    forward: bool,
}

enum Located {
    Memory(Chunks),
    Disk(PathBuf, u64, usize),
    Nothing,
}

impl Store {
    /// Recovers the store in `cfg.dir` (creating it if needed) and starts its writer thread:
    /// the writing side for the upstream link, a reading side for everyone, and the thread.
    pub fn open(cfg: StoreConfig) -> Result<(StoreWriter, Store, std::thread::JoinHandle<()>)> {
        for sub in ["snapshots", "log"] {
            std::fs::create_dir_all(cfg.dir.join(sub))
                .with_context(|| format!("creating {}", cfg.dir.join(sub).display()))?;
        }
        let lock = lock::data_dir(&cfg.dir)?;
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            dir: cfg.dir.clone(),
            metrics: cfg.metrics.clone(),
            state: RwLock::new(State {
                view: View::default(),
                segments: BTreeSet::new(),
                pins: BTreeMap::new(),
                stream: Visible::new(cfg.fsync),
            }),
            changed,
            stats: Mutex::new(Vec::new()),
            feed: Mutex::new(StreamStats::default()),
            last_write: AtomicU64::new(0),
            disk_wait: AtomicBool::new(false),
            archive_needs: AtomicU64::new(u64::MAX),
            _lock: lock,
        });
        let forward = Visible::forwards(cfg.fsync);
        let (writer, status) = Writer::open(shared.clone(), cfg)?;
        let recovered = shared.read().view.clone();
        if recovered
            .ident
            .as_ref()
            .is_some_and(|id| recovered.next > id.snapshot_offset + 1)
        {
            shared.last_write.store(recovered.next, Ordering::Relaxed);
        }
        let (ops, rx) = mpsc::channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .context("starting the store writer thread")?;
        let intake = Mutex::new(Intake::at(recovered.next));
        let writer = StoreWriter {
            ops,
            status,
            shared: shared.clone(),
            intake,
            forward,
        };
        Ok((writer, Store { shared }, handle))
    }

    /// A copy of the visible state.
    pub fn view(&self) -> View {
        self.shared.read().view.clone()
    }

    /// What decoding learned about the snapshot in service, once it is decoded.
    pub fn snapshot_stats(&self) -> Option<Arc<SnapshotStats>> {
        let name = self.shared.read().view.ident.as_ref()?.snapshot.clone();
        let all = self.shared.stats.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().find(|(n, _)| *n == name).map(|(_, s)| s.clone())
    }

    /// What the stream carried since start, as of the last second.
    pub fn stream_stats(&self) -> StreamStats {
        self.shared
            .feed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the history served holds writes: keys in its snapshot (taken as some until it
    /// is decoded), or data commands in the log after it (any recovered log counts as such).
    pub fn serves_data(&self) -> bool {
        let Some(ident) = self.view().ident else {
            return false;
        };
        let snapshot = self.snapshot_stats().is_none_or(|s| s.keys() > 0);
        snapshot || self.shared.last_write.load(Ordering::Relaxed) > ident.snapshot_offset + 1
    }

    /// The offset after the last visible byte.
    pub fn next(&self) -> u64 {
        self.shared.read().view.next
    }

    /// Notified on every change of the visible state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    pub fn snapshot_path(&self, ident: &Identity) -> PathBuf {
        snapshot_path(&self.shared.dir, &ident.snapshot)
    }

    /// A full sync found the snapshot `name` damaged while serving it: it is never served again.
    pub fn snapshot_failed(&self, name: &str, why: &str) {
        verify::mark_corrupt(&self.shared, name, why);
    }

    /// Bytes on disk under the log directory.
    /// The archive has taken the log up to `offset` (exclusive): the log from there is kept
    /// for it, within --restore-max-disk.
    pub fn archive_needs(&self, offset: u64) {
        self.shared.archive_needs.store(offset, Ordering::Release);
    }

    pub fn log_disk_bytes(&self) -> u64 {
        let segs: Vec<u64> = self.shared.read().segments.iter().copied().collect();
        segs.iter()
            .filter_map(|s| std::fs::metadata(segment_path(&self.shared.dir, *s)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Stream bytes from offset `from` of history `epoch`, waiting until there are some.
    /// `scratch` is the caller's buffer for disk reads, reused while it lags behind the memory
    /// tail and released once it is back on it.
    pub async fn read(
        &self,
        from: u64,
        epoch: u64,
        changes: &mut watch::Receiver<u64>,
        scratch: &mut BytesMut,
    ) -> Result<Chunks, Gone> {
        loop {
            changes.borrow_and_update();
            match self.locate(from, epoch)? {
                Located::Memory(chunks) => {
                    *scratch = BytesMut::new();
                    return Ok(chunks);
                }
                Located::Disk(path, pos, len) => {
                    let buf = std::mem::take(scratch);
                    return match read_at(move || std::fs::File::open(path), pos, len, buf).await {
                        Ok((read, buf)) => {
                            *scratch = buf;
                            Ok(read.into())
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            Err(Gone::Trimmed(from))
                        }
                        Err(e) => Err(Gone::Io(e.to_string())),
                    };
                }
                Located::Nothing => changes.changed().await.map_err(|_| Gone::Reset)?,
            }
        }
    }

    fn locate(&self, from: u64, epoch: u64) -> Result<Located, Gone> {
        let st = self.shared.read();
        if st.view.epoch != epoch {
            return Err(Gone::Reset);
        }
        if from < st.view.first {
            return Err(Gone::Trimmed(from));
        }
        let on_disk = match st.stream.find(&st.view, from, READ_MAX) {
            Found::Nothing => return Ok(Located::Nothing),
            Found::Memory(chunks) => return Ok(Located::Memory(chunks)),
            Found::NotWritten => {
                self.shared.disk_wait.store(true, Ordering::Release);
                return Ok(Located::Nothing);
            }
            Found::Disk(on_disk) => on_disk,
        };
        let start = *st
            .segments
            .range(..=from)
            .next_back()
            .ok_or(Gone::Trimmed(from))?;
        let end = st
            .segments
            .range(from + 1..)
            .next()
            .copied()
            .unwrap_or(on_disk)
            .min(on_disk);
        let len = (end - from).min(READ_MAX) as usize;
        Ok(Located::Disk(
            segment_path(&self.shared.dir, start),
            from - start,
            len,
        ))
    }

    /// Keeps the log from `offset` on while a replica catches up after a full sync. False if
    /// retention already dropped it.
    pub fn pin(&self, session: u64, offset: u64) -> bool {
        self.shared.quietly(|st| {
            let kept = offset >= st.view.first;
            if kept {
                st.pins.insert(session, offset);
            }
            kept
        })
    }

    pub fn unpin(&self, session: u64) {
        self.shared.quietly(|st| st.pins.remove(&session));
    }
}

impl StoreWriter {
    pub fn writer_status(&self) -> watch::Receiver<WriterStatus> {
        self.status.clone()
    }

    async fn send(&self, op: Op) -> Result<()> {
        self.ops
            .send(op)
            .await
            .map_err(|_| anyhow::anyhow!("the store writer has stopped"))
    }

    pub async fn begin_snapshot(&self, slot: Slot, replid: String, offset: u64) -> Result<()> {
        self.send(Op::BeginSnapshot {
            slot,
            replid,
            offset,
        })
        .await
    }

    pub async fn snapshot_data(&self, slot: Slot, data: Bytes) -> Result<()> {
        self.send(Op::SnapshotData(slot, data)).await
    }

    /// Verifies the received snapshot and, if good, puts it in service: from the main link with
    /// an empty log at X0+1 (a new history), from a refresh as soon as the log reaches X1+1.
    pub async fn finish_snapshot(&self, slot: Slot) -> Result<SnapshotFacts> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::FinishSnapshot(slot, tx)).await?;
        let facts = rx.await.context("the store writer has stopped")?;
        if slot == Slot::Main {
            let next = self.shared.read().view.next;
            self.intake().restart(next);
        }
        facts
    }

    pub async fn abort_snapshot(&self, slot: Slot) -> Result<()> {
        self.send(Op::AbortSnapshot(slot)).await
    }

    /// Stream bytes from upstream: forwarded downstream at once (but under `always`), then
    /// stored by the writer.
    pub async fn append(&self, data: Bytes) -> Result<()> {
        let chunk = {
            let mut intake = self.intake();
            let chunk = intake.scan(data, &self.shared);
            if self.forward && self.status.borrow().failed.is_none() {
                intake.forward(&chunk, &self.shared);
            }
            chunk
        };
        self.send(Op::Stream(chunk)).await
    }

    /// Tests: holds the writer thread until `go` is sent to (or dropped).
    #[cfg(test)]
    async fn hold(&self) -> std::sync::mpsc::Sender<()> {
        let (go, held) = std::sync::mpsc::channel();
        self.send(Op::Hold(held)).await.unwrap();
        go
    }

    fn intake(&self) -> std::sync::MutexGuard<'_, Intake> {
        self.intake.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Upstream answered `+CONTINUE <replid>`: shift ids if it changed (PROTOCOL §5.2). Waits
    /// for the writer: the stream after it is forwarded at once, and must reach the replicas
    /// under the new history, not the old one.
    pub async fn continue_with(&self, replid: String) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Continue(replid, tx)).await?;
        rx.await.context("the store writer has stopped")
    }

    /// Called once a second: lets `everysec` fsync.
    pub async fn tick(&self) -> Result<()> {
        let feed = self.intake().sample();
        *self.shared.feed.lock().unwrap_or_else(|e| e.into_inner()) = feed;
        self.send(Op::Tick).await
    }

    /// Waits until everything queued is stored, cuts any incomplete command, and returns the
    /// offset to resume upstream from.
    pub async fn flush(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Flush(tx)).await?;
        let resume = rx.await.context("the store writer has stopped")?;
        self.intake().restart(resume);
        Ok(resume)
    }

    /// Flushes, fsyncs and stops the writer.
    pub async fn close(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Close(tx)).await?;
        rx.await.context("the store writer has stopped")
    }
}

/// What a store directory holds, read without opening it for writing (for `inspect`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreSummary {
    pub replid: String,
    pub replid2: String,
    pub second_replid_offset: i64,
    pub snapshot: PathBuf,
    pub snapshot_offset: u64,
    /// Offset of the first byte in the log, and of the byte after the last.
    pub log_first: u64,
    pub log_next: u64,
    pub log_segments: usize,
    pub log_bytes: u64,
    /// Segments whose bytes fail their checksums.
    pub log_damage: Vec<Damage>,
    /// The first and the last entry of the time index: when the relay stored the byte before
    /// that offset. `None` for a log written before the time index existed.
    pub log_times: Option<(TimeMark, TimeMark)>,
}

/// An entry of the time index: the offset after the bytes stored by `unix_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TimeMark {
    pub offset: u64,
    pub unix_ms: u64,
}

/// The time index of the log in `dir`, in offset order.
pub fn time_index(dir: &Path, segments: &[u64]) -> Vec<TimeMark> {
    segments
        .iter()
        .flat_map(|&start| {
            times::read(&segment_path(dir, start))
                .into_iter()
                .map(move |(len, unix_ms)| TimeMark {
                    offset: start + len,
                    unix_ms,
                })
        })
        .collect()
}

/// Free (for unprivileged users) and total bytes of the filesystem holding `dir`.
pub fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let block = st.f_frsize as u64;
    Some((st.f_bavail as u64 * block, st.f_blocks as u64 * block))
}

pub fn describe(dir: &Path) -> Result<StoreSummary> {
    let ident = Identity::load(&dir.join("identity"))?.with_context(|| {
        format!(
            "{} holds no identity file: not a replica-relay store",
            dir.display()
        )
    })?;
    let segs = segment::list_segments(dir)?;
    let mut log_damage = Vec::new();
    for &(start, _) in &segs {
        let path = segment_path(dir, start);
        let (from, failed) =
            index::trusted_len(&path).with_context(|| format!("checking {}", path.display()))?;
        if let Some(to) = failed {
            log_damage.push(Damage {
                segment: start,
                from,
                to,
            });
        }
    }
    let (first, next) = match (segs.first(), segs.last()) {
        (Some(f), Some(l)) => (f.0, l.0 + l.1),
        _ => (ident.snapshot_offset + 1, ident.snapshot_offset + 1),
    };
    Ok(StoreSummary {
        snapshot: snapshot_path(dir, &ident.snapshot),
        replid: ident.replid,
        replid2: ident.replid2,
        second_replid_offset: ident.second_replid_offset,
        snapshot_offset: ident.snapshot_offset,
        log_first: first,
        log_next: next,
        log_segments: segs.len(),
        log_bytes: segs.iter().map(|s| s.1).sum(),
        log_damage,
        log_times: {
            let starts: Vec<u64> = segs.iter().map(|s| s.0).collect();
            let marks = time_index(dir, &starts);
            marks.first().copied().zip(marks.last().copied())
        },
    })
}

fn snapshot_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("snapshots").join(name)
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join("log").join(format!("{start:020}.seg"))
}

/// Reads `len` bytes at `pos` of the file `open` gives, on a blocking thread, into `buf`, whose
/// memory comes back for the next read once the bytes returned are dropped: a reader that goes
/// on reuses warm pages instead of faulting in a fresh allocation for every read. A file shorter
/// than `pos + len` is an error.
pub async fn read_at(
    open: impl FnOnce() -> std::io::Result<std::fs::File> + Send + 'static,
    pos: u64,
    len: usize,
    buf: BytesMut,
) -> std::io::Result<(Bytes, BytesMut)> {
    let (read, buf, ()) = read_at_then(open, pos, len, buf, |_| ()).await?;
    Ok((read, buf))
}

/// `read_at`, then `then` on the bytes read, on the same blocking thread (a checksum, say).
pub async fn read_at_then<T: Send + 'static>(
    open: impl FnOnce() -> std::io::Result<std::fs::File> + Send + 'static,
    pos: u64,
    len: usize,
    mut buf: BytesMut,
    then: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> std::io::Result<(Bytes, BytesMut, T)> {
    let read = move || -> std::io::Result<(Bytes, BytesMut, T)> {
        let f = open()?;
        buf.clear();
        buf.resize(len, 0);
        f.read_exact_at(&mut buf, pos)?;
        let done = then(&buf);
        Ok((buf.split().freeze(), buf, done))
    };
    tokio::task::spawn_blocking(read)
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests;

//! The store's writer thread: the only code that writes files or moves offsets.
//!
//! It applies operations from the upstream link in order, batches what is queued, and only then
//! publishes (one fsync per batch under `appendfsync always`). Offsets are published only up to
//! the last complete command, the way a Redis replica forwards only applied commands, so a
//! downstream replica never sees half a command that a protocol error or a crash later cuts.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::identity::{Identity, NULL_REPLID, sync_dir};
use super::{Fsync, Receiving, Shared, StoreConfig, TAIL_BYTES, segment_path};
use crate::decode::{SnapshotCheck, SnapshotFacts};
use crate::feed::{Command, Scanner};

pub(super) enum Op {
    BeginSnapshot { replid: String, offset: u64 },
    SnapshotData(Bytes),
    FinishSnapshot(oneshot::Sender<Result<SnapshotFacts>>),
    AbortSnapshot,
    Continue(String),
    Stream(Bytes),
    Tick,
    Flush(oneshot::Sender<u64>),
    Close(oneshot::Sender<()>),
}

/// What the upstream link needs from the writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStatus {
    /// The offset to acknowledge upstream (stored per the fsync policy); `None` without a snapshot.
    pub ack: Option<u64>,
    /// Count of `REPLCONF GETACK` stored so far: a change asks for an immediate ACK.
    pub getacks: u64,
    /// Set when the stream could not be stored; cleared by the next flush.
    pub failed: Option<String>,
}

struct Segment {
    start: u64,
    file: File,
    len: u64,
}

struct Incoming {
    tmp: PathBuf,
    name: String,
    file: File,
    replid: String,
    offset: u64,
    size: u64,
    check: SnapshotCheck,
    error: Option<String>,
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    cfg: StoreConfig,
    seg: Option<Segment>,
    /// Next offset after the bytes written to the current segment.
    written: u64,
    /// Next offset after the last complete command.
    boundary: u64,
    synced: u64,
    scanner: Scanner,
    incoming: Option<Incoming>,
    status: watch::Sender<WriterStatus>,
}

impl Writer {
    pub(super) fn run(mut self, mut ops: mpsc::Receiver<Op>) {
        while let Some(op) = ops.blocking_recv() {
            let mut closing = self.apply(op);
            while closing.is_none() {
                match ops.try_recv() {
                    Ok(op) => closing = self.apply(op),
                    Err(_) => break,
                }
            }
            self.publish();
            if let Some(done) = closing {
                self.sync();
                let _ = done.send(());
                return;
            }
        }
        self.sync();
    }

    fn apply(&mut self, op: Op) -> Option<oneshot::Sender<()>> {
        match op {
            Op::BeginSnapshot { replid, offset } => self.begin_snapshot(replid, offset),
            Op::SnapshotData(data) => self.snapshot_data(&data),
            Op::FinishSnapshot(reply) => {
                let result = self.finish_snapshot();
                self.shared.update(|st| st.receiving = None);
                let _ = reply.send(result);
            }
            Op::AbortSnapshot => self.abort_snapshot(),
            Op::Continue(replid) => self.shift_replid(replid),
            Op::Stream(data) => self.stream(data),
            Op::Tick if self.cfg.fsync == Fsync::Everysec => self.sync(),
            Op::Tick => {}
            Op::Flush(reply) => {
                self.sync();
                self.cut_incomplete_command();
                let _ = reply.send(self.boundary);
            }
            Op::Close(done) => return Some(done),
        }
        None
    }

    /// Makes stored bytes visible downstream and acknowledgeable upstream.
    fn publish(&mut self) {
        if self.cfg.fsync == Fsync::Always {
            self.sync();
        }
        let visible = self.boundary;
        let has_snapshot = self.seg.is_some();
        let changed = self.shared.read().next != visible;
        if changed && has_snapshot {
            self.shared.update(|st| st.next = visible);
        }
        self.status.send_if_modified(|s| {
            let ack = has_snapshot.then(|| visible.saturating_sub(1));
            let modified = s.ack != ack;
            s.ack = ack;
            modified
        });
    }

    fn sync(&mut self) {
        let Some(seg) = &self.seg else { return };
        if self.synced == self.written {
            return;
        }
        match seg.file.sync_data() {
            Ok(()) => self.synced = self.written,
            Err(e) => self.fail(format!("fsync of the log segment failed: {e}")),
        }
    }

    fn fail(&mut self, why: String) {
        warn!("{why}");
        self.status.send_modify(|s| s.failed = Some(why));
    }

    fn failed(&self) -> bool {
        self.status.borrow().failed.is_some()
    }

    fn stream(&mut self, data: Bytes) {
        if self.seg.is_none() || self.failed() {
            return;
        }
        let start = self.written;
        let mut ends = Vec::new();
        let mut getacks = 0;
        let scanned = self.scanner.scan(&data, |end, cmd| {
            ends.push(end);
            getacks += u64::from(cmd == Command::Getack);
        });
        let data = match scanned {
            Ok(()) => data,
            Err(e) => {
                self.fail(e.to_string());
                data.slice(..ends.last().copied().unwrap_or(0))
            }
        };
        if self.append(data, &ends).is_ok() {
            if let Some(&end) = ends.last() {
                self.boundary = start + end as u64;
            }
            if getacks > 0 {
                self.status.send_modify(|s| s.getacks += getacks);
            }
        }
    }

    /// Writes `data`, starting a new segment at the first command end past the segment size.
    fn append(&mut self, mut data: Bytes, ends: &[usize]) -> Result<()> {
        let mut base = 0;
        for &end in ends {
            let seg_len = self.seg.as_ref().map_or(0, |s| s.len);
            if end <= data.len() + base && seg_len + (end - base) as u64 >= self.cfg.segment_size {
                self.write_stream(data.split_to(end - base))?;
                base = end;
                self.roll()?;
            }
        }
        if data.is_empty() {
            Ok(())
        } else {
            self.write_stream(data)
        }
    }

    fn write_stream(&mut self, data: Bytes) -> Result<()> {
        let seg = self.seg.as_mut().context("no log segment open")?;
        if let Err(e) = seg.file.write_all(&data) {
            let _ = seg.file.set_len(seg.len);
            self.fail(format!("writing the log segment failed: {e}"));
            bail!("log write failed");
        }
        seg.len += data.len() as u64;
        let offset = self.written;
        self.written += data.len() as u64;
        self.shared
            .update(|st| st.tail.push(offset, data, TAIL_BYTES));
        Ok(())
    }

    fn roll(&mut self) -> Result<()> {
        if self.cfg.fsync != Fsync::No {
            self.sync();
        }
        let start = self.written;
        match create_segment(&self.cfg, start) {
            Ok(seg) => {
                self.seg = Some(seg);
                self.shared.update(|st| st.segments.insert(start));
                Ok(())
            }
            Err(e) => {
                self.fail(format!("starting log segment {start} failed: {e:#}"));
                Err(e)
            }
        }
    }

    /// Cuts bytes of a command that never completed, so the log ends on a command boundary and
    /// upstream resumes from there.
    fn cut_incomplete_command(&mut self) {
        self.status.send_modify(|s| s.failed = None);
        let Some(seg) = &mut self.seg else { return };
        if self.written > self.boundary {
            let keep = self.boundary - seg.start;
            if let Err(e) = seg.file.set_len(keep) {
                self.fail(format!("cutting the log segment failed: {e}"));
                return;
            }
            seg.len = keep;
            self.written = self.boundary;
            self.synced = self.synced.min(self.boundary);
            let boundary = self.boundary;
            self.shared.update(|st| st.tail.truncate(boundary));
        }
        self.scanner = Scanner::at(self.boundary);
    }

    fn begin_snapshot(&mut self, replid: String, offset: u64) {
        self.abort_snapshot();
        let name = format!("{replid}-{offset}.rdb");
        let tmp = self.cfg.dir.join("snapshots").join(format!("{name}.tmp"));
        let (file, error) = match File::create(&tmp) {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(format!("creating {}: {e}", tmp.display()))),
        };
        let file = file.unwrap_or_else(|| File::open("/dev/null").expect("/dev/null"));
        let receiving = Receiving { received: 0 };
        self.shared.update(|st| st.receiving = Some(receiving));
        let check = SnapshotCheck::default();
        self.incoming = Some(Incoming {
            tmp,
            name,
            file,
            replid,
            offset,
            size: 0,
            check,
            error,
        });
    }

    fn snapshot_data(&mut self, data: &[u8]) {
        let Some(inc) = &mut self.incoming else {
            return;
        };
        if inc.error.is_none()
            && let Err(e) = inc.file.write_all(data)
        {
            inc.error = Some(format!("writing {}: {e}", inc.tmp.display()));
        }
        inc.check.update(data);
        inc.size += data.len() as u64;
        let size = inc.size;
        self.shared.update(|st| {
            if let Some(r) = &mut st.receiving {
                r.received = size;
            }
        });
    }

    fn abort_snapshot(&mut self) {
        if let Some(inc) = self.incoming.take() {
            let _ = fs::remove_file(&inc.tmp);
            self.shared.update(|st| st.receiving = None);
        }
    }

    fn finish_snapshot(&mut self) -> Result<SnapshotFacts> {
        let mut inc = self
            .incoming
            .take()
            .context("no snapshot was being received")?;
        let check = std::mem::take(&mut inc.check);
        let verified = verify_and_keep(&inc, check);
        if verified.is_err() {
            let _ = fs::remove_file(&inc.tmp);
            return verified;
        }
        self.switch_to(&inc)?;
        verified
    }

    /// Puts a verified snapshot in service: the old log goes first, then the identity names the
    /// new snapshot, so a crash in between leaves the old snapshot with an empty log: consistent.
    fn switch_to(&mut self, inc: &Incoming) -> Result<()> {
        self.seg = None;
        remove_segments(&self.cfg)?;
        let old = self.shared.read().ident.clone();
        let ident = Identity {
            replid: inc.replid.clone(),
            replid2: NULL_REPLID.into(),
            second_replid_offset: -1,
            snapshot: inc.name.clone(),
            snapshot_offset: inc.offset,
            snapshot_size: inc.size,
        };
        ident.save(&self.cfg.dir)?;
        if let Some(old) = old.filter(|o| o.snapshot != ident.snapshot) {
            let _ = fs::remove_file(self.cfg.dir.join("snapshots").join(old.snapshot));
        }
        let next = inc.offset + 1;
        self.seg = Some(create_segment(&self.cfg, next)?);
        (self.written, self.boundary, self.synced) = (next, next, next);
        self.scanner = Scanner::at(next);
        self.status.send_modify(|s| s.failed = None);
        self.shared.update(|st| {
            st.ident = Some(ident);
            (st.first, st.next) = (next, next);
            st.segments = [next].into();
            st.tail.clear();
            st.epoch += 1;
        });
        Ok(())
    }

    /// `+CONTINUE <replid>` with a new id: the old one becomes replid2, valid up to here.
    fn shift_replid(&mut self, replid: String) {
        let Some(mut ident) = self.shared.read().ident.clone() else {
            return;
        };
        if ident.replid.eq_ignore_ascii_case(&replid) {
            return;
        }
        info!(
            "Master replication ID changed to {replid}; previous ID {} valid up to offset {}",
            ident.replid,
            self.boundary - 1
        );
        ident.replid2 = std::mem::replace(&mut ident.replid, replid);
        ident.second_replid_offset = self.boundary as i64;
        if let Err(e) = ident.save(&self.cfg.dir) {
            self.fail(format!("saving the identity failed: {e:#}"));
        }
        self.shared.update(|st| {
            st.ident = Some(ident);
            st.epoch += 1;
        });
    }
}

fn verify_and_keep(inc: &Incoming, check: SnapshotCheck) -> Result<SnapshotFacts> {
    if let Some(e) = &inc.error {
        bail!("storing the snapshot failed: {e}");
    }
    let facts = check.finish()?;
    inc.file.sync_all().context("fsync of the snapshot")?;
    let path = inc.tmp.with_extension("");
    fs::rename(&inc.tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    sync_dir(path.parent().expect("snapshots dir"))?;
    Ok(facts)
}

fn create_segment(cfg: &StoreConfig, start: u64) -> Result<Segment> {
    let path = segment_path(&cfg.dir, start);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_len(0)?;
    sync_dir(&cfg.dir.join("log"))?;
    Ok(Segment {
        start,
        file,
        len: 0,
    })
}

/// Segment files in the log directory, by start offset, with their lengths.
fn list_segments(cfg: &StoreConfig) -> Result<Vec<(u64, u64)>> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(cfg.dir.join("log"))? {
        let entry = entry?;
        let name = entry.file_name();
        let start = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse().ok());
        if let Some(start) = start {
            segs.push((start, entry.metadata()?.len()));
        }
    }
    segs.sort_unstable();
    Ok(segs)
}

fn remove_segments(cfg: &StoreConfig) -> Result<()> {
    for (start, _) in list_segments(cfg)? {
        let path = segment_path(&cfg.dir, start);
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    sync_dir(&cfg.dir.join("log"))
}

/// The recovered log: segment starts, the open last segment, and the offset after its last
/// complete command.
struct Recovered {
    starts: Vec<u64>,
    last: Segment,
    next: u64,
}

impl Writer {
    pub(super) fn recover(
        shared: Arc<Shared>,
        cfg: StoreConfig,
    ) -> Result<(Writer, watch::Receiver<WriterStatus>)> {
        let ident = load_identity(&cfg);
        clean_snapshots(&cfg, ident.as_ref())?;
        let recovered = match &ident {
            Some(id) => Some(recover_log(&cfg, id.snapshot_offset + 1)?),
            None => {
                remove_segments(&cfg)?;
                None
            }
        };
        let next = recovered.as_ref().map_or(0, |r| r.next);
        let (status, rx) = watch::channel(WriterStatus {
            ack: ident.as_ref().map(|_| next - 1),
            ..WriterStatus::default()
        });
        if let (Some(id), Some(r)) = (&ident, &recovered) {
            info!(
                "Store recovered: replid {} snapshot at offset {}, backlog {}..{}",
                id.replid, id.snapshot_offset, r.starts[0], r.next
            );
        }
        shared.update(|st| {
            st.ident = ident;
            st.epoch = 1;
            if let Some(r) = &recovered {
                (st.first, st.next) = (r.starts[0], r.next);
                st.segments = r.starts.iter().copied().collect();
            }
        });
        let writer = Writer {
            shared,
            cfg,
            seg: recovered.map(|r| r.last),
            written: next,
            boundary: next,
            synced: next,
            scanner: Scanner::at(next),
            incoming: None,
            status,
        };
        Ok((writer, rx))
    }
}

/// The identity, if it names a complete snapshot; anything else means starting empty.
fn load_identity(cfg: &StoreConfig) -> Option<Identity> {
    let ident = match Identity::load(&cfg.dir.join("identity")) {
        Ok(ident) => ident?,
        Err(e) => {
            warn!("Ignoring the store's identity file: {e:#}; a full sync will follow");
            return None;
        }
    };
    let path = cfg.dir.join("snapshots").join(&ident.snapshot);
    match fs::metadata(&path) {
        Ok(m) if m.len() == ident.snapshot_size => Some(ident),
        _ => {
            warn!(
                "Snapshot {} is missing or incomplete; a full sync will follow",
                path.display()
            );
            None
        }
    }
}

/// Removes snapshots that were never completed, and any not in service.
fn clean_snapshots(cfg: &StoreConfig, ident: Option<&Identity>) -> Result<()> {
    for entry in fs::read_dir(cfg.dir.join("snapshots"))? {
        let entry = entry?;
        if ident.is_none_or(|id| entry.file_name().to_str() != Some(&id.snapshot)) {
            info!(
                "Removing {} (not the snapshot in service)",
                entry.path().display()
            );
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Finds the contiguous run of segments that holds offset `from` (the byte after the snapshot),
/// cuts a tail that is not a complete command, and drops whatever cannot be used.
fn recover_log(cfg: &StoreConfig, from: u64) -> Result<Recovered> {
    let segs = list_segments(cfg)?;
    let mut run: Vec<(u64, u64)> = Vec::new();
    for &(start, len) in &segs {
        let contiguous = match run.last() {
            None => start <= from,
            Some(&(s, l)) => s + l == start,
        };
        if !contiguous {
            break;
        }
        run.push((start, len));
    }
    for &(start, _) in &segs[run.len()..] {
        warn!("Removing log segment {start}: not contiguous with the log before it");
        fs::remove_file(segment_path(&cfg.dir, start))?;
    }
    let Some(&(start, len)) = run.last() else {
        warn!("The log does not reach the snapshot's offset; starting an empty log at {from}");
        return Ok(Recovered {
            starts: vec![from],
            last: create_segment(cfg, from)?,
            next: from,
        });
    };
    let next = last_command_end(&segment_path(&cfg.dir, start), start)?;
    if next < from {
        warn!("The log ends before the snapshot's offset; starting an empty log at {from}");
        remove_segments(cfg)?;
        return Ok(Recovered {
            starts: vec![from],
            last: create_segment(cfg, from)?,
            next: from,
        });
    }
    if next < start + len {
        warn!(
            "Cut {} bytes of an incomplete command at the end of the log",
            start + len - next
        );
    }
    let file = OpenOptions::new()
        .append(true)
        .open(segment_path(&cfg.dir, start))?;
    file.set_len(next - start)?;
    file.sync_all()?;
    let starts = run.iter().map(|&(s, _)| s).collect();
    Ok(Recovered {
        starts,
        last: Segment {
            start,
            file,
            len: next - start,
        },
        next,
    })
}

/// Scans a segment (which starts on a command) for the end of its last complete command.
fn last_command_end(path: &std::path::Path, start: u64) -> Result<u64> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut scanner = Scanner::at(start);
    let mut last = start;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(last);
        }
        let base = scanner.offset();
        if let Err(e) = scanner.scan(&buf[..n], |end, _| last = base + end as u64) {
            warn!("Log segment {}: {e}", path.display());
            return Ok(last);
        }
    }
}

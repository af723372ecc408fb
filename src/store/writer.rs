//! The store's writer thread: the only code that writes files, and the offset acknowledged
//! upstream (what it stored).
//!
//! It applies operations from the upstream link in order, batches what is queued, and only then
//! publishes: the ACK offset, and under `appendfsync always` (one fsync per batch) the offset
//! visible downstream too; under `everysec` and `no` the intake made the stream visible before
//! it arrived here. Offsets are published only up to the last complete command, the way a Redis replica forwards only applied commands, so a
//! downstream replica never sees half a command that a protocol error or a crash later cuts.
//!
//! It also owns the history: a snapshot from the main link puts a new history in service (the
//! log restarts after it), a refreshed one replaces the snapshot of the same history once the
//! log reaches its offset, and `+CONTINUE <new id>` shifts the replication IDs. Recovery
//! (`recover`) hands it what the directory held.

use std::fs;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::history;
use super::identity::Identity;
use super::index::Index;
use super::intake::Scanned;
use super::recover::{Reopened, recover};
use super::retention::{RestorePoint, Retention};
use super::segment::{Segment, create_segment, remove_segment, remove_segments};
use super::snapshot::{Incoming, Incomings, Slot};
use super::times;
use super::visible::Visible;
use super::{
    Fsync, Receiving, Shared, State, StoreConfig, Verification, segment_path, snapshot_path,
};
use crate::decode::SnapshotFacts;

pub(super) enum Op {
    BeginSnapshot {
        slot: Slot,
        replid: String,
        offset: u64,
    },
    SnapshotData(Slot, Bytes),
    FinishSnapshot(Slot, oneshot::Sender<Result<SnapshotFacts>>),
    AbortSnapshot(Slot),
    Continue(String, oneshot::Sender<()>),
    Stream(Scanned),
    Tick,
    Flush(oneshot::Sender<u64>),
    Close(oneshot::Sender<()>),
    /// Tests: the writer waits here until told to go on, as a slow disk would hold it.
    #[cfg(test)]
    Hold(std::sync::mpsc::Receiver<()>),
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

pub(super) struct Writer {
    shared: Arc<Shared>,
    cfg: StoreConfig,
    seg: Option<Segment>,
    /// Next offset after the bytes written to the current segment.
    written: u64,
    /// Next offset after the last complete command.
    boundary: u64,
    synced: u64,
    incoming: Incomings,
    status: watch::Sender<WriterStatus>,
    retention: Retention,
    /// The archive's log is being dropped unarchived (said once per stretch).
    archive_dropping: bool,
}

impl Writer {
    /// Recovers the store and makes its writer, with the status the upstream link watches.
    pub(super) fn open(
        shared: Arc<Shared>,
        cfg: StoreConfig,
    ) -> Result<(Writer, watch::Receiver<WriterStatus>)> {
        let mut retention = Retention::load(&cfg.dir, cfg.restore);
        let Reopened { seg, next, history } = recover(&shared, &cfg, &mut retention)?;
        let (status, rx) = watch::channel(WriterStatus {
            ack: history.then(|| next - 1),
            ..WriterStatus::default()
        });
        let mut writer = Writer {
            shared,
            cfg,
            seg,
            written: next,
            boundary: next,
            synced: next,
            incoming: Incomings::default(),
            status,
            retention,
            archive_dropping: false,
        };
        writer.plan_retention();
        Ok((writer, rx))
    }

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
            Op::BeginSnapshot {
                slot,
                replid,
                offset,
            } => self.begin_snapshot(slot, replid, offset),
            Op::SnapshotData(slot, data) => self.snapshot_data(slot, &data),
            Op::FinishSnapshot(slot, reply) => {
                let _ = reply.send(self.finish_snapshot(slot));
            }
            Op::AbortSnapshot(slot) => self.abort_snapshot(slot),
            Op::Continue(replid, done) => {
                self.shift_replid(replid);
                let _ = done.send(());
            }
            Op::Stream(data) => self.stream(data),
            Op::Tick => {
                match (&mut self.seg, self.cfg.fsync) {
                    (_, Fsync::Everysec) => self.sync(),
                    (Some(seg), _) => seg.checkpoint(),
                    (None, _) => {}
                }
                self.plan_retention();
            }
            Op::Flush(reply) => {
                self.sync();
                self.cut_incomplete_command();
                let _ = reply.send(self.boundary);
            }
            Op::Close(done) => return Some(done),
            #[cfg(test)]
            Op::Hold(go) => {
                let _ = go.recv();
            }
        }
        None
    }

    /// Whether the writer makes the stream visible downstream, after its fsync: under
    /// `always`. Otherwise the intake forwarded it before it reached the writer.
    fn publishes(&self) -> bool {
        !Visible::forwards(self.cfg.fsync)
    }

    /// Makes stored bytes acknowledgeable upstream and, under `always`, visible downstream.
    fn publish(&mut self) {
        if self.publishes() {
            self.sync();
        }
        self.adopt_refreshed_snapshot();
        self.trim();
        let visible = self.boundary;
        let has_snapshot = self.seg.is_some();
        let published = self.publishes()
            && self
                .shared
                .quietly(|st| st.stream.publish(&mut st.view, visible, has_snapshot));
        if published {
            self.shared.changed.send_modify(|v| *v = v.wrapping_add(1));
        } else if self.shared.disk_wait.swap(false, Ordering::AcqRel) {
            // A reader lagging behind the memory tail waits for these bytes on disk.
            self.shared.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
        self.status.send_if_modified(|s| {
            let ack = has_snapshot.then(|| visible.saturating_sub(1));
            let modified = s.ack != ack;
            s.ack = ack;
            modified
        });
    }

    fn sync(&mut self) {
        let Some(seg) = &mut self.seg else { return };
        if self.synced == self.written {
            return;
        }
        let timer = self.cfg.metrics.fsync_seconds.start_timer();
        let synced = seg.file.sync_data();
        timer.observe_duration();
        match synced {
            Ok(()) => {
                seg.checkpoint();
                self.synced = self.written;
            }
            Err(e) => self.fail(format!("fsync of the log segment failed: {e}")),
        }
    }

    /// Drops whole segments that neither the snapshot in service, the backlog size, nor a
    /// replica catching up after a full sync still needs.
    fn trim(&mut self) {
        let (dropped, first) = {
            let st = self.shared.read();
            let Some(ident) = &st.view.ident else { return };
            let mut keep = self.retention.log_from(ident).min(self.log_keep(&st));
            let starts: Vec<u64> = st.segments.iter().copied().collect();
            let droppable = |keep: u64| starts.windows(2).take_while(|w| w[1] <= keep).count();
            if droppable(keep) == 0 {
                return;
            }
            // Only when a segment would go: a tool (restore) may be reading it.
            if let Some(pin) = history::file_pins(&self.cfg.dir) {
                keep = keep.min(pin);
            }
            let next = st.view.next;
            keep = archive_hold(
                (&self.shared, &self.cfg, &mut self.archive_dropping),
                keep,
                next,
            );
            let n = droppable(keep);
            if n == 0 {
                return;
            }
            if self.archive_dropping {
                let needed = self.shared.archive_needs.load(Ordering::Acquire);
                let unarchived = starts[n].saturating_sub(needed.max(starts[0]));
                self.cfg.metrics.unarchived_dropped.inc_by(unarchived);
            }
            (starts[..n].to_vec(), starts[n])
        };
        self.shared.update(|st| {
            dropped.iter().for_each(|s| {
                st.segments.remove(s);
            });
            Visible::trimmed(&mut st.view, first);
        });
        for start in dropped {
            match remove_segment(&self.cfg, start) {
                Ok(()) => debug!("Backlog trimmed: removed log segment {start}"),
                Err(e) => warn!("Removing log segment {start}: {e}"),
            }
        }
    }

    /// The first offset the backlog size and the replicas catching up need, whatever retention
    /// for restore keeps.
    fn log_keep(&self, st: &State) -> u64 {
        let backlog_start = self.boundary.saturating_sub(self.cfg.backlog_size);
        st.pins
            .values()
            .fold(backlog_start, |keep, &pin| keep.min(pin))
    }

    /// Once a second: the restore points the window and the disk bound still allow, and the
    /// window they give, published for INFO and metrics.
    fn plan_retention(&mut self) {
        let (ident, segments, log_keep) = {
            let st = self.shared.read();
            let Some(ident) = st.view.ident.clone() else {
                return;
            };
            let starts: Vec<u64> = st.segments.iter().copied().collect();
            let ends = starts.iter().skip(1).copied().chain([self.written]);
            let segments: Vec<(u64, u64)> =
                starts.iter().zip(ends).map(|(&s, e)| (s, e - s)).collect();
            (ident, segments, self.log_keep(&st))
        };
        let window =
            self.retention
                .plan(&self.cfg.dir, &ident, &segments, log_keep, times::now_ms());
        self.shared.quietly(|st| st.view.restore = window);
    }

    pub(super) fn fail(&mut self, why: String) {
        warn!("{why}");
        self.cfg.metrics.write_errors.inc();
        self.status.send_modify(|s| s.failed = Some(why));
    }

    fn failed(&self) -> bool {
        self.status.borrow().failed.is_some()
    }

    fn stream(&mut self, chunk: Scanned) {
        if self.failed() {
            return;
        }
        if self.seg.is_none() {
            self.fail("no log segment is open: the stream cannot be stored".into());
            return;
        }
        let Scanned {
            data,
            ends,
            getacks,
            error,
            arrived_ms,
        } = chunk;
        let start = self.written;
        if self.append(data, &ends).is_ok() {
            if let Some(seg) = &mut self.seg {
                seg.arrived(arrived_ms);
            }
            if let Some(&end) = ends.last() {
                self.boundary = start + end as u64;
            }
            if getacks > 0 {
                self.status.send_modify(|s| s.getacks += getacks);
            }
        }
        if let Some(why) = error {
            self.fail(why);
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
        seg.index.update(&data);
        seg.len += data.len() as u64;
        let offset = self.written;
        self.written += data.len() as u64;
        self.shared.quietly(|st| st.stream.stored(offset, data));
        Ok(())
    }

    fn roll(&mut self) -> Result<()> {
        match (&mut self.seg, self.cfg.fsync) {
            (Some(seg), Fsync::No) => seg.checkpoint(),
            _ => self.sync(),
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

    /// A history whose log segment could not be started (the disk was full) gets one now.
    fn reopen_log(&mut self) {
        if self.seg.is_some() || self.shared.read().view.ident.is_none() {
            return;
        }
        let start = self.boundary;
        match create_segment(&self.cfg, start) {
            Ok(seg) => {
                self.seg = Some(seg);
                self.shared.update(|st| st.segments.insert(start));
            }
            Err(e) => self.fail(format!("starting log segment {start} failed: {e:#}")),
        }
    }

    /// Cuts bytes of a command that never completed, so the log ends on a command boundary and
    /// upstream resumes from there.
    fn cut_incomplete_command(&mut self) {
        self.status.send_modify(|s| s.failed = None);
        self.reopen_log();
        if let Some(seg) = &mut self.seg
            && self.written > self.boundary
        {
            let keep = self.boundary - seg.start;
            match seg.file.set_len(keep) {
                Ok(()) => {
                    seg.len = keep;
                    match Index::reopen(&segment_path(&self.cfg.dir, seg.start), keep) {
                        Ok(index) => seg.index = index,
                        Err(e) => warn!(
                            "Rebuilding the checksum index of segment {}: {e}",
                            seg.start
                        ),
                    }
                    self.written = self.boundary;
                    self.synced = self.synced.min(self.boundary);
                }
                Err(e) => self.fail(format!("cutting the log segment failed: {e}")),
            }
        }
        self.resume_here();
    }

    /// What downstream sees ends where the log does: bytes forwarded but not stored (the
    /// writer failed, or a command never completed) are taken back, and the link resumes from
    /// the boundary. A replica that already has them waits until they come again.
    fn resume_here(&mut self) {
        let (boundary, written) = (self.boundary, self.written);
        self.shared
            .update(|st| st.stream.take_back(&mut st.view, boundary, written));
    }
}

/// History: snapshots arriving and going into service, and replication ID shifts.
impl Writer {
    fn begin_snapshot(&mut self, slot: Slot, replid: String, offset: u64) {
        self.abort_snapshot(slot);
        let incoming = Incoming::create(&self.shared, replid, offset);
        *self.incoming.slot(slot) = Some(incoming);
        self.shared.update(|st| match slot {
            Slot::Main => st.view.receiving = Some(Receiving { received: 0 }),
            Slot::Refresh => st.view.refreshing = true,
        });
    }

    fn snapshot_data(&mut self, slot: Slot, data: &[u8]) {
        let Some(inc) = self.incoming.slot(slot) else {
            return;
        };
        inc.write(data);
        let size = inc.size;
        if slot == Slot::Main {
            self.shared
                .quietly(|st| st.view.receiving = Some(Receiving { received: size }));
        }
    }

    fn abort_snapshot(&mut self, slot: Slot) {
        if let Some(inc) = self.incoming.slot(slot).take() {
            inc.discard();
        }
        self.shared.update(|st| match slot {
            Slot::Main => st.view.receiving = None,
            Slot::Refresh => st.view.refreshing = false,
        });
    }

    fn finish_snapshot(&mut self, slot: Slot) -> Result<SnapshotFacts> {
        let inc = self
            .incoming
            .slot(slot)
            .take()
            .context("no snapshot was being received");
        let finished = inc.and_then(Incoming::finish);
        let result = match (slot, finished) {
            (Slot::Main, Ok((ident, facts))) => self.switch_to(ident).map(|()| facts),
            (Slot::Refresh, Ok((ident, facts))) => self.refreshed(ident).map(|()| facts),
            (_, Err(e)) => Err(e),
        };
        if slot == Slot::Main || result.is_err() {
            self.abort_snapshot(slot);
        }
        result
    }

    /// Puts a new history in service. The old log goes before the identity names the new
    /// snapshot: a crash in between leaves the old snapshot with an empty log, which is
    /// consistent, while the other order would let the old history's log pass for the new
    /// one's. A failure on the way leaves the same consistent state, never a state that lists
    /// deleted segments.
    fn switch_to(&mut self, ident: Identity) -> Result<()> {
        self.seg = None;
        let committed = remove_segments(&self.cfg).and_then(|()| ident.save(&self.cfg.dir));
        if let Err(e) = committed {
            self.remove_snapshot(&ident.snapshot);
            let old = self.shared.read().view.ident.clone();
            self.restart_log(old);
            return Err(e);
        }
        self.remove_old_snapshot(&ident);
        self.retention.reset(&self.cfg.dir);
        if let Some(refresh) = self.incoming.refresh.take() {
            refresh.discard();
        }
        self.drop_refreshed();
        self.restart_log(Some(ident));
        self.status.send_modify(|s| s.failed = None);
        Ok(())
    }

    /// An empty log right after the snapshot of `ident`, a new history for the readers. A new
    /// snapshot was verified as it arrived; the one already in service keeps its standing.
    fn restart_log(&mut self, ident: Option<Identity>) {
        let Some(next) = ident.as_ref().map(|i| i.snapshot_offset + 1) else {
            return;
        };
        self.seg = match create_segment(&self.cfg, next) {
            Ok(seg) => Some(seg),
            Err(e) => {
                self.fail(format!("starting log segment {next} failed: {e:#}"));
                None
            }
        };
        (self.written, self.boundary, self.synced) = (next, next, next);
        let open = self.seg.is_some();
        self.shared.update(|st| {
            let keep = st.view.verification.clone();
            let same =
                st.view.ident.as_ref().map(|i| &i.snapshot) == ident.as_ref().map(|i| &i.snapshot);
            st.view.ident = ident;
            st.stream.new_history(&mut st.view, next);
            st.segments = if open {
                [next].into()
            } else {
                Default::default()
            };
            st.view.refreshing = false;
            st.view.verification = if same { keep } else { Verification::Verified };
        });
    }

    fn refreshed(&mut self, fresh: Identity) -> Result<()> {
        let current = self.shared.read().view.ident.clone();
        if current
            .as_ref()
            .is_none_or(|c| !c.replid.eq_ignore_ascii_case(&fresh.replid))
        {
            self.remove_snapshot(&fresh.snapshot);
            bail!("the master's replication ID changed during the snapshot refresh");
        }
        self.drop_refreshed();
        self.incoming.refreshed = Some(fresh);
        self.adopt_refreshed_snapshot();
        Ok(())
    }

    /// A refreshed snapshot taken at X1 goes into service once the log holds X1+1, so a
    /// replica that full-syncs from it finds the stream that follows it.
    fn adopt_refreshed_snapshot(&mut self) {
        let Some(fresh) = &self.incoming.refreshed else {
            return;
        };
        if fresh.snapshot_offset + 1 > self.boundary {
            return;
        }
        let fresh = self.incoming.refreshed.take().expect("checked");
        let Some(mut ident) = self.shared.read().view.ident.clone() else {
            return;
        };
        let old = ident.clone();
        ident.snapshot = fresh.snapshot;
        ident.snapshot_offset = fresh.snapshot_offset;
        ident.snapshot_size = fresh.snapshot_size;
        if let Err(e) = ident.save(&self.cfg.dir) {
            warn!("Keeping the previous snapshot: saving the identity failed: {e:#}");
            self.remove_snapshot(&ident.snapshot);
            self.shared.update(|st| st.view.refreshing = false);
            return;
        }
        info!(
            "Snapshot refreshed: serving the snapshot taken at offset {} ({} bytes) instead of offset {}",
            ident.snapshot_offset, ident.snapshot_size, old.snapshot_offset
        );
        let sound = !matches!(
            self.shared.read().view.verification,
            Verification::Corrupt(_)
        );
        if !(sound && self.retention.retire(&self.cfg.dir, RestorePoint::of(&old))) {
            self.remove_old_snapshot(&ident);
        }
        self.shared.update(|st| {
            st.view.ident = Some(ident);
            st.view.refreshing = false;
            st.view.verification = Verification::Verified;
        });
    }

    fn drop_refreshed(&mut self) {
        if let Some(old) = self.incoming.refreshed.take() {
            self.remove_snapshot(&old.snapshot);
        }
    }

    /// Replicas still sending the old snapshot keep reading it: an open file outlives unlink.
    fn remove_old_snapshot(&self, current: &Identity) {
        let old = self.shared.read().view.ident.clone();
        if let Some(old) = old.filter(|o| o.snapshot != current.snapshot) {
            self.remove_snapshot(&old.snapshot);
        }
    }

    /// Best effort: a snapshot file left behind is removed by the next recovery.
    fn remove_snapshot(&self, name: &str) {
        let _ = fs::remove_file(snapshot_path(&self.cfg.dir, name));
    }

    /// `+CONTINUE <replid>` with a new id: the old one becomes replid2, valid up to here.
    fn shift_replid(&mut self, replid: String) {
        let Some(mut ident) = self.shared.read().view.ident.clone() else {
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
        self.drop_refreshed();
        self.shared
            .update(|st| Visible::new_id(&mut st.view, ident));
    }
}

/// Keeps the log the archive has not taken yet (`Store::archive_needs`), unless that is
/// more than --restore-max-disk: then it goes, said once per stretch (`dropping`).
fn archive_hold(
    (shared, cfg, dropping): (&Shared, &StoreConfig, &mut bool),
    keep: u64,
    next: u64,
) -> u64 {
    let needed = shared.archive_needs.load(Ordering::Acquire);
    if needed >= keep {
        *dropping = false;
        return keep;
    }
    let unarchived = next.saturating_sub(needed);
    match cfg.restore.max_disk {
        Some(max) if unarchived > max => {
            if !*dropping {
                *dropping = true;
                warn!(
                    "The log not archived yet ({unarchived} bytes from offset {needed}) is over --restore-max-disk {max} bytes: the store drops it, and the archive begins a new line after it"
                );
            }
            keep
        }
        _ => {
            *dropping = false;
            needed
        }
    }
}

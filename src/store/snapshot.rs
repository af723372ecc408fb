//! Snapshots arriving from upstream, and how they go into service.
//!
//! Two can arrive at once: the main link's (a full sync: new history, the log restarts after
//! it) and a refresh (a fresh snapshot of the same history, fetched on a second connection so
//! the log before it can be dropped). Each is written as `.tmp`, verified while it arrives, and
//! renamed only when complete; the identity file then names it, which is the commit point.

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tracing::{info, warn};

use super::identity::{Identity, NULL_REPLID, sync_dir};
use super::writer::{Writer, create_segment, remove_segments};
use super::{Receiving, Shared, Verification, snapshot_path};
use crate::decode::{
    Follow, FollowReader, SnapshotCheck, SnapshotFacts, SnapshotStats, analyze, counts,
};
use crate::feed::Scanner;

/// Which upstream connection a snapshot comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The replication link's own full sync.
    Main,
    /// A fresh snapshot of the same history, on a second connection.
    Refresh,
}

pub(super) struct Incoming {
    tmp: PathBuf,
    name: String,
    file: Option<File>,
    /// Lets the decoder thread read the file as it is written.
    follow: Follow,
    replid: String,
    offset: u64,
    size: u64,
    check: SnapshotCheck,
    error: Option<String>,
}

impl Incoming {
    fn create(shared: &Arc<Shared>, replid: String, offset: u64) -> Incoming {
        let name = format!("{replid}-{offset}.rdb");
        let tmp = snapshot_path(&shared.dir, &format!("{name}.tmp"));
        let (file, error) = match File::create(&tmp) {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(format!("creating {}: {e}", tmp.display()))),
        };
        let follow = Follow::default();
        if let Ok(reader) = File::open(&tmp) {
            spawn_decoder(
                shared.clone(),
                name.clone(),
                follow.reader(reader),
                follow.clone(),
            );
        }
        let check = SnapshotCheck::default();
        Incoming {
            tmp,
            name,
            file,
            follow,
            replid,
            offset,
            size: 0,
            check,
            error,
        }
    }

    fn write(&mut self, data: &[u8]) {
        if let (None, Some(f)) = (&self.error, &mut self.file) {
            match f.write_all(data) {
                Ok(()) => self.follow.written(data.len() as u64),
                Err(e) => self.error = Some(format!("writing {}: {e}", self.tmp.display())),
            }
        }
        self.check.update(data);
        self.size += data.len() as u64;
    }

    /// Verifies, fsyncs and renames the snapshot into place; removes it if anything fails.
    fn finish(mut self) -> Result<(Identity, SnapshotFacts)> {
        let check = std::mem::take(&mut self.check);
        let kept = self.keep(check);
        if kept.is_err() {
            self.follow.abort();
            let _ = fs::remove_file(&self.tmp);
        } else {
            self.follow.done();
        }
        let facts = kept?;
        let ident = Identity {
            replid: self.replid,
            replid2: NULL_REPLID.into(),
            second_replid_offset: -1,
            snapshot: self.name,
            snapshot_offset: self.offset,
            snapshot_size: self.size,
        };
        Ok((ident, facts))
    }

    fn keep(&self, check: SnapshotCheck) -> Result<SnapshotFacts> {
        if let Some(e) = &self.error {
            bail!("storing the snapshot failed: {e}");
        }
        let facts = check.finish()?;
        let file = self.file.as_ref().context("snapshot file missing")?;
        file.sync_all().context("fsync of the snapshot")?;
        let path = self.tmp.with_extension("");
        fs::rename(&self.tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        sync_dir(path.parent().expect("snapshots dir"))?;
        Ok(facts)
    }

    fn discard(self) {
        self.follow.abort();
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Snapshots being received, and a refreshed one waiting for the log to reach its offset.
#[derive(Default)]
pub(super) struct Incomings {
    main: Option<Incoming>,
    refresh: Option<Incoming>,
    refreshed: Option<Identity>,
}

impl Incomings {
    fn slot(&mut self, slot: Slot) -> &mut Option<Incoming> {
        match slot {
            Slot::Main => &mut self.main,
            Slot::Refresh => &mut self.refresh,
        }
    }
}

impl Writer {
    pub(super) fn begin_snapshot(&mut self, slot: Slot, replid: String, offset: u64) {
        self.abort_snapshot(slot);
        let incoming = Incoming::create(&self.shared, replid, offset);
        *self.incoming.slot(slot) = Some(incoming);
        self.shared.update(|st| match slot {
            Slot::Main => st.view.receiving = Some(Receiving { received: 0 }),
            Slot::Refresh => st.view.refreshing = true,
        });
    }

    pub(super) fn snapshot_data(&mut self, slot: Slot, data: &[u8]) {
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

    pub(super) fn abort_snapshot(&mut self, slot: Slot) {
        if let Some(inc) = self.incoming.slot(slot).take() {
            inc.discard();
        }
        self.shared.update(|st| match slot {
            Slot::Main => st.view.receiving = None,
            Slot::Refresh => st.view.refreshing = false,
        });
    }

    pub(super) fn finish_snapshot(&mut self, slot: Slot) -> Result<SnapshotFacts> {
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
        self.scanner = Scanner::at(next);
        let open = self.seg.is_some();
        self.shared.update(|st| {
            let keep = st.view.verification.clone();
            let same =
                st.view.ident.as_ref().map(|i| &i.snapshot) == ident.as_ref().map(|i| &i.snapshot);
            st.view.ident = ident;
            (st.view.first, st.view.next) = (next, next);
            st.segments = if open {
                [next].into()
            } else {
                Default::default()
            };
            st.tail.clear();
            st.view.epoch += 1;
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
    pub(super) fn adopt_refreshed_snapshot(&mut self) {
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
        self.remove_old_snapshot(&ident);
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
    pub(super) fn shift_replid(&mut self, replid: String) {
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
        self.shared.update(|st| {
            st.view.ident = Some(ident);
            st.view.epoch += 1;
        });
    }
}

/// Decodes a snapshot on its own thread and files what it learned under the snapshot's name.
pub(super) fn spawn_decoder(
    shared: Arc<Shared>,
    name: String,
    reader: FollowReader,
    follow: Follow,
) {
    let spawned = std::thread::Builder::new()
        .name("rdb-decoder".into())
        .spawn(move || {
            let stats = analyze(reader);
            if follow.aborted() {
                return;
            }
            match &stats.error {
                None => info!(
                    "Snapshot {name} decoded: {} keys in {} databases (RDB version {}){}",
                    stats.keys(),
                    stats.dbs.len(),
                    stats.rdb_version,
                    not_decoded_note(&stats)
                ),
                Some(e) => warn!("Snapshot {name}: {e}; its statistics are incomplete"),
            }
            shared.file_stats(name, stats);
        });
    if let Err(e) = spawned {
        warn!("Cannot start the snapshot decoder: {e}");
    }
}

fn not_decoded_note(stats: &SnapshotStats) -> String {
    if stats.not_decoded.is_empty() {
        return String::new();
    }
    format!(
        "; counted by type only: {}",
        counts(&stats.not_decoded, ", ")
    )
}

//! Snapshots arriving from upstream, as files.
//!
//! Two can arrive at once: the main link's (a full sync: new history, the log restarts after
//! it) and a refresh (a fresh snapshot of the same history, fetched on a second connection so
//! the log before it can be dropped). Each is written as `.tmp`, decoded and verified while it
//! arrives, and renamed only when complete; the writer then names it in the identity file, the
//! commit point (see `writer`).

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tracing::{info, warn};

use super::identity::{Identity, NULL_REPLID, sync_dir};
use super::{Shared, snapshot_path};
use crate::decode::{
    Follow, FollowReader, SnapshotCheck, SnapshotFacts, SnapshotStats, analyze, counts,
};

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
    pub(super) size: u64,
    check: SnapshotCheck,
    error: Option<String>,
}

impl Incoming {
    pub(super) fn create(shared: &Arc<Shared>, replid: String, offset: u64) -> Incoming {
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

    pub(super) fn write(&mut self, data: &[u8]) {
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
    pub(super) fn finish(mut self) -> Result<(Identity, SnapshotFacts)> {
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

    pub(super) fn discard(self) {
        self.follow.abort();
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Snapshots being received, and a refreshed one waiting for the log to reach its offset.
#[derive(Default)]
pub(super) struct Incomings {
    main: Option<Incoming>,
    pub(super) refresh: Option<Incoming>,
    pub(super) refreshed: Option<Identity>,
}

impl Incomings {
    pub(super) fn slot(&mut self, slot: Slot) -> &mut Option<Incoming> {
        match slot {
            Slot::Main => &mut self.main,
            Slot::Refresh => &mut self.refresh,
        }
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

//! The log's segment files, each with its checksum index and time index beside it: made,
//! listed and removed here, by the writer (which appends), recovery (which cuts and reopens)
//! and the readers of the history (which list them).

use std::fs::{self, File, OpenOptions};

use anyhow::{Context, Result};
use tracing::warn;

use super::identity::sync_dir;
use super::index::{Index, index_path};
use super::times::{self, Times};
use super::{StoreConfig, segment_path};

pub(super) struct Segment {
    pub(super) start: u64,
    pub(super) file: File,
    pub(super) len: u64,
    pub(super) index: Index,
    pub(super) times: Times,
}

impl Segment {
    /// A checkpoint in the segment's index; a failure only leaves more of the tail unchecked.
    pub(super) fn checkpoint(&mut self) {
        if let Err(e) = self.index.mark(self.len) {
            warn!(
                "Writing the checksum index of log segment {}: {e}",
                self.start
            );
        }
        if let Err(e) = self.times.mark(self.len) {
            warn!("Writing the time index of log segment {}: {e}", self.start);
        }
    }

    /// Stream bytes that arrived from upstream at `ms` are written: the time index learns it.
    pub(super) fn arrived(&mut self, ms: u64) {
        if let Err(e) = self.times.arrived(self.len, ms) {
            warn!("Writing the time index of log segment {}: {e}", self.start);
        }
    }
}

pub(super) fn create_segment(cfg: &StoreConfig, start: u64) -> Result<Segment> {
    let path = segment_path(&cfg.dir, start);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_len(0)?;
    let index = Index::create(&path)
        .with_context(|| format!("creating the index of {}", path.display()))?;
    let times = Times::start(&path)
        .with_context(|| format!("creating the time index of {}", path.display()))?;
    sync_dir(&cfg.dir.join("log"))?;
    Ok(Segment {
        start,
        file,
        len: 0,
        index,
        times,
    })
}

/// Segment files in the log directory, by start offset, with their lengths.
pub(super) fn list_segments(dir: &std::path::Path) -> Result<Vec<(u64, u64)>> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir.join("log"))? {
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

/// Removes every segment and index file of the log.
pub(super) fn remove_segments(cfg: &StoreConfig) -> Result<()> {
    for entry in fs::read_dir(cfg.dir.join("log"))? {
        let path = entry?.path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("seg" | "idx" | "time")
        ) {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    sync_dir(&cfg.dir.join("log"))
}

/// Removes one segment and its index.
pub(super) fn remove_segment(cfg: &StoreConfig, start: u64) -> std::io::Result<()> {
    let path = segment_path(&cfg.dir, start);
    match fs::remove_file(index_path(&path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    times::remove(&path)?;
    fs::remove_file(path)
}

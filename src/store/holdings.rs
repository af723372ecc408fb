//! What a store holds, for its archive (`archive`): the snapshots and the sealed log segments
//! the uploader reads, and a store laid out from an archive's files for a restore.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::identity::Identity;
use super::index::index_path;
use super::retention::{RestorePoint, save_points};
use super::times::times_path;
use super::{segment, segment_path, snapshot_path};

/// What a store holds, for its archive: the identity, the snapshots a restore can start from
/// (the restore points whose file is complete and whose log is kept, then the one in service)
/// and the log's sealed segments, (start, length) in order: all but the last, still written.
pub struct Holdings {
    pub ident: Identity,
    pub snapshots: Vec<RestorePoint>,
    pub sealed: Vec<(u64, u64)>,
    /// Where the log starts (after the snapshot in service while it holds nothing).
    pub log_first: u64,
}

/// The store's holdings, `None` before a snapshot is in service.
pub fn holdings(dir: &Path) -> Result<Option<Holdings>> {
    let Some(ident) = Identity::load(&dir.join("identity"))? else {
        return Ok(None);
    };
    let mut segments = segment::list_segments(dir)?;
    let log_first = segments.first().map_or(ident.snapshot_offset + 1, |s| s.0);
    segments.pop();
    let mut snapshots: Vec<_> = super::restore_points(dir)
        .into_iter()
        .filter(|p| {
            let complete =
                std::fs::metadata(snapshot_path(dir, &p.name)).is_ok_and(|m| m.len() == p.size);
            complete && p.offset < ident.snapshot_offset && p.offset + 1 >= log_first
        })
        .collect();
    snapshots.sort_by_key(|p| p.offset);
    snapshots.push(RestorePoint::of(&ident));
    Ok(Some(Holdings {
        ident,
        snapshots,
        sealed: segments,
        log_first,
    }))
}

/// The files of one log segment: its bytes, its checksum index, its time index.
pub fn segment_files(dir: &Path, start: u64) -> [PathBuf; 3] {
    let log = segment_path(dir, start);
    let (index, times) = (index_path(&log), times_path(&log));
    [log, index, times]
}

/// A stored snapshot's file.
pub fn snapshot_file(dir: &Path, name: &str) -> PathBuf {
    snapshot_path(dir, name)
}

/// Makes `dir` a store holding what an archive gave (its snapshot and log files already in
/// place): the identity names `current`, the restore points list `older`.
pub fn stage(dir: &Path, current: Identity, older: &[RestorePoint]) -> Result<()> {
    save_points(dir, older)?;
    current.save(dir)
}

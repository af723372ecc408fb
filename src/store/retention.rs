//! Retention for restore (`--restore-window`, `--restore-max-disk`): which older snapshots of
//! the history in service are kept, so that any moment of the window has a snapshot at or
//! before it and the log from there on. Without a window a refreshed snapshot replaces the old
//! one at once, as before; with one, the old snapshot becomes a restore point and stays while
//! some moment of the window needs it, and while the store fits in the disk bound. When the
//! bound wins, the oldest points go first: the window shrinks, and says so once.
//!
//! `<dir>/restore-points` lists the kept snapshots, one `<offset> <size> <name>` line each,
//! rewritten whole (tmp, fsync, rename) whenever the list changes; a point whose file is missing
//! or has another size, or whose log is gone, is dropped at start.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::identity::{Identity, sync_dir};
use super::{history, segment_path, snapshot_path, times};
use crate::config::RestoreRetention;

/// A snapshot of the history in service that a restore can start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    pub name: String,
    /// Upstream's offset at the snapshot: the log after it starts at `offset + 1`.
    pub offset: u64,
    pub size: u64,
}

impl RestorePoint {
    pub(super) fn of(ident: &Identity) -> RestorePoint {
        RestorePoint {
            name: ident.snapshot.clone(),
            offset: ident.snapshot_offset,
            size: ident.snapshot_size,
        }
    }
}

/// The window really restorable: from the oldest restore point on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    pub from_offset: u64,
    /// When the relay stored the first bytes after that point; `None` until it stored any.
    pub from_ms: Option<u64>,
    /// Restore points kept besides the snapshot in service.
    pub kept: usize,
    /// Bytes the snapshots and the log take.
    pub disk_bytes: u64,
    /// The disk bound dropped a point the window still needed, and the window has not grown
    /// back to its configured length since.
    pub shrunk: bool,
}

/// Reads the list of kept points of `dir`, as written; `restore` checks each before use.
pub fn restore_points(dir: &Path) -> Vec<RestorePoint> {
    let Ok(text) = fs::read_to_string(list_path(dir)) else {
        return Vec::new();
    };
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<RestorePoint> {
    let mut fields = line.split(' ');
    let offset = fields.next()?.parse().ok()?;
    let size = fields.next()?.parse().ok()?;
    let name = fields.next()?.to_string();
    let plain = !name.is_empty() && !name.contains('/') && fields.next().is_none();
    plain.then_some(RestorePoint { name, offset, size })
}

fn list_path(dir: &Path) -> std::path::PathBuf {
    dir.join("restore-points")
}

/// The writer's side: the kept points, oldest first, with the time of each once known.
pub(super) struct Retention {
    cfg: RestoreRetention,
    kept: Vec<(RestorePoint, Option<u64>)>,
    /// The time of the snapshot in service, by its offset.
    current_ms: Option<(u64, u64)>,
    shrunk: bool,
}

impl Retention {
    /// The list as the directory holds it; `recovered` checks it against the log.
    pub(super) fn load(dir: &Path, cfg: RestoreRetention) -> Retention {
        let kept = restore_points(dir).into_iter().map(|p| (p, None)).collect();
        Retention {
            cfg,
            kept,
            current_ms: None,
            shrunk: false,
        }
    }

    /// Snapshot file names recovery must not remove.
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.kept.iter().map(|(p, _)| p.name.as_str())
    }

    /// Keeps the points that a restore can still use: a complete file, older than the snapshot
    /// in service, with the log from its offset on. The others (and all, without a window) go.
    pub(super) fn recovered(&mut self, dir: &Path, current: Option<&Identity>, log_first: u64) {
        let before = self.kept.len();
        let window = self.cfg.window.is_some();
        self.kept.retain(|(p, _)| {
            let complete =
                fs::metadata(snapshot_path(dir, &p.name)).is_ok_and(|m| m.len() == p.size);
            let usable = complete
                && window
                && current.is_some_and(|c| p.offset < c.snapshot_offset)
                && p.offset + 1 >= log_first;
            if !usable {
                info!(
                    "Restore point at offset {} ({}) is dropped: {}",
                    p.offset,
                    p.name,
                    if window {
                        "its snapshot or its log is gone"
                    } else {
                        "no --restore-window"
                    }
                );
                let _ = fs::remove_file(snapshot_path(dir, &p.name));
            }
            usable
        });
        if self.kept.len() != before {
            self.save(dir);
        }
    }

    /// The snapshot `old` leaves service: kept as a restore point when there is a window.
    pub(super) fn retire(&mut self, dir: &Path, old: RestorePoint) -> bool {
        if self.cfg.window.is_none() {
            return false;
        }
        info!(
            "Keeping the snapshot at offset {} as a restore point (--restore-window)",
            old.offset
        );
        self.kept.push((old, None));
        self.save(dir);
        true
    }

    /// A new history: the log of every kept point is gone with the old one.
    pub(super) fn reset(&mut self, dir: &Path) {
        if self.kept.is_empty() {
            return;
        }
        warn!(
            "A new replication history starts: the {} restore points of the old one are removed",
            self.kept.len()
        );
        for (p, _) in self.kept.drain(..) {
            let _ = fs::remove_file(snapshot_path(dir, &p.name));
        }
        self.current_ms = None;
        self.save(dir);
    }

    /// The first offset the log must keep for the points: after the oldest one.
    pub(super) fn log_from(&self, current: &Identity) -> u64 {
        self.kept
            .first()
            .map_or(current.snapshot_offset, |(p, _)| p.offset)
            + 1
    }

    /// Drops the points the window no longer needs, then the oldest while the store is over
    /// the disk bound; `segments` are the log's (start, length) and `log_keep` the first offset
    /// the backlog and the replicas need anyway. Returns the window that remains.
    pub(super) fn plan(
        &mut self,
        dir: &Path,
        current: &Identity,
        segments: &[(u64, u64)],
        log_keep: u64,
        now_ms: u64,
    ) -> Window {
        let before = self.kept.len();
        // A restore reading from a point holds a pin at the offset after it: that point and
        // the newer ones stay until it is done.
        let pinned = (!self.kept.is_empty())
            .then(|| history::file_pins(dir))
            .flatten();
        if let Some(window) = self.cfg.window {
            let horizon = now_ms.saturating_sub(window.as_millis() as u64);
            while self.droppable(pinned)
                && self
                    .time_of(dir, 1, current, segments)
                    .is_some_and(|t| t <= horizon)
            {
                self.drop_oldest(dir, "the window no longer needs it");
            }
            self.bound_disk(dir, current, (segments, log_keep), horizon, pinned);
        }
        if self.kept.len() != before {
            self.save(dir);
        }
        let from_ms = self.time_of(dir, 0, current, segments);
        if self.shrunk
            && let (Some(w), Some(t)) = (self.cfg.window, from_ms)
            && t <= now_ms.saturating_sub(w.as_millis() as u64)
        {
            info!("The restore window is back to its configured length");
            self.shrunk = false;
        }
        Window {
            from_offset: self
                .kept
                .first()
                .map_or(current.snapshot_offset, |(p, _)| p.offset),
            from_ms,
            kept: self.kept.len(),
            disk_bytes: self.disk(current, segments, log_keep),
            shrunk: self.shrunk,
        }
    }

    /// Whether the oldest point may go: there is one, and no restore reads from it.
    fn droppable(&self, pinned: Option<u64>) -> bool {
        self.kept
            .first()
            .is_some_and(|(p, _)| pinned.is_none_or(|pin| p.offset + 1 < pin))
    }

    fn bound_disk(
        &mut self,
        dir: &Path,
        current: &Identity,
        (segments, log_keep): (&[(u64, u64)], u64),
        horizon: u64,
        pinned: Option<u64>,
    ) {
        let Some(max) = self.cfg.max_disk else { return };
        while self.droppable(pinned) && self.disk(current, segments, log_keep) > max {
            let dropped = self.kept[0].0.offset;
            self.drop_oldest(dir, "the store is over --restore-max-disk");
            if !self.shrunk {
                self.shrunk = true;
                let from = self.time_of(dir, 0, current, segments);
                warn!(
                    "Restore window shrunk by --restore-max-disk {max} bytes: the snapshot at offset {dropped} is dropped; restorable from {} (offset {}) instead of {}",
                    from.map_or("the snapshot in service".into(), times::utc),
                    self.log_from(current) - 1,
                    times::utc(horizon)
                );
            }
        }
    }

    /// The store's bytes with the current points: their snapshots, the one in service, and
    /// the log segments from the one holding the first offset kept.
    fn disk(&self, current: &Identity, segments: &[(u64, u64)], log_keep: u64) -> u64 {
        let keep = self.log_from(current).min(log_keep);
        let snapshots: u64 =
            self.kept.iter().map(|(p, _)| p.size).sum::<u64>() + current.snapshot_size;
        let log: u64 = segments
            .iter()
            .enumerate()
            .filter(|(i, _)| segments.get(i + 1).is_none_or(|n| n.0 > keep))
            .map(|(_, (_, len))| len)
            .sum();
        snapshots + log
    }

    fn drop_oldest(&mut self, dir: &Path, why: &str) {
        let (p, _) = self.kept.remove(0);
        info!("Restore point at offset {} is removed: {why}", p.offset);
        let _ = fs::remove_file(snapshot_path(dir, &p.name));
    }

    /// When the relay stored the first bytes after point `i` (the snapshot in service past the
    /// kept ones): the first time mark past its offset. Cached once found.
    fn time_of(
        &mut self,
        dir: &Path,
        i: usize,
        current: &Identity,
        segments: &[(u64, u64)],
    ) -> Option<u64> {
        if let Some((_, Some(t))) = self.kept.get(i) {
            return Some(*t);
        }
        let offset = self
            .kept
            .get(i)
            .map_or(current.snapshot_offset, |(p, _)| p.offset);
        if i >= self.kept.len()
            && let Some((at, t)) = self.current_ms
            && at == offset
        {
            return Some(t);
        }
        let t = first_mark_after(dir, segments, offset)?;
        match self.kept.get_mut(i) {
            Some((_, cached)) => *cached = Some(t),
            None => self.current_ms = Some((offset, t)),
        }
        Some(t)
    }

    fn save(&self, dir: &Path) {
        let points: Vec<_> = self.kept.iter().map(|(p, _)| p.clone()).collect();
        if let Err(e) = save_points(dir, &points) {
            warn!("Writing the list of restore points: {e:#}");
        }
    }
}

/// Writes `<dir>/restore-points`: the retention's list, or an archive's for a store rebuilt
/// from it.
pub(super) fn save_points(dir: &Path, points: &[RestorePoint]) -> Result<()> {
    let text: String = points
        .iter()
        .map(|p| format!("{} {} {}\n", p.offset, p.size, p.name))
        .collect();
    write_atomically(dir, &text)
}

/// The time of the first mark of the log past `offset`.
fn first_mark_after(dir: &Path, segments: &[(u64, u64)], offset: u64) -> Option<u64> {
    let from = segments
        .iter()
        .rposition(|&(s, _)| s <= offset + 1)
        .unwrap_or(0);
    segments[from..].iter().find_map(|&(start, _)| {
        times::read(&segment_path(dir, start))
            .into_iter()
            .find(|&(len, _)| start + len > offset)
            .map(|(_, ms)| ms)
    })
}

fn write_atomically(dir: &Path, text: &str) -> Result<()> {
    let path = list_path(dir);
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    sync_dir(dir)
}

//! Recovery of the store on start: the identity must name a complete snapshot, the log must be
//! a contiguous run of segments from the snapshot's offset on, and it must end on a complete
//! command. What fails a check is cut or discarded with a log line, never served.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::sync::Arc;

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::identity::Identity;
use super::index::{Damage, Index, trusted_len};
use super::retention::Retention;
use super::segment::{Segment, create_segment, list_segments, remove_segment, remove_segments};
use super::snapshot::spawn_decoder;
use super::times::Times;
use super::verify::verify_in_background;
use super::{Shared, StoreConfig, segment_path, snapshot_path};
use crate::decode::Follow;
use crate::feed::Scanner;

/// The recovered log: segment starts, the open last segment, and the offset after its last
/// complete command.
struct Recovered {
    starts: Vec<u64>,
    last: Segment,
    next: u64,
}

/// What a store directory holds after recovery: the open last segment, if there is a history,
/// and the offset after the last complete command. The recovered state is already published.
pub(super) struct Reopened {
    pub(super) seg: Option<Segment>,
    pub(super) next: u64,
    /// Whether a snapshot is in service, so there is an offset to acknowledge.
    pub(super) history: bool,
}

/// Recovers the store in `cfg.dir` and publishes what it found; starts the decoding and the
/// verification of the snapshot in service.
pub(super) fn recover(
    shared: &Arc<Shared>,
    cfg: &StoreConfig,
    retention: &mut Retention,
) -> Result<Reopened> {
    let ident = load_identity(cfg);
    clean_snapshots(cfg, ident.as_ref(), retention)?;
    let recovered = match &ident {
        Some(id) => Some(recover_log(cfg, id.snapshot_offset + 1)?),
        None => {
            remove_segments(cfg)?;
            None
        }
    };
    let next = recovered.as_ref().map_or(0, |r| r.next);
    let log_first = recovered.as_ref().map_or(0, |r| r.starts[0]);
    retention.recovered(&cfg.dir, ident.as_ref(), log_first);
    if let Some(id) = &ident {
        decode_in_background(shared, cfg, id);
    }
    let checked = ident.as_ref().and_then(|id| {
        let path = snapshot_path(&cfg.dir, &id.snapshot);
        Some((
            id.snapshot.clone(),
            File::open(path).ok()?,
            id.snapshot_size,
        ))
    });
    if let (Some(id), Some(r)) = (&ident, &recovered) {
        info!(
            "Store recovered: replid {} snapshot at offset {}, backlog {}..{}",
            id.replid, id.snapshot_offset, r.starts[0], r.next
        );
    }
    let history = ident.is_some();
    shared.update(|st| {
        let log = recovered.as_ref().map(|r| (r.starts[0], r.next));
        st.stream.recovered(&mut st.view, ident, log);
        if let Some(r) = &recovered {
            st.segments = r.starts.iter().copied().collect();
        }
    });
    if let Some((name, file, size)) = checked {
        verify_in_background(shared.clone(), name, file, size);
    }
    Ok(Reopened {
        seg: recovered.map(|r| r.last),
        next,
        history,
    })
}

/// The snapshot in service is decoded again after a restart, for INFO and metrics.
fn decode_in_background(shared: &Arc<Shared>, cfg: &StoreConfig, ident: &Identity) {
    match File::open(snapshot_path(&cfg.dir, &ident.snapshot)) {
        Ok(file) => {
            let follow = Follow::complete(ident.snapshot_size);
            spawn_decoder(
                shared.clone(),
                ident.snapshot.clone(),
                follow.reader(file),
                follow,
            );
        }
        Err(e) => warn!("Cannot decode snapshot {}: {e}", ident.snapshot),
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
    let path = snapshot_path(&cfg.dir, &ident.snapshot);
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

/// Removes snapshots that were never completed, and any neither in service nor kept as a
/// restore point.
fn clean_snapshots(
    cfg: &StoreConfig,
    ident: Option<&Identity>,
    retention: &Retention,
) -> Result<()> {
    for entry in fs::read_dir(cfg.dir.join("snapshots"))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_str();
        let kept = ident.is_some_and(|id| name == Some(&id.snapshot))
            || retention.names().any(|n| name == Some(n));
        if !kept {
            info!(
                "Removing {} (neither the snapshot in service nor a restore point)",
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
    let segs = list_segments(&cfg.dir)?;
    let TrustedRun {
        run,
        limit,
        damaged,
    } = trusted_run(cfg, &segs, from)?;
    for &(start, _) in &segs[run.len()..] {
        warn!(
            "Removing log segment {start}: not contiguous with, or after damage in, the log before it"
        );
        remove_segment(cfg, start)?;
    }
    let empty = |why: &str| -> Result<Recovered> {
        warn!("{why}; starting an empty log at {from}");
        remove_segments(cfg)?;
        Ok(Recovered {
            starts: vec![from],
            last: create_segment(cfg, from)?,
            next: from,
        })
    };
    let Some(&(start, len)) = run.last() else {
        return empty("The log does not reach the snapshot's offset");
    };
    let path = segment_path(&cfg.dir, start);
    let next = last_command_end(&path, start, limit)?;
    if next < from {
        return empty("The log ends before the snapshot's offset");
    }
    if next < start + len {
        match damaged {
            Some(d) => warn!(
                "Cut {} bytes at the end of the log, from offset {next}: a checksum failed in log segment {} (its bytes {}..{}); they are refetched from the master",
                start + len - next,
                d.segment,
                d.from,
                d.to
            ),
            None => warn!(
                "Cut {} bytes of an incomplete command at the end of the log",
                start + len - next
            ),
        }
    }
    let file = OpenOptions::new().append(true).open(&path)?;
    file.set_len(next - start)?;
    file.sync_all()?;
    let index = Index::reopen(&path, next - start)
        .with_context(|| format!("rebuilding the index of {}", path.display()))?;
    let times = Times::reopen(&path, next - start)
        .with_context(|| format!("rebuilding the time index of {}", path.display()))?;
    let starts = run.iter().map(|&(s, _)| s).collect();
    Ok(Recovered {
        starts,
        last: Segment {
            start,
            file,
            len: next - start,
            index,
            times,
        },
        next,
    })
}

/// The contiguous segments (start, length) from the one holding the snapshot's offset, each
/// checked against its index, up to the first damage.
struct TrustedRun {
    run: Vec<(u64, u64)>,
    /// How many bytes of the last segment can be trusted.
    limit: u64,
    damaged: Option<Damage>,
}

fn trusted_run(cfg: &StoreConfig, segs: &[(u64, u64)], from: u64) -> Result<TrustedRun> {
    let mut run: Vec<(u64, u64)> = Vec::new();
    let mut limit = 0;
    for &(start, len) in segs {
        let contiguous = match run.last() {
            None => start <= from,
            Some(&(s, _)) => s + limit == start,
        };
        if !contiguous {
            break;
        }
        let (trusted, failed) = trusted_len(&segment_path(&cfg.dir, start))?;
        run.push((start, len));
        limit = trusted;
        if let Some(at) = failed {
            warn!(
                "Log segment {start}: checksum mismatch in bytes {trusted}..{at}; the log is cut there and refetched from the master"
            );
            let damage = Damage {
                segment: start,
                from: trusted,
                to: at,
            };
            return Ok(TrustedRun {
                run,
                limit,
                damaged: Some(damage),
            });
        }
    }
    Ok(TrustedRun {
        run,
        limit,
        damaged: None,
    })
}

/// Scans the first `limit` bytes of a segment (which starts on a command) for the end of its
/// last complete command.
fn last_command_end(path: &std::path::Path, start: u64, limit: u64) -> Result<u64> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut file = file.take(limit);
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

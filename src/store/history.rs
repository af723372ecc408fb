//! A store's history read from its files, by tools that run beside the relay (`restore`):
//! the log between two offsets, each segment checked against its checksums before any of its
//! bytes are handed on, so a damaged segment stops the reader with its offset instead of
//! producing something silently incomplete. Nothing here writes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::index::trusted_len;
use super::{StoreConfig, StoreMetrics, segment_path, writer};
use crate::config::Fsync;

/// Start offsets of the log's segments, in order.
pub fn segments(dir: &Path) -> Result<Vec<u64>> {
    let cfg = StoreConfig {
        dir: dir.into(),
        fsync: Fsync::No,
        segment_size: 0,
        backlog_size: 0,
        metrics: StoreMetrics::new(),
    };
    Ok(writer::list_segments(&cfg)?
        .into_iter()
        .map(|(start, _)| start)
        .collect())
}

/// Hands `each` the log's bytes from offset `from` up to `to`, in pieces of at most 1 MiB.
pub fn read_log(
    dir: &Path,
    from: u64,
    to: u64,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let starts = segments(dir)?;
    let mut at = from;
    let mut buf = vec![0u8; 1 << 20];
    while at < to {
        let start = *starts
            .iter()
            .rev()
            .find(|&&s| s <= at)
            .with_context(|| format!("offset {at} is before the log's first segment"))?;
        let path = segment_path(dir, start);
        let (trusted, failed) = trusted_len(&path)
            .with_context(|| format!("checking log segment {}", path.display()))?;
        let end = (start + trusted).min(to);
        if end <= at {
            match failed {
                Some(bad) => bail!(
                    "log segment {start} is damaged: its bytes {trusted}..{bad} (offsets {}..{}) fail their checksum",
                    start + trusted,
                    start + bad
                ),
                None => bail!("the log ends at offset {}, before {to}", start + trusted),
            }
        }
        let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        file.seek(SeekFrom::Start(at - start))?;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            file.read_exact(&mut buf[..n])
                .with_context(|| format!("reading {}", path.display()))?;
            each(&buf[..n])?;
            at += n as u64;
        }
    }
    Ok(())
}

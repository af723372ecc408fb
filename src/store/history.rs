//! A store's history read from its files, by tools that run beside the relay (`restore`):
//! the log between two offsets, each segment checked against its checksums before any of its
//! bytes are handed on, so a damaged segment stops the reader with its offset instead of
//! producing something silently incomplete. Nothing here writes to the store but a pin:
//! `<dir>/pins/<pid>` names the first offset a tool still reads, and the relay's retention
//! keeps that much while the process lives (a pin of a process gone is ignored).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::index::trusted_len;
use super::{segment, segment_path};

/// A tool's pin: while it is held, the relay keeps the log from `offset` on.
pub struct Pin {
    path: std::path::PathBuf,
    /// Locked while the pin holds: retention honours a pin only while some process holds it.
    _lock: std::fs::File,
}

impl Pin {
    pub fn hold(dir: &Path, offset: u64) -> Result<Pin> {
        let pins = dir.join("pins");
        std::fs::create_dir_all(&pins).with_context(|| format!("creating {}", pins.display()))?;
        let path = pins.join(std::process::id().to_string());
        let lock = super::lock::locked_file(&path, &format!("{offset}\n"))
            .with_context(|| format!("writing the pin {}", path.display()))?;
        Ok(Pin { path, _lock: lock })
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The lowest offset pinned by a live process, if any. The pins of processes that died (their
/// lock released by the kernel) are removed.
pub(super) fn file_pins(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir.join("pins")).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "tmp") {
                return None;
            }
            if !super::lock::is_held(&path) {
                let _ = std::fs::remove_file(&path);
                return None;
            }
            std::fs::read_to_string(&path).ok()?.trim().parse().ok()
        })
        .min()
}

/// Start offsets of the log's segments, in order.
pub fn segments(dir: &Path) -> Result<Vec<u64>> {
    Ok(segment::list_segments(dir)?
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

//! The time index: `<start>.time` beside each segment, one 20-byte record when the segment
//! starts (length 0: everything before it was stored by then, the snapshot for the first
//! segment of a history) and one per checkpoint that added bytes (each second, each fsync, each
//! roll): the segment's length then, the wall-clock time in milliseconds, and the record's
//! CRC32C. So the offset of any moment is known to within a second, for restoring to a point in
//! time; a time means when the relay stored the bytes, within the link's lag of the master's
//! own clock.
//!
//! Kept and recovered like the checksum index: records past a cut segment's length are dropped
//! on reopen, a torn or damaged record ends the file's trusted part, and a segment without a
//! time file (written before it existed) simply has no times.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crc32c::crc32c;

const RECORD: usize = 20;

pub(super) fn times_path(segment: &Path) -> PathBuf {
    segment.with_extension("time")
}

/// The time records of the segment being written.
pub(super) struct Times {
    file: File,
    /// Segment length of the last record.
    marked: u64,
}

impl Times {
    fn create(segment: &Path) -> io::Result<Times> {
        Ok(Times {
            file: File::create(times_path(segment))?,
            marked: 0,
        })
    }

    /// The time file of a new segment, with the record of its start.
    pub(super) fn start(segment: &Path) -> io::Result<Times> {
        let mut times = Times::create(segment)?;
        times.file.write_all(&record(0, now_ms()))?;
        Ok(times)
    }

    /// The time file of a segment cut to `len`: the records up to `len` are kept.
    pub(super) fn reopen(segment: &Path, len: u64) -> io::Result<Times> {
        let kept: Vec<(u64, u64)> = read(segment)
            .into_iter()
            .take_while(|&(l, _)| l <= len)
            .collect();
        let mut times = Times::create(segment)?;
        for &(l, ms) in &kept {
            times.file.write_all(&record(l, ms))?;
        }
        times.marked = kept.last().map_or(0, |&(l, _)| l);
        Ok(times)
    }

    /// Records that the segment had `len` bytes now, if it grew since the last record.
    pub(super) fn mark(&mut self, len: u64) -> io::Result<()> {
        if len <= self.marked {
            return Ok(());
        }
        self.file.write_all(&record(len, now_ms()))?;
        self.marked = len;
        Ok(())
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `2026-12-01T08:00:03Z` for milliseconds since the epoch (UTC, to the second).
pub fn utc(unix_ms: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp((unix_ms / 1000) as i64)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("@{}", unix_ms / 1000))
}

fn record(len: u64, ms: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&len.to_le_bytes());
    r[8..16].copy_from_slice(&ms.to_le_bytes());
    let crc = crc32c(&r[..16]);
    r[16..].copy_from_slice(&crc.to_le_bytes());
    r
}

/// The trusted records of a segment's time file: (segment length, milliseconds), in order;
/// empty when there is none.
pub fn read(segment: &Path) -> Vec<(u64, u64)> {
    let mut bytes = Vec::new();
    let opened = File::open(times_path(segment)).and_then(|mut f| f.read_to_end(&mut bytes));
    if opened.is_err() {
        return Vec::new();
    }
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in bytes.chunks_exact(RECORD) {
        let crc = u32::from_le_bytes(r[16..].try_into().expect("4 bytes"));
        let len = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
        let ms = u64::from_le_bytes(r[8..16].try_into().expect("8 bytes"));
        if crc != crc32c(&r[..16]) || out.last().is_some_and(|&(l, _)| len <= l) {
            break;
        }
        out.push((len, ms));
    }
    out
}

/// Removes a segment's time file, with the segment.
pub(super) fn remove(segment: &Path) -> io::Result<()> {
    match std::fs::remove_file(times_path(segment)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_764_576_003_000), "2025-12-01T08:00:03Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn records_survive_a_cut_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("100.seg");
        let mut t = Times::start(&seg).unwrap();
        t.mark(10).unwrap();
        t.mark(10).unwrap();
        t.mark(25).unwrap();
        t.mark(40).unwrap();
        let all = read(&seg);
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 10, 25, 40]);
        assert!(all.windows(2).all(|w| w[0].1 <= w[1].1));
        drop(t);
        let mut t = Times::reopen(&seg, 30).unwrap();
        assert_eq!(
            read(&seg).iter().map(|r| r.0).collect::<Vec<_>>(),
            [0, 10, 25]
        );
        t.mark(35).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(times_path(&seg))
            .unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        assert_eq!(
            read(&seg).iter().map(|r| r.0).collect::<Vec<_>>(),
            [0, 10, 25, 35]
        );
        assert!(read(&dir.path().join("0.seg")).is_empty());
    }
}

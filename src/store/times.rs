//! The time index: `<start>.time` beside each segment, one 20-byte record when the segment
//! starts (length 0: everything before it was stored by then, the snapshot for the first
//! segment of a history) and records of when the stream's bytes arrived from upstream: the
//! segment's length after an arrival, the wall-clock time of that arrival in milliseconds, and
//! the record's CRC32C. A time means when the relay received the bytes, within the link's lag
//! of the master's own clock.
//!
//! An arrival is recorded once the next one comes `RESOLUTION_MS` or more after the last
//! record (or at a checkpoint: each second, each fsync, each roll), with its own time, so the
//! arrivals no record names always lie within `RESOLUTION_MS` after one that does: the offset
//! of any moment is known to within that, which is what cutting the shards of a cluster at one
//! moment needs. It costs at most one record per `RESOLUTION_MS` of a busy link, and one per
//! arrival of a quiet one.
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

/// How far apart in time the records of a busy link are, at most.
pub const RESOLUTION_MS: u64 = 10;

pub(super) fn times_path(segment: &Path) -> PathBuf {
    segment.with_extension("time")
}

/// The time records of the segment being written.
pub(super) struct Times {
    file: File,
    /// Segment length and time of the last record.
    marked: u64,
    marked_ms: u64,
    /// The last arrival not recorded yet: segment length after it, and its time.
    pending: Option<(u64, u64)>,
}

impl Times {
    fn create(segment: &Path) -> io::Result<Times> {
        Ok(Times {
            file: File::create(times_path(segment))?,
            marked: 0,
            marked_ms: 0,
            pending: None,
        })
    }

    /// The time file of a new segment, with the record of its start.
    pub(super) fn start(segment: &Path) -> io::Result<Times> {
        let mut times = Times::create(segment)?;
        times.write(0, now_ms())?;
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
        (times.marked, times.marked_ms) = kept.last().copied().unwrap_or((0, 0));
        Ok(times)
    }

    /// Bytes arrived at `ms`, making the segment `len` long. The arrival before is recorded
    /// when this one comes `RESOLUTION_MS` or more after the last record.
    pub(super) fn arrived(&mut self, len: u64, ms: u64) -> io::Result<()> {
        if ms >= self.marked_ms + RESOLUTION_MS {
            self.write_pending()?;
        }
        self.pending = Some((len, ms));
        Ok(())
    }

    /// A checkpoint: the last arrival is recorded, and bytes written since without an arrival
    /// of their own are recorded as stored by now.
    pub(super) fn mark(&mut self, len: u64) -> io::Result<()> {
        self.write_pending()?;
        if len > self.marked {
            self.write(len, now_ms())?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> io::Result<()> {
        match self.pending.take() {
            Some((len, ms)) if len > self.marked => self.write(len, ms),
            _ => Ok(()),
        }
    }

    fn write(&mut self, len: u64, ms: u64) -> io::Result<()> {
        self.file.write_all(&record(len, ms))?;
        (self.marked, self.marked_ms) = (len, ms);
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

/// `2026-12-01T08:00:03.250Z`: `utc` to the millisecond, for moments finer than a second.
pub fn utc_ms(unix_ms: u64) -> String {
    let second = utc(unix_ms);
    match second.strip_suffix('Z') {
        Some(s) => format!("{s}.{:03}Z", unix_ms % 1000),
        None => second,
    }
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
        assert_eq!(utc_ms(1_764_576_003_250), "2025-12-01T08:00:03.250Z");
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

    #[test]
    fn arrivals_are_recorded_with_their_own_times_within_the_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("100.seg");
        let mut t = Times::start(&seg).unwrap();
        let b = now_ms() + 1000;
        let arrivals = [
            (10, b),
            (20, b + 3),
            (30, b + 8),
            (40, b + 12),
            (50, b + 13),
        ];
        for (len, ms) in arrivals {
            t.arrived(len, ms).unwrap();
        }
        t.arrived(60, b + 30).unwrap();
        t.mark(60).unwrap();
        let records = read(&seg);
        assert_eq!(
            records[1..],
            [(10, b), (30, b + 8), (50, b + 13), (60, b + 30)]
        );
        // Every arrival lies within the resolution after the record before it: the restore to
        // any moment misses at most that much of the stream.
        for (len, ms) in arrivals {
            let before = records.iter().rev().find(|r| r.0 <= len).unwrap();
            assert!(ms - before.1.min(ms) < RESOLUTION_MS, "{len} at {ms}");
        }
    }
}

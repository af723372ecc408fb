//! Per-segment checksums: `<start>.idx` beside each `<start>.seg`, one 16-byte record per
//! checkpoint (each fsync, each second, each roll): the segment's length at the checkpoint, the
//! CRC32C of the bytes since the previous checkpoint, and the record's own CRC.
//!
//! Recovery trusts a segment only up to the first checkpoint whose bytes do not match: a torn
//! or corrupt tail is cut, never served. Bytes after the last checkpoint have no checksum yet
//! and are kept only as far as they parse as complete commands. The index itself is never
//! fsynced: a lost record only makes more of the tail "not yet checked".

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crc32c::{crc32c, crc32c_append};

const RECORD: usize = 16;

pub(super) fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

/// The checksums of the segment being written.
pub(super) struct Index {
    file: File,
    /// CRC32C of the bytes since the last record.
    crc: u32,
    /// Segment length covered by the last record.
    indexed: u64,
}

impl Index {
    /// An empty index for a new segment.
    pub(super) fn create(segment: &Path) -> io::Result<Index> {
        let file = File::create(index_path(segment))?;
        Ok(Index {
            file,
            crc: 0,
            indexed: 0,
        })
    }

    /// The index of a segment cut to `len` bytes: records past `len` are dropped and the bytes
    /// after the last one are read back so checksumming goes on where it stopped.
    pub(super) fn reopen(segment: &Path, len: u64) -> io::Result<Index> {
        let marks: Vec<u64> = read_records(&index_path(segment))
            .unwrap_or_default()
            .into_iter()
            .map(|(mark, _)| mark)
            .take_while(|&m| m <= len)
            .collect();
        let mut index = Index::create(segment)?;
        let mut prev = 0;
        for &mark in &marks {
            let crc = crc_of_range(segment, prev, mark)?;
            index.file.write_all(&record(mark, crc))?;
            prev = mark;
        }
        index.crc = crc_of_range(segment, prev, len)?;
        index.indexed = prev;
        Ok(index)
    }

    /// Bytes just appended to the segment.
    pub(super) fn update(&mut self, data: &[u8]) {
        self.crc = crc32c_append(self.crc, data);
    }

    /// Records a checkpoint at segment length `len`.
    pub(super) fn mark(&mut self, len: u64) -> io::Result<()> {
        if len <= self.indexed {
            return Ok(());
        }
        let crc = std::mem::take(&mut self.crc);
        self.file.write_all(&record(len, crc))?;
        self.indexed = len;
        Ok(())
    }
}

fn record(len: u64, crc: u32) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&len.to_le_bytes());
    r[8..12].copy_from_slice(&crc.to_le_bytes());
    let own = crc32c(&r[..12]);
    r[12..].copy_from_slice(&own.to_le_bytes());
    r
}

/// The records of an index file up to the first torn or damaged one.
fn read_records(path: &Path) -> io::Result<Vec<(u64, u32)>> {
    let bytes = fs::read(path)?;
    let mut out: Vec<(u64, u32)> = Vec::new();
    for r in bytes.chunks_exact(RECORD) {
        let own = u32::from_le_bytes(r[12..].try_into().expect("4 bytes"));
        let len = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
        if own != crc32c(&r[..12]) || out.last().is_some_and(|&(prev, _)| len <= prev) {
            break;
        }
        out.push((
            len,
            u32::from_le_bytes(r[8..12].try_into().expect("4 bytes")),
        ));
    }
    Ok(out)
}

/// Bytes read at a time while checksumming: a checkpoint can cover a whole segment, which must
/// not become one allocation.
const CHECK_READ: usize = 1 << 20;

/// The CRC32C of `[from, to)` of a file, read in bounded pieces.
fn crc_of_range(path: &Path, from: u64, to: u64) -> io::Result<u32> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    crc_of_next(&mut f, to - from)
}

/// The CRC32C of the next `len` bytes of `f`.
fn crc_of_next(f: &mut File, len: u64) -> io::Result<u32> {
    let mut buf = vec![0u8; CHECK_READ.min(len as usize)];
    let (mut crc, mut left) = (0, len);
    while left > 0 {
        let piece = &mut buf[..CHECK_READ.min(left as usize)];
        f.read_exact(piece)?;
        crc = crc32c_append(crc, piece);
        left -= piece.len() as u64;
    }
    Ok(crc)
}

/// Where a segment's bytes fail their checksum: the segment (by its first offset) and the byte
/// range within it that the failing checkpoint covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    pub segment: u64,
    pub from: u64,
    pub to: u64,
}

/// How much of a segment can be trusted: up to the first checkpoint whose checksum fails, or
/// the whole file when every checkpoint matches. Also returns the length that failed, if any.
pub(super) fn trusted_len(segment: &Path) -> io::Result<(u64, Option<u64>)> {
    let file_len = fs::metadata(segment)?.len();
    let records = match read_records(&index_path(segment)) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut file = OpenOptions::new().read(true).open(segment)?;
    let mut prev = 0;
    for (mark, crc) in records {
        if mark > file_len {
            break;
        }
        if crc_of_next(&mut file, mark - prev)? != crc {
            return Ok((prev, Some(mark)));
        }
        prev = mark;
    }
    Ok((file_len, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_with_index(dir: &Path) -> PathBuf {
        let seg = dir.join("00000000000000000001.seg");
        let mut data = File::create(&seg).unwrap();
        let mut index = Index::create(&seg).unwrap();
        for chunk in [&b"first chunk"[..], b"second", b"third!"] {
            data.write_all(chunk).unwrap();
            index.update(chunk);
            index.mark(data.metadata().unwrap().len()).unwrap();
        }
        data.write_all(b"unindexed").unwrap();
        seg
    }

    #[test]
    fn intact_segments_are_trusted_whole() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment_with_index(dir.path());
        assert_eq!(trusted_len(&seg).unwrap(), (32, None));
    }

    #[test]
    fn corruption_is_cut_at_the_last_good_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment_with_index(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        bytes[13] ^= 0x20;
        fs::write(&seg, &bytes).unwrap();
        assert_eq!(trusted_len(&seg).unwrap(), (11, Some(17)));
    }

    #[test]
    fn torn_index_records_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment_with_index(dir.path());
        let idx = index_path(&seg);
        let mut bytes = fs::read(&idx).unwrap();
        bytes.truncate(RECORD * 2 + 5);
        fs::write(&idx, &bytes).unwrap();
        assert_eq!(trusted_len(&seg).unwrap(), (32, None));
        let mut index = Index::reopen(&seg, 20).unwrap();
        assert_eq!(index.indexed, 17);
        index.mark(20).unwrap();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(20).unwrap();
        assert_eq!(trusted_len(&seg).unwrap(), (20, None));
    }

    #[test]
    fn records_hold_the_crc32c_of_the_bytes_however_they_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("00000000000000000001.seg");
        let mut index = Index::create(&seg).unwrap();
        index.update(b"1234");
        index.update(b"56789");
        index.mark(9).unwrap();
        assert_eq!(read_records(&index_path(&seg)).unwrap(), [(9, 0xe306_9283)]);
    }
}

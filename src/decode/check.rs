//! Verification of snapshots as they arrive: the RDB header and the CRC64 trailer.
//!
//! The check runs over the same chunks that are written to disk, so a snapshot is verified
//! without a second read. Redis' CRC64 (Jones polynomial) covers every byte from the magic to
//! the EOF opcode; the 8 bytes after it are the checksum, little-endian, or zero when the master
//! runs with `rdbchecksum no`.

use crc_fast::{CrcAlgorithm, Digest};

/// The CRC runs over every byte of every snapshot received and of every full sync served:
/// crc-fast folds it with carry-less multiplication (PCLMULQDQ, PMULL), about 25 times the
/// speed of a slice-by-16 table here, and falls back to tables on other processors.
const CRC64: CrcAlgorithm = CrcAlgorithm::Crc64Redis;

const RDB_OPCODE_EOF: u8 = 0xFF;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not an RDB file: bad signature {0:?}")]
    Signature(String),
    #[error("truncated RDB: {0} bytes")]
    Truncated(u64),
    #[error("RDB does not end with the EOF opcode (last byte 0x{0:02x})")]
    NoEofOpcode(u8),
    #[error("RDB checksum mismatch: trailer {stored:016x}, computed {computed:016x}")]
    Checksum { stored: u64, computed: u64 },
}

/// What the header and trailer say about a complete, verified snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFacts {
    /// `REDIS` or `VALKEY`.
    pub family: String,
    pub rdb_version: u32,
    /// False when the master wrote a zero trailer (`rdbchecksum no`).
    pub checksummed: bool,
}

/// Feeds on snapshot chunks in order; `finish` says whether the whole is a valid RDB.
pub struct SnapshotCheck {
    digest: Digest,
    header: Vec<u8>,
    /// The last 8 bytes seen: the trailer once the snapshot is complete.
    held: Vec<u8>,
    last_digested: u8,
    total: u64,
}

impl Default for SnapshotCheck {
    fn default() -> Self {
        SnapshotCheck {
            digest: Digest::new(CRC64),
            header: Vec::with_capacity(9),
            held: Vec::with_capacity(16),
            last_digested: 0,
            total: 0,
        }
    }
}

impl SnapshotCheck {
    pub fn update(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let want = 9 - self.header.len().min(9);
        self.header.extend_from_slice(&data[..want.min(data.len())]);
        if data.len() >= 8 {
            let (body, trailer) = data.split_at(data.len() - 8);
            self.digest_bytes_held();
            self.digest_bytes(body);
            self.held.extend_from_slice(trailer);
        } else {
            self.held.extend_from_slice(data);
            let excess = self.held.len().saturating_sub(8);
            let spill: Vec<u8> = self.held.drain(..excess).collect();
            self.digest_bytes(&spill);
        }
    }

    fn digest_bytes_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.digest_bytes(&held);
    }

    fn digest_bytes(&mut self, data: &[u8]) {
        if let Some(&last) = data.last() {
            self.digest.update(data);
            self.last_digested = last;
        }
    }

    pub fn finish(self) -> Result<SnapshotFacts, SnapshotError> {
        let (family, rdb_version) = parse_signature(&self.header)?;
        if self.total < 9 + 1 + 8 {
            return Err(SnapshotError::Truncated(self.total));
        }
        if self.last_digested != RDB_OPCODE_EOF {
            return Err(SnapshotError::NoEofOpcode(self.last_digested));
        }
        let stored = u64::from_le_bytes(self.held[..8].try_into().expect("8 trailer bytes"));
        let computed = self.digest.finalize();
        if stored != 0 && stored != computed {
            return Err(SnapshotError::Checksum { stored, computed });
        }
        Ok(SnapshotFacts {
            family,
            rdb_version,
            checksummed: stored != 0,
        })
    }
}

/// Checks a whole snapshot read from `file` in 1 MiB pieces; `advanced` is told each piece's
/// size, for progress. The error says what broke, reading included.
pub fn check_file(
    mut file: impl std::io::Read,
    mut advanced: impl FnMut(u64),
) -> Result<SnapshotFacts, String> {
    let mut check = SnapshotCheck::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("reading it failed: {e}"))?;
        if n == 0 {
            return check.finish().map_err(|e| e.to_string());
        }
        check.update(&buf[..n]);
        advanced(n as u64);
    }
}

/// `REDIS0011` or `VALKEY080`.
pub fn parse_signature(header: &[u8]) -> Result<(String, u32), SnapshotError> {
    let bad = || SnapshotError::Signature(String::from_utf8_lossy(header).into_owned());
    let (family, digits) = if let Some(d) = header.strip_prefix(b"REDIS") {
        ("REDIS", d)
    } else if let Some(d) = header.strip_prefix(b"VALKEY") {
        ("VALKEY", d)
    } else {
        return Err(bad());
    };
    if header.len() != 9 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let version = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((family.to_string(), version))
}

/// A one-key RDB file, with its CRC64 or with a zero checksum (which means "not computed").
#[cfg(test)]
pub(crate) fn tiny_rdb(checksum: bool) -> Vec<u8> {
    let mut v =
        b"REDIS0011\xfa\x09redis-ver\x057.0.0\xfe\x00\xfb\x01\x00\x00\x01k\x01v\xff".to_vec();
    let crc = if checksum {
        crc_fast::checksum(CRC64, &v)
    } else {
        0
    };
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rdb(checksum: bool) -> Vec<u8> {
        tiny_rdb(checksum)
    }

    fn check(data: &[u8], chunk: usize) -> Result<SnapshotFacts, SnapshotError> {
        let mut c = SnapshotCheck::default();
        data.chunks(chunk).for_each(|ch| c.update(ch));
        c.finish()
    }

    #[test]
    fn crc64_is_redis_jones() {
        assert_eq!(crc_fast::checksum(CRC64, b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn accepts_valid_snapshots_in_any_chunking() {
        for chunk in 1..40 {
            let facts = check(&rdb(true), chunk).unwrap();
            assert_eq!(
                (facts.family.as_str(), facts.rdb_version, facts.checksummed),
                ("REDIS", 11, true)
            );
            assert!(!check(&rdb(false), chunk).unwrap().checksummed);
        }
    }

    #[test]
    fn rejects_corruption() {
        let mut bad = rdb(true);
        bad[12] ^= 1;
        assert!(matches!(
            check(&bad, 7),
            Err(SnapshotError::Checksum { .. })
        ));
        let good = rdb(true);
        assert!(matches!(
            check(&good[..good.len() - 3], 5),
            Err(SnapshotError::NoEofOpcode(_))
        ));
        assert!(matches!(
            check(b"GARBAGE!!xxxxxxxxxxxxxxxxx", 4),
            Err(SnapshotError::Signature(_))
        ));
        assert_eq!(check(b"REDIS0011", 4), Err(SnapshotError::Truncated(9)));
        assert_eq!(
            parse_signature(b"VALKEY080").unwrap(),
            ("VALKEY".into(), 80)
        );
    }
}

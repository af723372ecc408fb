//! Valkey 9's hash with field expiry (`RDB_TYPE_HASH_2`, type 22) for the `rdb` crate.
//!
//! The crate reads type 22 as Redis 7.4's pre-release hash with field metadata, whose entries
//! are a length-encoded TTL, the field and the value; a Valkey entry is the field, the value,
//! then the TTL as 8 little-endian bytes (-1: none). Armed once the decoder has read the key of
//! a type-22 value in a Valkey file, this reader hands the decoder that value's entries in the
//! layout it knows, with a TTL of 0 (the statistics use no field TTL), reading the file's bytes
//! once and holding at most one entry.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::rc::Rc;

/// Redis' and Valkey's type byte of this hash.
pub const HASH_2: u8 = 22;

pub struct Hash2<R> {
    inner: R,
    /// Set by the decoder's filter: the next bytes asked for are a type-22 value.
    armed: Rc<Cell<bool>>,
    out: VecDeque<u8>,
    /// Entries of the value still to rewrite.
    left: u64,
}

impl<R: Read> Hash2<R> {
    pub fn new(inner: R, armed: Rc<Cell<bool>>) -> Hash2<R> {
        Hash2 {
            inner,
            armed,
            out: VecDeque::new(),
            left: 0,
        }
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8; 1];
        self.inner.read_exact(&mut b)?;
        Ok(b[0])
    }

    /// Copies a length (RDB length encoding) to the output; returns it, or the special
    /// encoding's number (a string stored as an integer or LZF) as `Err`.
    fn copy_length(&mut self) -> io::Result<Result<u64, u8>> {
        let first = self.byte()?;
        self.out.push_back(first);
        let wide = |me: &mut Self, n: usize| -> io::Result<u64> {
            let mut v = 0u64;
            for _ in 0..n {
                let b = me.byte()?;
                me.out.push_back(b);
                v = (v << 8) | u64::from(b);
            }
            Ok(v)
        };
        Ok(match (first >> 6, first) {
            (0, _) => Ok(u64::from(first & 0x3f)),
            (1, _) => Ok((u64::from(first & 0x3f) << 8) | wide(self, 1)?),
            (2, 0x80) => Ok(wide(self, 4)?),
            (2, 0x81) => Ok(wide(self, 8)?),
            (3, _) => Err(first & 0x3f),
            _ => return Err(bad(format!("bad length byte {first:#x}"))),
        })
    }

    /// Copies one string (length and bytes, an integer, or LZF) to the output.
    fn copy_string(&mut self) -> io::Result<()> {
        let payload = match self.copy_length()? {
            Ok(len) => len,
            Err(0) => 1,
            Err(1) => 2,
            Err(2) => 4,
            Err(3) => {
                let compressed = self.copy_length()?.map_err(|_| bad("LZF length".into()))?;
                self.copy_length()?.map_err(|_| bad("LZF length".into()))?;
                compressed
            }
            Err(e) => return Err(bad(format!("unknown string encoding {e}"))),
        };
        let copied = io::copy(&mut (&mut self.inner).take(payload), &mut self.out)?;
        if copied != payload {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// The next entry, rewritten: TTL 0, field, value; the 8 TTL bytes are read and dropped.
    fn next_entry(&mut self) -> io::Result<()> {
        self.out.push_back(0);
        self.copy_string()?;
        self.copy_string()?;
        let mut ttl = [0u8; 8];
        self.inner.read_exact(&mut ttl)?;
        self.left -= 1;
        Ok(())
    }
}

impl<R: Read> Read for Hash2<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.out.is_empty() && self.armed.replace(false) {
            self.left = self
                .copy_length()?
                .map_err(|_| bad("a hash's entry count".into()))?;
        }
        if self.out.is_empty() && self.left > 0 {
            self.next_entry()?;
        }
        if self.out.is_empty() {
            return self.inner.read(buf);
        }
        let n = buf.len().min(self.out.len());
        for (slot, b) in buf.iter_mut().zip(self.out.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("Valkey hash: {what}"))
}

#[cfg(test)]
mod tests {
    use crate::decode::analyze;

    /// A Valkey 9 file as `valkey-server` 9.1 writes it: a type-22 hash (one field with a TTL,
    /// one integer-encoded field without, one LZF-compressed value), then a string key, which
    /// is found only if the hash was read to its exact end.
    fn valkey_file() -> Vec<u8> {
        let mut v = b"VALKEY080\xfa\x0avalkey-ver\x059.1.2\xfe\x00\xfb\x02\x01".to_vec();
        v.extend_from_slice(b"\xfc");
        v.extend_from_slice(&4_000_000_000_000u64.to_le_bytes());
        v.extend_from_slice(b"\x16\x01h\x03");
        v.extend_from_slice(b"\x02f1\x02v1");
        v.extend_from_slice(&1_790_000_000_000i64.to_le_bytes());
        v.extend_from_slice(b"\xc0\x07\x02v2");
        v.extend_from_slice(&(-1i64).to_le_bytes());
        // "aaaaaaaaaaaaaaaaaaaa" compressed by LZF: a literal 'a', then a back reference.
        v.extend_from_slice(b"\x02f3\xc3\x05\x14\x00a\xe0\x0a\x00");
        v.extend_from_slice(&(-1i64).to_le_bytes());
        v.extend_from_slice(b"\x00\x01k\x01v\xff");
        v.extend_from_slice(&0u64.to_le_bytes());
        v
    }

    #[test]
    fn a_valkey_hash_with_field_ttls_is_decoded_and_what_follows_too() {
        let stats = analyze(&valkey_file()[..]);
        assert_eq!(stats.error, None);
        let db = &stats.dbs[&0];
        assert_eq!((db.keys, db.expires), (2, 1));
        assert_eq!(db.types["hash"], 1);
        assert_eq!(db.types["string"], 1);
    }

    #[test]
    fn in_a_redis_file_type_22_is_left_to_the_decoder() {
        let mut file = valkey_file();
        file[..9].copy_from_slice(b"REDIS0011");
        assert!(
            analyze(&file[..]).error.is_some(),
            "read as Redis' own type 22"
        );
    }
}

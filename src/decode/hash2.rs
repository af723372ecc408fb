//! Valkey 9's hash with field expiry (`RDB_TYPE_HASH_2`, type 22) for the `rdb` crate.
//!
//! The crate reads type 22 as Redis 7.4's pre-release hash with field metadata, whose entries
//! are a length-encoded TTL, the field and the value; a Valkey entry is the field, the value,
//! then the TTL as 8 little-endian bytes (-1: none). Armed once the decoder has read the key of
//! a type-22 value in a Valkey file, this reader hands the decoder that value's entries in the
//! layout it knows, with a TTL of 0 (the statistics use no field TTL), reading the file's bytes
//! once: the strings' bytes pass straight through, only their length headers are held.

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
    /// Bytes written for the decoder, not read by it yet: a TTL, a length header.
    out: VecDeque<u8>,
    /// Bytes of the current string that pass through unchanged.
    payload: u64,
    /// Strings of the current entry whose header is still to copy (field, value).
    strings: u8,
    /// The current entry's 8 TTL bytes are still to drop.
    ttl: bool,
    /// Entries of the value not started yet.
    left: u64,
}

impl<R: Read> Hash2<R> {
    pub fn new(inner: R, armed: Rc<Cell<bool>>) -> Hash2<R> {
        Hash2 {
            inner,
            armed,
            out: VecDeque::new(),
            payload: 0,
            strings: 0,
            ttl: false,
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

    /// Copies a string's header (its length, or an integer's or LZF's encoding) to the output;
    /// the bytes after it are left to pass through.
    fn copy_string_header(&mut self) -> io::Result<()> {
        self.payload = match self.copy_length()? {
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
        Ok(())
    }

    /// Makes the next bytes for the decoder ready: output to hand over or a payload to pass
    /// through, taking the value's next step; false once the value is done (or none is armed).
    fn step(&mut self) -> io::Result<bool> {
        loop {
            if !self.out.is_empty() || self.payload > 0 {
                return Ok(true);
            }
            if self.strings > 0 {
                self.strings -= 1;
                self.copy_string_header()?;
            } else if self.ttl {
                self.ttl = false;
                self.inner.read_exact(&mut [0u8; 8])?;
            } else if self.armed.replace(false) {
                self.left = self
                    .copy_length()?
                    .map_err(|_| bad("a hash's entry count".into()))?;
            } else if self.left > 0 {
                // The entry in the decoder's layout: TTL 0, then the field and the value.
                self.left -= 1;
                self.out.push_back(0);
                (self.strings, self.ttl) = (2, true);
            } else {
                return Ok(false);
            }
        }
    }
}

impl<R: Read> Read for Hash2<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.step()? {
            return self.inner.read(buf);
        }
        if !self.out.is_empty() {
            let n = buf.len().min(self.out.len());
            for (slot, b) in buf.iter_mut().zip(self.out.drain(..n)) {
                *slot = b;
            }
            return Ok(n);
        }
        let most = buf
            .len()
            .min(usize::try_from(self.payload).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..most])?;
        if n == 0 && most > 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.payload -= n as u64;
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

    /// A large field passes through as it is read: only length headers are ever held.
    #[test]
    fn a_large_field_is_not_held() {
        use std::cell::Cell;
        use std::io::Read;
        use std::rc::Rc;
        let big = vec![b'x'; 1 << 20];
        let mut value = b"\x01\x80\x00\x10\x00\x00".to_vec();
        value.extend_from_slice(&big);
        value.extend_from_slice(b"\x01v");
        value.extend_from_slice(&(-1i64).to_le_bytes());
        value.extend_from_slice(b"after");
        let armed = Rc::new(Cell::new(true));
        let mut h = super::Hash2::new(&value[..], armed);
        let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
        loop {
            let n = h.read(&mut buf).unwrap();
            assert!(h.out.len() <= 9, "held {} bytes", h.out.len());
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let mut want = b"\x01\x00\x80\x00\x10\x00\x00".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"\x01vafter");
        assert_eq!(got, want);
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

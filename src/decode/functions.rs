//! A functions-only snapshot, as a master writes for `REPLCONF rdb-filter-only functions`
//! (`redis-cli --functions-rdb`): the header, the AUX fields and one `FUNCTION2` entry per
//! library, the EOF opcode and the CRC64. The libraries come from the stored snapshot's first
//! part (a master writes them before any key) and the `FUNCTION` commands of the stream since.
//!
//! Only RDB strings are decoded here (lengths, integer encodings, LZF); anything the prefix
//! holds that this does not know (module AUX data, the pre-GA function format) is an error,
//! never a snapshot with libraries missing.

use std::collections::BTreeMap;
use std::io::Read;

use bytes::Bytes;

const FUNCTION2: u8 = 245;
const FUNCTION_PRE_GA: u8 = 246;
const MODULE_AUX: u8 = 247;
pub(super) const AUX: u8 = 250;
const SELECTDB: u8 = 254;
const EOF: u8 = 255;
/// Most bytes of libraries kept: a library is Lua or JavaScript source.
const MAX_LIBRARIES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    #[error("reading the snapshot: {0}")]
    Io(#[from] std::io::Error),
    #[error("the snapshot holds {0}, which a functions-only snapshot cannot be made from")]
    Unsupported(&'static str),
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    #[error("a FUNCTION command of the stream: {0}")]
    Command(String),
}

/// The libraries of a dataset, by name, and the snapshot's header and AUX fields.
#[derive(Debug, Default)]
pub struct Libraries {
    header: Vec<u8>,
    aux: Vec<(Vec<u8>, Vec<u8>)>,
    libs: BTreeMap<String, Vec<u8>>,
}

impl Libraries {
    /// Reads a snapshot's first part: up to its first database, or its end.
    pub fn from_snapshot(r: impl Read) -> Result<Libraries, FunctionsError> {
        let mut r = std::io::BufReader::new(r);
        let mut out = Libraries {
            header: vec![0; 9],
            ..Libraries::default()
        };
        r.read_exact(&mut out.header)?;
        super::check::parse_signature(&out.header)
            .map_err(|e| FunctionsError::Malformed(e.to_string()))?;
        loop {
            match byte(&mut r)? {
                AUX => {
                    let (k, v) = (string(&mut r)?, string(&mut r)?);
                    out.aux.push((k, v));
                }
                FUNCTION2 => {
                    let code = string(&mut r)?;
                    out.load(code, true)?;
                }
                FUNCTION_PRE_GA => return Err(FunctionsError::Unsupported("pre-GA functions")),
                MODULE_AUX => return Err(FunctionsError::Unsupported("module AUX data")),
                SELECTDB | EOF => return Ok(out),
                other => {
                    return Err(FunctionsError::Malformed(format!(
                        "opcode {other} before the first database"
                    )));
                }
            }
        }
    }

    /// Applies one `FUNCTION` command of the stream, as the master ran it.
    pub fn apply(&mut self, args: &[Bytes]) -> Result<(), FunctionsError> {
        let sub = args
            .get(1)
            .map(|a| a.to_ascii_lowercase())
            .unwrap_or_default();
        let rest = &args[2.min(args.len())..];
        match sub.as_slice() {
            b"load" => {
                let code = rest
                    .last()
                    .ok_or_else(|| bad("FUNCTION LOAD without code"))?;
                let replace = rest.len() > 1 && rest[0].eq_ignore_ascii_case(b"replace");
                self.load(code.to_vec(), replace)
            }
            b"delete" => {
                let name = rest
                    .first()
                    .ok_or_else(|| bad("FUNCTION DELETE without a name"))?;
                self.libs.remove(String::from_utf8_lossy(name).as_ref());
                Ok(())
            }
            b"flush" => {
                self.libs.clear();
                Ok(())
            }
            b"restore" => self.restore(rest),
            _ => Ok(()),
        }
    }

    /// `FUNCTION RESTORE <payload> [FLUSH|APPEND|REPLACE]`: the payload is FUNCTION DUMP's,
    /// `FUNCTION2` entries followed by a 2-byte RDB version and a CRC64.
    fn restore(&mut self, rest: &[Bytes]) -> Result<(), FunctionsError> {
        let payload = rest
            .first()
            .ok_or_else(|| bad("FUNCTION RESTORE without a payload"))?;
        let policy = rest
            .get(1)
            .map(|p| p.to_ascii_lowercase())
            .unwrap_or_default();
        let body = payload
            .len()
            .checked_sub(10)
            .map(|n| &payload[..n])
            .ok_or_else(|| bad("FUNCTION RESTORE payload too short"))?;
        let mut r = body;
        let mut restored = Vec::new();
        while !r.is_empty() {
            match byte(&mut r)? {
                FUNCTION2 => restored.push(string(&mut r)?),
                other => return Err(bad(&format!("FUNCTION RESTORE payload opcode {other}"))),
            }
        }
        if policy == b"flush" {
            self.libs.clear();
        }
        for code in restored {
            self.load(code, policy == b"replace" || policy == b"flush")?;
        }
        Ok(())
    }

    /// Adds a library by the name in its first line (`#!lua name=mylib`).
    fn load(&mut self, code: Vec<u8>, replace: bool) -> Result<(), FunctionsError> {
        let name =
            library_name(&code).ok_or_else(|| bad("a library without a name in its first line"))?;
        let size: usize = self.libs.values().map(Vec::len).sum::<usize>() + code.len();
        if size > MAX_LIBRARIES {
            return Err(bad("libraries larger than 64 MiB"));
        }
        if replace || !self.libs.contains_key(&name) {
            self.libs.insert(name, code);
        }
        Ok(())
    }

    pub fn names(&self) -> Vec<&str> {
        self.libs.keys().map(String::as_str).collect()
    }

    /// The functions-only snapshot, with its CRC64.
    pub fn rdb(&self) -> Vec<u8> {
        let mut out = self.header.clone();
        for (k, v) in &self.aux {
            out.push(AUX);
            put_string(&mut out, k);
            put_string(&mut out, v);
        }
        for code in self.libs.values() {
            out.push(FUNCTION2);
            put_string(&mut out, code);
        }
        out.push(EOF);
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Redis, &out);
        out.extend(crc.to_le_bytes());
        out
    }
}

fn bad(why: &str) -> FunctionsError {
    FunctionsError::Command(why.to_string())
}

/// `name=` of a library's shebang line.
fn library_name(code: &[u8]) -> Option<String> {
    let first = code.split(|&b| b == b'\n').next()?;
    let first = String::from_utf8_lossy(first);
    let rest = first.strip_prefix("#!")?;
    rest.split_whitespace()
        .find_map(|w| w.strip_prefix("name="))
        .map(str::to_string)
}

pub(super) fn byte(r: &mut impl Read) -> Result<u8, FunctionsError> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn exact(r: &mut impl Read, n: usize) -> Result<Vec<u8>, FunctionsError> {
    if n > MAX_LIBRARIES {
        return Err(FunctionsError::Malformed(format!("a string of {n} bytes")));
    }
    let mut v = vec![0; n];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// An RDB length; `Err(kind)` carries the special encoding of a string (bits `11`).
fn length(r: &mut impl Read) -> Result<Result<u64, u8>, FunctionsError> {
    let b = byte(r)?;
    Ok(match b >> 6 {
        0 => Ok(u64::from(b & 0x3F)),
        1 => Ok((u64::from(b & 0x3F) << 8) | u64::from(byte(r)?)),
        2 if b == 0x80 => Ok(u64::from(u32::from_be_bytes(
            exact(r, 4)?.try_into().expect("4"),
        ))),
        2 if b == 0x81 => Ok(u64::from_be_bytes(exact(r, 8)?.try_into().expect("8"))),
        2 => return Err(FunctionsError::Malformed(format!("length byte 0x{b:02x}"))),
        _ => Err(b & 0x3F),
    })
}

/// An RDB string, decoded: plain, an integer, or LZF-compressed.
pub(super) fn string(r: &mut impl Read) -> Result<Vec<u8>, FunctionsError> {
    let too_long =
        |n: u64| usize::try_from(n).map_err(|_| FunctionsError::Malformed("length".into()));
    match length(r)? {
        Ok(n) => exact(r, too_long(n)?),
        Err(0) => Ok((byte(r)? as i8).to_string().into_bytes()),
        Err(1) => Ok(i16::from_le_bytes(exact(r, 2)?.try_into().expect("2"))
            .to_string()
            .into_bytes()),
        Err(2) => Ok(i32::from_le_bytes(exact(r, 4)?.try_into().expect("4"))
            .to_string()
            .into_bytes()),
        Err(3) => {
            let clen =
                too_long(length(r)?.map_err(|_| FunctionsError::Malformed("LZF length".into()))?)?;
            let len =
                too_long(length(r)?.map_err(|_| FunctionsError::Malformed("LZF length".into()))?)?;
            let compressed = exact(r, clen)?;
            lzf(&compressed, len)
        }
        Err(e) => Err(FunctionsError::Malformed(format!("string encoding {e}"))),
    }
}

/// LZF decompression (liblzf's format, as Redis writes it) into exactly `len` bytes.
fn lzf(input: &[u8], len: usize) -> Result<Vec<u8>, FunctionsError> {
    if len > MAX_LIBRARIES {
        return Err(FunctionsError::Malformed(format!(
            "an LZF string of {len} bytes"
        )));
    }
    let broken = || FunctionsError::Malformed("corrupt LZF string".into());
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            let run = input.get(i..i + ctrl + 1).ok_or_else(broken)?;
            out.extend_from_slice(run);
            i += ctrl + 1;
        } else {
            let mut n = ctrl >> 5;
            if n == 7 {
                n += usize::from(*input.get(i).ok_or_else(broken)?);
                i += 1;
            }
            let low = usize::from(*input.get(i).ok_or_else(broken)?);
            i += 1;
            let back = ((ctrl & 0x1F) << 8) + low + 1;
            let start = out.len().checked_sub(back).ok_or_else(broken)?;
            for k in 0..n + 2 {
                let b = out[start + k];
                out.push(b);
            }
        }
        if out.len() > len {
            return Err(broken());
        }
    }
    if out.len() != len {
        return Err(broken());
    }
    Ok(out)
}

pub(super) fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n < 64 {
        out.push(n as u8);
    } else if n < 16384 {
        out.extend([0x40 | (n >> 8) as u8, n as u8]);
    } else {
        out.push(0x80);
        out.extend((n as u32).to_be_bytes());
    }
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn libraries_follow_the_function_commands() {
        let mut snapshot = b"REDIS0010".to_vec();
        snapshot.push(AUX);
        put_string(&mut snapshot, b"redis-ver");
        put_string(&mut snapshot, b"7.0.15");
        snapshot.push(FUNCTION2);
        put_string(
            &mut snapshot,
            b"#!lua name=one\nredis.register_function('f', function() return 1 end)",
        );
        snapshot.push(SELECTDB);
        let mut libs = Libraries::from_snapshot(&snapshot[..]).unwrap();
        libs.apply(&[b("FUNCTION"), b("LOAD"), b("#!lua name=two\nx")])
            .unwrap();
        libs.apply(&[b("FUNCTION"), b("LOAD"), b("#!lua name=one\nnot replaced")])
            .unwrap();
        assert_eq!(libs.names(), ["one", "two"]);
        libs.apply(&[
            b("FUNCTION"),
            b("LOAD"),
            b("REPLACE"),
            b("#!lua name=one\nv2"),
        ])
        .unwrap();
        libs.apply(&[b("FUNCTION"), b("DELETE"), b("two")]).unwrap();
        assert_eq!(libs.names(), ["one"]);
        let rdb = libs.rdb();
        let again = Libraries::from_snapshot(&rdb[..]).unwrap();
        assert_eq!(again.libs["one"], b"#!lua name=one\nv2");
        libs.apply(&[b("FUNCTION"), b("FLUSH")]).unwrap();
        assert!(libs.names().is_empty());
    }

    #[test]
    fn function_restore_payloads_apply_with_their_policy() {
        let mut payload = vec![FUNCTION2];
        put_string(&mut payload, b"#!lua name=r\nrestored");
        payload.extend([11, 0]);
        payload.extend([0; 8]);
        let mut libs = Libraries::default();
        libs.apply(&[b("FUNCTION"), b("LOAD"), b("#!lua name=r\nold")])
            .unwrap();
        libs.apply(&[b("FUNCTION"), b("LOAD"), b("#!lua name=s\nother")])
            .unwrap();
        let restore = |policy: &str| {
            vec![
                b("FUNCTION"),
                b("RESTORE"),
                Bytes::from(payload.clone()),
                b(policy),
            ]
        };
        libs.apply(&restore("APPEND")).unwrap();
        assert_eq!(
            libs.libs["r"], b"#!lua name=r\nold",
            "APPEND keeps what exists"
        );
        libs.apply(&restore("REPLACE")).unwrap();
        assert_eq!(libs.libs["r"], b"#!lua name=r\nrestored");
        libs.apply(&restore("FLUSH")).unwrap();
        assert_eq!(libs.names(), ["r"]);
    }

    #[test]
    fn lzf_strings_decode() {
        // "aaaaaaaaaa": a literal 'a', then a back-reference of 9 bytes at distance 1.
        assert_eq!(
            lzf(&[0x00, b'a', 0xE0, 0x00, 0x00], 10).unwrap(),
            b"aaaaaaaaaa"
        );
        assert!(lzf(&[0x00, b'a', 0xE0, 0x00, 0x05], 10).is_err());
        let module = [b"REDIS0010".as_slice(), &[MODULE_AUX]].concat();
        assert!(matches!(
            Libraries::from_snapshot(&module[..]),
            Err(FunctionsError::Unsupported(_))
        ));
    }
}

//! What a snapshot holds, learned with the `rdb` crate: AUX fields, keys per db and per type,
//! keys with an expiry, and the largest keys by serialized size.
//!
//! The crate skips streams and module values without yielding them, so every key is counted
//! from the decoder's filter callbacks, which see each key's type byte and name before its
//! value; only expiries and exact sizes need the decoded value.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::rc::Rc;

use rdb::{Filter, RdbDecoder, RdbValue};
use serde::Serialize;

use super::hash2::{HASH_2, Hash2};

/// How many of the largest keys are kept.
pub const TOP_KEYS: usize = 10;
/// Longest key name or AUX value kept for display.
const MAX_TEXT: usize = 128;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DbStats {
    pub keys: u64,
    pub expires: u64,
    pub types: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LargeKey {
    pub db: u32,
    pub key: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Serialized size of key and value; approximate for types the decoder skips.
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SnapshotStats {
    /// The file's first 9 bytes: `REDIS0011`, `VALKEY080`.
    pub signature: String,
    pub rdb_version: u32,
    pub aux: BTreeMap<String, String>,
    pub dbs: BTreeMap<u32, DbStats>,
    pub largest: Vec<LargeKey>,
    /// Keys counted from their type byte only, by type: the decoder skips their values, so
    /// their expiries are not known.
    pub not_decoded: BTreeMap<&'static str, u64>,
    /// Why decoding stopped early, and at which byte offset.
    pub error: Option<String>,
}

impl SnapshotStats {
    pub fn keys(&self) -> u64 {
        self.dbs.values().map(|d| d.keys).sum()
    }
}

/// `name=count` pairs joined by `sep`, for INFO and `inspect`.
pub fn counts<K: std::fmt::Display>(map: &BTreeMap<K, u64>, sep: &str) -> String {
    let pairs: Vec<String> = map.iter().map(|(k, n)| format!("{k}={n}")).collect();
    pairs.join(sep)
}

/// The Redis type a value type byte encodes (PROTOCOL §6.4).
pub fn type_name(enc: u8) -> &'static str {
    match enc {
        0 => "string",
        1 | 10 | 14 | 18 => "list",
        2 | 11 | 20 => "set",
        3 | 5 | 12 | 17 => "zset",
        4 | 9 | 13 | 16 | 22..=25 => "hash",
        15 | 19 | 21 | 26 | 27 => "stream",
        6 | 7 => "module",
        _ => "unknown",
    }
}

fn skipped_by_decoder(kind: &str) -> bool {
    matches!(kind, "stream" | "module" | "unknown")
}

struct Pending {
    db: u32,
    kind: &'static str,
    key: String,
    key_len: u64,
    start: u64,
}

#[derive(Default)]
struct Tally {
    db: u32,
    dbs: BTreeMap<u32, DbStats>,
    not_decoded: BTreeMap<&'static str, u64>,
    largest: Vec<LargeKey>,
    pending: Option<Pending>,
}

impl Tally {
    /// The value of the pending key ended at `end`.
    fn close(&mut self, end: u64, has_expiry: bool) {
        let Some(p) = self.pending.take() else { return };
        if has_expiry {
            self.dbs.entry(p.db).or_default().expires += 1;
        }
        let bytes = end.saturating_sub(p.start) + p.key_len;
        let key = LargeKey {
            db: p.db,
            key: p.key,
            kind: p.kind,
            bytes,
        };
        let at = self.largest.partition_point(|k| k.bytes >= bytes);
        if at < TOP_KEYS {
            self.largest.insert(at, key);
            self.largest.truncate(TOP_KEYS);
        }
    }
}

/// Sees every key before its value is decoded; counts it, decodes everything.
struct Observer {
    pos: Rc<Cell<u64>>,
    tally: Rc<RefCell<Tally>>,
    /// In a Valkey file: arms the reader that rewrites a type-22 value (`hash2`).
    valkey_hash2: Option<Rc<Cell<bool>>>,
}

impl Filter for Observer {
    fn matches_db(&self, db: u32) -> bool {
        self.tally.borrow_mut().db = db;
        true
    }

    fn matches_type(&self, enc_type: u8) -> bool {
        if let Some(armed) = &self.valkey_hash2 {
            armed.set(enc_type == HASH_2);
        }
        let mut t = self.tally.borrow_mut();
        t.close(self.pos.get(), false);
        let (db, kind) = (t.db, type_name(enc_type));
        t.pending = Some(Pending {
            db,
            kind,
            key: String::new(),
            key_len: 0,
            start: self.pos.get(),
        });
        true
    }

    fn matches_key(&self, key: &[u8]) -> bool {
        let mut t = self.tally.borrow_mut();
        let Some(p) = t.pending.as_mut() else {
            return true;
        };
        p.key = display(key);
        p.key_len = key.len() as u64;
        let (db, kind) = (p.db, p.kind);
        let stats = t.dbs.entry(db).or_default();
        stats.keys += 1;
        *stats.types.entry(kind).or_default() += 1;
        if skipped_by_decoder(kind) {
            *t.not_decoded.entry(kind).or_default() += 1;
        }
        true
    }
}

fn display(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_TEXT)]);
    if bytes.len() > MAX_TEXT {
        format!("{s}...")
    } else {
        s.into_owned()
    }
}

/// Counts the bytes the decoder has consumed.
struct Counting<R> {
    inner: R,
    pos: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos.set(self.pos.get() + n as u64);
        Ok(n)
    }
}

/// The decoder knows only the `REDIS` signature. A Valkey 9 header (`VALKEY080`) is presented
/// as `REDIS0011`: the encodings are the same up to Valkey's own types. Its hash with field
/// expiry (type 22) is rewritten for the decoder (`hash2`); a newer type makes the decoder stop
/// with an error that the stats report.
fn redis_signature<R: Read>(mut reader: R) -> io::Result<(String, impl Read)> {
    let mut header = [0u8; 9];
    reader.read_exact(&mut header)?;
    let signature = String::from_utf8_lossy(&header).into_owned();
    if header.starts_with(b"VALKEY") {
        header.copy_from_slice(b"REDIS0011");
    }
    Ok((signature, io::Cursor::new(header).chain(reader)))
}

fn expiry(value: &RdbValue) -> bool {
    match value {
        RdbValue::String { expiry, .. }
        | RdbValue::Hash { expiry, .. }
        | RdbValue::Set { expiry, .. }
        | RdbValue::List { expiry, .. }
        | RdbValue::SortedSet { expiry, .. } => expiry.is_some(),
        _ => false,
    }
}

/// Decodes a whole snapshot; never fails, but says in `error` where and why it stopped.
pub fn analyze<R: Read>(reader: R) -> SnapshotStats {
    let pos = Rc::new(Cell::new(0));
    let tally = Rc::new(RefCell::new(Tally::default()));
    let mut stats = SnapshotStats::default();
    let reader = match redis_signature(reader) {
        Ok((signature, r)) => {
            stats.signature = signature;
            r
        }
        Err(e) => {
            stats.error = Some(format!("at byte 0: cannot read the header: {e}"));
            return stats;
        }
    };
    let buffered = io::BufReader::with_capacity(256 * 1024, reader);
    let counting = Counting {
        inner: buffered,
        pos: pos.clone(),
    };
    let armed = Rc::new(Cell::new(false));
    let observer = Observer {
        pos: pos.clone(),
        tally: tally.clone(),
        valkey_hash2: stats.signature.starts_with("VALKEY").then(|| armed.clone()),
    };
    match RdbDecoder::new(Hash2::new(counting, armed), observer) {
        Err(e) => stats.error = Some(format!("at byte {}: {e}", pos.get())),
        Ok(decoder) => {
            stats.rdb_version = decoder.version();
            for item in decoder {
                match item {
                    Ok(RdbValue::AuxField { key, value }) => {
                        stats.aux.insert(display(&key), display(&value));
                    }
                    Ok(RdbValue::Checksum(_)) => tally.borrow_mut().close(pos.get() - 9, false),
                    Ok(RdbValue::SelectDb(_) | RdbValue::ResizeDb { .. }) => {}
                    Ok(value) => tally.borrow_mut().close(pos.get(), expiry(&value)),
                    Err(e) => {
                        stats.error =
                            Some(format!("decoding stopped near byte {}: {e}", pos.get()));
                        break;
                    }
                }
            }
        }
    }
    let t = std::mem::take(&mut *tally.borrow_mut());
    (stats.dbs, stats.largest, stats.not_decoded) = (t.dbs, t.largest, t.not_decoded);
    stats
}

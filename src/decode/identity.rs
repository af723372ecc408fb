//! The replication identity a snapshot carries in its AUX fields: `repl-id`, `repl-offset` and
//! `repl-stream-db`. A replica that loads a snapshot takes its master's database from
//! `repl-stream-db`, and one that restarts from the file it received continues with
//! `PSYNC <repl-id> <repl-offset + 1>`. The compactor's server writes its own identity there;
//! `set_identity` puts upstream's in its place and recomputes the CRC64.

use std::io::{Read, Write};

use super::check::SnapshotCheck;
use super::functions::{AUX, FunctionsError, byte, put_string, string};

/// The AUX fields that `set_identity` writes and drops from the input.
const FIELDS: [&[u8]; 3] = [b"repl-id", b"repl-offset", b"repl-stream-db"];

/// Upstream's identity at a snapshot's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplIdentity {
    pub replid: String,
    pub offset: u64,
    pub stream_db: u32,
}

/// `repl-stream-db` of a snapshot: the database its stream continues in (`None` when the
/// snapshot does not say, which a replica reads as database 0).
pub fn stream_db(r: impl Read) -> Result<Option<u32>, FunctionsError> {
    let fields = aux_fields(r)?;
    Ok(field(&fields, b"repl-stream-db"))
}

/// The replication identity a snapshot says it has, when it has all three fields.
pub fn identity_of(r: impl Read) -> Result<Option<ReplIdentity>, FunctionsError> {
    let fields = aux_fields(r)?;
    let replid = fields
        .iter()
        .find(|(k, _)| k == b"repl-id")
        .and_then(|(_, v)| String::from_utf8(v.clone()).ok());
    Ok(
        match (
            replid,
            field(&fields, b"repl-offset"),
            field(&fields, b"repl-stream-db"),
        ) {
            (Some(replid), Some(offset), Some(stream_db)) => Some(ReplIdentity {
                replid,
                offset,
                stream_db,
            }),
            _ => None,
        },
    )
}

/// An AUX field: its name and value.
type Aux = (Vec<u8>, Vec<u8>);

/// The identity's AUX fields (`FIELDS`) at the start of a snapshot: only those are kept, so a
/// file of endless other AUX fields costs no memory.
fn aux_fields(r: impl Read) -> Result<Vec<Aux>, FunctionsError> {
    let mut r = std::io::BufReader::new(r);
    let mut header = [0u8; 9];
    r.read_exact(&mut header)?;
    let mut fields = Vec::new();
    while byte(&mut r)? == AUX {
        let (k, v) = (string(&mut r)?, string(&mut r)?);
        if FIELDS.contains(&k.as_slice()) && fields.len() < FIELDS.len() {
            fields.push((k, v));
        }
    }
    Ok(fields)
}

fn field<T: std::str::FromStr>(fields: &[Aux], name: &[u8]) -> Option<T> {
    let (_, v) = fields.iter().find(|(k, _)| k == name)?;
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Copies the snapshot `src` to `dst` with `id` as its identity (the fields written right after
/// the other AUX fields, the input's own left out) and a new CRC64. The input's own CRC64 is
/// checked on the way: a damaged input is an error, never a snapshot with a fresh checksum.
pub fn set_identity(
    src: impl Read,
    dst: impl Write,
    id: &ReplIdentity,
) -> Result<u64, FunctionsError> {
    let mut input = Checked {
        inner: std::io::BufReader::with_capacity(1 << 20, src),
        check: SnapshotCheck::default(),
    };
    let mut out = Crc {
        inner: std::io::BufWriter::with_capacity(1 << 20, dst),
        digest: crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Redis),
        written: 0,
    };
    let mut head = vec![0u8; 9];
    input.read_exact(&mut head)?;
    let mut opcode = byte(&mut input)?;
    while opcode == AUX {
        let (k, v) = (string(&mut input)?, string(&mut input)?);
        if !FIELDS.contains(&k.as_slice()) {
            aux(&mut head, &k, &v);
        }
        opcode = byte(&mut input)?;
    }
    aux(
        &mut head,
        b"repl-stream-db",
        id.stream_db.to_string().as_bytes(),
    );
    aux(&mut head, b"repl-id", id.replid.as_bytes());
    aux(&mut head, b"repl-offset", id.offset.to_string().as_bytes());
    head.push(opcode);
    out.write_all(&head)?;
    // The rest as it is but its last 8 bytes, the input's CRC64, held back at every step.
    let mut held: Vec<u8> = Vec::with_capacity((1 << 20) + 8);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        held.extend_from_slice(&buf[..n]);
        let keep = held.len().saturating_sub(8);
        out.write_all(&held[..keep])?;
        held.drain(..keep);
    }
    input
        .check
        .finish()
        .map_err(|e| FunctionsError::Malformed(format!("the compactor's snapshot: {e}")))?;
    if held.len() != 8 {
        return Err(FunctionsError::Malformed("no CRC64 trailer".into()));
    }
    let crc = out.digest.finalize();
    out.inner.write_all(&crc.to_le_bytes())?;
    out.inner.flush()?;
    Ok(out.written + 8)
}

fn aux(out: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    out.push(AUX);
    put_string(out, k);
    put_string(out, v);
}

/// A reader that runs the snapshot check over what it reads.
struct Checked<R> {
    inner: R,
    check: SnapshotCheck,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.check.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that runs Redis' CRC64 over what it writes.
struct Crc<W> {
    inner: W,
    digest: crc_fast::Digest,
    written: u64,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rdb_with(aux_fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = b"REDIS0011".to_vec();
        for (k, v) in aux_fields {
            aux(&mut out, k, v);
        }
        out.extend([
            0xFE, 0x00, 0xFB, 0x01, 0x00, 0x00, 0x01, b'k', 0x01, b'v', 0xFF,
        ]);
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Redis, &out);
        out.extend(crc.to_le_bytes());
        out
    }

    #[test]
    fn the_identity_is_replaced_and_the_checksum_is_new() {
        let input = rdb_with(&[
            (b"redis-ver", b"7.2.4"),
            (b"repl-stream-db", b"0"),
            (b"repl-id", b"0123456789012345678901234567890123456789"),
            (b"repl-offset", b"0"),
        ]);
        let id = ReplIdentity {
            replid: "a".repeat(40),
            offset: 123_456,
            stream_db: 3,
        };
        let mut out = Vec::new();
        let n = set_identity(&input[..], &mut out, &id).unwrap();
        assert_eq!(n as usize, out.len());
        let mut check = SnapshotCheck::default();
        check.update(&out);
        check.finish().expect("a valid snapshot");
        assert_eq!(stream_db(&out[..]).unwrap(), Some(3));
        assert_eq!(identity_of(&out[..]).unwrap(), Some(id.clone()));
        assert_eq!(identity_of(&input[..]).unwrap().map(|i| i.offset), Some(0));
        let partial = rdb_with(&[(b"repl-stream-db", b"2")]);
        assert_eq!(identity_of(&partial[..]).unwrap(), None);
        let want = rdb_with(&[
            (b"redis-ver", b"7.2.4"),
            (b"repl-stream-db", b"3"),
            (b"repl-id", "a".repeat(40).as_bytes()),
            (b"repl-offset", b"123456"),
        ]);
        assert_eq!(out, want);
    }

    #[test]
    fn a_damaged_input_is_refused() {
        let mut input = rdb_with(&[(b"repl-id", b"x")]);
        let at = input.len() - 12;
        input[at] ^= 0xFF;
        let id = ReplIdentity {
            replid: "b".repeat(40),
            offset: 1,
            stream_db: 0,
        };
        let err = set_identity(&input[..], Vec::new(), &id).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}

//! Snapshots of servers newer than those installable here (PROTOCOL §11): Valkey 9.2
//! (`VALKEY081`, type 23, opcode 242) and Redis 8.6 / 8.8 (RDB 13 / 14, opcode 243), built in
//! the test and sent by a fake master. The relay stores them, checks their CRC64, serves them
//! byte for byte, decodes what it knows and says where it stopped; it never advertises a
//! compression it cannot store.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use support::{Relay, wait_for};

/// A length-prefixed RDB string (lengths under 64).
fn string(s: &[u8]) -> Vec<u8> {
    assert!(s.len() < 64);
    [&[s.len() as u8][..], s].concat()
}

/// A snapshot: the header, AUX fields, db 0 with one plain string key, then `unknown` (a type
/// or opcode the decoder does not know, with bytes after it), the EOF opcode and the CRC64.
fn snapshot(magic: &[u8], server: (&str, &str), unknown: &[u8]) -> Vec<u8> {
    let mut rdb = magic.to_vec();
    for (k, v) in [
        (server.0, server.1),
        ("redis-bits", "64"),
        ("ctime", "1764547200"),
    ] {
        rdb.push(0xFA);
        rdb.extend(string(k.as_bytes()));
        rdb.extend(string(v.as_bytes()));
    }
    rdb.extend([0xFE, 0x00, 0xFB, 0x02, 0x00]);
    rdb.push(0x00);
    rdb.extend(string(b"known"));
    rdb.extend(string(b"value"));
    rdb.extend_from_slice(unknown);
    rdb.push(0xFF);
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Redis, &rdb);
    rdb.extend(crc.to_le_bytes());
    rdb
}

/// A master that sends `rdb` after `+FULLRESYNC` and keeps the link open; what the relay sent
/// it comes back on the channel when the snapshot has gone out.
fn fake_master(rdb: Vec<u8>) -> (u16, mpsc::Receiver<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { return };
            let mut seen = Vec::new();
            let mut until = |needle: &[u8], sock: &mut TcpStream| {
                let mut buf = [0u8; 4096];
                while !seen.windows(needle.len()).any(|w| w == needle) {
                    match sock.read(&mut buf) {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                true
            };
            if !until(b"PING", &mut sock) || sock.write_all(b"+PONG\r\n").is_err() {
                continue;
            }
            if !until(b"INFO", &mut sock)
                || sock.write_all(b"-ERR unknown command 'INFO'\r\n").is_err()
            {
                continue;
            }
            if !until(b"psync2", &mut sock) || sock.write_all(b"+OK\r\n+OK\r\n").is_err() {
                continue;
            }
            if until(b"PSYNC", &mut sock) {
                let mut out = format!("+FULLRESYNC {} 100\r\n${}\r\n", "f".repeat(40), rdb.len())
                    .into_bytes();
                out.extend_from_slice(&rdb);
                if sock.write_all(&out).is_ok() {
                    let _ = tx.send(seen.clone());
                    kept.push(sock);
                }
            }
        }
    });
    (port, rx)
}

/// What a replica asking the relay for a full sync receives after `$<len>`.
fn full_sync_from(relay: &Relay) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"PSYNC ? -1\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(payload) = payload(&got) {
            return payload;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the relay closed the full sync");
        got.extend_from_slice(&buf[..n]);
    }
}

/// The payload after `+FULLRESYNC ...\r\n$<len>\r\n`, once all of it has arrived.
fn payload(got: &[u8]) -> Option<Vec<u8>> {
    let got = &got[got.iter().position(|&b| b != b'\n')?..];
    let first = got.windows(2).position(|w| w == b"\r\n")? + 2;
    let rest = &got[first..];
    let header = rest.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(&rest[1..header]).ok()?.parse().ok()?;
    let body = &rest[header + 2..];
    (body.len() >= len).then(|| body[..len].to_vec())
}

fn passes_through(name: &str, rdb: Vec<u8>, format: &str) {
    let (port, seen) = fake_master(rdb.clone());
    let relay = Relay::of(port, &[]);
    let sent = seen
        .recv_timeout(support::DEADLINE)
        .unwrap_or_else(|_| panic!("{name}: the relay never asked for the snapshot"));
    let sent = String::from_utf8_lossy(&sent).to_lowercase();
    assert!(
        !sent.contains("lz4") && !sent.contains("zstd"),
        "{name}: {sent}"
    );
    let info = wait_for(&format!("{name} in service and decoded"), || {
        let info = relay.client().cmd(&["INFO", "relay"]).text();
        (
            info.contains("relay_snapshot_decoded:") && !info.contains("decoded:pending"),
            info,
        )
    });
    assert!(
        info.contains("relay_snapshot_verification:verified"),
        "{name}: {info}"
    );
    assert!(
        info.contains(&format!("relay_snapshot_format:{format}")),
        "{name}: {info}"
    );
    assert!(
        info.contains("relay_snapshot_decoded:incomplete ("),
        "{name}: says where it stopped: {info}"
    );
    assert_eq!(
        full_sync_from(&relay),
        rdb,
        "{name}: not served byte for byte"
    );
}

#[test]
fn valkey_9_2_snapshots_pass_through() {
    // Type 23 (RDB_TYPE_PATH_HASH) with a key and bytes the decoder cannot read.
    let type_23 = [&[23u8][..], &string(b"path"), &[0x07, 0x01, 0x02, 0x03]].concat();
    passes_through(
        "Valkey 9.2, type 23",
        snapshot(b"VALKEY081", ("valkey-ver", "9.2.0"), &type_23),
        "VALKEY081",
    );
    // Opcode 242 (RDB_OPCODE_UPDATE): inline replication commands in a forkless full sync.
    let opcode_242 = [&[242u8][..], &string(b"*1\r\n$4\r\nPING\r\n")].concat();
    passes_through(
        "Valkey 9.2, opcode 242",
        snapshot(b"VALKEY081", ("valkey-ver", "9.2.0"), &opcode_242),
        "VALKEY081",
    );
}

#[test]
fn redis_8_6_and_8_8_snapshots_pass_through() {
    // Opcode 243 (RDB_OPCODE_KEY_META) before a key.
    let meta = [
        &[243u8][..],
        &[0x01, 0x02],
        &[0x00],
        &string(b"k"),
        &string(b"v"),
    ]
    .concat();
    passes_through(
        "Redis 8.6",
        snapshot(b"REDIS0013", ("redis-ver", "8.6.0"), &meta),
        "REDIS0013",
    );
    passes_through(
        "Redis 8.8",
        snapshot(b"REDIS0014", ("redis-ver", "8.8.0"), &meta),
        "REDIS0014",
    );
}

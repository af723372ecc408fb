//! A stored snapshot damaged on disk is never served: found at start before anyone gets it, or
//! caught by the CRC64 while a full sync serves it, before its last 8 bytes leave. Either way it
//! is taken out of service and replaced with a fresh snapshot from the master, the replica that
//! asked gets the good one, and replicas that stream never notice.

mod support;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use support::{Relay, Server, Value, chain, wait_for, wait_in_sync, write_mixed};

/// The snapshot file the relay's identity names.
fn stored_snapshot(relay: &Relay) -> PathBuf {
    let mut snaps: Vec<_> = std::fs::read_dir(relay.dir.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rdb"))
        .collect();
    assert_eq!(snaps.len(), 1, "one snapshot in service: {snaps:?}");
    snaps.pop().unwrap()
}

/// Flips one bit in the middle of the file, in place, as rot on a disk would.
fn flip_a_bit(path: &PathBuf) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let at = f.metadata().unwrap().len() / 2;
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x10]).unwrap();
    f.sync_all().unwrap();
}

fn corrupt_total(relay: &Relay) -> f64 {
    let (_, body) = relay.http_get("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("replica_relay_store_snapshot_corrupt_total "))
        .expect("the metric exists")
        .parse()
        .unwrap()
}

fn full_syncs(s: &Server) -> i64 {
    s.client().info_num("stats", "sync_full")
}

/// A new replica full-syncs from the relay and ends with the master's data, alive.
fn new_replica_gets_the_masters_data(master: &Server, relay: &Relay) -> Server {
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(master, &[&replica]);
    assert_eq!(
        replica.client().cmd(&["PING"]),
        Value::Simple("PONG".into())
    );
    assert!(
        !replica.log().contains("Wrong RDB checksum"),
        "the replica was sent a damaged snapshot:\n{}",
        replica.log()
    );
    replica
}

#[test]
fn a_snapshot_damaged_while_stopped_is_replaced_before_it_is_served() {
    let (master, mut relay, streaming) = chain(&["--snapshot-refresh", "never"]);
    let forks = full_syncs(&master);
    assert_eq!(relay.terminate().code(), Some(0));
    flip_a_bit(&stored_snapshot(&relay));
    relay.restart();
    write_mixed(&mut master.client(), "b", 5);
    let _fresh = new_replica_gets_the_masters_data(&master, &relay);
    wait_in_sync(&master, &[&streaming]);
    assert!(
        relay.log().contains("failed verification"),
        "{}",
        relay.log()
    );
    assert_eq!(corrupt_total(&relay), 1.0);
    assert_eq!(
        full_syncs(&master),
        forks + 1,
        "one fork on the master for the fresh snapshot"
    );
    assert_eq!(
        relay.client().info_num("stats", "sync_partial_ok"),
        1,
        "the streaming replica resumed with a partial resync"
    );
}

#[test]
fn a_snapshot_that_rots_while_the_relay_runs_is_never_completed_to_a_replica() {
    let (master, relay, _streaming) = chain(&["--snapshot-refresh", "never"]);
    flip_a_bit(&stored_snapshot(&relay));
    let _fresh = new_replica_gets_the_masters_data(&master, &relay);
    let log = relay.log();
    assert!(
        log.contains("closing before its checksum"),
        "the full sync was cut before the checksum:\n{log}"
    );
    assert_eq!(corrupt_total(&relay), 1.0);
    wait_for("the relay to be ready again", || {
        let (code, body) = relay.http_get("/readyz");
        (code == 200, body)
    });
}

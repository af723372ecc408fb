//! Full-sync admission and pacing: `--max-full-syncs` makes the next replica wait (with
//! newlines, as while a master runs BGSAVE) and then sync; `--full-sync-rate` and
//! `--replica-rate` are checked from below only: N bytes took at least N / RATE seconds.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

/// A master holding `mb` MB that compresses badly, and a relay in front of it.
fn master_and_relay(mb: usize, flags: &[&str]) -> (Server, Relay) {
    let master = Server::master(&["--rdbcompression", "no"]);
    let keys = (mb * 1000).to_string();
    master
        .client()
        .cmd(&["DEBUG", "POPULATE", &keys, "big", "1000"]);
    let relay = Relay::of(master.port, flags);
    wait_for("the relay's snapshot in service", || {
        let link = relay.client().info("replication", "master_link_status");
        (link.as_deref() == Some("up"), link)
    });
    relay.stored(&master);
    (master, relay)
}

/// A raw replica: sends PSYNC and reads up to the snapshot's `$<size>` line, skipping the
/// newlines that keep it waiting (for the relay's own snapshot, for a slot). Returns the reader
/// and the size.
fn start_full_sync(port: u16) -> (BufReader<TcpStream>, usize) {
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    (&sock).write_all(b"PSYNC ? -1\r\n").unwrap();
    let mut rd = BufReader::new(sock);
    let mut line = String::new();
    // Newlines first while the relay's own snapshot is still on its way.
    while line.trim_start_matches('\n').is_empty() {
        line.clear();
        rd.read_line(&mut line).unwrap();
    }
    assert!(
        line.trim_start_matches('\n').starts_with("+FULLRESYNC"),
        "{line:?}"
    );
    loop {
        line.clear();
        rd.read_line(&mut line).unwrap();
        let l = line.trim_start_matches('\n');
        if let Some(size) = l.strip_prefix('$') {
            return (rd, size.trim_end().parse().unwrap());
        }
    }
}

/// Reads a whole full sync; returns its size and how long it took from PSYNC on.
fn timed_full_sync(port: u16) -> (usize, Duration) {
    let started = Instant::now();
    let (mut rd, size) = start_full_sync(port);
    let mut payload = vec![0u8; size];
    rd.read_exact(&mut payload).unwrap();
    (size, started.elapsed())
}

fn relay_num(relay: &Relay, field: &str) -> i64 {
    relay.client().info_num("relay", field)
}

/// With one slot, a replica arriving while another full sync is sent waits (INFO shows it
/// waiting; its link stays in sync, kept alive by newlines) and syncs once the slot is free:
/// here, once the other, a client that never reads, has stalled long enough to give it up.
#[test]
fn the_full_sync_past_the_limit_waits_then_syncs() {
    let (master, relay) = master_and_relay(40, &["--max-full-syncs", "1"]);
    assert_eq!(relay_num(&relay, "relay_max_full_syncs"), 1);
    // Holds the slot: it reads the size and then stops reading, so the send blocks (40 MB
    // is more than the socket buffers hold).
    let (holder, _) = start_full_sync(relay.port);
    wait_for("one full sync being sent", || {
        let running = relay_num(&relay, "relay_full_syncs_running");
        (running == 1, running)
    });
    let replica = Server::replica_of(relay.port, &[]);
    wait_for("the second full sync waiting", || {
        let waiting = relay_num(&relay, "relay_full_syncs_waiting");
        (waiting == 1, waiting)
    });
    assert!(relay.log().contains("waits for a slot"), "{}", relay.log());
    let mut rc = replica.client();
    assert_eq!(
        rc.info("replication", "master_link_status").as_deref(),
        Some("down")
    );
    // The holder never reads again: after a stall its slot goes to the waiting replica.
    wait_in_sync(&master, &[&replica]);
    assert_eq!(relay_num(&relay, "relay_full_syncs_waiting"), 0);
    assert!(relay.log().contains("starts after waiting"));
    assert!(
        relay
            .log()
            .contains("stalls: its slot goes to the next replica waiting")
    );
    drop(holder);
}

/// `--full-sync-rate` is shared: two full syncs at once together take at least their bytes
/// over the rate (less the one piece each may send at the start).
#[test]
fn the_full_sync_rate_paces_all_full_syncs_together() {
    let rate = 2_000_000;
    let (_master, relay) = master_and_relay(2, &["--full-sync-rate", "2m/s"]);
    let port = relay.port;
    let both = [std::thread::spawn(move || timed_full_sync(port)), {
        let port = relay.port;
        std::thread::spawn(move || timed_full_sync(port))
    }];
    let results: Vec<(usize, Duration)> = both.into_iter().map(|t| t.join().unwrap()).collect();
    let bytes: usize = results.iter().map(|r| r.0).sum();
    let longest = results.iter().map(|r| r.1).max().unwrap();
    let floor = (bytes - 2 * 512 * 1024) as f64 / rate as f64;
    assert!(
        longest.as_secs_f64() >= floor,
        "{bytes} bytes in {longest:?}, under {floor} s"
    );
}

/// `--replica-rate` paces each full sync on its own.
#[test]
fn the_replica_rate_paces_each_full_sync() {
    let rate = 1_000_000;
    let (_master, relay) = master_and_relay(2, &["--replica-rate", "1m"]);
    let (bytes, took) = timed_full_sync(relay.port);
    let floor = (bytes - 512 * 1024) as f64 / rate as f64;
    assert!(
        took.as_secs_f64() >= floor,
        "{bytes} bytes in {took:?}, under {floor} s"
    );
}

/// A replica that asks while the relay's own first snapshot is on its way is served once that
/// snapshot is in service, with nothing else happening after it (no write, no PING from the
/// master): the wait checks again each second, not only when the store changes. Seen in Redis'
/// replication-buffer test through the relay: the replica waited until the next store change.
#[test]
fn a_replica_waiting_for_the_first_snapshot_is_served_with_nothing_else_happening() {
    let master = Server::master(&[
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "1",
        "--repl-ping-replica-period",
        "3600",
    ]);
    write_mixed(&mut master.client(), "a", 5);
    let relay = Relay::of(master.port, &[]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
}

//! Durability and bounded disk, against real redis-server processes: kill -9 at different
//! moments, a torn log tail, retention under a steady write load with snapshot refreshes,
//! a full sync that outlives the refresh replacing its snapshot, a failover to a promoted
//! replica, and a master that comes back with a new history.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;

use support::{Relay, Server, chain, wait_for, wait_in_sync, write_mixed};

fn stat(s: &Server, field: &str) -> i64 {
    s.client().info_num("stats", field)
}

fn relay_stat(r: &Relay, field: &str) -> i64 {
    r.client().info_num("stats", field)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The newest log segment file of a stopped relay.
fn last_segment(relay: &Relay) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(relay.dir.join("log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a log segment")
}

#[test]
fn kill9_during_streaming_resumes_partially_everywhere() {
    kill9_during_streaming(&[]);
}

#[test]
fn kill9_with_appendfsync_always() {
    kill9_during_streaming(&["--appendfsync", "always"]);
}

fn kill9_during_streaming(flags: &[&str]) {
    let (master, mut relay, replica) = chain(flags);
    let mut m = master.client();

    relay.kill9_and_restart();
    write_mixed(&mut m, "b", 30);
    wait_in_sync(&master, &[&replica]);
    assert_eq!(
        master.client().syncs(),
        (1, 1),
        "the master continued partially, no full sync"
    );
    assert_eq!(
        relay.client().syncs(),
        (0, 1),
        "the replica continued partially"
    );
}

#[test]
fn kill9_during_the_relays_own_full_sync_discards_the_partial_snapshot() {
    let master = Server::master(&["--rdb-key-save-delay", "2000"]);
    let mut m = master.client();
    m.cmd(&["DEBUG", "POPULATE", "2000"]);
    let mut relay = Relay::of(master.port, &[]);
    let mut rc = relay.client();
    wait_for("the relay's full sync to be under way", || {
        let s = rc.info("replication", "master_sync_read_bytes");
        (s.as_deref().is_some_and(|b| b != "0"), s)
    });
    m.cmd(&["CONFIG", "SET", "rdb-key-save-delay", "0"]);
    relay.kill9_and_restart();
    let replica = Server::replica_of(relay.port, &[]);
    write_mixed(&mut m, "a", 10);
    wait_in_sync(&master, &[&replica]);
    assert!(
        relay
            .log()
            .contains("Partial resynchronization not possible (no cached master)")
    );
    let leftovers: Vec<_> = std::fs::read_dir(relay.dir.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "incomplete snapshots left: {leftovers:?}"
    );
}

#[test]
fn kill9_while_a_replica_full_syncs() {
    let master = Server::master(&[]);
    let mut m = master.client();
    let mut seed = 0x2545f4914f6cdd1du64;
    let cmds: Vec<Vec<String>> = (0..3000)
        .map(|i| {
            let value: String = (0..8000)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from(b'!' + (seed % 90) as u8)
                })
                .collect();
            support::cmd(&["SET", &format!("random:{i}"), &value])
        })
        .collect();
    m.pipeline(&cmds);
    let mut relay = Relay::of(master.port, &[]);
    wait_for("a snapshot in service", || {
        let s = relay.client().info("replication", "master_link_status");
        (s.as_deref() == Some("up"), s)
    });
    // A replica that asks for a full sync and never reads: the 24 MB snapshot fills the socket
    // buffers, so the relay stays in the middle of sending it.
    let mut stuck = relay.client();
    stuck.send_raw(b"PSYNC ? -1\r\n");
    wait_for("the relay to be sending the snapshot", || {
        let s = relay.client().info("replication", "slave0");
        (
            s.as_deref().is_some_and(|s| s.contains("state=send_bulk")),
            s,
        )
    });
    relay.kill9_and_restart();
    let replica = Server::replica_of(relay.port, &[]);
    write_mixed(&mut m, "a", 10);
    wait_in_sync(&master, &[&replica]);
    assert_eq!(
        m.syncs(),
        (1, 1),
        "the relay resumed partially; the master forked once"
    );
}

#[test]
fn torn_log_tail_is_cut_and_refetched() {
    let (master, mut relay, replica) = chain(&[]);
    let mut m = master.client();

    assert!(relay.terminate().success());
    let last = last_segment(&relay);
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$9\r\nhalf");
    std::fs::write(&last, bytes).unwrap();

    write_mixed(&mut m, "b", 20);
    relay.restart();
    wait_in_sync(&master, &[&replica]);
    assert!(
        relay
            .log()
            .contains("bytes of an incomplete command at the end of the log")
    );
    assert_eq!(
        master.client().syncs(),
        (1, 1),
        "a partial resync after the cut"
    );
}

#[test]
fn disk_stays_bounded_with_refreshes_and_replicas_agree() {
    let master = Server::master(&[]);
    let mut m = master.client();
    write_mixed(&mut m, "seed", 20);
    let relay = Relay::of(
        master.port,
        &[
            "--backlog-size",
            "64kb",
            "--log-segment-size",
            "16kb",
            "--snapshot-refresh",
            "128kb",
        ],
    );
    let early = Server::replica_of(relay.port, &[]);
    let value = "v".repeat(1000);
    // Backlog + refresh threshold + what arrives before the next one-second refresh check and
    // while the refresh runs + the segment being written.
    let limit = (64 + 128 + 2 * 200 + 2 * 16) * 1024;
    let (mut peak_log, mut written, mut round) = (0, 0, 0);
    // About 200 KB/s: wait_for polls every 50 ms.
    wait_for("refreshes while twice the bound is written", || {
        let cmds: Vec<Vec<String>> = (0..10)
            .map(|i| {
                support::cmd(&[
                    "SET",
                    &format!("key:{}", i % 500),
                    &format!("{round}{value}"),
                ])
            })
            .collect();
        m.pipeline(&cmds);
        round += 1;
        written += 10 * 1030;
        peak_log = peak_log.max(dir_bytes(&relay.dir.join("log")));
        let refreshes = relay_stat(&relay, "relay_snapshot_refreshes");
        (refreshes >= 4 && written > 2 * limit, (refreshes, written))
    });
    wait_in_sync(&master, &[&early]);
    let late = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&early, &late]);

    let mut rc = relay.client();
    assert_eq!(
        rc.syncs(),
        (2, 0),
        "the early replica streamed through every refresh"
    );
    let replid = rc.info("replication", "master_replid").unwrap();
    let mut trimmed = relay.client();
    trimmed.send_raw(format!("PSYNC {replid} 1\r\n").as_bytes());
    let reply = trimmed.read().unwrap().text();
    assert!(
        reply.starts_with("FULLRESYNC"),
        "offset 1 was trimmed: {reply}"
    );
    // The refreshes are the compactor's (the default with a server on PATH): the master's
    // only fork is the relay's first full sync, none per refresh, none per replica.
    assert!(relay_stat(&relay, "relay_snapshot_refreshes") >= 2);
    assert_eq!(
        stat(&master, "total_forks"),
        1,
        "a fork for a refresh or a replica"
    );
    assert_eq!(relay.client().info_num("relay", "relay_master_forks"), 1);
    assert!(
        peak_log < limit,
        "log on disk peaked at {peak_log} bytes (limit {limit})"
    );
    assert!(
        written > 2 * limit,
        "wrote {written} bytes: more than the bound, twice"
    );
    let snapshots = std::fs::read_dir(relay.dir.join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(snapshots, 1, "old snapshots are removed");
    let rss = std::fs::read_to_string(format!("/proc/{}/status", relay.pid())).unwrap();
    let rss = rss
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("")
        .to_string();
    eprintln!(
        "retention: wrote {written} bytes; log on disk peaked at {peak_log} bytes; relay {rss}"
    );
}

#[test]
fn failover_to_a_promoted_replica_continues_partially() {
    let old = Server::master(&[]);
    let promoted = Server::replica_of(old.port, &[]);
    let relay = Relay::of(old.port, &[]);
    let downstream = Server::replica_of(relay.port, &[]);
    let mut m = old.client();
    write_mixed(&mut m, "a", 20);
    wait_in_sync(&old, &[&promoted, &downstream]);

    let mut p = promoted.client();
    p.cmd(&["REPLICAOF", "NO", "ONE"]);
    let port = promoted.port.to_string();
    relay.client().cmd(&["REPLICAOF", "127.0.0.1", &port]);
    write_mixed(&mut p, "b", 20);
    wait_in_sync(&promoted, &[&downstream]);
    assert_eq!(
        promoted.client().syncs(),
        (0, 1),
        "the relay continued partially at the promoted replica"
    );
    assert_eq!(
        relay_stat(&relay, "sync_full"),
        1,
        "the downstream replica was not resynced"
    );
    assert!(
        relay_stat(&relay, "sync_partial_ok") >= 1,
        "it continued through replid2"
    );
    let mut rc = relay.client();
    let replid2 = rc.info("replication", "master_replid2").unwrap();
    assert_eq!(Some(replid2), m.info("replication", "master_replid"));
}

#[test]
fn a_master_with_a_new_history_is_followed_with_a_full_sync() {
    let master = Server::master(&[]);
    let port = master.port;
    let mut m = master.client();
    write_mixed(&mut m, "old", 10);
    let relay = Relay::of(port, &[]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    let old_id = m.info("replication", "master_replid").unwrap();
    drop(master);

    let fresh = Server::start_on(port, &[]);
    let mut f = fresh.client();
    write_mixed(&mut f, "new", 5);
    wait_in_sync(&fresh, &[&replica]);
    assert_ne!(
        relay.client().info("replication", "master_replid"),
        Some(old_id)
    );
    assert_eq!(
        replica.client().cmd(&["EXISTS", "old:str:0"]),
        support::Value::Int(0)
    );
}

#[test]
fn corrupt_bytes_inside_the_log_are_caught_by_checksums() {
    let (master, mut relay, replica) = chain(&[]);

    assert!(relay.terminate().success());
    let last = last_segment(&relay);
    let mut bytes = std::fs::read(&last).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == b"value-10")
        .expect("a value in the log");
    bytes[at] = b'V';
    std::fs::write(last, bytes).unwrap();

    let inspect = std::process::Command::new(env!("CARGO_BIN_EXE_replica-relay"))
        .arg("inspect")
        .arg(&relay.dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&inspect.stdout).into_owned()
        + &String::from_utf8_lossy(&inspect.stderr);
    assert_eq!(inspect.status.code(), Some(1), "inspect fails: {said}");
    assert!(said.contains("fails its checksum in bytes"), "{said}");

    relay.restart();
    wait_in_sync(&master, &[&replica]);
    let log = relay.log();
    assert!(log.contains("checksum mismatch"), "the damage was detected");
    assert!(
        log.contains("a checksum failed in log segment") && !log.contains("incomplete command"),
        "the cut names the checksum, not an incomplete command: {log}"
    );
    assert_eq!(
        replica.client().cmd(&["GET", "a:str:10"]).text(),
        "value-10"
    );
    assert_eq!(
        master.client().syncs(),
        (1, 1),
        "the damaged range came back by partial resync"
    );
    assert_eq!(
        relay.client().syncs(),
        (0, 1),
        "the replica waited for the relay to catch up"
    );
}

#[test]
fn disk_full_stops_acks_keeps_serving_and_recovers() {
    let Some(disk) = support::Tmpfs::mount("3m") else {
        support::missing("filling a disk needs a tmpfs, and mounting one needs root");
        return;
    };
    let master = Server::master(&[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 10);
    let store = disk.path.join("store");
    let port = master.port.to_string();
    let relay = Relay::start_in(Some(store), &["--replicaof", "127.0.0.1", &port]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    // WAIT counts the replicas that ACKed the master's offset: the relay, while it stores it.
    assert_eq!(
        m.cmd(&["WAIT", "1", "10000"]),
        support::Value::Int(1),
        "the relay acknowledges what it stored"
    );

    let value = "x".repeat(10_000);
    let cmds: Vec<Vec<String>> = (0..400)
        .map(|i| support::cmd(&["SET", &format!("big:{i}"), &value]))
        .collect();
    m.pipeline(&cmds);
    wait_for("the relay to report the full disk", || {
        let log = relay.log();
        (
            log.contains("No space left on device"),
            log.lines().last().map(str::to_string),
        )
    });
    let mut rc = relay.client();
    // Where the relay resumes after the failure is what it stored (what it forwarded before
    // the disk may have been more).
    let resumed = wait_for("the relay to resume from what it stored", || {
        let log = relay.log();
        let after = &log[log.find("No space left on device").unwrap_or(0)..];
        let request = after
            .lines()
            .find_map(|l| l.split("(request ").nth(1))
            .and_then(|r| r.split([':', ')']).nth(1))
            .and_then(|o| o.parse::<i64>().ok());
        (request.is_some(), request)
    });
    assert!(
        resumed.unwrap() <= m.info_num("replication", "master_repl_offset"),
        "not all was stored"
    );
    // The relay drops its link when it cannot store and tries again later, when the master
    // asks it for its offset (REPLCONF GETACK) while WAIT waits.
    assert_eq!(
        m.cmd(&["WAIT", "1", "3000"]),
        support::Value::Int(0),
        "the relay acknowledged bytes it could not store"
    );
    assert_eq!(
        rc.info_num("replication", "connected_slaves"),
        1,
        "the replica is still served"
    );
    // Each attempt is a PSYNC the master answers: they come further and further apart.
    wait_for("the relay to wait 16 s before its next attempt", || {
        let log = relay.log();
        (
            log.contains("next attempt in 16 s"),
            log.lines().last().map(str::to_string),
        )
    });
    let attempts = stat(&master, "sync_partial_ok");
    assert!(attempts <= 6, "{attempts} partial resyncs in about 15 s");

    // Room on the disk ends the wait at once.
    disk.resize("64m");
    wait_for("the relay to see room on its disk", || {
        let log = relay.log();
        (
            log.contains("The store's disk has room again"),
            log.lines().last().map(str::to_string),
        )
    });
    wait_in_sync(&master, &[&replica]);
    assert_eq!(
        stat(&master, "sync_full"),
        1,
        "recovered without a full sync"
    );
}

/// Reads a full sync's preamble from the relay: `+FULLRESYNC`, then `$<size>` after any `\n`
/// keepalives. Returns the size.
fn full_sync_size(rd: &mut BufReader<TcpStream>) -> usize {
    let mut line = String::new();
    while !line.starts_with('$') {
        line.clear();
        rd.read_line(&mut line).unwrap();
        line = line.trim_start_matches('\n').to_string();
    }
    line.trim_end()[1..].parse().unwrap()
}

#[test]
fn a_full_sync_under_way_outlives_the_refresh_that_replaces_its_snapshot() {
    let master = Server::master(&["--rdbcompression", "no"]);
    let mut m = master.client();
    m.cmd(&["DEBUG", "POPULATE", "40000", "big", "1000"]);
    let relay = Relay::of(master.port, &["--snapshot-refresh", "1mb"]);
    let old = wait_for("the relay's snapshot in service", || {
        let file = relay.client().info("relay", "relay_snapshot_file");
        (file.is_some(), file.unwrap_or_default())
    });

    // A replica that takes the first bytes of its full sync, then stops reading, so the relay is
    // still sending the old snapshot (40 MB, more than the socket buffers) when it is replaced.
    let sock = TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    (&sock).write_all(b"PSYNC ? -1\r\n").unwrap();
    let mut rd = BufReader::new(sock);
    let size = full_sync_size(&mut rd);
    let mut payload = vec![0u8; size];
    rd.read_exact(&mut payload[..65536]).unwrap();

    let value = "v".repeat(1000);
    let writes: Vec<Vec<String>> = (0..2000)
        .map(|i| support::cmd(&["SET", &format!("w:{i}"), &value]))
        .collect();
    m.pipeline(&writes);
    let old_path = relay.dir.join("snapshots").join(&old);
    wait_for("a refresh in service, the old snapshot unlinked", || {
        (
            !old_path.exists(),
            relay_stat(&relay, "relay_snapshot_refreshes"),
        )
    });

    rd.read_exact(&mut payload[65536..]).unwrap();
    let (body, trailer) = payload.split_at(size - 8);
    assert_eq!(
        crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Redis, body).to_le_bytes(),
        trailer,
        "the whole old snapshot arrived intact"
    );
    let mut next = [0u8; 1];
    rd.read_exact(&mut next).unwrap();
    assert_eq!(&next, b"*", "the stream follows the snapshot");
}

/// The identity cannot be saved when a new history arrives (here `identity.tmp` is taken by a
/// directory; on a full disk it is the same failure): the old log is gone by then, and the
/// store says so, with an empty log after the old snapshot, instead of listing deleted
/// segments. Once the identity can be saved, the new history goes into service.
#[test]
fn a_new_history_whose_identity_cannot_be_saved_leaves_a_consistent_store() {
    let master = Server::master(&[]);
    let port = master.port;
    write_mixed(&mut master.client(), "old", 10);
    let relay = Relay::of(port, &[]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    let blocker = relay.dir.join("identity.tmp");
    std::fs::create_dir(&blocker).unwrap();
    drop(master);

    let fresh = Server::start_on(port, &[]);
    write_mixed(&mut fresh.client(), "new", 5);
    wait_for("the new history's snapshot to be rejected", || {
        let log = relay.log();
        (log.contains("the snapshot was rejected"), log.len())
    });
    let mut rc = relay.client();
    let first = rc.info_num("relay", "relay_log_first_offset");
    let next = rc.info_num("relay", "relay_log_next_offset");
    assert_eq!(first, next, "an empty log");
    assert_eq!(first, rc.info_num("relay", "relay_snapshot_offset") + 1);
    assert!(
        relay
            .dir
            .join("log")
            .join(format!("{first:020}.seg"))
            .exists(),
        "the state's segment is on disk"
    );

    std::fs::remove_dir(&blocker).unwrap();
    wait_in_sync(&fresh, &[&replica]);
    assert_eq!(
        replica.client().cmd(&["EXISTS", "old:str:0"]),
        support::Value::Int(0)
    );
}

/// The store's time index: when the relay stored the bytes before an offset, at least once a
/// second, kept across a kill -9 (what a restore to a point in time will cut by).
#[test]
fn the_time_index_follows_the_log_across_kill_9() {
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let master = Server::master(&[]);
    let mut relay = Relay::of(master.port, &[]);
    let before = now_ms();
    write_mixed(&mut master.client(), "a", 10);
    relay.stored(&master);
    let (first, last) = relay.time_marks();
    let at = last.1;
    assert!(
        before <= at && at <= now_ms(),
        "{at} not within the test's run"
    );
    relay.kill9_and_restart();
    write_mixed(&mut master.client(), "b", 10);
    relay.stored(&master);
    let (first_again, last_again) = relay.time_marks();
    assert_eq!(
        first_again, first,
        "the first time was lost across the restart"
    );
    assert!(last_again.0 > last.0 && last_again.1 >= last.1);
}

/// A tool's pin (`<dir>/pins/<pid>`, what `restore` holds locked while it reads) keeps the log
/// from its offset through retention and snapshot refreshes; once nobody holds it (its tool
/// gone, however: the kernel releases the lock), the log is trimmed and the pin removed.
#[test]
fn a_pin_file_keeps_the_log_a_restore_reads() {
    let master = Server::master(&[]);
    let mut m = master.client();
    let relay = Relay::of(
        master.port,
        &[
            "--backlog-size",
            "64kb",
            "--log-segment-size",
            "16kb",
            "--snapshot-refresh",
            "128kb",
        ],
    );
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    let pins = relay.dir.join("pins");
    std::fs::create_dir_all(&pins).unwrap();
    let pin = pins.join(std::process::id().to_string());
    // Locked before it has its name, as the tools do: never seen unheld.
    let tmp = pins.join("held.tmp");
    let held = std::fs::File::create(&tmp).unwrap();
    held.lock().unwrap();
    std::fs::write(&tmp, "1\n").unwrap();
    std::fs::rename(&tmp, &pin).unwrap();
    let value = "v".repeat(1000);
    let mut round = 0;
    wait_for("snapshot refreshes past the pinned offset", || {
        let cmds: Vec<Vec<String>> = (0..10)
            .map(|i| support::cmd(&["SET", &format!("key:{i}"), &format!("{round}{value}")]))
            .collect();
        m.pipeline(&cmds);
        round += 1;
        let refreshes = relay_stat(&relay, "relay_snapshot_refreshes");
        (refreshes >= 2, refreshes)
    });
    let first = relay.client().info_num("relay", "relay_log_first_offset");
    assert_eq!(first, 1, "the pinned log was trimmed");
    drop(held);
    wait_for("the log to be trimmed once the pin is not held", || {
        m.cmd(&["SET", "more", &value]);
        let first = relay.client().info_num("relay", "relay_log_first_offset");
        (first > 1, first)
    });
    assert!(!pin.exists(), "the pin nobody holds is removed");
}

/// Two relays on one `--dir` would both write its log (seen: a pod rolled while the old
/// process lingered, and a log segment failing its checksum after). The second refuses,
/// naming the directory and the first one's PID; the first goes on serving.
#[test]
fn a_second_relay_on_the_same_dir_refuses_to_start() {
    let (master, relay, replica) = chain(&[]);
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_replica-relay"))
        .args(["--port", &support::free_port().to_string()])
        .args(["--metrics-port", &support::free_port().to_string()])
        .arg("--dir")
        .arg(&relay.dir)
        .args(["--replicaof", "127.0.0.1", &master.port.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for("the second relay to exit", || {
        let status = second.try_wait().unwrap();
        (status.is_some(), status)
    })
    .unwrap();
    let mut said = String::new();
    second
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(!status.success(), "{said}");
    assert!(said.contains(&relay.dir.display().to_string()), "{said}");
    assert!(said.contains(&format!("process {}", relay.pid())), "{said}");
    write_mixed(&mut master.client(), "b", 5);
    wait_in_sync(&master, &[&replica]);
}

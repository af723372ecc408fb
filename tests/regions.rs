//! Another region: a far relay attached to a near one across a slow, distant link (the WAN
//! stand-in, 20 ms each way), the link compressed (`--upstream-compression zstd`), replicas
//! behind each relay. Every replica must end with the master's data, and the far side must come
//! back with partial resyncs whatever is killed or cut.

mod support;

use support::wan::Wan;
use support::{Client, Relay, Server, cmd, wait_for, wait_in_sync, write_mixed};

/// JSON-like text values, as many applications keep: the data compression is for.
fn write_text(c: &mut Client, tag: &str, n: usize) {
    let cmds: Vec<Vec<String>> = (0..n)
        .map(|i| {
            let doc = format!(
                "{{\"id\":{i},\"user\":\"user-{}\",\"email\":\"user{}@example.com\",\"active\":{},\"tags\":[\"a\",\"b\",\"c\"],\"bio\":\"{}\"}}",
                i % 1000,
                i % 1000,
                i % 2 == 0,
                "lorem ipsum dolor sit amet ".repeat(8)
            );
            cmd(&["SET", &format!("{tag}:doc:{i}"), &doc])
        })
        .collect();
    for batch in cmds.chunks(500) {
        c.pipeline(batch);
    }
}

/// One figure of an INFO line written as `k=v,k=v` (the compression lines).
fn field(line: &str, key: &str) -> f64 {
    line.split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn compression(relay: &Relay, side: &str) -> String {
    relay
        .client()
        .info("relay", &format!("relay_{side}_compression"))
        .unwrap_or_else(|| panic!("INFO relay has no relay_{side}_compression"))
}

/// A far relay behind `near` across `wan`, compressed.
fn far_relay(wan: &Wan, extra: &[&str]) -> Relay {
    let port = wan.port.to_string();
    let mut args = vec![
        "--replicaof",
        "127.0.0.1",
        &port,
        "--upstream-compression",
        "zstd",
    ];
    args.extend_from_slice(extra);
    Relay::start(&args)
}

/// The lines of a replica's log that say it resynchronized fully.
fn full_resyncs(s: &Server) -> usize {
    s.log().matches("Full resync from master").count()
}

#[test]
fn a_far_region_is_served_through_a_compressed_link_and_resumes_partially() {
    let master = Server::master(&[]);
    let mut m = master.client();
    write_text(&mut m, "t", 3000);
    write_mixed(&mut m, "a", 20);
    let mut near = Relay::of(master.port, &[]);
    let near_replica = Server::replica_of(near.port, &[]);
    let wan = Wan::to(near.port, 20, 100, &[]);
    let mut far = far_relay(&wan, &[]);
    let far_replicas = [
        Server::replica_of(far.port, &[]),
        Server::replica_of(far.port, &[]),
    ];
    write_text(&mut m, "u", 500);
    wait_in_sync(
        &master,
        &[&near_replica, &far_replicas[0], &far_replicas[1]],
    );
    assert!(
        far.log().contains("The upstream relay (replica-relay"),
        "the far relay says the link is compressed"
    );
    let up = compression(&far, "upstream");
    assert_eq!(field(&up, "links"), 1.0, "{up}");
    assert!(
        field(&up, "ratio") < 0.3,
        "text crosses at under 0.3 of its size: {up}"
    );
    let down = compression(&near, "downstream");
    assert_eq!(field(&down, "links"), 1.0, "{down}");
    assert_eq!(field(&down, "stream_bytes"), field(&up, "stream_bytes"));
    let (_, status) = near.http_get("/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let compressed: Vec<bool> = status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["compressed"].as_bool().unwrap())
        .collect();
    assert_eq!(compressed.iter().filter(|c| **c).count(), 1, "{status}");
    let (_, metrics) = far.http_get("/metrics");
    assert!(metrics.contains("replica_relay_upstream_compression_wire_bytes_total"));

    // A far replica re-pointed at the near relay continues its stream there.
    let moved = &far_replicas[1];
    let near_partials = near.client().syncs().1;
    moved
        .client()
        .cmd(&["REPLICAOF", "127.0.0.1", &near.port.to_string()]);
    write_text(&mut m, "v", 100);
    wait_in_sync(&master, &[moved]);
    assert_eq!(
        near.client().syncs().1,
        near_partials + 1,
        "a partial resync"
    );
    assert_eq!(full_resyncs(moved), 1, "no second full sync");

    // kill -9 of the far relay, then of the near one: partial resyncs on both sides.
    far.kill9_and_restart();
    write_text(&mut m, "w", 100);
    wait_in_sync(&master, &[&far_replicas[0]]);
    near.kill9_and_restart();
    write_text(&mut m, "x", 100);
    wait_in_sync(&master, &[&near_replica, &far_replicas[0], moved]);
    for r in [&near_replica, &far_replicas[0]] {
        assert_eq!(full_resyncs(r), 1, "replica {} synced fully again", r.port);
    }
    let far_log = far.log();
    let after_kill = &far_log[far_log.rfind("Connecting to MASTER").unwrap()..];
    assert!(
        after_kill.contains("Successful partial resynchronization"),
        "the far relay resumed partially after the near one's restart"
    );
    assert_eq!(m.syncs().0, 1, "the master forked once, for the near relay");
}

#[test]
fn the_compressed_link_is_cut_mid_snapshot_and_mid_stream() {
    let master = Server::master(&[]);
    let mut m = master.client();
    write_text(&mut m, "t", 20_000);
    let near = Relay::of(master.port, &[]);
    near.stored(&master);
    // 8 Mbit/s: the compressed snapshot (about 1 MB) takes a second or more to cross.
    let wan = Wan::to(near.port, 20, 8, &[]);
    let far = far_relay(&wan, &[]);
    let far_replica = Server::replica_of(far.port, &[]);
    wait_for("the far relay to be receiving the snapshot", || {
        let got = far.client().info("replication", "master_sync_read_bytes");
        let got = got.and_then(|b| b.parse::<i64>().ok()).unwrap_or(0);
        (got > 0, got)
    });
    wan.cut();
    wait_in_sync(&master, &[&far_replica]);
    assert!(
        far.log().contains("Connection with master lost"),
        "the cut was seen"
    );

    // Mid-stream: writes cross while the link is cut.
    let partials = near.client().syncs().1;
    write_text(&mut m, "u", 2000);
    wan.cut();
    write_text(&mut m, "v", 2000);
    wait_in_sync(&master, &[&far_replica]);
    assert!(
        near.client().syncs().1 > partials,
        "partial resyncs after the cut"
    );
    assert_eq!(m.syncs().0, 1, "the master forked once, for the near relay");
    assert_eq!(full_resyncs(&far_replica), 1);
}

#[test]
fn a_damaged_compressed_frame_in_the_stream_is_refused_and_never_stored() {
    // The snapshot crosses in a few KB; the 50,000th byte down is in the stream.
    let (far, far_replica) = damaged(200, 50_000);
    let log = far.log();
    let after = &log[log.find("corrupt compressed frame").unwrap()..];
    assert!(
        after.contains("Successful partial resynchronization"),
        "resumed from what it stored"
    );
    assert_eq!(full_resyncs(&far_replica), 1, "the replica kept its stream");
}

#[test]
fn a_damaged_compressed_frame_in_the_snapshot_is_refused_and_never_served() {
    // 20,000 documents: the 100,000th byte down is in the compressed snapshot.
    let (far, _) = damaged(20_000, 100_000);
    let log = far.log();
    let after = &log[log.find("corrupt compressed frame").unwrap()..];
    assert!(
        after.contains("Full resync from master"),
        "the snapshot came again"
    );
    assert!(
        !log.contains("Full sync failed on the master's side"),
        "the damage is not the master's"
    );
}

/// A far relay whose link flips a bit of the `flip_at`-th byte down, the master holding `docs`
/// documents first and writing more after; once the far replica holds the master's data
/// again: the far relay, which counted the damaged frame, and its replica.
fn damaged(docs: usize, flip_at: u32) -> (Relay, Server) {
    let master = Server::master(&[]);
    let mut m = master.client();
    write_text(&mut m, "t", docs);
    let near = Relay::of(master.port, &[]);
    near.stored(&master);
    let wan = Wan::to(near.port, 1, 0, &["--flip-at", &flip_at.to_string()]);
    let far = far_relay(&wan, &[]);
    let far_replica = Server::replica_of(far.port, &[]);
    for i in 0..40 {
        write_mixed(&mut m, &format!("s{i}"), 20);
        write_text(&mut m, &format!("s{i}"), 300);
    }
    wait_for("the far relay to refuse the damaged frame", || {
        let log = far.log();
        (log.contains("corrupt compressed frame"), log.len())
    });
    wait_in_sync(&master, &[&far_replica]);
    let (_, metrics) = far.http_get("/metrics");
    assert!(
        metrics.contains("replica_relay_upstream_sync_failures_total{reason=\"corrupt_frame\"} 1"),
        "counted by its cause"
    );
    (far, far_replica)
}

#[test]
fn relays_stay_plain_where_nobody_asks_or_a_real_master_is_asked() {
    let master = Server::master(&[]);
    let mut m = master.client();
    write_text(&mut m, "t", 100);
    // Asked of a real master: never sent, so the master answers no error.
    let asking = far_relay_of_master(&master);
    let near = Relay::of(master.port, &[]);
    // A relay of the same build that asks for nothing.
    let plain = Relay::of(near.port, &[]);
    let replicas = [
        Server::replica_of(asking.port, &[]),
        Server::replica_of(plain.port, &[]),
    ];
    wait_in_sync(&master, &[&replicas[0], &replicas[1]]);
    assert!(asking.log().contains("The master is not a replica-relay"));
    assert_eq!(m.info_num("stats", "total_error_replies"), 0);
    assert_eq!(field(&compression(&asking, "upstream"), "links"), 0.0);
    assert_eq!(field(&compression(&near, "downstream"), "links"), 0.0);
    assert_eq!(field(&compression(&near, "downstream"), "wire_bytes"), 0.0);
}

fn far_relay_of_master(master: &Server) -> Relay {
    let port = master.port.to_string();
    Relay::start(&[
        "--replicaof",
        "127.0.0.1",
        &port,
        "--upstream-compression",
        "zstd",
    ])
}

#[test]
fn replicas_announcing_compression_of_their_own_get_plain_bytes() {
    let master = Server::master(&[]);
    write_text(&mut master.client(), "t", 100);
    let relay = Relay::of(master.port, &[]);
    relay.stored(&master);
    let mut c = relay.client();
    for capa in [
        vec!["REPLCONF", "capa", "eof", "capa", "psync2", "capa", "lz4"],
        vec!["REPLCONF", "capa", "compress-sync"],
        vec!["REPLCONF", "capa", "rdb-channel-repl"],
    ] {
        assert_eq!(c.cmd(&capa).text(), "OK", "{capa:?}");
    }
    c.send_raw(&support::encode(&["PSYNC", "?", "-1"]));
    let reply = c.read_line();
    assert!(reply.starts_with("+FULLRESYNC"), "{reply}");
    let header = c.read_line();
    let size: usize = header.trim_start_matches('$').parse().unwrap();
    let rdb = c.read_exact(size);
    assert!(rdb.starts_with(b"REDIS"), "a plain snapshot");
}

/// A relay as an older build answers: the option renamed on its way (same length, so the RESP
/// framing holds), the relay replies as to any option it does not know.
fn older_relay_in_front_of(port: u16) -> u16 {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let front = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut s2, &mut c2));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = client.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let data = if text.contains("relay-compression") {
                        text.replace("relay-compression", "relay-compressioX")
                            .into_bytes()
                    } else {
                        buf[..n].to_vec()
                    };
                    if server.write_all(&data).is_err() {
                        return;
                    }
                }
            });
        }
    });
    front
}

#[test]
fn a_relay_that_does_not_offer_compression_gives_a_plain_link() {
    let master = Server::master(&[]);
    write_text(&mut master.client(), "t", 100);
    let near = Relay::of(master.port, &[]);
    let front = older_relay_in_front_of(near.port);
    let far = Relay::start(&[
        "--replicaof",
        "127.0.0.1",
        &front.to_string(),
        "--upstream-compression",
        "zstd",
    ]);
    let replica = Server::replica_of(far.port, &[]);
    write_text(&mut master.client(), "u", 100);
    wait_in_sync(&master, &[&replica]);
    assert!(
        far.log()
            .contains("does not compress: -ERR Unrecognized REPLCONF option: relay-compressioX"),
        "the far relay says why the link is plain"
    );
    assert_eq!(field(&compression(&far, "upstream"), "links"), 0.0);
}

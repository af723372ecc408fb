//! What the relay learns by decoding: snapshot statistics against what a real master reports.

mod support;

use support::{Client, Relay, Server, wait_for, write_mixed};

/// `db -> (keys, expires)` from INFO keyspace.
fn keyspace(c: &mut Client) -> Vec<(String, i64, i64)> {
    let text = c.cmd(&["INFO", "keyspace"]).text();
    text.lines()
        .filter_map(|l| {
            let (db, rest) = l.split_once(':')?;
            let field = |name: &str| -> Option<i64> {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            };
            Some((db.to_string(), field("keys")?, field("expires")?))
        })
        .collect()
}

#[test]
fn decoded_key_counts_match_the_master_per_db() {
    let master = Server::master(&[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 40);
    let expected = keyspace(&mut m);
    assert!(expected.len() >= 3, "several dbs: {expected:?}");
    let relay = Relay::of(master.port, &[]);
    let mut rc = relay.client();
    let got = wait_for("the relay to decode its snapshot", || {
        let got = keyspace(&mut rc);
        (got == expected, got)
    });
    assert_eq!(got, expected);
    let relay_info = rc.cmd(&["INFO", "relay"]).text();
    for field in [
        "relay_snapshot_decoded:ok",
        "relay_snapshot_not_decoded:stream=",
        "relay_snapshot_types:",
    ] {
        assert!(
            relay_info.contains(field),
            "INFO relay lacks {field}:\n{relay_info}"
        );
    }
}

fn inspect(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_replica-relay"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn inspect_reports_a_store_and_refuses_a_damaged_snapshot() {
    let master = Server::master(&[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 20);
    let dbsize: i64 = keyspace(&mut m).iter().map(|(_, keys, _)| keys).sum();
    let mut relay = Relay::of(master.port, &[]);
    wait_for("a snapshot in service", || {
        let s = relay.client().info("replication", "master_link_status");
        (s.as_deref() == Some("up"), s)
    });
    assert!(relay.terminate().success());

    let out = inspect(&[relay.dir.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: i64 = report["dbs"]
        .as_object()
        .unwrap()
        .values()
        .map(|d| d["keys"].as_i64().unwrap())
        .sum();
    assert_eq!(keys, dbsize);
    assert_eq!(
        report["keys"], dbsize,
        "the total, as the text output has it"
    );
    assert_eq!(report["checksum"], "ok");
    assert_eq!(
        report["store"]["replid"],
        m.info("replication", "master_replid").unwrap()
    );
    let text =
        String::from_utf8_lossy(&inspect(&[relay.dir.to_str().unwrap()]).stdout).into_owned();
    assert!(
        text.contains("largest keys") && text.contains("db3"),
        "{text}"
    );

    let snapshot = report["file"].as_str().unwrap();
    let mut bytes = std::fs::read(snapshot).unwrap();
    let damaged = relay.dir.join("damaged.rdb");
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&damaged, &bytes).unwrap();
    let out = inspect(&[damaged.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("damaged") && err.contains("byte"), "{err}");
}

/// A master for what a real one cannot do: it answers the handshake (refusing `INFO`), then
/// sends `payload` after `+FULLRESYNC` and closes. Returns its port.
fn fake_master(payload: Vec<u8>) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { return };
            let mut seen = Vec::new();
            let mut wait_for = |needle: &[u8], count: usize, sock: &mut std::net::TcpStream| {
                let mut buf = [0u8; 4096];
                while seen.windows(needle.len()).filter(|w| *w == needle).count() < count {
                    match sock.read(&mut buf) {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                true
            };
            if !wait_for(b"PING", 1, &mut sock) || sock.write_all(b"+PONG\r\n").is_err() {
                continue;
            }
            // A master that does not tell what it is: the relay takes it for a Redis master.
            let unknown = b"-ERR unknown command 'INFO'\r\n";
            if !wait_for(b"INFO", 1, &mut sock) || sock.write_all(unknown).is_err() {
                continue;
            }
            if !wait_for(b"REPLCONF", 2, &mut sock) || sock.write_all(b"+OK\r\n+OK\r\n").is_err() {
                continue;
            }
            if wait_for(b"PSYNC", 1, &mut sock) {
                let mut out = format!("+FULLRESYNC {} 100\r\n", "f".repeat(40)).into_bytes();
                out.extend_from_slice(&payload);
                let _ = sock.write_all(&out);
            }
        }
    });
    port
}

#[test]
fn corrupt_snapshots_are_rejected_and_the_good_one_stays() {
    let master = Server::master(&[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 10);
    let relay = Relay::of(master.port, &[]);
    let replica = Server::replica_of(relay.port, &[]);
    support::wait_in_sync(&master, &[&replica]);
    let mut rc = relay.client();
    let in_service = rc.info("relay", "relay_snapshot_file").unwrap();
    let good = std::fs::read(relay.dir.join("snapshots").join(&in_service)).unwrap();

    let framed = |rdb: &[u8]| [format!("${}\r\n", rdb.len()).as_bytes(), rdb].concat();
    let mut bad_crc = good.clone();
    bad_crc[good.len() / 2] ^= 0x55;
    let mut bad_mark = format!("$EOF:{}\r\n", "a".repeat(40)).into_bytes();
    bad_mark.extend_from_slice(&good);
    bad_mark.extend_from_slice("b".repeat(40).as_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad CRC", framed(&bad_crc), "checksum mismatch"),
        (
            "truncated",
            framed(&good)[..good.len() / 2].to_vec(),
            "the snapshot ended with",
        ),
        (
            "wrong EOF mark",
            bad_mark,
            "the snapshot ended before its EOF mark",
        ),
        (
            "garbage header",
            framed(b"GARBAGE!!! this is not an RDB file at all"),
            "bad signature",
        ),
    ];
    for (name, payload, expected) in cases {
        let before = relay.log().matches(expected).count();
        let failures = rc.info_num("stats", "relay_upstream_sync_failures");
        let fake = fake_master(payload);
        rc.cmd(&["REPLICAOF", "127.0.0.1", &fake.to_string()]);
        wait_for(&format!("the relay to reject the {name} snapshot"), || {
            let n = relay.log().matches(expected).count();
            (n > before, n)
        });
        assert!(
            rc.info_num("stats", "relay_upstream_sync_failures") > failures,
            "{name}"
        );
        assert_eq!(
            rc.info("relay", "relay_snapshot_file"),
            Some(in_service.clone()),
            "{name}"
        );
        let leftovers = std::fs::read_dir(relay.dir.join("snapshots"))
            .unwrap()
            .count();
        assert!(
            leftovers <= 2,
            "{name}: at most the good snapshot and one in progress"
        );
    }
    rc.cmd(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]);
    write_mixed(&mut m, "b", 5);
    support::wait_in_sync(&master, &[&replica]);
    assert_eq!(
        m.syncs(),
        (1, 1),
        "back on the real master: a partial resync"
    );
}

#[test]
fn stream_commands_are_counted_by_name_and_db() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let mut rc = relay.client();
    wait_for("the link to be up", || {
        let s = rc.info("replication", "master_link_status");
        (s.as_deref() == Some("up"), s)
    });
    let mut m = master.client();
    let mut cmds: Vec<Vec<String>> = (0..10)
        .map(|i| support::cmd(&["SET", &format!("k{i}"), "v"]))
        .collect();
    cmds.extend((0..3).map(|i| support::cmd(&["HSET", "h", &format!("f{i}"), "v"])));
    cmds.extend([
        support::cmd(&["MULTI"]),
        support::cmd(&["SET", "a", "1"]),
        support::cmd(&["SET", "b", "2"]),
        support::cmd(&["EXEC"]),
    ]);
    cmds.push(support::cmd(&["SELECT", "2"]));
    cmds.extend((0..4).map(|_| support::cmd(&["INCR", "n"])));
    cmds.push(support::cmd(&["OBJECT", "FREQ", "n"]));
    m.pipeline(&cmds);
    let seen = wait_for("the stream counters", || {
        let c = rc
            .info("relay", "relay_stream_commands")
            .unwrap_or_default();
        (c.contains("set=12"), c)
    });
    assert!(
        seen.contains("hset=3") && seen.contains("incr=4") && seen.contains("multi=1"),
        "{seen}"
    );
    let dbs = rc.info("relay", "relay_stream_commands_per_db").unwrap();
    assert_eq!(dbs, "db0=17,db2=4");
    assert_eq!(rc.info_num("relay", "relay_stream_multi_blocks"), 1);
}

#[test]
fn a_stream_that_does_not_parse_drops_the_link_at_the_last_good_offset() {
    let master = Server::master(&[]);
    let mut good = Relay::of(master.port, &[]);
    wait_for("a snapshot", || {
        let s = good.client().info("relay", "relay_snapshot_file");
        (s.is_some(), s)
    });
    assert!(good.terminate().success());
    let name = std::fs::read_dir(good.dir.join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let rdb = std::fs::read(name.path()).unwrap();
    let mut payload = format!("${}\r\n", rdb.len()).into_bytes();
    payload.extend_from_slice(&rdb);
    payload.extend_from_slice(b"*1\r\n$4\r\nPING\r\nGARBAGE\r\n");
    let fake = fake_master(payload);
    let relay = Relay::of(fake, &[]);
    wait_for("the protocol error to be logged with its offset", || {
        let log = relay.log();
        (
            log.contains("protocol error in the replication stream at offset 115"),
            log.len(),
        )
    });
    assert_eq!(
        relay.client().info_num("replication", "master_repl_offset"),
        114
    );
    wait_for("a partial resync from the last good offset", || {
        let log = relay.log();
        (
            log.contains(&format!("request {}:115", "f".repeat(40))),
            log.len(),
        )
    });
}

/// Hashes with field expiry (Valkey 9's type 22, Redis 7.4+'s types 24 and 25), small ones
/// (listpack) and large ones (hash table), which the decoder must read to their end (a Valkey 9
/// snapshot stopped its decoding: "Expected a length, found string encoding").
fn write_field_ttls(m: &mut Client) {
    let big = "v".repeat(100);
    for i in 0..10 {
        let key = format!("ttl:h{i}");
        let value = if i % 2 == 0 { "v" } else { big.as_str() };
        let reply = m.cmd(&["HSETEX", &key, "EX", "100000", "FIELDS", "1", "f", value]);
        assert!(
            !matches!(reply, support::Value::Error(_)),
            "HSETEX: {reply:?}"
        );
        for j in 0..(if i % 2 == 0 { 3 } else { 200 }) {
            m.cmd(&["HSET", &key, &format!("plain{j}"), value]);
        }
    }
}

#[test]
fn decoded_key_counts_match_masters_of_other_versions() {
    let names = ["redis-6.2.14", "redis-8.2.3", "valkey-9.1.2"];
    let Some(servers) = support::other_servers(&names) else {
        return;
    };
    for (name, bin) in servers {
        let master = Server::start_bin(&bin, support::free_port(), &[]);
        let mut m = master.client();
        write_mixed(&mut m, "a", 20);
        if name != "redis-6.2.14" {
            write_field_ttls(&mut m);
        }
        let expected = keyspace(&mut m);
        let relay = Relay::of(master.port, &[]);
        let mut rc = relay.client();
        let got = wait_for(&format!("the relay to decode a {name} snapshot"), || {
            let got = keyspace(&mut rc);
            (got == expected, got)
        });
        assert_eq!(got, expected, "{name}");
        let decoded = rc.info("relay", "relay_snapshot_decoded");
        assert_eq!(decoded.as_deref(), Some("ok"), "{name}");

        // The server's own dump: VALKEY080 for Valkey 9, unlike what it sends the relay. SAVE
        // is refused while the fork of the relay's full sync still runs.
        wait_for(&format!("{name}: no fork running"), || {
            let forks = m.info_num("persistence", "rdb_bgsave_in_progress");
            (forks == 0, forks)
        });
        assert_eq!(m.cmd(&["SAVE"]), support::Value::Simple("OK".into()));
        let out = inspect(&[master.dir().join("dump.rdb").to_str().unwrap(), "--json"]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let keys: i64 = expected.iter().map(|(_, k, _)| k).sum();
        let dbs = report["dbs"].as_object().unwrap();
        assert_eq!(
            dbs.values()
                .map(|d| d["keys"].as_i64().unwrap())
                .sum::<i64>(),
            keys,
            "{name}"
        );
        eprintln!("{name}: dump.rdb is {}", report["signature"]);
    }
}

fn tail_json(port: u16, count: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_replica-relay"))
        .args([
            "tail",
            "--replicaof",
            "127.0.0.1",
            &port.to_string(),
            "--json",
            "--count",
            count,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn tail_prints_the_live_feed_from_a_relay_and_from_a_master() {
    // No master PINGs in the stream, so the last offset printed is the master's.
    let master = Server::master(&["--repl-ping-replica-period", "3600"]);
    let relay = Relay::of(master.port, &[]);
    let mut m = master.client();
    for port in [relay.port, master.port] {
        let child = tail_json(port, "3");
        let mut rc = support::Client::connect(port);
        wait_for("tail to be attached", || {
            let n = rc.info_num("replication", "connected_slaves");
            (n >= if port == relay.port { 1 } else { 2 }, n)
        });
        m.pipeline(&[
            support::cmd(&["SELECT", "4"]),
            support::cmd(&["SET", "greeting", "hello\nworld"]),
            support::cmd(&["DEL", "greeting"]),
        ]);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(
            lines[0]["command"],
            serde_json::json!(["\"SELECT\"", "\"4\""])
        );
        assert_eq!(lines[1]["command"][2], "\"hello\\nworld\"");
        assert_eq!(lines[2]["db"], 4);
        let offset = lines[2]["offset"].as_i64().unwrap();
        assert_eq!(offset, m.info_num("replication", "master_repl_offset"));
    }
    assert_eq!(
        m.info_num("stats", "total_forks"),
        2,
        "the relay's sync, then tail's own"
    );
}

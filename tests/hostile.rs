//! Hostile clients on the replica port: what a client controls (pattern matching, pipelining,
//! the name it announces) never crashes the relay, stalls the stream to the replicas, or denies
//! service to another replica.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use support::{Client, Relay, Server, Value, encode, wait_for, wait_in_sync};

/// `CONFIG GET <pattern>` as one raw command.
fn config_get(pattern: &[u8]) -> Vec<u8> {
    let mut out = format!("*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n${}\r\n", pattern.len()).into_bytes();
    out.extend_from_slice(pattern);
    out.extend_from_slice(b"\r\n");
    out
}

#[test]
fn a_forty_thousand_star_pattern_gets_an_error_and_the_relay_lives() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let mut c = relay.client();
    c.send_raw(&config_get(&[b'*'; 40_000]));
    match c.read() {
        Some(Value::Error(e)) => assert!(e.contains("pattern longer than"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(c.cmd(&["PING"]), Value::Simple("PONG".into()));
    let mut other = relay.client();
    assert_eq!(other.cmd(&["PING"]), Value::Simple("PONG".into()));
    let ok = other.cmd(&["CONFIG", "GET", "repl-*"]);
    let Value::Array(Some(items)) = &ok else {
        panic!("{ok:?}")
    };
    assert!(items.iter().any(|v| v.text() == "repl-timeout"), "{ok:?}");
}

/// Two clients send the patterns that cost most, back to back, while the master writes: the
/// replica behind the relay keeps receiving every write, and the relay keeps answering.
#[test]
fn a_streaming_replica_keeps_receiving_while_clients_send_costly_patterns() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = [
        [&[b'*'; 26][..], b"#"].concat(),
        [&b"*a".repeat(63)[..], b"#"].concat(),
    ]
    .into_iter()
    .map(|pattern| {
        let (stop, sent, port) = (stop.clone(), sent.clone(), relay.port);
        std::thread::spawn(move || {
            let mut c = Client::connect(port);
            let one = config_get(&pattern);
            let batch: Vec<u8> = one.repeat(8);
            while !stop.load(Ordering::Relaxed) {
                c.send_raw(&batch);
                for _ in 0..8 {
                    c.read().expect("the relay answers every pattern");
                }
                sent.fetch_add(8, Ordering::Relaxed);
            }
        })
    })
    .collect();
    wait_for("the attackers to get answers", || {
        let n = sent.load(Ordering::Relaxed);
        (n >= 16, n)
    });
    let (mut m, mut r) = (master.client(), replica.client());
    for i in 0..50 {
        let value = i.to_string();
        m.cmd(&["SET", "under-attack", &value]);
        wait_for("the write to reach the replica through the relay", || {
            let got = r.cmd(&["GET", "under-attack"]);
            (got.text() == value, got)
        });
    }
    assert_eq!(relay.client().cmd(&["PING"]), Value::Simple("PONG".into()));
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    assert!(sent.load(Ordering::Relaxed) >= 16);
}

/// A client that pipelines thousands of INFO commands without reading the replies is held back
/// by its own socket, while others are answered.
#[test]
fn a_client_that_pipelines_and_never_reads_holds_nobody_up() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    let mut greedy = std::net::TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    greedy
        .set_write_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    // Fills both socket buffers and stops there: the relay waits for it to read.
    let _ = std::io::Write::write_all(&mut greedy, &encode(&["INFO"]).repeat(20_000));
    let (mut m, mut r) = (master.client(), replica.client());
    m.cmd(&["SET", "after-greedy", "1"]);
    wait_for("the write to reach the replica", || {
        let got = r.cmd(&["GET", "after-greedy"]);
        (got.text() == "1", got)
    });
    assert_eq!(relay.client().cmd(&["PING"]), Value::Simple("PONG".into()));
}

/// Asks the relay for a full sync as a replica announcing `port` would, reads the whole
/// snapshot, and hangs up without acknowledging: what a replica that cannot load it does.
fn take_snapshot_and_drop(relay_port: u16, announce: Option<u16>, psync: bool) {
    use std::io::{BufRead, BufReader, Read, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", relay_port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut w = s.try_clone().unwrap();
    let mut rd = BufReader::new(s);
    let mut line = String::new();
    if let Some(port) = announce {
        w.write_all(&encode(&["REPLCONF", "listening-port", &port.to_string()]))
            .unwrap();
        rd.read_line(&mut line).unwrap();
        assert_eq!(line, "+OK\r\n");
    }
    match psync {
        true => w.write_all(&encode(&["PSYNC", "?", "-1"])).unwrap(),
        false => w.write_all(&encode(&["SYNC"])).unwrap(),
    }
    let len = loop {
        line.clear();
        assert!(rd.read_line(&mut line).unwrap() > 0, "the relay hung up");
        assert!(!line.starts_with('-'), "refused: {line}");
        if let Some(n) = line.trim_end().strip_prefix('$') {
            break n.parse::<usize>().unwrap();
        }
    };
    let mut snapshot = vec![0; len];
    rd.read_exact(&mut snapshot).unwrap();
}

/// A client that claims a real replica's name (even from the same host) and drops snapshots
/// does not lock that replica out; tools that SYNC and drop are not counted at all.
#[test]
fn a_client_claiming_a_replicas_name_cannot_lock_it_out() {
    let master = Server::master(&[]);
    master.client().cmd(&["SET", "k", "v"]);
    let relay = Relay::of(master.port, &[]);
    wait_for("the relay's snapshot", || {
        let (code, body) = relay.http_get("/readyz");
        (code == 200, body)
    });
    for _ in 0..3 {
        take_snapshot_and_drop(relay.port, None, false);
        take_snapshot_and_drop(relay.port, None, true);
    }
    let mut rc = relay.client();
    assert_eq!(rc.info_num("relay", "relay_incompatible_replicas"), 0);
    let victim_port = support::free_port();
    for _ in 0..3 {
        take_snapshot_and_drop(relay.port, Some(victim_port), true);
    }
    assert_eq!(
        rc.info_num("relay", "relay_incompatible_replicas"),
        1,
        "the evidence is still named"
    );
    let victim = Server::start_on(
        victim_port,
        &["--replicaof", "127.0.0.1", &relay.port.to_string()],
    );
    wait_in_sync(&master, &[&victim]);
    wait_for("a replica that loads the snapshot to be cleared", || {
        let n = rc.info_num("relay", "relay_incompatible_replicas");
        (n == 0, n)
    });
}

/// With a dual-stack listener, IPv4 loopback clients arrive as `::ffff:127.0.0.1` and are
/// still loopback clients for protected mode.
#[test]
fn a_dual_stack_bind_lets_ipv4_loopback_clients_in() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &["--bind", "::"]);
    let mut c = relay.client();
    assert_eq!(c.cmd(&["PING"]), Value::Simple("PONG".into()));
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
}

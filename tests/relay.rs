//! The relay end to end against real redis-server processes: fan-out, partial resyncs on both
//! sides, the three ways to start replication, auth, both payload framings, bad clients, and
//! clean shutdown.

mod support;

use support::{Client, Relay, Server, Value, chain, cmd, wait_for, wait_in_sync, write_mixed};

fn count(c: &mut Client, section: &str, field: &str) -> i64 {
    c.info_num(section, field)
}

#[test]
fn fan_out_to_three_replicas_forks_the_master_once() {
    let master = Server::master(&[]);
    let mut m = master.client();
    write_mixed(&mut m, "before", 50);
    let relay = Relay::of(master.port, &[]);
    let r1 = Server::replica_of(relay.port, &[]);
    write_mixed(&mut m, "during1", 20);
    let r2 = Server::replica_of(relay.port, &[]);
    write_mixed(&mut m, "during2", 20);
    let r3 = Server::replica_of(relay.port, &[]);
    write_mixed(&mut m, "after", 10);
    wait_in_sync(&master, &[&r1, &r2, &r3]);

    assert_eq!(
        count(&mut m, "stats", "total_forks"),
        1,
        "the master forked once"
    );
    assert_eq!(
        count(&mut m, "replication", "connected_slaves"),
        1,
        "the master sees one replica"
    );
    let mut rc = relay.client();
    assert_eq!(count(&mut rc, "replication", "connected_slaves"), 3);
    assert_eq!(count(&mut rc, "stats", "sync_full"), 3);
    for r in [&r1, &r2, &r3] {
        assert!(r.client().cmd(&["DBSIZE"]) != Value::Int(0));
    }
}

#[test]
fn info_and_role_read_like_a_chained_replica() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let replica = Server::replica_of(relay.port, &[]);
    let mut m = master.client();
    m.cmd(&["SET", "k", "v"]);
    wait_in_sync(&master, &[&replica]);
    let mut rc = relay.client();
    let info = rc.cmd(&["INFO", "replication"]).text();
    for field in [
        "role:slave",
        &format!("master_port:{}", master.port),
        "master_link_status:up",
        "master_sync_in_progress:0",
        &format!(
            "master_replid:{}",
            m.info("replication", "master_replid").unwrap()
        ),
        &format!(
            "master_repl_offset:{}",
            m.info("replication", "master_repl_offset").unwrap()
        ),
        "second_repl_offset:-1",
        "repl_backlog_active:1",
        &format!("slave0:ip=127.0.0.1,port={},state=online", replica.port),
    ] {
        assert!(
            info.contains(field),
            "INFO replication lacks {field:?}:\n{info}"
        );
    }
    let role = rc.cmd(&["ROLE"]);
    let Value::Array(Some(items)) = role else {
        panic!("ROLE: {role:?}")
    };
    assert_eq!(items[0].text(), "slave");
    assert_eq!(items[2], Value::Int(master.port as i64));
    assert_eq!(items[3].text(), "connected");
    let all = rc.cmd(&["INFO"]).text();
    assert!(
        all.contains("# Server") && all.contains("# Stats") && all.contains("sync_partial_ok:")
    );
    let get = rc.cmd(&["GET", "k"]).text();
    assert!(
        get.contains("replication relay") && get.contains(&master.port.to_string()),
        "{get}"
    );
}

#[test]
fn replica_link_killed_resumes_with_partial_resync() {
    let (master, relay, replica) = chain(&[]);
    let mut m = master.client();

    replica.client().cmd(&["CLIENT", "KILL", "TYPE", "master"]);
    write_mixed(&mut m, "b", 20);
    let mut rc = relay.client();
    wait_for("the relay to accept a partial resync", || {
        let n = count(&mut rc, "stats", "sync_partial_ok");
        (n == 1, n)
    });
    wait_in_sync(&master, &[&replica]);
    assert_eq!(
        count(&mut rc, "stats", "sync_full"),
        1,
        "no second full sync"
    );
    assert!(
        replica
            .log()
            .contains("Successful partial resynchronization with master")
    );
}

#[test]
fn upstream_link_killed_resumes_with_partial_resync() {
    let (master, relay, replica) = chain(&[]);
    let mut m = master.client();

    m.cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
    write_mixed(&mut m, "b", 20);
    wait_for("the master to accept the relay's partial resync", || {
        let n = count(&mut m, "stats", "sync_partial_ok");
        (n == 1, n)
    });
    wait_in_sync(&master, &[&replica]);
    assert_eq!(
        m.syncs(),
        (1, 1),
        "the master continued partially, no full sync"
    );
    let mut rc = relay.client();
    assert_eq!(rc.syncs(), (1, 0), "the replica stayed connected");
    assert!(
        relay
            .log()
            .contains("Successful partial resynchronization with master")
    );
}

#[test]
fn replicaof_at_run_time_and_no_one() {
    let master = Server::master(&[]);
    let mut m = master.client();
    m.cmd(&["SET", "k", "1"]);
    let relay = Relay::start(&[]);
    let mut rc = relay.client();
    assert_eq!(rc.info("replication", "role").as_deref(), Some("master"));
    assert!(
        matches!(rc.cmd(&["PSYNC", "?", "-1"]), Value::Error(e) if e.starts_with("NOMASTERLINK"))
    );

    let mut rc = relay.client();
    let port = master.port.to_string();
    assert_eq!(
        rc.cmd(&["REPLICAOF", "127.0.0.1", &port]),
        Value::Simple("OK".into())
    );
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);

    assert_eq!(
        rc.cmd(&["SLAVEOF", "NO", "ONE"]),
        Value::Simple("OK".into())
    );
    wait_for("the master to see no replica", || {
        let n = count(&mut m, "replication", "connected_slaves");
        (n == 0, n)
    });
    assert_eq!(rc.info("replication", "role").as_deref(), Some("master"));
    // The master lists no replica: the relay has no link, and its replica keeps what it had.
    m.cmd(&["SET", "k", "2"]);
    let mut r = replica.client();
    assert_eq!(
        r.cmd(&["GET", "k"]).text(),
        "1",
        "the replica keeps its data"
    );
    assert_eq!(
        r.info("replication", "master_link_status").as_deref(),
        Some("up")
    );

    assert_eq!(
        rc.cmd(&["SLAVEOF", "127.0.0.1", &port]),
        Value::Simple("OK".into())
    );
    wait_in_sync(&master, &[&replica]);
    assert_eq!(r.cmd(&["GET", "k"]).text(), "2");
    assert_eq!(m.syncs(), (1, 1), "re-attaching was a partial resync");
}

#[test]
fn replicaof_from_the_config_file() {
    let master = Server::master(&[]);
    master.client().cmd(&["SET", "from", "file"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        format!(
            "replicaof = \"127.0.0.1 {}\"\nrepl-timeout = 30\n",
            master.port
        ),
    )
    .unwrap();
    let relay = Relay::start(&["--config", path.to_str().unwrap()]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    assert_eq!(replica.client().cmd(&["GET", "from"]).text(), "file");
}

#[test]
fn auth_on_both_sides_and_wrong_passwords_refused() {
    let master = Server::master(&["--requirepass", "master-secret"]);
    let mut m = master.client();
    assert_eq!(
        m.cmd(&["AUTH", "master-secret"]),
        Value::Simple("OK".into())
    );
    m.cmd(&["SET", "k", "v"]);
    let relay = Relay::of(
        master.port,
        &[
            "--masterauth",
            "master-secret",
            "--requirepass",
            "relay-secret",
        ],
    );
    let good = Server::replica_of(relay.port, &["--masterauth", "relay-secret"]);
    let bad = Server::replica_of(relay.port, &["--masterauth", "wrong"]);

    let mut g = good.client();
    wait_for("the replica with the right password to sync", || {
        let v = g.cmd(&["GET", "k"]).text();
        (v == "v", v)
    });
    wait_for("the replica with a wrong password to be refused", || {
        let log = bad.log();
        (
            log.contains("Unable to AUTH to MASTER"),
            log.lines().last().map(str::to_string),
        )
    });
    assert_eq!(
        bad.client()
            .info("replication", "master_link_status")
            .as_deref(),
        Some("down")
    );

    let mut rc = relay.client();
    assert!(matches!(rc.cmd(&["INFO"]), Value::Error(e) if e.starts_with("NOAUTH")));
    assert!(matches!(rc.cmd(&["AUTH", "nope"]), Value::Error(e) if e.starts_with("WRONGPASS")));
    assert!(
        matches!(rc.cmd(&["AUTH", "other", "relay-secret"]), Value::Error(e) if e.starts_with("WRONGPASS"))
    );
    assert_eq!(
        rc.cmd(&["AUTH", "default", "relay-secret"]),
        Value::Simple("OK".into())
    );
    assert_eq!(rc.info_num("replication", "connected_slaves"), 1);
    assert!(!relay.log().contains("relay-secret") && !relay.log().contains("master-secret"));
}

#[test]
fn masteruser_uses_the_acl_form_of_auth() {
    let master = Server::master(&[]);
    let mut m = master.client();
    m.cmd(&[
        "ACL",
        "SETUSER",
        "relay",
        "on",
        ">relay-pass",
        "+@all",
        "~*",
    ]);
    m.cmd(&["ACL", "SETUSER", "default", "off"]);
    let mut m = master.client();
    assert_eq!(
        m.cmd(&["AUTH", "relay", "relay-pass"]),
        Value::Simple("OK".into())
    );
    m.cmd(&["SET", "k", "acl"]);
    let relay = Relay::of(
        master.port,
        &["--masteruser", "relay", "--masterauth", "relay-pass"],
    );
    let replica = Server::replica_of(relay.port, &[]);
    let mut r = replica.client();
    wait_for(
        "the replica to get data through an ACL-authenticated relay",
        || {
            let v = r.cmd(&["GET", "k"]).text();
            (v == "acl", v)
        },
    );
}

fn framing(diskless: &str, expect_log: &str) {
    let master = Server::master(&["--repl-diskless-sync", diskless]);
    let mut m = master.client();
    write_mixed(&mut m, "x", 30);
    let relay = Relay::of(master.port, &[]);
    let replica = Server::replica_of(relay.port, &[]);
    write_mixed(&mut m, "y", 10);
    wait_in_sync(&master, &[&replica]);
    assert!(
        relay.log().contains(expect_log),
        "relay log lacks {expect_log:?}"
    );
}

#[test]
fn disk_payload_framing() {
    framing("no", "receiving ");
}

#[test]
fn diskless_eof_payload_framing() {
    framing("yes", "receiving streamed RDB from master with EOF");
}

#[test]
fn malformed_clients_get_errors_and_replicas_keep_streaming() {
    let (master, relay, replica) = chain(&[]);
    let mut m = master.client();

    let cases: [(&[u8], &str); 4] = [
        (
            b"*1\r\n$999999999999\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*99999999999\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (b"*2\r\n:1\r\n", "ERR Protocol error: expected '$', got ':'"),
        (b"*1x\r\n", "ERR Protocol error: invalid multibulk length"),
    ];
    for (input, expected) in cases {
        let mut c = relay.client();
        c.send_raw(input);
        assert_eq!(
            c.read(),
            Some(Value::Error(expected.into())),
            "input {input:?}"
        );
        assert_eq!(
            c.read(),
            None,
            "the connection is closed after a protocol error"
        );
    }
    let mut inline = relay.client();
    inline.send_raw(&vec![b'x'; 70 * 1024]);
    assert_eq!(
        inline.read(),
        Some(Value::Error(
            "ERR Protocol error: too big inline request".into()
        ))
    );
    let mut junk = relay.client();
    junk.send_raw(b"garbage in\r\n");
    let reply = junk.read();
    assert!(
        matches!(&reply, Some(Value::Error(e)) if e.contains("replication relay")),
        "{reply:?}"
    );

    let mut half = relay.client();
    half.send_raw(b"*2\r\n$4\r\nECHO\r\n$5\r\nhel");
    write_mixed(&mut m, "b", 10);
    wait_in_sync(&master, &[&replica]);
    half.send_raw(b"lo\r\n");
    assert_eq!(half.read(), Some(Value::Bulk(Some(b"hello".to_vec()))));
    assert_eq!(relay.client().cmd(&["PING"]), Value::Simple("PONG".into()));
}

#[test]
fn pipelined_handshake_gets_one_reply_per_command() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let mut c = relay.client();
    let replies = c.pipeline(&[
        cmd(&["PING"]),
        cmd(&["AUTH", "anything"]),
        cmd(&["REPLCONF", "listening-port", "7777"]),
        cmd(&[
            "REPLCONF",
            "capa",
            "eof",
            "capa",
            "psync2",
            "capa",
            "rdb-channel-repl",
        ]),
        cmd(&["REPLCONF", "version", "8.1.0"]),
        cmd(&["REPLCONF", "nonsense", "1"]),
    ]);
    let texts: Vec<String> = replies.iter().map(Value::text).collect();
    assert_eq!(texts[..5], ["PONG", "OK", "OK", "OK", "OK"]);
    assert_eq!(texts[5], "ERR Unrecognized REPLCONF option: nonsense");
    let failover = c.cmd(&["PSYNC", "x", "1", "FAILOVER"]);
    assert!(
        matches!(&failover, Value::Error(e) if e.contains("cannot be promoted")),
        "{failover:?}"
    );
}

#[test]
fn sigterm_then_restart_needs_no_full_sync() {
    let (master, mut relay, replica) = chain(&[]);
    let mut m = master.client();

    assert!(relay.terminate().success(), "clean exit on SIGTERM");
    assert!(relay.log().contains("ready to exit"));
    write_mixed(&mut m, "b", 20);
    relay.restart();
    wait_in_sync(&master, &[&replica]);
    assert_eq!(
        m.syncs(),
        (1, 1),
        "the master continued partially, no full sync"
    );
    assert_eq!(
        relay.client().syncs(),
        (0, 1),
        "the replica resumed partially"
    );
}

#[test]
fn readiness_follows_the_upstream_link() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    wait_for("/readyz to say ready", || {
        let r = relay.http_get("/readyz");
        (r.0 == 200, r)
    });
    assert_eq!(relay.http_get("/healthz").0, 200);
    drop(master);
    let (code, body) = wait_for("/readyz to turn 503", || {
        let r = relay.http_get("/readyz");
        (r.0 == 503, r)
    });
    assert!(body.contains("link with master"), "{code} {body}");
    let mut rc = relay.client();
    assert_eq!(
        rc.info("replication", "master_link_status").as_deref(),
        Some("down")
    );
    assert!(
        rc.info("replication", "master_link_down_since_seconds")
            .is_some()
    );
}

#[test]
fn replicas_asking_during_the_relays_own_full_sync_wait_with_newlines() {
    // rdb-key-save-delay (microseconds per key) makes the master's snapshot take seconds.
    let master = Server::master(&["--rdb-key-save-delay", "2000"]);
    let mut m = master.client();
    m.cmd(&["DEBUG", "POPULATE", "1500"]);
    let relay = Relay::of(master.port, &[]);
    let mut rc = relay.client();
    wait_for("the relay's own full sync to be in progress", || {
        let s = rc.info("replication", "master_sync_in_progress");
        (s.as_deref() == Some("1"), s)
    });
    let mut waiting = relay.client();
    waiting.send_raw(b"PSYNC ? -1\r\n");
    assert_eq!(
        waiting.read(),
        Some(Value::Simple(String::new())),
        "a newline keepalive first"
    );
    let reply = wait_for("+FULLRESYNC after the snapshot is in service", || {
        let r = waiting.read();
        (!matches!(&r, Some(Value::Simple(s)) if s.is_empty()), r)
    });
    assert!(
        matches!(&reply, Some(Value::Simple(s)) if s.starts_with("FULLRESYNC")),
        "{reply:?}"
    );
    assert_eq!(count(&mut m, "stats", "total_forks"), 1);
}

#[test]
fn master_wait_is_answered_by_the_relays_acks() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let mut m = master.client();
    wait_for("the relay to be online at the master", || {
        let s = m.info("replication", "slave0");
        (s.as_deref().is_some_and(|s| s.contains("state=online")), s)
    });
    m.cmd(&["SET", "k", "v"]);
    assert_eq!(
        m.cmd(&["WAIT", "1", "0"]),
        Value::Int(1),
        "WAIT returns once the relay ACKs"
    );
    let offset = m.info("replication", "master_repl_offset").unwrap();
    wait_for("the master to see the relay's ACK at its offset", || {
        let s = m.info("replication", "slave0").unwrap_or_default();
        (s.contains(&format!("offset={offset},")), s)
    });
    drop(relay);
}

#[test]
fn retries_every_second_while_the_master_is_down() {
    let port = support::free_port();
    let relay = Relay::of(port, &[]);
    wait_for("two connection attempts logged", || {
        let log = relay.log();
        let n = log.matches("Error condition on socket for SYNC").count();
        (n >= 2, n)
    });
    let mut rc = relay.client();
    assert_eq!(
        rc.info("replication", "master_link_status").as_deref(),
        Some("down")
    );
    assert_eq!(
        rc.info("replication", "master_link_down_since_seconds")
            .as_deref(),
        Some("-1")
    );
    assert!(
        matches!(rc.cmd(&["PSYNC", "?", "-1"]), Value::Error(e) if e.starts_with("NOMASTERLINK"))
    );
    let master = Server::start_on(port, &[]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
}

#[test]
fn the_readme_documents_every_flag() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_replica-relay"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--")?.split([' ', '=']).next())
        .filter(|f| !["help", "version"].contains(f))
        .collect();
    assert!(flags.len() > 15, "{flags:?}");
    for flag in flags {
        assert!(
            readme.contains(&format!("`--{flag}")),
            "README.md does not document --{flag}"
        );
    }
}

/// The environment form of `--replicaof` with one word is a configuration error that says what
/// is wanted, exiting 2 like the flag form, not a panic (exit 101).
#[test]
fn a_one_word_replicaof_in_the_environment_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replica-relay"))
        .args([
            "--port",
            &support::free_port().to_string(),
            "--metrics-port",
            "0",
        ])
        .arg("--dir")
        .arg(dir.path())
        .env("REPLICA_RELAY_REPLICAOF", "10.0.0.1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a configuration error, as the flag form and every other one exits: {err}"
    );
    assert!(err.contains("HOST PORT"), "{err}");
}

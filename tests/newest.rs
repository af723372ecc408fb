//! The newest data types through the relay: hashes with field expiry (Valkey 9, Redis 7.4+),
//! written before and after the attach, through the attach, a snapshot refresh and a later
//! full sync; and a master whose full syncs fail on its own side is not made to fork every
//! second.
//!
//! Needs the servers of scripts/install-redis-servers.sh in $REDIS_SERVERS_DIR.

mod support;

use support::{Client, Relay, Server, Value, wait_for, wait_in_sync};

fn server_bin(name: &str) -> Option<String> {
    Some(support::other_servers(&[name])?.remove(0).1)
}

/// Absolute expiry times of the fields of `h`, which a replica must hold exactly.
fn field_expiry(c: &mut Client, key: &str, fields: &[&str]) -> Value {
    let n = fields.len().to_string();
    let mut args = vec!["HEXPIRETIME", key, "FIELDS", &n];
    args.extend_from_slice(fields);
    c.cmd(&args)
}

fn write_field_ttls(m: &mut Client, tag: &str) {
    for i in 0..20 {
        let key = format!("{tag}:h{i}");
        let reply = m.cmd(&[
            "HSETEX", &key, "EX", "100000", "FIELDS", "2", "f", "v", "g", "w",
        ]);
        assert!(!matches!(reply, Value::Error(_)), "HSETEX: {reply:?}");
        m.cmd(&["HSET", &key, "plain", "x"]);
    }
}

fn assert_same_field_ttls(master: &Server, replica: &Server, tag: &str) {
    let (mut m, mut r) = (master.client(), replica.client());
    for i in [0, 7, 19] {
        let key = format!("{tag}:h{i}");
        let want = field_expiry(&mut m, &key, &["f", "g", "plain"]);
        assert!(
            matches!(&want, Value::Array(Some(v)) if v.len() == 3),
            "{want:?}"
        );
        assert_eq!(
            field_expiry(&mut r, &key, &["f", "g", "plain"]),
            want,
            "{key}"
        );
        let ttl = r.cmd(&["HTTL", &key, "FIELDS", "1", "f"]);
        assert!(
            matches!(&ttl, Value::Array(Some(v)) if matches!(v[0], Value::Int(t) if t > 99_000)),
            "{ttl:?}"
        );
    }
}

fn field_ttls_through_the_relay(name: &str) {
    let Some(bin) = server_bin(name) else { return };
    let master = Server::start_bin(&bin, support::free_port(), &[]);
    let mut m = master.client();
    write_field_ttls(&mut m, "before");
    let relay = Relay::of(master.port, &["--snapshot-refresh", "64kb"]);
    let replica = Server::start_bin(
        &bin,
        support::free_port(),
        &["--replicaof", "127.0.0.1", &relay.port.to_string()],
    );
    write_field_ttls(&mut m, "after");
    wait_in_sync(&master, &[&replica]);
    assert_same_field_ttls(&master, &replica, "before");
    assert_same_field_ttls(&master, &replica, "after");
    assert_eq!(m.info_num("stats", "sync_full"), 1, "{name}: one fork");

    let mut rc = relay.client();
    let first = rc.info_num("relay", "relay_snapshot_offset");
    let filler = "x".repeat(1000);
    for i in 0..100 {
        m.cmd(&["SET", &format!("fill:{i}"), &filler]);
    }
    wait_for(&format!("{name}: a snapshot refresh in service"), || {
        let offset = rc.info_num("relay", "relay_snapshot_offset");
        (offset > first, offset)
    });
    assert_eq!(m.info_num("stats", "sync_full"), 2, "{name}: one fork more");
    let later = Server::start_bin(
        &bin,
        support::free_port(),
        &["--replicaof", "127.0.0.1", &relay.port.to_string()],
    );
    wait_in_sync(&master, &[&later, &replica]);
    assert_same_field_ttls(&master, &later, "before");
    assert_same_field_ttls(&master, &later, "after");
}

#[test]
fn valkey_9_hash_field_ttls_flow_and_the_master_forks_once() {
    field_ttls_through_the_relay("valkey-9.1.2");
}

#[test]
fn redis_8_hash_field_ttls_flow_and_the_master_forks_once() {
    field_ttls_through_the_relay("redis-8.2.3");
}

/// Told that its replicas are Valkey 8.1, a Valkey 9 master writes RDB 11, which cannot hold a
/// hash with field expiry: every full sync fails on the master's side. The relay says so and
/// waits longer after each failure.
#[test]
fn full_syncs_failing_on_the_masters_side_back_off() {
    let Some(bin) = server_bin("valkey-9.1.2") else {
        return;
    };
    let master = Server::start_bin(&bin, support::free_port(), &[]);
    write_field_ttls(&mut master.client(), "x");
    let relay = Relay::of(master.port, &["--announce-version", "8.1.0"]);
    wait_for("three failed full syncs, each waited out longer", || {
        let log = relay.log();
        (log.contains("next full sync attempt in 4 s"), log.len())
    });
    let log = relay.log();
    assert!(
        log.contains("Full sync failed on the master's side")
            && log.contains("next full sync attempt in 1 s")
            && log.contains("next full sync attempt in 2 s"),
        "{log}"
    );
    assert!(
        master.log().contains("Can't store key"),
        "the master's own reason: {}",
        master.log()
    );
    let (_, metrics) = relay.http_get("/metrics");
    let failures: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("replica_relay_upstream_sync_failures_total{reason=\"full_sync\"} ")
        })
        .expect("the full_sync failure series")
        .parse()
        .unwrap();
    assert!(failures >= 3.0, "{failures}");
}

//! The version matrix: for each master version, the relay with replicas of the same version and
//! of every newer version that loads the master's snapshot format. Each pair checks fan-out of a
//! mixed dataset with live writes, a partial resync of the replica, a partial resync of the
//! relay's own link, and DEBUG DIGEST equality. Replicas too old for the format are named as
//! such by the relay (a pair the servers cannot do directly either).
//!
//! Needs the servers of scripts/install-redis-servers.sh in $REDIS_SERVERS_DIR (scripts/test
//! installs them). Each pair's result is written under the cargo target tmpdir for the table
//! in the README (scripts/compat-table prints it).

mod support;

use support::{Relay, Server, wait_for, wait_in_sync, write_mixed};

/// Name, rank (release order, Valkey 8.1/9.1 ranked after the Redis 7.2 they descend from),
/// the RDB version its replication snapshot has for a replica of the other family (Valkey 9
/// sends its own VALKEY080 to a Valkey 9 replica), and the newest RDB version it loads.
const SERVERS: [(&str, u32, u32, u32); 8] = [
    ("redis-5.0.10", 50, 9, 9),
    ("redis-6.0.9", 60, 9, 9),
    ("redis-6.2.14", 62, 9, 9),
    ("redis-7.0.15", 70, 10, 10),
    ("valkey-8.1.8", 72, 11, 11),
    ("valkey-9.1.2", 73, 11, 11),
    ("redis-7.4.1", 74, 12, 12),
    ("redis-8.2.3", 82, 12, 12),
];

fn record(master: &str, replica: &str, result: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("compat");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{master}__{replica}")), result).unwrap();
}

fn matrix_for(master_name: &str) {
    let names: Vec<&str> = SERVERS.iter().map(|s| s.0).collect();
    let Some(bins) = support::other_servers(&names) else {
        return;
    };
    let bin = |name: &str| bins.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let &(_, rank, format, _) = SERVERS.iter().find(|s| s.0 == master_name).unwrap();
    for &(replica_name, replica_rank, _, loads) in &SERVERS {
        if replica_rank < rank {
            continue;
        }
        assert!(
            format <= loads,
            "{replica_name} is newer than {master_name} but cannot load its format"
        );
        let flags = relay_flags(master_name, replica_name);
        let mut result = pair(
            &bin(master_name),
            &bin(replica_name),
            master_name,
            replica_name,
            &flags,
        );
        if !flags.is_empty() {
            result = format!("{result}; relay run with {}", flags.join(" "));
        }
        record(master_name, replica_name, &result);
    }
}

/// A Valkey 9 master sends the relay its native format, which Redis cannot load, unless the
/// relay announces an older Valkey version: then it sends RDB 11, as to a Valkey 8 replica.
fn relay_flags(master: &str, replica: &str) -> Vec<&'static str> {
    match master.starts_with("valkey-9") && replica.starts_with("redis-") {
        true => vec!["--announce-version", "8.1.0"],
        false => vec![],
    }
}

/// Fan-out, live writes, partial resyncs on both links, digests equal.
fn pair(master_bin: &str, replica_bin: &str, m_name: &str, r_name: &str, flags: &[&str]) -> String {
    let what = format!("{m_name} -> relay -> {r_name}");
    let master = Server::start_bin(master_bin, support::free_port(), &[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 10);
    let relay = Relay::of(master.port, flags);
    let replica = Server::start_bin(
        replica_bin,
        support::free_port(),
        &["--replicaof", "127.0.0.1", &relay.port.to_string()],
    );
    write_mixed(&mut m, "b", 10);
    wait_in_sync(&master, &[&replica]);

    replica.client().cmd(&["CLIENT", "KILL", "TYPE", "master"]);
    write_mixed(&mut m, "c", 5);
    let mut rc = relay.client();
    wait_for(&format!("{what}: the replica's partial resync"), || {
        let n = rc.info_num("stats", "sync_partial_ok");
        (n >= 1, n)
    });
    wait_in_sync(&master, &[&replica]);

    m.cmd(&["CLIENT", "KILL", "TYPE", "slave"]);
    write_mixed(&mut m, "d", 5);
    wait_for(&format!("{what}: the relay's partial resync"), || {
        let n = m.info_num("stats", "sync_partial_ok");
        (n >= 1, n)
    });
    wait_in_sync(&master, &[&replica]);
    assert_eq!(
        m.info_num("stats", "sync_full"),
        1,
        "{what}: one full sync at the master"
    );
    assert_eq!(
        rc.info_num("stats", "sync_full"),
        1,
        "{what}: one full sync at the relay"
    );
    "fan-out, partial resyncs of replica and relay, digests equal".into()
}

/// A replica that cannot load the format: the relay names it instead of looping.
fn incompatible(master_bin: &str, replica_bin: &str, m_name: &str, r_name: &str) {
    let master = Server::start_bin(master_bin, support::free_port(), &[]);
    master.client().cmd(&["SET", "k", "v"]);
    let relay = Relay::of(master.port, &[]);
    let _replica = Server::start_bin(
        replica_bin,
        support::free_port(),
        &["--replicaof", "127.0.0.1", &relay.port.to_string()],
    );
    let mut rc = relay.client();
    wait_for(
        &format!("{m_name} -> relay -> {r_name}: the replica named incompatible"),
        || {
            let n = rc.info_num("relay", "relay_incompatible_replicas");
            (n == 1, n)
        },
    );
    let line = rc.info("relay", "relay_incompatible_replica0").unwrap();
    assert!(
        line.contains("format=REDIS0012") && line.contains("Redis 7.4"),
        "{line}"
    );
}

#[test]
fn older_replicas_that_cannot_load_the_format_are_named_not_hammered() {
    let names = ["redis-8.2.3", "redis-7.0.15", "valkey-8.1.8"];
    let Some(bins) = support::other_servers(&names) else {
        return;
    };
    // Redis 7.0 drops the snapshot ("Can't handle RDB format version 12"); Valkey 8.1 says its
    // version, so it is refused before any snapshot is sent.
    incompatible(&bins[0].1, &bins[1].1, names[0], names[1]);
    incompatible(&bins[0].1, &bins[2].1, names[0], names[2]);
}

#[test]
fn master_redis_5_0() {
    matrix_for("redis-5.0.10");
}

#[test]
fn master_redis_6_0() {
    matrix_for("redis-6.0.9");
}

#[test]
fn master_redis_6_2() {
    matrix_for("redis-6.2.14");
}

#[test]
fn master_redis_7_0() {
    matrix_for("redis-7.0.15");
}

#[test]
fn master_redis_7_4() {
    matrix_for("redis-7.4.1");
}

#[test]
fn master_redis_8_2() {
    matrix_for("redis-8.2.3");
}

#[test]
fn master_valkey_8_1() {
    matrix_for("valkey-8.1.8");
}

#[test]
fn master_valkey_9_1() {
    matrix_for("valkey-9.1.2");
}

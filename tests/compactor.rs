//! `--snapshot-source local`: the relay's fresh snapshots made by its compactor (a server child
//! that loads the snapshot in service and the log after it, and saves), so that the master forks
//! once, for the relay's first full sync. Real servers throughout: the master's `total_forks`
//! counts, `DEBUG DIGEST` compares.

mod support;

use support::{Holds, Relay, Server, wait_for, wait_in_sync, write_mixed};

/// Writes about 150 kB on the master: past the tests' `--snapshot-refresh 100kb`.
fn outgrow_the_snapshot(master: &Server, round: usize) {
    let mut c = master.client();
    write_mixed(&mut c, &format!("r{round}"), 10);
    let value = "v".repeat(1000);
    let sets: Vec<Vec<String>> = (0..150)
        .map(|i| support::cmd(&["SET", &format!("bulk:{round}:{i}"), &value]))
        .collect();
    c.pipeline(&sets);
}

fn relay_info(relay: &Relay, field: &str) -> Option<String> {
    relay.client().info("relay", field)
}

/// Waits until the relay has made `runs` compactor runs and is no longer refreshing; the last
/// run's status line.
fn compacted(relay: &Relay, runs: i64) -> String {
    wait_for(&format!("compactor run {runs} to end"), || {
        let mut c = relay.client();
        let done = c.info_num("relay", "relay_compactor_runs") >= runs
            && c.info("relay", "relay_snapshot_refreshing").as_deref() == Some("0");
        (done, c.info("relay", "relay_compactor_last"))
    })
    .unwrap_or_default()
}

fn forks(master: &Server) -> i64 {
    master.client().info_num("stats", "total_forks")
}

fn local<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    [
        &["--snapshot-refresh", "100kb", "--snapshot-source", "local"][..],
        extra,
    ]
    .concat()
}

#[test]
fn refreshes_are_made_locally_and_the_master_forks_once() {
    let master = Server::master(&[]);
    write_mixed(&mut master.client(), "a", 20);
    let relay = Relay::of(master.port, &local(&[]));
    let streaming = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&streaming]);
    let mut newcomers = Vec::new();
    for round in 1..=3 {
        let before = relay_info(&relay, "relay_snapshot_offset");
        outgrow_the_snapshot(&master, round);
        let last = compacted(&relay, round as i64);
        assert!(last.starts_with("status=ok"), "{last}");
        assert_ne!(relay_info(&relay, "relay_snapshot_offset"), before);
        assert_eq!(
            relay_info(&relay, "relay_snapshot_made_by").as_deref(),
            Some("compactor")
        );
        // A new replica full-syncs from the compacted snapshot and the stream after it.
        newcomers.push(Server::replica_of(relay.port, &[]));
        let all: Vec<&Server> = std::iter::once(&streaming).chain(&newcomers).collect();
        wait_in_sync(&master, &all);
    }
    assert_eq!(
        forks(&master),
        1,
        "the master forked for more than the relay's first sync"
    );
    assert_eq!(
        relay_info(&relay, "relay_master_forks").as_deref(),
        Some("1")
    );
    assert_eq!(
        streaming.log().matches("Full resync from master").count(),
        1,
        "the replica that was streaming saw a full sync"
    );
    let (_, metrics) = relay.http_get("/metrics");
    assert!(
        metrics.contains("replica_relay_snapshot_from_compactor 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("replica_relay_master_forks_total 1"),
        "{metrics}"
    );
    let (_, status) = relay.http_get("/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["store"]["snapshot_made_by"], "compactor", "{status}");
}

/// A store deep in a volume (Kubernetes mounts them under /var/lib/kubelet/pods/<uid>/...): the
/// compactor's server listens on a unix socket, whose path must fit in 108 bytes, so it is not
/// put under `--dir`. It was, and such a relay's every refresh fell back to a fork on the master.
#[test]
fn a_store_deep_in_a_volume_is_compacted_without_the_master() {
    let master = Server::master(&[]);
    write_mixed(&mut master.client(), "a", 20);
    let top = tempfile::tempdir().unwrap();
    let deep = top
        .path()
        .join("volumes")
        .join("x".repeat(120))
        .join("store");
    let relay = Relay::start_in(
        Some(deep),
        &local(&["--replicaof", "127.0.0.1", &master.port.to_string()]),
    );
    let streaming = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&streaming]);
    outgrow_the_snapshot(&master, 1);
    let last = compacted(&relay, 1);
    assert!(last.starts_with("status=ok"), "{last}");
    assert_eq!(forks(&master), 1, "the refresh forked the master");
}

/// A replica keeps the snapshot it received as its dump.rdb; restarted from that file before it
/// saved one of its own, it asks `PSYNC <repl-id> <repl-offset+1>` of the AUX fields: upstream's
/// identity, which the compactor wrote in place of its server's own.
#[test]
fn a_replica_restarted_from_the_compacted_snapshot_continues_partially() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &local(&[]));
    outgrow_the_snapshot(&master, 1);
    compacted(&relay, 1);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    let kept = tempfile::tempdir().unwrap();
    std::fs::copy(replica.dir().join("dump.rdb"), kept.path().join("dump.rdb")).unwrap();
    drop(replica);
    let partial_before = relay.client().info_num("stats", "sync_partial_ok");
    let dir = kept.path().to_str().unwrap();
    let port = relay.port.to_string();
    let again = Server::start(&["--dir", dir, "--replicaof", "127.0.0.1", &port]);
    wait_in_sync(&master, &[&again]);
    // Its log is in the directory it was given (redis-server opens it after changing there).
    let log = std::fs::read_to_string(kept.path().join("redis.log")).unwrap();
    assert!(
        log.contains("Successful partial resynchronization"),
        "{log}"
    );
    assert_eq!(
        relay.client().info_num("stats", "sync_partial_ok"),
        partial_before + 1
    );
}

/// A failed run leaves the snapshot in service, counts, and asks the master instead, once.
fn falls_back_to_the_master_once(extra: &[&str], why: &str) {
    let master = Server::master(&[]);
    write_mixed(&mut master.client(), "a", 20);
    let relay = Relay::of(master.port, &local(extra));
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    outgrow_the_snapshot(&master, 1);
    let last = compacted(&relay, 1);
    assert!(last.starts_with("status=failed"), "{last}");
    wait_for("the refresh from the master", || {
        let made_by = relay_info(&relay, "relay_snapshot_made_by");
        let refreshing = relay_info(&relay, "relay_snapshot_refreshing");
        let done = forks(&master) == 2 && refreshing.as_deref() == Some("0");
        (done, (made_by, refreshing))
    });
    assert_eq!(
        relay_info(&relay, "relay_compactor_failures").as_deref(),
        Some("1")
    );
    assert_eq!(
        relay_info(&relay, "relay_master_forks").as_deref(),
        Some("2")
    );
    assert!(
        relay.log().contains(why),
        "the log does not say {why:?}:\n{}",
        relay.log()
    );
    let newcomer = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica, &newcomer]);
    assert_eq!(forks(&master), 2, "the master forked again");
}

#[test]
fn no_server_binary_falls_back_to_the_master() {
    falls_back_to_the_master_once(
        &["--compactor-server", "/nonexistent/redis-server"],
        "running /nonexistent/redis-server",
    );
}

#[test]
fn a_server_of_another_major_version_falls_back_to_the_master() {
    let Some(servers) = support::other_servers(&["redis-6.2.14"]) else {
        return;
    };
    falls_back_to_the_master_once(
        &["--compactor-server", &servers[0].1],
        "the compactor must be of the master's family and major version",
    );
}

#[test]
fn a_dataset_over_the_memory_bound_falls_back_to_the_master() {
    falls_back_to_the_master_once(
        &["--compactor-maxmemory", "1mb"],
        "the dataset does not fit",
    );
}

/// The compactor's server is killed while it loads (as by the kernel's OOM killer): a wrapper
/// starts the real server with a delay per key loaded, waits until it answers `-LOADING` on its
/// unix socket, and kills it.
#[test]
fn a_compactor_killed_while_it_loads_falls_back_to_the_master() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("redis-server");
    let real = support::redis_server_bin();
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
if [ "$1" = --version ]; then exec {real} --version; fi
socket=
prev=
for a in "$@"; do [ "$prev" = --unixsocket ] && socket=$a; prev=$a; done
{real} "$@" --key-load-delay 2000 &
pid=$!
until redis-cli -s "$socket" PING 2>/dev/null | grep -q LOADING; do
  kill -0 $pid 2>/dev/null || exit 1
done
kill -9 $pid
touch {marker}
exit 137
"#,
            marker = dir.path().join("killed-while-loading").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = script.display().to_string();
    falls_back_to_the_master_once(&["--compactor-server", &path], "before loading the AOF");
    assert!(
        dir.path().join("killed-while-loading").exists(),
        "the server was not seen loading"
    );
}

/// The newest types through a compaction: hash fields with their own TTLs (Redis 8.2, Valkey 9).
#[test]
fn hash_field_ttls_survive_compaction_on_the_newest_servers() {
    let Some(servers) = support::other_servers(&["redis-8.2.3", "valkey-9.1.2"]) else {
        return;
    };
    for (name, bin) in servers {
        let master = Server::start_bin(&bin, support::free_port(), &[]);
        let mut c = master.client();
        c.cmd(&["HSET", "h", "keep", "1", "ttl", "2"]);
        let set = c.cmd(&["HEXPIRE", "h", "3600", "FIELDS", "1", "ttl"]);
        assert_eq!(format!("{set:?}"), "Array(Some([Int(1)]))", "{name}");
        let relay = Relay::of(master.port, &local(&["--compactor-server", &bin]));
        outgrow_the_snapshot(&master, 1);
        let last = compacted(&relay, 1);
        assert!(
            last.starts_with("status=ok"),
            "{name}: {last}\n{}",
            relay.log()
        );
        let replica = Server::start_bin(
            &bin,
            support::free_port(),
            &["--replicaof", "127.0.0.1", &relay.port.to_string()],
        );
        wait_in_sync(&master, &[&replica]);
        let ttl = replica.client().cmd(&["HTTL", "h", "FIELDS", "1", "ttl"]);
        let support::Value::Array(Some(ttl)) = ttl else {
            panic!("{name}: HTTL said {ttl:?}");
        };
        assert!(
            matches!(ttl[..], [support::Value::Int(t)] if t > 3000),
            "{name}: {ttl:?}"
        );
        assert_eq!(forks(&master), 1, "{name}");
    }
}

/// A current backup (`redis-cli --rdb` through the relay) is made by the compactor as well: the
/// data as it is now, and no fork on the master.
#[test]
fn a_current_backup_is_made_without_the_master() {
    let master = Server::master(&[]);
    write_mixed(&mut master.client(), "a", 20);
    let relay = Relay::of(master.port, &["--snapshot-source", "local"]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    master.client().cmd(&["SET", "after-the-snapshot", "1"]);
    wait_in_sync(&master, &[&replica]);
    let dir = tempfile::tempdir().unwrap();
    let Ok(out) = std::process::Command::new("redis-cli")
        .args(["-p", &relay.port.to_string(), "--rdb"])
        .arg(dir.path().join("dump.rdb"))
        .output()
    else {
        return support::missing("redis-cli is not installed (scripts/test installs it)");
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loaded = Server::start(&["--dir", dir.path().to_str().unwrap()]);
    assert_eq!(loaded.client().digest(), master.client().digest());
    assert_eq!(forks(&master), 1, "the master forked for the backup");
    assert_eq!(
        relay_info(&relay, "relay_compactor_runs").as_deref(),
        Some("1")
    );
}

/// Without `--snapshot-source`, the relay makes its refreshes locally when it finds a server,
/// and says in its log that they come from the master when it finds none.
#[test]
fn the_source_is_local_with_a_server_on_path_and_master_without() {
    let master = Server::master(&[]);
    let port = master.port.to_string();
    let found = Relay::of(master.port, &[]);
    assert_eq!(
        relay_info(&found, "relay_snapshot_source").as_deref(),
        Some("local")
    );
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().to_str().unwrap();
    let none = Relay::start_with(
        None,
        &[("PATH", path)],
        &["--replicaof", "127.0.0.1", &port],
    );
    assert_eq!(
        relay_info(&none, "relay_snapshot_source").as_deref(),
        Some("master")
    );
    assert!(
        none.log()
            .contains("no redis-server or valkey-server on PATH"),
        "{}",
        none.log()
    );
}

/// The stream goes on in the database it was in at the cut: the compacted snapshot says so
/// (`repl-stream-db`), and a replica that full-syncs from it applies the writes after it, which
/// carry no SELECT, to that database.
#[test]
fn the_stream_continues_in_the_database_of_the_cut() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &local(&[]));
    let mut c = master.client();
    c.cmd(&["SELECT", "3"]);
    let value = "v".repeat(1000);
    let sets: Vec<Vec<String>> = (0..150)
        .map(|i| support::cmd(&["SET", &format!("db3:{i}"), &value]))
        .collect();
    c.pipeline(&sets);
    compacted(&relay, 1);
    // The same connection: the master sends these without a SELECT, still in database 3.
    c.cmd(&["SET", "after-the-cut", "1"]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    let mut r = replica.client();
    r.cmd(&["SELECT", "3"]);
    assert_eq!(r.cmd(&["GET", "after-the-cut"]).text(), "1");
}

/// A byte flipped in the stored snapshot: the compactor's copy checks its CRC64 (or the
/// verifier finds it first), the damaged snapshot is never served, and the fresh one comes from
/// the master.
#[test]
fn a_damaged_stored_snapshot_is_refreshed_from_the_master() {
    let master = Server::master(&[]);
    write_mixed(&mut master.client(), "a", 20);
    let relay = Relay::of(master.port, &local(&[]));
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    let snapshot = std::fs::read_dir(relay.dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "rdb"))
        .unwrap();
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&snapshot, bytes).unwrap();
    outgrow_the_snapshot(&master, 1);
    wait_for("the refresh from the master", || {
        let made_by = relay_info(&relay, "relay_snapshot_made_by");
        let refreshing = relay_info(&relay, "relay_snapshot_refreshing");
        let done = made_by.as_deref() == Some("master") && refreshing.as_deref() == Some("0");
        (done && forks(&master) == 2, (made_by, refreshing))
    });
    let newcomer = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica, &newcomer]);
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Writes about 150 kB in database `db` on `c`, which stays there.
fn outgrow_in(c: &mut support::Client, db: &str, tag: &str) {
    c.cmd(&["SELECT", db]);
    let value = "v".repeat(1000);
    let sets: Vec<Vec<String>> = (0..150)
        .map(|i| support::cmd(&["SET", &format!("{tag}:{i}"), &value]))
        .collect();
    c.pipeline(&sets);
}

/// The moment of issue 27's divergence: the relay is killed while its compactor is between its
/// save and writing the identity; the relay that takes over compacts at once, on the same
/// `--dir`. The old compactor must die with its relay: before the fix it lived on, wrote its
/// own cut's offset and database (0) into the new run's snapshot, and replicas that
/// full-synced from it applied the stream after the cut (in database 5) to database 0.
#[test]
fn a_compactor_of_a_killed_relay_never_touches_its_successors_snapshot() {
    let holds = Holds::arm(&["restore-identity", "compactor-install"]);
    let (key, value) = holds.env();
    let master = Server::master(&[]);
    let mut relay = Relay::start_with(
        None,
        &[(key, &value)],
        &[
            &["--replicaof", "127.0.0.1", &master.port.to_string()][..],
            &local(&[]),
        ]
        .concat(),
    );
    let mut c = master.client();
    outgrow_in(&mut c, "0", "old");
    // The first compactor is held with the snapshot saved and its identity (database 0) not
    // yet written.
    let old = holds.reached("restore-identity");
    // The stream moves to database 5: the next compactor's cut is there.
    outgrow_in(&mut c, "5", "new");
    relay.stored(&master);
    relay.kill9_and_restart();
    // The new relay's compactor has made its snapshot; the relay is held before taking it.
    holds.reached("compactor-install");
    holds.release("restore-identity");
    wait_for("the killed relay's compactor to be gone", || {
        (!alive(old), old)
    });
    holds.release("compactor-install");
    compacted(&relay, 1);
    assert_eq!(
        relay_info(&relay, "relay_snapshot_made_by").as_deref(),
        Some("compactor")
    );
    // Still in database 5, without a SELECT: a replica applies it where its snapshot says.
    c.cmd(&["SET", "after-the-cut", "1"]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    let mut r = replica.client();
    r.cmd(&["SELECT", "5"]);
    assert_eq!(r.cmd(&["GET", "after-the-cut"]).text(), "1");
    assert_eq!(
        relay_info(&relay, "relay_compactor_mismatches").as_deref(),
        Some("0")
    );
}

/// What the compactor made is checked against the relay's own log before it is served: here
/// its file is replaced (as by a defect of the compactor) with the master's own RDB, a good
/// file of the right format whose offset is not the cut's. It is refused, counted, never
/// served, and the fresh snapshot comes from the master.
#[test]
fn a_compacted_snapshot_with_another_identity_is_never_served() {
    let holds = Holds::arm(&["compactor-install"]);
    let (key, value) = holds.env();
    let master = Server::master(&[]);
    let mut c = master.client();
    write_mixed(&mut c, "a", 20);
    let relay = Relay::start_with(
        None,
        &[(key, &value)],
        &[
            &["--replicaof", "127.0.0.1", &master.port.to_string()][..],
            &local(&[]),
        ]
        .concat(),
    );
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    outgrow_the_snapshot(&master, 1);
    holds.reached("compactor-install");
    c.cmd(&["SET", "after-the-cut", "1"]);
    assert_eq!(c.cmd(&["SAVE"]).text(), "OK");
    let made = std::fs::read_dir(relay.dir.join("compactor"))
        .unwrap()
        .map(|e| e.unwrap().path().join("out/dump.rdb"))
        .find(|p| p.exists())
        .expect("the compactor's snapshot");
    std::fs::copy(master.dir().join("dump.rdb"), &made).unwrap();
    holds.release("compactor-install");
    wait_for("the refresh from the master", || {
        let made_by = relay_info(&relay, "relay_snapshot_made_by");
        let refreshing = relay_info(&relay, "relay_snapshot_refreshing");
        let done = made_by.as_deref() == Some("master") && refreshing.as_deref() == Some("0");
        (done && forks(&master) == 2, (made_by, refreshing))
    });
    assert_eq!(
        relay_info(&relay, "relay_compactor_mismatches").as_deref(),
        Some("1")
    );
    assert!(
        relay.log().contains("the relay's own log gives"),
        "the log says why the snapshot was refused"
    );
    let newcomer = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica, &newcomer]);
}

/// A compaction that starts from a compacted snapshot whose stream continues in another
/// database than 0 with no SELECT before its next writes: the restore's AOF must put them in
/// that database (an AOF's commands start in database 0 whatever its RDB preamble says), or
/// the second compaction moves them to database 0 while its identity stays right.
#[test]
fn a_compaction_from_a_compacted_snapshot_keeps_the_database_of_its_cut() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &local(&[]));
    let mut c = master.client();
    outgrow_in(&mut c, "3", "first");
    compacted(&relay, 1);
    // The same connection, still in database 3: no SELECT in the stream after the first cut.
    let value = "w".repeat(1000);
    let sets: Vec<Vec<String>> = (0..150)
        .map(|i| support::cmd(&["SET", &format!("second:{i}"), &value]))
        .collect();
    c.pipeline(&sets);
    compacted(&relay, 2);
    assert_eq!(
        relay_info(&relay, "relay_snapshot_made_by").as_deref(),
        Some("compactor")
    );
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
}

/// `replica-relay compare` in production: a snapshot of the master (`redis-cli --rdb`) against
/// what the relay serves at its offset. Equal after a chain of compactions with the stream in
/// database 3; a store whose snapshot is not the master's data (another good RDB put in its
/// place) is found different, exit 1.
#[test]
fn compare_finds_the_relays_data_equal_to_the_masters_or_says_it_differs() {
    let master = Server::master(&[]);
    let mut relay = Relay::of(master.port, &local(&[]));
    let mut c = master.client();
    write_mixed(&mut c, "a", 10);
    outgrow_in(&mut c, "3", "first");
    compacted(&relay, 1);
    outgrow_in(&mut c, "3", "second");
    compacted(&relay, 2);
    c.cmd(&["SET", "after", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let rdb = dir.path().join("master.rdb");
    let status = std::process::Command::new("redis-cli")
        .args(["-p", &master.port.to_string(), "--rdb"])
        .arg(&rdb)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("redis-cli (scripts/test installs it)");
    assert!(status.success());
    let store = relay.dir.clone();
    let compare = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_replica-relay"))
            .args(["compare", "--dir"])
            .arg(&store)
            .arg("--rdb")
            .arg(&rdb)
            .output()
            .unwrap()
    };
    let same = compare();
    let said = String::from_utf8_lossy(&same.stdout);
    assert!(
        same.status.success() && said.contains("is the master's"),
        "{said}{}",
        String::from_utf8_lossy(&same.stderr)
    );
    // Another good RDB in place of the snapshot in service: the relay's data is not the
    // master's any more.
    let serving = relay_snapshot(&relay);
    relay.terminate();
    let other = Server::master(&[]);
    other.client().cmd(&["SET", "x", "1"]);
    other.client().cmd(&["SAVE"]);
    std::fs::copy(other.dir().join("dump.rdb"), &serving).unwrap();
    let differs = compare();
    let said = String::from_utf8_lossy(&differs.stderr);
    assert!(!differs.status.success(), "{said}");
    assert!(said.contains("differs from the master's"), "{said}");
}

/// The snapshot file in service in a relay's store.
fn relay_snapshot(relay: &Relay) -> std::path::PathBuf {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replica-relay"))
        .args(["inspect", "--json"])
        .arg(&relay.dir)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    std::path::PathBuf::from(
        report["store"]["snapshot"]
            .as_str()
            .expect("a snapshot path"),
    )
}

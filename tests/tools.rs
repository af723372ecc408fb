//! What operators' usual tools read from the relay: `redis-cli --stat`, an exporter's parse of
//! INFO, the version tools branch on.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::*;

/// `redis-cli --stat` prints LONG_MIN for every field INFO lacks.
#[test]
fn redis_cli_stat_reads_every_column() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let _replica = Server::replica_of(relay.port, &[]);
    write_mixed(&mut master.client(), "a", 5);
    let Ok(mut child) = Command::new("redis-cli")
        .args(["-p", &relay.port.to_string(), "--stat", "-i", "0.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return missing("redis-cli is not installed (scripts/test installs it)");
    };
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .take(5)
        .map(|l| l.unwrap())
        .collect();
    child.kill().unwrap();
    child.wait().unwrap();
    let text = lines.join("\n");
    assert!(!text.contains("-9223372036854775808"), "{text}");
    // keys, mem, clients, blocked, requests, connections: the data lines are numbers.
    let data = &lines[2];
    let cols: Vec<&str> = data.split_whitespace().collect();
    assert!(cols.len() >= 6, "{text}");
    assert!(cols[2].parse::<i64>().unwrap() >= 2, "clients: {text}");
}

/// What an exporter does with INFO: every line `key:value`, and a value numeric wherever
/// Redis' own is.
#[test]
fn info_parses_as_an_exporter_reads_it() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    write_mixed(&mut master.client(), "a", 5);
    wait_for("the relay's link", || {
        let up = relay.client().info("replication", "master_link_status");
        (up.as_deref() == Some("up"), up)
    });
    let parse = |text: String| -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("not key:value: {l:?}"));
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    let ours = parse(relay.client().cmd(&["INFO", "all"]).text());
    let redis: std::collections::HashMap<String, String> =
        parse(master.client().cmd(&["INFO", "all"]).text())
            .into_iter()
            .collect();
    let mut common = 0;
    for (key, value) in &ours {
        if let Some(theirs) = redis.get(key) {
            common += 1;
            if theirs.parse::<f64>().is_ok() {
                assert!(
                    value.parse::<f64>().is_ok(),
                    "{key}:{value} is not a number; Redis says {theirs}"
                );
            }
        }
    }
    assert!(
        common >= 30,
        "only {common} fields in common with Redis' INFO"
    );
    let wanted = [
        "redis_version",
        "redis_mode",
        "process_id",
        "tcp_port",
        "run_id",
        "uptime_in_seconds",
        "connected_clients",
        "blocked_clients",
        "used_memory",
        "used_memory_rss",
        "total_connections_received",
        "total_commands_processed",
        "instantaneous_ops_per_sec",
        "total_net_input_bytes",
        "total_net_output_bytes",
    ];
    for field in wanted {
        assert!(ours.iter().any(|(k, _)| k == field), "INFO has no {field}");
    }
    let version = |fields: &[(String, String)]| {
        fields
            .iter()
            .find(|(k, _)| k == "redis_version")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        version(&ours),
        redis.get("redis_version").cloned(),
        "the master's version"
    );
}

fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output();
    match out {
        Ok(o) => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Err(_) => {
            missing("redis-cli is not installed (scripts/test installs it)");
            None
        }
    }
}

/// CLIENT LIST shows every connection with Redis' fields, replicas as `flags=S`; CLIENT KILL
/// by ID closes a replica link, which then resumes as after any dropped link.
#[test]
fn client_list_shows_replicas_and_clients_and_kill_drops_a_replica_link() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let replica = Server::replica_of(relay.port, &[]);
    write_mixed(&mut master.client(), "a", 5);
    wait_in_sync(&master, &[&replica]);
    let mut c = relay.client();
    c.cmd(&["CLIENT", "SETNAME", "operator"]);
    let list = c.cmd(&["CLIENT", "LIST"]).text();
    let replica_line = list
        .lines()
        .find(|l| l.contains("flags=S"))
        .unwrap_or_else(|| panic!("no replica in {list}"));
    assert!(
        list.lines()
            .any(|l| l.contains("name=operator") && l.contains("flags=N")),
        "{list}"
    );
    let id = replica_line
        .split(' ')
        .find_map(|f| f.strip_prefix("id="))
        .unwrap()
        .to_string();
    let info = c.cmd(&["CLIENT", "INFO"]).text();
    assert!(
        info.contains("name=operator") && info.lines().count() == 1,
        "{info}"
    );
    assert_eq!(c.cmd(&["CLIENT", "KILL", "ID", &id]), Value::Int(1));
    master.client().cmd(&["SET", "after", "1"]);
    wait_in_sync(&master, &[&replica]);
    assert_eq!(
        relay.client().syncs(),
        (1, 1),
        "the replica resumed with a partial resync"
    );
    assert!(
        relay.log().contains("closed by CLIENT KILL"),
        "{}",
        relay.log()
    );
}

/// COMMAND COUNT and COMMAND DOCS describe what the relay serves, so redis-cli has hints.
#[test]
fn command_docs_describe_the_relays_commands() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let Some(count) = redis_cli(relay.port, &["COMMAND", "COUNT"]) else {
        return;
    };
    assert!(count.trim().parse::<i64>().unwrap() >= 20, "{count}");
    let docs = redis_cli(relay.port, &["COMMAND", "DOCS", "replicaof"]).unwrap();
    assert!(docs.contains("summary") && docs.contains("host"), "{docs}");
}

fn forks(server: &Server) -> i64 {
    server.client().info_num("stats", "total_forks")
}

/// Keys in an RDB file, loaded by a stock server.
fn keys_in(dump: &std::path::Path) -> i64 {
    let dir = dump.parent().unwrap().to_str().unwrap();
    let name = dump.file_name().unwrap().to_str().unwrap();
    let server = Server::start(&["--dir", dir, "--dbfilename", name]);
    server.client().cmd(&["DBSIZE"]).text().parse().unwrap()
}

fn rdb_backup(relay: &Relay, path: &std::path::Path, mode: &str) -> Option<std::process::Output> {
    Command::new("redis-cli")
        .args(["-p", &relay.port.to_string(), mode])
        .arg(path)
        .output()
        .map_err(|_| missing("redis-cli is not installed (scripts/test installs it)"))
        .ok()
}

/// `redis-cli --rdb` through the relay gets the data as it is now: with `--snapshot-source
/// master`, a fresh snapshot from the
/// master (one fork for backups asked together), unless `--rdb-only-max-age` accepts the
/// stored one; `--functions-rdb` is refused rather than answered with the whole dataset.
#[test]
fn backups_through_the_relay_are_current() {
    let master = Server::master(&[]);
    let cmds: Vec<Vec<String>> = (0..3000)
        .map(|i| cmd(&["SET", &format!("k{i}"), "v"]))
        .collect();
    master.client().pipeline(&cmds);
    // From the master: the compactor's backups are tests/compactor.rs's.
    let relay = Relay::of(master.port, &["--snapshot-source", "master"]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    let more: Vec<Vec<String>> = (0..100)
        .map(|i| cmd(&["SET", &format!("new{i}"), "v"]))
        .collect();
    master.client().pipeline(&more);
    wait_in_sync(&master, &[&replica]);
    let dir = tempfile::tempdir().unwrap();
    let before = forks(&master);
    let paths: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("dump{i}.rdb")))
        .collect();
    let runs: Vec<_> = paths
        .iter()
        .map(|p| {
            let p = p.clone();
            let port = relay.port;
            std::thread::spawn(move || {
                Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "--rdb"])
                    .arg(&p)
                    .output()
            })
        })
        .collect();
    for run in runs {
        let Ok(out) = run.join().unwrap() else {
            return missing("redis-cli is not installed (scripts/test installs it)");
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for p in &paths {
        assert_eq!(keys_in(p), 3100, "a backup of the data as it was then");
    }
    assert_eq!(
        forks(&master) - before,
        1,
        "one fork for both backups: {}",
        master.log()
    );
    assert!(
        relay.log().contains("asking the master for a fresh one"),
        "{}",
        relay.log()
    );
    // The replica streaming meanwhile saw nothing of it: the relay's full syncs are its first
    // one and the two backups.
    master.client().cmd(&["SET", "after", "1"]);
    wait_in_sync(&master, &[&replica]);
    assert_eq!(relay.client().syncs(), (3, 0));
    // A client asking again at once does not make the master fork again.
    let forks_then = forks(&master);
    let again = dir.path().join("again.rdb");
    let out = rdb_backup(&relay, &again, "--rdb").unwrap();
    assert!(out.status.success());
    assert_eq!(
        keys_in(&again),
        3100,
        "the last fetched snapshot, without the write since"
    );
    assert_eq!(forks(&master), forks_then, "a fork for every backup");
    assert!(
        relay.log().contains("at most once every 60 s"),
        "{}",
        relay.log()
    );
}

/// Libraries loaded by `FUNCTION LOAD` on `server`, with their code, sorted.
fn libraries(server: &Server) -> Vec<String> {
    let Value::Array(Some(libs)) = server.client().cmd(&["FUNCTION", "LIST", "WITHCODE"]) else {
        panic!("FUNCTION LIST");
    };
    let mut out: Vec<String> = libs.iter().map(|l| format!("{l:?}")).collect();
    out.sort();
    out
}

fn library(name: &str, body: &str) -> String {
    format!(
        "#!lua name={name}\nredis.register_function('{name}_f', function() return '{body}' end)"
    )
}

/// `redis-cli --functions-rdb` through the relay: the libraries as the master holds them now,
/// from the stored snapshot and the stream's FUNCTION commands, without the master's help and
/// without any key.
#[test]
fn functions_rdb_is_made_from_the_snapshot_and_the_stream() {
    let master = Server::master(&[]);
    if redis_major(&redis_server_bin()) < 7 {
        return missing("FUNCTION needs Redis 7");
    }
    let mut m = master.client();
    // Long and repetitive: the snapshot stores it LZF-compressed.
    m.cmd(&["FUNCTION", "LOAD", &library("one", &"v1".repeat(200))]);
    let keys: Vec<Vec<String>> = (0..2000)
        .map(|i| cmd(&["SET", &format!("k{i}"), "v"]))
        .collect();
    m.pipeline(&keys);
    let relay = Relay::of(master.port, &[]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    // After the relay's snapshot: in the stream only.
    for c in [
        vec!["FUNCTION", "LOAD", &library("two", "v1")],
        vec!["FUNCTION", "LOAD", &library("three", "v1")],
        vec!["FUNCTION", "DELETE", "three"],
    ] {
        assert!(!matches!(m.cmd(&c), Value::Error(_)));
    }
    let replaced = library("one", "v2");
    m.cmd(&["FUNCTION", "LOAD", "REPLACE", &replaced]);
    wait_in_sync(&master, &[&replica]);
    let before = forks(&master);
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("functions.rdb");
    let Some(out) = rdb_backup(&relay, &dump, "--functions-rdb") else {
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(forks(&master), before, "the master forked for it");
    assert!(
        std::fs::metadata(&dump).unwrap().len() < 2000,
        "more than functions"
    );
    let loaded = Server::start(&[
        "--dir",
        dir.path().to_str().unwrap(),
        "--dbfilename",
        "functions.rdb",
    ]);
    assert_eq!(loaded.client().cmd(&["DBSIZE"]), Value::Int(0));
    assert_eq!(libraries(&loaded), libraries(&master));
    assert!(
        relay.log().contains("libraries: one, two"),
        "{}",
        relay.log()
    );
}

#[test]
fn rdb_only_max_age_accepts_a_recent_stored_snapshot() {
    let master = Server::master(&[]);
    master.client().cmd(&["SET", "k", "1"]);
    let relay = Relay::of(master.port, &["--rdb-only-max-age", "1h"]);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    master.client().cmd(&["SET", "later", "1"]);
    wait_in_sync(&master, &[&replica]);
    let before = forks(&master);
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump.rdb");
    let Some(out) = rdb_backup(&relay, &dump, "--rdb") else {
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        forks(&master),
        before,
        "the stored snapshot was young enough"
    );
    assert_eq!(keys_in(&dump), 1, "the stored snapshot, as old as it is");
    assert!(
        relay.log().contains("within --rdb-only-max-age"),
        "{}",
        relay.log()
    );
}

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

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

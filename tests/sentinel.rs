//! The relay under real Sentinels (PROTOCOL §10): never promoted, re-pointed by Sentinel's
//! failover transaction with a partial resync, its hello link kept up, the master found
//! through Sentinel, and replicas kept whole when a master comes back empty.

mod support;

use support::sentinel::{self, Sentinel};
use support::*;

/// A master with 1000 keys, two replicas on it, the relay on it and two replicas behind the
/// relay, all in sync.
struct Topology {
    master: Server,
    direct: Vec<Server>,
    relay: Relay,
    behind: Vec<Server>,
}

fn topology(relay_flags: &[&str]) -> Topology {
    let master = Server::master(&[]);
    let direct: Vec<Server> = (0..2)
        .map(|_| Server::replica_of(master.port, &[]))
        .collect();
    let relay = Relay::of(master.port, relay_flags);
    let behind: Vec<Server> = (0..2)
        .map(|_| Server::replica_of(relay.port, &[]))
        .collect();
    fill(&master, "k", 1000);
    let all: Vec<&Server> = direct.iter().chain(&behind).collect();
    wait_in_sync(&master, &all);
    Topology {
        master,
        direct,
        relay,
        behind,
    }
}

fn fill(server: &Server, prefix: &str, n: usize) {
    let cmds: Vec<Vec<String>> = (0..n)
        .map(|i| cmd(&["SET", &format!("{prefix}:{i}"), &format!("v{i}")]))
        .collect();
    server.client().pipeline(&cmds);
}

/// Waits until `sentinel` lists the relay as a healthy replica (not disconnected) of priority 0.
fn listed_with_priority_zero(sentinel: &Sentinel, relay: &Relay) {
    wait_for(
        "Sentinel to list the relay, connected, with priority 0",
        || {
            let r = sentinel.replica(relay.port);
            let ok = r.as_ref().is_some_and(|r| {
                r["flags"] == "slave"
                    && r["slave-priority"] == "0"
                    && r["master-link-status"] == "ok"
            });
            (ok, r)
        },
    );
}

/// Sentinel's transaction closes normal clients (CLIENT KILL TYPE normal): each poll connects.
fn following(relay: &Relay, port: u16) {
    wait_for(&format!("the relay to follow port {port}, link up"), || {
        let mut c = relay.client();
        let seen = (
            c.info("replication", "master_port"),
            c.info("replication", "master_link_status"),
        );
        (
            seen.0.as_deref() == Some(&port.to_string()) && seen.1.as_deref() == Some("up"),
            seen,
        )
    });
}

fn key_reaches(replicas: &[&Server], key: &str) {
    for r in replicas {
        let mut c = r.client();
        wait_for(&format!("{key} on the replica on port {}", r.port), || {
            let v = c.cmd(&["GET", key]);
            (v != Value::Bulk(None), v)
        });
    }
}

#[test]
fn a_failover_repoints_the_relay_with_partial_resyncs_and_never_promotes_it() {
    // Announced, so that SENTINEL REPLICAS shows what Sentinel holds of it.
    let mut t = topology(&["--replica-announced", "yes"]);
    let sentinels = sentinel::three(t.master.port);
    for s in &sentinels {
        listed_with_priority_zero(s, &t.relay);
    }
    let relay_full_syncs = t.relay.client().info_num("stats", "sync_full");
    let old = t.master.port;
    drop(t.master);
    let promoted = wait_for("Sentinel to promote a replica", || {
        let port = sentinels[0].master_port();
        (port.is_some_and(|p| p != old), port)
    })
    .unwrap();
    assert_ne!(promoted, t.relay.port, "the relay was promoted");
    assert!(t.direct.iter().any(|r| r.port == promoted));
    following(&t.relay, promoted);
    let new_master = t.direct.iter().find(|r| r.port == promoted).unwrap();
    new_master.client().cmd(&["SET", "after-failover", "1"]);
    let behind: Vec<&Server> = t.behind.iter().collect();
    key_reaches(&behind, "after-failover");
    assert_eq!(
        new_master.client().syncs().0,
        0,
        "the new master made a full sync"
    );
    let log = t.relay.log();
    assert!(log.contains("transaction"), "{log}");
    assert_eq!(
        t.relay.client().info_num("stats", "sync_full"),
        relay_full_syncs,
        "the relay served a full sync after the failover"
    );
    // The old master comes back; Sentinel makes it a replica of the new one.
    t.master = Server::start_on(old, &[]);
    wait_for("the old master to become a replica", || {
        let role = Client::try_connect(old).and_then(|mut c| c.info("replication", "role"));
        (role.as_deref() == Some("slave"), role)
    });
    following(&t.relay, promoted);
    assert_eq!(
        t.relay
            .client()
            .info_num("stats", "relay_upstream_full_syncs"),
        1
    );
}

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
    let (_, metrics) = t.relay.http_get("/metrics");
    assert!(
        metrics.contains("replica_relay_master_changes_total{reason=\"transaction\"} 1"),
        "{metrics}"
    );
    let info = t.relay.client().cmd(&["INFO", "relay"]).text();
    assert!(
        info.contains(&format!("relay_last_master_change:from=127.0.0.1:{old},to=127.0.0.1:{promoted},reason=transaction")),
        "{info}"
    );
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

/// `--sentinel` names of the three Sentinels, the first one of which is `dead` (killed).
fn sentinel_flags(sentinels: &[Sentinel], dead: u16) -> Vec<String> {
    let mut list = vec![format!("127.0.0.1:{dead}")];
    list.extend(sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)));
    vec![
        "--sentinel".into(),
        list.join(","),
        "--sentinel-master".into(),
        sentinel::NAME.into(),
    ]
}

fn promoted_other_than(sentinels: &[Sentinel], old: u16) -> u16 {
    wait_for("Sentinel to promote a replica", || {
        let port = sentinels[0].master_port();
        (port.is_some_and(|p| p != old), port)
    })
    .unwrap()
}

#[test]
fn started_with_only_sentinels_the_relay_finds_the_master_and_follows_the_failover() {
    let master = Server::master(&[]);
    let direct: Vec<Server> = (0..2)
        .map(|_| Server::replica_of(master.port, &[]))
        .collect();
    fill(&master, "k", 1000);
    let mut sentinels = sentinel::three(master.port);
    // One of the Sentinels the relay is given is down from the start.
    let dead = sentinels.remove(0).port;
    let flags = sentinel_flags(&sentinels, dead);
    let relay = Relay::start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    following(&relay, master.port);
    let behind: Vec<Server> = (0..2)
        .map(|_| Server::replica_of(relay.port, &[]))
        .collect();
    let all: Vec<&Server> = direct.iter().chain(&behind).collect();
    wait_in_sync(&master, &all);
    let info = relay.client().cmd(&["INFO", "relay"]).text();
    assert!(
        info.contains("relay_sentinel_watching:127.0.0.1:"),
        "{info}"
    );
    let old = master.port;
    drop(master);
    let promoted = promoted_other_than(&sentinels, old);
    following(&relay, promoted);
    let new_master = direct.iter().find(|r| r.port == promoted).unwrap();
    new_master.client().cmd(&["SET", "after-failover", "1"]);
    key_reaches(&behind.iter().collect::<Vec<_>>(), "after-failover");
    assert_eq!(
        new_master.client().syncs().0,
        0,
        "a full sync on the new master"
    );
    assert_eq!(
        relay
            .client()
            .info_num("stats", "relay_upstream_full_syncs"),
        1
    );
    assert_eq!(relay.client().info_num("stats", "sync_full"), 2);
}

/// A relay attached to a replica is unknown to Sentinel, which sees only the master's
/// replicas: only `+switch-master` can move it.
#[test]
fn a_relay_unknown_to_sentinel_is_moved_by_switch_master() {
    let master = Server::master(&[]);
    // Never promoted, so the relay on it has to move.
    let r1 = Server::replica_of(master.port, &["--replica-priority", "0"]);
    let r2 = Server::replica_of(master.port, &[]);
    fill(&master, "k", 500);
    let sentinels = sentinel::three(master.port);
    // Attached to the replica from the start (--replicaof), so Sentinel, which reads the
    // replicas of masters only, never learns of it.
    let mut flags = sentinel_flags(&sentinels[1..], sentinels[0].port);
    flags.extend(["--replica-announced".into(), "yes".into()]);
    flags.extend([
        "--replicaof".into(),
        "127.0.0.1".into(),
        r1.port.to_string(),
    ]);
    let relay = Relay::start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    following(&relay, r1.port);
    wait_for("the relay to say it follows a replica", || {
        let (_, metrics) = relay.http_get("/metrics");
        (metrics.contains("replica_relay_master_is_replica 1"), ())
    });
    let behind = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&r1, &r2, &behind]);
    wait_for("the relay to hear from a Sentinel", || {
        let info = relay.client().cmd(&["INFO", "relay"]).text();
        let named = format!("relay_sentinel_named_master:127.0.0.1:{}", master.port);
        (info.contains(&named), info)
    });
    following(&relay, r1.port);
    assert_eq!(
        sentinels[0].replica(relay.port),
        None,
        "Sentinel knows the relay"
    );
    let old = master.port;
    drop(master);
    let promoted = promoted_other_than(&sentinels, old);
    assert_eq!(promoted, r2.port);
    following(&relay, promoted);
    assert!(relay.log().contains("(switch_master:"), "{}", relay.log());
    r2.client().cmd(&["SET", "after-failover", "1"]);
    key_reaches(&[&behind], "after-failover");
    assert_eq!(
        relay
            .client()
            .info_num("stats", "relay_upstream_full_syncs"),
        1
    );
}

/// Sentinel's transaction, sent as Sentinel sends it (with a renamed SLAVEOF): SLAVEOF NO ONE is
/// refused; SLAVEOF <host> <port> re-points the relay, CONFIG REWRITE keeps it across kill -9,
/// CLIENT KILL closes clients and never a replica link.
#[test]
fn sentinels_transaction_repoints_refuses_promotion_and_survives_kill_9() {
    let master = Server::master(&[]);
    let other = Server::replica_of(master.port, &[]);
    let mut relay = Relay::of(master.port, &["--rename-command", "SLAVEOF=GUESSWHAT"]);
    let behind = Server::replica_of(relay.port, &[]);
    fill(&master, "k", 100);
    wait_in_sync(&master, &[&other, &behind]);
    let transaction = |to: &[&str]| {
        let mut c = relay.client();
        let mut head = vec!["GUESSWHAT"];
        head.extend_from_slice(to);
        let replies = c.pipeline(&[
            cmd(&["MULTI"]),
            head.iter().map(|s| s.to_string()).collect(),
            cmd(&["CONFIG", "REWRITE"]),
            cmd(&["CLIENT", "KILL", "TYPE", "normal"]),
            cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]),
            cmd(&["EXEC"]),
        ]);
        assert!(
            replies[1..5]
                .iter()
                .all(|r| *r == Value::Simple("QUEUED".into())),
            "{replies:?}"
        );
        match &replies[5] {
            Value::Array(Some(v)) => v.clone(),
            other => panic!("EXEC: {other:?}"),
        }
    };
    assert!(matches!(
        relay.client().cmd(&["SLAVEOF", "NO", "ONE"]),
        Value::Error(_)
    ));
    let mut bystander = relay.client();
    assert_eq!(bystander.cmd(&["PING"]), Value::Simple("PONG".into()));
    let exec = transaction(&["NO", "ONE"]);
    assert!(
        matches!(&exec[0], Value::Error(e) if e.contains("cannot become a master")),
        "{exec:?}"
    );
    assert_eq!(exec[1], Value::Simple("OK".into()));
    assert_eq!(exec[2], Value::Int(1), "the bystander is closed");
    assert_eq!(bystander.read(), None);
    following(&relay, master.port);
    let exec = transaction(&["127.0.0.1", &other.port.to_string()]);
    assert_eq!(exec[0], Value::Simple("OK".into()), "{exec:?}");
    following(&relay, other.port);
    relay.kill9_and_restart();
    following(&relay, other.port);
    assert!(
        relay.log().contains("recorded by CONFIG REWRITE"),
        "{}",
        relay.log()
    );
    // `other` is a replica of the master: the write reaches the relay through it.
    master.client().cmd(&["SET", "after", "1"]);
    key_reaches(&[&behind], "after");
    assert_eq!(
        relay
            .client()
            .info_num("stats", "relay_upstream_full_syncs"),
        0,
        "the relay's history continued on the new master"
    );
}

/// The hello link: Sentinels publish to the relay and read each other's hellos on it, and none
/// reconnects over a minute. The relay is not announced, so SENTINEL REPLICAS hides it.
#[test]
fn sentinels_hello_link_stays_up_for_a_minute() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    wait_for("the relay's link", || {
        let up = relay.client().info("replication", "master_link_status");
        (up.as_deref() == Some("up"), up)
    });
    // A slow reply on a loaded machine must not look like a dead link: Sentinel drops a link
    // whose PING waits half of down-after.
    let sentinels = sentinel::three_with(master.port, 10_000);
    let mut hello = relay.client();
    hello.cmd(&["SUBSCRIBE", "__sentinel__:hello"]);
    let mut heard = std::collections::BTreeSet::new();
    wait_for("hellos from all three Sentinels through the relay", || {
        if let Some(Value::Array(Some(m))) = hello.read() {
            heard.insert(m[2].text().split(',').nth(1).unwrap_or("").to_string());
        }
        (heard.len() == 3, heard.clone())
    });
    assert_eq!(
        sentinels[0].replica(relay.port),
        None,
        "announced to Sentinel's clients"
    );
    let mut info = relay.client();
    let connections = info.info_num("stats", "total_connections_received");
    let start = std::time::Instant::now();
    let mut messages = 0;
    while start.elapsed() < std::time::Duration::from_secs(60) {
        // Each Sentinel publishes every 2 s: a read waits for the next one.
        assert!(matches!(hello.read(), Some(Value::Array(Some(_)))));
        messages += 1;
    }
    assert!(messages >= 60, "{messages} hellos in a minute");
    assert_eq!(
        info.info_num("stats", "total_connections_received"),
        connections,
        "Sentinels reconnected to the relay"
    );
}

fn held_back(relay: &Relay) {
    wait_for("the empty-master guard to hold the relay back", || {
        let held = relay.client().info("relay", "relay_empty_master_held");
        (held.as_deref() == Some("1"), held)
    });
}

/// A master without persistence comes back empty with a new history: the relay keeps its data
/// (and its replicas theirs), then continues on the promoted replica without a full sync; it
/// takes an empty master's history only once that master holds data.
#[test]
fn a_master_restarted_empty_does_not_empty_the_replicas() {
    let master = Server::master(&[]);
    let direct = Server::replica_of(master.port, &[]);
    let relay = Relay::of(master.port, &[]);
    let behind = Server::replica_of(relay.port, &[]);
    fill(&master, "k", 1000);
    wait_in_sync(&master, &[&direct, &behind]);
    let digest = behind.client().digest();
    let port = master.port;
    drop(master);
    // The failover: the direct replica is promoted; the old master comes back empty before
    // the relay is moved.
    direct.client().cmd(&["REPLICAOF", "NO", "ONE"]);
    let master = Server::start_on(port, &[]);
    held_back(&relay);
    let (code, metrics) = relay.http_get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("replica_relay_empty_master_held 1"),
        "{metrics}"
    );
    assert_eq!(
        behind.client().digest(),
        digest,
        "the replica lost its data"
    );
    assert_eq!(
        relay
            .client()
            .info_num("stats", "relay_upstream_full_syncs"),
        1
    );
    let to = direct.port.to_string();
    relay.client().cmd(&["REPLICAOF", "127.0.0.1", &to]);
    following(&relay, direct.port);
    direct.client().cmd(&["SET", "after", "1"]);
    key_reaches(&[&behind], "after");
    assert_eq!(
        relay
            .client()
            .info_num("stats", "relay_upstream_full_syncs"),
        1
    );
    assert_eq!(
        relay
            .client()
            .info("relay", "relay_empty_master_held")
            .as_deref(),
        Some("0")
    );
    // Back to the empty master: held again, until it holds data.
    relay
        .client()
        .cmd(&["REPLICAOF", "127.0.0.1", &port.to_string()]);
    held_back(&relay);
    master.client().cmd(&["SET", "only", "1"]);
    following(&relay, port);
    wait_in_sync(&master, &[&behind]);
    assert_eq!(
        relay
            .client()
            .info_num("stats", "relay_upstream_full_syncs"),
        2
    );
}

/// A Sentinel that has not learnt of a failover: it names `master` in configuration epoch 0,
/// and otherwise answers as a Sentinel does to what the relay sends it (SUBSCRIBE, PING). A
/// real Sentinel is stale only for a moment, which a test cannot hold; this one stays stale.
fn stale_sentinel(master: u16) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            std::thread::spawn(move || {
                let mut w = sock.try_clone().unwrap();
                let mut lines = BufReader::new(sock).lines();
                let bulk = |s: &str| format!("${}\r\n{s}\r\n", s.len());
                while let Some(Ok(line)) = lines.next() {
                    // Each command: *N, then $len and the word for each argument.
                    let Some(n) = line.strip_prefix('*').and_then(|n| n.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    let args: Vec<String> = (0..n)
                        .filter_map(|_| {
                            lines.next();
                            lines.next().and_then(Result::ok)
                        })
                        .collect();
                    let word = |i: usize| args.get(i).map(|a| a.to_ascii_uppercase());
                    let reply = match word(0).as_deref().unwrap_or("") {
                        "SENTINEL" if word(1).as_deref() == Some("GET-MASTER-ADDR-BY-NAME") => {
                            format!("*2\r\n{}{}", bulk("127.0.0.1"), bulk(&master.to_string()))
                        }
                        "SENTINEL" => {
                            let fields = [
                                ("name", sentinel::NAME.to_string()),
                                ("ip", "127.0.0.1".into()),
                                ("port", master.to_string()),
                                ("flags", "master".into()),
                                ("config-epoch", "0".into()),
                            ];
                            let items: String =
                                fields.iter().map(|(k, v)| bulk(k) + &bulk(v)).collect();
                            format!("*{}\r\n{items}", fields.len() * 2)
                        }
                        "SUBSCRIBE" => {
                            format!("*3\r\n{}{}:1\r\n", bulk("subscribe"), bulk(&args[1]))
                        }
                        "PING" => format!("*2\r\n{}{}", bulk("pong"), bulk("")),
                        _ => "+OK\r\n".into(),
                    };
                    if w.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// After a failover, a Sentinel that has not learnt of it still names the old master: the relay
/// follows what the Sentinels name in the newest configuration epoch, as Sentinel itself does,
/// even when the stale one is the first of its list and its master still says role:master.
#[test]
fn a_stale_sentinel_does_not_move_the_relay_back_to_an_old_master() {
    let master = Server::master(&[]);
    let replica = Server::replica_of(master.port, &[]);
    fill(&master, "k", 100);
    wait_in_sync(&master, &[&replica]);
    let sentinels = sentinel::three(master.port);
    sentinels[0]
        .client()
        .cmd(&["SENTINEL", "FAILOVER", sentinel::NAME]);
    for s in &sentinels {
        wait_for("every Sentinel to name the promoted replica", || {
            let named = s.master_port();
            (named == Some(replica.port), named)
        });
    }
    // The old master stands alone and says role:master, as one back from a pause does.
    let old = Server::master(&[]);
    let stale = stale_sentinel(old.port);
    let mut list = vec![format!("127.0.0.1:{stale}")];
    list.extend(sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)));
    let relay = Relay::start(&[
        "--sentinel",
        &list.join(","),
        "--sentinel-master",
        sentinel::NAME,
    ]);
    following(&relay, replica.port);
    assert!(
        !relay.log().contains(&format!("to 127.0.0.1:{}", old.port)),
        "the relay followed the stale Sentinel's master"
    );
}

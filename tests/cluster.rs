//! A relay per Redis Cluster shard: real `redis-server --cluster-enabled yes` nodes made a
//! cluster by `redis-cli --cluster create` (three primaries, a replica each), relays following
//! shards (found through a node of another shard) and a plain replica behind each relay.

mod support;

use std::process::Command;

use support::{Relay, Server, Value, wait_for, wait_in_sync};

struct Cluster {
    nodes: Vec<Server>,
}

/// A node as the test reads `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct Node {
    id: String,
    port: u16,
    /// A primary not flagged failing.
    primary: bool,
    failing: bool,
    primary_id: String,
    slots: String,
}

impl Cluster {
    fn create() -> Option<Cluster> {
        Cluster::create_with(&support::redis_server_bin())
    }

    /// A cluster of `bin` servers (Valkey's too: `redis-cli --cluster` speaks to them).
    fn create_with(bin: &str) -> Option<Cluster> {
        Cluster::create_with_flags(bin, &[])
    }

    fn create_with_flags(bin: &str, extra: &[&str]) -> Option<Cluster> {
        if Command::new("redis-cli").arg("--version").output().is_err() {
            support::missing("redis-cli, which makes the cluster");
            return None;
        }
        let mut flags = vec!["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"];
        flags.extend(extra);
        let start = |_| Server::start_bin(bin, support::free_port(), &flags);
        let nodes: Vec<Server> = (0..6).map(start).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| addr(n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{said}");
        let cluster = Cluster { nodes };
        cluster.wait_ok();
        Some(cluster)
    }

    fn wait_ok(&self) {
        for n in self.nodes.iter().filter(|n| n.running()) {
            wait_for(&format!("node {} to see the cluster ok", n.port), || {
                let info = n.client().cmd(&["CLUSTER", "INFO"]).text();
                (info.contains("cluster_state:ok"), info)
            });
        }
    }

    /// Waits until the cluster failed the node on `port` over: its slots served by another.
    fn wait_ok_without(&self, port: u16) {
        wait_for(&format!("the cluster to fail over node {port}"), || {
            let nodes = self.nodes();
            let dead = nodes
                .iter()
                .find(|n| n.port == port)
                .is_some_and(|n| n.failing);
            let served = nodes
                .iter()
                .filter(|n| n.primary && !n.slots.is_empty())
                .count();
            (dead && served == 3, nodes)
        });
        self.wait_ok();
    }

    /// `CLUSTER FAILOVER` on the replica on `port`, until it is the primary: a manual failover
    /// the cluster did not finish in time (its primary busy) is asked again, as an operator would.
    fn manual_failover(&self, port: u16) {
        let mut c = self.node(port).client();
        let mut asked_at = None::<std::time::Instant>;
        wait_for(&format!("node {port} to take its shard over"), || {
            let role = c.info("replication", "role");
            if role.as_deref() != Some("master")
                && asked_at.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(6))
            {
                assert_eq!(c.cmd(&["CLUSTER", "FAILOVER"]), Value::Simple("OK".into()));
                asked_at = Some(std::time::Instant::now());
            }
            (role.as_deref() == Some("master"), role)
        });
    }

    fn node(&self, port: u16) -> &Server {
        self.nodes.iter().find(|s| s.port == port).expect("a node")
    }

    fn node_mut(&mut self, port: u16) -> &mut Server {
        self.nodes
            .iter_mut()
            .find(|s| s.port == port)
            .expect("a node")
    }

    /// The cluster's nodes, as a live node sees them.
    fn nodes(&self) -> Vec<Node> {
        let asked = self
            .nodes
            .iter()
            .find(|s| s.running())
            .expect("a live node");
        let text = asked.client().cmd(&["CLUSTER", "NODES"]).text();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
                Some(Node {
                    id: f[0].into(),
                    port,
                    primary: f[2].contains("master") && !f[2].contains("fail"),
                    failing: f[2].contains("fail"),
                    primary_id: f[3].into(),
                    slots: f[8..].join(" "),
                })
            })
            .collect()
    }

    /// The primary whose slots start at `start`, and a replica of it.
    fn shard_at(&self, start: &str) -> (Node, Node) {
        wait_for(
            &format!("a primary of slots {start} with a replica"),
            || {
                let nodes = self.nodes();
                let primary = nodes
                    .iter()
                    .find(|n| n.primary && n.slots.starts_with(start));
                let replica = primary.and_then(|p| nodes.iter().find(|n| n.primary_id == p.id));
                let shard = primary.cloned().zip(replica.cloned());
                (shard.is_some(), shard)
            },
        )
        .expect("found")
    }
}

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Four hash tags of slots `primary` holds: it does not redirect them.
fn own_tags(primary: &Server) -> Vec<String> {
    let mut c = primary.client();
    (0..)
        .map(|i| format!("{{t{i}}}"))
        .filter(|tag| !matches!(c.cmd(&["GET", &format!("{tag}:probe")]), Value::Error(_)))
        .take(4)
        .collect()
}

/// Writes through `primary` to keys of its own slots.
fn write_shard(primary: &Server, round: usize) {
    let mut c = primary.client();
    for tag in &own_tags(primary) {
        for i in 0..50 {
            c.cmd(&["SET", &format!("{tag}:s:{round}:{i}"), &format!("v{i}")]);
            c.cmd(&["INCR", &format!("{tag}:counter")]);
            c.cmd(&["RPUSH", &format!("{tag}:list"), &i.to_string()]);
            c.cmd(&[
                "HSET",
                &format!("{tag}:hash"),
                &format!("f{round}-{i}"),
                "x",
            ]);
        }
    }
}

fn relay_info(relay: &Relay, field: &str) -> String {
    relay.client().info("relay", field).unwrap_or_default()
}

/// Waits until the relay follows the node on `port`; fails with the relay's log.
fn wait_following(relay: &Relay, port: u16) {
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(&format!("the relay to follow the node on {port}"), || {
            let followed = relay.client().info("replication", "master_port");
            (followed == Some(port.to_string()), followed)
        })
    }));
    if waited.is_err() {
        panic!(
            "the relay did not follow port {port}; its log:\n{}",
            relay.log()
        );
    }
}

/// Writes to the new primary and checks the relay resumed there with a partial resync: the
/// replica behind holds the primary's data and the primary served no full sync for it.
fn resumes_partially(primary: &Server, behind: &Server, round: usize) {
    let full_before = primary.client().syncs().0;
    write_shard(primary, round);
    wait_in_sync(primary, &[behind]);
    let (full, partial) = primary.client().syncs();
    assert_eq!(full, full_before, "no full sync for the relay");
    assert!(partial >= 1, "a partial resync");
}

/// The relay finds its shard through a node of another shard and serves the shard's data; it
/// follows the promoted replica when the primary is killed with -9, the returning node when
/// it takes the shard back with `CLUSTER FAILOVER`, keeps the recorded shard across a kill -9
/// of its own whatever `--cluster-shard` then says, and follows one more failover after its
/// seed node died, each time with a partial resync.
#[test]
fn a_relay_follows_its_cluster_shard_through_failovers() {
    let Some(mut cluster) = Cluster::create() else {
        return;
    };
    let (first, second) = cluster.shard_at("0-");
    let (seed, _) = cluster.shard_at("10923-");
    let cluster_node = addr(seed.port);
    let mut relay = Relay::start(&["--cluster-node", &cluster_node, "--cluster-shard", "0"]);
    let behind = Server::replica_of(relay.port, &[]);
    write_shard(cluster.node(first.port), 0);
    wait_in_sync(cluster.node(first.port), &[&behind]);
    assert!(relay_info(&relay, "relay_cluster_shard_node0").contains(&first.id));
    assert_eq!(relay_info(&relay, "relay_cluster_shard_slots"), "0-5460");

    // The cluster's replica holds all the relay has: else the cluster loses writes the relay
    // kept, and a full sync from the promoted replica is what takes them back everywhere.
    wait_in_sync(cluster.node(first.port), &[cluster.node(second.port)]);
    cluster.node_mut(first.port).kill9();
    wait_following(&relay, second.port);
    resumes_partially(cluster.node(second.port), &behind, 1);
    assert!(
        relay.log().contains("(cluster: the cluster promoted"),
        "{}",
        relay.log()
    );

    // The old primary returns as a replica and takes the shard back.
    cluster.node_mut(first.port).restart();
    wait_in_sync(cluster.node(second.port), &[cluster.node(first.port)]);
    cluster.manual_failover(first.port);
    wait_following(&relay, first.port);
    resumes_partially(cluster.node(first.port), &behind, 2);

    // A restart with another slot named keeps the shard recorded in --dir.
    relay.kill9_and_restart_with(&["--cluster-node", &cluster_node, "--cluster-shard", "16000"]);
    resumes_partially(cluster.node(first.port), &behind, 3);

    // Without its seed node, the relay still sees the cluster and follows a failover.
    cluster.node_mut(seed.port).kill9();
    cluster.wait_ok_without(seed.port);
    wait_in_sync(cluster.node(first.port), &[cluster.node(second.port)]);
    cluster.node_mut(first.port).kill9();
    wait_following(&relay, second.port);
    resumes_partially(cluster.node(second.port), &behind, 4);
    assert_eq!(relay_info(&relay, "relay_cluster_reachable"), "1");
}

/// A command sent as a cluster client sends it: to the node on `port` first, following
/// `MOVED` and, during a slot's migration, `ASK` (with `ASKING`).
fn cluster_cmd(port: u16, args: &[&str]) -> Value {
    let (mut port, mut asking) = (port, false);
    for _ in 0..8 {
        let mut c = support::Client::connect(port);
        if asking {
            c.cmd(&["ASKING"]);
        }
        match c.cmd(args) {
            Value::Error(e) if e.starts_with("MOVED ") || e.starts_with("ASK ") => {
                asking = e.starts_with("ASK ");
                port = e.rsplit(':').next().unwrap().parse().unwrap();
            }
            other => return other,
        }
    }
    panic!("{args:?} redirected again and again")
}

/// A thousand slots resharded from one shard to another under writes: the source's stream
/// carries the moved keys' deletions and the target's their RESTOREs, and the replica behind
/// every shard's relay ends with its primary's data; each relay shows its shard's new slots, and
/// each primary forked once, for its relay.
#[test]
fn resharding_under_writes_reaches_the_replicas_behind_every_relay() {
    moves_slots_under_writes(&support::redis_server_bin(), [0; 3], |_, from, to| {
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &addr(from.port)])
            .args(["--cluster-from", &from.id, "--cluster-to", &to.id])
            .args(["--cluster-slots", "1000", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster reshard");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    });
}

/// Valkey 9's atomic slot migration (`CLUSTER MIGRATESLOTS`) of a thousand slots under writes:
/// what the source and the target primaries send their replicas reaches the ordinary servers
/// behind the relays, which end with their primaries' data.
#[test]
fn atomic_slot_migration_of_valkey_9_reaches_the_replicas_behind_every_relay() {
    let Some(servers) = support::other_servers(&["valkey-9.1.2"]) else {
        return;
    };
    // The source forks to send the slots' snapshot to the target (as for a replica's sync).
    moves_slots_under_writes(&servers[0].1, [1, 0, 0], |cluster, from, to| {
        let mut c = cluster.node(from.port).client();
        let started = c.cmd(&[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            "0",
            "999",
            "NODE",
            &to.id,
        ]);
        assert_eq!(started, Value::Simple("OK".into()));
        wait_for("the atomic slot migration to end", || {
            let nodes = cluster.nodes();
            let source = nodes
                .iter()
                .find(|n| n.id == from.id)
                .map(|n| n.slots.clone());
            (source.as_deref() == Some("1000-5460"), source)
        });
    });
}

/// Three shards of `bin` servers with a relay each and a server behind each relay; 3000 keys;
/// `migrate(cluster, from, to)` moves slots 0-999 from the first shard to the second while a
/// cluster client writes to keys of every shard. Each primary forks once for its relay, plus
/// `migration_forks` of its own for the move.
fn moves_slots_under_writes(
    bin: &str,
    migration_forks: [i64; 3],
    migrate: impl FnOnce(&Cluster, &Node, &Node),
) {
    let Some(cluster) = Cluster::create_with(bin) else {
        return;
    };
    let shards: Vec<(Node, Node)> = ["0-", "5461-", "10923-"]
        .iter()
        .map(|start| cluster.shard_at(start))
        .collect();
    // Each primary's forks from here on: its cluster replica's sync is done.
    let forks: Vec<i64> = (shards.iter())
        .map(|(primary, _)| {
            let mut c = cluster.node(primary.port).client();
            wait_for("the cluster replica to be online", || {
                let slave = c.info("replication", "slave0").unwrap_or_default();
                (slave.contains("state=online"), slave)
            });
            c.info_num("stats", "total_forks")
        })
        .collect();
    let seed = addr(shards[1].1.port);
    let relays: Vec<Relay> = ["0", "5461", "10923"]
        .iter()
        .map(|slot| Relay::start(&["--cluster-node", &seed, "--cluster-shard", slot]))
        .collect();
    let behind: Vec<Server> = relays
        .iter()
        .map(|r| {
            let port = r.port.to_string();
            Server::start_bin(
                bin,
                support::free_port(),
                &["--replicaof", "127.0.0.1", &port],
            )
        })
        .collect();
    let any = shards[0].0.port;
    for n in 0..3000 {
        let set = cluster_cmd(any, &["SET", &format!("k:{n}"), &format!("v{n}")]);
        assert_eq!(set, Value::Simple("OK".into()));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Writes to keys of every shard, the moving slots' among them, as a cluster client.
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let reply = cluster_cmd(any, &["INCR", &format!("w:{}", n % 500)]);
                assert!(matches!(reply, Value::Int(_)), "{reply:?}");
                n += 1;
            }
            n
        })
    };
    migrate(&cluster, &shards[0].0, &shards[1].0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0, "writes went on during the move");
    for ((primary, _), replica) in shards.iter().zip(&behind) {
        wait_in_sync(cluster.node(primary.port), &[replica]);
    }
    wait_for("the relays to show the new slots", || {
        let slots: Vec<String> = relays
            .iter()
            .map(|r| relay_info(r, "relay_cluster_shard_slots"))
            .collect();
        (slots[0] == "1000-5460" && slots[1].contains("0-999"), slots)
    });
    for (((primary, _), before), moving) in shards.iter().zip(forks).zip(migration_forks) {
        let mut node = cluster.node(primary.port).client();
        let after = node.info_num("stats", "total_forks");
        assert_eq!(
            after - before,
            1 + moving,
            "primary {} forked once for its relay, and {moving} times for the migration",
            primary.port
        );
    }
    let moved = cluster.node(shards[1].0.port).client().cmd(&["DBSIZE"]);
    let source = cluster.node(shards[0].0.port).client().cmd(&["DBSIZE"]);
    assert_eq!(behind[1].client().cmd(&["DBSIZE"]), moved);
    assert_eq!(behind[0].client().cmd(&["DBSIZE"]), source);
}

/// Clusters of every version of the compatibility matrix that has Redis Cluster's commands
/// (7.0 on): the shard named by its shard id where the version has one, the shard's snapshot
/// decodes whole (`inspect` exits 0, the slot-info records of 7.4 and later included), a
/// replica of the same version behind the relay holds the shard's data, and a failover is
/// followed with a partial resync.
#[test]
fn clusters_of_every_version_are_followed() {
    let names = [
        "redis-7.0.15",
        "redis-7.4.1",
        "redis-8.2.3",
        "valkey-8.1.8",
        "valkey-9.1.2",
    ];
    let Some(servers) = support::other_servers(&names) else {
        return;
    };
    for (name, bin) in servers {
        let Some(mut cluster) = Cluster::create_with(&bin) else {
            return;
        };
        let (first, second) = cluster.shard_at("0-");
        // Named by its shard id where the servers have one (Redis 7.2+, Valkey 8+).
        let shard_id = match cluster
            .node(first.port)
            .client()
            .cmd(&["CLUSTER", "MYSHARDID"])
        {
            Value::Bulk(Some(id)) => Some(String::from_utf8(id).unwrap()),
            _ => None,
        };
        let named = shard_id.clone().unwrap_or_else(|| "0".into());
        let relay = Relay::start(&[
            "--cluster-node",
            &addr(second.port),
            "--cluster-shard",
            &named,
        ]);
        let relay_port = relay.port.to_string();
        let flags = ["--replicaof", "127.0.0.1", &relay_port];
        let behind = Server::start_bin(&bin, support::free_port(), &flags);
        write_shard(cluster.node(first.port), 0);
        wait_in_sync(cluster.node(first.port), &[&behind]);
        let inspect = Command::new(env!("CARGO_BIN_EXE_replica-relay"))
            .arg("inspect")
            .arg(&relay.dir)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&inspect.stdout);
        assert!(inspect.status.success(), "{name}: {said}");
        let shown = relay_info(&relay, "relay_cluster_shard_id");
        assert_eq!(shown, shard_id.unwrap_or_default(), "{name}");
        wait_in_sync(cluster.node(first.port), &[cluster.node(second.port)]);
        cluster.node_mut(first.port).kill9();
        wait_following(&relay, second.port);
        resumes_partially(cluster.node(second.port), &behind, 1);
        eprintln!("{name}: cluster shard followed through a failover");
    }
}

/// The compactor makes the fresh snapshots of a cluster shard (`--snapshot-source local`): the
/// shard's primary forks for the relay once, and a replica attaching after a refresh gets the
/// compactor's snapshot and the shard's data.
#[test]
fn the_compactor_refreshes_a_cluster_shards_snapshot() {
    let Some(cluster) = Cluster::create() else {
        return;
    };
    let (first, _) = cluster.shard_at("0-");
    let primary = cluster.node(first.port);
    let relay = Relay::start(&[
        "--cluster-node",
        &addr(first.port),
        "--cluster-shard",
        "0",
        "--snapshot-refresh",
        "100kb",
        "--snapshot-source",
        "local",
    ]);
    let behind = Server::replica_of(relay.port, &[]);
    write_shard(primary, 0);
    wait_in_sync(primary, &[&behind]);
    let forks = primary.client().info_num("stats", "total_forks");
    let value = "v".repeat(1000);
    let tags = own_tags(primary);
    let mut c = primary.client();
    for i in 0..200 {
        c.cmd(&["SET", &format!("{}:bulk:{i}", tags[i % tags.len()]), &value]);
    }
    wait_for("the compactor to make the shard's fresh snapshot", || {
        let made_by = relay_info(&relay, "relay_snapshot_made_by");
        let refreshing = relay_info(&relay, "relay_snapshot_refreshing");
        (made_by == "compactor" && refreshing == "0", made_by)
    });
    let newcomer = Server::replica_of(relay.port, &[]);
    wait_in_sync(primary, &[&behind, &newcomer]);
    let after = primary.client().info_num("stats", "total_forks");
    assert_eq!(after, forks, "the primary did not fork for the refresh");
}

/// Valkey 9's numbered databases in cluster mode (`cluster-databases`): the shard's stream
/// carries `SELECT n`, and the replica behind the relay (an ordinary server) holds every
/// database as the primary does.
#[test]
fn numbered_databases_of_a_valkey_9_cluster_pass_through() {
    let Some(servers) = support::other_servers(&["valkey-9.1.2"]) else {
        return;
    };
    let bin = &servers[0].1;
    let Some(cluster) = Cluster::create_with_flags(bin, &["--cluster-databases", "4"]) else {
        return;
    };
    let (first, _) = cluster.shard_at("0-");
    let primary = cluster.node(first.port);
    let relay = Relay::start(&["--cluster-node", &addr(first.port), "--cluster-shard", "0"]);
    let relay_port = relay.port.to_string();
    let behind = Server::start_bin(
        bin,
        support::free_port(),
        &["--replicaof", "127.0.0.1", &relay_port],
    );
    let tags = own_tags(primary);
    let mut c = primary.client();
    for db in ["0", "2", "3"] {
        assert_eq!(c.cmd(&["SELECT", db]), Value::Simple("OK".into()));
        for (i, tag) in tags.iter().enumerate() {
            c.cmd(&["SET", &format!("{tag}:db{db}:{i}"), db]);
            c.cmd(&["RPUSH", &format!("{tag}:list"), db]);
        }
    }
    wait_in_sync(primary, &[&behind]);
    let mut b = behind.client();
    assert_eq!(b.cmd(&["SELECT", "3"]), Value::Simple("OK".into()));
    let key = format!("{}:db3:0", tags[0]);
    assert_eq!(b.cmd(&["GET", &key]).text(), "3");
}

/// The whole cluster restored to one moment: one client writes an increasing counter to keys
/// of every shard (`c:<i>` = i, each write after the previous one's reply) while a moment T is
/// taken; `restore` given the three relays' stores cuts every shard at T. Each shard's data,
/// loaded into a server, holds every counter up to some n and none above n + k: k, the writes
/// that fall within the time index's resolution and the relays' delays in receiving, is
/// printed with how far each shard's cut lies before T. No counter sent after T is present,
/// and every one acknowledged 250 ms before T is. A moment the relays cannot know yet (a
/// minute ahead) is refused with the shard named.
#[test]
fn the_whole_cluster_is_restored_to_one_moment() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let Some(cluster) = Cluster::create() else {
        return;
    };
    let shards: Vec<(Node, Node)> = ["0-", "5461-", "10923-"]
        .iter()
        .map(|start| cluster.shard_at(start))
        .collect();
    let seed = addr(shards[0].0.port);
    let relays: Vec<Relay> = ["0", "5461", "10923"]
        .iter()
        .map(|slot| Relay::start(&["--cluster-node", &seed, "--cluster-shard", slot]))
        .collect();
    for ((primary, _), relay) in shards.iter().zip(&relays) {
        wait_following(relay, primary.port);
    }
    let (written, stop) = (
        std::sync::Arc::new(AtomicU64::new(0)),
        std::sync::Arc::new(AtomicBool::new(false)),
    );
    let started = std::time::Instant::now();
    let writer = {
        let (written, stop, any) = (written.clone(), stop.clone(), shards[0].0.port);
        std::thread::spawn(move || {
            let mut conns = std::collections::HashMap::new();
            // When each counter's write was acknowledged (the first, 0, is no write).
            let mut replied = vec![0u64];
            for i in 1.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (key, value) = (format!("c:{i}"), i.to_string());
                let mut port = any;
                loop {
                    let c = conns
                        .entry(port)
                        .or_insert_with(|| support::Client::connect(port));
                    match c.cmd(&["SET", &key, &value]) {
                        Value::Error(e) if e.starts_with("MOVED ") => {
                            port = e.rsplit(':').next().unwrap().parse().unwrap();
                        }
                        reply => {
                            assert_eq!(reply, Value::Simple("OK".into()));
                            break;
                        }
                    }
                }
                written.store(i, Ordering::Relaxed);
                replied.push(support::unix_ms());
            }
            replied
        })
    };
    // A second of writes on each side of the moment: longer than the resolution by far, so
    // that a coarser index would cut the shards visibly apart.
    let second = std::time::Duration::from_secs(1);
    wait_for("a second of writes", || {
        (started.elapsed() >= second, written.load(Ordering::Relaxed))
    });
    let at = support::unix_ms();
    wait_for("a second of writes after the moment", || {
        (
            started.elapsed() >= 2 * second,
            written.load(Ordering::Relaxed),
        )
    });
    stop.store(true, Ordering::Relaxed);
    let replied = writer.join().unwrap();
    for ((primary, _), relay) in shards.iter().zip(&relays) {
        relay.stored(cluster.node(primary.port));
    }
    let out = tempfile::tempdir().unwrap();
    let restore = |at: u64, out: &std::path::Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_replica-relay"));
        cmd.arg("restore");
        for relay in &relays {
            cmd.arg("--dir").arg(&relay.dir);
        }
        cmd.args(["--at", &format!("@{}.{:03}", at / 1000, at % 1000)])
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let ahead = restore(at + 60_000, &out.path().join("ahead"));
    let said = String::from_utf8_lossy(&ahead.stderr);
    assert!(!ahead.status.success(), "a minute ahead is not known");
    assert!(
        said.contains("shard 0") && said.contains("not known"),
        "{said}"
    );
    let made = restore(at, out.path());
    let said = String::from_utf8_lossy(&made.stderr);
    assert!(made.status.success(), "{said}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("cluster.json")).unwrap()).unwrap();
    assert_eq!(manifest["at_ms"].as_u64(), Some(at));
    assert_eq!(
        manifest["shards"].as_array().map(Vec::len),
        Some(3),
        "{manifest}"
    );
    let mut present = std::collections::BTreeSet::new();
    let mut loaded = Vec::new();
    for i in 0..3 {
        let dir = out.path().join(format!("shard-{i}"));
        loaded.push(Server::start(&[
            "--dir",
            dir.to_str().unwrap(),
            "--appendonly",
            "yes",
        ]));
        let mut c = loaded[i].client();
        let Value::Array(Some(keys)) = c.cmd(&["KEYS", "c:*"]) else {
            panic!("KEYS")
        };
        let mut last = 0;
        for key in keys {
            let key = key.text();
            let i: u64 = key[2..].parse().unwrap();
            assert_eq!(c.cmd(&["GET", &key]).text(), i.to_string(), "{key}");
            present.insert(i);
            last = last.max(i);
        }
        let received = manifest["shards"][i]["received_by_ms"].as_u64().unwrap();
        assert!(received <= at, "shard {i} cut at a record after the moment");
        println!(
            "shard {i}: cut at what its relay had received {} ms before the moment; its last counter ({last}) acknowledged {} ms before",
            at - received,
            at as i64 - replied[last as usize] as i64
        );
    }
    let n = (1..).find(|i| !present.contains(i)).unwrap() - 1;
    let top = present.last().copied().unwrap_or(0);
    let (k, k_ms) = (top - n, replied[top as usize] - replied[n as usize + 1]);
    println!(
        "whole-cluster restore: counters 1..={n} all present, none above {top}: k = {k} writes, made within {k_ms} ms ({} writes/s)",
        replied.len() as u64 * 1000 / (replied[replied.len() - 1] - replied[1]).max(1)
    );
    // Nothing the client sent after the moment is in it (write i is sent when i - 1 is
    // acknowledged): the cut is never after T.
    assert!(
        replied[top as usize - 1] <= at,
        "counter {top} was sent after the moment"
    );
    // Everything acknowledged 250 ms before the moment is in it: the relays received it by T
    // however loaded the machine. (The 10 ms itself is pinned by the time index's unit test:
    // with records a second apart, cuts here fell 37 to 147 ms before T.)
    let due = replied.iter().rposition(|&t| t + 250 <= at).unwrap_or(0) as u64;
    assert!(
        n >= due,
        "counters up to {n} present, but {due} were acknowledged 250 ms before the moment"
    );
    // A fresh cluster holding the moment, as the README says: the shards' data imported into
    // it by `redis-cli --cluster import` (each key to the node of its slot).
    drop(cluster);
    let fresh = Cluster::create().expect("a second cluster");
    let entry = addr(fresh.nodes[0].port);
    for server in &loaded {
        let out = Command::new("redis-cli")
            .args(["--cluster", "import", &entry, "--cluster-from"])
            .arg(addr(server.port))
            .args(["--cluster-copy", "--cluster-replace"])
            .output()
            .expect("redis-cli --cluster import");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{said}");
    }
    let imported: i64 = (fresh.nodes.iter())
        .filter(|n| n.client().info("replication", "role").as_deref() == Some("master"))
        .map(|n| match n.client().cmd(&["DBSIZE"]) {
            Value::Int(keys) => keys,
            other => panic!("DBSIZE: {other:?}"),
        })
        .sum();
    assert_eq!(
        imported as usize,
        present.len(),
        "every restored counter imported"
    );
    for i in [1, n, top] {
        let got = cluster_cmd(fresh.nodes[0].port, &["GET", &format!("c:{i}")]);
        assert_eq!(got.text(), i.to_string(), "c:{i} in the fresh cluster");
    }
}

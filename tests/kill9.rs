//! kill -9 at the moments an operator's bad day chooses, under a continuous mixed write load:
//! while the relay sends a fresh replica its full sync, while its compactor runs, and at any
//! moment. Every replica it served, those of the start and every fresh one, must end with the
//! master's data (`DEBUG DIGEST`) at the master's offset.
//!
//! CI runs a fixed seed; by hand, a longer form with any seed:
//! `KILL9_SEED=$RANDOM KILL9_ROUNDS=20 cargo test --test kill9 -- --nocapture`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Client, Relay, Server, cmd, wait_for, wait_in_sync};

/// splitmix64: the test's own small generator, so a seed replays the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// About 3,000 keys of every type over three databases, streams with consumer groups among
/// them: a snapshot of about 1 MB, which a paced full sync takes seconds to send.
fn preload(c: &mut Client, rng: &mut Rng) {
    for db in ["0", "1", "2"] {
        let mut cmds = vec![cmd(&["SELECT", db])];
        for i in 0..200 {
            let k = |kind: &str| format!("p:{kind}:{i}");
            // Values that do not compress, so the snapshot's size is what it says.
            let value: String = (0..94).map(|_| format!("{:016x}", rng.next())).collect();
            cmds.push(cmd(&["SET", &k("s"), &value]));
            cmds.push(cmd(&["RPUSH", &k("l"), "a", "b", "c"]));
            cmds.push(cmd(&["HSET", &k("h"), "f", "1", "g", "2"]));
            cmds.push(cmd(&["SADD", &k("set"), "x", "y"]));
            cmds.push(cmd(&["ZADD", &k("z"), "1", "a", "2", "b"]));
        }
        for i in 0..3 {
            let s = format!("p:stream:{i}");
            for j in 0..50 {
                cmds.push(cmd(&["XADD", &s, "*", "n", &j.to_string()]));
            }
            cmds.push(cmd(&["XGROUP", "CREATE", &s, "g", "0"]));
            cmds.push(cmd(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "COUNT",
                "10",
                "STREAMS",
                &s,
                ">",
            ]));
        }
        c.pipeline(&cmds);
    }
    c.cmd(&["SELECT", "0"]);
}

/// One pipeline of the mixed load: every command kind the load had, over three
/// databases, with SELECTs between them as a client's would come.
fn batch(rng: &mut Rng) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for _ in 0..40 {
        let db = rng.below(3).to_string();
        let i = rng.below(50);
        let key = |kind: &str| format!("w:{kind}:{i}");
        cmds.push(cmd(&["SELECT", &db]));
        match rng.below(10) {
            0 => cmds.push(cmd(&["INCR", &format!("w:c:{}", i % 10)])),
            1 => {
                cmds.push(cmd(&["RPUSH", &key("l"), &"x".repeat(30)]));
                cmds.push(cmd(&["LTRIM", &key("l"), "-20", "-1"]));
            }
            2 => cmds.push(cmd(&["HINCRBY", &key("h"), "n", "1"])),
            3 => cmds.push(cmd(&["SADD", &key("set"), &rng.below(100).to_string()])),
            4 => cmds.push(cmd(&[
                "ZINCRBY",
                &key("z"),
                "1",
                &rng.below(20).to_string(),
            ])),
            5 => cmds.push(cmd(&[
                "XADD",
                &key("x"),
                "MAXLEN",
                "~",
                "100",
                "*",
                "f",
                &"y".repeat(20),
            ])),
            6 => {
                cmds.push(cmd(&["MULTI"]));
                cmds.push(cmd(&["INCR", &format!("w:c:{}", i % 10)]));
                cmds.push(cmd(&["HSET", &key("h"), "t", &i.to_string()]));
                cmds.push(cmd(&["RPUSH", &key("l"), "tx"]));
                cmds.push(cmd(&["EXEC"]));
            }
            7 => cmds.push(cmd(&[
                "EVAL",
                "redis.call('incr', KEYS[1]); return redis.call('hincrby', KEYS[2], 'lua', 1)",
                "2",
                &format!("w:c:{}", i % 10),
                &key("h"),
            ])),
            8 => {
                cmds.push(cmd(&["SET", &key("s"), &"s".repeat(60)]));
                cmds.push(cmd(&["EXPIRE", &key("s"), "86400"]));
            }
            _ => cmds.push(cmd(&["SET", &key("s"), &"v".repeat(200)])),
        }
    }
    cmds
}

/// The write load, on a thread of its own until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(master: &Server, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut c = master.client();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rng = Rng(seed ^ 0x10AD);
            while !flag.load(Ordering::Relaxed) {
                for reply in c.pipeline(&batch(&mut rng)) {
                    assert!(!matches!(reply, support::Value::Error(_)), "{reply:?}");
                }
                // A pace a production master could have, so the relay's store and the
                // compactor keep up on two cores: about 1 MB a second.
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the load thread");
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay_num(relay: &Relay, section: &str, field: &str) -> i64 {
    relay.client().info_num(section, field)
}

/// Waits until the relay sends a full sync (a replica in `send_bulk`).
fn wait_send_bulk(relay: &Relay) {
    wait_for("the relay to send a fresh replica its full sync", || {
        let text = relay.client().cmd(&["INFO", "replication"]).text();
        (text.contains("state=send_bulk"), ())
    });
}

/// Waits until a compaction is under way (the snapshot refreshing, a run counted).
fn wait_compacting(relay: &Relay, runs: i64) {
    wait_for("a compaction to start", || {
        let refreshing = relay_num(relay, "relay", "relay_snapshot_refreshing");
        let started = relay_num(relay, "relay", "relay_compactor_runs");
        (refreshing == 1 && started > runs, (refreshing, started))
    });
}

/// Every key of every database, with its `DEBUG DIGEST-VALUE`.
fn keys(s: &Server) -> std::collections::BTreeMap<(u32, String), String> {
    let mut c = s.client();
    let mut all = std::collections::BTreeMap::new();
    for db in 0..3u32 {
        c.cmd(&["SELECT", &db.to_string()]);
        let support::Value::Array(Some(names)) = c.cmd(&["KEYS", "*"]) else {
            continue;
        };
        for name in names {
            let key = name.text();
            let digest = c.cmd(&["DEBUG", "DIGEST-VALUE", &key]);
            all.insert((db, key), format!("{digest:?}"));
        }
    }
    all
}

/// The keys whose value differs between the master and a replica (at most 20), for the
/// failure's message: which database, which types.
fn differences(master: &Server, replica: &Server) -> Vec<String> {
    let (m, r) = (keys(master), keys(replica));
    let mut out = Vec::new();
    for (k, v) in &m {
        match r.get(k) {
            Some(w) if w == v => {}
            Some(_) => out.push(format!("db {} {}: other value", k.0, k.1)),
            None => out.push(format!("db {} {}: missing", k.0, k.1)),
        }
    }
    out.extend(
        r.keys()
            .filter(|k| !m.contains_key(k))
            .map(|k| format!("db {} {}: extra", k.0, k.1)),
    );
    out.truncate(20);
    out
}

#[test]
fn every_replica_ends_with_the_masters_data_whatever_was_killed_when() {
    let seed = env_or("KILL9_SEED", 27);
    let rounds = env_or("KILL9_ROUNDS", 8);
    eprintln!("kill9: seed {seed}, {rounds} rounds");
    let mut rng = Rng(seed);
    let master = Server::master(&["--repl-backlog-size", "64mb"]);
    preload(&mut master.client(), &mut rng);
    let mut relay = Relay::of(
        master.port,
        &[
            "--snapshot-refresh",
            "2mb",
            "--snapshot-source",
            "local",
            // A full sync takes seconds, so a kill lands while it is sent.
            "--replica-rate",
            "300kb",
        ],
    );
    let mut replicas: Vec<Server> = (0..3)
        .map(|_| Server::replica_of(relay.port, &[]))
        .collect();
    let mut load = Load::start(&master, seed);
    let started = Instant::now();
    for round in 0..rounds {
        let what = rng.below(3);
        match what {
            0 => {
                replicas.push(Server::replica_of(relay.port, &[]));
                wait_send_bulk(&relay);
            }
            1 => wait_compacting(&relay, relay_num(&relay, "relay", "relay_compactor_runs")),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        eprintln!(
            "kill9: round {round} ({}) at {:?}: kill -9",
            [
                "during a full sync",
                "during a compaction",
                "at a random moment"
            ][what as usize],
            started.elapsed()
        );
        relay.kill9_and_restart();
        if rng.below(2) == 0 {
            replicas.push(Server::replica_of(relay.port, &[]));
        }
    }
    // Then compactions in a row, each from the one before (the cut of each in whatever
    // database the load was in), and a fresh replica that full-syncs from each.
    for _ in 0..5 {
        let runs = relay_num(&relay, "relay", "relay_compactor_runs");
        wait_for("a compaction to end", || {
            let done = relay_num(&relay, "relay", "relay_compactor_runs") > runs
                && relay_num(&relay, "relay", "relay_snapshot_refreshing") == 0;
            (done, ())
        });
        replicas.push(Server::replica_of(relay.port, &[]));
    }
    load.stop();
    let all: Vec<&Server> = replicas.iter().collect();
    if let Err(e) = std::panic::catch_unwind(|| wait_in_sync(&master, &all)) {
        for r in &replicas {
            let diff = differences(&master, r);
            if !diff.is_empty() {
                eprintln!("kill9: replica on port {} differs: {diff:#?}", r.port);
            }
        }
        std::panic::resume_unwind(e);
    }
    eprintln!(
        "kill9: {} replicas equal to the master after {rounds} kills and {} compacted snapshots",
        replicas.len(),
        relay.log().matches("Compactor: made a snapshot").count()
    );
}

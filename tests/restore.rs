//! Point-in-time restore from the relay's store (`replica-relay restore`), loaded by a stock
//! redis-server: the data at recorded offsets and moments, across a relay kill -9.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

fn restore(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_replica-relay"))
        .arg("restore")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

/// The digest of the data a restore wrote into `out`, loaded by a fresh server.
fn loaded_digest(out: &Path) -> String {
    let server = Server::start(&["--dir", out.to_str().unwrap(), "--appendonly", "yes"]);
    server.client().digest()
}

#[test]
fn restores_to_recorded_offsets_and_moments_load_with_their_digests() {
    let master = Server::master(&[]);
    let mut relay = Relay::of(master.port, &[]);
    let mut m = master.client();
    let mut points = Vec::new();
    for (i, tag) in ["a", "b", "c"].iter().enumerate() {
        write_mixed(&mut m, tag, 5);
        let offset = relay.stored(&master);
        let (_, unix_ms) = relay.time_marks().1;
        points.push((offset, unix_ms, m.digest()));
        if i == 1 {
            relay.kill9_and_restart();
        }
    }
    let list = String::from_utf8(restore(&relay.dir, &["--list"]).stdout).unwrap();
    assert!(
        list.starts_with("restorable from ") && list.contains(" to now (offset"),
        "{list}"
    );
    let work = tempfile::tempdir().unwrap();
    for (n, (offset, unix_ms, digest)) in points.iter().enumerate() {
        let by_offset = work.path().join(format!("offset{n}"));
        let out = restore(
            &relay.dir,
            &[
                "--offset",
                &offset.to_string(),
                "--out",
                by_offset.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            &loaded_digest(&by_offset),
            digest,
            "restored to offset {offset}"
        );
        let by_time = work.path().join(format!("time{n}"));
        let at = format!("@{}.{:03}", unix_ms / 1000, unix_ms % 1000);
        let out = restore(
            &relay.dir,
            &["--at", &at, "--out", by_time.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(&loaded_digest(&by_time), digest, "restored to {at}");
    }
    let outside = restore(
        &relay.dir,
        &[
            "--offset",
            "999999999",
            "--out",
            work.path().join("x").to_str().unwrap(),
        ],
    );
    assert!(!outside.status.success());
    assert!(String::from_utf8_lossy(&outside.stderr).contains("outside the restorable window"));
}

/// A moment after the snapshot and before the first write the relay stored after it restores
/// the snapshot: the data at that moment is known (it was refused as "before the first time the
/// log knows" when the time index began with the first write).
#[test]
fn a_moment_between_the_snapshot_and_the_first_write_restores_the_snapshot() {
    let master = Server::master(&[]);
    let mut m = master.client();
    write_mixed(&mut m, "before", 5);
    let relay = Relay::of(master.port, &[]);
    wait_for("the relay's snapshot in service", || {
        let link = relay.client().info("replication", "master_link_status");
        (link.as_deref() == Some("up"), link)
    });
    relay.stored(&master);
    let digest = m.digest();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let at = format!("@{}.{:03}", now / 1000, now % 1000);
    write_mixed(&mut m, "after", 5);
    relay.stored(&master);
    let out_dir = tempfile::tempdir().unwrap();
    let out = restore(
        &relay.dir,
        &["--at", &at, "--out", out_dir.path().to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        loaded_digest(out_dir.path()),
        digest,
        "restored to {at}: {stderr}"
    );
}

/// A cut inside MULTI … EXEC falls before the MULTI: a restore never holds half a transaction.
#[test]
fn a_cut_inside_a_transaction_falls_before_it() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 3);
    let before = m.digest();
    let replies = m.pipeline(&[
        cmd(&["MULTI"]),
        cmd(&["SET", "tx:1", "one"]),
        cmd(&["SET", "tx:2", "two"]),
        cmd(&["EXEC"]),
    ]);
    assert!(matches!(replies[3], Value::Array(Some(_))), "{replies:?}");
    let end = relay.stored(&master);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("inside");
    // Inside the EXEC command itself.
    let inside = (end - 5).to_string();
    let done = restore(
        &relay.dir,
        &["--offset", &inside, "--out", out.to_str().unwrap()],
    );
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let aof = std::fs::read(out.join("appendonly.aof")).unwrap();
    let count = |word: &[u8]| aof.windows(word.len()).filter(|w| *w == word).count();
    assert_eq!(
        count(b"\r\nMULTI\r\n"),
        count(b"\r\nEXEC\r\n"),
        "half a transaction in the restore"
    );
    assert_eq!(loaded_digest(&out), before);
    let whole = work.path().join("whole");
    let done = restore(
        &relay.dir,
        &[
            "--offset",
            &end.to_string(),
            "--out",
            whole.to_str().unwrap(),
        ],
    );
    assert!(done.status.success());
    assert_eq!(loaded_digest(&whole), m.digest());
}

/// `--before FLUSHALL`: the data just before an accidental FLUSHALL, issued alone and inside a
/// MULTI (then the cut falls before the MULTI); `--after` skips an earlier one.
#[test]
fn before_flushall_restores_the_data_just_before_it() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 3);
    let first = m.digest();
    m.cmd(&["FLUSHALL"]);
    write_mixed(&mut m, "b", 3);
    relay.stored(&master);
    let (_, after_first) = relay.time_marks().1;
    let second = m.digest();
    m.pipeline(&[
        cmd(&["MULTI"]),
        cmd(&["SET", "z", "1"]),
        cmd(&["FLUSHALL"]),
        cmd(&["EXEC"]),
    ]);
    write_mixed(&mut m, "c", 2);
    relay.stored(&master);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("one");
    let done = restore(
        &relay.dir,
        &["--before", "FLUSHALL", "--out", out.to_str().unwrap()],
    );
    let said = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(done.status.success(), "{said}");
    assert!(said.contains("found FLUSHALL at offset"), "{said}");
    assert_eq!(loaded_digest(&out), first);
    let out = work.path().join("two");
    let after = format!("@{}.{:03}", after_first / 1000, after_first % 1000);
    let done = restore(
        &relay.dir,
        &[
            "--before",
            "flushall,flushdb",
            "--after",
            &after,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let said = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(done.status.success(), "{said}");
    assert!(said.contains("before its MULTI"), "{said}");
    assert_eq!(loaded_digest(&out), second);
    let none = restore(
        &relay.dir,
        &[
            "--before",
            "FLUSHDB",
            "--out",
            work.path().join("x").to_str().unwrap(),
        ],
    );
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no FLUSHDB"));
}

/// `--format rdb`: one dump.rdb, made by a stock server from the restored AOF, which inspect and
/// redis-check-rdb accept and which loads with the same digest.
#[test]
fn format_rdb_writes_a_dump_a_stock_server_loads() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 5);
    relay.stored(&master);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("rdb");
    let done = restore(
        &relay.dir,
        &[
            "--format",
            "rdb",
            "--redis-server",
            &redis_server_bin(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let dump = out.join("dump.rdb");
    let inspect = Command::new(env!("CARGO_BIN_EXE_replica-relay"))
        .arg("inspect")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stdout)
    );
    match Command::new("redis-check-rdb").arg(&dump).output() {
        Ok(check) => assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        ),
        Err(_) => {
            missing("redis-check-rdb is not installed (Debian's redis-server package has it)")
        }
    }
    let loaded = Server::start(&["--dir", out.to_str().unwrap(), "--dbfilename", "dump.rdb"]);
    assert_eq!(loaded.client().digest(), m.digest());
    assert!(
        !out.join(".restore-aof").exists(),
        "the temporary AOF was left behind"
    );
}

/// A Redis 6.2 master propagates relative expiries: restored later, the TTLs are what they were
/// at the restore point (within a second), not counted again from the load.
#[test]
fn relative_expiries_of_an_old_master_keep_their_moment() {
    let Some(servers) = other_servers(&["redis-6.2.14"]) else {
        return;
    };
    let master = Server::start_bin(&servers[0].1, free_port(), &[]);
    let relay = Relay::of(master.port, &[]);
    let mut m = master.client();
    let t0 = std::time::Instant::now();
    for c in [
        cmd(&["SET", "ex", "v", "EX", "100"]),
        cmd(&["SET", "px", "v", "PX", "100000"]),
        cmd(&["SETEX", "setex", "100", "v"]),
        cmd(&["PSETEX", "psetex", "100000", "v"]),
        cmd(&["SET", "expire", "v"]),
        cmd(&["EXPIRE", "expire", "100"]),
        cmd(&["SET", "plain", "v"]),
    ] {
        assert!(!matches!(m.pipeline(&[c])[0], Value::Error(_)));
    }
    relay.stored(&master);
    // Time has to pass for a TTL counted again from the load to show.
    wait_for("three seconds to pass", || {
        (t0.elapsed().as_secs() >= 3, ())
    });
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("old");
    let done = restore(&relay.dir, &["--out", out.to_str().unwrap()]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let loaded = Server::start(&["--dir", out.to_str().unwrap(), "--appendonly", "yes"]);
    let mut c = loaded.client();
    let elapsed = t0.elapsed().as_millis() as i64;
    for key in ["ex", "px", "setex", "psetex", "expire"] {
        let pttl = c.cmd(&["PTTL", key]).text().parse::<i64>().unwrap();
        assert!(
            pttl <= 100_000 - elapsed + 1500 && pttl >= 100_000 - elapsed - 1500,
            "{key}: PTTL {pttl} after {elapsed} ms"
        );
    }
    assert_eq!(c.cmd(&["PTTL", "plain"]), Value::Int(-1));
}

/// A byte flipped in the log: the restore stops, naming the segment and the offsets that fail
/// their checksum, and writes no file that would be silently incomplete.
#[test]
fn a_damaged_segment_stops_the_restore() {
    let master = Server::master(&[]);
    let mut relay = Relay::of(master.port, &[]);
    write_mixed(&mut master.client(), "a", 10);
    relay.stored(&master);
    assert!(relay.terminate().success());
    let segment = std::fs::read_dir(relay.dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&segment, bytes).unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("damaged");
    let done = restore(&relay.dir, &["--out", out.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(!done.status.success(), "{said}");
    assert!(
        said.contains("is damaged") && said.contains("fail their checksum"),
        "{said}"
    );
    assert!(!out.join("appendonly.aof").exists(), "a file was left");
}

fn restored(dir: &Path, out: &Path, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--out", out.to_str().unwrap()]);
    let done = restore(dir, &all);
    let said = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(done.status.success(), "restore {args:?}: {said}");
    said
}

fn relay_num(relay: &Relay, field: &str) -> i64 {
    relay.client().info_num("relay", field)
}

/// Writes `kb` values of a KiB to the master, past its --snapshot-refresh, and waits for the
/// refresh to be in service.
fn refresh(relay: &Relay, m: &mut Client, tag: &str, kb: usize) {
    let before = relay_num(relay, "relay_snapshot_offset");
    let value = format!("{tag}-").repeat(512 / tag.len().max(1));
    let writes: Vec<Vec<String>> = (0..kb)
        .map(|i| cmd(&["SET", &format!("big:{i}"), &format!("{i}{value}")]))
        .collect();
    m.pipeline(&writes);
    wait_for("a refreshed snapshot in service", || {
        let now = relay_num(relay, "relay_snapshot_offset");
        (now > before, now)
    });
}

/// With --restore-window, the snapshot a refresh replaces stays as a restore point: a moment
/// before the refresh is restored from it, after a kill -9 of the relay too; a damaged restore
/// point stops the restore instead of being loaded.
#[test]
fn a_window_keeps_the_snapshot_a_refresh_replaces() {
    let master = Server::master(&[]);
    let flags = ["--restore-window", "1h", "--snapshot-refresh", "256kb"];
    let mut relay = Relay::of(master.port, &flags);
    let mut m = master.client();
    write_mixed(&mut m, "a", 5);
    let early = relay.stored(&master);
    let (_, early_ms) = relay.time_marks().1;
    let early_digest = m.digest();
    let first_snapshot = relay_num(&relay, "relay_snapshot_offset");
    refresh(&relay, &mut m, "x", 300);
    write_mixed(&mut m, "b", 3);
    let late = relay.stored(&master);
    let late_digest = m.digest();
    relay.kill9_and_restart();
    wait_for("one restore point besides the snapshot in service", || {
        let kept = relay_num(&relay, "relay_restore_points");
        (kept == 1, kept)
    });
    assert_eq!(
        relay_num(&relay, "relay_restore_from_offset"),
        first_snapshot
    );
    let list = String::from_utf8(restore(&relay.dir, &["--list"]).stdout).unwrap();
    assert!(
        list.contains(&format!("(offset {first_snapshot}) to now")),
        "{list}"
    );
    let work = tempfile::tempdir().unwrap();
    for (name, args, digest) in [
        (
            "early",
            vec!["--offset".to_string(), early.to_string()],
            &early_digest,
        ),
        (
            "early-time",
            vec![
                "--at".into(),
                format!("@{}.{:03}", early_ms / 1000, early_ms % 1000),
            ],
            &early_digest,
        ),
        (
            "late",
            vec!["--offset".into(), late.to_string()],
            &late_digest,
        ),
    ] {
        let out = work.path().join(name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let said = restored(&relay.dir, &out, &args);
        assert_eq!(&loaded_digest(&out), digest, "{name}: {said}");
    }
    let kept = std::fs::read_to_string(relay.dir.join("restore-points")).unwrap();
    let name = kept.split_whitespace().nth(2).unwrap();
    let path = relay.dir.join("snapshots").join(name);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let out = work.path().join("damaged");
    let done = restore(
        &relay.dir,
        &[
            "--offset",
            &early.to_string(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let said = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(!done.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "the snapshot at offset {first_snapshot} is damaged"
        )),
        "{said}"
    );
    assert!(!out.join("appendonly.aof").exists());
}

/// A restore point the window no longer needs goes: once the snapshot in service is older than
/// the window, the one before it is removed.
#[test]
fn points_older_than_the_window_are_removed() {
    let master = Server::master(&[]);
    let relay = Relay::of(
        master.port,
        &["--restore-window", "2s", "--snapshot-refresh", "256kb"],
    );
    let mut m = master.client();
    write_mixed(&mut m, "a", 3);
    relay.stored(&master);
    refresh(&relay, &mut m, "x", 300);
    write_mixed(&mut m, "b", 2);
    relay.stored(&master);
    wait_for("the old snapshot kept, then removed", || {
        let kept = relay_num(&relay, "relay_restore_points");
        (
            kept == 0 && relay.log().contains("the window no longer needs it"),
            kept,
        )
    });
    let snapshots = std::fs::read_dir(relay.dir.join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(snapshots, 1, "only the snapshot in service is left");
    assert!(relay.log().contains("as a restore point"));
}

/// Bytes of the snapshots and log segments under `dir`.
fn store_bytes(dir: &Path) -> u64 {
    ["snapshots", "log"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(dir.join(sub)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rdb" || e == "seg"))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// --restore-max-disk: under writes that refresh the snapshot again and again, the store stays
/// within the bound by dropping the oldest restore points; the window shrinks, the log says so
/// once, INFO and --list show the real window, and a moment before it is refused.
#[test]
fn the_disk_bound_shrinks_the_window_and_says_so() {
    let master = Server::master(&["--rdbcompression", "no"]);
    let max = 700 * 1024;
    let relay = Relay::of(
        master.port,
        &[
            "--restore-window",
            "1h",
            "--restore-max-disk",
            "700kb",
            "--snapshot-refresh",
            "64kb",
            "--log-segment-size",
            "16kb",
            "--backlog-size",
            "16kb",
        ],
    );
    let mut m = master.client();
    write_mixed(&mut m, "a", 3);
    let first = relay.stored(&master);
    let mut largest = 0;
    for round in 0..8 {
        refresh(&relay, &mut m, &format!("r{round}"), 100);
        relay.stored(&master);
        let bytes = wait_for("the store within --restore-max-disk", || {
            let bytes = store_bytes(&relay.dir);
            (bytes <= max, bytes)
        });
        largest = largest.max(bytes);
    }
    assert_eq!(relay_num(&relay, "relay_restore_window_shrunk"), 1);
    assert!(relay_num(&relay, "relay_restore_points") >= 1);
    assert_eq!(
        relay.log().matches("Restore window shrunk").count(),
        1,
        "said once"
    );
    // INFO is refreshed on the writer's tick, the list file when a point goes: read both until
    // one tick has passed between them.
    let from = wait_for("INFO and --list agree on the window", || {
        let from = relay_num(&relay, "relay_restore_from_offset");
        let list = String::from_utf8(restore(&relay.dir, &["--list"]).stdout).unwrap();
        (
            list.contains(&format!("(offset {from}) to now")),
            (from, list),
        )
    })
    .0;
    assert!(from as u64 > first, "the first moments are gone");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("gone");
    let done = restore(
        &relay.dir,
        &[
            "--offset",
            &first.to_string(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(!done.status.success());
    assert!(String::from_utf8_lossy(&done.stderr).contains("outside the restorable window"));
    restored(&relay.dir, &work.path().join("now"), &[]);
    eprintln!("largest store seen: {largest} bytes (bound {max})");
}

/// `--before DEL:user:42`: the first DEL of that one key (a DEL of other keys does not count,
/// a DEL of several that include it does), and a SET of it counts only as `SET:user:42`.
#[test]
fn before_a_command_on_one_key() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 2);
    for k in ["user:1", "user:42", "user:43"] {
        m.cmd(&["SET", k, "v"]);
    }
    m.cmd(&["DEL", "user:1"]);
    m.cmd(&["SET", "user:42", "w"]);
    let before_del = m.digest();
    m.cmd(&["DEL", "user:43", "user:42"]);
    write_mixed(&mut m, "b", 2);
    relay.stored(&master);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("del");
    let said = restored(&relay.dir, &out, &["--before", "DEL:user:42"]);
    assert!(said.contains("found DEL at offset"), "{said}");
    assert_eq!(loaded_digest(&out), before_del);
    let none = restore(
        &relay.dir,
        &[
            "--before",
            "DEL:user:7",
            "--out",
            work.path().join("x").to_str().unwrap(),
        ],
    );
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no DEL user:7"));
}

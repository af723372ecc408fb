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
    assert!(list.starts_with("restorable from offset"), "{list}");
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

//! The archive in object storage (`--archive`), against a real S3-compatible server (s3s-fs):
//! restores from the archive alone, with the relay and its --dir gone; a damaged object stops
//! them; an upload cut by kill -9 resumes without sending again what the manifest names; the
//! object store away and back.

mod support;

use std::path::Path;
use std::process::Command;

use support::s3::S3;
use support::*;

/// What the tests' relays archive under the bucket.
const PREFIX: &str = "relay";

fn archiving_relay(s3: &S3, master: u16, extra: &[&str]) -> Relay {
    archiving_relay_env(s3, master, &[], extra)
}

/// `archiving_relay` with `env` besides the object store's.
fn archiving_relay_env(
    s3: &S3,
    master: u16,
    env: &[(&'static str, String)],
    extra: &[&str],
) -> Relay {
    let url = s3.url(PREFIX);
    let port = master.to_string();
    let mut flags = vec!["--replicaof", "127.0.0.1", &port, "--archive", &url];
    flags.extend(["--log-segment-size", "16kb"]);
    flags.extend_from_slice(extra);
    let relay = relay_with(s3, env, &flags);
    attached(&relay);
    relay
}

/// A relay with `flags`, the object store's environment and `env`.
fn relay_with(s3: &S3, env: &[(&'static str, String)], flags: &[&str]) -> Relay {
    let mut all = s3.env();
    all.extend_from_slice(env);
    let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Relay::start_with(None, &all, flags)
}

/// Restores `offset` from the archive alone and checks the data loads with `digest`.
fn restores_to(s3: &S3, offset: u64, digest: &str, what: &str) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let said = restored(s3, &out, &["--offset", &offset.to_string()]);
    assert_eq!(loaded_digest(&out), digest, "{what}: {said}");
}

/// Waits for the relay's first snapshot in service: until a replica attaches, a master keeps
/// its offset at 0, and `Relay::stored` would be satisfied at once.
fn attached(relay: &Relay) {
    wait_for("the relay's snapshot in service", || {
        let link = relay.client().info("replication", "master_link_status");
        (link.as_deref() == Some("up"), link)
    });
}

fn restore_from(s3: &S3, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_replica-relay"))
        .args(["restore", "--from", &s3.url(PREFIX)])
        .args(args)
        .envs(s3.env())
        .output()
        .unwrap()
}

/// Restores from the archive into `out`; what the restore said.
fn restored(s3: &S3, out: &Path, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--out", out.to_str().unwrap()]);
    let done = restore_from(s3, &all);
    let said = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(done.status.success(), "restore --from {args:?}: {said}");
    said
}

fn loaded_digest(out: &Path) -> String {
    let server = Server::start(&["--dir", out.to_str().unwrap(), "--appendonly", "yes"]);
    server.client().digest()
}

/// The offset after the last log byte the archive holds, and its objects counted.
fn archived(s3: &S3) -> (u64, usize) {
    let Some(manifest) = s3.manifest(PREFIX) else {
        return (0, 0);
    };
    let lines = manifest["lines"].as_array().unwrap();
    let line = lines.last().unwrap();
    let segments = line["segments"].as_array().unwrap();
    let end = segments.last().map_or(0, |s| {
        s["start"].as_u64().unwrap() + s["log"]["size"].as_u64().unwrap()
    });
    let objects = lines
        .iter()
        .map(|l| {
            l["snapshots"].as_array().unwrap().len() + 3 * l["segments"].as_array().unwrap().len()
        })
        .sum();
    (end, objects)
}

/// Writes to the master until the archive holds the log up to `offset` (sealed segments only
/// are archived: the writes fill the one being written).
fn archive_past(s3: &S3, m: &mut Client, offset: u64) {
    let mut n = 0;
    wait_for("the archive to hold the log up to the offset", || {
        let (end, _) = archived(s3);
        if end <= offset {
            n += 1;
            m.cmd(&["SET", &format!("filler:{n}"), &"f".repeat(2048)]);
        }
        (end > offset, end)
    });
}

fn relay_num(relay: &Relay, field: &str) -> i64 {
    relay.client().info_num("relay", field)
}

/// Writes 300 KiB to the master, past the relay's --snapshot-refresh 256kb, and waits for the
/// refresh in service; the offset of the snapshot it replaced.
fn refresh(relay: &Relay, m: &mut Client, tag: &str) -> i64 {
    let before = relay_num(relay, "relay_snapshot_offset");
    let big = format!("{tag}-").repeat(512);
    let writes: Vec<Vec<String>> = (0..300)
        .map(|i| cmd(&["SET", &format!("big:{i}"), &format!("{i}{big}")]))
        .collect();
    m.pipeline(&writes);
    wait_for("a refreshed snapshot in service", || {
        let now = relay_num(relay, "relay_snapshot_offset");
        (now > before, now)
    });
    before
}

fn metric(relay: &Relay, name: &str) -> u64 {
    let (_, text) = relay.http_get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("replica_relay_{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A write load over several snapshot refreshes, then the relay and its --dir deleted: the
/// archive alone restores recorded offsets and moments, before a refresh the relay's own store
/// no longer holds, and the data just before a FLUSHALL, each loading with its digest.
#[test]
fn the_archive_alone_restores_offsets_moments_and_before_flushall() {
    let Some(s3) = S3::start() else { return };
    let master = Server::master(&[]);
    let mut relay = archiving_relay(&s3, master.port, &["--snapshot-refresh", "256kb"]);
    let mut m = master.client();
    let mut points = Vec::new();
    for tag in ["a", "b", "c"] {
        write_mixed(&mut m, tag, 5);
        let offset = relay.stored(&master);
        let (_, unix_ms) = relay.time_marks().1;
        points.push((offset, unix_ms, m.digest()));
        refresh(&relay, &mut m, tag);
    }
    let before_flush = m.digest();
    m.cmd(&["FLUSHALL"]);
    write_mixed(&mut m, "d", 2);
    let last = relay.stored(&master);
    archive_past(&s3, &mut m, last);
    assert!(relay.terminate().success());
    // The relay's own store (no --restore-window) holds only the newest snapshot.
    let local = Command::new(env!("CARGO_BIN_EXE_replica-relay"))
        .args(["restore", "--list", "--dir"])
        .arg(&relay.dir)
        .output()
        .unwrap();
    let local = String::from_utf8_lossy(&local.stdout).into_owned();
    let from = |list: &str| -> u64 {
        let rest = list.split_once("(offset ").expect("a window").1;
        rest.split(')').next().unwrap().parse().unwrap()
    };
    assert!(
        from(&local) > points[0].0,
        "the store still holds it: {local}"
    );
    let listed = restore_from(&s3, &["--list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(from(&listed) <= points[0].0, "{listed}");
    std::fs::remove_dir_all(&relay.dir).unwrap();

    let work = tempfile::tempdir().unwrap();
    for (n, (offset, unix_ms, digest)) in points.iter().enumerate() {
        let out = work.path().join(format!("offset{n}"));
        let said = restored(&s3, &out, &["--offset", &offset.to_string()]);
        assert_eq!(&loaded_digest(&out), digest, "offset {offset}: {said}");
        let out = work.path().join(format!("time{n}"));
        let at = format!("@{}.{:03}", unix_ms / 1000, unix_ms % 1000);
        let said = restored(&s3, &out, &["--at", &at]);
        assert_eq!(&loaded_digest(&out), digest, "{at}: {said}");
    }
    let out = work.path().join("flush");
    let after = points[2].1;
    let after = format!("@{}.{:03}", after / 1000, after % 1000);
    let said = restored(&s3, &out, &["--before", "FLUSHALL", "--after", &after]);
    assert!(said.contains("found FLUSHALL at offset"), "{said}");
    assert_eq!(loaded_digest(&out), before_flush, "{said}");
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".replica-relay-archive")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "the staged archive was left: {leftovers:?}"
    );
}

/// A flipped byte in an archived log segment stops the restore from the archive, naming the
/// object, and leaves no file behind.
#[test]
fn a_flipped_byte_in_an_archived_segment_stops_the_restore() {
    let Some(s3) = S3::start() else { return };
    let master = Server::master(&[]);
    let mut relay = archiving_relay(&s3, master.port, &[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 10);
    let offset = relay.stored(&master);
    archive_past(&s3, &mut m, offset);
    assert!(relay.terminate().success());
    let manifest = s3.manifest(PREFIX).unwrap();
    let key = manifest["lines"][0]["segments"][0]["log"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = s3.object_file(&format!("{PREFIX}/{key}"));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("damaged");
    let done = restore_from(
        &s3,
        &[
            "--offset",
            &offset.to_string(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let said = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(!done.status.success(), "{said}");
    assert!(
        said.contains(&format!("the archived object {key} is damaged")),
        "{said}"
    );
    assert!(!out.join("appendonly.aof").exists(), "a file was left");
}

/// A relay killed with -9 after uploading an object and before the manifest named it: started
/// again, it resumes from the manifest, sending that object again and nothing the manifest
/// names; the archive then restores to the master's digest.
#[test]
fn an_upload_cut_by_kill_9_resumes_without_sending_again_what_was_done() {
    let Some(s3) = S3::start() else { return };
    let holds = Holds::arm(&[]);
    let master = Server::master(&[]);
    let hold = [("REPLICA_RELAY_HOLD", holds.env().1)];
    let mut relay = archiving_relay_env(&s3, master.port, &hold, &[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 10);
    let offset = relay.stored(&master);
    archive_past(&s3, &mut m, offset);
    holds.arm_now("archive-manifest");
    write_mixed(&mut m, "b", 10);
    let pid = holds.reached("archive-manifest");
    assert_eq!(pid, relay.pid());
    let (_, named) = archived(&s3);
    let sent_before = metric(&relay, "archive_uploaded_objects_total") as usize;
    // The objects of the held commit are sent and not named.
    assert!(sent_before > named, "{sent_before} sent, {named} named");
    relay.kill9_and_restart();
    let digest = m.digest();
    let last = relay.stored(&master);
    archive_past(&s3, &mut m, last);
    assert!(
        relay.log().contains("resuming line 1"),
        "the restarted relay did not resume the archive"
    );
    // Every object the restarted relay sent is one the manifest did not name at the kill
    // (read until the manifest and the count agree: an upload may be between them).
    wait_for(
        "objects sent after the restart = objects named since the kill",
        || {
            let (_, now) = archived(&s3);
            let sent = metric(&relay, "archive_uploaded_objects_total") as usize;
            (
                sent == now - named && archived(&s3).1 == now,
                (sent, now - named),
            )
        },
    );
    restores_to(&s3, last, &digest, "the last offset");
}

/// The object store away (killed) while the master writes: the replica behind the relay stays
/// in sync, the uploads fail and back off, and once the store is back the archive catches up
/// and restores to the master's digest.
#[test]
fn the_object_store_away_and_back() {
    let Some(mut s3) = S3::start() else { return };
    let master = Server::master(&[]);
    let relay = archiving_relay(&s3, master.port, &[]);
    let replica = Server::replica_of(relay.port, &[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 5);
    let offset = relay.stored(&master);
    archive_past(&s3, &mut m, offset);
    s3.stop();
    let mut n = 0;
    wait_for("archive uploads to fail twice", || {
        n += 1;
        m.cmd(&["SET", &format!("away:{n}"), &"w".repeat(2048)]);
        let failed = metric(&relay, "archive_failures_total");
        (failed >= 2, failed)
    });
    write_mixed(&mut m, "b", 5);
    wait_in_sync(&master, &[&replica]);
    assert!(
        relay.log().contains("next attempt in 2 s"),
        "no backoff in the log"
    );
    assert!(
        metric(&relay, "archive_behind_bytes") > 0,
        "nothing behind while away"
    );
    assert!(relay_num(&relay, "relay_archive_failures") >= 2);
    let (_, status) = relay.http_get("/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["archive"]["url"],
        s3.url(PREFIX).as_str(),
        "{status}"
    );
    assert!(
        status["archive"]["behind_bytes"].as_u64() > Some(0),
        "{status}"
    );
    s3.start_again();
    let last = relay.stored(&master);
    let digest = m.digest();
    archive_past(&s3, &mut m, last);
    restores_to(&s3, last, &digest, "the last offset");
}

/// A new relay with an empty --dir (a pod whose volume was lost) and --bootstrap-from: it takes
/// the archive's newest snapshot and log, the master serves it a partial resync from the
/// archive's end (no fork: total_forks unchanged), and a replica behind it gets the master's
/// data from it.
#[test]
fn a_relay_bootstrapped_from_the_archive_is_served_a_partial_resync() {
    let Some(s3) = S3::start() else { return };
    let master = Server::master(&["--repl-backlog-size", "64mb"]);
    let mut first = archiving_relay(&s3, master.port, &[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 10);
    let offset = first.stored(&master);
    archive_past(&s3, &mut m, offset);
    assert!(first.terminate().success());
    // The master goes on past the archive's end: the gap its backlog covers.
    write_mixed(&mut m, "b", 5);
    let forks = m.info_num("stats", "total_forks");
    let partial = m.info_num("stats", "sync_partial_ok");
    let fulls = m.info_num("stats", "sync_full");
    let url = s3.url(PREFIX);
    let port = master.port.to_string();
    let flags = ["--replicaof", "127.0.0.1", &port, "--bootstrap-from", &url];
    let second = relay_with(&s3, &[], &flags);
    second.stored(&master);
    let log = second.log();
    assert!(log.contains("Bootstrapped from the archive"), "{log}");
    assert_eq!(m.info_num("stats", "sync_partial_ok"), partial + 1, "{log}");
    assert_eq!(m.info_num("stats", "sync_full"), fulls, "{log}");
    let replica = Server::replica_of(second.port, &[]);
    write_mixed(&mut m, "c", 3);
    wait_in_sync(&master, &[&replica]);
    assert_eq!(
        m.info_num("stats", "total_forks"),
        forks,
        "the master forked"
    );
}

/// `--archive-window`: what no moment of the window needs is deleted (the manifest first, then
/// the objects), while the newest snapshot before the window and everything after it stay and
/// restore to the master's digest.
#[test]
fn the_archive_window_deletes_only_what_no_moment_in_it_needs() {
    let Some(s3) = S3::start() else { return };
    let master = Server::master(&[]);
    let flags = ["--snapshot-refresh", "256kb", "--archive-window", "1s"];
    let relay = archiving_relay(&s3, master.port, &flags);
    let mut m = master.client();
    let mut first_snapshot = None;
    for tag in ["a", "b", "c"] {
        write_mixed(&mut m, tag, 3);
        first_snapshot.get_or_insert(refresh(&relay, &mut m, tag));
    }
    let first_snapshot = first_snapshot.unwrap() as u64;
    let last = relay.stored(&master);
    let digest = m.digest();
    archive_past(&s3, &mut m, last);
    let snapshots = |manifest: &serde_json::Value| -> Vec<(u64, String)> {
        let line = &manifest["lines"][0];
        (line["snapshots"].as_array().unwrap().iter())
            .map(|s| {
                (
                    s["offset"].as_u64().unwrap(),
                    s["object"]["key"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // The manifest is written before the objects go, the count after.
    wait_for("the first snapshot out of the window and deleted", || {
        // s3s-fs may be rewriting the manifest: a partial read is no answer yet.
        let kept = s3.manifest(PREFIX).map_or_else(Vec::new, |m| snapshots(&m));
        let gone = !kept.iter().any(|(o, _)| *o == first_snapshot);
        let deleted = metric(&relay, "archive_deleted_objects_total");
        (gone && !kept.is_empty() && deleted > 0, (kept, deleted))
    });
    assert!(relay.log().contains("out of --archive-window"));
    let dir = s3.object_file(&format!("{PREFIX}/lines/000001/snapshots"));
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let first = format!("-{first_snapshot}.rdb");
    assert!(!files.iter().any(|f| f.ends_with(&first)), "{files:?}");
    restores_to(&s3, last, &digest, "the last offset");
}

/// While the object store is away the store keeps the log the archive has not taken, past a
/// snapshot refresh and a small backlog, so the archive goes on in the same line; past
/// --restore-max-disk it drops it (a log line, a metric) and the archive begins a new line that
/// restores the master's data.
#[test]
fn the_store_keeps_what_the_archive_has_not_taken_within_the_disk_bound() {
    let Some(mut s3) = S3::start() else { return };
    let master = Server::master(&[]);
    let flags = [
        "--snapshot-refresh",
        "256kb",
        "--backlog-size",
        "16kb",
        "--restore-max-disk",
        "1mb",
    ];
    let relay = archiving_relay(&s3, master.port, &flags);
    let mut m = master.client();
    write_mixed(&mut m, "a", 3);
    let early = relay.stored(&master);
    let early_digest = m.digest();
    archive_past(&s3, &mut m, early);
    s3.stop();
    let (end, _) = archived(&s3);
    refresh(&relay, &mut m, "b");
    write_mixed(&mut m, "c", 3);
    relay.stored(&master);
    let first = relay_num(&relay, "relay_log_first_offset") as u64;
    assert!(
        first <= end,
        "the log from {first} on is kept; the archive ends at {end}"
    );
    s3.start_again();
    let late = relay.stored(&master);
    let late_digest = m.digest();
    archive_past(&s3, &mut m, late);
    assert!(
        !relay.log().contains("line 2 begins"),
        "the archive's line broke"
    );
    restores_to(&s3, early, &early_digest, "early");
    restores_to(&s3, late, &late_digest, "late");
    s3.stop();
    for tag in ["d", "e", "f", "g"] {
        refresh(&relay, &mut m, tag);
    }
    wait_for("unarchived log dropped over --restore-max-disk", || {
        let dropped = metric(&relay, "store_unarchived_dropped_bytes_total");
        (dropped > 0, dropped)
    });
    assert!(relay.log().contains("is over --restore-max-disk"));
    s3.start_again();
    let last = relay.stored(&master);
    let digest = m.digest();
    archive_past(&s3, &mut m, last);
    assert!(
        relay.log().contains("line 2 begins"),
        "no new line after the gap"
    );
    restores_to(&s3, last, &digest, "after the gap");
}

/// --bootstrap-from an archive that holds nothing yet (the first start of a deployment that
/// sets it): the relay says so and attaches as a new replica, with the master's data.
#[test]
fn a_bootstrap_from_an_empty_archive_attaches_as_a_new_replica() {
    let Some(s3) = S3::start() else { return };
    let master = Server::master(&[]);
    write_mixed(&mut master.client(), "a", 3);
    let url = s3.url("nothing-here");
    let port = master.port.to_string();
    let flags = ["--replicaof", "127.0.0.1", &port, "--bootstrap-from", &url];
    let relay = relay_with(&s3, &[], &flags);
    let replica = Server::replica_of(relay.port, &[]);
    wait_in_sync(&master, &[&replica]);
    let log = relay.log();
    assert!(
        log.contains(
            "holds no snapshot with its log yet; attaching to the master as a new replica"
        ),
        "{log}"
    );
}

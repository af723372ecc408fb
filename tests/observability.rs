//! What operators see: a live Prometheus scrape, /status and /readyz against real servers.

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use support::{Relay, Server, wait_for, wait_in_sync, write_mixed};

/// `name{labels}` -> value, from the text exposition.
fn scrape(relay: &Relay) -> HashMap<String, f64> {
    let (code, body) = relay.http_get("/metrics");
    assert_eq!(code, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn metric(m: &HashMap<String, f64>, name: &str) -> f64 {
    *m.get(name)
        .unwrap_or_else(|| panic!("no {name} in the scrape"))
}

/// `promtool check metrics` on a live scrape, when promtool is installed (scripts/test does).
fn promtool_check(relay: &Relay) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        support::missing("promtool is not installed (scripts/test installs it)");
        return;
    };
    let body = relay.http_get("/metrics").1;
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool check metrics: {text}");
}

#[test]
fn a_live_scrape_shows_link_lag_and_replicas() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let r1 = Server::replica_of(relay.port, &[]);
    let r2 = Server::replica_of(relay.port, &[]);
    let mut m = master.client();
    write_mixed(&mut m, "a", 20);
    wait_in_sync(&master, &[&r1, &r2]);

    let offset = m.info_num("replication", "master_repl_offset") as f64;
    let seen = wait_for("lag 0 everywhere after quiesce", || {
        let s = scrape(&relay);
        let lags: Vec<f64> = [r1.port, r2.port]
            .iter()
            .map(|p| {
                s.get(&format!(
                    "replica_relay_replica_lag_bytes{{replica=\"127.0.0.1:{p}\"}}"
                ))
                .copied()
                .unwrap_or(-1.0)
            })
            .collect();
        let ok = metric(&s, "replica_relay_upstream_master_offset_bytes") == offset
            && metric(&s, "replica_relay_upstream_lag_bytes") == 0.0
            && lags == [0.0, 0.0];
        (
            ok,
            (
                lags,
                s.get("replica_relay_upstream_master_offset_bytes").copied(),
            ),
        )
    });
    let s = scrape(&relay);
    assert_eq!(
        metric(&s, "replica_relay_upstream_link_up"),
        1.0,
        "{seen:?}"
    );
    assert_eq!(
        metric(&s, "replica_relay_upstream_state{state=\"connected\"}"),
        1.0
    );
    assert_eq!(metric(&s, "replica_relay_upstream_offset_bytes"), offset);
    assert_eq!(metric(&s, "replica_relay_replicas_connected"), 2.0);
    assert_eq!(metric(&s, "replica_relay_downstream_full_syncs_total"), 2.0);
    assert_eq!(metric(&s, "replica_relay_upstream_full_syncs_total"), 1.0);
    assert!(metric(&s, "replica_relay_commands_total{command=\"set\"}") >= 60.0);
    assert!(metric(&s, "replica_relay_snapshot_bytes") > 0.0);
    assert!(metric(&s, "process_resident_memory_bytes") > 0.0);
    // Every reason and failure exists at zero from the start, so rates and alerts see them.
    for reason in [
        "maxclients",
        "protected_mode",
        "protocol_error",
        "auth",
        "nomasterlink",
        "rdb_format",
    ] {
        let series = format!("replica_relay_downstream_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&s, &series), 0.0, "{series}");
    }
    assert_eq!(
        metric(
            &s,
            "replica_relay_upstream_sync_failures_total{reason=\"full_sync\"}"
        ),
        0.0
    );
    promtool_check(&relay);
    every_metric_the_deploy_files_use_exists(&relay);

    let (code, body) = relay.http_get("/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(status["master"]["link_status"], "up");
    assert_eq!(status["replicas"].as_array().unwrap().len(), 2);
    assert_eq!(status["master_repl_offset"], offset as i64);

    drop(master);
    let (code, body) = wait_for("/readyz to turn 503 and the link metric to 0", || {
        let ready = relay.http_get("/readyz");
        let up = metric(&scrape(&relay), "replica_relay_upstream_link_up");
        (ready.0 == 503 && up == 0.0, ready)
    });
    assert!(body.contains("link with master"), "{code} {body}");
    let s = scrape(&relay);
    assert!(metric(&s, "replica_relay_upstream_link_down_since_seconds") >= 0.0);
    assert_eq!(
        metric(&s, "replica_relay_replicas_connected"),
        2.0,
        "replicas stay attached"
    );
}

/// The dashboard and the alert rules name only metrics the relay exports.
fn every_metric_the_deploy_files_use_exists(relay: &Relay) {
    let body = relay.http_get("/metrics").1;
    let root = env!("CARGO_MANIFEST_DIR");
    for file in [
        "deploy/grafana/replica-relay.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("replica_relay_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let base = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(
                body.contains(&format!("# TYPE {base} ")),
                "{file} uses {name}, which the relay does not export"
            );
        }
    }
}

/// The admin port speaks HTTP/1.1 as probes and Prometheus expect: keep-alive, HEAD, 405 for
/// other methods, 431 for oversized headers, and a client that never finishes its request is
/// closed.
#[test]
fn the_admin_port_speaks_http_with_bounds() {
    use std::io::{BufRead, BufReader, Read, Write};
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", relay.metrics_port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        s
    };
    // Two requests on one connection, the second a HEAD.
    let mut s = connect();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    let head = |rd: &mut BufReader<std::net::TcpStream>| {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            rd.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                return lines;
            }
            lines.push(line.trim_end().to_lowercase());
        }
    };
    let length = |lines: &[String]| -> usize {
        lines
            .iter()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap()
    };
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = head(&mut rd);
    assert_eq!(first[0], "http/1.1 200 ok");
    let mut body = vec![0; length(&first)];
    rd.read_exact(&mut body).unwrap();
    assert_eq!(body, b"ok\n");
    s.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let second = head(&mut rd);
    assert_eq!(second[0], "http/1.1 200 ok", "kept alive: {second:?}");
    assert!(length(&second) > 0, "HEAD says the length, sends no body");

    let mut post = connect();
    post.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    BufReader::new(post).read_line(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");

    let mut big = connect();
    let header = format!("X-Big: {}\r\n", "a".repeat(16 * 1024));
    let _ = big.write_all(format!("GET /healthz HTTP/1.1\r\n{header}\r\n").as_bytes());
    let mut reply = String::new();
    let _ = BufReader::new(big).read_line(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:?}");

    let mut slow = connect();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 408"),
        "an unfinished request is closed: {rest:?}"
    );
}

/// Out of file descriptors, the admin server says so and waits instead of spinning on the
/// failed accept; once descriptors are free again it answers.
#[test]
fn the_admin_server_survives_running_out_of_file_descriptors() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    let pid = relay.pid() as i32;
    let mut before = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit on the relay's pid with valid pointers; only the soft limit changes.
    let got = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut before) };
    assert_eq!(got, 0, "reading the relay's descriptor limit");
    let hard = before.rlim_max;
    let low = |cur| libc::rlimit {
        rlim_cur: cur,
        rlim_max: hard,
    };
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &low(48), std::ptr::null_mut()) };
    assert_eq!(set, 0, "lowering the relay's descriptor limit");
    let mut held = Vec::new();
    let log = wait_for("the relay to report the failed accept", || {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", relay.metrics_port)) {
            held.push(s);
        }
        let log = relay.log();
        (log.contains("Accepting an admin connection"), held.len())
    });
    drop(held);
    // SAFETY: as above.
    let back = low(before.rlim_cur);
    unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &back, std::ptr::null_mut()) };
    wait_for("the admin server to answer again", || {
        let ok = std::panic::catch_unwind(|| relay.http_get("/healthz").0).unwrap_or(0);
        (ok == 200, ok)
    });
    assert!(log > 0);
}

/// A master the relay cannot reach: the lag is unknown, so it is not exported as a number (a
/// frozen 0 would look like no lag); `upstream_lag_known` says so, and the sample is back once
/// the master answers again.
#[test]
fn the_lag_is_absent_while_the_masters_offset_cannot_be_read() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    write_mixed(&mut master.client(), "a", 5);
    wait_for("a known lag of 0", || {
        let s = scrape(&relay);
        let ok = s.get("replica_relay_upstream_lag_bytes") == Some(&0.0)
            && s.get("replica_relay_upstream_lag_known") == Some(&1.0);
        (ok, s.get("replica_relay_upstream_lag_bytes").copied())
    });
    // Stopped, the master answers nothing: neither the link nor the offset reads.
    unsafe { libc::kill(master.pid() as i32, libc::SIGSTOP) };
    let seen = wait_for("the lag to become unknown", || {
        let s = scrape(&relay);
        let ok = !s.contains_key("replica_relay_upstream_lag_bytes")
            && !s.contains_key("replica_relay_upstream_master_offset_bytes")
            && s.get("replica_relay_upstream_lag_known") == Some(&0.0);
        (ok, s.get("replica_relay_upstream_lag_bytes").copied())
    });
    assert_eq!(seen, None);
    let (_, status) = relay.http_get("/status");
    assert!(status.contains("\"lag_bytes\": null"), "{status}");
    unsafe { libc::kill(master.pid() as i32, libc::SIGCONT) };
    wait_for("the lag to be known again", || {
        let s = scrape(&relay);
        (s.get("replica_relay_upstream_lag_known") == Some(&1.0), ())
    });
}

/// The time since the master's last byte is one fact in INFO, /status and /metrics: an age while
/// the link is up, unknown while it is down (INFO said -1 while the other two kept counting).
#[test]
fn the_masters_last_io_agrees_in_info_status_and_metrics() {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, &[]);
    write_mixed(&mut master.client(), "a", 5);
    relay.stored(&master);
    let shown = |relay: &Relay| {
        let info = relay
            .client()
            .info_num("replication", "master_last_io_seconds_ago");
        let (_, status) = relay.http_get("/status");
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let status = status["master"]["last_io_seconds_ago"]
            .as_i64()
            .unwrap_or(-1);
        let metric = metric(&scrape(relay), "replica_relay_upstream_last_io_seconds");
        (info, status, metric)
    };
    let (info, status, metric) = shown(&relay);
    assert!(
        info >= 0 && status >= 0 && metric >= 0.0,
        "{info} {status} {metric}"
    );
    drop(master);
    wait_for("the link to be down", || {
        let link = relay.client().info("replication", "master_link_status");
        (link.as_deref() == Some("down"), link)
    });
    assert_eq!(shown(&relay), (-1, -1, -1.0));
}

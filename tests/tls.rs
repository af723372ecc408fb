//! TLS on every link (issue: TLS master, TLS replicas, client certificates, rotation, HTTPS
//! metrics), against real redis-server processes built with TLS. Every server keeps a plain
//! port too, where the test reads it.

mod support;

use std::io::{Read, Write};
use std::sync::Arc;

use support::tls::{Pair, Pki, s};
use support::*;

/// A TLS master (plain port for the test), with `pair` and `extra`.
fn tls_master(pki: &Pki, pair: &Pair, extra: &[&str]) -> (Server, u16) {
    tls_master_of(&redis_server_bin(), pki, pair, extra)
}

fn tls_master_of(bin: &str, pki: &Pki, pair: &Pair, extra: &[&str]) -> (Server, u16) {
    let tls_port = free_port();
    let mut args = pki.server_args(pair, tls_port);
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Server::start_bin(bin, free_port(), &args), tls_port)
}

/// A replica of `port` over TLS.
fn tls_replica(pki: &Pki, pair: &Pair, port: u16) -> Server {
    tls_replica_of(&redis_server_bin(), pki, pair, port)
}

fn tls_replica_of(bin: &str, pki: &Pki, pair: &Pair, port: u16) -> Server {
    let mut args = vec![
        "--replicaof".to_string(),
        "127.0.0.1".into(),
        port.to_string(),
        "--tls-replication".into(),
        "yes".into(),
    ];
    args.extend(pki.server_args(pair, free_port()));
    Server::start_bin(
        bin,
        free_port(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// The relay's TLS flags: upstream TLS to `master_tls` when given, a TLS port when `tls_port`.
fn relay_flags(pki: &Pki, pair: &Pair, master: Option<u16>, tls_port: Option<u16>) -> Vec<String> {
    let mut f = vec![
        "--tls-cert-file".to_string(),
        s(&pair.cert),
        "--tls-key-file".into(),
        s(&pair.key),
        "--tls-ca-cert-file".into(),
        s(&pki.ca),
    ];
    if let Some(port) = master {
        f.extend(["--replicaof".into(), "127.0.0.1".into(), port.to_string()]);
        f.extend(["--tls-replication".into(), "yes".into()]);
    }
    if let Some(port) = tls_port {
        f.extend(["--tls-port".into(), port.to_string()]);
    }
    f
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn tls_master_relay_and_replicas_sync_and_resume_with_partial_resyncs() {
    tls_chain(&redis_server_bin());
}

/// The same with the installed Redis 7.4, also built with TLS.
#[test]
fn tls_chain_with_redis_7_4() {
    if let Some(servers) = other_servers(&["redis-7.4.1"]) {
        tls_chain(&servers[0].1);
    }
}

/// A TLS master of `bin` → the relay → two TLS replicas of `bin`: one fork, and partial
/// resyncs over TLS after each link is killed.
fn tls_chain(bin: &str) {
    let pki = Pki::new("main");
    let pair = pki.issue("node", false);
    let (master, master_tls) = tls_master_of(bin, &pki, &pair, &[]);
    let relay_tls = free_port();
    let flags = relay_flags(&pki, &pair, Some(master_tls), Some(relay_tls));
    let relay = Relay::start(&strs(&flags));
    let replicas: Vec<Server> = (0..2)
        .map(|_| tls_replica_of(bin, &pki, &pair, relay_tls))
        .collect();
    write_mixed(&mut master.client(), "a", 20);
    let all: Vec<&Server> = replicas.iter().collect();
    wait_in_sync(&master, &all);
    assert_eq!(master.client().syncs().0, 1, "one fork for every replica");
    // The relay's link with the master, killed: a partial resync over TLS.
    master.client().cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
    write_mixed(&mut master.client(), "b", 5);
    wait_in_sync(&master, &all);
    let (full, partial) = master.client().syncs();
    assert_eq!(
        (full, partial),
        (1, 1),
        "the relay resumed with a partial resync"
    );
    // A replica's link with the relay, killed: a partial resync from the relay over TLS.
    replicas[0]
        .client()
        .cmd(&["CLIENT", "KILL", "TYPE", "master"]);
    write_mixed(&mut master.client(), "c", 5);
    wait_in_sync(&master, &all);
    let (full, partial) = relay.client().syncs();
    assert_eq!((full, partial), (2, 1), "{}", relay.log());
}

#[test]
fn tls_upstream_with_plain_replicas_and_plain_upstream_with_tls_replicas() {
    let pki = Pki::new("mixed");
    let pair = pki.issue("node", false);
    let (master, master_tls) = tls_master(&pki, &pair, &[]);
    let upstream_only = Relay::start(&strs(&relay_flags(&pki, &pair, Some(master_tls), None)));
    let plain_replica = Server::replica_of(upstream_only.port, &[]);
    let relay_tls = free_port();
    let mut flags = relay_flags(&pki, &pair, None, Some(relay_tls));
    flags.extend([
        "--replicaof".into(),
        "127.0.0.1".into(),
        master.port.to_string(),
    ]);
    let downstream_only = Relay::start(&strs(&flags));
    let tls_replica = tls_replica(&pki, &pair, relay_tls);
    write_mixed(&mut master.client(), "a", 10);
    wait_in_sync(&master, &[&plain_replica, &tls_replica]);
    assert_eq!(master.client().syncs().0, 2);
    drop(downstream_only);
}

/// A TLS client for the test, trusting `ca`, presenting `pair` if given.
fn tls_client(ca: &std::path::Path, pair: Option<&Pair>) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match pair {
        Some(p) => builder
            .with_client_auth_cert(
                rustls_pki_types::CertificateDer::pem_file_iter(&p.cert)
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect(),
                rustls_pki_types::PrivateKeyDer::from_pem_file(&p.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Connects over TLS to `port`, sends `request`, returns what came back (or the error) and the
/// certificate the server presented.
fn tls_exchange(
    config: Arc<rustls::ClientConfig>,
    port: u16,
    request: &[u8],
) -> (Result<Vec<u8>, String>, Option<Vec<u8>>) {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut out = Vec::new();
    let result = tls
        .write_all(request)
        .and_then(|_| {
            let mut buf = [0u8; 65536];
            let n = tls.read(&mut buf)?;
            out.extend_from_slice(&buf[..n]);
            Ok(())
        })
        .map(|_| out)
        .map_err(|e| e.to_string());
    let presented = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    (result, presented)
}

#[test]
fn tls_refusals_say_what_failed_and_leave_the_replicas_streaming() {
    let pki = Pki::new("good");
    let other = Pki::new("other");
    let pair = pki.issue("node", false);
    // Wrong CA: the master's certificate is signed by another CA.
    let foreign = other.issue("foreign", false);
    let (_m1, m1_tls) = tls_master(&other, &foreign, &[]);
    let wrong_ca = Relay::start(&strs(&relay_flags(&pki, &pair, Some(m1_tls), None)));
    wait_for("the unknown CA in the log", || {
        (wrong_ca.log().contains("unknown CA"), ())
    });
    // Expired: the master's certificate has expired.
    let old = pki.issue("old", true);
    let (_m2, m2_tls) = tls_master(&pki, &old, &[]);
    let expired = Relay::start(&strs(&relay_flags(&pki, &pair, Some(m2_tls), None)));
    wait_for("the expired certificate in the log", || {
        (expired.log().contains("has expired"), ())
    });
    // The master requires a client certificate and the relay has none to give.
    let (_m3, m3_tls) = tls_master(&pki, &pair, &["--tls-auth-clients", "yes"]);
    let flags = vec![
        "--replicaof".to_string(),
        "127.0.0.1".into(),
        m3_tls.to_string(),
        "--tls-replication".into(),
        "yes".into(),
        "--tls-ca-cert-file".into(),
        s(&pki.ca),
    ];
    let no_cert = Relay::start(&strs(&flags));
    wait_for("the missing client certificate in the log", || {
        (no_cert.log().contains("requires a client certificate"), ())
    });
    // A relay whose TLS port requires client certificates, with a TLS replica streaming.
    let (master, master_tls) = tls_master(&pki, &pair, &[]);
    let relay_tls = free_port();
    let relay = Relay::start(&strs(&relay_flags(
        &pki,
        &pair,
        Some(master_tls),
        Some(relay_tls),
    )));
    let replica = tls_replica(&pki, &pair, relay_tls);
    master.client().cmd(&["SET", "before", "1"]);
    wait_in_sync(&master, &[&replica]);
    let (reply, _) = tls_exchange(tls_client(&pki.ca, None), relay_tls, b"PING\r\n");
    assert!(
        reply.is_err() || reply.as_ref().unwrap().is_empty(),
        "{reply:?}"
    );
    wait_for("the missing client certificate in the relay's log", || {
        (relay.log().contains("client certificate missing"), ())
    });
    let (reply, _) = tls_exchange(tls_client(&pki.ca, Some(&pair)), relay_tls, b"PING\r\n");
    assert_eq!(reply.unwrap(), b"+PONG\r\n");
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", relay_tls)).unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    wait_for("the plain-text client in the relay's log", || {
        (relay.log().contains("sent plain text to the TLS port"), ())
    });
    master.client().cmd(&["SET", "after", "1"]);
    wait_in_sync(&master, &[&replica]);
}

#[test]
fn certificates_rotate_without_a_restart_and_a_bad_pair_keeps_the_old_one() {
    let pki = Pki::new("rotate");
    let first = pki.issue("first", false);
    let (master, master_tls) = tls_master(&pki, &first, &[]);
    // The relay's own files, replaced in place as cert-manager does.
    let live = Pair {
        cert: pki.dir.path().join("live.crt"),
        key: pki.dir.path().join("live.key"),
        der: first.der.clone(),
    };
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let relay_tls = free_port();
    let relay = Relay::start(&strs(&relay_flags(
        &pki,
        &live,
        Some(master_tls),
        Some(relay_tls),
    )));
    let old_link = tls_replica(&pki, &first, relay_tls);
    master.client().cmd(&["SET", "k", "1"]);
    wait_in_sync(&master, &[&old_link]);
    let presented =
        |pair: &Pair| tls_exchange(tls_client(&pki.ca, Some(pair)), relay_tls, b"PING\r\n").1;
    assert_eq!(presented(&first), Some(first.der.clone()));
    let second = pki.issue("second", false);
    std::fs::copy(&second.key, &live.key).unwrap();
    std::fs::copy(&second.cert, &live.cert).unwrap();
    wait_for("new connections to get the new certificate", || {
        let got = presented(&first);
        (
            got == Some(second.der.clone()),
            relay.log().contains("TLS certificates reloaded"),
        )
    });
    let new_link = tls_replica(&pki, &first, relay_tls);
    master.client().cmd(&["SET", "k", "2"]);
    wait_in_sync(&master, &[&old_link, &new_link]);
    assert_eq!(relay.client().syncs().0, 2, "the old link was dropped");
    let refusals = || {
        relay
            .log()
            .matches("Reloading the TLS files failed, keeping the certificates in use")
            .count()
    };
    let before = refusals();
    std::fs::write(&live.cert, "not a certificate\n").unwrap();
    wait_for("the bad pair in the log", || (refusals() > before, ()));
    assert_eq!(presented(&first), Some(second.der.clone()));
}

#[test]
fn metrics_over_https_verify_against_the_ca() {
    let pki = Pki::new("metrics");
    let pair = pki.issue("node", false);
    let master = Server::master(&[]);
    let mut flags = relay_flags(&pki, &pair, None, None);
    flags.extend(["--metrics-tls".into(), "yes".into()]);
    flags.extend([
        "--replicaof".into(),
        "127.0.0.1".into(),
        master.port.to_string(),
    ]);
    let relay = Relay::start(&strs(&flags));
    let request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let (reply, _) = tls_exchange(tls_client(&pki.ca, None), relay.metrics_port, request);
    let text = String::from_utf8(reply.unwrap()).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", relay.metrics_port)).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    plain.write_all(request).unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/1.1 200"), "plain HTTP was answered");
    let check = |ca: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_replica-relay"))
            .args([
                "healthcheck",
                "--metrics-port",
                &relay.metrics_port.to_string(),
            ])
            .args(["--metrics-tls", "yes", "--tls-ca-cert-file"])
            .arg(ca)
            .output()
            .unwrap()
    };
    let ok = check(&pki.ca);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let other = Pki::new("stranger");
    assert!(
        !check(&other.ca).status.success(),
        "a certificate of another CA passed"
    );
}

/// `--port 0`: no plain TCP at all; replicas attach on the TLS port, the master is told that
/// port.
#[test]
fn port_0_serves_tls_only() {
    let pki = Pki::new("only");
    let pair = pki.issue("node", false);
    let (master, master_tls) = tls_master(&pki, &pair, &[]);
    let relay_tls = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_replica-relay"))
        .args(["--port", "0", "--metrics-port", "0", "--dir"])
        .arg(dir.path())
        .args(relay_flags(&pki, &pair, Some(master_tls), Some(relay_tls)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let replica = tls_replica(&pki, &pair, relay_tls);
    master.client().cmd(&["SET", "k", "1"]);
    wait_in_sync(&master, &[&replica]);
    let slave0 = master
        .client()
        .info("replication", "slave0")
        .unwrap_or_default();
    assert!(slave0.contains(&format!("port={relay_tls}")), "{slave0}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A compressed link between two relays inside TLS, across the WAN stand-in: compressed first,
/// then encrypted.
#[test]
fn a_compressed_link_between_relays_runs_inside_tls() {
    let pki = Pki::new("region");
    let pair = pki.issue("node", false);
    let master = Server::master(&[]);
    write_mixed(&mut master.client(), "a", 50);
    let near_tls = free_port();
    let mut flags = relay_flags(&pki, &pair, None, Some(near_tls));
    flags.extend([
        "--replicaof".into(),
        "127.0.0.1".into(),
        master.port.to_string(),
    ]);
    let near = Relay::start(&strs(&flags));
    let wan = support::wan::Wan::to(near_tls, 5, 0, &[]);
    let mut flags = relay_flags(&pki, &pair, Some(wan.port), None);
    flags.extend(["--upstream-compression".into(), "zstd".into()]);
    let far = Relay::start(&strs(&flags));
    let replica = Server::replica_of(far.port, &[]);
    write_mixed(&mut master.client(), "b", 50);
    wait_in_sync(&master, &[&replica]);
    let line = far
        .client()
        .info("relay", "relay_upstream_compression")
        .unwrap();
    assert!(line.starts_with("links=1,"), "{line}");
    let line = near
        .client()
        .info("relay", "relay_downstream_compression")
        .unwrap();
    assert!(line.starts_with("links=1,"), "{line}");
}

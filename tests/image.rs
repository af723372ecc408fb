//! The container image's command line, run as the image runs it: the Dockerfile's ENV,
//! ENTRYPOINT and HEALTHCHECK, with only the master, the password and the ports supplied the
//! way a deployment supplies them (environment variables).

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use support::{Server, wait_for, write_mixed};

/// The ENV pairs and the exec-form ENTRYPOINT and HEALTHCHECK CMD of the Dockerfile.
fn dockerfile() -> (HashMap<String, String>, Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let runtime = joined.rsplit("\nFROM ").next().unwrap();
    let mut env = HashMap::new();
    let mut entrypoint = Vec::new();
    let mut healthcheck = Vec::new();
    let exec_form = |s: &str| -> Vec<String> { serde_json::from_str(s.trim()).unwrap() };
    for line in runtime.lines() {
        if let Some(pairs) = line.strip_prefix("ENV ") {
            for pair in pairs.split_whitespace() {
                let (k, v) = pair.split_once('=').unwrap();
                env.insert(k.to_string(), v.to_string());
            }
        } else if let Some(cmd) = line.strip_prefix("ENTRYPOINT ") {
            entrypoint = exec_form(cmd);
        } else if let Some(rest) = line.strip_prefix("HEALTHCHECK ") {
            healthcheck = exec_form(rest.split(" CMD ").nth(1).unwrap());
        }
    }
    (env, entrypoint, healthcheck)
}

/// The image's binary is this build's.
fn binary(argv0: &str) -> String {
    assert_eq!(argv0, "replica-relay");
    env!("CARGO_BIN_EXE_replica-relay").to_string()
}

#[test]
fn the_image_command_line_relays_with_a_password_and_reports_healthy() {
    let (mut env, entrypoint, healthcheck) = dockerfile();
    assert_eq!(
        env.get("REPLICA_RELAY_DIR").map(String::as_str),
        Some("/data")
    );
    let master = Server::master(&["--requirepass", "master-pw"]);
    let data = tempfile::tempdir().unwrap();
    let (port, metrics) = (support::free_port(), support::free_port());
    env.insert(
        "REPLICA_RELAY_DIR".into(),
        data.path().display().to_string(),
    );
    env.insert(
        "REPLICA_RELAY_REPLICAOF".into(),
        format!("127.0.0.1 {}", master.port),
    );
    env.insert("REPLICA_RELAY_MASTERAUTH".into(), "master-pw".into());
    env.insert("REPLICA_RELAY_REQUIREPASS".into(), "relay-pw".into());
    env.insert("REPLICA_RELAY_PORT".into(), port.to_string());
    env.insert("REPLICA_RELAY_METRICS_PORT".into(), metrics.to_string());
    // Not the default address: the health check must go where the admin server listens.
    env.insert("REPLICA_RELAY_METRICS_BIND".into(), "127.0.0.2".into());
    let _relay = Killed(
        Command::new(binary(&entrypoint[0]))
            .args(&entrypoint[1..])
            .envs(&env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let mut m = master.client();
    m.cmd(&["AUTH", "master-pw"]);
    write_mixed(&mut m, "a", 10);
    let replica = Server::replica_of(port, &["--masterauth", "relay-pw"]);
    wait_for("the relay to answer its health check", || {
        let status = Command::new(binary(&healthcheck[0]))
            .args(&healthcheck[1..])
            .env("REPLICA_RELAY_METRICS_PORT", metrics.to_string())
            .env("REPLICA_RELAY_METRICS_BIND", "127.0.0.2")
            .status()
            .unwrap();
        (status.success(), status)
    });
    wait_for_sync(&master, &replica);
}

/// The image's health check reads the relay's configuration file (REPLICA_RELAY_CONFIG), so
/// an admin port set only there is the one it checks (it checked the default port, 9480, and
/// failed on a healthy relay).
#[test]
fn the_health_check_reads_the_config_file() {
    let (env, entrypoint, healthcheck) = dockerfile();
    let master = Server::master(&[]);
    let data = tempfile::tempdir().unwrap();
    let metrics = support::free_port();
    let file = data.path().join("relay.toml");
    let toml = format!(
        "port = {}\nmetrics-port = {metrics}\nreplicaof = \"127.0.0.1 {}\"\ndir = \"{}\"\n",
        support::free_port(),
        master.port,
        data.path().join("store").display()
    );
    std::fs::write(&file, toml).unwrap();
    let only_file = |c: &mut Command| {
        c.env_remove("REPLICA_RELAY_DIR")
            .env("REPLICA_RELAY_CONFIG", &file)
            .envs(
                env.iter()
                    .filter(|(k, _)| k.as_str() != "REPLICA_RELAY_DIR"),
            );
    };
    let mut relay = Command::new(binary(&entrypoint[0]));
    only_file(relay.args(&entrypoint[1..]));
    let _relay = Killed(
        relay
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the health check to pass", || {
        let mut check = Command::new(binary(&healthcheck[0]));
        only_file(check.args(&healthcheck[1..]));
        let out = check.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
}

/// A process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `wait_in_sync` with the master's password.
fn wait_for_sync(master: &Server, replica: &Server) {
    let mut m = master.client();
    m.cmd(&["AUTH", "master-pw"]);
    let mut r = replica.client();
    wait_for("the replica to match the master", || {
        let (md, rd) = (m.digest(), r.digest());
        let up = r.info("replication", "master_link_status").as_deref() == Some("up");
        (md == rd && up, (md, rd))
    });
}

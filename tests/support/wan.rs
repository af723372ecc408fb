//! The WAN stand-in (`scripts/wan-link`, a process of the project's own: these kernels have no
//! netem) between two relays: a one-way delay and a rate cap shared by its connections, a bit
//! flipped at a chosen byte, cuts on demand; killed by PID when dropped.

use std::process::{Child, Command, Stdio};

use super::{Client, free_port, wait_for};

pub struct Wan {
    pub port: u16,
    child: Child,
    stats: tempfile::TempDir,
}

impl Wan {
    /// A link to `to` on loopback, `delay_ms` each way, `rate_mbit` each way (0: no cap), with
    /// `extra` flags of scripts/wan-link.
    pub fn to(to: u16, delay_ms: u32, rate_mbit: u32, extra: &[&str]) -> Wan {
        let port = free_port();
        let stats = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/wan-link");
        let child = Command::new("python3")
            .arg(script)
            .args(["--listen", &port.to_string()])
            .args(["--to", &format!("127.0.0.1:{to}")])
            .args(["--delay-ms", &delay_ms.to_string()])
            .args(["--rate-mbit", &rate_mbit.to_string()])
            .arg("--stats")
            .arg(stats.path().join("stats.json"))
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 scripts/wan-link");
        wait_for("the WAN stand-in to accept connections", || {
            let up = Client::try_connect(port).is_some();
            (up, up)
        });
        Wan { port, child, stats }
    }

    /// Cuts every connection open through the link; new ones are accepted.
    pub fn cut(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR1) };
    }

    /// Bytes that crossed towards the clients (the far side), as of the last second.
    pub fn down_bytes(&self) -> u64 {
        let text =
            std::fs::read_to_string(self.stats.path().join("stats.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["down_bytes"].as_u64().unwrap_or(0)
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Real Sentinels (`redis-server <conf> --sentinel`) watching a master, on free loopback ports in
//! temporary directories, killed by PID when dropped.

use std::process::{Child, Command, Stdio};

use super::{Client, Value, free_port, redis_server_bin, wait_for};

pub const NAME: &str = "mymaster";

pub struct Sentinel {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Sentinel {
    /// A Sentinel monitoring the master on `master` with `quorum`: down after 5 s (shorter,
    /// and a newly promoted master that answers slowly on a loaded machine is failed over
    /// again), failover timeout 10 s.
    pub fn watch(master: u16, quorum: u32) -> Sentinel {
        Sentinel::watch_with(master, quorum, 5000)
    }

    /// The same, with the master (and any instance) down after `down_after_ms`; Sentinel also
    /// drops a link whose PING is unanswered for half of it.
    pub fn watch_with(master: u16, quorum: u32, down_after_ms: u64) -> Sentinel {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile sentinel.log\n\
                 sentinel monitor {NAME} 127.0.0.1 {master} {quorum}\n\
                 sentinel down-after-milliseconds {NAME} {down_after_ms}\n\
                 sentinel failover-timeout {NAME} 10000\n\
                 sentinel parallel-syncs {NAME} 4\n",
                dir = dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new(redis_server_bin())
            .arg(&conf)
            .arg("--sentinel")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server --sentinel");
        let sentinel = Sentinel { port, child, dir };
        wait_for(&format!("Sentinel on port {port} to answer PING"), || {
            let pong = Client::try_connect(port).map(|mut c| c.cmd(&["PING"]));
            (matches!(pong, Some(Value::Simple(_))), pong)
        });
        sentinel
    }

    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }

    /// The master's port as this Sentinel names it.
    pub fn master_port(&self) -> Option<u16> {
        match self
            .client()
            .cmd(&["SENTINEL", "get-master-addr-by-name", NAME])
        {
            Value::Array(Some(v)) => v[1].text().parse().ok(),
            _ => None,
        }
    }

    /// `SENTINEL REPLICAS`: one map of fields per replica Sentinel knows.
    pub fn replicas(&self) -> Vec<std::collections::BTreeMap<String, String>> {
        let Value::Array(Some(list)) = self.client().cmd(&["SENTINEL", "REPLICAS", NAME]) else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|r| match r {
                Value::Array(Some(kv)) => {
                    Some(kv.chunks(2).map(|p| (p[0].text(), p[1].text())).collect())
                }
                _ => None,
            })
            .collect()
    }

    /// The fields Sentinel holds of the replica on `port`.
    pub fn replica(&self, port: u16) -> Option<std::collections::BTreeMap<String, String>> {
        self.replicas()
            .into_iter()
            .find(|r| r.get("port").map(String::as_str) == Some(&port.to_string()))
    }

    /// Other Sentinels this one knows of.
    pub fn others(&self) -> usize {
        let Value::Array(Some(kv)) = self.client().cmd(&["SENTINEL", "MASTER", NAME]) else {
            return 0;
        };
        kv.chunks(2)
            .find(|p| p[0].text() == "num-other-sentinels")
            .and_then(|p| p[1].text().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- sentinel {} log ----\n{}", self.port, self.log());
        }
    }
}

/// Three Sentinels, quorum 2, watching `master`, each knowing the other two.
pub fn three(master: u16) -> Vec<Sentinel> {
    three_with(master, 5000)
}

pub fn three_with(master: u16, down_after_ms: u64) -> Vec<Sentinel> {
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::watch_with(master, 2, down_after_ms))
        .collect();
    for s in &sentinels {
        wait_for("each Sentinel to know the other two", || {
            let n = s.others();
            (n == 2, n)
        });
    }
    sentinels
}

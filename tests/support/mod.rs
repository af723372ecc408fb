//! Test support: real `redis-server` processes and the relay binary on free loopback ports in
//! temporary directories, killed by PID when dropped; a small blocking RESP client; and waiting
//! on conditions with deadlines instead of sleeping.

#![allow(dead_code)]

pub mod s3;
pub mod sentinel;
pub mod tls;
pub mod wan;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long any condition in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Ports handed out in this process, so parallel tests never get the same one.
static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Milliseconds since the epoch, as the relay's time index counts them.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut taken = TAKEN.lock().unwrap();
        if !taken.contains(&port) {
            taken.push(port);
            return port;
        }
    }
}

/// Waits until `check` holds, failing the test with `what` and the last observation after the
/// deadline.
pub fn wait_for<T: std::fmt::Debug>(what: &str, mut check: impl FnMut() -> (bool, T)) -> T {
    let start = Instant::now();
    loop {
        let (ok, seen) = check();
        if ok {
            return seen;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out after {DEADLINE:?} waiting for {what}; last seen: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Servers of other versions, installed by scripts/install-redis-servers.sh into
/// `$REDIS_SERVERS_DIR/<name>/bin/redis-server`; `None` when that variable is not set, which
/// under `CI=true` fails the test instead: CI must run what the test names.
pub fn other_servers(names: &[&str]) -> Option<Vec<(String, String)>> {
    let Ok(dir) = std::env::var("REDIS_SERVERS_DIR") else {
        missing(&format!(
            "REDIS_SERVERS_DIR is not set (scripts/test installs the servers {names:?} and sets it)"
        ));
        return None;
    };
    let servers = names
        .iter()
        .map(|n| (n.to_string(), format!("{dir}/{n}/bin/redis-server")));
    let servers: Vec<_> = servers.collect();
    for (name, bin) in &servers {
        assert!(
            std::path::Path::new(bin).exists(),
            "{name} is not installed at {bin}"
        );
    }
    Some(servers)
}

/// A prerequisite of a test is missing: outside CI the test says so and passes untested; under
/// `CI=true` it fails, since CI must run what every test names.
pub fn missing(what: &str) {
    assert!(
        std::env::var("CI").is_err(),
        "CI=true, and a prerequisite is missing: {what}"
    );
    eprintln!("SKIPPED: {what}");
}

pub fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// Major version of a redis-server (or valkey-server) binary.
pub fn redis_major(bin: &str) -> u32 {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .expect("redis-server");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split("v=")
        .nth(1)
        .expect("version in redis-server --version");
    v.split('.').next().unwrap().parse().unwrap()
}

/// A redis-server process.
pub struct Server {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    command: (String, Vec<String>),
}

impl Server {
    pub fn master(extra: &[&str]) -> Server {
        Server::start(extra)
    }

    pub fn replica_of(port: u16, extra: &[&str]) -> Server {
        let port = port.to_string();
        let mut args = vec!["--replicaof", "127.0.0.1", &port];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    pub fn start(extra: &[&str]) -> Server {
        Server::start_on(free_port(), extra)
    }

    pub fn start_on(port: u16, extra: &[&str]) -> Server {
        Server::start_bin(&redis_server_bin(), port, extra)
    }

    /// A server from another binary, e.g. one of `other_servers()`.
    pub fn start_bin(bin: &str, port: u16, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--dir",
            dir.path().to_str().unwrap(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            "--logfile",
            "redis.log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if redis_major(bin) >= 7 {
            args.extend(["--enable-debug-command".into(), "yes".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Server {
            port,
            child: None,
            dir,
            command: (bin.to_string(), args),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let (bin, args) = &self.command;
        let child = Command::new(bin)
            .args(args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let port = self.port;
        wait_for(
            &format!("redis-server on port {port} to answer PING"),
            || {
                let pong = Client::try_connect(port).map(|mut c| c.cmd(&["PING"]));
                (
                    matches!(pong, Some(Value::Simple(_)) | Some(Value::Error(_))),
                    pong,
                )
            },
        );
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// `kill -9`; its directory stays, for `restart`.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts again a server stopped with `kill9`, on the same port, directory and flags.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn();
    }

    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// The server's working directory, where SAVE writes dump.rdb.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The relay binary, started with its own data directory.
pub struct Relay {
    pub port: u16,
    pub metrics_port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Relay {
    /// Starts `replica-relay --replicaof 127.0.0.1 <master>` plus `extra`.
    pub fn of(master: u16, extra: &[&str]) -> Relay {
        let port = master.to_string();
        let mut args = vec!["--replicaof", "127.0.0.1", &port];
        args.extend_from_slice(extra);
        Relay::start(&args)
    }

    pub fn start(extra: &[&str]) -> Relay {
        Relay::start_in(None, extra)
    }

    /// Like `start`, with the store in `dir` instead of a fresh temporary directory.
    pub fn start_in(dir: Option<PathBuf>, extra: &[&str]) -> Relay {
        Relay::start_with(dir, &[], extra)
    }

    /// Like `start_in`, with `env` set for the relay's process.
    pub fn start_with(dir: Option<PathBuf>, env: &[(&str, &str)], extra: &[&str]) -> Relay {
        let tmp = tempfile::tempdir().unwrap();
        let mut relay = Relay {
            port: free_port(),
            metrics_port: free_port(),
            dir: dir.unwrap_or_else(|| tmp.path().join("data")),
            args: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            log: tmp.path().join("relay.log"),
            _tmp: tmp,
        };
        relay.spawn();
        relay
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_replica-relay"))
            .args(["--port", &self.port.to_string()])
            .args(["--metrics-port", &self.metrics_port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--log-level", "debug"])
            .args(&self.args)
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting replica-relay");
        self.child = Some(child);
        let port = self.port;
        wait_for("the relay to answer PING", || {
            let pong = Client::try_connect(port).map(|mut c| c.cmd(&["PING"]));
            (pong.is_some(), pong)
        });
    }

    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9`, then start again with the same directory and flags.
    pub fn kill9_and_restart(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        self.spawn();
    }

    /// `kill -9`, then start again with the same directory and these flags instead.
    pub fn kill9_and_restart_with(&mut self, extra: &[&str]) {
        self.args = extra.iter().map(|s| s.to_string()).collect();
        self.kill9_and_restart();
    }

    /// SIGTERM; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap()
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the relay first");
        self.spawn();
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_port, path)
    }

    /// Waits until the relay has stored everything `master` has written; returns that offset.
    pub fn stored(&self, master: &Server) -> u64 {
        let offset = master
            .client()
            .info_num("replication", "master_repl_offset");
        wait_for("the relay to store what the master has", || {
            let got = self.client().info_num("replication", "master_repl_offset");
            (got == offset, got)
        });
        offset as u64
    }

    /// The first and the last entry of the store's time index, `(offset, unix ms)` as
    /// `inspect --json` reports them, once the last covers every byte stored.
    pub fn time_marks(&self) -> ((u64, u64), (u64, u64)) {
        let mark = |m: &serde_json::Value| (m["offset"].as_u64(), m["unix_ms"].as_u64());
        let seen = wait_for("a time mark for every stored byte", || {
            let out = Command::new(env!("CARGO_BIN_EXE_replica-relay"))
                .args(["inspect", "--json"])
                .arg(&self.dir)
                .output()
                .unwrap();
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let store = &report["store"];
            let (first, last) = (mark(&store["log_times"][0]), mark(&store["log_times"][1]));
            let ok = last.0.is_some() && last.0 == store["log_next"].as_u64();
            (ok, (first, last))
        });
        let whole = |m: (Option<u64>, Option<u64>)| (m.0.unwrap(), m.1.unwrap());
        (whole(seen.0), whole(seen.1))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- relay log ----\n{}", self.log());
        }
    }
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

impl Value {
    pub fn text(&self) -> String {
        match self {
            Value::Simple(s) | Value::Error(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        }
    }
}

/// A blocking RESP2 client.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        Client::try_connect(port).unwrap_or_else(|| panic!("connecting to port {port}"))
    }

    pub fn try_connect(port: u16) -> Option<Client> {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Some(Client {
            reader: BufReader::new(s.try_clone().ok()?),
            writer: s,
        })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// The next line that is not empty, without its line ending: a sync's preamble, after the
    /// newlines a waiting replica is sent.
    pub fn read_line(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim();
            if !line.is_empty() {
                return line.to_string();
            }
        }
    }

    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        self.reader.read_exact(&mut out).unwrap();
        out
    }

    pub fn cmd(&mut self, args: &[&str]) -> Value {
        self.send_raw(&encode(args));
        self.read().expect("reply")
    }

    /// Sends all commands in one write, then reads one reply per command.
    pub fn pipeline(&mut self, cmds: &[Vec<String>]) -> Vec<Value> {
        let mut out = Vec::new();
        for c in cmds {
            out.extend(encode(&c.iter().map(String::as_str).collect::<Vec<_>>()));
        }
        self.send_raw(&out);
        cmds.iter().map(|_| self.read().expect("reply")).collect()
    }

    pub fn read(&mut self) -> Option<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches("\r\n").trim_end_matches('\n');
        let (kind, rest) = line.split_at(1.min(line.len()));
        Some(match kind {
            "+" => Value::Simple(rest.into()),
            "-" => Value::Error(rest.into()),
            ":" => Value::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Some(Value::Bulk(None));
                }
                let mut buf = vec![0; n as usize + 2];
                self.reader.read_exact(&mut buf).ok()?;
                buf.truncate(n as usize);
                Value::Bulk(Some(buf))
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Some(Value::Array(None));
                }
                Value::Array(Some((0..n).map(|_| self.read().unwrap()).collect()))
            }
            "" => Value::Simple(String::new()),
            other => panic!("unexpected reply type {other:?} in {line:?}"),
        })
    }

    /// One field of INFO, e.g. `info("replication", "master_link_status")`.
    pub fn info(&mut self, section: &str, field: &str) -> Option<String> {
        let text = self.cmd(&["INFO", section]).text();
        text.lines()
            .find_map(|l| Some(l.strip_prefix(field)?.strip_prefix(':')?.to_string()))
    }

    pub fn info_num(&mut self, section: &str, field: &str) -> i64 {
        self.info(section, field)
            .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
            .parse()
            .unwrap()
    }

    /// `(sync_full, sync_partial_ok)` from INFO stats: the syncs this server has served.
    pub fn syncs(&mut self) -> (i64, i64) {
        (
            self.info_num("stats", "sync_full"),
            self.info_num("stats", "sync_partial_ok"),
        )
    }

    pub fn digest(&mut self) -> String {
        self.cmd(&["DEBUG", "DIGEST"]).text()
    }
}

pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).bytes());
        out.extend(a.as_bytes());
        out.extend(b"\r\n");
    }
    out
}

pub fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Writes a dataset with every data type, TTLs, several dbs, MULTI/EXEC and a script.
/// `tag` keeps the keys of successive calls apart.
pub fn write_mixed(c: &mut Client, tag: &str, n: usize) {
    let mut cmds = Vec::new();
    for db in ["0", "1", "3"] {
        cmds.push(cmd(&["SELECT", db]));
        for i in 0..n {
            let k = |kind: &str| format!("{tag}:{kind}:{i}");
            cmds.push(cmd(&["SET", &k("str"), &format!("value-{i}")]));
            cmds.push(cmd(&["SET", &k("ttl"), "v", "EX", "3600"]));
            cmds.push(cmd(&["RPUSH", &k("list"), "a", "b", &i.to_string()]));
            cmds.push(cmd(&["SADD", &k("set"), "x", "y", &i.to_string()]));
            cmds.push(cmd(&["SADD", &k("intset"), "1", "2", &i.to_string()]));
            cmds.push(cmd(&["ZADD", &k("zset"), "1", "a", "2.5", &i.to_string()]));
            cmds.push(cmd(&["HSET", &k("hash"), "f1", "v1", "f2", &i.to_string()]));
            cmds.push(cmd(&["XADD", &k("stream"), "*", "field", &i.to_string()]));
            cmds.push(cmd(&["INCR", &format!("{tag}:counter")]));
            cmds.push(cmd(&["PFADD", &k("hll"), "a", "b", &i.to_string()]));
            cmds.push(cmd(&["SETBIT", &k("bits"), &(i * 7).to_string(), "1"]));
            cmds.push(cmd(&[
                "GEOADD",
                &k("geo"),
                "13.36",
                "38.11",
                &format!("p{i}"),
            ]));
        }
        let big = "x".repeat(100);
        let fields: Vec<String> = (0..200)
            .flat_map(|j| [format!("f{j}"), big.clone()])
            .collect();
        let mut hset = cmd(&["HSET", &format!("{tag}:bighash")]);
        hset.extend(fields);
        cmds.push(hset);
        cmds.push(cmd(&[
            "XGROUP",
            "CREATE",
            &format!("{tag}:stream:0"),
            "grp",
            "0",
        ]));
        cmds.push(cmd(&[
            "XREADGROUP",
            "GROUP",
            "grp",
            "alice",
            "COUNT",
            "1",
            "STREAMS",
            &format!("{tag}:stream:0"),
            ">",
        ]));
        cmds.push(cmd(&["MULTI"]));
        cmds.push(cmd(&["SET", &format!("{tag}:tx:a"), "1"]));
        cmds.push(cmd(&["LPUSH", &format!("{tag}:tx:b"), "1", "2"]));
        cmds.push(cmd(&["EXEC"]));
        cmds.push(cmd(&[
            "EVAL",
            "redis.call('set', KEYS[1], ARGV[1]); return redis.call('incr', KEYS[2])",
            "2",
            &format!("{tag}:lua"),
            &format!("{tag}:luacount"),
            "hello",
        ]));
        cmds.push(cmd(&["PEXPIRE", &format!("{tag}:str:0"), "7200000"]));
    }
    cmds.push(cmd(&["SELECT", "0"]));
    for reply in c.pipeline(&cmds) {
        assert!(
            !matches!(reply, Value::Error(_)),
            "writing the dataset: {reply:?}"
        );
    }
}

/// A master with a mixed dataset (keys `a:*`), the relay attached to it with `relay_flags`, and
/// one replica of the relay, all in sync.
pub fn chain(relay_flags: &[&str]) -> (Server, Relay, Server) {
    let master = Server::master(&[]);
    let relay = Relay::of(master.port, relay_flags);
    let replica = Server::replica_of(relay.port, &[]);
    write_mixed(&mut master.client(), "a", 20);
    wait_in_sync(&master, &[&replica]);
    (master, relay, replica)
}

/// Waits until every replica's data equals the master's (DEBUG DIGEST) and its offset too.
pub fn wait_in_sync(master: &Server, replicas: &[&Server]) {
    let mut m = master.client();
    for r in replicas {
        let mut rc = r.client();
        wait_for(
            &format!("replica on port {} to match the master", r.port),
            || {
                let (md, rd) = (m.digest(), rc.digest());
                let mo = m.info("replication", "master_repl_offset");
                let ro = rc.info("replication", "slave_repl_offset");
                let link = rc.info("replication", "master_link_status");
                (
                    md == rd && mo == ro && link.as_deref() == Some("up"),
                    (md, rd, mo, ro, link),
                )
            },
        );
    }
}

/// A small tmpfs, for running out of disk space on purpose. Needs root (CI runs as root).
pub struct Tmpfs {
    pub path: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` when not root: mounting is impossible, and the caller says so.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs as root failed");
        Some(Tmpfs {
            path,
            _parent: parent,
        })
    }

    pub fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(ok.success(), "resizing the tmpfs failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Hold points (`REPLICA_RELAY_HOLD`): the first process to reach an armed point waits there
/// until the test lets it go.
pub struct Holds(tempfile::TempDir);

impl Holds {
    pub fn arm(points: &[&str]) -> Holds {
        let dir = tempfile::tempdir().unwrap();
        for p in points {
            std::fs::write(dir.path().join(format!("{p}.armed")), "").unwrap();
        }
        Holds(dir)
    }

    /// Arms `point` now, in processes already running.
    pub fn arm_now(&self, point: &str) {
        std::fs::write(self.0.path().join(format!("{point}.armed")), "").unwrap();
    }

    pub fn env(&self) -> (&'static str, String) {
        ("REPLICA_RELAY_HOLD", self.0.path().display().to_string())
    }

    /// Waits until a process is held at `point`; its PID.
    pub fn reached(&self, point: &str) -> u32 {
        let path = self.0.path().join(point);
        wait_for(&format!("a process held at {point}"), || {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            (pid.is_some(), pid)
        })
        .unwrap()
    }

    pub fn release(&self, point: &str) {
        std::fs::write(self.0.path().join(format!("{point}.go")), "").unwrap();
    }
}

//! `--format rdb`: the restored AOF loaded by a redis-server child (no TCP port, a unix socket
//! in a private temporary directory, no persistence of its own but the AOF it loads) and saved
//! as `dump.rdb`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long the server may take to load the AOF before the conversion gives up.
const LOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// What the server took.
#[derive(Debug, Default)]
pub struct ServerRun {
    /// Its peak RSS (VmHWM), in bytes.
    pub peak_rss: u64,
    pub elapsed: Duration,
}

/// Loads `aof_dir/appendonly.aof` into `server`, saves `out/dump.rdb`, removes `aof_dir`. With
/// `max_rss`, a server whose RSS grows past it is stopped and the conversion fails.
pub fn convert(
    server: &Path,
    aof_dir: &Path,
    out: &Path,
    max_rss: Option<u64>,
) -> Result<(PathBuf, ServerRun)> {
    let started = Instant::now();
    let mut child = Loaded::start(server, aof_dir, Load::Aof, &[])?;
    let saved = child.save(max_rss);
    let peak_rss = memory(child.child.id(), "VmHWM:").unwrap_or(0);
    drop(child);
    saved?;
    let rdb = out.join("dump.rdb");
    std::fs::rename(aof_dir.join("dump.rdb"), &rdb)
        .with_context(|| format!("moving the saved RDB to {}", rdb.display()))?;
    std::fs::remove_dir_all(aof_dir)?;
    let elapsed = started.elapsed();
    Ok((rdb, ServerRun { peak_rss, elapsed }))
}

/// What a server child loads from its directory.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// `appendonly.aof`.
    Aof,
    /// `dump.rdb`.
    Rdb,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Aof => "AOF",
            Load::Rdb => "RDB",
        }
    }
}

/// `DEBUG DIGEST` of the data that `server` loads from `dir` (the server is stopped after).
pub fn digest(server: &Path, dir: &Path, load: Load) -> Result<String> {
    let debug: &[&str] = if major_version(server)? >= 7 {
        &["--enable-debug-command", "local"]
    } else {
        &[]
    };
    let mut child = Loaded::start(server, dir, load, debug)?;
    child.wait_loaded(None)?;
    let reply = request(&child.socket(), &["DEBUG", "DIGEST"])?;
    reply
        .strip_prefix('+')
        .map(str::to_string)
        .with_context(|| format!("DEBUG DIGEST answered {reply}"))
}

/// The major version of a server binary, from `--version`.
fn major_version(server: &Path) -> Result<u32> {
    let out = Command::new(server)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", server.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    crate::compat::server_version(&text)
        .and_then(|(_, v)| v.split('.').next()?.parse().ok())
        .with_context(|| format!("{} --version said {text:?}", server.display()))
}

/// A server child with no TCP port, working in `dir` and listening on a unix socket in a
/// private directory of its own under the system's temporary directory, persisting nothing of
/// its own but what it was started to load; killed when dropped.
struct Loaded {
    child: Child,
    dir: PathBuf,
    load: Load,
    /// Where the socket is: a unix socket's path must fit in 108 bytes, which a store deep in
    /// a volume (`/var/lib/kubelet/pods/<uid>/volumes/...`) does not leave; mode 0700.
    sockets: tempfile::TempDir,
}

impl Loaded {
    fn start(server: &Path, dir: &Path, load: Load, extra: &[&str]) -> Result<Loaded> {
        let sockets = tempfile::Builder::new()
            .prefix("replica-relay-")
            .tempdir()
            .context("making a directory for the server's unix socket")?;
        let socket = sockets.path().join("redis.sock");
        let mut command = Command::new(server);
        command
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .arg("--dir")
            .arg(dir)
            .args(["--save", "", "--dbfilename", "dump.rdb"])
            .args(match load {
                Load::Aof => ["--appendonly", "yes"],
                Load::Rdb => ["--appendonly", "no"],
            })
            .args(["--logfile", "server.log"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // The server goes when this process goes, however it goes: the relay's compactor kills
        // a run it gives up on, and the server must not outlive it holding the dataset in
        // memory.
        // SAFETY: prctl(2) is async-signal-safe, as a pre_exec hook must be.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| {
            format!(
                "starting {} (give another with --redis-server)",
                server.display()
            )
        })?;
        Ok(Loaded {
            child,
            dir: dir.to_path_buf(),
            load,
            sockets,
        })
    }

    fn socket(&self) -> PathBuf {
        self.sockets.path().join("redis.sock")
    }

    /// Waits for the server to answer PING (it answers -LOADING while it loads). With `max_rss`,
    /// fails once its RSS passes it.
    fn wait_loaded(&mut self, max_rss: Option<u64>) -> Result<()> {
        let started = Instant::now();
        let socket = self.socket();
        let mut last = String::new();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                bail!(
                    "the server exited ({status}) before loading the {}:\n{log}",
                    self.load.name()
                );
            }
            if let Ok(reply) = request(&socket, &["PING"]) {
                if reply.starts_with("+PONG") {
                    return Ok(());
                }
                last = reply;
            }
            too_big(&self.child, max_rss)?;
            if started.elapsed() > LOAD_TIMEOUT {
                bail!("the server did not load its data within {LOAD_TIMEOUT:?} (last: {last})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the load, then SAVE.
    fn save(&mut self, max_rss: Option<u64>) -> Result<()> {
        self.wait_loaded(max_rss)?;
        too_big(&self.child, max_rss)?;
        let reply = request(&self.socket(), &["SAVE"])?;
        if !reply.starts_with("+OK") {
            bail!("SAVE failed: {reply}");
        }
        too_big(&self.child, max_rss)
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of /proc/PID/status in bytes (`VmRSS:`, `VmHWM:`); `None` where there is none.
fn memory(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix(field))?;
    Some(
        kb.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?
            * 1024,
    )
}

/// `rdb`'s replication identity set to `replid` at `offset` in database `db`, in place.
pub fn set_identity(rdb: &Path, replid: &str, offset: u64, db: u32) -> Result<()> {
    let tmp = rdb.with_extension("rdb.identity");
    let id = crate::decode::ReplIdentity {
        replid: replid.to_string(),
        offset,
        stream_db: db,
    };
    let src = std::fs::File::open(rdb)?;
    let dst = std::fs::File::create(&tmp)?;
    crate::decode::set_identity(src, &dst, &id)
        .context("setting the RDB's replication identity")?;
    dst.sync_all()?;
    std::fs::rename(&tmp, rdb)?;
    Ok(())
}

/// An error once the server's peak RSS (VmHWM) has passed `max_rss`: checked while it loads,
/// and after, since a load may finish between two checks.
fn too_big(child: &Child, max_rss: Option<u64>) -> Result<()> {
    if let (Some(max), Some(peak)) = (max_rss, memory(child.id(), "VmHWM:"))
        && peak > max
    {
        bail!(
            "the dataset does not fit: the server's RSS reached {peak} bytes, over the bound of {max}"
        );
    }
    Ok(())
}

fn request(socket: &Path, args: &[&str]) -> Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(out.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

//! `--format rdb`: the restored AOF loaded by a redis-server child (no TCP port, a unix socket
//! in the output's temporary directory, no persistence of its own but the AOF it loads) and
//! saved as `dump.rdb`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long the server may take to load the AOF before the conversion gives up.
const LOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Loads `aof_dir/appendonly.aof` into `server`, saves `out/dump.rdb`, removes `aof_dir`.
pub fn convert(server: &Path, aof_dir: &Path, out: &Path) -> Result<PathBuf> {
    let socket = aof_dir.join("redis.sock");
    let mut child = Command::new(server)
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .arg("--dir")
        .arg(aof_dir)
        .args([
            "--appendonly",
            "yes",
            "--save",
            "",
            "--dbfilename",
            "dump.rdb",
        ])
        .args(["--logfile", "server.log"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (give another with --redis-server)",
                server.display()
            )
        })?;
    let saved = save(&mut child, &socket, aof_dir);
    let _ = child.kill();
    let _ = child.wait();
    saved?;
    let rdb = out.join("dump.rdb");
    std::fs::rename(aof_dir.join("dump.rdb"), &rdb)
        .with_context(|| format!("moving the saved RDB to {}", rdb.display()))?;
    std::fs::remove_dir_all(aof_dir)?;
    Ok(rdb)
}

/// Waits for the server to answer PING (it answers -LOADING while it loads), then SAVE.
fn save(child: &mut Child, socket: &Path, dir: &Path) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            bail!("the server exited ({status}) before loading the AOF:\n{log}");
        }
        if let Ok(reply) = request(socket, "PING") {
            if reply.starts_with("+PONG") {
                break;
            }
            last = reply;
        }
        if started.elapsed() > LOAD_TIMEOUT {
            bail!("the server did not load the AOF within {LOAD_TIMEOUT:?} (last: {last})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let reply = request(socket, "SAVE")?;
    if !reply.starts_with("+OK") {
        bail!("SAVE failed: {reply}");
    }
    Ok(())
}

fn request(socket: &Path, command: &str) -> Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    stream.write_all(format!("*1\r\n${}\r\n{command}\r\n", command.len()).as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

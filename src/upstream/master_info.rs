//! Reads the master's `master_repl_offset` with `INFO replication` on a separate, short-lived
//! connection every few seconds, so the relay's lag behind its master is exact in bytes. This
//! connection is an ordinary client: it never touches the replication link.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tracing::debug;

use crate::config::MasterAddr;
use crate::relay::Relay;
use crate::resp;

/// Longest INFO reply read.
const MAX_REPLY: usize = 1 << 20;
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(relay: Arc<Relay>) {
    let Some(every) = relay.config.master_info_interval else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = relay.shutdown.cancelled() => return,
        }
        let Some(master) = relay.master_addr() else {
            continue;
        };
        match tokio::time::timeout(POLL_TIMEOUT, master_offset(&relay, &master)).await {
            Ok(Ok(offset)) => relay.metrics.upstream_master_offset.set(offset),
            Ok(Err(e)) => debug!("Reading INFO replication from {master}: {e:#}"),
            Err(_) => debug!("Reading INFO replication from {master}: timed out"),
        }
    }
}

async fn master_offset(relay: &Relay, master: &MasterAddr) -> Result<i64> {
    let sock = TcpStream::connect((master.host.as_str(), master.port)).await?;
    let mut conn = BufReader::new(sock);
    let cfg = &relay.config;
    if let Some(pass) = &cfg.masterauth {
        let auth = match &cfg.masteruser {
            Some(user) => resp::command(&[b"AUTH", user.as_bytes(), pass.as_bytes()]),
            None => resp::command(&[b"AUTH", pass.as_bytes()]),
        };
        conn.get_mut().write_all(&auth).await?;
        let reply = reply(&mut conn).await?;
        if reply.starts_with('-') {
            bail!("AUTH refused: {reply}");
        }
    }
    conn.get_mut()
        .write_all(&resp::command(&[b"INFO", b"replication"]))
        .await?;
    let info = reply(&mut conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .context("no master_repl_offset in INFO replication")?
        .trim()
        .parse()
        .context("malformed master_repl_offset")
}

/// One reply: a status or error line, or a bulk string.
async fn reply(conn: &mut BufReader<TcpStream>) -> Result<String> {
    let mut line = String::new();
    (&mut *conn).take(1024).read_line(&mut line).await?;
    let line = line.trim_end().to_string();
    let Some(len) = line.strip_prefix('$') else {
        return Ok(line);
    };
    let len: usize = len.parse().context("malformed bulk length")?;
    if len > MAX_REPLY {
        bail!("reply of {len} bytes is too long");
    }
    let mut body = vec![0u8; len + 2];
    conn.read_exact(&mut body).await?;
    body.truncate(len);
    Ok(String::from_utf8_lossy(&body).into_owned())
}

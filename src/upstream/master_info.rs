//! Reads the master's `master_repl_offset` and role with `INFO replication` on a separate,
//! short-lived connection every few seconds, so the relay's lag behind its master is exact in
//! bytes and a relay that follows a replica (a failover it missed) shows it. This
//! connection is an ordinary client: it never touches the replication link. The offset goes
//! into the link's status, where INFO, `/status` and the metrics read it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tracing::debug;

use super::Upstream;
use super::wire::{Auth, MasterConn};
use crate::config::MasterAddr;

const POLL_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(up: Arc<Upstream>) {
    let Some(every) = up.settings.master_info_interval else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = up.shutdown.cancelled() => return,
        }
        let Some(master) = up.control.master() else {
            continue;
        };
        match tokio::time::timeout(POLL_TIMEOUT, master_offset(&up, &master)).await {
            Ok(Ok((offset, replica))) => up.link.update(|l| {
                l.master_offset = Some(offset);
                l.master_offset_read = Some(std::time::Instant::now());
                l.master_is_replica = replica;
            }),
            Ok(Err(e)) => debug!("Reading INFO replication from {master}: {e:#}"),
            Err(_) => debug!("Reading INFO replication from {master}: timed out"),
        }
    }
}

/// The master's `master_repl_offset`, and whether it says it is a replica itself.
async fn master_offset(up: &Upstream, master: &MasterAddr) -> Result<(u64, bool)> {
    let mut conn = MasterConn::connect(&up.dialer, master, POLL_TIMEOUT).await?;
    let auth = Auth {
        user: up.settings.masteruser.as_deref(),
        pass: up.settings.masterauth.as_deref(),
    };
    let info = conn.info(auth, b"replication").await?;
    let offset = info
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .context("no master_repl_offset in INFO replication")?
        .trim()
        .parse()
        .context("malformed master_repl_offset")?;
    Ok((offset, info.lines().any(|l| l.trim() == "role:slave")))
}

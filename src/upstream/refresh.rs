//! Snapshot refresh: when the log since the snapshot in service has grown past a threshold, a
//! second, short connection asks the master for a fresh snapshot (`REPLCONF rdb-only 1` +
//! `PSYNC ? -1`). Once verified and once the log reaches its offset, it replaces the old one and
//! retention may drop the log before it. The master forks once per refresh, never per replica;
//! replicas that are streaming see nothing of it. With `--snapshot-source local` the compactor
//! makes the fresh snapshot instead (`compact`), and the master is asked only when it fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{info, warn};

use super::Link;
use super::wire::PsyncReply;
use super::{SnapshotOrigin, Upstream};
use crate::config::{MasterAddr, SnapshotRefresh, SnapshotSource};
use crate::store::{Slot, Verification};

/// With `auto`, refresh when the log since the snapshot exceeds the snapshot's size, but not
/// before it reaches this much: each refresh costs the master a fork.
const AUTO_MIN: u64 = 64 << 20;
/// Wait after a failed refresh before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Starts refreshes from the replication link's one-second tick and cancels the one running
/// when the link ends.
#[derive(Default)]
pub(super) struct Refresher {
    running: Option<(JoinHandle<bool>, DropGuard)>,
    not_before: Option<Instant>,
}

impl Refresher {
    pub(super) async fn poll(&mut self, up: &Arc<Upstream>, master: &MasterAddr) {
        if let Some((handle, _)) = &self.running {
            if !handle.is_finished() {
                // A backup asked meanwhile is served by the snapshot under way: one fork.
                up.control.take_snapshot_request();
                return;
            }
            let (handle, _) = self.running.take().expect("checked");
            if !handle.await.unwrap_or(false) {
                self.not_before = Some(Instant::now() + RETRY_AFTER);
            }
        }
        let wanted = up.control.take_snapshot_request();
        // A refresh that failed lately is not retried sooner for a backup: the master first.
        if self.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if wanted {
            info!("Snapshot refresh: a backup asked for the data as it is now");
        } else if !due(up) {
            return;
        }
        let token = CancellationToken::new();
        let guard = token.clone().drop_guard();
        let (up, master) = (up.clone(), master.clone());
        up.link.update(|l| l.refresh_requested = true);
        let handle = tokio::spawn(async move {
            let result = tokio::select! {
                r = refresh(&up, &master) => r,
                _ = token.cancelled() => Err(anyhow::anyhow!("the link with the master ended")),
            };
            up.link.update(|l| l.refresh_requested = false);
            if let Err(e) = &result {
                warn!("Snapshot refresh failed: {e:#}; the current snapshot stays in service");
                let _ = up.writer.abort_snapshot(Slot::Refresh).await;
            }
            result.is_ok()
        });
        self.running = Some((handle, guard));
    }
}

/// Whether the log since the snapshot in service has outgrown the threshold.
fn due(up: &Upstream) -> bool {
    let state = up.store.view();
    let Some(ident) = &state.ident else {
        return false;
    };
    if state.refreshing {
        return false;
    }
    if let Verification::Corrupt(_) = state.verification {
        return true;
    }
    let threshold = match up.settings.snapshot_refresh {
        SnapshotRefresh::Never => return false,
        SnapshotRefresh::Auto => ident.snapshot_size.max(AUTO_MIN),
        SnapshotRefresh::After(n) => n,
    };
    state.next.saturating_sub(ident.snapshot_offset + 1) > threshold
}

/// A fresh snapshot from the compactor when the source is local, else (or when it fails, once)
/// from the master.
async fn refresh(up: &Arc<Upstream>, master: &MasterAddr) -> Result<()> {
    up.metrics.snapshot_refreshes.inc();
    let local = up.compactor.get().source == Some(SnapshotSource::Local);
    if local && !matches!(up.store.view().verification, Verification::Corrupt(_)) {
        match super::compact::run(up).await {
            Ok(()) => return Ok(()),
            Err(e) => super::compact::failed(&e),
        }
    }
    fetch(up, master).await?;
    up.compactor.update(|c| c.origin = SnapshotOrigin::Master);
    Ok(())
}

async fn fetch(up: &Arc<Upstream>, master: &MasterAddr) -> Result<()> {
    let state = up.store.view();
    let since = state
        .ident
        .as_ref()
        .map_or(0, |i| state.next.saturating_sub(i.snapshot_offset + 1));
    match state.verification {
        Verification::Corrupt(_) => info!(
            "Snapshot refresh: the stored snapshot failed verification; asking {master} for a fresh snapshot"
        ),
        _ => info!(
            "Snapshot refresh: the log since the snapshot is {since} bytes; asking {master} for a fresh snapshot"
        ),
    }
    let mut link = Link::connect(up, master, Slot::Refresh).await?;
    link.handshake().await?;
    let PsyncReply::Full { replid, offset } = link.psync().await? else {
        bail!("the master did not start a full sync");
    };
    let (bytes, facts) = link.receive_snapshot(replid, offset).await?;
    info!(
        "Snapshot refresh: received and verified {bytes} bytes ({}{:04}) taken at offset {offset}",
        facts.family, facts.rdb_version
    );
    Ok(())
}

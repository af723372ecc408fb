//! Backups through the relay: `redis-cli --rdb` (`REPLCONF rdb-only 1`, then SYNC or PSYNC).
//! A user asking for a backup asks for the data as it is now, and the stored snapshot may be
//! hours old. So the relay serves it only when it covers the current offset (nothing was
//! written since) or is younger than `--rdb-only-max-age`; otherwise it fetches a fresh one
//! from the master (a snapshot refresh: one fork, shared by every backup asked while it is
//! under way, and the new snapshot also goes into service for the replicas).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Context;
use crate::link::LinkState;
use crate::store::View;

/// What to do with a backup request.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// The stored snapshot will do, for this reason.
    Serve(String),
    /// Ask the master for a fresh snapshot and serve that.
    Fetch,
    /// Neither is possible: the error for the client.
    Refuse(String),
}

pub fn choose(cx: &Context, state: &View) -> Choice {
    let Some(ident) = state.ident.as_ref() else {
        return Choice::Refuse("NOMASTERLINK no snapshot in service yet".into());
    };
    if ident.snapshot_offset >= state.master_repl_offset() {
        return Choice::Serve("it covers the current offset: nothing was written since".into());
    }
    let age = snapshot_age(cx);
    let shown = age.map_or("of unknown age".to_string(), |a| {
        format!("{} s old", a.as_secs())
    });
    if let (Some(max), Some(age)) = (cx.config.rdb_only_max_age, age)
        && age <= max
    {
        return Choice::Serve(format!("it is {shown}, within --rdb-only-max-age"));
    }
    if cx.link.status().state != LinkState::Connected {
        return Choice::Refuse(format!(
            "ERR replica-relay cannot make a current backup: it has no link with its master to fetch a fresh snapshot, and the stored one is {shown} and {} bytes of writes behind (accept it with --rdb-only-max-age)",
            state.master_repl_offset() - ident.snapshot_offset
        ));
    }
    Choice::Fetch
}

/// Age of the snapshot in service, from its `ctime` AUX field (once decoded).
pub fn snapshot_age(cx: &Context) -> Option<Duration> {
    let stats = cx.store.snapshot_stats()?;
    let ctime: u64 = stats.aux.get("ctime")?.parse().ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(now.saturating_sub(ctime)))
}

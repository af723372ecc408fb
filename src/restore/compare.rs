//! `replica-relay compare --dir <store> --rdb <master.rdb>`: whether the data the relay serves
//! at an offset is the master's own data at that offset.
//!
//! The master's side is a snapshot the operator takes of it (`redis-cli -h <master> --rdb
//! FILE`: one fork there), which says in its AUX fields the offset it is of. The relay's side
//! is what a replica that full-syncs from the relay holds at that offset: the snapshot the
//! relay serves and its stored stream up to there, rebuilt as `restore` does. A server child of
//! the master's family loads each and gives its `DEBUG DIGEST`; the two must be equal. Nothing
//! the relay made is trusted here: a compacted snapshot with a write in the wrong database, a
//! stored stream that is not the master's, a cut at the wrong offset, all show as a difference.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::to_rdb::{self, Load};
use crate::store;

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The relay's --dir.
    #[arg(long)]
    dir: PathBuf,
    /// A snapshot of the master (`redis-cli -h <master> -p <port> --rdb FILE`): its repl-id and
    /// repl-offset AUX fields say which moment of the master's history it is.
    #[arg(long)]
    rdb: PathBuf,
    /// The server that loads both sides: of the master's family and major version [default:
    /// redis-server on PATH].
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    redis_server: PathBuf,
    /// How long to wait for the relay's log to reach the snapshot's offset, in seconds.
    #[arg(long, default_value_t = 60)]
    wait: u64,
}

pub fn run(args: CompareArgs) -> Result<()> {
    let master = crate::decode::identity_of(
        std::fs::File::open(&args.rdb)
            .with_context(|| format!("opening {}", args.rdb.display()))?,
    )
    .with_context(|| format!("reading the AUX fields of {}", args.rdb.display()))?
    .with_context(|| {
        format!(
            "{} says no replication offset (repl-id, repl-offset): take it from the master with redis-cli --rdb",
            args.rdb.display()
        )
    })?;
    reached(&args.dir, &master.replid, master.offset, args.wait)?;
    let work = std::env::temp_dir().join(format!(
        "replica-relay-compare-{}-{}",
        std::process::id(),
        store::now_ms()
    ));
    let result = compare(&args, master.offset, &work);
    let _ = std::fs::remove_dir_all(&work);
    let (relay, theirs) = result?;
    if relay != theirs {
        bail!(
            "the relay's data at offset {} differs from the master's: DEBUG DIGEST {relay} against the master's {theirs}",
            master.offset
        );
    }
    println!(
        "the relay's data at offset {} is the master's (DEBUG DIGEST {relay})",
        master.offset
    );
    Ok(())
}

/// Waits until the store's log holds offset `offset` of the history `replid`.
fn reached(dir: &Path, replid: &str, offset: u64, wait: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        let summary = store::describe(dir)?;
        let ours = summary.replid.eq_ignore_ascii_case(replid)
            || (summary.replid2.eq_ignore_ascii_case(replid)
                && offset as i64 <= summary.second_replid_offset);
        if !ours {
            bail!(
                "the snapshot is of history {replid}, the relay's store of {} (and {} up to {}): the master changed since",
                summary.replid,
                summary.replid2,
                summary.second_replid_offset
            );
        }
        if summary.log_next > offset {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the relay's log ends at offset {} after {wait} s, before the snapshot's {offset}",
                summary.log_next - 1
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The digests of the relay's data at `offset` and of the master's snapshot.
fn compare(args: &CompareArgs, offset: u64, work: &Path) -> Result<(String, String)> {
    let (ours, theirs) = (work.join("relay"), work.join("master"));
    std::fs::create_dir_all(&theirs)?;
    let cut = super::rebuild(&args.dir, offset, &ours)?;
    if cut != offset {
        bail!("the relay's log has no command boundary at offset {offset} (the last is at {cut})");
    }
    std::fs::copy(&args.rdb, theirs.join("dump.rdb"))
        .with_context(|| format!("copying {}", args.rdb.display()))?;
    let relay = to_rdb::digest(&args.redis_server, &ours, Load::Aof)?;
    let master = to_rdb::digest(&args.redis_server, &theirs, Load::Rdb)?;
    Ok((relay, master))
}

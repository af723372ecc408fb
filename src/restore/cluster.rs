//! `restore --dir A --dir B ... [--at TIME] --out OUT`: every shard of a Redis Cluster, each
//! from its own relay's store, restored to one moment, into `OUT/shard-<i>` in the order the
//! stores were given, with `OUT/cluster.json` saying what each holds.
//!
//! Each relay's time index says when its stream's bytes arrived, to within
//! `store::RESOLUTION_MS` (PROTOCOL §12), so cutting every shard's stream at the same moment T
//! gives the cluster as it was at T: on each shard what its primary had sent by T, less at most
//! that resolution's worth, the relays' clocks agreeing (one machine, or NTP's few
//! milliseconds). "now" is read once, so it is one moment for every shard.
//!
//! A shard whose relay heard nothing from its primary around T (the relay stopped, or its link
//! down: a primary sends its replicas a PING every `repl-ping-replica-period`, 10 seconds, even
//! when idle) does not know its data at T; the restore refuses it rather than give that shard
//! another moment.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{RestoreArgs, parse_time, restore, time_window};
use crate::store::{self, TimeMark};

/// The longest silence of a primary's link around T that still tells the shard's data at T:
/// its PING period with room for a slow second.
const QUIET_MS: u64 = 15_000;

/// Restores every store in `args.dir` to the moment `--at` (or now).
pub(super) fn restore_all(args: RestoreArgs) -> Result<()> {
    if args.offset.is_some() || !args.before.is_empty() || args.repl_id.is_some() {
        bail!(
            "with several --dir (the shards of a cluster) the restore is to one moment, --at: offsets, --before and --repl-id belong to one shard's stream"
        );
    }
    if args.list {
        return list(&args.dir);
    }
    let at = match args.at.as_deref() {
        None | Some("now") => store::now_ms(),
        Some(t) => parse_time(t)?,
    };
    let out = args
        .out
        .clone()
        .context("--out DIR is needed (or --list)")?;
    // Every shard is checked before any is written: one that cannot tell its data at T stops
    // the restore before it leaves a partial cluster behind.
    let received: Vec<u64> = (args.dir.iter().enumerate())
        .map(|(i, dir)| {
            heard_around(dir, at).with_context(|| format!("shard {i} ({})", dir.display()))
        })
        .collect::<Result<_>>()?;
    let mut shards = Vec::new();
    for ((i, dir), received) in args.dir.iter().enumerate().zip(received) {
        let shard_out = out.join(format!("shard-{i}"));
        let offset = restore(RestoreArgs {
            dir: vec![dir.clone()],
            at: Some(format!("@{}.{:03}", at / 1000, at % 1000)),
            out: Some(shard_out.clone()),
            ..args.clone()
        })
        .with_context(|| format!("shard {i} ({})", dir.display()))?;
        shards.push(serde_json::json!({
            "dir": dir,
            "out": shard_out,
            "offset": offset,
            // When the relay had received the stream up to the cut: within the time index's
            // resolution of T where the primary was writing.
            "received_by": store::utc_ms(received),
            "received_by_ms": received,
            "nodes": crate::shard_file::recorded(dir)?,
        }));
    }
    let manifest = serde_json::json!({
        "at": store::utc_ms(at),
        "at_ms": at,
        "resolution_ms": store::RESOLUTION_MS,
        "shards": shards,
    });
    std::fs::write(
        out.join("cluster.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    eprintln!(
        "restored {} shards to {} into {}",
        args.dir.len(),
        store::utc_ms(at),
        out.display()
    );
    Ok(())
}

/// When the relay of `dir` had received what it holds at `at` (its last record not after it);
/// an error when it heard nothing from its primary for longer than `QUIET_MS` around `at`:
/// between that record and the first after it (or `at`).
fn heard_around(dir: &Path, at: u64) -> Result<u64> {
    let marks = marks(dir)?;
    let before = marks.iter().rev().find(|m| m.unix_ms <= at);
    let after = marks.iter().find(|m| m.unix_ms > at);
    let Some(before) = before else {
        bail!(
            "{} is before the first time its log knows{}",
            store::utc_ms(at),
            marks.first().map_or(String::new(), |m| format!(
                " ({})",
                store::utc_ms(m.unix_ms)
            ))
        );
    };
    let until = after.map_or(at, |m| m.unix_ms.min(at));
    if until - before.unix_ms > QUIET_MS {
        bail!(
            "its relay received nothing from the primary from {} to {}{}: its data at {} is not known (was the relay stopped or its link down?); choose another --at",
            store::utc_ms(before.unix_ms),
            after.map_or("now".into(), |m| store::utc_ms(m.unix_ms)),
            if after.is_some() { "" } else { " (its last)" },
            store::utc_ms(at)
        );
    }
    Ok(before.unix_ms)
}

fn marks(dir: &Path) -> Result<Vec<TimeMark>> {
    Ok(store::time_index(dir, &store::history::segments(dir)?))
}

/// Each shard's window, then the moments every shard can be restored to.
fn list(dirs: &[PathBuf]) -> Result<()> {
    let mut common: Option<(u64, u64)> = None;
    for (i, dir) in dirs.iter().enumerate() {
        let Some((first, last)) = time_window(dir)? else {
            bail!(
                "shard {i} ({}): its log has no time index yet",
                dir.display()
            );
        };
        println!(
            "shard {i} ({}): restorable from {} to {}",
            dir.display(),
            store::utc_ms(first),
            store::utc_ms(last)
        );
        common = Some(match common {
            None => (first, last),
            Some((a, b)) => (a.max(first), b.min(last)),
        });
    }
    match common {
        Some((a, b)) if a <= b => println!(
            "the whole cluster: from {} to {}",
            store::utc_ms(a),
            store::utc_ms(b)
        ),
        _ => println!("the whole cluster: no moment every shard holds"),
    }
    Ok(())
}

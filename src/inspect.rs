//! `replica-relay inspect <file.rdb | relay dir>`: what a snapshot (or a relay's store) holds,
//! for an operator: format, AUX fields, keys per db and type, expiries, the largest keys,
//! whether the checksum holds; for a store also the identity and the log range.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::decode::{SnapshotStats, analyze, check_file, counts};
use crate::store::{self, StoreSummary};

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// An RDB file, or a relay's --dir.
    path: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    file: PathBuf,
    bytes: u64,
    /// "ok", "disabled" (zero trailer: the master runs with rdbchecksum no), or what is wrong.
    checksum: String,
    /// Keys in every db together.
    keys: u64,
    #[serde(flatten)]
    stats: SnapshotStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<StoreSummary>,
}

/// Prints the report; fails (exit status 1) when the snapshot is damaged.
pub fn run(args: InspectArgs) -> Result<()> {
    let (file, store) = if args.path.is_dir() {
        let summary = store::describe(&args.path)?;
        (summary.snapshot.clone(), Some(summary))
    } else {
        (args.path.clone(), None)
    };
    let report = inspect(&file, store)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    if let Some(d) = report.store.as_ref().and_then(|s| s.log_damage.first()) {
        bail!(
            "{} is damaged: log segment {} fails its checksum in bytes {}..{}",
            args.path.display(),
            d.segment,
            d.from,
            d.to
        );
    }
    let checksum_ok = matches!(report.checksum.as_str(), "ok" | "disabled");
    match (checksum_ok, &report.stats.error) {
        (true, None) => Ok(()),
        (true, Some(e)) => bail!("{} is damaged: {e}", file.display()),
        (false, None) => bail!("{} is damaged: {}", file.display(), report.checksum),
        (false, Some(e)) => bail!("{} is damaged: {}; {e}", file.display(), report.checksum),
    }
}

fn inspect(file: &Path, store: Option<StoreSummary>) -> Result<Report> {
    let open = || std::fs::File::open(file).with_context(|| format!("opening {}", file.display()));
    let bytes = open()?.metadata()?.len();
    let checksum = match check_file(open()?, |_| ()).map(|facts| facts.checksummed) {
        Ok(true) => "ok".to_string(),
        Ok(false) => "disabled".to_string(),
        Err(e) => e,
    };
    let stats = analyze(open()?);
    Ok(Report {
        file: file.into(),
        bytes,
        checksum,
        keys: stats.keys(),
        stats,
        store,
    })
}

fn text(r: &Report) -> String {
    let s = &r.stats;
    let mut out = String::new();
    let _ = writeln!(out, "snapshot   {} ({} bytes)", r.file.display(), r.bytes);
    let _ = writeln!(
        out,
        "format     {} (decoded as RDB version {})",
        s.signature, s.rdb_version
    );
    let _ = writeln!(out, "checksum   {}", r.checksum);
    for (k, v) in &s.aux {
        let _ = writeln!(out, "aux        {k} = {v}");
    }
    let _ = writeln!(out, "keys       {}", s.keys());
    for (db, d) in &s.dbs {
        let _ = writeln!(
            out,
            "  db{db:<6} keys={} expires={} {}",
            d.keys,
            d.expires,
            counts(&d.types, " ")
        );
    }
    if !s.not_decoded.is_empty() {
        let _ = writeln!(
            out,
            "counted by type only (values not decoded, expiries unknown): {}",
            counts(&s.not_decoded, " ")
        );
    }
    if !s.largest.is_empty() {
        let _ = writeln!(out, "largest keys (serialized bytes)");
        for k in &s.largest {
            let _ = writeln!(
                out,
                "  {:>12}  db{:<3} {:<7} {}",
                k.bytes, k.db, k.kind, k.key
            );
        }
    }
    if let Some(e) = &s.error {
        let _ = writeln!(out, "error      {e}");
    }
    if let Some(st) = &r.store {
        let _ = writeln!(
            out,
            "store      replid {} (replid2 {}, valid up to {})",
            st.replid, st.replid2, st.second_replid_offset
        );
        let _ = writeln!(
            out,
            "           snapshot taken at offset {}",
            st.snapshot_offset
        );
        let _ = writeln!(
            out,
            "           log {}..{} ({} segments, {} bytes)",
            st.log_first, st.log_next, st.log_segments, st.log_bytes
        );
        if let Some((first, last)) = &st.log_times {
            let _ = writeln!(
                out,
                "           stored from {} (offset {}) to {} (offset {})",
                store::utc(first.unix_ms),
                first.offset,
                store::utc(last.unix_ms),
                last.offset
            );
        }
        for d in &st.log_damage {
            let _ = writeln!(
                out,
                "damage     log segment {} fails its checksum in bytes {}..{} (offsets {}..{})",
                d.segment,
                d.from,
                d.to,
                d.segment + d.from,
                d.segment + d.to
            );
        }
    }
    out
}

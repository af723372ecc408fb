//! A store rebuilt from the archive alone, for `restore --from`: the newest line's snapshots
//! a restore can start from and its log, each object checked against the manifest's CRC32C as
//! it arrives, laid out as the relay lays out its own `--dir`, so the restore that follows is
//! the local one, byte for byte.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::Archive;
use crate::store::holdings;
use crate::store::{Identity, NULL_REPLID, RestorePoint};

/// Fills the empty directory `dir` from the archive at `url`.
pub fn stage(url: &str, endpoint: Option<&str>, dir: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let archive = Archive::open(url, endpoint)?;
        let manifest = archive.manifest().await?;
        let Some(line) = manifest
            .lines
            .iter()
            .rev()
            .find(|l| !l.restorable().is_empty())
        else {
            bail!("the archive {url} holds no snapshot with its log yet");
        };
        for sub in ["snapshots", "log"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let points = line.restorable();
        let total: u64 = points.iter().map(|s| s.object.size).sum::<u64>()
            + line.segments.iter().map(|s| s.log.size).sum::<u64>();
        eprintln!(
            "fetching line {} of {url}: {} snapshots and {} log segments, {total} bytes",
            line.number,
            points.len(),
            line.segments.len()
        );
        for point in &points {
            let path = holdings::snapshot_file(dir, &point.name);
            archive.download(&point.object, &path).await?;
        }
        for segment in &line.segments {
            let [log, index, times] = holdings::segment_files(dir, segment.start);
            archive.download(&segment.log, &log).await?;
            archive.download(&segment.index, &index).await?;
            archive.download(&segment.times, &times).await?;
        }
        let (newest, older) = points.split_last().expect("restorable");
        let older: Vec<RestorePoint> = older
            .iter()
            .map(|s| RestorePoint {
                name: s.name.clone(),
                offset: s.offset,
                size: s.object.size,
            })
            .collect();
        let current = Identity {
            replid: line.replid.clone(),
            replid2: NULL_REPLID.to_string(),
            second_replid_offset: -1,
            snapshot: newest.name.clone(),
            snapshot_offset: newest.offset,
            snapshot_size: newest.object.size,
        };
        holdings::stage(dir, current, &older)
    })
}

//! A store rebuilt from the archive alone, for `restore --from`: the newest line's snapshots
//! a restore can start from and its log, each object checked against the manifest's CRC32C as
//! it arrives, laid out as the relay lays out its own `--dir`, so the restore that follows is
//! the local one, byte for byte.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tracing::info;

use super::Archive;
use crate::store::holdings;
use crate::store::{Identity, NULL_REPLID, RestorePoint};

/// What a store rebuilt from an archive holds.
pub struct Filled {
    pub line: u32,
    /// The newest snapshot's offset, and where the log ends (the next offset to ask for).
    pub snapshot_offset: u64,
    pub end: u64,
    pub bytes: u64,
}

/// Fills the empty directory `dir` from the archive at `url`, for a restore.
pub fn stage(url: &str, endpoint: Option<&str>, dir: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(fill(url, endpoint, dir)).map(|_| ())
}

/// `--bootstrap-from`: a relay whose `--dir` holds no store yet starts from the archive's
/// newest snapshot and log, so that it asks its master to continue from the archive's end
/// instead of asking for a full sync. The files arrive in `<dir>/.bootstrap` and move into
/// place with the identity last: a start cut short begins again.
pub async fn bootstrap(url: &str, endpoint: Option<&str>, dir: &Path) -> Result<Option<Filled>> {
    if dir.join("identity").exists() {
        return Ok(None);
    }
    let staged = dir.join(".bootstrap");
    if staged.exists() {
        std::fs::remove_dir_all(&staged)
            .with_context(|| format!("removing {}", staged.display()))?;
    }
    let filled = match fill(url, endpoint, &staged).await {
        Ok(filled) => filled,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e);
        }
    };
    for sub in ["snapshots", "log"] {
        if dir.join(sub).exists() {
            std::fs::remove_dir_all(dir.join(sub))?;
        }
        std::fs::rename(staged.join(sub), dir.join(sub))?;
    }
    for file in ["restore-points", "identity"] {
        std::fs::rename(staged.join(file), dir.join(file))
            .with_context(|| format!("moving {file} into {}", dir.display()))?;
    }
    std::fs::remove_dir_all(&staged)?;
    Ok(Some(filled))
}

/// Fills `dir` (made if missing) with the newest line of the archive that a restore can start
/// from. The relay archiving there may delete old objects meanwhile (`--archive-window`): an
/// object named and then missing sends it back to the manifest, a few times.
async fn fill(url: &str, endpoint: Option<&str>, dir: &Path) -> Result<Filled> {
    let archive = Archive::open(url, endpoint)?;
    let mut tries = 0;
    loop {
        match fill_once(&archive, url, dir).await {
            Err(e) if tries < 3 && gone(&e) => {
                tries += 1;
                info!("{e:#}: the archive's window took it meanwhile; reading the manifest again");
            }
            done => return done,
        }
    }
}

/// The error says an object is not there.
fn gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<object_store::Error>(),
            Some(object_store::Error::NotFound { .. })
        )
    })
}

async fn fill_once(archive: &Archive, url: &str, dir: &Path) -> Result<Filled> {
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
        let sub = dir.join(sub);
        if sub.exists() {
            std::fs::remove_dir_all(&sub)?; // a try before this one
        }
        std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
    }
    let points = line.restorable();
    let bytes: u64 = points.iter().map(|s| s.object.size).sum::<u64>()
        + line.segments.iter().map(|s| s.log.size).sum::<u64>();
    info!(
        "Fetching line {} of {url}: {} snapshots and {} log segments, {bytes} bytes",
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
    holdings::stage(dir, current, &older)?;
    Ok(Filled {
        line: line.number,
        snapshot_offset: newest.offset,
        end: line.end().expect("restorable"),
        bytes,
    })
}

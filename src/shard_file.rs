//! The Redis Cluster shard a relay follows, kept in the store's directory (`cluster-shard`, one
//! `node <id>` line per node of the shard) so that a restart follows the same shard whatever
//! `--cluster-shard` says, and so that a restore of the whole cluster can say which shard each
//! store held.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};

const FILE: &str = "cluster-shard";

/// The file's path in `dir`, for the log.
pub fn path(dir: &Path) -> std::path::PathBuf {
    dir.join(FILE)
}

/// The ids of the shard's nodes recorded in `dir`; empty before the first start that found it.
pub fn recorded(dir: &Path) -> Result<BTreeSet<String>> {
    match std::fs::read_to_string(path(dir)) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix("node "))
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path(dir).display())),
    }
}

/// Records the shard's nodes atomically: a temporary file, fsynced, renamed. Blocking: call it
/// off the runtime.
pub fn record(dir: &Path, members: &BTreeSet<String>) -> Result<()> {
    let text: String = members.iter().map(|id| format!("node {id}\n")).collect();
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_is_recorded_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(recorded(dir.path()).unwrap().is_empty());
        let members: BTreeSet<String> = ["a1", "b1"].map(String::from).into();
        record(dir.path(), &members).unwrap();
        assert_eq!(recorded(dir.path()).unwrap(), members);
    }
}

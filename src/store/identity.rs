//! The identity file: upstream's replication ids and the snapshot in service.
//!
//! It is the store's commit point. It is rewritten whole (tmp file, fsync, rename, fsync of the
//! directory), so after a crash it names either the old snapshot or the new one, never half.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Redis' null replid: forty zeros.
pub const NULL_REPLID: &str = "0000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub replid: String,
    pub replid2: String,
    /// The highest PSYNC offset accepted with `replid2`: the offset after the last byte of that
    /// history (Redis' `second_replid_offset`); -1 when there is no replid2.
    pub second_replid_offset: i64,
    /// File name of the snapshot in service, under `snapshots/`.
    pub snapshot: String,
    /// Upstream's offset at the snapshot (the `+FULLRESYNC` offset X0).
    pub snapshot_offset: u64,
    pub snapshot_size: u64,
}

impl Identity {
    pub fn load(path: &Path) -> Result<Option<Identity>> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text)
            .with_context(|| format!("parsing {}", path.display()))
            .map(Some)
    }

    fn parse(text: &str) -> Result<Identity> {
        let field = |name: &str| -> Result<&str> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .with_context(|| format!("missing field {name}"))
        };
        let id = Identity {
            replid: field("replid")?.to_string(),
            replid2: field("replid2")?.to_string(),
            second_replid_offset: field("second_replid_offset")?.parse()?,
            snapshot: field("snapshot")?.to_string(),
            snapshot_offset: field("snapshot_offset")?.parse()?,
            snapshot_size: field("snapshot_size")?.parse()?,
        };
        if !is_replid(&id.replid) || !is_replid(&id.replid2) {
            bail!("replid is not 40 hex characters");
        }
        if id.snapshot.contains('/') {
            bail!("snapshot name {:?} is not a plain file name", id.snapshot);
        }
        Ok(id)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join("identity.tmp");
        let text = format!(
            "replid {}\nreplid2 {}\nsecond_replid_offset {}\nsnapshot {}\nsnapshot_offset {}\nsnapshot_size {}\n",
            self.replid,
            self.replid2,
            self.second_replid_offset,
            self.snapshot,
            self.snapshot_offset,
            self.snapshot_size
        );
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join("identity"))?;
        sync_dir(dir)
    }
}

pub fn is_replid(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync of directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity {
            replid: "a".repeat(40),
            replid2: NULL_REPLID.into(),
            second_replid_offset: -1,
            snapshot: format!("{}-15.rdb", "a".repeat(40)),
            snapshot_offset: 15,
            snapshot_size: 1234,
        };
        id.save(dir.path()).unwrap();
        assert_eq!(
            Identity::load(&dir.path().join("identity")).unwrap(),
            Some(id)
        );
        assert_eq!(Identity::load(&dir.path().join("missing")).unwrap(), None);
        fs::write(dir.path().join("bad"), "replid xyz\n").unwrap();
        assert!(Identity::load(&dir.path().join("bad")).is_err());
    }
}

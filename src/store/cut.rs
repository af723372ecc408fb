//! The stream at a command boundary, worked out from the relay's own log: the database it is
//! in there. The compactor, a child process, says where it cut and writes the database into
//! the snapshot it made (`repl-stream-db`); a replica that loads that snapshot applies the
//! stream after it in that database until the next SELECT. The relay checks the child's word
//! against this before putting the snapshot in service.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::history;
use crate::feed::{Command, Scanner};

/// The database the stream is in at `end` (the offset after a command), scanning from the
/// snapshot `snapshot` taken at `snapshot_offset`. An error when `end` is not a command
/// boundary, or falls inside MULTI … EXEC: no snapshot is cut there.
pub fn stream_db_at(dir: &Path, snapshot: &Path, snapshot_offset: u64, end: u64) -> Result<u32> {
    let file =
        std::fs::File::open(snapshot).with_context(|| format!("opening {}", snapshot.display()))?;
    let mut db = crate::decode::stream_db(&file)
        .with_context(|| format!("reading the AUX fields of {}", snapshot.display()))?
        .unwrap_or(0);
    let from = snapshot_offset + 1;
    let mut scanner = Scanner::at(from);
    let (mut depth, mut last_end) = (0u32, from);
    history::read_log(dir, from, end, |piece| {
        let start = scanner.offset();
        scanner.scan(piece, |i, cmd| {
            match cmd {
                Command::Select(n) => db = n,
                Command::Data("multi") => depth += 1,
                Command::Data("exec") => depth = depth.saturating_sub(1),
                _ => {}
            }
            last_end = start + i as u64;
        })?;
        Ok(())
    })?;
    if last_end != end {
        bail!(
            "offset {end} is not the end of a command in the log (the last one before it ends at {last_end})"
        );
    }
    if depth > 0 {
        bail!("offset {end} is inside MULTI … EXEC");
    }
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log of `commands` from offset 1, after an empty snapshot taken at offset 0 whose
    /// stream continues in database `db`.
    fn store_with(
        db: u32,
        commands: &[&[&str]],
    ) -> (tempfile::TempDir, std::path::PathBuf, Vec<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join("snap.rdb");
        let mut rdb = b"REDIS0010".to_vec();
        let (k, v) = ("repl-stream-db", db.to_string());
        rdb.push(0xFA);
        rdb.push(k.len() as u8);
        rdb.extend_from_slice(k.as_bytes());
        rdb.push(v.len() as u8);
        rdb.extend_from_slice(v.as_bytes());
        rdb.push(0xFF);
        rdb.extend_from_slice(&[0; 8]);
        std::fs::write(&snapshot, rdb).unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        let (mut log, mut ends) = (Vec::new(), Vec::new());
        for args in commands {
            log.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in *args {
                log.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
            ends.push(1 + log.len() as u64);
        }
        std::fs::write(dir.path().join("log").join(format!("{:020}.seg", 1)), log).unwrap();
        (dir, snapshot, ends)
    }

    #[test]
    fn the_database_follows_the_selects_from_the_snapshots_own() {
        let (dir, snap, ends) = store_with(
            3,
            &[&["SET", "a", "1"], &["SELECT", "5"], &["SET", "b", "2"]],
        );
        assert_eq!(stream_db_at(dir.path(), &snap, 0, 1).unwrap(), 3);
        assert_eq!(stream_db_at(dir.path(), &snap, 0, ends[0]).unwrap(), 3);
        assert_eq!(stream_db_at(dir.path(), &snap, 0, ends[2]).unwrap(), 5);
    }

    #[test]
    fn no_cut_inside_a_command_or_a_transaction() {
        let (dir, snap, ends) = store_with(
            0,
            &[&["MULTI"], &["SELECT", "2"], &["SET", "a", "1"], &["EXEC"]],
        );
        let inside = stream_db_at(dir.path(), &snap, 0, ends[2]).unwrap_err();
        assert!(format!("{inside:#}").contains("MULTI"), "{inside:#}");
        let torn = stream_db_at(dir.path(), &snap, 0, ends[2] + 3).unwrap_err();
        assert!(
            format!("{torn:#}").contains("not the end of a command"),
            "{torn:#}"
        );
        assert_eq!(stream_db_at(dir.path(), &snap, 0, ends[3]).unwrap(), 2);
    }
}

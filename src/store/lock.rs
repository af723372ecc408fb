//! Locks that the kernel releases when their holder dies, however it dies (kill -9, the OOM
//! killer): never a PID that another process may have by then.
//!
//! - `<dir>/LOCK`: one relay per data directory, held for the process's life (as raft-engine,
//!   etcd and PostgreSQL lock theirs). Two relays on one `--dir` would both write its log.
//! - `<dir>/pins/<name>`: a tool reading the store (`restore`, the compactor) holds its pin
//!   locked; retention honours only the pins whose lock is held.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Takes `<dir>/LOCK` for the life of the returned file, with this process's PID inside for
/// whoever finds it held.
pub(super) fn data_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "{} is in use by another relay (process {}, which holds {}): two relays on one directory would both write its log; stop that one first, or give this one another --dir",
                dir.display(),
                holder.trim(),
                path.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

/// Creates `path` holding `text`, locked by the returned file: written and locked under a
/// temporary name first, so that no reader ever sees it unlocked.
pub(super) fn locked_file(path: &Path, text: &str) -> Result<File> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("creating {}", path.display()))?;
    Ok(file)
}

/// Whether some process holds `path` locked. A file nobody holds is a leftover of one that
/// died; an error (the file went meanwhile) counts as not held.
pub(super) fn is_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_of_the_data_directory_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = data_dir(dir.path()).unwrap();
        let err = format!("{:#}", data_dir(dir.path()).unwrap_err());
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        assert!(err.contains("in use by another relay"), "{err}");
        drop(first);
        data_dir(dir.path()).expect("free once its holder is gone");
    }

    #[test]
    fn a_locked_file_is_held_until_its_holder_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        let held = locked_file(&path, "42\n").unwrap();
        assert!(is_held(&path));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "42\n");
        drop(held);
        assert!(!is_held(&path));
        assert!(!is_held(&dir.path().join("absent")));
    }
}

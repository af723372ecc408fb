//! The master a `CONFIG REWRITE` chose, kept in the store's directory so that a restart follows
//! the master Sentinel (or an operator) moved the relay to, not the one in its flags.
//!
//! The file also names the master the flags gave when it was written: if the flags name another
//! one at the next start, the operator changed them since, and the flags win. Otherwise the
//! file wins, like redis.conf after Sentinel's `CONFIG REWRITE`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::MasterAddr;

const FILE: &str = "replicaof.conf";

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// What a rewrite recorded: the master followed then, and the one the flags named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub followed: Option<MasterAddr>,
    pub configured: Option<MasterAddr>,
}

/// Writes `followed` (and the flags' master) atomically: a temporary file, fsynced, renamed.
/// Blocking: call it off the runtime.
pub fn write(dir: &Path, rewritten: &Rewritten) -> Result<()> {
    let line = |m: &Option<MasterAddr>| match m {
        Some(m) => format!("{} {}", m.host, m.port),
        None => "no one".into(),
    };
    let text = format!(
        "# Written by CONFIG REWRITE; replica-relay follows this master after a restart,\n# unless its flags name another one than `configured`.\nreplicaof {}\nconfigured {}\n",
        line(&rewritten.followed),
        line(&rewritten.configured)
    );
    let tmp = dir.join(format!("{FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path(dir))?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("writing {}", path(dir).display()))
}

/// Reads what a rewrite recorded; `None` when there is no file.
pub fn read(dir: &Path) -> Result<Option<Rewritten>> {
    let text = match std::fs::read_to_string(path(dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path(dir).display())),
    };
    let field = |name: &str| -> Result<Option<MasterAddr>> {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .with_context(|| format!("no `{name}` line in {}", path(dir).display()))?;
        match value.split_whitespace().collect::<Vec<_>>()[..] {
            ["no", "one"] => Ok(None),
            [host, port] => MasterAddr::parse(host, port).map(Some),
            _ => bail!("malformed `{name}` line in {}", path(dir).display()),
        }
    };
    Ok(Some(Rewritten {
        followed: field("replicaof")?,
        configured: field("configured")?,
    }))
}

/// The master to follow at start, and why, from the flags and what a rewrite recorded.
pub fn choose(
    configured: Option<MasterAddr>,
    rewritten: Option<Rewritten>,
) -> (Option<MasterAddr>, String) {
    let show = |m: &Option<MasterAddr>| match m {
        Some(m) => m.to_string(),
        None => "no master (REPLICAOF NO ONE)".into(),
    };
    match rewritten {
        None => (configured, "from the configuration".into()),
        Some(r) if r.configured != configured => (
            configured.clone(),
            format!(
                "from the configuration, which changed since CONFIG REWRITE recorded {} (then configured: {})",
                show(&r.followed),
                show(&r.configured)
            ),
        ),
        Some(r) => {
            let why = format!(
                "recorded by CONFIG REWRITE in {FILE} (the configuration names {})",
                show(&configured)
            );
            (r.followed, why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Option<MasterAddr> {
        Some(MasterAddr::parse("10.0.0.1", &port.to_string()).unwrap())
    }

    #[test]
    fn written_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let r = Rewritten {
            followed: addr(7000),
            configured: addr(6379),
        };
        write(dir.path(), &r).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(r));
        let none = Rewritten {
            followed: None,
            configured: None,
        };
        write(dir.path(), &none).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(none));
    }

    #[test]
    fn the_rewrite_wins_unless_the_flags_changed_since() {
        let rewritten = Some(Rewritten {
            followed: addr(7000),
            configured: addr(6379),
        });
        assert_eq!(choose(addr(6379), rewritten.clone()).0, addr(7000));
        let (chosen, why) = choose(addr(6400), rewritten);
        assert_eq!(chosen, addr(6400));
        assert!(why.contains("changed since"), "{why}");
        assert_eq!(choose(addr(6379), None).0, addr(6379));
    }
}

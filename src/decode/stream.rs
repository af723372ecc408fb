//! What the replication stream carries, counted as it is stored: commands by name (a bounded
//! set), commands per db, MULTI/EXEC blocks, the master's PINGs and GETACKs, bytes and rate.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::feed::Command;

#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamStats {
    pub commands: BTreeMap<&'static str, u64>,
    /// Data commands per db, from the SELECTs in the stream.
    pub dbs: BTreeMap<u32, u64>,
    pub multi_blocks: u64,
    pub pings: u64,
    pub getacks: u64,
    pub bytes: u64,
    pub bytes_per_sec: f64,
    #[serde(skip)]
    db: Option<u32>,
    #[serde(skip)]
    sampled: Option<(Instant, u64)>,
}

impl StreamStats {
    pub fn count(&mut self, cmd: Command) {
        match cmd {
            Command::Getack => self.getacks += 1,
            Command::Ping => self.pings += 1,
            Command::Select(db) => self.db = Some(db),
            Command::Data(name) => {
                *self.commands.entry(name).or_default() += 1;
                self.multi_blocks += u64::from(name == "multi");
                if let Some(db) = self.db {
                    *self.dbs.entry(db).or_default() += 1;
                }
            }
        }
    }

    /// Called about once a second: updates the byte rate.
    pub fn sample(&mut self) {
        let now = Instant::now();
        if let Some((at, bytes)) = self.sampled {
            let secs = now.duration_since(at).as_secs_f64();
            if secs > 0.0 {
                self.bytes_per_sec = (self.bytes - bytes) as f64 / secs;
            }
        }
        self.sampled = Some((now, self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_name_db_and_kind() {
        let mut s = StreamStats::default();
        for c in [
            Command::Data("set"),
            Command::Select(2),
            Command::Data("multi"),
            Command::Data("set"),
            Command::Data("exec"),
            Command::Ping,
            Command::Getack,
            Command::Data("other"),
        ] {
            s.count(c);
        }
        assert_eq!(s.commands["set"], 2);
        assert_eq!(s.dbs[&2], 4, "commands after SELECT 2");
        assert_eq!((s.multi_blocks, s.pings, s.getacks), (1, 1, 1));
    }
}

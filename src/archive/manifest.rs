//! The archive's manifest: what was uploaded, in order, with each object's checksum. It is
//! written after every object, so an object is archived once the manifest names it: an upload
//! cut by kill -9 is sent again, nothing named is.
//!
//! The archive holds lines: one replication history, as the store held it, without a gap.
//! A line begins when the store's history does not continue the archive's (a full sync that
//! replaced the history, or log trimmed before it was uploaded); a restore reads one line.

use serde::{Deserialize, Serialize};

/// The manifest's own name, under the archive's prefix.
pub const NAME: &str = "manifest.json";

/// What this version of the relay writes and understands.
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Line {
    pub number: u32,
    /// The history's replication ID as of the last upload (it changes at a failover the
    /// history went on through, as a replica's does).
    pub replid: String,
    pub snapshots: Vec<Snapshot>,
    /// The log's segments, consecutive: each starts where the one before it ends.
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    /// The store's file name (under `snapshots/`).
    pub name: String,
    /// Upstream's offset at the snapshot: the log after it starts at `offset + 1`.
    pub offset: u64,
    pub object: Object,
    /// When it was uploaded (Unix milliseconds).
    pub uploaded_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    /// The segment's bytes, its checksum index and its time index.
    pub log: Object,
    pub index: Object,
    pub times: Object,
    pub uploaded_ms: u64,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.start + self.log.size
    }
}

/// One uploaded object: its key under the archive's prefix, size and CRC32C.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub crc32c: u32,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Manifest> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("the archive's {NAME} is damaged: {e}"))?;
        if manifest.format != FORMAT {
            anyhow::bail!(
                "the archive's {NAME} has format {}; this relay reads format {FORMAT}",
                manifest.format
            );
        }
        // A snapshot's name becomes a file name where the archive is fetched: a name that
        // could leave that directory (a manifest written by someone else) is refused.
        let names = manifest.lines.iter().flat_map(|l| &l.snapshots);
        if let Some(s) = names.map(|s| &s.name).find(|n| !plain_file_name(n)) {
            anyhow::bail!("the archive's {NAME} names a snapshot {s:?}, not a plain file name");
        }
        Ok(manifest)
    }

    pub fn new() -> Manifest {
        Manifest {
            format: FORMAT,
            lines: Vec::new(),
        }
    }

    pub fn line(&self) -> Option<&Line> {
        self.lines.last()
    }

    /// Starts a line for the history `replid`. A last line that holds nothing yet (its first
    /// upload failed) is begun again rather than left empty behind the new one.
    pub fn begin_line(&mut self, replid: &str) -> &mut Line {
        if self.lines.last().is_some_and(Line::is_empty) {
            self.lines.pop();
        }
        let number = self.lines.last().map_or(1, |l| l.number + 1);
        self.lines.push(Line {
            number,
            replid: replid.to_string(),
            ..Line::default()
        });
        self.lines.last_mut().expect("just pushed")
    }
}

impl Manifest {
    /// `--archive-window`: takes out what no moment from `horizon_ms` on needs, and returns
    /// its objects for deleting. A moment is restored from the newest snapshot before it, so the
    /// newest snapshot uploaded before the horizon stays with everything after it; older
    /// snapshots, the log before that one's, and whole lines a newer line covers from before the
    /// horizon go. A snapshot's moment is not after its upload: the rule errs on keeping.
    pub fn expire(&mut self, horizon_ms: u64) -> Vec<Object> {
        let mut gone = Vec::new();
        let covering = self.lines.iter().rposition(|l| {
            l.snapshots
                .iter()
                .any(|s| s.uploaded_ms < horizon_ms && !l.restorable().is_empty())
        });
        if let Some(first) = covering {
            for line in self.lines.drain(..first) {
                gone.extend(line.objects());
            }
        }
        let Some(line) = self.lines.first_mut() else {
            return gone;
        };
        let keep = line
            .restorable()
            .into_iter()
            .filter(|s| s.uploaded_ms < horizon_ms)
            .map(|s| s.offset)
            .max();
        let Some(keep) = keep else { return gone };
        line.snapshots.retain(|s| {
            let old = s.offset < keep;
            if old {
                gone.push(s.object.clone());
            }
            !old
        });
        line.segments.retain(|seg| {
            let old = seg.end() <= keep + 1;
            if old {
                gone.extend([seg.log.clone(), seg.index.clone(), seg.times.clone()]);
            }
            !old
        });
        gone
    }
}

/// A name of one file in one directory: no separator, not hidden, not `.` or `..`.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
}

impl Line {
    fn objects(self) -> Vec<Object> {
        let snapshots = self.snapshots.into_iter().map(|s| s.object);
        let segments = (self.segments.into_iter()).flat_map(|s| [s.log, s.index, s.times]);
        snapshots.chain(segments).collect()
    }

    /// Where the next segment must start; `None` before the first.
    pub fn end(&self) -> Option<u64> {
        self.segments.last().map(Segment::end)
    }

    /// The first log offset the line still needs: its end, or before its first segment the log
    /// after its oldest snapshot; `None` while it holds nothing.
    pub fn next(&self) -> Option<u64> {
        (self.end()).or_else(|| self.snapshots.iter().map(|s| s.offset + 1).min())
    }

    fn is_empty(&self) -> bool {
        self.snapshots.is_empty() && self.segments.is_empty()
    }

    /// The key prefix of the line's objects.
    pub fn prefix(&self) -> String {
        format!("lines/{:06}", self.number)
    }

    /// The snapshots a restore can start from: those whose log the line holds (the log after
    /// one starts in the line's first segment or later, and not after its end), oldest first.
    pub fn restorable(&self) -> Vec<&Snapshot> {
        let (Some(first), Some(end)) = (self.segments.first(), self.end()) else {
            return Vec::new();
        };
        let mut points: Vec<_> = self
            .snapshots
            .iter()
            .filter(|s| s.offset + 1 >= first.start && s.offset < end)
            .collect();
        points.sort_by_key(|s| s.offset);
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, size: u64) -> Object {
        Object {
            key: key.into(),
            size,
            crc32c: 7,
        }
    }

    fn segment(start: u64, size: u64) -> Segment {
        Segment {
            start,
            log: object("l", size),
            index: object("i", 1),
            times: object("t", 1),
            uploaded_ms: 0,
        }
    }

    fn snapshot(offset: u64) -> Snapshot {
        Snapshot {
            name: format!("x-{offset}.rdb"),
            offset,
            object: object("s", 10),
            uploaded_ms: 0,
        }
    }

    #[test]
    fn a_line_restores_from_the_snapshots_its_log_covers() {
        let mut m = Manifest::new();
        let line = m.begin_line("a");
        line.snapshots = vec![snapshot(500), snapshot(99), snapshot(2000), snapshot(40)];
        line.segments = vec![segment(100, 400), segment(500, 1000)];
        let offsets: Vec<u64> = line.restorable().iter().map(|s| s.offset).collect();
        // 40's log starts before the line's; 2000 is past its end, its log not uploaded yet.
        assert_eq!(offsets, vec![99, 500]);
        assert_eq!(line.end(), Some(1500));
        let text = serde_json::to_vec(&m).unwrap();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert_eq!(m.begin_line("b").prefix(), "lines/000002");
        // Line 2 got nothing (its first upload failed): the next line begun is line 2 again.
        assert_eq!(m.begin_line("c").number, 2);
        assert_eq!((m.lines.len(), m.lines[1].replid.as_str()), (2, "c"));
        assert_eq!(m.lines[1].next(), None);
        assert_eq!(m.lines[0].next(), Some(1500));
    }

    #[test]
    fn the_window_keeps_the_newest_snapshot_before_it_and_everything_after() {
        let at = |mut s: Snapshot, ms| {
            s.uploaded_ms = ms;
            s
        };
        let mut m = Manifest::new();
        let old = m.begin_line("a");
        old.snapshots = vec![at(snapshot(9), 10)];
        old.segments = vec![segment(10, 90)];
        let line = m.begin_line("b");
        line.snapshots = vec![
            at(snapshot(99), 100),
            at(snapshot(500), 200),
            at(snapshot(900), 300),
        ];
        line.segments = vec![segment(100, 400), segment(500, 400), segment(900, 100)];
        // Before the second line's first snapshot: nothing goes.
        assert!(m.clone().expire(100).is_empty());
        let gone = m.expire(250);
        // The first line (covered by the second from before the horizon), the snapshot at 99
        // and the log before 501 go; the snapshot at 500 (the newest before the horizon) stays.
        assert_eq!(gone.len(), 1 + 3 + 1 + 3);
        assert_eq!(m.lines.len(), 1);
        let line = &m.lines[0];
        let kept: Vec<u64> = line.snapshots.iter().map(|s| s.offset).collect();
        assert_eq!(kept, vec![500, 900]);
        assert_eq!(line.segments[0].start, 500);
        assert_eq!(line.restorable().len(), 2);
    }

    #[test]
    fn a_damaged_or_newer_manifest_is_refused_in_words() {
        let e = Manifest::parse(b"{\"format\":1,\"lines\":[").unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
        let e = Manifest::parse(b"{\"format\":9,\"lines\":[]}").unwrap_err();
        assert!(e.to_string().contains("format 9"), "{e}");
        let mut m = Manifest::new();
        m.begin_line("a").snapshots = vec![snapshot(5)];
        m.lines[0].snapshots[0].name = "../../etc/cron.d/x".into();
        let e = Manifest::parse(&serde_json::to_vec(&m).unwrap()).unwrap_err();
        assert!(e.to_string().contains("not a plain file name"), "{e}");
    }
}

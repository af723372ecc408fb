//! The stream as it arrives, on the upstream link's own task: cut into commands, counted, and,
//! under `appendfsync everysec|no`, forwarded to downstream sessions before the writer thread
//! has written it, the way a redis-server replica feeds its sub-replicas before its AOF is
//! fsynced. A byte then crosses one thread boundary from the upstream socket to a replica's
//! socket (the link's task waking the sessions), not two (the writer thread between them).
//!
//! What is acknowledged upstream still follows the writer alone (`WriterStatus::ack`): a
//! replica may run ahead of the store, never the master's view of it. Under `always` nothing is
//! forwarded here: the writer publishes after the fsync.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::Shared;
use crate::decode::StreamStats;
use crate::feed::{Command, Scanner};

/// A stream chunk, scanned, for the writer thread.
pub(super) struct Scanned {
    pub(super) data: Bytes,
    /// Ends of the commands it completes, relative to its start.
    pub(super) ends: Vec<usize>,
    pub(super) getacks: u64,
    /// The stream broke here (a protocol error): `data` holds what came before.
    pub(super) error: Option<String>,
    /// When it arrived from upstream (milliseconds since the epoch), for the time index.
    pub(super) arrived_ms: u64,
}

pub(super) struct Intake {
    scanner: Scanner,
    /// Offset of the next byte to arrive.
    offset: u64,
    /// Offset after the last complete command.
    boundary: u64,
    /// Set by a protocol error: nothing more is forwarded until the link starts again.
    broken: bool,
    feed: StreamStats,
}

impl Intake {
    pub(super) fn at(offset: u64) -> Intake {
        Intake {
            scanner: Scanner::at(offset),
            offset,
            boundary: offset,
            broken: false,
            feed: StreamStats::default(),
        }
    }

    /// Starts again at `offset` (a new history, or a link resuming where the log ends), keeping
    /// the counts.
    pub(super) fn restart(&mut self, offset: u64) {
        let feed = std::mem::take(&mut self.feed);
        *self = Intake {
            feed,
            ..Intake::at(offset)
        };
    }

    /// Cuts `data` into commands and counts them.
    pub(super) fn scan(&mut self, data: Bytes, shared: &Shared) -> Scanned {
        let arrived_ms = super::times::now_ms();
        let start = self.offset;
        let (mut ends, mut getacks, mut last_write) = (Vec::new(), 0, None);
        let feed = &mut self.feed;
        let scanned = self.scanner.scan(&data, |end, cmd| {
            ends.push(end);
            getacks += u64::from(cmd == Command::Getack);
            if matches!(cmd, Command::Data(_)) {
                last_write = Some(start + end as u64);
            }
            feed.count(cmd);
        });
        if let Some(at) = last_write {
            shared.last_write.fetch_max(at, Ordering::Relaxed);
        }
        self.feed.bytes += data.len() as u64;
        let (data, error) = match scanned {
            Ok(()) => (data, None),
            Err(e) => {
                let good = ends.last().copied().unwrap_or(0);
                (data.slice(..good), Some(e.to_string()))
            }
        };
        self.offset += data.len() as u64;
        if let Some(&end) = ends.last() {
            self.boundary = start + end as u64;
        }
        Scanned {
            data,
            ends,
            getacks,
            error,
            arrived_ms,
        }
    }

    /// Makes `chunk` visible downstream up to its last complete command, before it is written.
    /// The commands before a protocol error are forwarded, nothing after it.
    pub(super) fn forward(&mut self, chunk: &Scanned, shared: &Shared) {
        if self.broken {
            return;
        }
        self.broken = chunk.error.is_some();
        if chunk.data.is_empty() {
            return;
        }
        let start = self.offset - chunk.data.len() as u64;
        let data = chunk.data.clone();
        let boundary = self.boundary;
        let published = shared.quietly(|st| st.stream.forward(&mut st.view, start, data, boundary));
        if published {
            shared.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// The counts as of now, with the rate since the last sample: once a second.
    pub(super) fn sample(&mut self) -> StreamStats {
        self.feed.sample();
        self.feed.clone()
    }
}

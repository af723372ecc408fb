//! What readers may see of the stream, and the one type that changes it: how far they may read
//! (`View::next`), which history they read (`View::epoch`, `first`), the memory tail, and how
//! far the segment files hold the bytes (`written`). Its rules follow `appendfsync`:
//! - `everysec`, `no`: the intake forwards complete commands before the writer stores them
//!   (`forward`); what the writer stores then only moves `written`;
//! - `always`: nothing is forwarded; the writer keeps what it stored in the tail (`stored`) and
//!   publishes it after its fsync (`publish`);
//! - under all three, bytes forwarded but not stored are taken back (`take_back`), a new
//!   history starts empty at its snapshot's offset with a new epoch (`new_history`, and
//!   `new_id` for the master's new replication ID), and the backlog's start moves on
//!   (`trimmed`).

use bytes::Bytes;

use super::tail::{Chunks, Tail};
use super::{Identity, TAIL_BYTES, View};
use crate::config::Fsync;

#[derive(Debug)]
pub(super) struct Visible {
    fsync: Fsync,
    tail: Tail,
    /// Offset after the bytes written to the segment files: readers behind the memory tail
    /// read the files up to here (the intake forwards ahead of it).
    written: u64,
}

/// Where a reader at an offset finds its next bytes.
pub(super) enum Found {
    /// Nothing to read yet.
    Nothing,
    Memory(Chunks),
    /// In the segment files, up to this offset.
    Disk(u64),
    /// Forwarded, gone from the memory tail, and not written yet: the writer wakes the
    /// reader once it has written more.
    NotWritten,
}

impl Visible {
    pub(super) fn new(fsync: Fsync) -> Visible {
        Visible {
            fsync,
            tail: Tail::default(),
            written: 0,
        }
    }

    /// Whether the intake forwards the stream before the writer stores it.
    pub(super) fn forwards(fsync: Fsync) -> bool {
        fsync != Fsync::Always
    }

    /// What recovery found: the identity, and the log `first..next`, all of it written.
    pub(super) fn recovered(
        &mut self,
        view: &mut View,
        ident: Option<Identity>,
        log: Option<(u64, u64)>,
    ) {
        view.ident = ident;
        view.epoch = 1;
        if let Some((first, next)) = log {
            (view.first, view.next, self.written) = (first, next, next);
        }
    }

    /// The intake makes `data` (from `start`) visible up to `boundary`, the end of its last
    /// complete command, before it is stored; only with a snapshot in service. Returns whether
    /// readers have more to read.
    pub(super) fn forward(
        &mut self,
        view: &mut View,
        start: u64,
        data: Bytes,
        boundary: u64,
    ) -> bool {
        if !Visible::forwards(self.fsync) || view.ident.is_none() {
            return false;
        }
        self.tail.push(start, data, TAIL_BYTES);
        let moved = view.next != boundary;
        view.next = boundary;
        moved
    }

    /// The writer wrote `data` at `offset` to the segment files.
    pub(super) fn stored(&mut self, offset: u64, data: Bytes) {
        self.written = offset + data.len() as u64;
        if !Visible::forwards(self.fsync) {
            self.tail.push(offset, data, TAIL_BYTES);
        }
    }

    /// The writer publishes what it stored, up to `boundary`, after its fsync: under `always`
    /// only, and only while a log is open. Returns whether readers have more to read.
    pub(super) fn publish(&mut self, view: &mut View, boundary: u64, log_open: bool) -> bool {
        if Visible::forwards(self.fsync) || !log_open || view.next == boundary {
            return false;
        }
        view.next = boundary;
        true
    }

    /// What readers see ends where the log does: bytes forwarded but not stored (the writer
    /// failed, or a command never completed) are taken back.
    pub(super) fn take_back(&mut self, view: &mut View, boundary: u64, written: u64) {
        self.tail.truncate(boundary);
        self.written = written;
        if view.ident.is_some() {
            view.next = boundary;
        }
    }

    /// A new history: an empty log from `next`, which every reader must sync again to read.
    pub(super) fn new_history(&mut self, view: &mut View, next: u64) {
        (view.first, view.next, self.written) = (next, next, next);
        self.tail.clear();
        view.epoch += 1;
    }

    /// The log before `first` was dropped: readers before it must sync again.
    pub(super) fn trimmed(view: &mut View, first: u64) {
        view.first = first;
    }

    /// The same log under a new replication ID (the master's changed): readers ask again.
    pub(super) fn new_id(view: &mut View, ident: Identity) {
        view.ident = Some(ident);
        view.epoch += 1;
    }

    /// Where a reader at `from` (at most `max` bytes) finds its next bytes.
    pub(super) fn find(&self, view: &View, from: u64, max: u64) -> Found {
        if from >= view.next {
            return Found::Nothing;
        }
        if let Some(chunks) = self.tail.slice(from, view.next.min(from + max)) {
            return Found::Memory(chunks);
        }
        let on_disk = self.written.min(view.next);
        if from >= on_disk {
            return Found::NotWritten;
        }
        Found::Disk(on_disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving() -> View {
        View {
            ident: Some(Identity {
                replid: "a".repeat(40),
                replid2: "0".repeat(40),
                second_replid_offset: -1,
                snapshot: "dump.rdb".into(),
                snapshot_offset: 100,
                snapshot_size: 1,
            }),
            first: 101,
            next: 101,
            epoch: 1,
            ..View::default()
        }
    }

    fn bytes_at(v: &Visible, view: &View, from: u64) -> Vec<u8> {
        match v.find(view, from, 1 << 20) {
            Found::Memory(mut c) => {
                use bytes::Buf;
                c.copy_to_bytes(c.remaining()).to_vec()
            }
            _ => Vec::new(),
        }
    }

    #[test]
    fn everysec_and_no_forward_before_the_writer_stores() {
        for fsync in [Fsync::Everysec, Fsync::No] {
            let (mut v, mut view) = (Visible::new(fsync), serving());
            assert!(v.forward(
                &mut view,
                101,
                Bytes::from_static(b"*1\r\n$4\r\nPING\r\n*1"),
                115
            ));
            assert_eq!(view.next, 115, "up to the last complete command");
            assert_eq!(bytes_at(&v, &view, 101), b"*1\r\n$4\r\nPING\r\n");
            assert!(matches!(v.find(&view, 115, 64), Found::Nothing));
            v.stored(101, Bytes::from_static(b"*1\r\n$4\r\nPING\r\n*1"));
            assert!(
                !v.publish(&mut view, 115, true),
                "the writer publishes nothing"
            );
            assert_eq!(
                bytes_at(&v, &view, 101).len(),
                14,
                "stored bytes are not doubled"
            );
        }
    }

    #[test]
    fn always_publishes_only_after_the_writer_stored() {
        let (mut v, mut view) = (Visible::new(Fsync::Always), serving());
        assert!(!v.forward(
            &mut view,
            101,
            Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
            115
        ));
        assert_eq!(view.next, 101, "nothing is seen before it is stored");
        v.stored(101, Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"));
        assert_eq!(view.next, 101, "nor before the fsync that publishes it");
        assert!(
            !v.publish(&mut view, 115, false),
            "no log open: nothing published"
        );
        assert!(v.publish(&mut view, 115, true));
        assert_eq!(bytes_at(&v, &view, 101), b"*1\r\n$4\r\nPING\r\n");
        assert!(!v.publish(&mut view, 115, true), "once");
    }

    #[test]
    fn nothing_is_forwarded_without_a_snapshot_in_service() {
        let (mut v, mut view) = (Visible::new(Fsync::Everysec), View::default());
        assert!(!v.forward(
            &mut view,
            1,
            Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
            15
        ));
        assert_eq!(view.next, 0);
    }

    #[test]
    fn what_was_not_stored_is_taken_back() {
        for fsync in [Fsync::Everysec, Fsync::No, Fsync::Always] {
            let (mut v, mut view) = (Visible::new(fsync), serving());
            let data = Bytes::from_static(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n");
            v.forward(&mut view, 101, data.clone(), 129);
            v.stored(101, data.slice(..14));
            v.publish(&mut view, 115, true);
            v.take_back(&mut view, 115, 115);
            assert_eq!(view.next, 115, "{fsync:?}");
            assert_eq!(
                bytes_at(&v, &view, 101),
                b"*1\r\n$4\r\nPING\r\n",
                "{fsync:?}"
            );
            assert!(matches!(v.find(&view, 115, 64), Found::Nothing));
        }
    }

    #[test]
    fn a_new_history_starts_empty_with_a_new_epoch() {
        for fsync in [Fsync::Everysec, Fsync::No, Fsync::Always] {
            let (mut v, mut view) = (Visible::new(fsync), serving());
            let data = Bytes::from_static(b"*1\r\n$4\r\nPING\r\n");
            v.forward(&mut view, 101, data.clone(), 115);
            v.stored(101, data);
            v.publish(&mut view, 115, true);
            v.new_history(&mut view, 5001);
            assert_eq!(
                (view.first, view.next, view.epoch),
                (5001, 5001, 2),
                "{fsync:?}"
            );
            assert!(matches!(v.find(&view, 5001, 64), Found::Nothing));
            assert!(
                bytes_at(&v, &view, 101).is_empty(),
                "the old history's bytes are gone"
            );
        }
    }

    #[test]
    fn readers_behind_the_tail_read_the_files_only_as_far_as_they_are_written() {
        let (mut v, mut view) = (Visible::new(Fsync::Everysec), serving());
        let big = Bytes::from(vec![b'x'; TAIL_BYTES]);
        v.forward(&mut view, 101, big.clone(), 101 + TAIL_BYTES as u64);
        v.forward(
            &mut view,
            101 + TAIL_BYTES as u64,
            big,
            101 + 2 * TAIL_BYTES as u64,
        );
        assert!(
            matches!(v.find(&view, 101, 64), Found::NotWritten),
            "forwarded, not written"
        );
        v.stored(101, Bytes::from(vec![b'x'; 4096]));
        assert!(matches!(v.find(&view, 101, 64), Found::Disk(4197)));
    }
}

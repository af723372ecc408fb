//! The most recent stream bytes, in memory, as the chunks they arrived in.
//!
//! Replicas that keep up are served from here by cloning `Bytes` handles: one copy of the data
//! in memory, whatever the number of replicas. Its size is fixed, so memory does not grow with
//! the write rate or the number of replicas; slower readers fall back to the segment files.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

#[derive(Debug, Clone, Default)]
pub struct Tail {
    chunks: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Tail {
    /// Appends the chunk that starts at `offset`, dropping the oldest beyond `cap` bytes.
    pub fn push(&mut self, offset: u64, data: Bytes, cap: usize) {
        self.bytes += data.len();
        self.chunks.push_back((offset, data));
        while self.chunks.len() > 1 && self.bytes - self.chunks[0].1.len() >= cap {
            let (_, old) = self.chunks.pop_front().expect("non-empty");
            self.bytes -= old.len();
        }
    }

    /// The bytes in `[from, until)`, if the tail still holds `from`.
    pub fn slice(&self, from: u64, until: u64) -> Option<Chunks> {
        let first = self.chunks.front()?.0;
        if from < first {
            return None;
        }
        let i = self
            .chunks
            .partition_point(|(s, b)| s + b.len() as u64 <= from);
        let out: VecDeque<Bytes> = self
            .chunks
            .range(i..)
            .take_while(|(s, _)| *s < until)
            .map(|(s, b)| {
                let lo = (from.max(*s) - s) as usize;
                let hi = ((until - s) as usize).min(b.len());
                b.slice(lo..hi)
            })
            .collect();
        (!out.is_empty()).then(|| Chunks::new(out))
    }

    /// Forgets everything from `offset` on (an incomplete command cut from the log).
    pub fn truncate(&mut self, offset: u64) {
        while let Some((s, b)) = self.chunks.pop_back() {
            self.bytes -= b.len();
            if s < offset {
                let keep = b.slice(..(offset - s) as usize);
                self.bytes += keep.len();
                self.chunks.push_back((s, keep));
                break;
            }
        }
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
    }
}

/// Stream bytes handed to one replica: shared handles on the stored chunks, written with one
/// vectored write for as many chunks as the socket takes, not one write per upstream read.
#[derive(Debug, Default)]
pub struct Chunks {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Chunks {
    pub fn new(parts: VecDeque<Bytes>) -> Chunks {
        let remaining = parts.iter().map(Bytes::len).sum();
        Chunks { parts, remaining }
    }
}

impl From<Bytes> for Chunks {
    fn from(b: Bytes) -> Chunks {
        Chunks::new(VecDeque::from([b]))
    }
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| b)
    }

    fn advance(&mut self, mut n: usize) {
        assert!(n <= self.remaining, "advance past the end of the chunks");
        self.remaining -= n;
        while n > 0 {
            let front = self.parts.front_mut().expect("remaining bytes");
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.parts.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let n = dst.len().min(self.parts.len());
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail() -> Tail {
        let mut t = Tail::default();
        t.push(10, Bytes::from_static(b"abcd"), 100);
        t.push(14, Bytes::from_static(b"efgh"), 100);
        t
    }

    fn joined(v: Option<Chunks>) -> Option<Vec<u8>> {
        v.map(|mut c| c.copy_to_bytes(c.remaining()).to_vec())
    }

    #[test]
    fn slices_across_chunks_and_clamps_to_visible_end() {
        let t = tail();
        assert_eq!(joined(t.slice(12, 18)), Some(b"cdefgh".to_vec()));
        assert_eq!(joined(t.slice(12, 15)), Some(b"cde".to_vec()));
        assert_eq!(joined(t.slice(14, 18)), Some(b"efgh".to_vec()));
        assert!(t.slice(9, 18).is_none());
        assert!(t.slice(18, 18).is_none());
    }

    #[test]
    fn bounded_and_truncatable() {
        let mut t = tail();
        t.push(18, Bytes::from_static(b"ijkl"), 8);
        assert!(t.slice(12, 22).is_none());
        assert_eq!(joined(t.slice(14, 22)), Some(b"efghijkl".to_vec()));
        t.truncate(16);
        assert_eq!(joined(t.slice(14, 22)), Some(b"ef".to_vec()));
        assert_eq!(t.bytes, 2);
    }

    #[test]
    fn chunks_advance_across_parts_and_vector_what_is_left() {
        let mut c = tail().slice(11, 18).expect("held");
        assert_eq!(c.remaining(), 7);
        c.advance(4);
        assert_eq!(c.chunk(), b"fgh");
        let mut slots = [IoSlice::new(&[]); 4];
        assert_eq!(c.chunks_vectored(&mut slots), 1);
        c.advance(3);
        assert_eq!((c.remaining(), c.chunk()), (0, &b""[..]));
    }
}

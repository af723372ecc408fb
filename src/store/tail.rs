//! The most recent stream bytes, in memory, as the chunks they arrived in.
//!
//! Replicas that keep up are served from here by cloning `Bytes` handles: one copy of the data
//! in memory, whatever the number of replicas. Its size is fixed, so memory does not grow with
//! the write rate or the number of replicas; slower readers fall back to the segment files.

use std::collections::VecDeque;

use bytes::Bytes;

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
    pub fn slice(&self, from: u64, until: u64) -> Option<Vec<Bytes>> {
        let first = self.chunks.front()?.0;
        if from < first {
            return None;
        }
        let i = self
            .chunks
            .partition_point(|(s, b)| s + b.len() as u64 <= from);
        let out: Vec<Bytes> = self
            .chunks
            .range(i..)
            .take_while(|(s, _)| *s < until)
            .map(|(s, b)| {
                let lo = (from.max(*s) - s) as usize;
                let hi = ((until - s) as usize).min(b.len());
                b.slice(lo..hi)
            })
            .collect();
        (!out.is_empty()).then_some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tail() -> Tail {
        let mut t = Tail::default();
        t.push(10, Bytes::from_static(b"abcd"), 100);
        t.push(14, Bytes::from_static(b"efgh"), 100);
        t
    }

    fn joined(v: Option<Vec<Bytes>>) -> Option<Vec<u8>> {
        v.map(|v| v.concat())
    }

    #[test]
    fn slices_across_chunks_and_clamps_to_visible_end() {
        let t = tail();
        assert_eq!(joined(t.slice(12, 18)), Some(b"cdefgh".to_vec()));
        assert_eq!(joined(t.slice(12, 15)), Some(b"cde".to_vec()));
        assert_eq!(joined(t.slice(14, 18)), Some(b"efgh".to_vec()));
        assert_eq!(t.slice(9, 18), None);
        assert_eq!(t.slice(18, 18), None);
    }

    #[test]
    fn bounded_and_truncatable() {
        let mut t = tail();
        t.push(18, Bytes::from_static(b"ijkl"), 8);
        assert_eq!(t.slice(12, 22), None);
        assert_eq!(joined(t.slice(14, 22)), Some(b"efghijkl".to_vec()));
        t.truncate(16);
        assert_eq!(joined(t.slice(14, 22)), Some(b"ef".to_vec()));
        assert_eq!(t.bytes, 2);
    }
}

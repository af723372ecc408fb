//! Reading a snapshot file while it is being written, so the decoder works from the very bytes
//! the writer stored (never a second read of the socket) and never slows the transfer down: it
//! follows at its own pace, and memory does not grow if it falls behind.

use std::fs::File;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug, Default)]
struct Progress {
    written: u64,
    done: bool,
    aborted: bool,
}

/// The writer's side: announces bytes as they reach the file.
#[derive(Clone, Default)]
pub struct Follow {
    shared: Arc<(Mutex<Progress>, Condvar)>,
}

impl Follow {
    fn update(&self, f: impl FnOnce(&mut Progress)) {
        let (lock, cond) = &*self.shared;
        f(&mut lock.lock().unwrap_or_else(|e| e.into_inner()));
        cond.notify_all();
    }

    pub fn written(&self, n: u64) {
        self.update(|p| p.written += n);
    }

    /// The file is complete: the reader sees its end.
    pub fn done(&self) {
        self.update(|p| p.done = true);
    }

    /// The file will not be completed: the reader gets an error.
    pub fn abort(&self) {
        self.update(|p| p.aborted = true);
    }

    pub fn aborted(&self) -> bool {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .aborted
    }

    /// A reader of `file` (opened on the same path) that waits for bytes still to come.
    pub fn reader(&self, file: File) -> FollowReader {
        FollowReader {
            file,
            pos: 0,
            follow: self.clone(),
        }
    }

    /// A follower of a file that is already complete, `len` bytes long.
    pub fn complete(len: u64) -> Follow {
        let follow = Follow::default();
        follow.written(len);
        follow.done();
        follow
    }
}

pub struct FollowReader {
    file: File,
    pos: u64,
    follow: Follow,
}

impl Read for FollowReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (lock, cond) = &*self.follow.shared;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        while p.written == self.pos && !p.done && !p.aborted {
            p = cond.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if p.aborted {
            return Err(io::Error::other("the snapshot transfer was aborted"));
        }
        let available = (p.written - self.pos) as usize;
        drop(p);
        if available == 0 {
            return Ok(0);
        }
        let want = buf.len().min(available);
        let n = self.file.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_reader_follows_the_writer_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = File::create(&path).unwrap();
        let follow = Follow::default();
        let mut reader = follow.reader(File::open(&path).unwrap());
        let t = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).map(|_| all)
        });
        for chunk in [&b"hello "[..], b"world"] {
            w.write_all(chunk).unwrap();
            follow.written(chunk.len() as u64);
        }
        follow.done();
        assert_eq!(t.join().unwrap().unwrap(), b"hello world");
    }

    #[test]
    fn an_aborted_transfer_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap();
        let follow = Follow::default();
        let mut reader = follow.reader(File::open(&path).unwrap());
        follow.abort();
        assert!(reader.read(&mut [0u8; 4]).is_err());
    }
}

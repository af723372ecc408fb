//! Progress lines for long transfers (a full sync in either direction): bytes, percent when the
//! size is known, and rate, at most every few seconds.

use std::time::{Duration, Instant};

use tracing::info;

const EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    what: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    logged: Instant,
}

impl Progress {
    /// `what` starts each line, e.g. "MASTER <-> REPLICA sync: received".
    pub fn new(what: impl Into<String>, total: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress {
            what: what.into(),
            total,
            done: 0,
            started: now,
            logged: now,
        }
    }

    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if self.logged.elapsed() < EVERY {
            return;
        }
        self.logged = Instant::now();
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(0.001) / 1e6;
        let what = &self.what;
        match self.total {
            Some(t) => {
                let percent = self.done as f64 * 100.0 / t.max(1) as f64;
                info!(
                    "{what} {} of {t} bytes ({percent:.1}%) at {rate:.1} MB/s",
                    self.done
                )
            }
            None => info!("{what} {} bytes at {rate:.1} MB/s", self.done),
        }
    }
}

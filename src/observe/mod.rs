//! What operators and tools see of the relay: INFO and ROLE (`info`), `/status` (`status`),
//! the Prometheus exposition (`metrics`) and the admin HTTP server (`admin`). This room reads
//! every other room through `RelayView` and changes none of them; downstream asks it for INFO
//! through the `ServerInfo` trait, so the imports still point one way.

pub mod admin;
mod info;
pub mod metrics;
mod status;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::{Config, MasterAddr};
use crate::downstream::{Admission, Clients, DownstreamMetrics, Replicas, ServerInfo};
use crate::link::{LinkControl, LinkState, LinkWatch};
use crate::resp::Reply;
use crate::store::{Store, Verification, View};
use crate::upstream::UpstreamMetrics;

/// Read-only handles on every room.
pub struct RelayView {
    pub config: Arc<Config>,
    pub store: Store,
    pub link: LinkWatch,
    pub control: LinkControl,
    pub replicas: Arc<Replicas>,
    pub clients: Arc<Clients>,
    pub admission: Arc<Admission>,
    pub upstream: Arc<UpstreamMetrics>,
    pub downstream: Arc<DownstreamMetrics>,
    pub started: Instant,
    pub run_id: String,
    /// The commands count at the last INFO a second or more ago, for `instantaneous_ops_per_sec`.
    pub ops: std::sync::Mutex<OpsSample>,
}

/// Commands counted at a moment, and the rate since the sample before.
#[derive(Debug)]
pub struct OpsSample {
    at: Instant,
    commands: u64,
    per_sec: f64,
}

impl Default for OpsSample {
    fn default() -> OpsSample {
        OpsSample {
            at: Instant::now(),
            commands: 0,
            per_sec: 0.0,
        }
    }
}

impl RelayView {
    /// Commands per second, over the last second or more.
    pub fn ops_per_sec(&self) -> f64 {
        let now = self.downstream.commands.get();
        let mut s = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let secs = s.at.elapsed().as_secs_f64();
        if secs >= 1.0 {
            s.per_sec = now.saturating_sub(s.commands) as f64 / secs;
            s.at = Instant::now();
            s.commands = now;
        }
        s.per_sec
    }
}

impl RelayView {
    pub fn master_addr(&self) -> Option<MasterAddr> {
        self.control.master()
    }

    /// A snapshot refresh is under way: asked of the master (the link's word), arriving, or
    /// waiting for the log to reach its offset (the store's).
    pub fn refreshing(&self, state: &View) -> bool {
        state.refreshing || self.link.status().refresh_requested
    }

    /// The master's offset, when it was read recently enough to say how far behind the relay
    /// is: within three polls (`--master-info-interval`), at least 3 s.
    pub fn master_offset(&self) -> Option<u64> {
        let max_age = self
            .config
            .master_info_interval
            .map(|every| (every * 3).max(std::time::Duration::from_secs(3)));
        self.link.status().known_master_offset(max_age)
    }

    /// Why the relay should not receive replicas yet, if it should not.
    pub fn not_ready(&self) -> Option<String> {
        let state = self.store.view();
        if state.ident.is_none() {
            return Some("no verified snapshot in service yet".into());
        }
        match &state.verification {
            Verification::Verified => {}
            Verification::Verifying => return Some("the stored snapshot is being verified".into()),
            Verification::Corrupt(why) => {
                return Some(format!(
                    "the stored snapshot failed verification ({why}); waiting for a fresh one from the master"
                ));
            }
        }
        match (self.master_addr(), self.link.status().state) {
            (None, _) => Some("no master configured (REPLICAOF NO ONE)".into()),
            (Some(_), LinkState::Connected) => None,
            (Some(m), state) => Some(format!("link with master {m} is {}", state.role_name())),
        }
    }
}

impl ServerInfo for RelayView {
    fn info(&self, sections: &[Bytes]) -> String {
        info::info(self, sections)
    }

    fn role(&self) -> Reply {
        info::role(self)
    }

    fn config_values(&self) -> Vec<(&'static str, String)> {
        info::config_values(self)
    }
}

//! What operators and tools see of the relay: INFO and ROLE (`info`), `/status` (`status`),
//! the Prometheus exposition (`metrics`) and the admin HTTP server (`admin`). This room reads
//! every other room through `RelayView` and changes none of them; downstream asks it for INFO
//! through the `ServerInfo` trait, so the imports still point one way.

pub mod admin;
mod facts;
mod info;
pub mod metrics;
mod status;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::archive::ArchiveMetrics;
use crate::config::{Config, MasterAddr};
use crate::downstream::{Admission, Clients, DownstreamMetrics, Replicas, ServerInfo};
use crate::link::{LinkControl, LinkWatch};
use crate::resp::Reply;
use crate::store::Store;
use crate::upstream::{ClusterView, CompactorView, SentinelView, Shown, UpstreamMetrics};

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
    /// The upstream room's compactor and Sentinel watcher, as it shows them.
    pub compactor: Shown<CompactorView>,
    pub sentinel: Shown<SentinelView>,
    pub cluster: Shown<ClusterView>,
    /// The archive's uploader counts here (`--archive`).
    pub archive: ArchiveMetrics,
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

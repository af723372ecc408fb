//! Whether the snapshot in service may be served: a snapshot that arrived from upstream was
//! verified as it arrived; one found on disk at start is read whole and checked (header, EOF
//! opcode, CRC64) before anyone gets it, since bytes can rot while the relay is stopped. A
//! snapshot that fails, at start or while a full sync serves it, is taken out of service: full
//! syncs wait for a fresh one from the master, partial resyncs go on from the log.

use std::fs::File;
use std::sync::Arc;

use tracing::{error, info};

use super::Shared;
use crate::decode::check_file;
use crate::progress::Progress;

/// The standing of the snapshot named by the identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Verification {
    /// Found on disk at start and being read through.
    #[default]
    Verifying,
    Verified,
    /// Failed a check: never served again. Says what failed.
    Corrupt(String),
}

impl Verification {
    pub fn name(&self) -> &'static str {
        match self {
            Verification::Verifying => "verifying",
            Verification::Verified => "verified",
            Verification::Corrupt(_) => "corrupt",
        }
    }
}

/// Checks the stored snapshot `name` on its own thread and records the outcome, unless another
/// snapshot has gone into service meanwhile.
pub(super) fn verify_in_background(shared: Arc<Shared>, name: String, file: File, size: u64) {
    let spawned = std::thread::Builder::new()
        .name("rdb-verify".into())
        .spawn(move || match check(file, size, &name) {
            Ok(()) => {
                info!("Snapshot {name} verified ({size} bytes, checksum and format): serving it");
                shared.verified(&name, Verification::Verified);
            }
            Err(why) => mark_corrupt(&shared, &name, &why),
        });
    if let Err(e) = spawned {
        error!("Cannot start the snapshot verifier: {e}; the snapshot is not served");
    }
}

fn check(file: File, size: u64, name: &str) -> Result<(), String> {
    let mut progress = Progress::new(format!("Verifying snapshot {name}:"), Some(size));
    check_file(file, |n| progress.advance(n)).map(|_| ())
}

/// Takes `name` out of service if it is still the snapshot in service.
pub(super) fn mark_corrupt(shared: &Shared, name: &str, why: &str) {
    if shared.verified(name, Verification::Corrupt(why.to_string())) {
        shared.metrics.snapshot_corrupt.inc();
        error!(
            "Snapshot {name} failed verification ({why}): taken out of service; full syncs wait for a fresh snapshot from the master, partial resyncs go on"
        );
    }
}

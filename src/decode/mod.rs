//! Understanding what flows through: snapshots are verified (`check`) and summarised (`stats`)
//! while they arrive, from the same bytes that are written to disk (`follow`).

mod check;
mod follow;
mod functions;
mod hash2;
mod identity;
mod stats;
mod stream;

#[cfg(test)]
pub(crate) use check::tiny_rdb;
pub use check::{SnapshotCheck, SnapshotFacts, check_file, parse_signature};
pub use follow::{Follow, FollowReader};
pub use functions::Libraries;
pub use identity::{ReplIdentity, identity_of, set_identity, stream_db};
pub use stats::{SnapshotStats, analyze, counts};
pub use stream::StreamStats;

//! Understanding what flows through: snapshots are verified (`check`) and summarised (`stats`)
//! while they arrive, from the same bytes that are written to disk (`follow`).

mod check;
mod follow;
mod functions;
mod stats;
mod stream;

#[cfg(test)]
pub(crate) use check::tiny_rdb;
pub use check::{SnapshotCheck, SnapshotFacts, check_file};
pub use follow::{Follow, FollowReader};
pub use functions::Libraries;
pub use stats::{SnapshotStats, analyze, counts};
pub use stream::StreamStats;

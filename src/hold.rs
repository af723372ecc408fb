//! Hold points: the precise moments a test must reach (a compactor between its save and its
//! identity, the relay between a compaction and putting it in service) without hoping that a
//! random kill lands there. Off unless `REPLICA_RELAY_HOLD=<dir>` is set.
//!
//! A test arms point `P` by creating `<dir>/P.armed`. The first process to reach it takes the
//! arming (a rename, which one process alone wins), writes its PID into `<dir>/P` for the test
//! to know whom it holds, and waits until `<dir>/P.go` exists; every other arrival, and every
//! arrival at a point not armed, passes without stopping.

use std::path::PathBuf;
use std::time::Duration;

/// The environment variable that turns hold points on.
pub const ENV: &str = "REPLICA_RELAY_HOLD";

const POLL: Duration = Duration::from_millis(10);

/// Where `point` holds, if this is the arrival it was armed for; `None` when holds are off, the
/// point is not armed, or another process took it.
fn claim(point: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os(ENV)?);
    std::fs::rename(
        dir.join(format!("{point}.armed")),
        dir.join(format!("{point}.taken")),
    )
    .ok()?;
    let _ = std::fs::write(dir.join(point), format!("{}\n", std::process::id()));
    Some(dir.join(format!("{point}.go")))
}

/// Waits at `point` (blocking), the first time it is reached.
pub fn at(point: &str) {
    if let Some(go) = claim(point) {
        while !go.exists() {
            std::thread::sleep(POLL);
        }
    }
}

/// Waits at `point` on the runtime, the first time it is reached.
pub async fn reached(point: &str) {
    if let Some(go) = claim(point) {
        while !tokio::fs::try_exists(&go).await.unwrap_or(false) {
            tokio::time::sleep(POLL).await;
        }
    }
}

//! replica-relay: a replication relay for Redis and Valkey. It attaches to a master once, keeps
//! the snapshot and the replication stream on disk, and serves any number of replicas.

mod archive;
mod compat;
mod compress;
mod config;
mod decode;
mod downstream;
mod duplex;
mod feed;
mod glob;
mod hold;
mod inspect;
mod instruments;
mod link;
mod master_file;
mod observe;
mod progress;
mod relay;
mod resp;
mod restore;
mod shard_file;
mod store;
mod tail;
mod tls;
mod upstream;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat, RelayArgs};

/// A replication relay for Redis and Valkey.
///
/// It runs next to a master, attaches to it once as a replica (PSYNC), keeps the master's
/// snapshot and replication stream on its own disk, and serves any number of redis-server or
/// valkey-server replicas that point `replicaof` at it. The master forks once, however many
/// replicas attach, and a replica that reconnects continues with a partial resync from the
/// relay's disk backlog.
#[derive(Parser)]
#[command(
    name = "replica-relay",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    tool: Option<Tool>,
    #[command(flatten)]
    relay: RelayArgs,
}

/// Tools in the same binary. Without one, replica-relay runs the relay.
#[derive(clap::Subcommand)]
enum Tool {
    /// Summarise a snapshot (an RDB file) or a relay's store directory; exits 1 if damaged.
    Inspect(inspect::InspectArgs),
    /// Rebuild the data as it was at an offset or a moment from a relay's store, as an
    /// append-only file a stock server loads (the master is not touched).
    Restore(restore::RestoreArgs),
    /// Whether the data the relay serves at an offset is the master's own: a snapshot of the
    /// master (redis-cli --rdb) against the relay's snapshot and stream up to its offset, each
    /// loaded by a server, by DEBUG DIGEST. Exits 1 when they differ.
    Compare(restore::compare::CompareArgs),
    /// Attach as a replica and print the live command stream, one command per line.
    ///
    /// This is one more replica. Pointed at a master, it makes the master fork and send a full
    /// snapshot (which tail skips); pointed at a replica-relay, the relay serves the snapshot
    /// from its disk and the master is not touched. Prefer a relay.
    Tail(tail::TailArgs),
    /// Exit 0 if the relay on this host answers 200 on its admin port (for container health
    /// checks, which then need no curl).
    Healthcheck(observe::admin::HealthcheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.tool {
        Some(Tool::Inspect(args)) => return tool_exit(inspect::run(args)),
        Some(Tool::Tail(args)) => return tool_exit(tail::run(args)),
        Some(Tool::Restore(args)) => {
            stderr_progress();
            return tool_exit(restore::run(args));
        }
        Some(Tool::Compare(args)) => {
            stderr_progress();
            return tool_exit(restore::compare::run(args));
        }
        Some(Tool::Healthcheck(args)) => return tool_exit(observe::admin::healthcheck(args)),
        None => {}
    }
    let config = match Config::resolve(cli.relay) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("replica-relay: configuration error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&config) {
        eprintln!("replica-relay: {e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("replica-relay: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(relay::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("Fatal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Progress lines of a long restore go to stderr; what it makes goes to its files or stdout.
fn stderr_progress() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}

fn tool_exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replica-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log_level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", config.log_level))?;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(color);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

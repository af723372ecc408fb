//! The compactor (`--snapshot-source local`): fresh snapshots made on the relay's own machine,
//! so that the master forks for the relay's first full sync and never again for it.
//!
//! A run is the relay's own `restore` tool in a child process at a lower CPU priority: it
//! rebuilds the data at the newest command boundary of the log on disk (the snapshot in
//! service and the log after it), has a server of the master's family and major version load
//! it and `SAVE` (no TCP port, no persistence of its own, its RSS bounded by
//! `--compactor-maxmemory`), and writes upstream's replication identity (`repl-id`,
//! `repl-offset`, `repl-stream-db`) into the RDB's AUX fields. The relay takes the file into its
//! store as it takes a snapshot from the master: header, CRC64 and decode checked, written as
//! `.tmp`, put in service atomically. In processes of their own, the compactor's memory is
//! never the relay's and a crash of it costs a refresh from the master, nothing more.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tracing::{info, warn};

use super::{CompactorRun, Settings, SnapshotOrigin, Upstream};
use crate::config::SnapshotSource;
use crate::decode::ReplIdentity;
use crate::store::Slot;

/// The compactor's CPU priority (nice): below the relay's, which keeps the stream first.
const NICE: libc::c_int = 10;
/// Lines of the compactor's output kept for the log when it fails.
const TAIL: usize = 20;
/// How long `<server> --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where fresh snapshots come from, decided at start and said in the log once.
pub fn decide(up: &Upstream) {
    let config = &up.settings;
    let source = match (config.snapshot_source, binary(config, None)) {
        (Some(source), _) => source,
        (None, Some(server)) => {
            info!(
                "Snapshot refreshes are made locally by the compactor with {} (--snapshot-source local): the master forks only for the relay's first full sync",
                server.display()
            );
            SnapshotSource::Local
        }
        (None, None) => {
            info!(
                "Snapshot refreshes come from the master (a fork there each): no redis-server or valkey-server on PATH for the compactor (give one with --compactor-server)"
            );
            SnapshotSource::Master
        }
    };
    up.compactor.update(|c| c.source = Some(source));
}

/// The server binary for a master that is Valkey (`Some(true)`), Redis (`Some(false)`) or not
/// known yet: `--compactor-server`, else the master's family's server on PATH.
fn binary(config: &Settings, valkey: Option<bool>) -> Option<PathBuf> {
    if let Some(path) = &config.compactor_server {
        return Some(path.clone());
    }
    let names: &[&str] = match valkey {
        Some(true) => &["valkey-server"],
        Some(false) => &["redis-server"],
        None => &["redis-server", "valkey-server"],
    };
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Makes a fresh snapshot and puts it in service; on failure, says why with the compactor's
/// own last lines, and the snapshot in service stays.
pub(super) async fn run(up: &Arc<Upstream>) -> Result<()> {
    up.metrics.compactor_runs.inc();
    let started = Instant::now();
    let result = compact(up).await;
    let run = match &result {
        Ok((bytes, peak_rss)) => CompactorRun {
            error: None,
            duration: started.elapsed(),
            bytes: *bytes,
            peak_rss: *peak_rss,
        },
        Err(e) => {
            up.metrics.compactor_failures.inc();
            CompactorRun {
                error: Some(format!("{e:#}")),
                duration: started.elapsed(),
                bytes: 0,
                peak_rss: 0,
            }
        }
    };
    up.compactor.update(|c| {
        if run.error.is_none() {
            c.origin = SnapshotOrigin::Compactor;
        }
        c.last = Some(run);
    });
    result.map(|_| ())
}

/// The run itself: the bytes of the snapshot put in service and the server's peak RSS.
async fn compact(up: &Arc<Upstream>) -> Result<(u64, u64)> {
    let start = {
        let view = up.store.view();
        let ident = view.ident.context("no snapshot in service to start from")?;
        Start {
            path: up.store.snapshot_path(&ident),
            offset: ident.snapshot_offset,
            replid: ident.replid,
        }
    };
    let server = checked_server(up).await?;
    let work = work_dir(&up.settings.dir).await?;
    let result = rebuild(up, &server, &start.replid, &work).await;
    let result = match result {
        Ok(report) => install(up, &work.join("out/dump.rdb"), &start, &report)
            .await
            .map(|bytes| (bytes, report.peak_rss)),
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_dir_all(&work).await;
    result
}

/// The snapshot in service when a run starts: what the compactor starts from.
struct Start {
    path: PathBuf,
    offset: u64,
    replid: String,
}

/// A working directory of this run's own under `<dir>/compactor`, whatever is left there
/// removed first. Its name is this run's alone, so no other compactor, such as one of a relay
/// that was killed, could write where this one reads.
async fn work_dir(dir: &Path) -> Result<PathBuf> {
    let parent = dir.join("compactor");
    let _ = tokio::fs::remove_dir_all(&parent).await;
    let name = format!("run-{}-{}", crate::store::now_ms(), std::process::id());
    let work = parent.join(name);
    tokio::fs::create_dir_all(&work)
        .await
        .with_context(|| format!("creating {}", work.display()))?;
    Ok(work)
}

/// The server binary for the master as it is now, checked to be of its family and major
/// version (`<server> --version`), and said in INFO.
async fn checked_server(up: &Upstream) -> Result<PathBuf> {
    let status = up.link.status();
    let (valkey, master) = match (&status.master_valkey, &status.master_version) {
        (Some(v), _) => (true, v.clone()),
        (None, Some(r)) => (false, r.clone()),
        (None, None) => bail!("the master's version is not known yet"),
    };
    let server = binary(&up.settings, Some(valkey)).with_context(|| {
        format!(
            "no {} on PATH (give one with --compactor-server)",
            if valkey {
                "valkey-server"
            } else {
                "redis-server"
            }
        )
    })?;
    let out = tokio::time::timeout(
        VERSION_TIMEOUT,
        tokio::process::Command::new(&server)
            .arg("--version")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{} --version did not answer", server.display()))?
    .with_context(|| format!("running {}", server.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (family, version) = crate::compat::server_version(&text)
        .with_context(|| format!("{} --version said {text:?}", server.display()))?;
    let wanted = if valkey { "Valkey" } else { "Redis" };
    let major = |v: &str| v.split('.').next().unwrap_or("").to_string();
    if family != wanted || major(&version) != major(&master) {
        bail!(
            "{} is {family} {version}, the master is {wanted} {}: the compactor must be of the master's family and major version",
            server.display(),
            master.as_str()
        );
    }
    let said = format!("{} ({family} {version})", server.display());
    info!("Compactor: making a fresh snapshot with {said}, without the master");
    up.compactor.update(|c| c.server = Some(said));
    Ok(server)
}

/// What the restore tool made (its `--report`).
#[derive(Debug, serde::Deserialize)]
struct Report {
    offset: u64,
    stream_db: u32,
    peak_rss: u64,
    server_ms: u64,
}

/// Runs `replica-relay restore ... --format rdb` (this binary) at a lower priority, its output
/// in the log as it goes; `work/out/dump.rdb` when it succeeds.
async fn rebuild(up: &Upstream, server: &Path, replid: &str, work: &Path) -> Result<Report> {
    let exe = std::env::current_exe().context("finding the relay's own binary")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("restore")
        .arg("--dir")
        .arg(&up.settings.dir)
        .arg("--out")
        .arg(work.join("out"))
        .args(["--format", "rdb", "--redis-server"])
        .arg(server)
        .args(["--repl-id", replid, "--report"])
        .arg(work.join("report.json"));
    if let Some(max) = up.settings.compactor_maxmemory {
        cmd.args(["--max-rss", &max.0.to_string()]);
    }
    // The compactor dies with the relay, however the relay dies (kill -9, the OOM killer):
    // the kernel kills it when the thread that started it goes, and the runtime's worker
    // threads live as long as the process. A compactor that outlived its relay would hold a
    // dataset-sized server and write beside its successor. Started after the relay went
    // already, it goes at once.
    let relay = std::process::id() as libc::pid_t;
    // SAFETY: nice(2), prctl(2), getppid(2) and _exit(2) are async-signal-safe, as a pre_exec
    // hook must be.
    unsafe {
        cmd.pre_exec(move || {
            libc::nice(NICE);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != relay {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the compactor")?;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut tail = std::collections::VecDeque::with_capacity(TAIL);
    while let Some(line) = lines.next_line().await? {
        info!("Compactor: {line}");
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait().await?;
    if !status.success() {
        let said: Vec<String> = tail.into_iter().collect();
        bail!("the compactor exited with {status}: {}", said.join(" | "));
    }
    let text = tokio::fs::read(work.join("report.json")).await?;
    let report: Report = serde_json::from_slice(&text).context("the compactor's report")?;
    info!(
        "Compactor: the server took {} ms, peak RSS {} bytes",
        report.server_ms, report.peak_rss
    );
    Ok(report)
}

/// Takes the compactor's RDB into the store as the refreshed snapshot at its offset, after
/// checking that it has the format of the snapshot in service (replicas load one as the other)
/// and the identity the relay's own log gives the cut (`check_identity`).
async fn install(up: &Upstream, rdb: &Path, start: &Start, report: &Report) -> Result<u64> {
    let (made, serving) = (signature(rdb).await?, signature(&start.path).await?);
    if made != serving {
        bail!(
            "the compactor wrote {}{:04}, the snapshot in service is {}{:04}: replicas that load one may not load the other",
            made.0,
            made.1,
            serving.0,
            serving.1
        );
    }
    crate::hold::reached("compactor-install").await;
    let file = check_identity(up, rdb, start, report).await?;
    let writer = &up.writer;
    writer
        .begin_snapshot(Slot::Refresh, start.replid.clone(), report.offset)
        .await?;
    let finished = match copy_into_store(up, tokio::fs::File::from_std(file)).await {
        Ok(bytes) => writer.finish_snapshot(Slot::Refresh).await.map(|_| bytes),
        Err(e) => Err(e),
    };
    let bytes = match finished {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = writer.abort_snapshot(Slot::Refresh).await;
            return Err(e.context("the store refused the compactor's snapshot"));
        }
    };
    info!(
        "Compactor: made a snapshot of {bytes} bytes at offset {} without the master",
        report.offset
    );
    Ok(bytes)
}

/// The compactor's snapshot must say the identity that the relay works out itself from the
/// snapshot it started from and its own log: upstream's replid, the offset of the cut, and the
/// database the stream is in there. A replica loads the stream after the snapshot into that
/// database: a wrong one puts a run of writes in another database at the right offset, with
/// nothing to show it but the data. Such a snapshot is never served. The file, opened once and
/// rewound, so that what is checked is what is copied.
async fn check_identity(
    up: &Upstream,
    rdb: &Path,
    start: &Start,
    report: &Report,
) -> Result<std::fs::File> {
    let (dir, from, offset) = (up.settings.dir.clone(), start.path.clone(), start.offset);
    let (rdb, end) = (rdb.to_path_buf(), report.offset + 1);
    let (file, said, db) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut file =
            std::fs::File::open(&rdb).with_context(|| format!("opening {}", rdb.display()))?;
        let said = crate::decode::identity_of(&file)
            .context("reading the identity of the compactor's snapshot")?;
        std::io::Seek::rewind(&mut file)?;
        let db = crate::store::stream_db_at(&dir, &from, offset, end)
            .context("working out the stream's database at the compactor's cut")?;
        Ok((file, said, db))
    })
    .await??;
    let expected = ReplIdentity {
        replid: start.replid.clone(),
        offset: report.offset,
        stream_db: db,
    };
    if said.as_ref() != Some(&expected) || report.stream_db != db {
        up.metrics.compactor_mismatches.inc();
        bail!(
            "the compactor's snapshot says {} (its report: offset {}, db {}), the relay's own log gives {}: not put in service",
            said.map_or("no replication identity".into(), |s| describe(&s)),
            report.offset,
            report.stream_db,
            describe(&expected)
        );
    }
    Ok(file)
}

fn describe(id: &ReplIdentity) -> String {
    format!(
        "repl-id {} repl-offset {} repl-stream-db {}",
        id.replid, id.offset, id.stream_db
    )
}

async fn copy_into_store(up: &Upstream, mut file: tokio::fs::File) -> Result<u64> {
    let mut total = 0;
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        buf.truncate(n);
        total += n as u64;
        up.writer
            .snapshot_data(Slot::Refresh, Bytes::from(buf))
            .await?;
    }
}

/// The RDB signature of a file: its family and version.
async fn signature(path: &Path) -> Result<(String, u32)> {
    let mut head = [0u8; 9];
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    file.read_exact(&mut head).await?;
    crate::decode::parse_signature(&head).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Logs a failed run and whether the master is asked instead.
pub(super) fn failed(e: &anyhow::Error) {
    warn!(
        "Compactor failed: {e:#}; the snapshot in service stays, and the master is asked for a fresh one instead"
    );
}

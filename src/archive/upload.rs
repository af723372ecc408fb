//! The uploader: a task beside the relay that reads the store's files (never its writer's
//! queue, so it cannot delay the stream) and archives what is new, oldest first, writing the
//! manifest after each object. A failure backs off (1 s doubling to 60 s) and the next pass
//! starts again from the manifest it holds: nothing named there is sent again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use object_store::{PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use super::manifest::{self, Line, Manifest};
use super::{Archive, PART};
use crate::instruments::{self, Collectors};
use crate::store::holdings::{self, Holdings};
use crate::store::{Identity, RestorePoint, Store, now_ms};

const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The uploader's instruments.
#[derive(Clone)]
pub struct ArchiveMetrics {
    pub uploaded_bytes: prometheus::IntCounter,
    pub uploaded_objects: prometheus::IntCounter,
    pub failures: prometheus::IntCounter,
    pub deleted_objects: prometheus::IntCounter,
    /// Bytes the store could archive (sealed segments, snapshots) that are not archived yet.
    pub behind_bytes: prometheus::IntGauge,
    /// How long the archive has been behind without catching up.
    pub behind_seconds: prometheus::IntGauge,
    pub last_upload: prometheus::IntGauge,
}

impl ArchiveMetrics {
    pub fn new() -> ArchiveMetrics {
        let gauge = |name: &str, help: &str| {
            let opts = prometheus::Opts::new(name, help).namespace(instruments::PREFIX);
            prometheus::IntGauge::with_opts(opts).expect("a valid metric")
        };
        ArchiveMetrics {
            uploaded_bytes: instruments::counter(
                "archive_uploaded_bytes_total",
                "Bytes uploaded to the archive (--archive).",
            ),
            uploaded_objects: instruments::counter(
                "archive_uploaded_objects_total",
                "Objects (snapshots, log segments and their indexes) uploaded to the archive.",
            ),
            failures: instruments::counter(
                "archive_failures_total",
                "Archive passes that failed (the object store unreachable or refusing, a file trimmed before it was archived).",
            ),
            deleted_objects: instruments::counter(
                "archive_deleted_objects_total",
                "Archived objects deleted because --archive-window no longer needs them.",
            ),
            behind_bytes: gauge(
                "archive_behind_bytes",
                "Sealed log segments and snapshots the store holds that are not archived yet, in bytes.",
            ),
            behind_seconds: gauge(
                "archive_behind_seconds",
                "How long the archive has been behind the store (archive_behind_bytes above 0) without catching up; 0 when caught up.",
            ),
            last_upload: gauge(
                "archive_last_upload_timestamp_seconds",
                "When the archive last took an object (Unix time); 0 before.",
            ),
        }
    }
}

impl Collectors for ArchiveMetrics {
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.uploaded_bytes.clone()),
            Box::new(self.uploaded_objects.clone()),
            Box::new(self.failures.clone()),
            Box::new(self.deleted_objects.clone()),
            Box::new(self.behind_bytes.clone()),
            Box::new(self.behind_seconds.clone()),
            Box::new(self.last_upload.clone()),
        ]
    }
}

/// What the uploader is told.
pub struct Settings {
    /// The store, which keeps the log until the archive has it.
    pub store: Store,
    /// The store's `--dir`.
    pub dir: PathBuf,
    /// `--archive-rate`, bytes a second.
    pub rate: Option<u64>,
    /// `--archive-window`.
    pub window: Option<Duration>,
}

/// Archives the store in `settings.dir` for the relay's life.
pub async fn run(archive: Archive, settings: Settings, metrics: ArchiveMetrics) {
    let mut up = Uploader {
        archive,
        store: settings.store,
        dir: settings.dir,
        pace: Pace::new(settings.rate),
        window: settings.window,
        metrics,
        behind_since: None,
        manifest: None,
    };
    // Until the manifest says what the archive holds, the store keeps its log from here on.
    up.store.archive_needs(up.store.view().first);
    let mut wait = Duration::from_secs(1);
    loop {
        match up.pass().await {
            Ok(()) => wait = Duration::from_secs(1),
            Err(e) => {
                up.metrics.failures.inc();
                warn!(
                    "Archiving to {} failed: {e:#}; next attempt in {} s",
                    up.archive.url,
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        tokio::time::sleep(wait).await;
    }
}

struct Uploader {
    archive: Archive,
    store: Store,
    dir: PathBuf,
    pace: Pace,
    window: Option<Duration>,
    metrics: ArchiveMetrics,
    /// Since when the archive has been behind the store, while it is.
    behind_since: Option<Instant>,
    /// The archive's manifest as last written (read once, at the first pass that reaches it).
    manifest: Option<Manifest>,
}

impl Uploader {
    async fn pass(&mut self) -> Result<()> {
        let dir = self.dir.clone();
        let Some(held) = tokio::task::spawn_blocking(move || holdings::holdings(&dir)).await??
        else {
            return Ok(()); // no snapshot in service yet
        };
        let mut manifest = match self.manifest.take() {
            Some(m) => m,
            None => self.resume().await?,
        };
        let mut result = self.archive_new(&mut manifest, &held).await;
        if result.is_ok() {
            result = self.expire(&mut manifest).await;
        }
        self.manifest = Some(manifest);
        result
    }

    /// `--archive-window`: the manifest without what the window no longer needs is written
    /// first, then those objects are deleted (a kill between leaves objects no manifest names,
    /// never a manifest naming objects gone).
    async fn expire(&self, manifest: &mut Manifest) -> Result<()> {
        let Some(window) = self.window else {
            return Ok(());
        };
        let gone = manifest.expire(now_ms().saturating_sub(window.as_millis() as u64));
        if gone.is_empty() {
            return Ok(());
        }
        self.archive.save_manifest(manifest).await?;
        let bytes: u64 = gone.iter().map(|o| o.size).sum();
        for object in &gone {
            match self
                .archive
                .objects
                .delete(&self.archive.key(&object.key))
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => warn!("Archive {}: deleting {}: {e}", self.archive.url, object.key),
            }
        }
        self.metrics.deleted_objects.inc_by(gone.len() as u64);
        info!(
            "Archive {}: {} objects ({bytes} bytes) are out of --archive-window {} s and deleted; restorable from the snapshot at offset {}",
            self.archive.url,
            gone.len(),
            window.as_secs(),
            manifest
                .lines
                .first()
                .and_then(|l| l.restorable().first().map(|s| s.offset))
                .map_or("none".into(), |o| o.to_string())
        );
        Ok(())
    }

    async fn resume(&self) -> Result<Manifest> {
        let manifest = self.archive.manifest().await?;
        match manifest.line() {
            Some(l) => info!(
                "Archive {}: resuming line {} ({} snapshots, log up to offset {})",
                self.archive.url,
                l.number,
                l.snapshots.len(),
                l.end().map_or("none".into(), |e| (e - 1).to_string())
            ),
            None => info!("Archive {}: empty, starting it", self.archive.url),
        }
        Ok(manifest)
    }

    /// Uploads what the store holds that the manifest's line does not: the snapshots, then
    /// the sealed segments from where the line ends.
    async fn archive_new(&mut self, manifest: &mut Manifest, held: &Holdings) -> Result<()> {
        if !manifest.line().is_some_and(|l| continues(l, held)) {
            let line = manifest.begin_line(&held.ident.replid);
            info!(
                "Archive {}: line {} begins (the store's history does not continue the archive's), at the snapshot at offset {}",
                self.archive.url, line.number, held.snapshots[0].offset
            );
        }
        let line = manifest.lines.last_mut().expect("a line");
        line.replid = held.ident.replid.clone();
        self.show_behind(line, held);
        for point in &held.snapshots {
            let line = manifest.lines.last_mut().expect("a line");
            if line.snapshots.iter().any(|s| s.name == point.name) {
                continue;
            }
            let entry = self.snapshot(line, point).await?;
            line.snapshots.push(entry);
            self.commit(manifest, held).await?;
        }
        let from = manifest.line().and_then(Line::next).unwrap_or(0);
        for &(start, len) in held.sealed.iter().filter(|(s, l)| s + l > from) {
            let line = manifest.lines.last_mut().expect("a line");
            if line.end().is_some_and(|end| end != start) {
                bail!("log segment {start} does not follow the archive's end {from}");
            }
            let entry = self.segment(line, start, len).await?;
            line.segments.push(entry);
            self.commit(manifest, held).await?;
        }
        Ok(())
    }

    /// Writes the manifest: what it names is archived from now on.
    async fn commit(&mut self, manifest: &Manifest, held: &Holdings) -> Result<()> {
        crate::hold::reached("archive-manifest").await;
        self.archive.save_manifest(manifest).await?;
        self.show_behind(manifest.line().expect("a line"), held);
        self.metrics.last_upload.set((now_ms() / 1000) as i64);
        Ok(())
    }

    /// Tells the store what the archive still needs, and the metrics how far behind it is.
    fn show_behind(&mut self, line: &Line, held: &Holdings) {
        self.store
            .archive_needs(line.next().unwrap_or(held.log_first));
        let bytes = behind(line, held);
        self.metrics.behind_bytes.set(bytes as i64);
        let seconds = match bytes {
            0 => {
                self.behind_since = None;
                0
            }
            _ => self
                .behind_since
                .get_or_insert_with(Instant::now)
                .elapsed()
                .as_secs(),
        };
        self.metrics.behind_seconds.set(seconds as i64);
    }

    async fn snapshot(&mut self, line: &Line, point: &RestorePoint) -> Result<manifest::Snapshot> {
        let path = holdings::snapshot_file(&self.dir, &point.name);
        let key = format!("{}/snapshots/{}", line.prefix(), point.name);
        let object = self.put_file(&key, &path).await?;
        info!(
            "Archive {}: snapshot at offset {} uploaded ({} bytes)",
            self.archive.url, point.offset, object.size
        );
        Ok(manifest::Snapshot {
            name: point.name.clone(),
            offset: point.offset,
            object,
            uploaded_ms: now_ms(),
        })
    }

    async fn segment(&mut self, line: &Line, start: u64, len: u64) -> Result<manifest::Segment> {
        let [log, index, times] = holdings::segment_files(&self.dir, start);
        let key = |ext: &str| format!("{}/log/{start:020}.{ext}", line.prefix());
        // The indexes first: they are complete once the segment is sealed, and a segment
        // trimmed meanwhile fails on its own file, which the next pass sees as a gap.
        let index = self.put_file(&key("idx"), &index).await?;
        let times = self.put_file(&key("time"), &times).await?;
        let log = self.put_file(&key("seg"), &log).await?;
        if log.size != len {
            bail!("log segment {start} is {} bytes, was {len}", log.size);
        }
        Ok(manifest::Segment {
            start,
            log,
            index,
            times,
            uploaded_ms: now_ms(),
        })
    }

    /// Streams the file at `path` to `key` in parts of at most `PART` bytes.
    async fn put_file(&mut self, key: &str, path: &Path) -> Result<manifest::Object> {
        let mut file = tokio::fs::File::open(path).await.with_context(|| {
            format!(
                "opening {} (trimmed before it was archived?)",
                path.display()
            )
        })?;
        let size = file.metadata().await?.len();
        let target = self.archive.key(key);
        let mut crc = 0u32;
        let mut sent = 0u64;
        let mut upload = match size > PART as u64 {
            true => Some(WriteMultipart::new(
                self.archive.objects.put_multipart(&target).await?,
            )),
            false => None,
        };
        let mut whole = None;
        while sent < size {
            let want = (size - sent).min(PART as u64) as usize;
            let mut buf = BytesMut::zeroed(want);
            file.read_exact(&mut buf)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            crc = crc32c::crc32c_append(crc, &buf);
            sent += want as u64;
            let bytes = buf.freeze();
            match upload.as_mut() {
                Some(parts) => {
                    parts.put(bytes);
                    parts.wait_for_capacity(2).await?;
                }
                None => whole = Some(bytes),
            }
            self.pace.sent(want as u64).await;
        }
        match upload {
            Some(parts) => {
                parts.finish().await?;
            }
            None => {
                let payload = PutPayload::from(whole.unwrap_or_default());
                self.archive.objects.put(&target, payload).await?;
            }
        }
        self.metrics.uploaded_bytes.inc_by(size);
        self.metrics.uploaded_objects.inc();
        Ok(manifest::Object {
            key: key.to_string(),
            size,
            crc32c: crc,
        })
    }
}

/// Whether the store's history goes on from where `line` ends: the same replication history
/// (its ID, or the one before a failover it went on through), and the log from the line's end
/// still held, starting a segment there.
fn continues(line: &Line, held: &Holdings) -> bool {
    let ident: &Identity = &held.ident;
    let same = line.replid == ident.replid || line.replid == ident.replid2;
    let Some(from) = line.next() else {
        return false;
    };
    let next_sealed = held.sealed.iter().find(|(s, l)| s + l > from);
    same && held.log_first <= from && next_sealed.is_none_or(|&(s, _)| s == from)
}

/// The bytes of the store's archivable files the line does not hold.
fn behind(line: &Line, held: &Holdings) -> u64 {
    let from = line.next().unwrap_or(0);
    let log: u64 = held
        .sealed
        .iter()
        .filter(|(s, l)| s + l > from)
        .map(|(_, l)| l)
        .sum();
    let snapshots: u64 = held
        .snapshots
        .iter()
        .filter(|p| !line.snapshots.iter().any(|s| s.name == p.name))
        .map(|p| p.size)
        .sum();
    log + snapshots
}

/// `--archive-rate`: uploads at most `rate` bytes a second on average.
struct Pace {
    rate: Option<u64>,
    since: Instant,
    sent: u64,
}

impl Pace {
    fn new(rate: Option<u64>) -> Pace {
        Pace {
            rate,
            since: Instant::now(),
            sent: 0,
        }
    }

    async fn sent(&mut self, n: u64) {
        let Some(rate) = self.rate.filter(|r| *r > 0) else {
            return;
        };
        // A pace that idled long does not owe a burst: it starts over.
        if self.since.elapsed() > Duration::from_secs(10) && self.sent == 0 {
            self.since = Instant::now();
        }
        self.sent += n;
        let due = self.since + Duration::from_secs_f64(self.sent as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        if self.since.elapsed() > Duration::from_secs(10) {
            (self.since, self.sent) = (Instant::now(), 0);
        }
    }
}

//! A replica session: the PSYNC answer, the snapshot for a full sync, then the stream from the
//! replica's cursor until it leaves, falls out of the backlog, or the history changes.
//!
//! The writing half only reads the store: from the shared memory tail when the replica keeps up,
//! from segment files when it lags. The reading half takes the replica's `REPLCONF ACK`s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use super::Rejection;
use super::admission::{STALLED, Slot};
use super::backup::{self, Choice};
use super::commands::SyncRequest;
use super::formats::DROP_WINDOW;
use super::{Client, Decision, ReplicaInfo, ReplicaState, ahead_of_store, decide};
use crate::compat::{requirement, valkey_loads};
use crate::compress;
use crate::decode::SnapshotCheck;
use crate::duplex::{Reader, Writer};
use crate::instruments::Phase;
use crate::progress::Progress;
use crate::resp;
use crate::store::{Gone, TAIL_BYTES, Verification, View, read_at_then};

/// How long a replica ahead of the store waits for the relay to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);
/// How long a backup waits for the link to start the snapshot refresh it asked for.
const REFRESH_START_WAIT: Duration = Duration::from_secs(5);
/// Piece of the snapshot file read at a time; two are in use per full sync.
const SNAPSHOT_READ: u64 = 512 * 1024;

pub async fn serve(
    cx: Arc<super::Context>,
    (rd, wr): (Reader, Writer),
    client: Client,
    leftover: BytesMut,
    request: SyncRequest,
) {
    let name = client.replica_name();
    let info = ReplicaInfo {
        ip: client
            .announced_ip
            .clone()
            .unwrap_or_else(|| client.peer.ip().to_string()),
        port: client.listening_port.unwrap_or(client.peer.port()),
        state: ReplicaState::WaitBgsave,
        ack_offset: 0,
        ack_time: Instant::now(),
        acked: false,
        compressed: client.compression.is_some(),
    };
    let id = cx.replicas.add(info);
    info!("Replica {name} asks for synchronization");
    let mut session = Session {
        cx,
        id,
        name,
        client,
        wr,
        request,
        sent_snapshot: None,
    };
    match session.run(rd, leftover).await {
        Ok(why) => info!("Connection with replica {} lost: {why}", session.name),
        Err(e) => warn!("Connection with replica {} lost: {e:#}", session.name),
    }
}

/// How a replica session ended without an error, for its log line.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("refused with -NOMASTERLINK: {0}")]
    NoMasterLink(&'static str),
    /// Refused with the error the replica was sent.
    #[error("refused: {0}")]
    Refused(String),
    #[error("snapshot delivered (rdb-only)")]
    BackupDelivered,
    #[error("functions-only snapshot delivered ({bytes} bytes, libraries: {libraries})")]
    FunctionsDelivered { bytes: usize, libraries: String },
    /// The store cannot go on from the replica's place.
    #[error("disconnecting it: {0}")]
    Gone(Gone),
    #[error("{0}")]
    Replica(AckEnd),
    #[error("shutting down")]
    ShuttingDown,
}

/// Why the replica's side of the link stopped.
#[derive(Debug, thiserror::Error)]
enum AckEnd {
    #[error("connection closed")]
    Closed,
    #[error("protocol error from the replica: {0}")]
    Protocol(String),
    #[error("query buffer too big")]
    QueryBuffer,
    #[error("{0}")]
    Io(String),
}

struct Session {
    cx: Arc<super::Context>,
    /// The replica's entry in the registry, removed when the session ends.
    id: u64,
    name: String,
    client: Client,
    wr: Writer,
    request: SyncRequest,
    /// When the snapshot was sent, and its format.
    sent_snapshot: Option<(Instant, String)>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cx.replicas.remove(self.id);
        self.cx.store.unpin(self.id);
    }
}

impl Session {
    async fn run(&mut self, rd: Reader, leftover: BytesMut) -> Result<End> {
        self.format_delay().await?;
        let state = self.wait_until_servable().await?;
        let request = self
            .request
            .psync
            .as_ref()
            .map(|(id, off)| (id.as_str(), *off));
        let decision = decide(&state, request);
        let full = matches!(decision, Decision::Full(_));
        if let Some(filter) = self.client.rdb_filter.clone() {
            return self.filtered(&state, &filter).await;
        }
        let state = match (full && self.client.rdb_only, state) {
            (true, state) => match self.current_backup(state).await? {
                Ok(state) => state,
                Err(refusal) => {
                    self.write(format!("-{refusal}\r\n").as_bytes()).await?;
                    return Ok(End::Refused(refusal));
                }
            },
            (false, state) => state,
        };
        let cursor = match decision {
            Decision::NoMasterLink => {
                self.cx.metrics.rejected.inc(Rejection::NoMasterLink);
                self.write(b"-NOMASTERLINK Can't SYNC while not connected with my master\r\n")
                    .await?;
                return Ok(End::NoMasterLink("no snapshot in service yet"));
            }
            Decision::Continue => self.partial(&state).await?,
            Decision::Full(_) if state.verification != Verification::Verified => {
                self.cx.metrics.rejected.inc(Rejection::NoMasterLink);
                self.write(b"-NOMASTERLINK the stored snapshot failed verification and no master is configured to replace it\r\n")
                    .await?;
                return Ok(End::NoMasterLink("the stored snapshot is damaged"));
            }
            Decision::Full(reason) => {
                let signature = self.snapshot_signature(&state).await;
                if let Some(refusal) = self.format_refusal(&signature) {
                    self.cx.metrics.rejected.inc(Rejection::RdbFormat);
                    self.write(format!("-{refusal}\r\n").as_bytes()).await?;
                    return Ok(End::Refused(refusal));
                }
                let cursor = self.full(&state, &reason).await?;
                self.sent_snapshot = Some((Instant::now(), signature));
                cursor
            }
        };
        if self.client.rdb_only {
            return Ok(End::BackupDelivered);
        }
        self.set_state(ReplicaState::Online);
        let mut acks = tokio::spawn(read_acks(self.cx.clone(), self.id, rd, leftover));
        let result = self.stream(cursor, state.epoch, &mut acks, full).await;
        acks.abort();
        self.judge_format();
        result
    }

    /// Like a master during BGSAVE: while the relay's own snapshot is on its way, the replica
    /// gets a newline every second and its PSYNC is answered once the snapshot is in service.
    /// A replica ahead of the store (its offset is past the relay's after a crash cut the
    /// relay's tail) waits a few seconds for the relay to refetch the missing bytes.
    async fn wait_until_servable(&mut self) -> Result<View> {
        let mut changes = self.cx.store.subscribe();
        let mut keepalive = keepalive();
        let catch_up_until = Instant::now() + CATCH_UP_WAIT;
        let mut logged = false;
        loop {
            changes.borrow_and_update();
            let state = self.cx.store.view();
            let request = self
                .request
                .psync
                .as_ref()
                .map(|(id, off)| (id.as_str(), *off));
            let pending = state.receiving.is_some()
                || self.cx.link.status().snapshot_pending
                || self.snapshot_awaited(&state, request);
            let ahead = ahead_of_store(&state, request)
                && Instant::now() < catch_up_until
                && self.cx.control.master().is_some();
            if !pending && !ahead {
                return Ok(state);
            }
            if ahead && !logged {
                logged = true;
                info!(
                    "Replica {} asks for offset {}, past the relay's {}: waiting for the relay to catch up",
                    self.name,
                    request.map_or(0, |r| r.1),
                    state.next
                );
            }
            self.store_changed_or_newline(&mut keepalive, &mut changes)
                .await?;
        }
    }

    /// The snapshot in service, for the log: its offset and age.
    fn snapshot_said(&self, state: &View) -> String {
        let offset = state.ident.as_ref().map_or(0, |i| i.snapshot_offset);
        match backup::snapshot_age(&self.cx) {
            Some(age) => format!("taken at offset {offset}, {} s old", age.as_secs()),
            None => format!("taken at offset {offset}, just taken"),
        }
    }

    /// A filtered snapshot (`rdb-filter-only`): functions only, made from the store; any other
    /// filter is refused. Never the whole dataset for a filtered request.
    async fn filtered(&mut self, state: &View, filter: &str) -> Result<End> {
        let made = if filter.eq_ignore_ascii_case("functions") {
            backup::functions_rdb(&self.cx, state).await
        } else {
            Err(format!(
                "replica-relay filters snapshots by 'functions' only, not {filter:?}"
            ))
        };
        let (rdb, libraries) = match made {
            Ok(made) => made,
            Err(why) => {
                self.write(format!("-ERR cannot make the filtered snapshot: {why}\r\n").as_bytes())
                    .await?;
                return Ok(End::Refused(format!("rdb-filter-only {filter}: {why}")));
            }
        };
        let ident = state.ident.as_ref().context("no identity")?;
        if self.request.psync.is_some() {
            let line = format!(
                "+FULLRESYNC {} {}\r\n",
                ident.replid,
                state.master_repl_offset()
            );
            self.answer(&line).await?;
        }
        self.write(format!("${}\r\n", rdb.len()).as_bytes()).await?;
        self.write(&rdb).await?;
        Ok(End::FunctionsDelivered {
            bytes: rdb.len(),
            libraries,
        })
    }

    /// The snapshot for a backup (`rdb-only`): the stored one if it is current enough, else a
    /// fresh one asked of the master, waited for with newlines; `Err` is the client's refusal.
    async fn current_backup(&mut self, state: View) -> Result<Result<View, String>> {
        let old = state.ident.as_ref().map(|i| i.snapshot.clone());
        match backup::choose(&self.cx, &state) {
            Choice::Serve(why) => {
                info!(
                    "Backup for {}: serving the stored snapshot ({}), {why}",
                    self.name,
                    self.snapshot_said(&state)
                );
                return Ok(Ok(state));
            }
            Choice::Refuse(refusal) => return Ok(Err(refusal)),
            Choice::Fetch => {}
        }
        info!(
            "Backup for {}: the stored snapshot is {} bytes of writes behind; asking the master for a fresh one (one fork, shared by the backups asked meanwhile)",
            self.name,
            state.master_repl_offset() - state.ident.as_ref().map_or(0, |i| i.snapshot_offset)
        );
        self.cx.control.request_snapshot();
        let asked = Instant::now();
        let mut changes = self.cx.store.subscribe();
        let mut keepalive = keepalive();
        let mut started = false;
        loop {
            changes.borrow_and_update();
            let now = self.cx.store.view();
            if now.ident.as_ref().map(|i| &i.snapshot) != old.as_ref() {
                self.cx.backups.fetched();
                info!(
                    "Backup for {}: serving the fresh snapshot ({})",
                    self.name,
                    self.snapshot_said(&now)
                );
                return Ok(Ok(now));
            }
            let under_way = now.refreshing || self.cx.link.status().refresh_requested;
            started |= under_way;
            if started && !under_way {
                return Ok(Err("ERR the fresh snapshot for this backup could not be fetched from the master; the relay's log says why".into()));
            }
            // The link asks within a second, unless a refresh failed lately (it backs off).
            if !started && asked.elapsed() > REFRESH_START_WAIT {
                return Ok(Err("ERR the master is not asked for a fresh snapshot now: a snapshot refresh failed less than a minute ago, or the link went down; try again later, or accept the stored snapshot with --rdb-only-max-age".into()));
            }
            self.store_changed_or_newline(&mut keepalive, &mut changes)
                .await?;
        }
    }

    /// A full sync must wait while the stored snapshot is being verified, or while a damaged
    /// one waits for its replacement from the master.
    fn snapshot_awaited(&self, state: &View, request: Option<(&str, i64)>) -> bool {
        let full = matches!(decide(state, request), Decision::Full(_));
        match state.verification {
            Verification::Verified => false,
            Verification::Verifying => full,
            Verification::Corrupt(_) => full && self.cx.control.master().is_some(),
        }
    }

    /// The snapshot's first 9 bytes, `REDIS0011` or `VALKEY080`.
    async fn snapshot_signature(&self, state: &View) -> String {
        let Some(ident) = &state.ident else {
            return String::new();
        };
        let mut header = [0u8; 9];
        let read = async {
            let mut f = tokio::fs::File::open(self.cx.store.snapshot_path(ident)).await?;
            f.read_exact(&mut header).await
        };
        match read.await {
            Ok(_) => String::from_utf8_lossy(&header).into_owned(),
            Err(_) => String::new(),
        }
    }

    /// Why this replica gets no full sync: by its own word (Valkey's `REPLCONF version`) it
    /// cannot load `signature`.
    fn format_refusal(&self, signature: &str) -> Option<String> {
        let version = self.client.version.as_ref()?;
        if valkey_loads(signature, version) {
            return None;
        }
        let key = self.evidence_key().unwrap_or_else(|| self.name.clone());
        self.cx
            .replicas
            .formats
            .announced_incompatible(&key, signature);
        Some(format!(
            "NOMASTERLINK replica-relay: this replica announced Valkey {version}, which cannot load the snapshot ({signature}; it needs {})",
            requirement(signature)
        ))
    }

    /// A replica that dropped the last snapshots without loading them waits a few seconds, on
    /// this connection, before the next one (see `formats`).
    async fn format_delay(&mut self) -> Result<()> {
        let Some(key) = self.evidence_key() else {
            return Ok(());
        };
        let Some((wait, why)) = self.cx.replicas.formats.delay(&key) else {
            return Ok(());
        };
        info!(
            "Replica {}: {why}; its next full sync starts in {} s",
            self.name,
            wait.as_secs_f64().ceil()
        );
        self.waiting(&mut keepalive(), tokio::time::sleep(wait))
            .await
    }

    /// Whom the drop-after-snapshot evidence is recorded against: the peer's own IP address and
    /// the port it announced, and only for connections that look like a real replica's (PSYNC
    /// with a listening port, not a backup tool's `rdb-only`).
    fn evidence_key(&self) -> Option<String> {
        let port = self.client.listening_port?;
        if self.request.psync.is_none() || self.client.rdb_only {
            return None;
        }
        Some(std::net::SocketAddr::new(self.client.peer.ip().to_canonical(), port).to_string())
    }

    /// The first ACK after a full sync says the replica loaded the snapshot: whatever was
    /// recorded against it no longer holds.
    fn loaded_snapshot(&mut self) {
        if self.sent_snapshot.is_some() && self.cx.replicas.acked(self.id) {
            self.sent_snapshot = None;
            if let Some(key) = self.evidence_key() {
                self.cx.replicas.formats.clear(&key);
            }
        }
    }

    /// After a full sync: a replica that acknowledged loaded the snapshot; one that dropped soon
    /// after it, silently, most likely could not.
    fn judge_format(&self) {
        let (Some((sent, signature)), Some(key)) = (&self.sent_snapshot, self.evidence_key())
        else {
            return;
        };
        let formats = &self.cx.replicas.formats;
        if self.cx.replicas.acked(self.id) {
            formats.clear(&key);
        } else if sent.elapsed() < DROP_WINDOW {
            formats.strike(&key, signature);
        }
    }

    async fn partial(&mut self, state: &View) -> Result<u64> {
        let (_, offset) = self
            .request
            .psync
            .clone()
            .context("partial resync without PSYNC")?;
        let ident = state.ident.as_ref().context("no identity")?;
        let line = if self.client.capa_psync2 {
            format!("+CONTINUE {}\r\n", ident.replid)
        } else {
            "+CONTINUE\r\n".to_string()
        };
        self.answer(&line).await?;
        self.cx.metrics.partial_syncs.inc();
        info!(
            "Partial resynchronization request from {} accepted. Sending {} bytes of backlog starting from offset {offset}.",
            self.name,
            state.next as i64 - offset
        );
        Ok(offset as u64)
    }

    async fn full(&mut self, state: &View, reason: &str) -> Result<u64> {
        let ident = state.ident.as_ref().context("no identity")?;
        let offset = ident.snapshot_offset;
        self.cx.metrics.full_syncs.inc();
        match &self.request.psync {
            Some((id, _)) if id != "?" => {
                self.cx.metrics.partial_sync_errors.inc();
                info!(
                    "Unable to partial resync with replica {}: {reason}",
                    self.name
                );
            }
            _ => info!("Full resync requested by replica {}", self.name),
        }
        if self.request.psync.is_some() {
            self.answer(&format!("+FULLRESYNC {} {offset}\r\n", ident.replid))
                .await?;
        }
        info!(
            "Starting full sync of {} from the stored snapshot at offset {offset}",
            self.name
        );
        let path = self.cx.store.snapshot_path(ident);
        if !self.cx.store.pin(self.id, offset + 1) {
            bail!("the snapshot was replaced while the full sync started; the replica will retry");
        }
        // Held open for the whole sync: a refresh may unlink the file meanwhile.
        let open = path.clone();
        let file = tokio::task::spawn_blocking(move || std::fs::File::open(open))
            .await?
            .with_context(|| format!("opening snapshot {}", path.display()))?;
        let slot = self.admitted().await?;
        self.set_state(ReplicaState::SendBulk);
        self.write(format!("${}\r\n", ident.snapshot_size).as_bytes())
            .await?;
        self.send_snapshot(
            Arc::new(file),
            (ident.snapshot_size, &slot),
            &ident.snapshot,
        )
        .await
        .with_context(|| format!("sending snapshot {}", path.display()))?;
        info!("Synchronization with replica {} succeeded", self.name);
        Ok(offset + 1)
    }

    /// Copies the snapshot file to the replica, counting and logging progress. The next piece
    /// is read from disk (and added to the CRC64) while the current one is written, in two
    /// buffers that are reused. The last 8 bytes, the checksum, are sent only once the bytes
    /// before them are found to match it: a replica sent a damaged snapshot would load it and
    /// exit, while one whose transfer breaks retries.
    async fn send_snapshot(
        &mut self,
        file: Arc<std::fs::File>,
        (size, slot): (u64, &Slot),
        name: &str,
    ) -> Result<()> {
        let counter = self.cx.metrics.sent.get(Phase::Snapshot);
        let what = format!("Full sync of {}: sent", self.name);
        let mut progress = Progress::new(what, Some(size));
        let timeout = self.cx.settings.repl_timeout;
        let piece = |pos: u64, buf: BytesMut, check: SnapshotCheck| {
            let file = file.clone();
            read_checked(file, pos, piece_len(pos, size), buf, check)
        };
        let first = piece(0, BytesMut::new(), SnapshotCheck::default());
        let (mut current, mut spare, mut check) = first.await.map_err(cut_short)?;
        let mut sent = 0;
        while !current.is_empty() {
            sent += current.len() as u64;
            let last = sent == size;
            let body = match last {
                true => current.slice(..current.len().saturating_sub(8)),
                false => current.clone(),
            };
            let next = async {
                match last {
                    false => piece(sent, spare, check).await,
                    true => Ok((Bytes::new(), spare, check)),
                }
            };
            let admission = self.cx.admission.clone();
            let replica = &self.name;
            let wr = &mut self.wr;
            let write = async {
                admission.pace(slot, body.len() as u64).await;
                let written = tokio::time::timeout(timeout, wr.write_all(&body));
                tokio::pin!(written);
                tokio::select! {
                    done = &mut written => done,
                    _ = tokio::time::sleep(STALLED) => {
                        if slot.release() {
                            info!("Full sync of {replica} stalls: its slot goes to the next replica waiting");
                        }
                        written.await
                    }
                }
            };
            let (written, next) = tokio::join!(write, next);
            written.context("timeout writing to the replica")??;
            let trailer = current.slice(body.len()..);
            (current, spare, check) = next.map_err(cut_short)?;
            if last {
                if let Err(e) = std::mem::take(&mut check).finish() {
                    self.cx.store.snapshot_failed(name, &e.to_string());
                    bail!(
                        "the stored snapshot failed verification ({e}); closing before its checksum so the replica retries"
                    );
                }
                self.write(&trailer).await?;
            }
            counter.inc_by(body.len() as u64 + trailer.len() as u64);
            progress.advance(body.len() as u64 + trailer.len() as u64);
        }
        Ok(())
    }

    async fn stream(
        &mut self,
        mut cursor: u64,
        epoch: u64,
        acks: &mut tokio::task::JoinHandle<AckEnd>,
        mut catching_up: bool,
    ) -> Result<End> {
        let cx = self.cx.clone();
        let store = &cx.store;
        let timeout = self.cx.settings.repl_timeout;
        let mut changes = store.subscribe();
        let sent = cx.metrics.sent.get(Phase::Stream);
        let mut check = tokio::time::interval(Duration::from_secs(1));
        let mut scratch = BytesMut::new();
        loop {
            let mut chunks = tokio::select! {
                read = store.read(cursor, epoch, &mut changes, &mut scratch) => match read {
                    Ok(chunks) => chunks,
                    Err(gone) => return Ok(End::Gone(gone)),
                },
                why = &mut *acks => return Ok(End::Replica(why.unwrap_or_else(|e| AckEnd::Io(e.to_string())))),
                _ = check.tick() => {
                    self.loaded_snapshot();
                    if self.pre_psync() { continue }
                    let idle = self.cx.replicas.ack_age(self.id);
                    if idle > timeout {
                        bail!("timeout: no ACK for {} seconds", idle.as_secs());
                    }
                    continue;
                }
                _ = self.cx.shutdown.cancelled() => return Ok(End::ShuttingDown),
            };
            let len = chunks.remaining();
            tokio::time::timeout(timeout, self.wr.write_all_buf(&mut chunks))
                .await
                .context("timeout writing to the replica")??;
            cursor += len as u64;
            sent.inc_by(len as u64);
            if catching_up {
                catching_up = self.keep_pin(cursor);
            }
        }
    }

    /// After a full sync the log from the replica's cursor is kept until it has caught up with
    /// the memory tail, so retention cannot cut a sync in progress. Returns whether still pinned.
    fn keep_pin(&self, cursor: u64) -> bool {
        let store = &self.cx.store;
        if cursor + TAIL_BYTES as u64 >= store.next() {
            store.unpin(self.id);
            return false;
        }
        store.pin(self.id, cursor)
    }

    /// Replicas that used the legacy SYNC never send ACKs.
    fn pre_psync(&self) -> bool {
        self.request.psync.is_none()
    }

    fn set_state(&self, state: ReplicaState) {
        self.cx.replicas.update(self.id, |r| {
            r.state = state;
            r.ack_time = Instant::now();
        });
    }

    /// A slot among the `--max-full-syncs` sent at once: at once if one is free, else in
    /// arrival order, with a newline a second meanwhile (the replica is in `wait_bgsave`).
    async fn admitted(&mut self) -> Result<Slot> {
        let admission = self.cx.admission.clone();
        if let Some(slot) = admission.try_admit() {
            return Ok(slot);
        }
        info!(
            "Full sync of {} waits for a slot: {} full syncs are being sent (--max-full-syncs {}), {} waiting before it",
            self.name,
            admission.running(),
            admission.max(),
            admission.waiting()
        );
        let started = Instant::now();
        let slot = self.waiting(&mut keepalive(), admission.admit()).await?;
        info!(
            "Full sync of {} starts after waiting {:.1} s for a slot",
            self.name,
            started.elapsed().as_secs_f64()
        );
        Ok(slot)
    }

    /// What `until` gives, while the replica gets a newline a second (as a master keeps a
    /// replica waiting for its snapshot), or an error when the relay shuts down first.
    async fn waiting<F: Future>(
        &mut self,
        keepalive: &mut tokio::time::Interval,
        until: F,
    ) -> Result<F::Output> {
        tokio::pin!(until);
        loop {
            if let Some(done) = self.wait_step(keepalive, until.as_mut()).await? {
                return Ok(done);
            }
        }
    }

    /// One step of a wait on the store: returns when it changed or the second's newline went
    /// out, for the caller's conditions depend on the link's state and on time too.
    async fn store_changed_or_newline(
        &mut self,
        keepalive: &mut tokio::time::Interval,
        changes: &mut tokio::sync::watch::Receiver<u64>,
    ) -> Result<()> {
        let changed = changes.changed();
        tokio::pin!(changed);
        if let Some(changed) = self.wait_step(keepalive, changed).await? {
            changed.context("store closed")?;
        }
        Ok(())
    }

    /// One step of a wait: what `until` gives if it is ready before the next newline is due,
    /// else `None` once the newline is written, so that the caller checks its conditions
    /// again; an error when the relay shuts down. The caller keeps `until` (a place in a
    /// queue, a deadline) and one `keepalive` across the steps of a wait, so neither restarts.
    async fn wait_step<F: Future>(
        &mut self,
        keepalive: &mut tokio::time::Interval,
        until: Pin<&mut F>,
    ) -> Result<Option<F::Output>> {
        tokio::select! {
            done = until => Ok(Some(done)),
            _ = keepalive.tick() => {
                self.write(b"\n").await?;
                Ok(None)
            }
            _ = self.cx.shutdown.cancelled() => bail!("shutting down"),
        }
    }

    /// The PSYNC reply. A relay that asked for a compressed link gets every byte after it
    /// compressed: the snapshot and the stream alike.
    async fn answer(&mut self, line: &str) -> Result<()> {
        self.write(line.as_bytes()).await?;
        if let Some(link) = self.client.compression {
            let plain = std::mem::replace(&mut self.wr, Box::new(tokio::io::sink()));
            let (counters, timeout) = (
                self.cx.metrics.compression.clone(),
                self.cx.settings.repl_timeout,
            );
            self.wr = compress::sender(plain, link, counters, timeout)
                .context("starting the compressed link")?;
            info!(
                "Replication to {} is compressed from here on (zstd level {}, frames at most {} us late)",
                self.name,
                link.level,
                link.max_delay.as_micros()
            );
        }
        Ok(())
    }

    async fn write(&mut self, data: &[u8]) -> Result<()> {
        let timeout = self.cx.settings.repl_timeout;
        tokio::time::timeout(timeout, self.wr.write_all(data))
            .await
            .context("timeout writing to the replica")?
            .context("writing to the replica")
    }
}

/// The pace of the newlines a waiting replica gets: one a second, the first after a second.
fn keepalive() -> tokio::time::Interval {
    let second = Duration::from_secs(1);
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every
}

/// How much of the snapshot to read at `pos`: a full piece, except that the checksum (the
/// last 8 bytes) never straddles two pieces.
fn piece_len(pos: u64, size: u64) -> usize {
    let left = size - pos;
    let len = left.min(SNAPSHOT_READ);
    match left - len {
        1..8 => (left - 8) as usize,
        _ => len as usize,
    }
}

/// Reads a piece of the snapshot on a blocking thread and adds it to the running check there,
/// so the CRC64 costs the runtime nothing.
async fn read_checked(
    file: Arc<std::fs::File>,
    pos: u64,
    len: usize,
    buf: BytesMut,
    mut check: SnapshotCheck,
) -> std::io::Result<(Bytes, BytesMut, SnapshotCheck)> {
    let add = move |piece: &[u8]| {
        check.update(piece);
        check
    };
    read_at_then(move || file.try_clone(), pos, len, buf, add).await
}

/// A snapshot file cut short on disk says so, not "failed to fill whole buffer".
fn cut_short(e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => anyhow::anyhow!("the file is shorter than recorded"),
        _ => e.into(),
    }
}

/// Takes `REPLCONF ACK <offset> [FACK <offset>]` and `\n` from the replica; returns why it
/// stopped.
async fn read_acks(cx: Arc<super::Context>, id: u64, mut rd: Reader, mut buf: BytesMut) -> AckEnd {
    let mut parser = resp::CommandParser::default();
    loop {
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(args)) => cx.replicas.update(id, |r| {
                    r.ack_time = Instant::now();
                    let is_ack = args.len() >= 3
                        && args[0].eq_ignore_ascii_case(b"replconf")
                        && args[1].eq_ignore_ascii_case(b"ack");
                    let offset = is_ack.then(|| std::str::from_utf8(&args[2]).ok()?.parse().ok());
                    if let Some(Some(offset)) = offset {
                        r.ack_offset = r.ack_offset.max(offset);
                        r.acked = true;
                    }
                }),
                Ok(None) => break,
                Err(e) => return AckEnd::Protocol(e.to_string()),
            }
        }
        if buf.len() > resp::MAX_INLINE {
            return AckEnd::QueryBuffer;
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => return AckEnd::Closed,
            Err(e) => return AckEnd::Io(e.to_string()),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_never_straddles_two_pieces() {
        for size in [
            18,
            SNAPSHOT_READ,
            SNAPSHOT_READ + 3,
            SNAPSHOT_READ + 8,
            3 * SNAPSHOT_READ + 1,
        ] {
            let mut pos = 0;
            let mut last = 0;
            while pos < size {
                last = piece_len(pos, size);
                pos += last as u64;
            }
            assert_eq!(pos, size);
            assert!(last >= 8, "size {size}: last piece of {last} bytes");
        }
    }
}

//! The upstream link: the relay as one replica of the master (PROTOCOL §1–3, §8).
//!
//! One task follows the configured master: connect, PING, AUTH, REPLCONF, PSYNC, then either
//! receive a snapshot or continue, then stream. Everything received goes to the store in order;
//! the only bytes ever sent upstream after PSYNC are `REPLCONF ACK <offset>`. On any failure the
//! link is retried every second, resuming with `PSYNC <replid> <offset+1>`. A second, short
//! connection fetches a fresh snapshot now and then (`refresh`) so the log can be trimmed.

mod refresh;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tracing::{info, warn};

use crate::config::MasterAddr;
use crate::decode::SnapshotFacts;
use crate::relay::{LinkState, Relay, Stats};
use crate::resp;
use crate::store::{Slot, is_replid};

/// Longest reply line accepted during the handshake.
const MAX_LINE: usize = 4096;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// Longest wait between full syncs whose snapshot was rejected (corrupt, or the disk is full).
const MAX_SYNC_BACKOFF: Duration = Duration::from_secs(60);
/// How often a full sync in progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const EOF_MARK_LEN: usize = 40;

/// A full sync whose snapshot failed verification or could not be stored: retried with backoff
/// so a master is not made to fork every second.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct SnapshotRejected(anyhow::Error);

/// Follows `relay.master` until shutdown.
pub async fn run(relay: Arc<Relay>) {
    let mut master_rx = relay.master.subscribe();
    let mut rejected = 0u32;
    loop {
        let Some(master) = master_rx.borrow_and_update().clone() else {
            relay.set_link_state(LinkState::None);
            tokio::select! {
                r = master_rx.changed() => if r.is_err() { return },
                _ = relay.shutdown.cancelled() => return,
            }
            continue;
        };
        let ended = tokio::select! {
            r = Link::run(&relay, &master) => Some(r),
            _ = master_rx.changed() => None,
            _ = relay.shutdown.cancelled() => None,
        };
        relay.set_link_state(LinkState::Connect);
        relay.update_link(|l| {
            l.sync_total = None;
            l.snapshot_pending = false;
        });
        if let Err(e) = relay.store.abort_snapshot(Slot::Main).await {
            warn!("{e:#}");
        }
        let mut delay = Duration::from_secs(1);
        let snapshot_rejected = matches!(&ended, Some(Err(e)) if e.is::<SnapshotRejected>());
        if !snapshot_rejected {
            rejected = 0;
        }
        match ended {
            Some(Err(e)) if e.is::<SnapshotRejected>() => {
                rejected += 1;
                delay = MAX_SYNC_BACKOFF.min(delay * 2u32.saturating_pow(rejected - 1));
                warn!("{e:#}; next full sync attempt in {} s", delay.as_secs());
            }
            Some(Err(e)) => warn!("{e:#}"),
            Some(Ok(())) => {}
            None if relay.shutdown.is_cancelled() => return,
            None => {
                info!("Dropping the link with master {master}: the master was changed");
                continue;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = master_rx.changed() => {}
            _ = relay.shutdown.cancelled() => return,
        }
    }
}

enum Psync {
    Full { replid: String, offset: u64 },
    Continue,
}

/// One connection to the master: the replication link (`Slot::Main`) or a snapshot refresh.
struct Link<'a> {
    relay: &'a Arc<Relay>,
    master: MasterAddr,
    slot: Slot,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
}

impl<'a> Link<'a> {
    async fn run(relay: &'a Arc<Relay>, master: &MasterAddr) -> Result<()> {
        let mut link = Link::connect(relay, master, Slot::Main).await?;
        link.handshake().await?;
        if let Psync::Full { replid, offset } = link.psync().await? {
            link.full_sync(replid, offset).await?;
        }
        link.stream().await
    }

    fn is_main(&self) -> bool {
        self.slot == Slot::Main
    }

    fn set_state(&self, state: LinkState) {
        if self.is_main() {
            self.relay.set_link_state(state);
        }
    }

    async fn connect(relay: &'a Arc<Relay>, master: &MasterAddr, slot: Slot) -> Result<Link<'a>> {
        if slot == Slot::Main {
            relay.set_link_state(LinkState::Connecting);
            info!("Connecting to MASTER {master}");
        }
        let timeout = relay.config.repl_timeout;
        let connect = TcpStream::connect((master.host.as_str(), master.port));
        let sock = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| anyhow!("Error condition on socket for SYNC: Connection timed out"))?
            .map_err(|e| anyhow!("Error condition on socket for SYNC: {e}"))?;
        sock.set_nodelay(true)?;
        if slot == Slot::Main {
            info!("MASTER <-> REPLICA sync started");
        }
        let (rd, wr) = sock.into_split();
        let buf = BytesMut::with_capacity(READ_CHUNK);
        Ok(Link {
            relay,
            master: master.clone(),
            slot,
            rd,
            wr,
            buf,
        })
    }

    async fn handshake(&mut self) -> Result<()> {
        self.set_state(LinkState::Handshake);
        self.send(&[b"PING"]).await?;
        let pong = self.read_line().await?;
        let accepted = ["+", "-NOAUTH", "-NOPERM", "-ERR operation not permitted"];
        if !accepted.iter().any(|p| pong.starts_with(p)) {
            bail!("Error reply to PING from master: '{pong}'");
        }
        if self.is_main() {
            info!("Master replied to PING, replication can continue...");
        }
        let cfg = &self.relay.config;
        let port = cfg.port.to_string();
        let mut out = BytesMut::new();
        match (&cfg.masteruser, &cfg.masterauth) {
            (Some(user), Some(pass)) => {
                out.extend(resp::command(&[b"AUTH", user.as_bytes(), pass.as_bytes()]))
            }
            (None, Some(pass)) => out.extend(resp::command(&[b"AUTH", pass.as_bytes()])),
            _ => {}
        }
        let mut sent = vec!["REPLCONF listening-port", "REPLCONF capa"];
        out.extend(resp::command(&[
            b"REPLCONF",
            b"listening-port",
            port.as_bytes(),
        ]));
        out.extend(resp::command(&[
            b"REPLCONF",
            b"capa",
            b"eof",
            b"capa",
            b"psync2",
        ]));
        if !self.is_main() {
            // Masters that know it close the connection after the snapshot; older ones reply
            // with an error and start streaming, and the refresh closes it itself.
            out.extend(resp::command(&[b"REPLCONF", b"rdb-only", b"1"]));
            sent.push("REPLCONF rdb-only");
        }
        self.wr.write_all(&out).await?;
        if cfg.masterauth.is_some() {
            let reply = self.read_line().await?;
            if reply.starts_with('-') {
                bail!("Unable to AUTH to MASTER: {reply}");
            }
        }
        for what in sent {
            let reply = self.read_line().await?;
            if reply.starts_with('-') {
                info!("(Non critical) Master does not understand {what}: {reply}");
            }
        }
        Ok(())
    }

    async fn psync(&mut self) -> Result<Psync> {
        let (replid, offset) = self.psync_request().await?;
        self.send(&[b"PSYNC", replid.as_bytes(), offset.as_bytes()])
            .await?;
        if self.is_main() {
            let pending = replid == "?";
            self.relay.update_link(|l| l.snapshot_pending = pending);
        }
        let reply = self.read_nonempty_line().await?;
        if let Some(rest) = reply.strip_prefix("+FULLRESYNC ") {
            let (replid, offset) = rest.split_once(' ').context("malformed +FULLRESYNC")?;
            let offset: u64 = offset
                .trim()
                .parse()
                .context("malformed +FULLRESYNC offset")?;
            if !is_replid(replid) {
                bail!("Master sent an invalid replication ID in +FULLRESYNC: '{replid}'");
            }
            if self.is_main() {
                info!("Full resync from master: {replid}:{offset}");
                self.relay.update_link(|l| l.snapshot_pending = true);
            }
            return Ok(Psync::Full {
                replid: replid.to_string(),
                offset,
            });
        }
        if let Some(rest) = reply.strip_prefix("+CONTINUE").filter(|_| self.is_main()) {
            info!("Successful partial resynchronization with master.");
            Stats::incr(&self.relay.stats.upstream_partial_syncs);
            let new_id = rest.trim();
            if is_replid(new_id) {
                self.relay.store.continue_with(new_id.to_string()).await?;
            }
            return Ok(Psync::Continue);
        }
        Stats::incr(&self.relay.stats.upstream_sync_failures);
        if ["-NOMASTERLINK", "-LOADING", "-BUSY"]
            .iter()
            .any(|p| reply.starts_with(p))
        {
            bail!("Master is currently unable to PSYNC but should be in the future: {reply}");
        }
        bail!("Unexpected reply to PSYNC from master: {reply}")
    }

    /// `PSYNC <replid> <offset+1>` when the store holds a history, else `PSYNC ? -1`; a refresh
    /// always asks for a full sync.
    async fn psync_request(&self) -> Result<(String, String)> {
        let full = ("?".to_string(), "-1".to_string());
        if !self.is_main() {
            return Ok(full);
        }
        let store = &self.relay.store;
        let resume = store.flush().await?;
        Ok(match store.view().ident {
            Some(id) => {
                info!(
                    "Trying a partial resynchronization (request {}:{resume}).",
                    id.replid
                );
                (id.replid, resume.to_string())
            }
            None => {
                info!("Partial resynchronization not possible (no cached master)");
                full
            }
        })
    }

    async fn full_sync(&mut self, replid: String, offset: u64) -> Result<()> {
        let relay = self.relay;
        relay.set_link_state(LinkState::Transfer);
        Stats::incr(&relay.stats.upstream_full_syncs);
        let facts = self.receive_snapshot(replid, offset).await?;
        info!(
            "MASTER <-> REPLICA sync: Finished with success ({} bytes, {}{:04}, checksum {})",
            facts.0,
            facts.1.family,
            facts.1.rdb_version,
            if facts.1.checksummed {
                "verified"
            } else {
                "disabled by the master"
            }
        );
        self.send_ack().await
    }

    /// Receives the snapshot that follows `+FULLRESYNC` into the store, which verifies it.
    async fn receive_snapshot(
        &mut self,
        replid: String,
        offset: u64,
    ) -> Result<(u64, SnapshotFacts)> {
        let store = &self.relay.store;
        store.begin_snapshot(self.slot, replid, offset).await?;
        let header = self.read_nonempty_line().await?;
        if header.starts_with('-') {
            bail!("MASTER aborted replication with an error: {header}");
        }
        let received = if let Some(mark) = header.strip_prefix("$EOF:") {
            let mark = mark
                .as_bytes()
                .get(..EOF_MARK_LEN)
                .context("EOF mark too short")?
                .to_vec();
            if self.is_main() {
                info!(
                    "MASTER <-> REPLICA sync: receiving streamed RDB from master with EOF to disk"
                );
            }
            self.receive_until_mark(&mark).await?
        } else if let Some(len) = header.strip_prefix('$').and_then(|l| l.parse::<u64>().ok()) {
            if self.is_main() {
                info!("MASTER <-> REPLICA sync: receiving {len} bytes from master to disk");
                self.relay.update_link(|l| l.sync_total = Some(len));
            }
            self.receive_len(len).await?
        } else {
            bail!(
                "Bad protocol from MASTER, the first byte is not '$' (we received '{header}'), are you sure the host and port are right?"
            );
        };
        match store.finish_snapshot(self.slot).await {
            Ok(facts) => Ok((received, facts)),
            Err(e) => {
                Stats::incr(&self.relay.stats.upstream_sync_failures);
                Err(SnapshotRejected(e.context("the snapshot was rejected")).into())
            }
        }
    }

    async fn receive_len(&mut self, len: u64) -> Result<u64> {
        let mut progress = Progress::new(Some(len));
        let mut left = len;
        while left > 0 {
            if self.buf.is_empty() {
                self.read_more().await?;
            }
            let n = (self.buf.len() as u64).min(left) as usize;
            self.store_snapshot_bytes(n).await?;
            left -= n as u64;
            progress.advance(n as u64);
        }
        Ok(len)
    }

    /// Receives `<rdb><mark>`: the master sends nothing after the mark until our first ACK, so
    /// the mark is exactly at the end of what has been read when the payload is complete.
    async fn receive_until_mark(&mut self, mark: &[u8]) -> Result<u64> {
        let mut progress = Progress::new(None);
        let mut total = 0;
        loop {
            if self.buf.ends_with(mark) {
                let n = self.buf.len() - mark.len();
                self.store_snapshot_bytes(n).await?;
                self.buf.advance(mark.len());
                return Ok(total + n as u64);
            }
            if self.buf.len() > mark.len() {
                let n = self.buf.len() - mark.len();
                self.store_snapshot_bytes(n).await?;
                total += n as u64;
                progress.advance(n as u64);
            }
            self.read_more().await?;
        }
    }

    async fn store_snapshot_bytes(&mut self, n: usize) -> Result<()> {
        let data = self.buf.split_to(n).freeze();
        self.relay.store.snapshot_data(self.slot, data).await
    }

    async fn stream(&mut self) -> Result<()> {
        let relay = self.relay;
        relay.update_link(|l| {
            l.state = LinkState::Connected;
            l.down_since = None;
            l.sync_total = None;
            l.snapshot_pending = false;
        });
        let mut status = relay.store.writer_status();
        let mut getacks = status.borrow_and_update().getacks;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut refresh = refresh::Refresher::default();
        loop {
            if !self.buf.is_empty() {
                relay.store.append(self.buf.split().freeze()).await?;
            }
            tokio::select! {
                read = self.rd.read_buf(&mut self.buf) => {
                    if read.context("Error reading from MASTER")? == 0 {
                        bail!("Connection with master lost.");
                    }
                    self.touch();
                }
                _ = tick.tick() => {
                    relay.store.tick().await?;
                    self.send_ack().await?;
                    self.check_timeout()?;
                    refresh.poll(relay, &self.master).await;
                }
                changed = status.changed() => {
                    changed.context("the store writer has stopped")?;
                    let s = status.borrow_and_update().clone();
                    if let Some(why) = s.failed {
                        bail!("Dropping the link with master: the store could not keep the stream ({why})");
                    }
                    if s.getacks != getacks {
                        getacks = s.getacks;
                        self.send_ack().await?;
                    }
                }
            }
            self.buf.reserve(READ_CHUNK);
        }
    }

    fn check_timeout(&self) -> Result<()> {
        let last = self.relay.link().last_io.unwrap_or_else(Instant::now);
        if last.elapsed() > self.relay.config.repl_timeout {
            bail!("MASTER timeout: no data nor PING received...");
        }
        Ok(())
    }

    /// `REPLCONF ACK <offset>`: what the store holds per the fsync policy.
    async fn send_ack(&mut self) -> Result<()> {
        let ack = self.relay.store.writer_status().borrow().ack;
        if let Some(offset) = ack {
            self.send(&[b"REPLCONF", b"ACK", offset.to_string().as_bytes()])
                .await?;
        }
        Ok(())
    }

    async fn send(&mut self, args: &[&[u8]]) -> Result<()> {
        self.wr
            .write_all(&resp::command(args))
            .await
            .context("Error writing to MASTER")
    }

    fn touch(&self) {
        self.relay.update_link(|l| l.last_io = Some(Instant::now()));
    }

    async fn read_more(&mut self) -> Result<()> {
        self.buf.reserve(READ_CHUNK);
        let read = tokio::time::timeout(
            self.relay.config.repl_timeout,
            self.rd.read_buf(&mut self.buf),
        );
        match read.await {
            Err(_) => bail!("Timeout connecting to the MASTER..."),
            Ok(Err(e)) => bail!("I/O error reading from MASTER: {e}"),
            Ok(Ok(0)) => bail!("Connection with master lost."),
            Ok(Ok(_)) => {
                self.touch();
                Ok(())
            }
        }
    }

    async fn read_line(&mut self) -> Result<String> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(nl + 1);
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Ok(String::from_utf8_lossy(line).into_owned());
            }
            if self.buf.len() > MAX_LINE {
                bail!("Bad protocol from MASTER: reply line longer than {MAX_LINE} bytes");
            }
            self.read_more().await?;
        }
    }

    /// Reads a line, skipping the `\n` keepalives a master sends while it prepares a payload.
    async fn read_nonempty_line(&mut self) -> Result<String> {
        loop {
            let line = self.read_line().await?;
            if !line.is_empty() {
                return Ok(line);
            }
        }
    }
}

/// Logs a full sync's progress every few seconds.
struct Progress {
    total: Option<u64>,
    done: u64,
    started: Instant,
    logged: Instant,
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress {
            total,
            done: 0,
            started: now,
            logged: now,
        }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if self.logged.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.logged = Instant::now();
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(0.001) / 1e6;
        match self.total {
            Some(t) => info!(
                "MASTER <-> REPLICA sync: received {} of {t} bytes ({:.1}%) at {rate:.1} MB/s",
                self.done,
                self.done as f64 * 100.0 / t.max(1) as f64
            ),
            None => info!(
                "MASTER <-> REPLICA sync: received {} bytes at {rate:.1} MB/s",
                self.done
            ),
        }
    }
}

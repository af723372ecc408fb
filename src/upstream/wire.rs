//! One connection to a master, from the replica's side of the protocol (PROTOCOL §1, §2):
//! the handshake, the PSYNC reply, the snapshot payload in either framing, and the stream.
//! It knows nothing of the store; the replication link, the snapshot refresh and `tail` use it.

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::info;

use crate::compress::{self, Counters};
use crate::config::{AnnounceVersion, MasterAddr, ZstdLink};
use crate::duplex::{Reader, Writer};
use crate::resp::{self, Reply};
use crate::store::is_replid;
use crate::tls::Dialer;

/// Longest reply line accepted during the handshake.
const MAX_LINE: usize = 4096;
/// Size of each read buffer block; stream chunks are slices of these blocks.
const READ_CHUNK: usize = 64 * 1024;
/// Least room worth a read before a new block is started.
const MIN_READ: usize = 8 * 1024;
const EOF_MARK_LEN: usize = 40;

/// What went wrong on a connection to a master, typed where it happens so the link sorts its
/// failures by what they are; the words are redis-server's own where it has them.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Reaching the master: the TCP connect or the TLS handshake.
    #[error(transparent)]
    Connect(anyhow::Error),
    /// The master refused the relay's AUTH; its reply says why.
    #[error("Unable to AUTH to MASTER: {0}")]
    Auth(String),
    /// Nothing came from the master within `repl-timeout`.
    #[error("Timeout receiving data from the MASTER...")]
    TimedOut,
    /// The master closed the connection.
    #[error("Connection with master lost.")]
    Closed,
    /// A compressed link's frame failed its checks: nothing of it was passed on.
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Io(String),
    /// A reply the protocol does not allow here, or the master's error reply.
    #[error("{0}")]
    Protocol(String),
    /// The snapshot payload ended early, for the reason after it.
    #[error("{what}: {cause}")]
    Truncated { what: String, cause: Box<WireError> },
}

impl WireError {
    pub fn truncating(self, what: String) -> WireError {
        WireError::Truncated {
            what,
            cause: Box::new(self),
        }
    }

    /// The master closed the link, maybe in the middle of a payload.
    pub fn closed(&self) -> bool {
        match self {
            WireError::Closed => true,
            WireError::Truncated { cause, .. } => cause.closed(),
            _ => false,
        }
    }

    /// A compressed link's frame was damaged, maybe in the middle of a payload.
    pub fn corrupt(&self) -> bool {
        match self {
            WireError::Corrupt(_) => true,
            WireError::Truncated { cause, .. } => cause.corrupt(),
            _ => false,
        }
    }
}

pub type Result<T, E = WireError> = std::result::Result<T, E>;

macro_rules! protocol {
    ($($arg:tt)*) => {
        return Err(WireError::Protocol(format!($($arg)*)))
    };
}

/// A read that failed: a damaged compressed frame, or the system's words (over TLS, the
/// master's refusal of our certificate arrives as the first read fails).
fn reading(e: std::io::Error) -> WireError {
    match compress::CorruptFrame::within(&e) {
        Some(frame) => WireError::Corrupt(frame.to_string()),
        None => WireError::Io(format!(
            "I/O error reading from MASTER: {}",
            crate::tls::explain(&e)
        )),
    }
}

fn writing(e: std::io::Error) -> WireError {
    WireError::Io(format!("Error writing to MASTER: {e}"))
}

/// Longest bulk reply accepted during the handshake (`INFO server` is about 1 KiB).
const MAX_BULK: usize = 1 << 20;
/// Longest array `read_reply` accepts (a Sentinel's replies have 2 or 3 items).
const MAX_ITEMS: usize = 64;

/// What the master said of itself in its INFO, and the version the relay announced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterServer {
    /// `valkey_version` of a Valkey master; `None` for Redis.
    pub valkey: Option<String>,
    /// What `REPLCONF version` said, if it was sent.
    pub announced: Option<String>,
    /// Its `redis_version` (a Valkey server's Redis-compatibility version).
    pub redis_version: Option<String>,
    /// Its replication history and keyspace, when INFO showed them.
    pub history: Option<MasterHistory>,
    /// `relay_version` of a relay of this project (only a relay says it).
    pub relay_version: Option<String>,
}

/// Which histories a master can continue, and whether it holds any keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterHistory {
    pub replid: String,
    pub replid2: String,
    pub second_offset: i64,
    /// Keys in all its databases (the `dbN:keys=` lines).
    pub keys: u64,
}

impl MasterHistory {
    /// Whether a PSYNC with `replid` can continue here (Redis' own test, without the backlog's
    /// range): the master's id, or its previous one up to where it changed.
    pub fn continues(&self, replid: &str, offset: u64) -> bool {
        replid == self.replid
            || (replid == self.replid2
                && i64::try_from(offset).is_ok_and(|o| o <= self.second_offset))
    }
}

impl MasterServer {
    fn from_info(info: &str) -> MasterServer {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let valkey = field("server_name").is_some_and(|n| n == "valkey");
        let keys = info
            .lines()
            .filter(|l| l.starts_with("db"))
            .filter_map(|l| {
                l.split_once(":keys=")?
                    .1
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        let history = field("master_replid").map(|replid| MasterHistory {
            replid,
            replid2: field("master_replid2").unwrap_or_default(),
            second_offset: field("second_repl_offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(-1),
            keys,
        });
        MasterServer {
            valkey: field("valkey_version").filter(|_| valkey),
            announced: None,
            redis_version: field("redis_version"),
            history,
            relay_version: field("relay_version"),
        }
    }
}

/// Credentials for the master: `AUTH <pass>` or `AUTH <user> <pass>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Auth<'a> {
    pub user: Option<&'a str>,
    pub pass: Option<&'a str>,
}

pub enum PsyncReply {
    Full {
        replid: String,
        offset: u64,
    },
    /// `+CONTINUE`, with the master's replid when it sent one.
    Continue(Option<String>),
}

/// How the snapshot payload ends.
pub enum Framing {
    /// `$<len>`: this many bytes are left.
    Len(u64),
    /// `$EOF:<mark>`: the payload ends with the mark.
    Mark(Vec<u8>),
    Done,
}

pub struct MasterConn {
    rd: Reader,
    wr: Writer,
    buf: BytesMut,
    timeout: Duration,
    last_io: Instant,
    compression: Option<Compressing>,
}

/// A compressed link to ask of an upstream relay, and whether it agreed.
struct Compressing {
    link: ZstdLink,
    counters: Counters,
    agreed: bool,
}

impl MasterConn {
    /// A connection to `master`, over TCP or TLS as `dialer` says.
    pub async fn connect(
        dialer: &Dialer,
        master: &MasterAddr,
        timeout: Duration,
    ) -> Result<MasterConn> {
        let (rd, wr) = dialer
            .dial(master, timeout)
            .await
            .map_err(WireError::Connect)?;
        Ok(MasterConn::over(rd, wr, timeout))
    }

    /// The replica's side of the protocol over any byte stream.
    pub fn over(rd: Reader, wr: Writer, timeout: Duration) -> MasterConn {
        MasterConn {
            rd,
            wr,
            buf: BytesMut::with_capacity(READ_CHUNK),
            timeout,
            last_io: Instant::now(),
            compression: None,
        }
    }

    /// Asks for a compressed link in the handshake, if the master turns out to be a relay.
    pub fn ask_compression(&mut self, link: ZstdLink, counters: Counters) {
        self.compression = Some(Compressing {
            link,
            counters,
            agreed: false,
        });
    }

    /// Whether everything after the PSYNC reply comes compressed.
    pub fn compressed(&self) -> bool {
        self.compression.as_ref().is_some_and(|c| c.agreed)
    }

    /// `REPLCONF relay-compression` of an upstream relay: a master that is not one is never
    /// asked (it would answer with an error, and a real master must not see the option); a
    /// relay that does not know it answers with an error, and the link stays plain.
    async fn negotiate_compression(&mut self, server: &MasterServer) -> Result<()> {
        let Some(c) = &self.compression else {
            return Ok(());
        };
        let Some(version) = &server.relay_version else {
            info!(
                "The master is not a replica-relay: the link is not compressed (--upstream-compression asks relays only)"
            );
            return Ok(());
        };
        let request = compress::request(&c.link);
        self.send(&[
            b"REPLCONF",
            compress::REPLCONF_OPTION.as_bytes(),
            request.as_bytes(),
        ])
        .await?;
        let reply = self.read_line().await?;
        let agreed = reply == "+OK";
        if agreed {
            info!(
                "The upstream relay (replica-relay {version}) compresses the link: zstd {request}"
            );
        } else {
            info!(
                "(Non critical) The upstream relay (replica-relay {version}) does not compress: {reply}; the link is plain"
            );
        }
        if let Some(c) = &mut self.compression {
            c.agreed = agreed;
        }
        Ok(())
    }

    /// After the PSYNC reply of a compressed link: what was read past it and everything after
    /// comes through the decompressing reader.
    fn start_decompressing(&mut self) -> Result<()> {
        let Some(c) = self.compression.as_ref().filter(|c| c.agreed) else {
            return Ok(());
        };
        let plain = std::mem::replace(&mut self.rd, Box::new(tokio::io::empty()));
        let leftover = self.buf.split();
        let rd = compress::Receiver::new(plain, leftover, c.counters.clone())
            .map_err(|e| WireError::Io(format!("starting the compressed link: {e}")))?;
        self.rd = Box::new(rd);
        Ok(())
    }

    pub fn last_io(&self) -> Instant {
        self.last_io
    }

    /// PING; then AUTH and `INFO server` pipelined; then the REPLCONFs pipelined, one reply
    /// read per command (§1.1). A Valkey master is told a version (`REPLCONF version`), by
    /// which it picks the snapshot's format: without one it writes RDB 11, which cannot hold
    /// what Valkey 9 can (hash field expiry), and its full syncs fail.
    pub async fn handshake(
        &mut self,
        auth: Auth<'_>,
        port: u16,
        rdb_only: bool,
        announce: &AnnounceVersion,
    ) -> Result<MasterServer> {
        self.send(&[b"PING"]).await?;
        let pong = self.read_line().await?;
        let accepted = ["+", "-NOAUTH", "-NOPERM", "-ERR operation not permitted"];
        if !accepted.iter().any(|p| pong.starts_with(p)) {
            protocol!("Error reply to PING from master: '{pong}'");
        }
        // The default sections: the server (Valkey's version), its replication history and
        // keyspace (the empty-master guard); one multi-section form every version knows.
        let info = self.authenticate(auth, b"default").await?;
        let server = MasterServer::from_info(info.as_deref().unwrap_or(""));
        // A fixed version is sent whatever INFO said: an ACL user may not be allowed INFO.
        let version = match (announce, &server.valkey) {
            (AnnounceVersion::Fixed(v), _) => Some(v.clone()),
            (AnnounceVersion::Auto, v) => v.clone(),
        };
        let port = port.to_string();
        let mut out = BytesMut::new();
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
        if let Some(v) = &version {
            out.extend(resp::command(&[b"REPLCONF", b"version", v.as_bytes()]));
            sent.push("REPLCONF version");
        }
        if rdb_only {
            // Masters that know it close the connection after the snapshot; older ones reply
            // with an error and start streaming, and the caller closes the connection itself.
            out.extend(resp::command(&[b"REPLCONF", b"rdb-only", b"1"]));
            sent.push("REPLCONF rdb-only");
        }
        self.wr.write_all(&out).await.map_err(writing)?;
        for what in sent {
            let reply = self.read_line().await?;
            if reply.starts_with('-') {
                info!("(Non critical) Master does not understand {what}: {reply}");
            }
        }
        self.negotiate_compression(&server).await?;
        Ok(MasterServer {
            announced: version,
            ..server
        })
    }

    /// AUTH when a password is set, and then `INFO <section>`, as an ordinary client does: the
    /// master's offset for the lag metric, on a connection of its own.
    pub async fn info(&mut self, auth: Auth<'_>, section: &[u8]) -> Result<String> {
        let section_name = String::from_utf8_lossy(section).into_owned();
        let info = self.authenticate(auth, section).await?;
        info.ok_or_else(|| WireError::Protocol(format!("the master refused INFO {section_name}")))
    }

    /// AUTH when a password is set, then one command, as an ordinary client does (`CLUSTER
    /// NODES` of a cluster node, say).
    pub async fn command(&mut self, auth: Auth<'_>, args: &[&[u8]]) -> Result<Reply> {
        if let Some(pass) = auth.pass {
            let mut login: Vec<&[u8]> = vec![b"AUTH"];
            login.extend(auth.user.map(str::as_bytes));
            login.push(pass.as_bytes());
            if let Reply::Error(e) = self.request(&login).await? {
                return Err(WireError::Auth(e));
            }
        }
        self.request(args).await
    }

    /// AUTH when a password is set, pipelined with `INFO <section>`; `None` when the master
    /// refuses INFO (an ACL without it).
    async fn authenticate(&mut self, auth: Auth<'_>, section: &[u8]) -> Result<Option<String>> {
        let mut out = BytesMut::new();
        match (auth.user, auth.pass) {
            (Some(user), Some(pass)) => {
                out.extend(resp::command(&[b"AUTH", user.as_bytes(), pass.as_bytes()]))
            }
            (None, Some(pass)) => out.extend(resp::command(&[b"AUTH", pass.as_bytes()])),
            _ => {}
        }
        out.extend(resp::command(&[b"INFO", section]));
        self.wr.write_all(&out).await.map_err(writing)?;
        if auth.pass.is_some() {
            let reply = self.read_line().await?;
            if reply.starts_with('-') {
                return Err(WireError::Auth(reply));
            }
        }
        self.read_bulk().await
    }

    /// Sends `PSYNC <replid> <offset>` and reads the reply; never falls back to SYNC (§7.3).
    pub async fn psync(&mut self, replid: &str, offset: &str) -> Result<PsyncReply> {
        self.send(&[b"PSYNC", replid.as_bytes(), offset.as_bytes()])
            .await?;
        let reply = self.read_nonempty_line().await?;
        if let Some(rest) = reply.strip_prefix("+FULLRESYNC ") {
            let Some((replid, offset)) = rest.split_once(' ') else {
                protocol!("malformed +FULLRESYNC: {reply}");
            };
            let Ok(offset) = offset.trim().parse::<u64>() else {
                protocol!("malformed +FULLRESYNC offset: {reply}");
            };
            if !is_replid(replid) {
                protocol!("Master sent an invalid replication ID in +FULLRESYNC: '{replid}'");
            }
            self.start_decompressing()?;
            return Ok(PsyncReply::Full {
                replid: replid.to_string(),
                offset,
            });
        }
        if let Some(rest) = reply.strip_prefix("+CONTINUE") {
            let id = Some(rest.trim())
                .filter(|id| is_replid(id))
                .map(str::to_string);
            self.start_decompressing()?;
            return Ok(PsyncReply::Continue(id));
        }
        if ["-NOMASTERLINK", "-LOADING", "-BUSY"]
            .iter()
            .any(|p| reply.starts_with(p))
        {
            protocol!("Master is currently unable to PSYNC but should be in the future: {reply}");
        }
        protocol!("Unexpected reply to PSYNC from master: {reply}")
    }

    /// Reads the `$EOF:<mark>` or `$<len>` line that opens the snapshot payload.
    pub async fn payload_header(&mut self) -> Result<Framing> {
        let header = self.read_nonempty_line().await?;
        if header.starts_with('-') {
            protocol!("MASTER aborted replication with an error: {header}");
        }
        if let Some(mark) = header.strip_prefix("$EOF:") {
            let Some(mark) = mark.as_bytes().get(..EOF_MARK_LEN) else {
                protocol!("EOF mark too short: {header}");
            };
            return Ok(Framing::Mark(mark.to_vec()));
        }
        match header.strip_prefix('$').and_then(|l| l.parse::<u64>().ok()) {
            Some(len) => Ok(Framing::Len(len)),
            None => protocol!(
                "Bad protocol from MASTER, the first byte is not '$' (we received '{header}'), are you sure the host and port are right?"
            ),
        }
    }

    /// The next piece of the payload, or `None` once it is complete. With EOF framing the
    /// master sends nothing after the mark until it gets an ACK, so the mark is exactly at the
    /// end of what has been read when the payload is complete (§2.1).
    pub async fn payload_chunk(&mut self, framing: &mut Framing) -> Result<Option<Bytes>> {
        loop {
            match framing {
                Framing::Done => return Ok(None),
                Framing::Len(0) => *framing = Framing::Done,
                Framing::Len(left) if !self.buf.is_empty() => {
                    let n = (self.buf.len() as u64).min(*left);
                    *left -= n;
                    return Ok(Some(self.buf.split_to(n as usize).freeze()));
                }
                Framing::Mark(mark) if self.buf.ends_with(mark) => {
                    let n = self.buf.len() - mark.len();
                    let last = self.buf.split_to(n).freeze();
                    self.buf.advance(mark.len());
                    *framing = Framing::Done;
                    return Ok(Some(last));
                }
                Framing::Mark(mark) if self.buf.len() > mark.len() => {
                    let n = self.buf.len() - mark.len();
                    return Ok(Some(self.buf.split_to(n).freeze()));
                }
                Framing::Len(left) => {
                    let what =
                        format!("the snapshot ended with {left} of its announced bytes missing");
                    self.read_more().await.map_err(|e| e.truncating(what))?
                }
                Framing::Mark(_) => {
                    let what = "the snapshot ended before its EOF mark".to_string();
                    self.read_more().await.map_err(|e| e.truncating(what))?
                }
            }
        }
    }

    /// Stream bytes already read, then, when there are none, the next read from the socket.
    /// Cancel-safe: nothing is lost if the future is dropped.
    pub async fn stream_chunk(&mut self) -> Result<Bytes> {
        if self.buf.is_empty() {
            make_room(&mut self.buf);
            let read = self.rd.read_buf(&mut self.buf).await;
            let n = read.map_err(reading)?;
            if n == 0 {
                return Err(WireError::Closed);
            }
            self.last_io = Instant::now();
        }
        Ok(self.buf.split().freeze())
    }

    pub async fn send_ack(&mut self, offset: u64) -> Result<()> {
        self.send(&[b"REPLCONF", b"ACK", offset.to_string().as_bytes()])
            .await
    }

    pub async fn send(&mut self, args: &[&[u8]]) -> Result<()> {
        self.wr
            .write_all(&resp::command(args))
            .await
            .map_err(writing)
    }

    /// A bulk reply of at most `MAX_BULK` bytes; `None` for an error or any other reply.
    async fn read_bulk(&mut self) -> Result<Option<String>> {
        Ok(match self.read_reply().await? {
            Reply::Bulk(body) => Some(String::from_utf8_lossy(&body).into_owned()),
            _ => None,
        })
    }

    /// Sends a command and reads its reply, as an ordinary client (of a Sentinel, say).
    pub async fn request(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.send(args).await?;
        self.read_reply().await
    }

    /// One reply: a scalar, or an array of at most `MAX_ITEMS` scalars (what Sentinel's
    /// replies and pub/sub messages are). Cancel-safe: nothing is consumed until a whole reply
    /// has arrived, so it can wait in a `select!` beside a timer.
    pub async fn read_reply(&mut self) -> Result<Reply> {
        loop {
            if let Some((reply, used)) = parse_reply(&self.buf)? {
                self.buf.advance(used);
                return Ok(reply);
            }
            if self.buf.len() > MAX_BULK + MAX_LINE {
                protocol!("Bad protocol: a reply longer than {MAX_BULK} bytes");
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> Result<()> {
        make_room(&mut self.buf);
        let read = tokio::time::timeout(self.timeout, self.rd.read_buf(&mut self.buf));
        match read.await {
            Err(_) => Err(WireError::TimedOut),
            Ok(Err(e)) => Err(reading(e)),
            Ok(Ok(0)) => Err(WireError::Closed),
            Ok(Ok(_)) => {
                self.last_io = Instant::now();
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
                protocol!("Bad protocol from MASTER: reply line longer than {MAX_LINE} bytes");
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

/// A whole reply at the start of `buf` and its length, or `None` if more must be read.
fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>> {
    let Some((line, mut used)) = next_line(buf)? else {
        return Ok(None);
    };
    let Some(n) = line.strip_prefix('*') else {
        return scalar(&line, buf, used);
    };
    let Ok(n) = n.parse::<i64>() else {
        protocol!("Bad protocol: malformed array length {line:?}");
    };
    if n < 0 {
        return Ok(Some((Reply::Nil, used)));
    }
    if n as usize > MAX_ITEMS {
        protocol!("Bad protocol: an array of {n} items");
    }
    let mut items = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let Some((line, at)) = next_line(&buf[used..])? else {
            return Ok(None);
        };
        let Some((item, end)) = scalar(&line, buf, used + at)? else {
            return Ok(None);
        };
        items.push(item);
        used = end;
    }
    Ok(Some((Reply::Array(items), used)))
}

/// The line at the start of `buf` (without its end) and the length up to the next one.
fn next_line(buf: &[u8]) -> Result<Option<(String, usize)>> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
            Ok(Some((String::from_utf8_lossy(line).into_owned(), nl + 1)))
        }
        None if buf.len() > MAX_LINE => {
            protocol!("Bad protocol: a line longer than {MAX_LINE} bytes")
        }
        None => Ok(None),
    }
}

/// A scalar whose header `line` ends at `at` in `buf`; returns where it ends.
fn scalar(line: &str, buf: &[u8], at: usize) -> Result<Option<(Reply, usize)>> {
    let (kind, rest) = line.split_at(line.len().min(1));
    let reply = match kind {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => match rest.parse() {
            Ok(n) => Reply::Int(n),
            Err(_) => protocol!("Bad protocol: malformed integer {line:?}"),
        },
        "$" if rest == "-1" => Reply::Nil,
        "$" => {
            let Ok(len) = rest.parse::<usize>() else {
                protocol!("Bad protocol: malformed bulk length {line:?}");
            };
            if len > MAX_BULK {
                protocol!("Bad protocol: a reply of {len} bytes");
            }
            if buf.len() < at + len + 2 {
                return Ok(None);
            }
            let body = Bytes::copy_from_slice(&buf[at..at + len]);
            return Ok(Some((Reply::Bulk(body), at + len + 2)));
        }
        _ => protocol!("Bad protocol: unexpected reply {line:?}"),
    };
    Ok(Some((reply, at)))
}

/// Starts a new block only when the current one is nearly full. Each chunk handed to the store
/// keeps its whole block alive while the memory tail holds it, so reserving a full block before
/// every read would let a few hundred bytes pin 64 KiB: the tail, counted in bytes, would hold
/// many times its size in memory under a stream of small writes.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(READ_CHUNK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The protocol code runs over any byte stream: here an in-memory one, with a script of
    /// what a Valkey master answers.
    #[tokio::test]
    async fn the_handshake_runs_over_any_stream() {
        let (relay_side, mut master_side) = tokio::io::duplex(4096);
        let (rd, wr) = tokio::io::split(relay_side);
        let mut conn = MasterConn::over(Box::new(rd), Box::new(wr), Duration::from_secs(5));
        let master = tokio::spawn(async move {
            let info = "server_name:valkey\r\nvalkey_version:9.1.2\r\n";
            let script = format!(
                "+PONG\r\n${}\r\n{info}\r\n+OK\r\n+OK\r\n+OK\r\n",
                info.len()
            );
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            master_side.write_all(script.as_bytes()).await.unwrap();
            while !String::from_utf8_lossy(&seen).contains("9.1.2") {
                let n = master_side.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&seen).into_owned()
        });
        let server = conn
            .handshake(Auth::default(), 6380, false, &AnnounceVersion::Auto)
            .await
            .unwrap();
        assert_eq!(server.announced.as_deref(), Some("9.1.2"));
        let sent = master.await.unwrap();
        assert!(
            sent.contains("REPLCONF") && sent.contains("version"),
            "{sent}"
        );
    }

    #[test]
    fn a_valkey_master_is_known_by_its_server_name() {
        let valkey =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.2\r\n";
        let m = MasterServer::from_info(valkey);
        assert_eq!(m.valkey.as_deref(), Some("9.1.2"));
        let redis = MasterServer::from_info("# Server\r\nredis_version:8.2.3\r\n");
        assert_eq!(redis.valkey, None);
        assert_eq!(MasterServer::from_info(""), MasterServer::default());
    }

    #[test]
    fn a_masters_history_and_keys_are_read_from_its_info() {
        let info = "# Replication\r\nrole:master\r\nmaster_replid:aaa\r\nmaster_replid2:bbb\r\nsecond_repl_offset:100\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb2:keys=4,expires=1,avg_ttl=5\r\n";
        let h = MasterServer::from_info(info).history.unwrap();
        assert_eq!(h.keys, 7);
        assert!(h.continues("aaa", 5000) && h.continues("bbb", 100));
        assert!(!h.continues("bbb", 101) && !h.continues("ccc", 1));
        let empty = MasterServer::from_info("master_replid:ccc\r\n# Keyspace\r\n");
        assert_eq!(empty.history.unwrap().keys, 0);
    }

    #[test]
    fn replies_parse_only_once_whole() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$5\r\nm a b\r\n:1\r\n";
        let whole = msg.len() - 4;
        for cut in 0..whole {
            assert!(parse_reply(&msg[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let (reply, used) = parse_reply(msg).unwrap().unwrap();
        assert_eq!(used, whole);
        assert_eq!(
            reply,
            Reply::Array(vec![
                Reply::bulk("message"),
                Reply::bulk("+switch-master"),
                Reply::bulk("m a b")
            ])
        );
        assert_eq!(parse_reply(b"*-1\r\n").unwrap().unwrap().0, Reply::Nil);
        assert!(parse_reply(b"*100000\r\n").is_err());
        assert!(parse_reply(b"$99999999999\r\n").is_err());
        assert!(
            parse_reply(b"*1\r\n*1\r\n").is_err(),
            "nested arrays are refused"
        );
    }

    #[test]
    fn small_reads_share_one_block() {
        let mut buf = BytesMut::new();
        make_room(&mut buf);
        let mut chunks = Vec::new();
        for _ in 0..3 {
            make_room(&mut buf);
            buf.extend_from_slice(&[7; 300]);
            chunks.push(buf.split().freeze());
        }
        for pair in chunks.windows(2) {
            assert_eq!(pair[0].as_ptr().wrapping_add(300), pair[1].as_ptr());
        }
        buf.extend_from_slice(&vec![7; READ_CHUNK - 900 - MIN_READ + 1]);
        let almost_full = buf.split().freeze();
        make_room(&mut buf);
        assert!(
            buf.capacity() >= READ_CHUNK,
            "a fresh block once the last one is nearly full"
        );
        drop(almost_full);
    }
}

//! `replica-relay tail --replicaof HOST PORT`: attaches as one more replica, skips the snapshot
//! (printing its size and format), then prints every command of the live stream, one per line,
//! with the replication offset after it and the db it applies to. Ctrl-C leaves cleanly.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use serde::Serialize;

use crate::config::{AnnounceVersion, MasterAddr};
use crate::resp;
use crate::tls::Dialer;
use crate::upstream::wire::{Auth, MasterConn, PsyncReply};

/// Longest argument shown; the rest is elided with its length.
const SHOWN: usize = 64;

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The relay (cheap) or master (a full sync) to attach to.
    #[arg(long, alias = "slaveof", num_args = 2, value_names = ["HOST", "PORT"], required = true)]
    replicaof: Vec<String>,
    /// Password of the master or relay.
    #[arg(long, env = "REPLICA_RELAY_MASTERAUTH", hide_env_values = true)]
    masterauth: Option<String>,
    /// ACL user, for `AUTH <user> <password>`.
    #[arg(long, env = "REPLICA_RELAY_MASTERUSER")]
    masteruser: Option<String>,
    /// JSON lines instead of text.
    #[arg(long)]
    json: bool,
    /// Stop after this many commands (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

#[derive(Serialize)]
struct Line {
    offset: u64,
    db: Option<u32>,
    command: Vec<String>,
}

pub fn run(args: TailArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(tail(args))
}

async fn tail(args: TailArgs) -> Result<()> {
    let master = MasterAddr::parse(&args.replicaof[0], &args.replicaof[1])?;
    let mut conn = MasterConn::connect(&Dialer::plain(), &master, Duration::from_secs(60)).await?;
    let auth = Auth {
        user: args.masteruser.as_deref(),
        pass: args.masterauth.as_deref(),
    };
    conn.handshake(auth, 0, false, &AnnounceVersion::Auto)
        .await?;
    let PsyncReply::Full { replid, offset } = conn.psync("?", "-1").await? else {
        anyhow::bail!("{master} continued instead of starting a full sync");
    };
    eprintln!("# attached to {master}: replid {replid}, snapshot at offset {offset}");
    let mut framing = conn.payload_header().await?;
    let (mut bytes, mut signature) = (0u64, None);
    while let Some(chunk) = conn.payload_chunk(&mut framing).await? {
        signature.get_or_insert_with(|| {
            String::from_utf8_lossy(&chunk[..chunk.len().min(9)]).into_owned()
        });
        bytes += chunk.len() as u64;
    }
    eprintln!(
        "# snapshot skipped: {bytes} bytes, {}",
        signature.unwrap_or_default()
    );

    conn.send_ack(offset).await?;
    let mut printer = Printer {
        offset,
        db: None,
        json: args.json,
        printed: 0,
        buf: BytesMut::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            chunk = conn.stream_chunk() => printer.feed(chunk?)?,
            _ = tick.tick() => conn.send_ack(printer.offset).await?,
            _ = tokio::signal::ctrl_c() => break,
        }
        if args.count > 0 && printer.printed >= args.count {
            break;
        }
    }
    eprintln!("# detached at offset {}", printer.offset);
    Ok(())
}

struct Printer {
    /// Offset after the last complete command.
    offset: u64,
    db: Option<u32>,
    json: bool,
    printed: u64,
    buf: BytesMut,
}

impl Printer {
    fn feed(&mut self, chunk: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&chunk);
        let mut out = std::io::stdout().lock();
        loop {
            let before = self.buf.len();
            let Some(args) = resp::parse_stream_command(&mut self.buf).with_context(|| {
                format!("protocol error in the stream after offset {}", self.offset)
            })?
            else {
                return Ok(());
            };
            self.offset += (before - self.buf.len()) as u64;
            if args
                .first()
                .is_some_and(|a| a.eq_ignore_ascii_case(b"select"))
            {
                self.db = args
                    .get(1)
                    .and_then(|d| std::str::from_utf8(d).ok()?.parse().ok());
            }
            let command: Vec<String> = args.iter().map(|a| show(a)).collect();
            let line = Line {
                offset: self.offset,
                db: self.db,
                command,
            };
            if self.json {
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
            } else {
                let db = line.db.map_or("db?".to_string(), |d| format!("db{d}"));
                writeln!(out, "{} {db} {}", line.offset, line.command.join(" "))?;
            }
            self.printed += 1;
        }
    }
}

/// An argument as redis-cli would quote it, cut after `SHOWN` bytes.
fn show(arg: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in &arg[..arg.len().min(SHOWN)] {
        match b {
            b'"' | b'\\' => s.extend(['\\', b as char]),
            0x20..=0x7e => s.push(b as char),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    if arg.len() > SHOWN {
        s.push_str(&format!("...({} bytes)", arg.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_and_cut() {
        assert_eq!(show(b"a\"b\n\x01"), r#""a\"b\n\x01""#);
        assert!(show(&[b'x'; 100]).ends_with("...(100 bytes)"));
    }

    #[test]
    fn commands_split_across_chunks_advance_the_offset() {
        let mut p = Printer {
            offset: 10,
            db: None,
            json: true,
            printed: 0,
            buf: BytesMut::new(),
        };
        let stream = b"*2\r\n$6\r\nSELECT\r\n$1\r\n5\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        p.feed(Bytes::from_static(&stream[..30])).unwrap();
        assert_eq!((p.offset, p.db, p.printed), (33, Some(5), 1));
        p.feed(Bytes::from_static(&stream[30..])).unwrap();
        assert_eq!((p.offset, p.printed), (10 + stream.len() as u64, 2));
    }
}

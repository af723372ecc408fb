//! RESP framing for the relay's own clients (replicas in their handshake, redis-cli, probes).
//!
//! Commands from clients are parsed with hard bounds checked before anything is buffered, so a
//! client announcing a gigabyte bulk gets a protocol error instead of an allocation. Replies are
//! encoded straight into the connection's output buffer.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest inline command (Redis' PROTO_INLINE_MAX_SIZE).
pub const MAX_INLINE: usize = 64 * 1024;
/// Most arguments in one command: no relay command needs more than a handful.
pub const MAX_ARGS: usize = 1024;
/// Longest argument: passwords, addresses and capability names are all far shorter.
pub const MAX_BULK: usize = 64 * 1024;
/// Longest `*<n>` or `$<n>` header line, digits and sign included.
const MAX_HEADER: usize = 32;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// Parses one command from the front of `buf`. `Ok(None)` means more bytes are needed; an empty
/// argument list is a bare newline (replicas send those as keepalives).
pub fn parse_command(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, Limits::CLIENT),
        Some(_) => parse_inline(buf),
    }
}

/// Bounds on a multibulk command, checked before anything is buffered.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub args: usize,
    pub bulk: usize,
}

impl Limits {
    /// For the relay's own clients: replication and admin commands are small.
    pub const CLIENT: Limits = Limits {
        args: MAX_ARGS,
        bulk: MAX_BULK,
    };
    /// For commands of the replication stream: Redis' own proto-max-bulk-len default.
    pub const STREAM: Limits = Limits {
        args: 1 << 20,
        bulk: 512 << 20,
    };
}

/// Parses one multibulk command of the replication stream, within `Limits::STREAM`.
pub fn parse_stream_command(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    parse_multibulk(buf, Limits::STREAM)
}

fn parse_multibulk(
    buf: &mut BytesMut,
    limits: Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some((count, mut pos)) = header(buf, 0, ProtocolError::MultibulkLength)? else {
        return Ok(None);
    };
    if count > limits.args as i64 {
        return Err(ProtocolError::MultibulkLength);
    }
    let mut spans = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count.max(0) {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&c) => return Err(ProtocolError::ExpectedBulk(c as char)),
        }
        let Some((len, start)) = header(buf, pos, ProtocolError::BulkLength)? else {
            return Ok(None);
        };
        if !(0..=limits.bulk as i64).contains(&len) {
            return Err(ProtocolError::BulkLength);
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::BulkLength);
        }
        spans.push((start, end));
        pos = end + 2;
    }
    let frame = buf.split_to(pos).freeze();
    Ok(Some(
        spans.into_iter().map(|(s, e)| frame.slice(s..e)).collect(),
    ))
}

/// Reads `<prefix><integer>\r\n` at `at`; returns the integer and the position after the line.
fn header(
    buf: &[u8],
    at: usize,
    err: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &buf[at..buf.len().min(at + MAX_HEADER)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return if window.len() == MAX_HEADER {
            Err(err)
        } else {
            Ok(None)
        };
    };
    let line = window[1..nl].strip_suffix(b"\r").ok_or(err.clone())?;
    let n = std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(err)?;
    Ok(Some((n, at + nl + 1)))
}

fn parse_inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_INLINE + 1)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_INLINE {
            Err(ProtocolError::InlineTooBig)
        } else {
            Ok(None)
        };
    };
    let line = buf.split_to(nl + 1);
    split_inline(&line[..nl]).map(Some)
}

/// Splits an inline command on whitespace, honouring double quotes like redis-cli input.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut cur = Vec::new();
    let (mut in_arg, mut quoted) = (false, false);
    for &b in line {
        match b {
            b'"' => {
                quoted = !quoted;
                in_arg = true;
            }
            b' ' | b'\t' | b'\r' if !quoted => {
                if in_arg {
                    args.push(Bytes::from(std::mem::take(&mut cur)));
                    in_arg = false;
                }
            }
            _ => {
                cur.push(b);
                in_arg = true;
            }
        }
    }
    if quoted {
        return Err(ProtocolError::UnbalancedQuotes);
    }
    if in_arg {
        args.push(Bytes::from(cur));
    }
    Ok(args)
}

/// A reply to a client, in RESP2.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    /// The text after `-`, including the error code (`ERR ...`, `NOAUTH ...`).
    Error(String),
    Int(i64),
    Bulk(Bytes),
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    pub fn err(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    pub fn bulk(s: impl Into<Bytes>) -> Reply {
        Reply::Bulk(s.into())
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(s) => line(out, b'-', s.as_bytes()),
            Reply::Int(n) => line(out, b':', n.to_string().as_bytes()),
            Reply::Nil => out.put_slice(b"$-1\r\n"),
            Reply::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.put_slice(b);
                out.put_slice(b"\r\n");
            }
            Reply::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                items.iter().for_each(|r| r.encode(out));
            }
        }
    }
}

/// Simple strings and errors may not carry line breaks; they would split the reply.
fn line(out: &mut BytesMut, prefix: u8, body: &[u8]) {
    out.put_u8(prefix);
    out.extend(
        body.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.put_slice(b"\r\n");
}

/// Encodes a command as a RESP multibulk, the way a replica writes to its master.
pub fn command(args: &[&[u8]]) -> BytesMut {
    let mut out = BytesMut::new();
    Reply::Array(
        args.iter()
            .map(|a| Reply::Bulk(Bytes::copy_from_slice(a)))
            .collect(),
    )
    .encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> (Result<Option<Vec<Bytes>>, ProtocolError>, usize) {
        let mut buf = BytesMut::from(input);
        let r = parse_command(&mut buf);
        (r, buf.len())
    }

    #[test]
    fn multibulk_pipelined() {
        let mut buf = BytesMut::from(
            &b"*1\r\n$4\r\nPING\r\n*3\r\n$8\r\nREPLCONF\r\n$4\r\ncapa\r\n$3\r\neof\r\n"[..],
        );
        assert_eq!(
            parse_command(&mut buf).unwrap().unwrap(),
            vec![Bytes::from("PING")]
        );
        let args = parse_command(&mut buf).unwrap().unwrap();
        assert_eq!(
            args,
            vec![Bytes::from("REPLCONF"), "capa".into(), "eof".into()]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn half_command_waits_for_more() {
        let (r, left) = parse(b"*2\r\n$4\r\nAUTH\r\n$6\r\nsec");
        assert_eq!(r, Ok(None));
        assert_eq!(left, 21);
    }

    #[test]
    fn huge_lengths_are_refused_before_buffering() {
        assert_eq!(
            parse(b"*1\r\n$999999999999\r\n").0,
            Err(ProtocolError::BulkLength)
        );
        assert_eq!(
            parse(b"*99999999\r\n").0,
            Err(ProtocolError::MultibulkLength)
        );
        assert_eq!(parse(b"*1\r\n$-5\r\n").0, Err(ProtocolError::BulkLength));
        let long = [b'*']
            .iter()
            .chain([b'1'; 64].iter())
            .copied()
            .collect::<Vec<_>>();
        assert_eq!(parse(&long).0, Err(ProtocolError::MultibulkLength));
    }

    #[test]
    fn garbage_in_multibulk_is_an_error() {
        assert_eq!(
            parse(b"*1\r\nxyz\r\n").0,
            Err(ProtocolError::ExpectedBulk('x'))
        );
        assert_eq!(parse(b"*x\r\n").0, Err(ProtocolError::MultibulkLength));
        assert_eq!(
            parse(b"*1\r\n$3\r\nabcde\r\n").0,
            Err(ProtocolError::BulkLength)
        );
    }

    #[test]
    fn inline_commands_and_newlines() {
        assert_eq!(parse(b"\n").0, Ok(Some(vec![])));
        let (r, _) = parse(b"AUTH \"pass word\" x\r\n");
        assert_eq!(
            r.unwrap().unwrap(),
            vec![Bytes::from("AUTH"), "pass word".into(), "x".into()]
        );
        assert_eq!(
            parse(b"PING \"x\r\n").0,
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse(&vec![b'a'; MAX_INLINE + 2]).0,
            Err(ProtocolError::InlineTooBig)
        );
    }

    #[test]
    fn replies_encode_as_resp2() {
        let mut out = BytesMut::new();
        Reply::Array(vec![
            Reply::bulk("master"),
            Reply::Int(42),
            Reply::Nil,
            Reply::ok(),
        ])
        .encode(&mut out);
        Reply::err("ERR bad\r\nline").encode(&mut out);
        assert_eq!(
            &out[..],
            b"*4\r\n$6\r\nmaster\r\n:42\r\n$-1\r\n+OK\r\n-ERR bad  line\r\n"
        );
    }
}

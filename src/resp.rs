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

/// Parses the commands of one client's query buffer. What it learned of a command that has not
/// fully arrived (the argument count, the arguments so far, how far an inline line was searched
/// for its newline) is kept between calls, so each byte is examined a bounded number of times
/// however the command is split into reads: a client sending one byte at a time costs what it
/// sends, not its square.
#[derive(Debug, Default)]
pub struct CommandParser {
    /// The multibulk being read: its argument count and the spans of its complete arguments.
    multibulk: Option<(usize, Vec<(usize, usize)>)>,
    /// Where the next element of the multibulk begins.
    pos: usize,
    /// Bytes of an inline line already searched for its newline.
    searched: usize,
    /// Bytes examined so far, for the tests' bound on the work per byte.
    #[cfg(test)]
    steps: u64,
}

impl CommandParser {
    /// Parses one command from the front of `buf`. `Ok(None)` means more bytes are needed; an
    /// empty argument list is a bare newline (replicas send those as keepalives).
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let parsed = match buf.first() {
            None => Ok(None),
            Some(b'*') => self.parse_multibulk(buf, Limits::CLIENT),
            Some(_) => self.parse_inline(buf),
        };
        if !matches!(parsed, Ok(None)) {
            self.multibulk = None;
            (self.pos, self.searched) = (0, 0);
        }
        parsed
    }

    fn parse_multibulk(
        &mut self,
        buf: &mut BytesMut,
        limits: Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if self.multibulk.is_none() {
            let Some((count, pos)) = self.header(buf, 0, ProtocolError::MultibulkLength)? else {
                return Ok(None);
            };
            if count > limits.args as i64 {
                return Err(ProtocolError::MultibulkLength);
            }
            let count = count.max(0) as usize;
            self.multibulk = Some((count, Vec::with_capacity(count)));
            self.pos = pos;
        }
        while let Some((count, spans)) = &self.multibulk
            && spans.len() < *count
        {
            let Some(span) = self.bulk(buf, limits)? else {
                return Ok(None);
            };
            self.pos = span.1 + 2;
            if let Some((_, spans)) = &mut self.multibulk {
                spans.push(span);
            }
        }
        let spans = self.multibulk.take().map(|m| m.1).unwrap_or_default();
        let frame = buf.split_to(self.pos).freeze();
        Ok(Some(
            spans.into_iter().map(|(s, e)| frame.slice(s..e)).collect(),
        ))
    }

    /// The span of the bulk argument at `self.pos`, once it has fully arrived.
    fn bulk(
        &mut self,
        buf: &[u8],
        limits: Limits,
    ) -> Result<Option<(usize, usize)>, ProtocolError> {
        match buf.get(self.pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&c) => return Err(ProtocolError::ExpectedBulk(c as char)),
        }
        let Some((len, start)) = self.header(buf, self.pos, ProtocolError::BulkLength)? else {
            return Ok(None);
        };
        if !(0..=limits.bulk as i64).contains(&len) {
            return Err(ProtocolError::BulkLength);
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        self.count(2);
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::BulkLength);
        }
        Ok(Some((start, end)))
    }

    fn header(
        &mut self,
        buf: &[u8],
        at: usize,
        err: ProtocolError,
    ) -> Result<Option<(i64, usize)>, ProtocolError> {
        #[cfg(test)]
        {
            let window = &buf[at..buf.len().min(at + MAX_HEADER)];
            self.count(
                window
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(window.len(), |nl| nl + 1),
            );
        }
        header(buf, at, err)
    }

    fn parse_inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let window = &buf[self.searched..buf.len().min(MAX_INLINE + 1)];
        let newline = window.iter().position(|&b| b == b'\n');
        self.count(newline.map_or(window.len(), |nl| nl + 1));
        let Some(nl) = newline else {
            if buf.len() > MAX_INLINE {
                return Err(ProtocolError::InlineTooBig);
            }
            self.searched = buf.len();
            return Ok(None);
        };
        let line = buf.split_to(self.searched + nl + 1);
        self.count(line.len());
        split_inline(&line[..line.len() - 1]).map(Some)
    }

    #[cfg(test)]
    fn count(&mut self, n: usize) {
        self.steps += n as u64;
    }

    #[cfg(not(test))]
    fn count(&mut self, _: usize) {}
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

/// Parses one multibulk command of the replication stream, within `Limits::STREAM`, from a
/// buffer that holds it whole or will (the stream of a master the caller trusts).
pub fn parse_stream_command(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    CommandParser::default().parse_multibulk(buf, Limits::STREAM)
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
    use proptest::prelude::*;

    fn parse(input: &[u8]) -> (Result<Option<Vec<Bytes>>, ProtocolError>, usize) {
        let mut buf = BytesMut::from(input);
        let r = CommandParser::default().parse(&mut buf);
        (r, buf.len())
    }

    #[test]
    fn multibulk_pipelined() {
        let mut buf = BytesMut::from(
            &b"*1\r\n$4\r\nPING\r\n*3\r\n$8\r\nREPLCONF\r\n$4\r\ncapa\r\n$3\r\neof\r\n"[..],
        );
        let mut parser = CommandParser::default();
        assert_eq!(
            parser.parse(&mut buf).unwrap().unwrap(),
            vec![Bytes::from("PING")]
        );
        let args = parser.parse(&mut buf).unwrap().unwrap();
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

    /// Feeds `input` in pieces of the given sizes, parsing after each; returns what was parsed
    /// (or the first error) and the bytes examined.
    fn feed(input: &[u8], pieces: &[usize]) -> (Vec<Result<Vec<Bytes>, ProtocolError>>, u64, u64) {
        let (mut parser, mut buf) = (CommandParser::default(), BytesMut::new());
        let (mut out, mut calls, mut rest) = (Vec::new(), 0, input);
        for &n in pieces.iter().chain(std::iter::repeat(&usize::MAX)) {
            let (now, later) = rest.split_at(n.min(rest.len()));
            buf.extend_from_slice(now);
            rest = later;
            loop {
                calls += 1;
                match parser.parse(&mut buf) {
                    Ok(Some(args)) => out.push(Ok(args)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e));
                        return (out, parser.steps, calls);
                    }
                }
            }
            if rest.is_empty() {
                return (out, parser.steps, calls);
            }
        }
        unreachable!()
    }

    /// Frames close to valid RESP, so that most inputs get past the first byte.
    fn frames() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"*2\r\n".to_vec()),
            Just(b"*1\r\n".to_vec()),
            Just(b"*-1\r\n".to_vec()),
            Just(b"$4\r\nPING\r\n".to_vec()),
            Just(b"$0\r\n\r\n".to_vec()),
            Just(b"$99999999\r\n".to_vec()),
            Just(b"PING \"a b\"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..40),
        ];
        prop::collection::vec(piece, 0..60).prop_map(|p| p.concat())
    }

    proptest! {
        #[test]
        fn any_split_parses_alike_and_costs_what_is_sent(
            input in frames(),
            pieces in prop::collection::vec(1usize..20, 0..40),
        ) {
            let (whole, _, _) = feed(&input, &[]);
            let (split, steps, calls) = feed(&input, &pieces);
            prop_assert_eq!(&whole, &split);
            let bound = 2 * input.len() as u64 + (MAX_HEADER as u64 + 2) * calls;
            prop_assert!(steps <= bound, "{} steps for {} bytes in {} calls", steps, input.len(), calls);
        }

        #[test]
        fn byte_at_a_time_is_linear(args in prop::collection::vec("[a-z]{0,8}", 1..200)) {
            let mut input = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                input.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
            }
            let (parsed, steps, _) = feed(&input, &vec![1; input.len()]);
            prop_assert_eq!(parsed.len(), 1);
            prop_assert!(steps <= (MAX_HEADER as u64 + 4) * input.len() as u64);
        }
    }
}

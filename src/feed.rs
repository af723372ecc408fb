//! Incremental scanner for the replication stream: finds command boundaries and recognises the
//! few commands the relay reacts to, without ever buffering a command's payload.
//!
//! The stream carries only multibulk arrays of bulk strings (plus, tolerated by every replica,
//! empty inline lines). A big `SET` may be hundreds of megabytes, so the scanner skips bulk bodies
//! and keeps only the first bytes of the first two arguments.

/// How many bytes of an argument are kept for recognising the command.
const CAPTURE: usize = 16;
/// Longest `*<n>` / `$<n>` line in a well-formed stream.
const MAX_HEADER: usize = 24;

/// What the relay needs to know about a complete command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Getack,
    Ping,
    Select(u32),
    /// Any other command, by its lowercase name if it is one of `KNOWN`, else "other".
    Data(&'static str),
}

/// The name the scanner reports for `name`: itself (lowercase) when it is one it knows, which
/// is what a search for a command can match.
pub fn known_name(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    KNOWN.iter().find(|k| **k == lower).copied()
}

/// Command names counted one by one; the rest are counted as "other", so the set of names
/// (and of metric labels) stays bounded whatever the stream carries.
const KNOWN: [&str; 112] = [
    "append",
    "bitfield",
    "bitop",
    "blmove",
    "blmpop",
    "blpop",
    "brpop",
    "brpoplpush",
    "bzmpop",
    "bzpopmax",
    "bzpopmin",
    "copy",
    "decr",
    "decrby",
    "del",
    "eval",
    "evalsha",
    "exec",
    "expire",
    "expireat",
    "fcall",
    "flushall",
    "flushdb",
    "function",
    "geoadd",
    "georadius",
    "geosearchstore",
    "getdel",
    "getex",
    "getset",
    "hdel",
    "hexpire",
    "hexpireat",
    "hincrby",
    "hincrbyfloat",
    "hmset",
    "hpersist",
    "hpexpire",
    "hpexpireat",
    "hset",
    "hsetnx",
    "incr",
    "incrby",
    "incrbyfloat",
    "linsert",
    "lmove",
    "lmpop",
    "lpop",
    "lpush",
    "lpushx",
    "lrem",
    "lset",
    "ltrim",
    "move",
    "mset",
    "msetnx",
    "multi",
    "persist",
    "pexpire",
    "pexpireat",
    "pfadd",
    "pfcount",
    "pfmerge",
    "psetex",
    "publish",
    "rename",
    "renamenx",
    "replconf",
    "restore",
    "rpop",
    "rpoplpush",
    "rpush",
    "rpushx",
    "sadd",
    "script",
    "sdiffstore",
    "set",
    "setbit",
    "setex",
    "setnx",
    "setrange",
    "sinterstore",
    "smove",
    "sort",
    "spop",
    "spublish",
    "srem",
    "sunionstore",
    "swapdb",
    "unlink",
    "xack",
    "xadd",
    "xautoclaim",
    "xclaim",
    "xdel",
    "xgroup",
    "xsetid",
    "xtrim",
    "zadd",
    "zdiffstore",
    "zincrby",
    "zinterstore",
    "zmpop",
    "zpopmax",
    "zpopmin",
    "zrangestore",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "zunionstore",
    "hgetdel",
];

fn known(name: &[u8]) -> &'static str {
    let lower = name.to_ascii_lowercase();
    let lower = std::str::from_utf8(&lower).unwrap_or("");
    KNOWN
        .iter()
        .find(|k| **k == lower)
        .copied()
        .unwrap_or("other")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("protocol error in the replication stream at offset {offset}: {what}")]
pub struct FeedError {
    pub offset: u64,
    pub what: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between commands: expecting `*` or an empty inline line.
    Boundary,
    /// Inside a bare `\r\n` keepalive line.
    EmptyLine,
    ArrayHeader,
    BulkStart,
    BulkHeader,
    BulkBody(u64),
    BulkCr,
    BulkLf,
}

/// Scans stream bytes in the order they are stored; `offset` is the offset of the next byte.
#[derive(Debug, Clone)]
pub struct Scanner {
    offset: u64,
    state: State,
    header: Vec<u8>,
    args_left: u64,
    arg: usize,
    captured: [Vec<u8>; 2],
    /// Calls of `step`, for the tests' bound on the work per byte.
    #[cfg(test)]
    steps: u64,
}

impl Scanner {
    /// A scanner positioned at a command boundary at `offset`.
    pub fn at(offset: u64) -> Scanner {
        Scanner {
            offset,
            state: State::Boundary,
            header: Vec::with_capacity(MAX_HEADER),
            args_left: 0,
            arg: 0,
            captured: [Vec::with_capacity(CAPTURE), Vec::with_capacity(CAPTURE)],
            #[cfg(test)]
            steps: 0,
        }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    #[cfg(test)]
    pub fn at_boundary(&self) -> bool {
        self.state == State::Boundary
    }

    /// Feeds `data`; `on_command` gets the index just past each complete command and the command.
    pub fn scan(
        &mut self,
        data: &[u8],
        mut on_command: impl FnMut(usize, Command),
    ) -> Result<(), FeedError> {
        let mut i = 0;
        while i < data.len() {
            let n = self.step(&data[i..])?;
            i += n;
            self.offset += n as u64;
            if self.state == State::Boundary && self.arg > 0 {
                on_command(i, self.recognise());
                self.arg = 0;
            }
        }
        Ok(())
    }

    /// Consumes at least one byte of `data`, returns how many.
    fn step(&mut self, data: &[u8]) -> Result<usize, FeedError> {
        #[cfg(test)]
        {
            self.steps += 1;
        }
        let b = data[0];
        self.state = match (self.state, b) {
            (State::Boundary, b'*') => {
                self.header.clear();
                State::ArrayHeader
            }
            (State::Boundary, b'\n') | (State::EmptyLine, b'\n') => State::Boundary,
            (State::Boundary, b'\r') => State::EmptyLine,
            (State::Boundary, _) => return Err(self.error("expected '*' at a command boundary")),
            (State::EmptyLine, _) => return Err(self.error("stray '\\r' between commands")),
            (State::ArrayHeader | State::BulkHeader, _) => return self.header_line(data),
            (State::BulkStart, b'$') => {
                self.header.clear();
                State::BulkHeader
            }
            (State::BulkStart, _) => return Err(self.error("expected '$' for a bulk argument")),
            (State::BulkBody(left), _) => return Ok(self.body(data, left)),
            (State::BulkCr, b'\r') => State::BulkLf,
            (State::BulkLf, b'\n') => {
                self.arg += 1;
                self.args_left -= 1;
                if self.args_left == 0 {
                    State::Boundary
                } else {
                    State::BulkStart
                }
            }
            (State::BulkCr | State::BulkLf, _) => {
                return Err(self.error("bulk argument not terminated by CRLF"));
            }
        };
        Ok(1)
    }

    /// Takes a header line's bytes up to and including its `\n` at once, not byte by byte: the
    /// headers are most of what the scanner reads in a stream of small commands.
    fn header_line(&mut self, data: &[u8]) -> Result<usize, FeedError> {
        let room = MAX_HEADER - self.header.len();
        let window = &data[..data.len().min(room + 1)];
        match window.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                self.header.extend_from_slice(&data[..nl]);
                let at = self.offset + nl as u64;
                self.state = self
                    .end_header()
                    .map_err(|e| FeedError { offset: at, ..e })?;
                Ok(nl + 1)
            }
            None if window.len() > room => Err(FeedError {
                offset: self.offset + room as u64,
                what: "header line too long",
            }),
            None => {
                self.header.extend_from_slice(window);
                Ok(window.len())
            }
        }
    }

    fn end_header(&mut self) -> Result<State, FeedError> {
        let n = std::str::from_utf8(self.header.strip_suffix(b"\r").unwrap_or(&[]))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| self.error("bad length in header"))?;
        Ok(match self.state {
            State::ArrayHeader if n == 0 => return Err(self.error("empty multibulk")),
            State::ArrayHeader => {
                self.args_left = n;
                self.arg = 0;
                self.captured.iter_mut().for_each(Vec::clear);
                State::BulkStart
            }
            _ if n == 0 => State::BulkCr,
            _ => State::BulkBody(n),
        })
    }

    /// Skips bulk payload, keeping the start of the first two arguments.
    fn body(&mut self, data: &[u8], left: u64) -> usize {
        let n = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if let Some(keep) = self.captured.get_mut(self.arg) {
            let room = CAPTURE.saturating_sub(keep.len());
            keep.extend_from_slice(&data[..n.min(room)]);
        }
        let left = left - n as u64;
        self.state = if left == 0 {
            State::BulkCr
        } else {
            State::BulkBody(left)
        };
        n
    }

    fn recognise(&self) -> Command {
        let name = &self.captured[0];
        let first = &self.captured[1];
        if name.eq_ignore_ascii_case(b"ping") {
            Command::Ping
        } else if name.eq_ignore_ascii_case(b"replconf") && first.eq_ignore_ascii_case(b"getack") {
            Command::Getack
        } else if name.eq_ignore_ascii_case(b"select") {
            std::str::from_utf8(first)
                .ok()
                .and_then(|s| s.parse().ok())
                .map_or(Command::Data("select"), Command::Select)
        } else {
            Command::Data(known(name))
        }
    }

    fn error(&self, what: &'static str) -> FeedError {
        FeedError {
            offset: self.offset,
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn commands(input: &[u8], split: usize) -> Result<Vec<(u64, Command)>, FeedError> {
        let mut s = Scanner::at(100);
        let mut out = Vec::new();
        let (a, b) = input.split_at(split);
        for part in [a, b] {
            let base = s.offset();
            s.scan(part, |end, c| out.push((base + end as u64, c)))?;
        }
        assert!(s.at_boundary());
        Ok(out)
    }

    const STREAM: &[u8] = b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n\r\n*1\r\n$4\r\nPING\r\n*3\r\n$8\r\nREPLCONF\r\n$6\r\nGETACK\r\n$1\r\n*\r\n";

    #[test]
    fn finds_boundaries_at_every_split_point() {
        let expected = vec![
            (100 + 23, Command::Select(3)),
            (100 + 23 + 31, Command::Data("set")),
            (100 + 23 + 31 + 2 + 14, Command::Ping),
            (100 + STREAM.len() as u64, Command::Getack),
        ];
        for split in 0..=STREAM.len() {
            assert_eq!(
                commands(STREAM, split).unwrap(),
                expected,
                "split at {split}"
            );
        }
    }

    #[test]
    fn rejects_what_no_master_sends() {
        let err = commands(b"*1\r\n$4\r\nPING\r\nGARBAGE\r\n", 0).unwrap_err();
        assert_eq!(err.offset, 114);
        assert!(commands(b"*1\r\n$4\r\nPINGXX", 0).is_err());
        assert!(commands(b"*1\r\n:4\r\n", 0).is_err());
        assert!(commands(b"*1\r\n$abc\r\n", 0).is_err());
        assert!(commands(b"*99999999999999999999999999\r\n", 0).is_err());
    }

    #[test]
    fn header_errors_name_the_offending_byte_wherever_the_chunks_split() {
        let long = [&b"*"[..], &[b'1'; MAX_HEADER + 5]].concat();
        for split in 0..10 {
            assert_eq!(commands(b"*1\r\n$abc\r\n", split).unwrap_err().offset, 109);
            let err = commands(&long, split).unwrap_err();
            assert_eq!(
                (err.offset, err.what),
                (101 + MAX_HEADER as u64, "header line too long")
            );
        }
    }

    #[test]
    fn empty_bulk_and_large_bulk() {
        let mut big = b"*2\r\n$3\r\nSET\r\n$100000\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', 100000));
        big.extend_from_slice(b"\r\n*1\r\n$0\r\n\r\n");
        let got = commands(&big, 5000).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0, 100 + big.len() as u64);
    }

    /// Bytes close to a replication stream, so that most inputs get past the first byte.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(STREAM.to_vec()),
            Just(b"*3\r\n".to_vec()),
            Just(b"$3\r\nSET\r\n".to_vec()),
            Just(b"$100\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..40),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    /// Scans `input` in pieces; returns the commands found, the error if any, and the steps.
    fn scan_in(input: &[u8], piece: usize) -> (Vec<(u64, Command)>, Option<FeedError>, u64) {
        let mut s = Scanner::at(0);
        let mut out = Vec::new();
        for part in input.chunks(piece.max(1)) {
            let base = s.offset();
            if let Err(e) = s.scan(part, |end, c| out.push((base + end as u64, c))) {
                return (out, Some(e), s.steps);
            }
        }
        (out, None, s.steps)
    }

    proptest! {
        #[test]
        fn any_chunking_scans_alike_in_at_most_one_step_per_byte(
            input in stream(),
            piece in 1usize..64,
        ) {
            let (whole, whole_err, _) = scan_in(&input, input.len());
            let (split, split_err, steps) = scan_in(&input, piece);
            prop_assert_eq!(whole_err.as_ref().map(|e| e.offset), split_err.as_ref().map(|e| e.offset));
            if split_err.is_none() {
                prop_assert_eq!(whole, split);
            }
            prop_assert!(steps <= input.len() as u64, "{} steps for {} bytes", steps, input.len());
        }
    }
}

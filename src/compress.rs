//! A compressed link between two relays (PROTOCOL §13): everything after the PSYNC reply, the
//! snapshot and the stream, in zstd frames of the project's own framing, one compression
//! context for the whole link so a small frame still refers to what came before.
//!
//! Only relays speak it. The far relay asks for it (`REPLCONF relay-compression zstd:<level>:
//! <delay-us>`) only of an upstream whose INFO names a `relay_version`, so a real master never
//! sees it; a relay that does not know it answers an error, and the link stays plain.
//!
//! A frame: `plain_len: u32 LE`, `wire_len: u32 LE`, `crc32c(plain): u32 LE`, then `wire_len`
//! bytes of zstd output flushed at the frame's end. The receiver checks both lengths against
//! bounds before it allocates, and the checksum of what it decompressed before it passes a byte
//! on: a damaged frame ends the link (the relay resumes with a partial resync from what it
//! stored), it is never stored.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use prometheus::{Counter, IntCounter, Opts};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use zstd::stream::raw::{Decoder, Encoder, InBuffer, Operation, OutBuffer};

use crate::config::ZstdLink;
use crate::duplex::{Reader, Writer};
use crate::instruments::PREFIX;

/// The REPLCONF option the far relay asks with.
pub const REPLCONF_OPTION: &str = "relay-compression";
/// Most stream bytes in one frame.
pub const MAX_FRAME: usize = 1 << 20;
const HEADER: usize = 12;
/// Largest window the receiver accepts (level 19 uses 8 MB): a hostile sender cannot make it
/// hold more.
const WINDOW_LOG_MAX: u32 = 23;
/// Bytes between the session and the sender's task: a stalled link fills it, and the session's
/// write timeout ends the session as it would on a plain link.
const PIPE: usize = 256 * 1024;

/// The REPLCONF value a far relay asks with: `zstd:<level>:<delay in µs>`.
pub fn request(link: &ZstdLink) -> String {
    format!("zstd:{}:{}", link.level, link.max_delay.as_micros())
}

/// A far relay's request, refused when malformed or out of bounds.
pub fn parse_request(value: &str) -> Result<ZstdLink, String> {
    let mut parts = value.split(':');
    let (Some("zstd"), Some(level), Some(delay), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "ERR {REPLCONF_OPTION} wants zstd:<level>:<delay-us>, got '{value}'"
        ));
    };
    match (level.parse::<i64>(), delay.parse::<u64>()) {
        (Ok(level), Ok(us)) => ZstdLink::new(level, Duration::from_micros(us))
            .map_err(|e| format!("ERR {REPLCONF_OPTION}: {e}")),
        _ => Err(format!("ERR {REPLCONF_OPTION}: '{value}' holds no numbers")),
    }
}

/// What one side of compressed links counts: bytes on the wire, bytes of stream, and the time
/// spent compressing or decompressing them.
#[derive(Clone)]
pub struct Counters {
    pub wire: IntCounter,
    pub stream: IntCounter,
    pub seconds: Counter,
}

impl Counters {
    /// `<side>_compression_*`, e.g. `upstream` for what a far relay receives.
    pub fn new(side: &str, what: &str) -> Counters {
        let opts = |name: &str, help: String| {
            Opts::new(format!("{side}_compression_{name}"), help).namespace(PREFIX)
        };
        Counters {
            wire: IntCounter::with_opts(opts(
                "wire_bytes_total",
                format!("Bytes on the wire of compressed links ({what})."),
            ))
            .expect("a valid metric"),
            stream: IntCounter::with_opts(opts(
                "stream_bytes_total",
                format!("Replication bytes carried by compressed links ({what})."),
            ))
            .expect("a valid metric"),
            seconds: Counter::with_opts(opts(
                "seconds_total",
                format!("Time spent compressing or decompressing ({what})."),
            ))
            .expect("a valid metric"),
        }
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.wire.clone()),
            Box::new(self.stream.clone()),
            Box::new(self.seconds.clone()),
        ]
    }

    /// Wire bytes per stream byte, 1 before anything crossed.
    pub fn ratio(&self) -> f64 {
        match self.stream.get() {
            0 => 1.0,
            n => self.wire.get() as f64 / n as f64,
        }
    }

    fn count(&self, wire: usize, stream: usize, since: Instant) {
        self.wire.inc_by(wire as u64);
        self.stream.inc_by(stream as u64);
        self.seconds.inc_by(since.elapsed().as_secs_f64());
    }
}

/// A writer that compresses what is written to it onto `out`: a task reads the bytes through
/// a bounded pipe, waits up to `max_delay` for more (or a full frame), compresses them off the
/// runtime and writes the frame. The task ends, flushing what it holds, when the writer is
/// dropped, and at once when a frame cannot be written within `timeout` (the link stalled);
/// a write fails once `out` failed.
pub fn sender(
    out: Writer,
    settings: ZstdLink,
    counters: Counters,
    timeout: Duration,
) -> io::Result<Writer> {
    let mut encoder = Encoder::new(settings.level)?;
    encoder.set_parameter(zstd::stream::raw::CParameter::WindowLog(WINDOW_LOG_MAX))?;
    let (writer, reader) = tokio::io::duplex(PIPE);
    let link = Outgoing {
        out,
        settings,
        counters,
        timeout,
    };
    tokio::spawn(link.send_frames(reader, encoder));
    Ok(Box::new(writer))
}

/// The sending end of a compressed link.
struct Outgoing {
    out: Writer,
    settings: ZstdLink,
    counters: Counters,
    timeout: Duration,
}

impl Outgoing {
    async fn send_frames(
        mut self,
        mut input: tokio::io::DuplexStream,
        mut encoder: Encoder<'static>,
    ) {
        let mut pending = BytesMut::with_capacity(MAX_FRAME);
        loop {
            let open = gather(&mut input, &mut pending, self.settings.max_delay).await;
            if !pending.is_empty() {
                let plain = pending.split().freeze();
                let counters = self.counters.clone();
                let Ok(Ok((back, frame))) =
                    tokio::task::spawn_blocking(move || frame(encoder, &plain, &counters)).await
                else {
                    return;
                };
                encoder = back;
                let sent = tokio::time::timeout(self.timeout, self.out.write_all(&frame)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return;
                }
            }
            if !open {
                let _ = tokio::time::timeout(self.timeout, self.out.shutdown()).await;
                return;
            }
        }
    }
}

/// Reads into `pending` until a frame is full, or `max_delay` after the first byte; false
/// once the writer is gone.
async fn gather(
    input: &mut tokio::io::DuplexStream,
    pending: &mut BytesMut,
    max_delay: Duration,
) -> bool {
    // Room for a whole frame; the last frame's buffer is reclaimed once it has been sent.
    pending.reserve(MAX_FRAME - pending.len());
    let mut deadline = None;
    while pending.len() < MAX_FRAME {
        let room = MAX_FRAME - pending.len();
        let mut limited = (&mut *input).take(room as u64);
        let read = limited.read_buf(pending);
        let n = match deadline {
            None => read.await,
            Some(at) => match tokio::time::timeout_at(at, read).await {
                Ok(r) => r,
                Err(_) => return true,
            },
        };
        match n {
            Ok(0) | Err(_) => return false,
            Ok(_) => {
                deadline.get_or_insert(tokio::time::Instant::now() + max_delay);
            }
        }
    }
    true
}

/// One frame of `plain`, compressed with the link's context; blocking (the CPU work).
fn frame(
    mut encoder: Encoder<'static>,
    plain: &[u8],
    counters: &Counters,
) -> io::Result<(Encoder<'static>, Vec<u8>)> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(HEADER + zstd::zstd_safe::compress_bound(plain.len()) + 64);
    out.extend_from_slice(&[0; HEADER]);
    let mut input = InBuffer::around(plain);
    while input.pos < plain.len() {
        reserve(&mut out);
        let pos = out.len();
        encoder.run(&mut input, &mut OutBuffer::around_pos(&mut out, pos))?;
    }
    loop {
        reserve(&mut out);
        let pos = out.len();
        if encoder.flush(&mut OutBuffer::around_pos(&mut out, pos))? == 0 {
            break;
        }
    }
    let wire = (out.len() - HEADER) as u32;
    out[0..4].copy_from_slice(&(plain.len() as u32).to_le_bytes());
    out[4..8].copy_from_slice(&wire.to_le_bytes());
    out[8..12].copy_from_slice(&crc32c::crc32c(plain).to_le_bytes());
    counters.count(out.len(), plain.len(), started);
    Ok((encoder, out))
}

fn reserve(out: &mut Vec<u8>) {
    if out.capacity() - out.len() < 4096 {
        out.reserve(64 * 1024);
    }
}

/// A reader of a compressed link: yields the stream bytes of each frame once its checksum
/// matched. `leftover` holds bytes already read past the PSYNC reply.
pub struct Receiver {
    inner: Reader,
    raw: BytesMut,
    plain: Bytes,
    decoder: Decoder<'static>,
    counters: Counters,
}

impl Receiver {
    pub fn new(inner: Reader, leftover: BytesMut, counters: Counters) -> io::Result<Receiver> {
        let mut decoder = Decoder::new()?;
        decoder.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(WINDOW_LOG_MAX))?;
        Ok(Receiver {
            inner,
            raw: leftover,
            plain: Bytes::new(),
            decoder,
            counters,
        })
    }

    /// The next whole frame's stream bytes, if `raw` holds one.
    fn next_frame(&mut self) -> io::Result<Option<Bytes>> {
        let Some(header) = self.raw.get(..HEADER) else {
            return Ok(None);
        };
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap()) as usize;
        let (plain_len, wire_len, crc) = (word(0), word(4), word(8) as u32);
        if plain_len > MAX_FRAME || wire_len > zstd::zstd_safe::compress_bound(MAX_FRAME) + 1024 {
            return Err(corrupt(format!(
                "a frame of {plain_len} bytes in {wire_len} (at most {MAX_FRAME})"
            )));
        }
        if self.raw.len() < HEADER + wire_len {
            self.raw.reserve(HEADER + wire_len - self.raw.len());
            return Ok(None);
        }
        let started = Instant::now();
        let wire = self.raw.split_to(HEADER + wire_len);
        let mut out = Vec::with_capacity(plain_len);
        let mut input = InBuffer::around(&wire[HEADER..]);
        loop {
            let (read, written) = (input.pos, out.len());
            self.decoder
                .run(&mut input, &mut OutBuffer::around_pos(&mut out, written))
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            let done = input.pos == wire_len && out.len() == plain_len;
            if done || (input.pos, out.len()) == (read, written) {
                break;
            }
        }
        if input.pos != wire_len || out.len() != plain_len {
            return Err(corrupt(format!(
                "{} bytes decompressed where the frame says {plain_len}",
                out.len()
            )));
        }
        if crc32c::crc32c(&out) != crc {
            return Err(corrupt("the checksum of its bytes does not match".into()));
        }
        self.counters.count(HEADER + wire_len, plain_len, started);
        Ok(Some(Bytes::from(out)))
    }
}

/// A frame that failed its checks: the link's bytes were damaged on the way.
#[derive(Debug, thiserror::Error)]
#[error("corrupt compressed frame from the upstream relay: {0}")]
pub struct CorruptFrame(String);

impl CorruptFrame {
    /// The damaged frame inside a read's error, if that is what it was.
    pub fn within(e: &io::Error) -> Option<&CorruptFrame> {
        e.get_ref()?.downcast_ref()
    }
}

fn corrupt(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, CorruptFrame(why))
}

impl AsyncRead for Receiver {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain[..n]);
                this.plain.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(plain) = this.next_frame()? {
                this.plain = plain;
                continue;
            }
            this.raw.reserve(64 * 1024);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.raw
            ))?;
            if n == 0 {
                // A frame cut short is the link's end, as a plain link's would be.
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> Counters {
        Counters::new("test", "a test")
    }

    /// `chunks` written through a sender, read back through a receiver: the bytes on the wire.
    async fn through(chunks: Vec<Vec<u8>>, flip: Option<usize>) -> (io::Result<Vec<u8>>, u64) {
        // sender -> (a, b) -> the wire task -> (c, d) -> receiver
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let (mut c, d) = tokio::io::duplex(1 << 16);
        let settings = ZstdLink {
            level: 3,
            max_delay: Duration::from_millis(1),
        };
        let sent = counters();
        let mut wr = sender(Box::new(a), settings, sent.clone(), Duration::from_secs(5)).unwrap();
        // The wire between them, where a byte may be flipped.
        let wire = tokio::spawn(async move {
            let mut all = Vec::new();
            b.read_to_end(&mut all).await.unwrap();
            if let Some(at) = flip {
                all[at] ^= 0x20;
            }
            // The receiver stops at a damaged frame and drops its end.
            let _ = c.write_all(&all).await;
        });
        for c in chunks {
            wr.write_all(&c).await.unwrap();
        }
        drop(wr);
        let mut rd = Receiver::new(Box::new(d), BytesMut::new(), counters()).unwrap();
        let mut got = Vec::new();
        let r = rd.read_to_end(&mut got).await.map(|_| got);
        drop(rd);
        wire.await.unwrap();
        (r, sent.wire.get())
    }

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                format!(
                    "{{\"user\":{i},\"name\":\"user-{}\",\"active\":true}}",
                    i % 97
                )
                .into_bytes()
            })
            .collect()
    }

    #[tokio::test]
    async fn what_is_sent_is_what_is_read_in_less_room() {
        let chunks: Vec<Vec<u8>> = (0..200).map(|i| text(50 + i)).collect();
        let plain: Vec<u8> = chunks.concat();
        let (got, wire) = through(chunks, None).await;
        assert_eq!(got.unwrap(), plain);
        assert!(
            (wire as f64) < plain.len() as f64 * 0.3,
            "{wire} of {}",
            plain.len()
        );
    }

    #[tokio::test]
    async fn random_bytes_cost_at_most_one_percent_more() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let chunks: Vec<Vec<u8>> = (0..64)
            .map(|_| {
                (0..4096)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect();
        let plain: Vec<u8> = chunks.concat();
        let (got, wire) = through(chunks, None).await;
        assert_eq!(got.unwrap(), plain);
        assert!(
            (wire as f64) <= plain.len() as f64 * 1.01,
            "{wire} of {}",
            plain.len()
        );
    }

    #[tokio::test]
    async fn a_damaged_frame_is_refused_before_any_of_its_bytes() {
        let chunks = vec![text(2000)];
        for at in [2, 6, 9, HEADER + 40] {
            let (got, _) = through(chunks.clone(), Some(at)).await;
            let e = got.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "byte {at}: {e}");
            assert!(e.to_string().contains("corrupt compressed frame"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_stalled_link_ends_the_sender_and_then_the_writes() {
        // The far end never reads: once its buffer and the pipe are full, the sender's write
        // times out, it ends, and the session's next write fails instead of waiting forever.
        let (a, _never_read) = tokio::io::duplex(1 << 10);
        let settings = ZstdLink {
            level: 1,
            max_delay: Duration::from_millis(1),
        };
        let mut wr = sender(
            Box::new(a),
            settings,
            counters(),
            Duration::from_millis(200),
        )
        .unwrap();
        let mut x = 1u64;
        let chunk: Vec<u8> = (0..65536)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 56) as u8
            })
            .collect();
        let failed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if wr.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(
            failed.is_ok(),
            "the writes went on waiting on a stalled link"
        );
    }

    #[test]
    fn requests_are_bounded() {
        let s = ZstdLink {
            level: 3,
            max_delay: Duration::from_millis(1),
        };
        assert_eq!(parse_request(&request(&s)), Ok(s));
        for bad in [
            "zstd:0:1000",
            "zstd:22:1000",
            "zstd:3:100001",
            "lz4:3:1000",
            "zstd:3",
            "zstd:3:1:2",
            "zstd:x:1",
        ] {
            assert!(parse_request(bad).is_err(), "{bad}");
        }
    }
}

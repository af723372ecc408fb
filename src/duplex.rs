//! The byte streams both links run over. The protocol code reads and writes through these two
//! halves only, so a TLS stream, or anything else that is `AsyncRead + AsyncWrite`, plugs in
//! where a TCP socket is today without touching it. A TCP socket splits without a lock; the
//! halves are boxed, which costs one indirect call per read or write, not per byte.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub type Reader = Box<dyn AsyncRead + Send + Sync + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// The halves of a TCP connection, with Nagle off: replication is latency-bound.
pub fn tcp(sock: TcpStream) -> (Reader, Writer) {
    let _ = sock.set_nodelay(true);
    let (rd, wr) = sock.into_split();
    (Box::new(rd), Box::new(wr))
}

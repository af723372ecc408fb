//! The benchmark's native downstream reader, so that what is measured is the relay and not the
//! reader: `bench/run` compiles it with `rustc -O` into its temporary directory.
//!
//!   reader PORT REQUEST WANT   sends REQUEST (a PSYNC) and takes its reply; after `+FULLRESYNC`
//!                              reads the snapshot (its `$<size>` line says how much), after
//!                              `+CONTINUE` reads WANT bytes of stream
//!   reader --sink              listens on a free loopback port (printed first), takes one
//!                              connection and reads it until it closes: the loopback reference
//!
//! Prints `<bytes> <start> <end>` (Unix seconds), the clock started at the first payload byte's
//! turn. Reads go into one 1 MiB buffer, as the Python readers of `bench/run` did.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{SystemTime, UNIX_EPOCH};

const BUF: usize = 1 << 20;

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Reads until `want` bytes (counting `already`) have arrived, or until the peer closes when
/// `want` is `None`.
fn drain(s: &mut TcpStream, already: usize, want: Option<u64>) -> u64 {
    let mut buf = vec![0u8; BUF];
    let mut got = already as u64;
    while want.is_none_or(|w| got < w) {
        match s.read(&mut buf) {
            Ok(0) if want.is_none() => break,
            Ok(0) => panic!("the peer closed after {got} bytes"),
            Ok(n) => got += n as u64,
            Err(e) => panic!("reading: {e}"),
        }
    }
    got
}

/// One reply line, without the newlines a master sends as keepalives before it.
fn line(s: &mut TcpStream, pending: &mut Vec<u8>) -> String {
    loop {
        if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
            let got: Vec<u8> = pending.drain(..i + 2).take(i).collect();
            let text = String::from_utf8_lossy(&got).into_owned();
            return text.trim_start_matches('\n').to_string();
        }
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("reading the reply");
        assert!(n > 0, "the relay closed the connection");
        pending.extend_from_slice(&buf[..n]);
    }
}

fn sink() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let (mut s, _) = listener.accept().unwrap();
    let t0 = now();
    let got = drain(&mut s, 0, None);
    println!("{got} {t0} {}", now());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--sink") {
        return sink();
    }
    let [_, port, request, want] = &args[..] else {
        panic!("usage: reader PORT REQUEST WANT | reader --sink");
    };
    let mut s = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    s.write_all(format!("{request}\r\n").as_bytes()).unwrap();
    let mut pending = Vec::new();
    let first = line(&mut s, &mut pending);
    let want: u64 = if first.starts_with("+FULLRESYNC") {
        line(&mut s, &mut pending)[1..].parse().unwrap()
    } else if first.starts_with("+CONTINUE") {
        want.parse().unwrap()
    } else {
        panic!("unexpected PSYNC reply {first:?}");
    };
    let t0 = now();
    let got = drain(&mut s, pending.len(), Some(want));
    println!("{got} {t0} {}", now());
}

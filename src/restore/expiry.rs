//! Relative expiries made absolute. Masters before Redis 7.0 propagate `EXPIRE`, `SETEX`,
//! `SET ... EX` and friends relative to the moment they ran; replayed later, every TTL would
//! start again from the load. Each is rewritten with the time the relay stored it (the time
//! index, within a second, and within the link's lag of the master's clock), as Redis does when
//! it writes its own AOF: `PEXPIREAT`, a `SET` without its relative option followed by
//! `PEXPIREAT` (which every version loads), `RESTORE ... ABSTTL`. Newer masters propagate
//! absolute times already; their commands come out unchanged.

use bytes::Bytes;

use crate::resp;

/// Commands that may carry a relative expiry.
pub const NAMES: [&str; 7] = [
    "expire", "pexpire", "setex", "psetex", "set", "getex", "restore",
];

/// The command `args`, run at `at_ms`, with its expiry made absolute; `None` when it has no
/// relative expiry (or is not understood), to be kept as it is.
pub fn rewrite(args: &[Bytes], at_ms: u64) -> Option<Vec<u8>> {
    let name = args.first()?.to_ascii_lowercase();
    let num = |b: &Bytes| std::str::from_utf8(b).ok()?.parse::<i64>().ok();
    let abs = |ms: i64| (at_ms as i64).saturating_add(ms).to_string();
    let pexpireat = |key: &Bytes, ms: i64, flags: &[Bytes]| {
        let when = abs(ms);
        let mut cmd: Vec<&[u8]> = vec![b"PEXPIREAT", key, when.as_bytes()];
        cmd.extend(flags.iter().map(|f| &f[..]));
        resp::command(&cmd).to_vec()
    };
    match (name.as_slice(), args) {
        (b"expire", [_, key, secs, flags @ ..]) => {
            Some(pexpireat(key, num(secs)?.checked_mul(1000)?, flags))
        }
        (b"pexpire", [_, key, ms, flags @ ..]) => Some(pexpireat(key, num(ms)?, flags)),
        (b"setex", [_, key, secs, value]) => Some(set_then(
            key,
            value,
            &[],
            pexpireat(key, num(secs)?.checked_mul(1000)?, &[]),
        )),
        (b"psetex", [_, key, ms, value]) => {
            Some(set_then(key, value, &[], pexpireat(key, num(ms)?, &[])))
        }
        (b"set", [_, key, value, options @ ..]) => {
            let (ms, rest) = relative_option(options, &num)?;
            Some(set_then(key, value, &rest, pexpireat(key, ms, &[])))
        }
        (b"getex", [_, key, options @ ..]) => {
            let (ms, rest) = relative_option(options, &num)?;
            rest.is_empty().then(|| pexpireat(key, ms, &[]))
        }
        (b"restore", [_, key, ttl, payload, options @ ..]) => {
            let ttl = num(ttl)?;
            if ttl == 0 || options.iter().any(|o| o.eq_ignore_ascii_case(b"absttl")) {
                return None;
            }
            let when = abs(ttl);
            let mut cmd: Vec<&[u8]> = vec![b"RESTORE", key, when.as_bytes(), payload];
            cmd.extend(options.iter().map(|o| &o[..]));
            cmd.push(b"ABSTTL");
            Some(resp::command(&cmd).to_vec())
        }
        _ => None,
    }
}

/// The milliseconds of an `EX s` or `PX ms` option, and the other options; `None` without one.
fn relative_option(
    options: &[Bytes],
    num: &dyn Fn(&Bytes) -> Option<i64>,
) -> Option<(i64, Vec<Bytes>)> {
    let at = options
        .iter()
        .position(|o| o.eq_ignore_ascii_case(b"ex") || o.eq_ignore_ascii_case(b"px"))?;
    let value = num(options.get(at + 1)?)?;
    let ms = if options[at].eq_ignore_ascii_case(b"ex") {
        value.checked_mul(1000)?
    } else {
        value
    };
    let mut rest = options.to_vec();
    rest.drain(at..at + 2);
    Some((ms, rest))
}

/// `SET key value [options]` then `then`.
fn set_then(key: &Bytes, value: &Bytes, options: &[Bytes], then: Vec<u8>) -> Vec<u8> {
    let mut cmd: Vec<&[u8]> = vec![b"SET", key, value];
    cmd.extend(options.iter().map(|o| &o[..]));
    let mut out = resp::command(&cmd).to_vec();
    out.extend(then);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<Bytes> {
        s.iter().map(|a| Bytes::from(a.to_string())).collect()
    }

    fn text(v: Option<Vec<u8>>) -> String {
        String::from_utf8(v.unwrap()).unwrap()
    }

    #[test]
    fn relative_expiries_become_absolute() {
        let at = 1_000_000;
        assert!(
            text(rewrite(&args(&["EXPIRE", "k", "10"]), at))
                .contains("PEXPIREAT\r\n$1\r\nk\r\n$7\r\n1010000")
        );
        assert!(
            text(rewrite(&args(&["pexpire", "k", "5", "NX"]), at))
                .ends_with("1000005\r\n$2\r\nNX\r\n")
        );
        let setex = text(rewrite(&args(&["SETEX", "k", "2", "v"]), at));
        assert!(
            setex.starts_with("*3\r\n$3\r\nSET\r\n") && setex.contains("1002000"),
            "{setex}"
        );
        let set = text(rewrite(&args(&["SET", "k", "v", "NX", "PX", "300"]), at));
        assert!(
            set.starts_with("*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nNX\r\n")
                && set.contains("1000300"),
            "{set}"
        );
        assert_eq!(rewrite(&args(&["SET", "k", "v"]), at), None);
        assert_eq!(rewrite(&args(&["SET", "k", "v", "PXAT", "5"]), at), None);
        assert!(
            text(rewrite(&args(&["RESTORE", "k", "100", "payload"]), at))
                .ends_with("$6\r\nABSTTL\r\n")
        );
        assert_eq!(rewrite(&args(&["RESTORE", "k", "0", "payload"]), at), None);
        assert_eq!(rewrite(&args(&["EXPIRE", "k", "notanumber"]), at), None);
    }
}

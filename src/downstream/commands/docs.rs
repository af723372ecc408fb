//! `COMMAND`, `COMMAND COUNT`, `COMMAND INFO` and `COMMAND DOCS` for the commands the relay
//! serves, so redis-cli shows their hints and tools see what the relay answers.

use bytes::Bytes;

use super::{Action, text};
use crate::resp::Reply;

/// Name, arity (negative: at least), group, summary, arguments (name, type).
type Doc = (
    &'static str,
    i64,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const DOCS: &[Doc] = &[
    (
        "auth",
        -2,
        "connection",
        "Authenticates the connection.",
        &[("username", "string"), ("password", "string")],
    ),
    (
        "client",
        -2,
        "connection",
        "CLIENT SETNAME, GETNAME, ID, LIST, INFO, SETINFO, KILL.",
        &[("subcommand", "string")],
    ),
    (
        "command",
        -1,
        "server",
        "The commands the relay serves.",
        &[("subcommand", "string")],
    ),
    (
        "config",
        -2,
        "server",
        "CONFIG GET pattern, CONFIG REWRITE (keeps the master followed in --dir).",
        &[("subcommand", "string"), ("pattern", "pattern")],
    ),
    (
        "discard",
        1,
        "transactions",
        "Discards the commands queued since MULTI.",
        &[],
    ),
    (
        "echo",
        2,
        "connection",
        "Returns the message.",
        &[("message", "string")],
    ),
    (
        "exec",
        1,
        "transactions",
        "Runs the commands queued since MULTI.",
        &[],
    ),
    (
        "hello",
        -1,
        "connection",
        "Handshake; the relay speaks RESP2.",
        &[("protover", "integer")],
    ),
    (
        "info",
        -1,
        "server",
        "The relay's facts, with Redis' field names.",
        &[("section", "string")],
    ),
    (
        "multi",
        1,
        "transactions",
        "Starts a transaction (as Sentinel re-points a replica).",
        &[],
    ),
    (
        "ping",
        -1,
        "connection",
        "Returns PONG.",
        &[("message", "string")],
    ),
    (
        "psubscribe",
        -2,
        "pubsub",
        "Subscribes to channels matching patterns.",
        &[("pattern", "pattern")],
    ),
    (
        "psync",
        -3,
        "server",
        "Starts a partial or full resync: the relay serves it from its store.",
        &[("replicationid", "string"), ("offset", "integer")],
    ),
    (
        "publish",
        3,
        "pubsub",
        "Publishes a message to the relay's subscribers.",
        &[("channel", "string"), ("message", "string")],
    ),
    (
        "punsubscribe",
        -1,
        "pubsub",
        "Unsubscribes from patterns.",
        &[("pattern", "pattern")],
    ),
    ("quit", -1, "connection", "Closes the connection.", &[]),
    (
        "replconf",
        -1,
        "server",
        "Replica settings during the handshake, and ACKs.",
        &[("option", "string"), ("value", "string")],
    ),
    (
        "replicaof",
        3,
        "server",
        "Follows another master, or none (NO ONE).",
        &[("host", "string"), ("port", "integer")],
    ),
    (
        "role",
        1,
        "server",
        "The relay's role, master and offset.",
        &[],
    ),
    (
        "slaveof",
        3,
        "server",
        "Follows another master, or none (NO ONE).",
        &[("host", "string"), ("port", "integer")],
    ),
    (
        "subscribe",
        -2,
        "pubsub",
        "Subscribes to channels.",
        &[("channel", "string")],
    ),
    ("sync", 1, "server", "The old full sync.", &[]),
    (
        "unsubscribe",
        -1,
        "pubsub",
        "Unsubscribes from channels.",
        &[("channel", "string")],
    ),
];

fn find(name: &[u8]) -> Option<&'static Doc> {
    DOCS.iter()
        .find(|d| name.eq_ignore_ascii_case(d.0.as_bytes()))
}

/// `COMMAND`'s info array of one command, RESP2.
fn info(d: &Doc) -> Reply {
    Reply::Array(vec![
        Reply::bulk(d.0),
        Reply::Int(d.1),
        Reply::Array(vec![Reply::Simple("stale".into())]),
        Reply::Int(0),
        Reply::Int(0),
        Reply::Int(0),
        Reply::Array(vec![Reply::Simple(format!("@{}", d.2))]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
    ])
}

/// `COMMAND DOCS`' map of one command, as a flat array (RESP2).
fn doc(d: &Doc) -> Reply {
    let arguments =
        d.4.iter()
            .map(|(name, kind)| {
                Reply::Array(vec![
                    Reply::bulk("name"),
                    Reply::bulk(*name),
                    Reply::bulk("type"),
                    Reply::bulk(*kind),
                    Reply::bulk("flags"),
                    Reply::Array(vec![Reply::Simple("optional".into())]),
                ])
            })
            .collect();
    Reply::Array(vec![
        Reply::bulk("summary"),
        Reply::bulk(d.3),
        Reply::bulk("since"),
        Reply::bulk("1.0.0"),
        Reply::bulk("group"),
        Reply::bulk(d.2),
        Reply::bulk("arguments"),
        Reply::Array(arguments),
    ])
}

pub fn command(args: &[Bytes]) -> Action {
    let sub = args.get(1).map(|s| text(s).to_ascii_lowercase());
    let named = |names: &[Bytes]| -> Vec<&'static Doc> {
        if names.is_empty() {
            DOCS.iter().collect()
        } else {
            names.iter().filter_map(|n| find(n)).collect()
        }
    };
    Action::Reply(match sub.as_deref() {
        None => Reply::Array(DOCS.iter().map(info).collect()),
        Some("count") => Reply::Int(DOCS.len() as i64),
        Some("info") => Reply::Array(
            args[2..]
                .iter()
                .map(|n| find(n).map_or(Reply::Nil, info))
                .collect(),
        ),
        Some("docs") => Reply::Array(
            named(&args[2..])
                .into_iter()
                .flat_map(|d| [Reply::bulk(d.0), doc(d)])
                .collect(),
        ),
        Some("list") => Reply::Array(DOCS.iter().map(|d| Reply::bulk(d.0)).collect()),
        Some(_) => {
            Reply::err("ERR replica-relay supports COMMAND, COMMAND COUNT, INFO, DOCS and LIST")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_the_table_answers_is_documented() {
        for name in [
            "ping",
            "auth",
            "hello",
            "quit",
            "replconf",
            "psync",
            "sync",
            "info",
            "role",
            "replicaof",
            "slaveof",
            "config",
            "client",
            "command",
            "multi",
            "exec",
            "discard",
            "subscribe",
            "psubscribe",
            "unsubscribe",
            "punsubscribe",
            "publish",
            "echo",
        ] {
            assert!(find(name.as_bytes()).is_some(), "{name} has no docs");
        }
    }
}

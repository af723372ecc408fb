//! `COMMAND`, `COMMAND COUNT`, `COMMAND INFO` and `COMMAND DOCS` for the commands the relay
//! serves, so redis-cli shows their hints and tools see what the relay answers.

use bytes::Bytes;

use super::table::{COMMANDS, Spec, find};
use super::{Action, text};
use crate::resp::Reply;

/// `COMMAND`'s info array of one command, RESP2.
fn info(d: &Spec) -> Reply {
    Reply::Array(vec![
        Reply::bulk(d.name),
        Reply::Int(d.arity),
        Reply::Array(vec![Reply::Simple("stale".into())]),
        Reply::Int(0),
        Reply::Int(0),
        Reply::Int(0),
        Reply::Array(vec![Reply::Simple(format!("@{}", d.group))]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
    ])
}

/// `COMMAND DOCS`' map of one command, as a flat array (RESP2).
fn doc(d: &Spec) -> Reply {
    let arguments = d
        .args
        .iter()
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
        Reply::bulk(d.summary),
        Reply::bulk("since"),
        Reply::bulk("1.0.0"),
        Reply::bulk("group"),
        Reply::bulk(d.group),
        Reply::bulk("arguments"),
        Reply::Array(arguments),
    ])
}

pub fn command(args: &[Bytes]) -> Action {
    let sub = args.get(1).map(|s| text(s).to_ascii_lowercase());
    let named = |names: &[Bytes]| -> Vec<&'static Spec> {
        if names.is_empty() {
            COMMANDS.iter().collect()
        } else {
            names.iter().filter_map(|n| find(n)).collect()
        }
    };
    Action::Reply(match sub.as_deref() {
        None => Reply::Array(COMMANDS.iter().map(info).collect()),
        Some("count") => Reply::Int(COMMANDS.len() as i64),
        Some("info") => Reply::Array(
            args[2..]
                .iter()
                .map(|n| find(n).map_or(Reply::Nil, info))
                .collect(),
        ),
        Some("docs") => Reply::Array(
            named(&args[2..])
                .into_iter()
                .flat_map(|d| [Reply::bulk(d.name), doc(d)])
                .collect(),
        ),
        Some("list") => Reply::Array(COMMANDS.iter().map(|d| Reply::bulk(d.name)).collect()),
        Some(_) => {
            Reply::err("ERR replica-relay supports COMMAND, COMMAND COUNT, INFO, DOCS and LIST")
        }
    })
}

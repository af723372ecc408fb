//! The commands the relay answers as a master: the replication handshake (PING, AUTH, REPLCONF,
//! PSYNC, SYNC), administration (INFO, ROLE, REPLICAOF/SLAVEOF, CONFIG GET and REWRITE, CLIENT,
//! COMMAND, HELLO, QUIT), and what Sentinel sends an instance it watches: its re-pointing
//! transaction (MULTI … EXEC, `transaction`) and the hello channel's pub/sub. Anything else
//! gets an error that says what the relay is and where the data is.

use bytes::Bytes;
use tracing::{info, warn};

mod docs;
mod table;
mod transaction;

pub use transaction::Transaction;

use super::Client;
use super::clients::{Filter, Kind};
use super::{Context, Rejection};
use crate::config::MasterAddr;
use crate::glob::{self, OverBudget};
use crate::link::Repoint;
use crate::master_file;
use crate::resp::Reply;
use table::{Flags, Name, Spec};

/// What the connection does after a command.
#[derive(Debug)]
pub enum Action {
    Reply(Reply),
    /// Several replies to one command: SUBSCRIBE and friends confirm each name.
    Replies(Vec<Reply>),
    /// `REPLCONF ACK` and friends: no reply at all.
    NoReply,
    Quit,
    /// PSYNC or SYNC: the connection becomes a replica session.
    Sync(SyncRequest),
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// `(replid, offset)` from PSYNC; `None` for the legacy SYNC.
    pub psync: Option<(String, i64)>,
}

fn err(msg: impl Into<String>) -> Action {
    Action::Reply(Reply::err(msg))
}

fn wrong_args(cmd: &str) -> Action {
    err(format!("ERR wrong number of arguments for '{cmd}' command"))
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command's name after `rename-command`: the original name a renamed one stands for, `None`
/// for a name renamed away (unknown, as in Redis).
fn command_name(cx: &Context, raw: &Bytes) -> Option<String> {
    let name = text(raw).to_ascii_lowercase();
    let renamed = &cx.settings.renamed.0;
    if let Some((original, _)) = renamed.iter().find(|(_, new)| **new == name) {
        return Some(original.clone());
    }
    (!renamed.contains_key(&name)).then_some(name)
}

/// A command line looked up once in the table.
#[derive(Debug, Clone)]
pub enum Command {
    Served(&'static Spec),
    /// A data command, or anything else the relay does not serve (by its original name).
    NotServed(String),
}

impl Command {
    /// The command `args` name, or the error for a name renamed away.
    fn parse(cx: &Context, args: &[Bytes]) -> Result<Command, Action> {
        let Some(name) = command_name(cx, &args[0]) else {
            return Err(err(format!("ERR unknown command '{}'", text(&args[0]))));
        };
        Ok(match table::find(name.as_bytes()) {
            Some(spec) => Command::Served(spec),
            None => Command::NotServed(name),
        })
    }

    fn name(&self) -> &str {
        match self {
            Command::Served(spec) => spec.name,
            Command::NotServed(name) => name,
        }
    }

    fn flags(&self) -> Option<Flags> {
        match self {
            Command::Served(spec) => Some(spec.flags),
            Command::NotServed(_) => None,
        }
    }
}

/// Whether a command was sent alone or inside `MULTI` … `EXEC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Within {
    Alone,
    Transaction,
}

pub async fn dispatch(cx: &Context, client: &mut Client, args: &[Bytes]) -> Action {
    let command = match Command::parse(cx, args) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let flags = command.flags();
    if !client.authed && !flags.is_some_and(|f| f.noauth) {
        return err("NOAUTH Authentication required.");
    }
    if let Command::Served(spec) = &command
        && !spec.arity_fits(args.len())
    {
        return transaction::abort_if_queuing(client, wrong_args(spec.name));
    }
    if client.subscribed() {
        return subscribed(cx, client, &command, args);
    }
    if client.multi.is_some() {
        return transaction::queue(cx, client, command, args).await;
    }
    let spec = match command {
        Command::Served(spec) => spec,
        Command::NotServed(name) => return err(not_served(cx, &name)),
    };
    match spec.command {
        Name::Multi => {
            client.multi = Some(transaction::Transaction::default());
            Action::Reply(Reply::ok())
        }
        Name::Exec => err("ERR EXEC without MULTI"),
        Name::Discard => err("ERR DISCARD without MULTI"),
        Name::Config if is_rewrite(args) => Action::Reply(config_rewrite(cx).await),
        name => immediate(cx, client, name, args, Within::Alone),
    }
}

/// The commands that need no waiting, alone or run by EXEC; their arity is checked.
fn immediate(
    cx: &Context,
    client: &mut Client,
    name: Name,
    args: &[Bytes],
    within: Within,
) -> Action {
    match name {
        Name::Ping => match args.len() {
            1 => Action::Reply(Reply::Simple("PONG".into())),
            2 => Action::Reply(Reply::Bulk(args[1].clone())),
            _ => wrong_args("ping"),
        },
        Name::Echo => Action::Reply(Reply::Bulk(args[1].clone())),
        Name::Auth => auth(cx, client, &args[1..]),
        Name::Hello => hello(cx, client, &args[1..]),
        Name::Quit => Action::Quit,
        Name::Replconf => replconf(client, args),
        Name::Psync => psync(args),
        Name::Sync => Action::Sync(SyncRequest { psync: None }),
        Name::Info => Action::Reply(Reply::Bulk(cx.server.info(&args[1..]).into())),
        Name::Role => Action::Reply(cx.server.role()),
        Name::Replicaof | Name::Slaveof => replicaof(cx, client, args, within),
        Name::Config => config(cx, args),
        Name::Client => client_command(cx, client, args),
        Name::Command => docs::command(args),
        Name::Publish => publish(cx, args),
        Name::Subscribe | Name::Psubscribe | Name::Unsubscribe | Name::Punsubscribe => {
            subscribe(cx, client, name, args)
        }
        // Never queued: `dispatch` and the transaction answer them.
        Name::Multi | Name::Exec | Name::Discard => err("ERR not allowed inside a transaction"),
    }
}

/// RESP2's subscribed mode: only (un)subscribing, PING and QUIT.
fn subscribed(cx: &Context, client: &mut Client, command: &Command, args: &[Bytes]) -> Action {
    match command {
        Command::Served(spec) if spec.flags.pubsub => match spec.command {
            Name::Ping if args.len() <= 2 => Action::Reply(Reply::Array(vec![
                Reply::bulk("pong"),
                Reply::Bulk(args.get(1).cloned().unwrap_or_default()),
            ])),
            Name::Ping => wrong_args("ping"),
            Name::Quit => Action::Quit,
            name => subscribe(cx, client, name, args),
        },
        _ => err(format!(
            "ERR Can't execute '{}': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT are allowed in this context",
            command.name()
        )),
    }
}

/// (P)SUBSCRIBE and (P)UNSUBSCRIBE, in either mode.
fn subscribe(cx: &Context, client: &mut Client, name: Name, args: &[Bytes]) -> Action {
    let pattern = matches!(name, Name::Psubscribe | Name::Punsubscribe);
    let sub = client.subscriber();
    Action::Replies(if matches!(name, Name::Subscribe | Name::Psubscribe) {
        cx.pubsub.subscribe(sub, &args[1..], pattern)
    } else {
        cx.pubsub.unsubscribe(sub, &args[1..], pattern)
    })
}

fn publish(cx: &Context, args: &[Bytes]) -> Action {
    match cx.pubsub.publish(&args[1], &args[2]) {
        Ok(n) => Action::Reply(Reply::Int(n)),
        Err(e) => err(e),
    }
}

fn is_rewrite(args: &[Bytes]) -> bool {
    args.len() == 2 && args[1].eq_ignore_ascii_case(b"rewrite")
}

/// CONFIG REWRITE: keeps the master followed now in `--dir`, so a restart follows it.
async fn config_rewrite(cx: &Context) -> Reply {
    let rewritten = master_file::Rewritten {
        followed: cx.control.master(),
        configured: cx.settings.replicaof.clone(),
    };
    let dir = cx.settings.dir.clone();
    let written = tokio::task::spawn_blocking(move || master_file::write(&dir, &rewritten)).await;
    match written {
        Ok(Ok(())) => Reply::ok(),
        Ok(Err(e)) => Reply::err(format!("ERR Rewriting config file: {e:#}")),
        Err(e) => Reply::err(format!("ERR Rewriting config file: {e}")),
    }
}

/// The error for data commands: the relay holds no keys.
fn not_served(cx: &Context, name: &str) -> String {
    let master = match cx.control.master() {
        Some(m) => format!("master {m}"),
        None => "no master (REPLICAOF NO ONE)".into(),
    };
    format!(
        "ERR replica-relay is a replication relay for {master}; it holds no keys and does not serve '{name}'. Send data commands to the master or a replica."
    )
}

fn auth(cx: &Context, client: &mut Client, args: &[Bytes]) -> Action {
    let (user, pass) = match args {
        [pass] => ("default".to_string(), pass),
        [user, pass] => (text(user), pass),
        _ => return wrong_args("auth"),
    };
    match check_password(cx, &user, pass) {
        Ok(()) => {
            client.authed = true;
            Action::Reply(Reply::ok())
        }
        Err(e) => {
            warn!("Failed AUTH from {} (user '{user}')", client.peer);
            cx.metrics.rejected.inc(Rejection::Auth);
            e
        }
    }
}

/// Without requirepass every AUTH succeeds: a replica configured with a masterauth must still
/// be able to attach (PROTOCOL §4.1, the auth trap).
fn check_password(cx: &Context, user: &str, pass: &[u8]) -> Result<(), Action> {
    let Some(expected) = &cx.settings.requirepass else {
        return Ok(());
    };
    if user == "default" && constant_time_eq(expected.as_bytes(), pass) {
        Ok(())
    } else {
        Err(err(
            "WRONGPASS invalid username-password pair or user is disabled.",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hello(cx: &Context, client: &mut Client, args: &[Bytes]) -> Action {
    let mut rest = args;
    if let [ver, tail @ ..] = args {
        if text(ver) != "2" {
            return err("NOPROTO unsupported protocol version; replica-relay speaks RESP2 only");
        }
        rest = tail;
    }
    while let [opt, tail @ ..] = rest {
        match (text(opt).to_ascii_lowercase().as_str(), tail) {
            ("auth", [user, pass, more @ ..]) => {
                if let Err(e) = check_password(cx, &text(user), pass) {
                    return e;
                }
                client.authed = true;
                rest = more;
            }
            ("setname", [name, more @ ..]) => {
                client.name = Some(text(name));
                rest = more;
            }
            _ => return err(format!("ERR Syntax error in HELLO option '{}'", text(opt))),
        }
    }
    if !client.authed {
        return err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    let role = if cx.control.master().is_some() {
        "replica"
    } else {
        "master"
    };
    let fields = [
        ("server", Reply::bulk("replica-relay")),
        ("version", Reply::bulk(env!("CARGO_PKG_VERSION"))),
        ("proto", Reply::Int(2)),
        ("id", Reply::Int(client.id as i64)),
        ("mode", Reply::bulk("standalone")),
        ("role", Reply::bulk(role)),
        ("modules", Reply::Array(vec![])),
    ];
    Action::Reply(Reply::Array(
        fields
            .into_iter()
            .flat_map(|(k, v)| [Reply::bulk(k), v])
            .collect(),
    ))
}

fn replconf(client: &mut Client, args: &[Bytes]) -> Action {
    if args.len().is_multiple_of(2) {
        return err("ERR syntax error");
    }
    for pair in args[1..].chunks(2) {
        let (opt, val) = (text(&pair[0]).to_ascii_lowercase(), text(&pair[1]));
        match opt.as_str() {
            "ack" | "getack" | "fack" => return Action::NoReply,
            "listening-port" => match val.parse() {
                Ok(p) => client.listening_port = Some(p),
                Err(_) => return err("ERR value is not an integer or out of range"),
            },
            "ip-address" if val.len() <= 255 => client.announced_ip = Some(val),
            "ip-address" => {
                return err(
                    "ERR REPLCONF ip-address provided by replica instance is too long: 256 bytes maximum",
                );
            }
            "capa" => client.capa_psync2 |= val.eq_ignore_ascii_case("psync2"),
            "rdb-only" => client.rdb_only = val == "1",
            "version" => client.version = Some(val),
            "rdb-filter-only" => client.rdb_filter = Some(val).filter(|v| !v.is_empty()),
            crate::compress::REPLCONF_OPTION => match crate::compress::parse_request(&val) {
                Ok(link) => client.compression = Some(link),
                Err(e) => return err(e),
            },
            // Accepted and ignored: the relay always offers the classic single-channel full sync,
            // which every replica falls back to (PROTOCOL §1.3).
            "set-cluster-node-id" | "rdb-channel" | "main-ch-client-id" | "set-rdb-client-id" => {}
            _ => {
                return err(format!(
                    "ERR Unrecognized REPLCONF option: {}",
                    text(&pair[0])
                ));
            }
        }
    }
    Action::Reply(Reply::ok())
}

fn psync(args: &[Bytes]) -> Action {
    match args {
        [_, replid, offset] => match text(offset).parse::<i64>() {
            Ok(off) => Action::Sync(SyncRequest {
                psync: Some((text(replid), off)),
            }),
            Err(_) => err("ERR value is not an integer or out of range"),
        },
        [_, _, _, opt] if opt.eq_ignore_ascii_case(b"failover") => {
            err("ERR PSYNC FAILOVER is not supported: replica-relay cannot be promoted")
        }
        _ => wrong_args("psync"),
    }
}

fn replicaof(cx: &Context, client: &Client, args: &[Bytes], within: Within) -> Action {
    let (host, port) = (text(&args[1]), text(&args[2]));
    let (reason, who) = match within {
        Within::Alone => (Repoint::Operator, format!("REPLICAOF from {}", client.peer)),
        Within::Transaction => (
            Repoint::Transaction,
            format!(
                "REPLICAOF in a MULTI/EXEC transaction from {}, as Sentinel re-points replicas",
                client.peer
            ),
        ),
    };
    if host.eq_ignore_ascii_case("no") && port.eq_ignore_ascii_case("one") {
        if within == Within::Transaction {
            warn!(
                "Refused SLAVEOF NO ONE in a transaction from {}: a relay holds no keys and cannot be promoted",
                client.peer
            );
            return err(
                "ERR replica-relay cannot become a master: it holds no keys. SLAVEOF NO ONE in a transaction (how Sentinel promotes a replica) is refused; REPLICAOF NO ONE sent alone stops replication",
            );
        }
        if cx.control.set(None, reason, &who) {
            info!("MASTER MODE enabled: the stored data stays served");
        }
        return Action::Reply(Reply::ok());
    }
    let master = match MasterAddr::parse(&host, &port) {
        Ok(m) => m,
        Err(e) => return err(format!("ERR {e}")),
    };
    if !cx.control.set(Some(master), reason, &who) {
        if reason == Repoint::Operator {
            // Asked again: the operator's word, which takes the master's history even when it
            // is empty (the empty-master guard lets go).
            cx.control.accept_history();
        }
        return Action::Reply(Reply::Simple(
            "OK Already connected to specified master".into(),
        ));
    }
    Action::Reply(Reply::ok())
}

/// Longest `CONFIG GET` pattern: every option name is far shorter.
const MAX_PATTERN: usize = 128;
/// Matching steps one `CONFIG GET` may spend (see `glob::matches`): a thousand ordinary patterns
/// fit, and the worst case costs a few milliseconds of one worker.
const CONFIG_GET_BUDGET: u64 = 4_000_000;

fn config(cx: &Context, args: &[Bytes]) -> Action {
    if !args[1].eq_ignore_ascii_case(b"get") || args.len() < 3 {
        return err(
            "ERR replica-relay supports only CONFIG GET <pattern> [pattern ...] and CONFIG REWRITE; change settings with flags or the config file",
        );
    }
    let patterns = &args[2..];
    if patterns.iter().any(|p| p.len() > MAX_PATTERN) {
        return err(format!(
            "ERR CONFIG GET pattern longer than {MAX_PATTERN} bytes"
        ));
    }
    let mut budget = CONFIG_GET_BUDGET;
    let mut out = Vec::new();
    for (key, value) in cx.server.config_values() {
        let mut matched = false;
        for p in patterns {
            match glob::matches(p, key.as_bytes(), &mut budget) {
                Ok(m) => matched |= m,
                Err(OverBudget) => {
                    return err(
                        "ERR CONFIG GET patterns too costly to match; use fewer or simpler patterns",
                    );
                }
            }
            if matched {
                break;
            }
        }
        if matched {
            out.push(Reply::bulk(key.to_string()));
            out.push(Reply::bulk(value));
        }
    }
    Action::Reply(Reply::Array(out))
}

fn client_command(cx: &Context, client: &mut Client, args: &[Bytes]) -> Action {
    let sub = args
        .get(1)
        .map(|s| text(s).to_ascii_lowercase())
        .unwrap_or_default();
    match (sub.as_str(), args.len()) {
        ("setname", 3) => {
            client.name = Some(text(&args[2]));
            Action::Reply(Reply::ok())
        }
        ("getname", 2) => Action::Reply(client.name.clone().map_or(Reply::Nil, Reply::bulk)),
        ("id", 2) => Action::Reply(Reply::Int(client.id as i64)),
        ("setinfo", 4) => Action::Reply(Reply::ok()),
        ("list", 2) => Action::Reply(Reply::bulk(cx.clients.list(None))),
        ("info", 2) => Action::Reply(Reply::bulk(cx.clients.list(Some(client.id)))),
        // The old form: CLIENT KILL ip:port.
        ("kill", 3) => match cx.clients.kill(&Filter {
            addr: Some(text(&args[2])),
            ..Filter::default()
        }) {
            0 => err("ERR No such client"),
            _ => Action::Reply(Reply::ok()),
        },
        ("kill", n) if n >= 4 => client_kill(cx, client, &args[2..]),
        _ => err(
            "ERR replica-relay supports CLIENT SETNAME, GETNAME, ID, LIST, INFO, SETINFO and KILL",
        ),
    }
}

/// `CLIENT KILL <filter> <value> ...` as in Redis: ID, ADDR, LADDR, TYPE, USER, SKIPME. Sentinel
/// sends `TYPE normal` and `TYPE pubsub`, which never name replica links.
fn client_kill(cx: &Context, client: &Client, filters: &[Bytes]) -> Action {
    let mut filter = Filter {
        except: Some(client.id),
        ..Filter::default()
    };
    for pair in filters.chunks(2) {
        let [key, value] = pair else {
            return err("ERR syntax error");
        };
        let value = text(value);
        match (
            text(key).to_ascii_lowercase().as_str(),
            value.to_ascii_lowercase().as_str(),
        ) {
            ("type", "normal") => filter.kind = Some(Kind::Normal),
            ("type", "pubsub") => filter.kind = Some(Kind::PubSub),
            ("type", "replica" | "slave") => filter.kind = Some(Kind::Replica),
            // The relay's own link to its master is not a client of it.
            ("type", "master") => return Action::Reply(Reply::Int(0)),
            ("type", _) => return err(format!("ERR Unknown client type '{value}'")),
            ("id", v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => filter.id = Some(n),
                _ => return err("ERR client-id should be greater than 0"),
            },
            ("addr", _) => filter.addr = Some(value),
            ("laddr", _) => filter.laddr = Some(value),
            ("user", _) => filter.user = Some(value),
            ("skipme", "yes") => filter.except = Some(client.id),
            ("skipme", "no") => filter.except = None,
            _ => return err("ERR syntax error"),
        }
    }
    let killed = cx.clients.kill(&filter);
    if killed > 0 {
        info!(
            "CLIENT KILL from {}: closing {killed} connection(s)",
            client.peer
        );
    }
    Action::Reply(Reply::Int(killed as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    fn run(cx: &Context, client: &mut Client, args: &[&str]) -> Action {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::from(a.to_string())).collect();
        RUNTIME.with(|rt| rt.block_on(dispatch(cx, client, &args)))
    }

    fn test_context() -> std::sync::Arc<Context> {
        let dir = DIR.with(|d| d.path().to_path_buf());
        CONTEXT.with(|c| {
            c.get_or_init(|| std::sync::Arc::new(super::super::context_for_tests(&dir)))
                .clone()
        })
    }

    fn error_of(action: Action) -> Option<String> {
        match action {
            Action::Reply(Reply::Error(e)) => Some(e),
            _ => None,
        }
    }

    /// Every row of the table is handled: sent with the fewest words its arity allows, no
    /// command gets the answer for commands the relay does not serve.
    #[test]
    fn every_command_of_the_table_is_handled() {
        let cx = test_context();
        for spec in table::COMMANDS {
            let mut args = vec![spec.name];
            args.resize(spec.arity.unsigned_abs() as usize, "x");
            let mut client = Client::new(1, "127.0.0.1:5000".parse().unwrap(), true);
            let answer = error_of(run(&cx, &mut client, &args)).unwrap_or_default();
            assert!(
                !answer.contains("does not serve"),
                "{}: {answer}",
                spec.name
            );
            assert!(!answer.contains("wrong number"), "{}: {answer}", spec.name);
        }
        let mut client = Client::new(1, "127.0.0.1:5000".parse().unwrap(), true);
        let set = error_of(run(&cx, &mut client, &["SET", "k", "v"])).unwrap();
        assert!(set.contains("does not serve 'set'"), "{set}");
    }

    /// The table's arity is what a client that sends too few or too many words hears, alone
    /// or inside MULTI (where it fails the transaction, as in Redis).
    #[test]
    fn the_table_arity_is_enforced() {
        let cx = test_context();
        let mut client = Client::new(1, "127.0.0.1:5000".parse().unwrap(), true);
        for args in [
            &["ECHO"][..],
            &["ROLE", "x"],
            &["PUBLISH", "c"],
            &["REPLICAOF", "h"],
        ] {
            let e = error_of(run(&cx, &mut client, args)).unwrap();
            let name = args[0].to_ascii_lowercase();
            assert_eq!(
                e,
                format!("ERR wrong number of arguments for '{name}' command")
            );
        }
        run(&cx, &mut client, &["MULTI"]);
        assert!(error_of(run(&cx, &mut client, &["ECHO"])).is_some());
        let exec = error_of(run(&cx, &mut client, &["EXEC"])).unwrap();
        assert!(exec.starts_with("EXECABORT"), "{exec}");
        let count = run(&cx, &mut client, &["COMMAND", "COUNT"]);
        assert!(matches!(count, Action::Reply(Reply::Int(n)) if n == table::COMMANDS.len() as i64));
    }

    /// Commands of the table and others, with arguments a client chooses: long, many, odd
    /// bytes, costly patterns.
    fn commands() -> impl Strategy<Value = Vec<Bytes>> {
        let mut names: Vec<String> = table::COMMANDS.iter().map(|s| s.name.to_string()).collect();
        names.extend(names.clone().iter().map(|n| n.to_ascii_uppercase()));
        names.extend(["SET".into(), "GET".into(), "watch".into()]);
        let name = prop::sample::select(names);
        let arg = prop_oneof![
            prop::sample::select(vec![
                "GET",
                "get",
                "*",
                "listening-port",
                "capa",
                "ip-address",
                "version",
                "?",
                "-1",
                "2",
                "setname",
                "list",
                "all",
                "AUTH",
                "6379",
                "psync2",
                "kill",
                "type",
                "normal",
                "rewrite",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(prop::sample::select(&b"*?[]^-\\a#"[..]), 0..200),
            prop::collection::vec(any::<u8>(), 0..64),
        ];
        (name, prop::collection::vec(arg, 0..40)).prop_map(|(name, args)| {
            std::iter::once(Bytes::from(name))
                .chain(args.into_iter().map(Bytes::from))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Every command gets one answer, and the answer's size, which bounds the work of
        /// building it, is a constant plus what the client sent.
        #[test]
        fn every_command_is_answered_within_bounds(args in commands()) {
            let cx = test_context();
            let mut client = Client::new(1, "127.0.0.1:5000".parse().unwrap(), true);
            let sent: usize = args.iter().map(|a| a.len() + 16).sum();
            let mut out = bytes::BytesMut::new();
            let action = RUNTIME.with(|rt| rt.block_on(dispatch(&cx, &mut client, &args)));
            match action {
                Action::Reply(reply) => reply.encode(&mut out),
                Action::Replies(replies) => replies.iter().for_each(|r| r.encode(&mut out)),
                Action::NoReply | Action::Quit | Action::Sync(_) => {}
            }
            prop_assert!(out.len() <= 64 * 1024 + 2 * sent, "{} reply bytes for {} sent", out.len(), sent);
        }
    }

    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
        static CONTEXT: std::cell::OnceCell<std::sync::Arc<Context>> = const { std::cell::OnceCell::new() };
    }
}

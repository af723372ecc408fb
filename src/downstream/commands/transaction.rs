//! `MULTI` … `EXEC`, for what Sentinel sends in it (PROTOCOL §10.1): `SLAVEOF host port` (or
//! `NO ONE`), `CONFIG REWRITE`, `CLIENT KILL TYPE normal|pubsub`. Commands are queued with
//! `+QUEUED` and run at EXEC, which answers with their replies, as Redis does; a command the
//! relay does not serve fails the transaction (`-EXECABORT`). The queue is bounded.

use bytes::Bytes;

use super::table::Name;
use super::{Action, Command, Within, config_rewrite, err, immediate, is_rewrite, not_served};
use crate::downstream::{Client, Context};
use crate::resp::Reply;

/// Most commands one transaction queues (Sentinel's has four), and most bytes of arguments.
const MAX_QUEUED: usize = 64;
const MAX_QUEUED_BYTES: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct Transaction {
    queued: Vec<(Name, Vec<Bytes>)>,
    bytes: usize,
    /// A command failed to queue: EXEC answers EXECABORT.
    aborted: bool,
}

/// A command sent after MULTI: queued when its row says so, else refused (which fails EXEC).
pub async fn queue(cx: &Context, client: &mut Client, command: Command, args: &[Bytes]) -> Action {
    let spec = match command {
        Command::Served(spec) => spec,
        Command::NotServed(name) => return abort(client, not_served(cx, &name)),
    };
    match spec.command {
        Name::Exec => exec(cx, client).await,
        Name::Discard => {
            client.multi = None;
            Action::Reply(Reply::ok())
        }
        Name::Multi => err("ERR MULTI calls can not be nested"),
        Name::Quit => Action::Quit,
        name if spec.flags.queued => push(client, name, args),
        _ => abort(
            client,
            "ERR Command not allowed inside a transaction".into(),
        ),
    }
}

/// An error for a command that could not be queued fails the transaction, as in Redis; outside
/// one it is just the error.
pub fn abort_if_queuing(client: &mut Client, error: Action) -> Action {
    if let Some(tx) = client.multi.as_mut() {
        tx.aborted = true;
    }
    error
}

fn push(client: &mut Client, name: Name, args: &[Bytes]) -> Action {
    let size: usize = args.iter().map(Bytes::len).sum();
    let Some(tx) = client.multi.as_mut() else {
        return err("ERR EXEC without MULTI");
    };
    if tx.queued.len() >= MAX_QUEUED || tx.bytes + size > MAX_QUEUED_BYTES {
        return abort(
            client,
            format!(
                "ERR replica-relay queues at most {MAX_QUEUED} commands and {MAX_QUEUED_BYTES} bytes in a transaction"
            ),
        );
    }
    tx.bytes += size;
    tx.queued.push((name, args.to_vec()));
    Action::Reply(Reply::Simple("QUEUED".into()))
}

fn abort(client: &mut Client, why: String) -> Action {
    abort_if_queuing(client, err(why))
}

async fn exec(cx: &Context, client: &mut Client) -> Action {
    let Some(tx) = client.multi.take() else {
        return err("ERR EXEC without MULTI");
    };
    if tx.aborted {
        return err("EXECABORT Transaction discarded because of previous errors.");
    }
    let mut replies = Vec::with_capacity(tx.queued.len());
    for (name, args) in &tx.queued {
        let reply = if *name == Name::Config && is_rewrite(args) {
            config_rewrite(cx).await
        } else {
            match immediate(cx, client, *name, args, Within::Transaction) {
                Action::Reply(r) => r,
                Action::Replies(_) | Action::NoReply | Action::Quit | Action::Sync(_) => {
                    Reply::err("ERR not allowed inside a transaction")
                }
            }
        };
        replies.push(reply);
    }
    Action::Reply(Reply::Array(replies))
}

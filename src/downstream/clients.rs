//! Every connection the relay serves, clients and replicas alike, for `CLIENT LIST`, `CLIENT
//! INFO` and `CLIENT KILL` with Redis' fields and filters. A connection registers when it is
//! accepted and leaves when it closes; closing one from here (CLIENT KILL, a subscriber too
//! slow) cancels its token, and for a replica that is the same as a dropped link.
//!
//! Sentinel's `CLIENT KILL TYPE normal|pubsub` never names replicas: their kind is `Replica`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// Which clients a `CLIENT KILL TYPE` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    PubSub,
    Replica,
}

impl Kind {
    /// Redis' `flags=` letter.
    fn flag(self) -> char {
        match self {
            Kind::Normal => 'N',
            Kind::PubSub => 'P',
            Kind::Replica => 'S',
        }
    }
}

/// What `CLIENT LIST` shows of one connection.
#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    close: CancellationToken,
    addr: SocketAddr,
    laddr: Option<SocketAddr>,
    name: String,
    created: Instant,
    last: Instant,
    cmd: String,
    subscriptions: usize,
}

/// How a `CLIENT KILL` chooses; every filter given must match.
#[derive(Debug, Default)]
pub struct Filter {
    pub id: Option<u64>,
    pub addr: Option<String>,
    pub laddr: Option<String>,
    pub kind: Option<Kind>,
    pub user: Option<String>,
    /// The caller, left out (Redis' default `SKIPME yes`).
    pub except: Option<u64>,
}

#[derive(Default)]
pub struct Clients {
    map: Mutex<BTreeMap<u64, Entry>>,
}

/// A connection's place in the registry; dropping it leaves.
pub struct Registered {
    clients: Arc<Clients>,
    id: u64,
    /// Cancelled when the connection is to be closed.
    pub close: CancellationToken,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.id);
    }
}

impl Registered {
    pub fn id(&self) -> u64 {
        self.id
    }

    fn update(&self, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.clients.lock().get_mut(&self.id) {
            f(e);
        }
    }

    pub fn set_kind(&self, kind: Kind) {
        self.update(|e| e.kind = kind);
    }

    /// After each command: its name, the client's name and subscriptions, the time.
    pub fn touch(&self, cmd: &str, name: Option<&str>, subscriptions: usize) {
        self.update(|e| {
            e.cmd.clear();
            e.cmd.push_str(cmd);
            e.name.clear();
            e.name.push_str(name.unwrap_or(""));
            e.subscriptions = subscriptions;
            e.last = Instant::now();
            e.kind = match (e.kind, subscriptions) {
                (Kind::Replica, _) => Kind::Replica,
                (_, 0) => Kind::Normal,
                _ => Kind::PubSub,
            };
        });
    }
}

impl Clients {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn join(
        self: &Arc<Clients>,
        id: u64,
        addr: SocketAddr,
        laddr: Option<SocketAddr>,
    ) -> Registered {
        let close = CancellationToken::new();
        let now = Instant::now();
        let entry = Entry {
            kind: Kind::Normal,
            close: close.clone(),
            addr,
            laddr,
            name: String::new(),
            created: now,
            last: now,
            cmd: "NULL".into(),
            subscriptions: 0,
        };
        self.lock().insert(id, entry);
        Registered {
            clients: self.clone(),
            id,
            close,
        }
    }

    /// Every connection: clients and replicas, as Redis' `connected_clients` counts them.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Closes every connection `filter` matches; returns how many.
    pub fn kill(&self, filter: &Filter) -> usize {
        let map = self.lock();
        let doomed = map.iter().filter(|(id, e)| matches(filter, **id, e));
        doomed.map(|(_, e)| e.close.cancel()).count()
    }

    /// `CLIENT LIST`: one line per connection, or only `id` (`CLIENT INFO`).
    pub fn list(&self, only: Option<u64>) -> String {
        let map = self.lock();
        let mut out = String::new();
        for (id, e) in map.iter().filter(|(id, _)| only.is_none_or(|o| o == **id)) {
            line(&mut out, *id, e);
        }
        out
    }
}

fn matches(f: &Filter, id: u64, e: &Entry) -> bool {
    Some(id) != f.except
        && f.id.is_none_or(|want| want == id)
        && f.addr.as_ref().is_none_or(|a| *a == e.addr.to_string())
        && f.laddr
            .as_ref()
            .is_none_or(|a| e.laddr.is_some_and(|l| *a == l.to_string()))
        && f.kind.is_none_or(|k| k == e.kind)
        && f.user.as_ref().is_none_or(|u| u == "default")
}

/// Redis' fields, with the relay's values (it keeps no per-client buffers to report).
fn line(out: &mut String, id: u64, e: &Entry) {
    let laddr = e.laddr.map(|l| l.to_string()).unwrap_or_default();
    let (sub, cmd) = match e.kind {
        Kind::PubSub => (e.subscriptions, e.cmd.as_str()),
        Kind::Replica => (0, "psync"),
        Kind::Normal => (0, e.cmd.as_str()),
    };
    let _ = writeln!(
        out,
        "id={id} addr={} laddr={laddr} fd=-1 name={} age={} idle={} flags={} db=0 sub={sub} psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 obl=0 oll=0 omem=0 events=r cmd={cmd} user=default redir=-1 resp=2",
        e.addr,
        e.name,
        e.created.elapsed().as_secs(),
        e.last.elapsed().as_secs(),
        e.kind.flag(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn kill_by_type_skips_the_caller_and_never_names_replicas_as_normal() {
        let clients = Arc::new(Clients::default());
        let me = clients.join(1, addr(1), None);
        let other = clients.join(2, addr(2), None);
        let sub = clients.join(3, addr(3), None);
        sub.touch("subscribe", None, 1);
        let replica = clients.join(4, addr(4), None);
        replica.set_kind(Kind::Replica);
        let gone = clients.join(5, addr(5), None);
        drop(gone);
        let normal = Filter {
            kind: Some(Kind::Normal),
            except: Some(1),
            ..Filter::default()
        };
        assert_eq!(clients.kill(&normal), 1);
        assert!(other.close.is_cancelled() && !me.close.is_cancelled());
        assert!(!sub.close.is_cancelled() && !replica.close.is_cancelled());
        let by_addr = Filter {
            addr: Some("127.0.0.1:4".into()),
            ..Filter::default()
        };
        assert_eq!(clients.kill(&by_addr), 1);
        assert!(replica.close.is_cancelled());
        assert_eq!(clients.count(), 4, "replicas count as connections");
        let list = clients.list(None);
        assert_eq!(list.lines().count(), 4, "{list}");
        assert!(
            list.contains("flags=S") && list.contains("flags=P"),
            "{list}"
        );
        assert_eq!(clients.list(Some(3)).lines().count(), 1);
    }
}

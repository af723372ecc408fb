//! Pub/sub among the relay's own clients: what Sentinel needs of an instance it watches. Each
//! Sentinel subscribes to `__sentinel__:hello` on one connection and publishes its hello on
//! another every 2 s; an instance that refuses either makes it tear the link down and reconnect
//! every few seconds.
//!
//! Everything a client controls is bounded before any work: channel and pattern lengths, the
//! subscriptions of one client, the patterns of the whole relay (each PUBLISH matches every
//! pattern), a message's size, and what waits for a subscriber: one that does not read is
//! closed, never buffered for.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::glob;
use crate::resp::Reply;

/// Longest channel name; also bounds the cost of matching it against a pattern.
pub const MAX_CHANNEL: usize = 256;
/// Longest pattern.
pub const MAX_PATTERN: usize = 128;
/// Channels and patterns one client may subscribe to.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Patterns of all clients together: every PUBLISH matches each one.
pub const MAX_PATTERNS: usize = 64;
/// Longest message PUBLISH carries (a Sentinel hello is about 150 bytes).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Messages waiting for one subscriber before it is closed as too slow.
const QUEUE: usize = 64;
/// Matching steps of one pattern against one channel: more than any pattern of `MAX_PATTERN`
/// bytes needs against a channel of `MAX_CHANNEL`.
const MATCH_BUDGET: u64 = (MAX_PATTERN as u64 + 1) * (MAX_CHANNEL as u64 + 1) * 2;

/// Where a subscriber's messages go, and how it is closed when it does not keep up.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<Bytes>,
    close: CancellationToken,
}

impl Outbox {
    /// Queues one message; a full queue closes the subscriber.
    fn send(&self, id: u64, message: Bytes) -> bool {
        match self.tx.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.close.is_cancelled() {
                    info!(
                        "Closing pub/sub client {id}: {QUEUE} messages wait for it (it does not read)"
                    );
                    self.close.cancel();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Default)]
struct Subscriptions {
    channels: HashMap<Bytes, HashMap<u64, Outbox>>,
    patterns: Vec<(Bytes, u64, Outbox)>,
}

/// Every subscription of the relay's clients.
#[derive(Default)]
pub struct PubSub {
    subs: Mutex<Subscriptions>,
}

/// One client's side: its subscriptions and the messages waiting for it.
pub struct Subscriber {
    id: u64,
    outbox: Outbox,
    rx: mpsc::Receiver<Bytes>,
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
}

impl Subscriber {
    /// A client's subscriber; `close` is cancelled when it falls too far behind.
    pub fn new(id: u64, close: CancellationToken) -> Subscriber {
        let (tx, rx) = mpsc::channel(QUEUE);
        Subscriber {
            id,
            outbox: Outbox { tx, close },
            rx,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
        }
    }

    /// Subscriptions in all: the count Redis puts in (un)subscribe replies.
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// The next message for this client.
    pub async fn next(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// A message already waiting, if any.
    pub fn ready(&mut self) -> Option<Bytes> {
        self.rx.try_recv().ok()
    }
}

/// The reply to one (un)subscription: `[kind, name, count]`.
fn confirm(kind: &str, name: Option<&Bytes>, count: usize) -> Reply {
    Reply::Array(vec![
        Reply::bulk(kind.to_string()),
        name.map_or(Reply::Nil, |n| Reply::Bulk(n.clone())),
        Reply::Int(count as i64),
    ])
}

impl PubSub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// SUBSCRIBE (or PSUBSCRIBE when `pattern`): one confirmation per name, in order.
    pub fn subscribe(&self, sub: &mut Subscriber, names: &[Bytes], pattern: bool) -> Vec<Reply> {
        let mut out = Vec::new();
        for name in names {
            if let Err(e) = self.add(sub, name, pattern) {
                out.push(Reply::err(e));
                continue;
            }
            let kind = if pattern { "psubscribe" } else { "subscribe" };
            out.push(confirm(kind, Some(name), sub.count()));
        }
        out
    }

    fn add(&self, sub: &mut Subscriber, name: &Bytes, pattern: bool) -> Result<(), String> {
        let (limit, what) = if pattern {
            (MAX_PATTERN, "pattern")
        } else {
            (MAX_CHANNEL, "channel name")
        };
        if name.len() > limit {
            return Err(format!("ERR {what} longer than {limit} bytes"));
        }
        let mine = if pattern {
            &mut sub.patterns
        } else {
            &mut sub.channels
        };
        if mine.contains(name) {
            return Ok(());
        }
        if sub.channels.len() + sub.patterns.len() >= MAX_SUBSCRIPTIONS {
            return Err(format!(
                "ERR a client of replica-relay may hold at most {MAX_SUBSCRIPTIONS} subscriptions"
            ));
        }
        let mut subs = self.lock();
        if pattern {
            if subs.patterns.len() >= MAX_PATTERNS {
                return Err(format!(
                    "ERR replica-relay holds at most {MAX_PATTERNS} pattern subscriptions in all"
                ));
            }
            subs.patterns
                .push((name.clone(), sub.id, sub.outbox.clone()));
            sub.patterns.insert(name.clone());
        } else {
            let entry = subs.channels.entry(name.clone()).or_default();
            entry.insert(sub.id, sub.outbox.clone());
            sub.channels.insert(name.clone());
        }
        Ok(())
    }

    /// UNSUBSCRIBE (or PUNSUBSCRIBE): the names given, or all of that kind when none.
    pub fn unsubscribe(&self, sub: &mut Subscriber, names: &[Bytes], pattern: bool) -> Vec<Reply> {
        let kind = if pattern {
            "punsubscribe"
        } else {
            "unsubscribe"
        };
        let names: Vec<Bytes> = if names.is_empty() {
            let mine = if pattern {
                &sub.patterns
            } else {
                &sub.channels
            };
            mine.iter().cloned().collect()
        } else {
            names.to_vec()
        };
        if names.is_empty() {
            return vec![confirm(kind, None, sub.count())];
        }
        let mut subs = self.lock();
        names
            .iter()
            .map(|name| {
                if pattern && sub.patterns.remove(name) {
                    subs.patterns
                        .retain(|(p, id, _)| !(p == name && *id == sub.id));
                } else if !pattern && sub.channels.remove(name) {
                    remove_channel(&mut subs, name, sub.id);
                }
                confirm(kind, Some(name), sub.count())
            })
            .collect()
    }

    /// Drops every subscription of a client that is leaving.
    pub fn leave(&self, sub: &Subscriber) {
        let mut subs = self.lock();
        for name in &sub.channels {
            remove_channel(&mut subs, name, sub.id);
        }
        subs.patterns.retain(|(_, id, _)| *id != sub.id);
    }

    /// PUBLISH: queues the message for every subscriber of the channel and every matching
    /// pattern; returns how many received it.
    pub fn publish(&self, channel: &Bytes, message: &Bytes) -> Result<i64, String> {
        if channel.len() > MAX_CHANNEL {
            return Err(format!("ERR channel name longer than {MAX_CHANNEL} bytes"));
        }
        if message.len() > MAX_MESSAGE {
            return Err(format!(
                "ERR replica-relay publishes messages of at most {MAX_MESSAGE} bytes"
            ));
        }
        let subs = self.lock();
        let mut received = 0;
        if let Some(outboxes) = subs.channels.get(channel) {
            let encoded = encode(&["message"], channel, message);
            for (id, outbox) in outboxes {
                received += i64::from(outbox.send(*id, encoded.clone()));
            }
        }
        for (pattern, id, outbox) in &subs.patterns {
            let mut budget = MATCH_BUDGET;
            if glob::matches(pattern, channel, &mut budget) == Ok(true) {
                let encoded = encode_pmessage(pattern, channel, message);
                received += i64::from(outbox.send(*id, encoded));
            }
        }
        Ok(received)
    }
}

fn remove_channel(subs: &mut Subscriptions, name: &Bytes, id: u64) {
    if let Some(outboxes) = subs.channels.get_mut(name) {
        outboxes.remove(&id);
        if outboxes.is_empty() {
            subs.channels.remove(name);
        }
    }
}

/// `message`, encoded once and shared by every subscriber of the channel.
fn encode(kind: &[&str], channel: &Bytes, message: &Bytes) -> Bytes {
    let mut items: Vec<Reply> = kind.iter().map(|k| Reply::bulk(k.to_string())).collect();
    items.push(Reply::Bulk(channel.clone()));
    items.push(Reply::Bulk(message.clone()));
    let mut out = BytesMut::with_capacity(message.len() + channel.len() + 64);
    Reply::Array(items).encode(&mut out);
    out.freeze()
}

fn encode_pmessage(pattern: &Bytes, channel: &Bytes, message: &Bytes) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + channel.len() + pattern.len() + 64);
    Reply::Array(vec![
        Reply::bulk("pmessage"),
        Reply::Bulk(pattern.clone()),
        Reply::Bulk(channel.clone()),
        Reply::Bulk(message.clone()),
    ])
    .encode(&mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn messages_reach_channel_and_pattern_subscribers() {
        let hub = PubSub::default();
        let mut a = Subscriber::new(1, CancellationToken::new());
        let mut p = Subscriber::new(2, CancellationToken::new());
        hub.subscribe(&mut a, &[b("__sentinel__:hello")], false);
        hub.subscribe(&mut p, &[b("__sentinel__:*")], true);
        assert_eq!(hub.publish(&b("__sentinel__:hello"), &b("hi")), Ok(2));
        assert_eq!(hub.publish(&b("other"), &b("hi")), Ok(0));
        let got = a.ready().unwrap();
        assert_eq!(
            &got[..],
            b"*3\r\n$7\r\nmessage\r\n$18\r\n__sentinel__:hello\r\n$2\r\nhi\r\n"
        );
        assert!(p.ready().unwrap().starts_with(b"*4\r\n$8\r\npmessage\r\n"));
        hub.unsubscribe(&mut a, &[], false);
        hub.leave(&p);
        assert_eq!(hub.publish(&b("__sentinel__:hello"), &b("hi")), Ok(0));
    }

    #[test]
    fn a_subscriber_that_does_not_read_is_closed_not_buffered_for() {
        let hub = PubSub::default();
        let close = CancellationToken::new();
        let mut slow = Subscriber::new(1, close.clone());
        hub.subscribe(&mut slow, &[b("c")], false);
        for _ in 0..QUEUE {
            assert_eq!(hub.publish(&b("c"), &b("m")), Ok(1));
        }
        assert!(!close.is_cancelled());
        assert_eq!(hub.publish(&b("c"), &b("m")), Ok(0));
        assert!(close.is_cancelled());
    }

    #[test]
    fn what_a_client_controls_is_bounded() {
        let hub = PubSub::default();
        let mut s = Subscriber::new(1, CancellationToken::new());
        let long = Bytes::from(vec![b'a'; MAX_CHANNEL + 1]);
        assert!(matches!(
            &hub.subscribe(&mut s, std::slice::from_ref(&long), false)[0],
            Reply::Error(_)
        ));
        assert!(hub.publish(&long, &b("m")).is_err());
        assert!(
            hub.publish(&b("c"), &Bytes::from(vec![0; MAX_MESSAGE + 1]))
                .is_err()
        );
        let many: Vec<Bytes> = (0..MAX_SUBSCRIPTIONS + 1)
            .map(|i| b(&format!("c{i}")))
            .collect();
        let replies = hub.subscribe(&mut s, &many, false);
        assert!(matches!(replies.last().unwrap(), Reply::Error(_)));
        assert_eq!(s.count(), MAX_SUBSCRIPTIONS);
        let mut others: Vec<Subscriber> = (0..MAX_PATTERNS + 1)
            .map(|i| Subscriber::new(10 + i as u64, CancellationToken::new()))
            .collect();
        let refused = others
            .iter_mut()
            .map(|o| hub.subscribe(o, &[b("*a*a*a*a*a*a*a*b")], true))
            .filter(|r| matches!(r[0], Reply::Error(_)))
            .count();
        assert_eq!(refused, 1);
        // The worst patterns against the longest channel still match within each budget.
        let channel = Bytes::from(vec![b'a'; MAX_CHANNEL]);
        assert_eq!(hub.publish(&channel, &b("m")), Ok(0));
    }
}

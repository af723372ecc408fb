//! Following one shard of a Redis Cluster (`--cluster-node`, `--cluster-shard`, PROTOCOL §12).
//!
//! A cluster primary serves PSYNC to any client, so the relay replicates a shard's primary as
//! it would any master; it is not a node of the cluster bus, and never a candidate in the
//! cluster's failovers. A cluster announces no failover to its clients, so the relay looks:
//! every second it asks a node it knows for `CLUSTER NODES` (every version has it), finds its
//! shard there and follows the shard's primary. The shard is its nodes, not its slots: a
//! failover promotes one of them, resharding moves slots and leaves the nodes. The nodes are
//! recorded in `<dir>/cluster-shard` (`shard_file`), so a restart follows the same shard; every node of the
//! cluster is learnt, so the death of the node given with `--cluster-node` does not blind the
//! relay.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use tracing::{info, warn};

use super::Upstream;
use super::wire::{Auth, MasterConn};
use crate::config::{ClusterShard, MasterAddr};
use crate::link::Repoint;
use crate::resp::Reply;
use crate::shard_file;

/// How often the cluster is asked for its nodes.
const POLL: Duration = Duration::from_secs(1);
/// Connect and reply timeout of one node.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A node as `CLUSTER NODES` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub addr: MasterAddr,
    pub primary: bool,
    /// Flagged `fail` or `fail?` by the cluster.
    pub failing: bool,
    /// A replica's primary.
    pub primary_id: Option<String>,
    /// Slot ranges, both ends included.
    pub slots: Vec<(u16, u16)>,
}

impl Node {
    /// The shard a node belongs to, named by its primary's id.
    fn shard_root(&self) -> &str {
        match (&self.primary_id, self.primary) {
            (Some(primary), false) => primary,
            _ => &self.id,
        }
    }

    fn healthy_primary(&self) -> bool {
        self.primary && !self.failing
    }

    fn holds(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <primary|-> <ping> <pong> <epoch>
/// <link> <slots...>`. Nodes without an address yet (`noaddr`, a handshake) are left out.
pub fn parse_nodes(text: &str) -> Vec<Node> {
    text.lines().filter_map(parse_node).collect()
}

fn parse_node(line: &str) -> Option<Node> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [id, addr, flags, primary, _, _, _, _, slots @ ..] = &fields[..] else {
        return None;
    };
    let flags: Vec<&str> = flags.split(',').collect();
    if flags.iter().any(|f| ["noaddr", "handshake"].contains(f)) {
        return None;
    }
    let endpoint = addr.split([',', '@']).next()?;
    let (host, port) = endpoint.rsplit_once(':')?;
    let slots = slots.iter().filter_map(|s| {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        Some((a.parse().ok()?, b.parse().ok()?))
    });
    Some(Node {
        id: id.to_string(),
        addr: MasterAddr::parse(host.trim_matches(['[', ']']), port).ok()?,
        primary: flags.contains(&"master"),
        failing: flags.iter().any(|f| *f == "fail" || *f == "fail?"),
        primary_id: Some(primary.to_string()).filter(|p| p != "-"),
        slots: slots.collect(),
    })
}

/// The nodes of the shard `root` names, its primary first.
fn shard(nodes: &[Node], root: &str) -> Vec<Node> {
    let mut out: Vec<Node> = nodes
        .iter()
        .filter(|n| n.shard_root() == root)
        .cloned()
        .collect();
    out.sort_by_key(|n| (n.id != root, n.id.clone()));
    out
}

/// The shard `--cluster-shard` names: the one holding a slot, the one of a node, or the I-th
/// of the healthy primaries holding slots in the order of their first slot.
fn named(nodes: &[Node], wanted: &ClusterShard) -> Option<Vec<Node>> {
    let node = match wanted {
        ClusterShard::Slot(s) => nodes.iter().find(|n| n.healthy_primary() && n.holds(*s)),
        ClusterShard::Id(id) => nodes.iter().find(|n| n.id == *id),
        ClusterShard::Index(i) => {
            let mut holding: Vec<&Node> = (nodes.iter())
                .filter(|n| n.healthy_primary() && !n.slots.is_empty())
                .collect();
            holding.sort_by_key(|n| n.slots.iter().map(|r| r.0).min());
            holding.get(*i).copied()
        }
    }?;
    Some(shard(nodes, node.shard_root()))
}

/// The relay's shard among `nodes`, whose ids it knew as `members`: the one whose primary it
/// follows while that is still a healthy primary; else, of the shards holding its nodes, the
/// one with a healthy primary and most of them (a failover promoted one). `None` while none has
/// a healthy primary: the relay keeps what it follows.
fn ours(nodes: &[Node], members: &BTreeSet<String>, followed: Option<&str>) -> Option<Vec<Node>> {
    let roots: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| members.contains(&n.id))
        .map(Node::shard_root)
        .collect();
    let shards = roots.into_iter().map(|r| shard(nodes, r));
    let healthy = shards.filter(|s| s.first().is_some_and(Node::healthy_primary));
    let overlap = |s: &Vec<Node>| s.iter().filter(|n| members.contains(&n.id)).count();
    healthy.max_by_key(|s| (Some(s[0].id.as_str()) == followed, overlap(s)))
}

pub async fn run(up: Arc<Upstream>) {
    let Some(wanted) = up.settings.cluster_shard.clone() else {
        return;
    };
    let members = match shard_file::recorded(&up.settings.dir) {
        Ok(m) => m,
        Err(e) => {
            warn!("{e:#}; finding the shard from --cluster-shard again");
            BTreeSet::new()
        }
    };
    if !members.is_empty() {
        info!(
            "Following the cluster shard recorded in {} ({} nodes), whatever --cluster-shard says",
            shard_file::path(&up.settings.dir).display(),
            members.len()
        );
    }
    let mut watcher = Watcher {
        up: &up,
        known: up.settings.cluster_nodes.clone(),
        members,
        wanted,
        followed: None,
        said: None,
    };
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A failover shows first as a broken link: look at once, not at the next tick.
            _ = up.link_lost.notified() => tick.reset(),
            _ = up.shutdown.cancelled() => return,
        }
        if let Err(e) = watcher.look().await {
            watcher.say(format!("{e:#}"));
            up.cluster
                .update(|c| c.unreachable = Some(format!("{e:#}")));
        }
    }
}

struct Watcher<'a> {
    up: &'a Upstream,
    /// Every node of the cluster the relay knows, the last one that answered first.
    known: Vec<MasterAddr>,
    /// The ids of the shard's nodes.
    members: BTreeSet<String>,
    wanted: ClusterShard,
    /// The id of the primary followed.
    followed: Option<String>,
    /// The last warning, said once until something else happens.
    said: Option<String>,
}

impl Watcher<'_> {
    /// One look at the cluster: its nodes, the relay's shard, and its primary followed.
    async fn look(&mut self) -> Result<()> {
        let nodes = self.ask_any().await?;
        self.learn(&nodes);
        let shard = if self.members.is_empty() {
            match named(&nodes, &self.wanted) {
                Some(shard) => Some(shard),
                None => self.by_shard_id(&nodes).await,
            }
        } else {
            ours(&nodes, &self.members, self.followed.as_deref())
        };
        let Some(shard) = shard else {
            bail!(
                "no healthy primary in the cluster shard {} yet; following {} meanwhile",
                self.describe(),
                self.up
                    .control
                    .master()
                    .map_or("no master".into(), |m| m.to_string())
            );
        };
        self.adopt(shard, nodes.len()).await;
        Ok(())
    }

    /// The shard whose id `--cluster-shard` gives (`CLUSTER MYSHARDID` of each primary).
    async fn by_shard_id(&self, nodes: &[Node]) -> Option<Vec<Node>> {
        let ClusterShard::Id(wanted) = &self.wanted else {
            return None;
        };
        for primary in nodes.iter().filter(|n| n.healthy_primary()) {
            if self.shard_id(&primary.addr).await.as_ref() == Some(wanted) {
                return Some(shard(nodes, &primary.id));
            }
        }
        None
    }

    /// A node's shard id; `None` from a server without `CLUSTER MYSHARDID`.
    async fn shard_id(&self, addr: &MasterAddr) -> Option<String> {
        let asked = async {
            let mut conn = MasterConn::connect(&self.up.dialer, addr, TIMEOUT).await?;
            let reply = conn
                .command(self.auth(), &[b"CLUSTER", b"MYSHARDID"])
                .await?;
            anyhow::Ok(reply)
        };
        match tokio::time::timeout(TIMEOUT, asked).await {
            Ok(Ok(Reply::Bulk(id))) => Some(String::from_utf8_lossy(&id).to_ascii_lowercase()),
            _ => None,
        }
    }

    fn auth(&self) -> Auth<'_> {
        Auth {
            user: self.up.settings.masteruser.as_deref(),
            pass: self.up.settings.masterauth.as_deref(),
        }
    }

    async fn adopt(&mut self, shard: Vec<Node>, known: usize) {
        let primary = shard[0].clone();
        if self.followed.as_deref() != Some(&primary.id) {
            let id = self.shard_id(&primary.addr).await;
            self.up.cluster.update(|c| c.shard_id = id);
        }
        self.repoint(&primary);
        self.remember(shard.iter().map(|n| n.id.clone()).collect())
            .await;
        if primary.slots.is_empty() {
            self.say(format!(
                "The cluster shard of primary {} holds no slots (resharded away); the relay still follows it",
                primary.id
            ));
        } else {
            self.said = None;
        }
        self.up.cluster.update(|c| {
            c.nodes = shard;
            c.known = known;
            c.unreachable = None;
        });
    }

    /// Follows the shard's primary, when it is another than the one followed.
    fn repoint(&mut self, primary: &Node) {
        if self.followed.as_deref() == Some(&primary.id) {
            return;
        }
        let why = match &self.followed {
            None => format!(
                "primary {} of the cluster shard {}",
                primary.id,
                self.describe()
            ),
            Some(old) => format!(
                "the cluster promoted {} in place of {old}, the shard's primary before",
                primary.id
            ),
        };
        let addr = Some(primary.addr.clone());
        self.up.control.set(addr, Repoint::Cluster, &why);
        self.followed = Some(primary.id.clone());
    }

    /// Records the shard's nodes in `--dir` when they changed, off the runtime (an fsync).
    async fn remember(&mut self, members: BTreeSet<String>) {
        if members == self.members {
            return;
        }
        let (dir, kept) = (self.up.settings.dir.clone(), members.clone());
        let recorded = tokio::task::spawn_blocking(move || shard_file::record(&dir, &kept)).await;
        if let Err(e) = recorded.map_err(anyhow::Error::from).and_then(|r| r) {
            let dir = self.up.settings.dir.display();
            warn!("Recording the cluster shard in {dir}: {e:#}");
        }
        self.members = members;
    }

    /// The nodes to ask next time: the one that answered first, then the cluster's live nodes
    /// as it lists them, then the configured ones. Bounded by the cluster's size: nodes gone
    /// from the cluster are forgotten.
    fn learn(&mut self, nodes: &[Node]) {
        let live = nodes.iter().filter(|n| !n.failing).map(|n| n.addr.clone());
        let seeds = self.up.settings.cluster_nodes.iter().cloned();
        let mut known: Vec<MasterAddr> = Vec::new();
        for addr in self.known.drain(..1).chain(live).chain(seeds) {
            if !known.contains(&addr) {
                known.push(addr);
            }
        }
        self.known = known;
    }

    /// The cluster's nodes, from the first node that answers (put first in `known`).
    async fn ask_any(&mut self) -> Result<Vec<Node>> {
        for i in 0..self.known.len() {
            let addr = self.known[i].clone();
            match tokio::time::timeout(TIMEOUT, self.ask(&addr)).await {
                Ok(Ok(nodes)) if !nodes.is_empty() => {
                    self.known[..=i].rotate_right(1);
                    return Ok(nodes);
                }
                Ok(Ok(_)) => tracing::debug!("{addr} lists no cluster nodes"),
                Ok(Err(e)) => tracing::debug!("Asking {addr} for CLUSTER NODES: {e:#}"),
                Err(_) => tracing::debug!("Asking {addr} for CLUSTER NODES: timed out"),
            }
        }
        bail!(
            "no node of the cluster answers CLUSTER NODES ({} tried)",
            self.known.len()
        )
    }

    async fn ask(&self, addr: &MasterAddr) -> Result<Vec<Node>> {
        let mut conn = MasterConn::connect(&self.up.dialer, addr, TIMEOUT).await?;
        match conn.command(self.auth(), &[b"CLUSTER", b"NODES"]).await? {
            Reply::Bulk(text) => Ok(parse_nodes(&String::from_utf8_lossy(&text))),
            Reply::Error(e) => bail!("CLUSTER NODES on {addr}: {e}"),
            other => bail!("CLUSTER NODES on {addr}: unexpected reply {other:?}"),
        }
    }

    fn describe(&self) -> String {
        match &self.wanted {
            _ if !self.members.is_empty() => format!("of nodes {:?}", self.members),
            ClusterShard::Slot(s) => format!("of slot {s}"),
            ClusterShard::Id(id) => format!("of node {id}"),
            ClusterShard::Index(i) => format!("number {i} in slot order"),
        }
    }

    fn say(&mut self, what: String) {
        if self.said.as_ref() != Some(&what) {
            warn!("{what}");
            self.said = Some(what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:30002@40002,host-2 master - 0 0 2 connected 5461-10922 [5461->-a3]
a3 127.0.0.1:30003@40003 master - 0 0 3 connected 10923-16383
b1 127.0.0.1:30004@40004 slave a1 0 0 1 connected
b2 127.0.0.1:30005@40005 slave a2 0 0 2 connected
b3 127.0.0.1:30006@40006 slave a3 0 0 3 connected
c9 :0@0 noaddr,master - 0 0 0 disconnected
";

    fn ids(shard: &[Node]) -> Vec<&str> {
        shard.iter().map(|n| n.id.as_str()).collect()
    }

    #[test]
    fn cluster_nodes_lines_are_read() {
        let nodes = parse_nodes(NODES);
        assert_eq!(nodes.len(), 6, "the node without an address is left out");
        assert_eq!(nodes[1].addr.port, 30002);
        assert_eq!(
            nodes[1].slots,
            vec![(5461, 10922)],
            "a migrating slot is not held"
        );
        assert_eq!(nodes[3].primary_id.as_deref(), Some("a1"));
        assert!(!nodes[3].primary);
    }

    #[test]
    fn the_shard_is_named_by_a_slot_a_node_or_an_index() {
        let nodes = parse_nodes(NODES);
        let by_slot = named(&nodes, &ClusterShard::Slot(6000)).unwrap();
        assert_eq!(ids(&by_slot), ["a2", "b2"]);
        let by_replica = named(&nodes, &ClusterShard::Id("b3".into())).unwrap();
        assert_eq!(ids(&by_replica), ["a3", "b3"]);
        // In the order of the shards' first slots, whatever the order of the lines.
        let shuffled: String = NODES.lines().rev().map(|l| format!("{l}\n")).collect();
        let third = named(&parse_nodes(&shuffled), &ClusterShard::Index(2)).unwrap();
        assert_eq!(ids(&third), ["a3", "b3"]);
        assert!(named(&nodes, &ClusterShard::Index(3)).is_none());
    }

    #[test]
    fn a_failover_is_followed_to_the_promoted_replica() {
        let members: BTreeSet<String> = ["a1", "b1"].map(String::from).into();
        let failed = NODES
            .replace(
                "a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460",
                "a1 127.0.0.1:30001@40001 master,fail - 0 0 1 disconnected",
            )
            .replace(
                "b1 127.0.0.1:30004@40004 slave a1 0 0 1 connected",
                "b1 127.0.0.1:30004@40004 master - 0 0 4 connected 0-5460",
            );
        let nodes = parse_nodes(&failed);
        assert_eq!(ids(&ours(&nodes, &members, Some("a1")).unwrap()), ["b1"]);
        let back = failed.replace(
            "a1 127.0.0.1:30001@40001 master,fail - 0 0 1 disconnected",
            "a1 127.0.0.1:30001@40001 slave b1 0 0 4 connected",
        );
        let nodes = parse_nodes(&back);
        assert_eq!(
            ids(&ours(&nodes, &members, Some("b1")).unwrap()),
            ["b1", "a1"]
        );
    }

    #[test]
    fn without_a_healthy_primary_nothing_is_chosen() {
        let members: BTreeSet<String> = ["a1", "b1"].map(String::from).into();
        let failed = NODES.replace(
            "myself,master - 0 0 1 connected 0-5460",
            "master,fail - 0 0 1 disconnected 0-5460",
        );
        assert!(ours(&parse_nodes(&failed), &members, Some("a1")).is_none());
    }

    #[test]
    fn a_shard_resharded_away_is_still_the_shard() {
        let members: BTreeSet<String> = ["a3", "b3"].map(String::from).into();
        let empty = NODES.replace("connected 10923-16383", "connected");
        let shard = ours(&parse_nodes(&empty), &members, Some("a3")).unwrap();
        assert_eq!(
            (ids(&shard), shard[0].slots.is_empty()),
            (vec!["a3", "b3"], true)
        );
    }
}

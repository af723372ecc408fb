//! Finding the master through Sentinel (`--sentinel`, PROTOCOL §10.3), as a Sentinel-aware
//! client does: ask a Sentinel for the master (`SENTINEL get-master-addr-by-name`), check the
//! answer with the master's own INFO (`role:master`), and move when a Sentinel announces a
//! failover (`+switch-master`). This works whether or not Sentinel knows the relay as a
//! replica: a relay in another data centre, or behind another relay, is moved all the same.
//!
//! One Sentinel is listened to at a time; when it stops answering the next is tried. When
//! none answers the relay keeps following the master it has. The relay moves only when what
//! the Sentinels name changes, so an operator's own REPLICAOF (or `--replicaof`, naming a
//! replica or another relay to attach to) stays until the next failover.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tracing::{info, warn};

use super::Upstream;
use super::wire::{Auth, MasterConn};
use crate::config::MasterAddr;
use crate::link::Repoint;
use crate::resp::Reply;
use crate::tls::Dialer;

/// Connect and reply timeout of every Sentinel request.
const TIMEOUT: Duration = Duration::from_secs(3);
/// How often the master is asked for again while subscribed (a failover announced while the
/// relay was between Sentinels is caught this way) and the subscription is checked alive.
const RECHECK: Duration = Duration::from_secs(5);
/// Longest wait between rounds over the Sentinels when none answers.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub async fn run(up: Arc<Upstream>) {
    let (Some(name), false) = (
        &up.settings.sentinel_master,
        up.settings.sentinels.is_empty(),
    ) else {
        return;
    };
    let mut watcher = Watcher {
        up: &up,
        name,
        named: None,
        epoch: None,
        listened: false,
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let (mut unreachable, mut listened) = (0, false);
        for sentinel in &up.settings.sentinels {
            watcher.listened = false;
            // A watch ends only when its Sentinel fails.
            let e = tokio::select! {
                e = watcher.watch(sentinel) => e,
                _ = up.shutdown.cancelled() => return,
            };
            warn!("Sentinel {sentinel}: {e:#}");
            listened |= watcher.listened;
            unreachable += usize::from(!watcher.listened);
            up.sentinel.update(|s| {
                s.watching = None;
                s.unreachable = unreachable;
            });
        }
        if listened {
            backoff = Duration::from_secs(1);
        } else {
            let keep = up.control.master();
            warn!(
                "No Sentinel answers; following {} meanwhile",
                keep.map_or("no master".into(), |m| m.to_string())
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = up.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

struct Watcher<'a> {
    up: &'a Upstream,
    name: &'a str,
    /// What the Sentinels named last.
    named: Option<MasterAddr>,
    /// The configuration epoch of that answer, when the Sentinel said it.
    epoch: Option<u64>,
    /// The current watch got as far as listening for failovers.
    listened: bool,
}

/// A Sentinel's answer: the master, and the configuration epoch it was named in (`SENTINEL
/// MASTER`'s `config-epoch`; unknown where only `get-master-addr-by-name` is allowed).
struct Answer {
    master: MasterAddr,
    epoch: Option<u64>,
}

impl Watcher<'_> {
    /// Listens to one Sentinel until it fails.
    async fn watch(&mut self, sentinel: &MasterAddr) -> anyhow::Error {
        match self.listen(sentinel).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn listen(&mut self, sentinel: &MasterAddr) -> Result<std::convert::Infallible> {
        let answer = self.newest(sentinel).await?;
        self.adopt(answer, Repoint::Sentinel).await;
        // Replies come at least every RECHECK (the PING's): a silent subscription is dead.
        let mut conn = self.connect(sentinel, RECHECK * 3).await?;
        let reply = conn.request(&[b"SUBSCRIBE", b"+switch-master"]).await?;
        if !matches!(&reply, Reply::Array(items) if items.first() == Some(&Reply::bulk("subscribe")))
        {
            bail!("SUBSCRIBE +switch-master refused: {reply:?}");
        }
        info!(
            "Watching Sentinel {sentinel} for failovers of master '{}'",
            self.name
        );
        self.up.sentinel.update(|s| {
            s.watching = Some(sentinel.clone());
            s.unreachable = 0;
        });
        self.listened = true;
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            tokio::select! {
                message = conn.read_reply() => {
                    if let Some(master) = self.switched(&message?) {
                        // Announced at the end of a failover, in an epoch greater than any
                        // answer before it: a Sentinel still naming the old master is behind.
                        let epoch = self.epoch.map(|e| e + 1);
                        self.adopt(Answer { master, epoch }, Repoint::SwitchMaster).await;
                    }
                }
                _ = recheck.tick() => {
                    // Keeps the subscription alive (a PING is answered in subscribed mode)
                    // and catches a failover announced before it was subscribed.
                    conn.send(&[b"PING"]).await?;
                    let answer = self.newest(sentinel).await?;
                    self.adopt(answer, Repoint::Sentinel).await;
                }
            }
        }
    }

    async fn connect(&self, sentinel: &MasterAddr, timeout: Duration) -> Result<MasterConn> {
        let mut conn = MasterConn::connect(&Dialer::plain(), sentinel, timeout).await?;
        let cfg = &self.up.settings;
        let auth = match (&cfg.sentinel_user, &cfg.sentinel_password) {
            (Some(user), Some(pass)) => vec![b"AUTH".as_slice(), user.as_bytes(), pass.as_bytes()],
            (None, Some(pass)) => vec![b"AUTH".as_slice(), pass.as_bytes()],
            _ => return Ok(conn),
        };
        match conn.request(&auth).await? {
            Reply::Error(e) => bail!("AUTH refused: {e}"),
            _ => Ok(conn),
        }
    }

    /// The answer of the Sentinel watched (its failure ends the watch) or of another one that
    /// names the master in a newer configuration epoch: a Sentinel that has not learnt of a
    /// failover yet still names the old master, in the old epoch (Sentinel's own rule: the
    /// greater epoch wins).
    async fn newest(&self, watched: &MasterAddr) -> Result<Answer> {
        let mut newest = self.ask(watched).await?;
        for other in self.up.settings.sentinels.iter().filter(|s| *s != watched) {
            if let Ok(answer) = self.ask(other).await
                && answer.epoch > newest.epoch
            {
                newest = answer;
            }
        }
        Ok(newest)
    }

    /// `SENTINEL MASTER <name>` (its address and configuration epoch) on a short connection
    /// of its own; `SENTINEL get-master-addr-by-name <name>` where that is refused (an ACL).
    async fn ask(&self, sentinel: &MasterAddr) -> Result<Answer> {
        let ask = async {
            let mut conn = self.connect(sentinel, TIMEOUT).await?;
            let args: [&[u8]; 3] = [b"SENTINEL", b"MASTER", self.name.as_bytes()];
            if let Reply::Array(items) = conn.request(&args).await? {
                let field = |name: &str| {
                    items.chunks(2).find_map(|kv| match kv {
                        [Reply::Bulk(k), Reply::Bulk(v)] if k.as_ref() == name.as_bytes() => {
                            Some(String::from_utf8_lossy(v).into_owned())
                        }
                        _ => None,
                    })
                };
                if let (Some(host), Some(port)) = (field("ip"), field("port")) {
                    let epoch = field("config-epoch").and_then(|e| e.parse().ok());
                    let master = MasterAddr::parse(&host, &port)?;
                    return Ok(Answer { master, epoch });
                }
            }
            let args: [&[u8]; 3] = [
                b"SENTINEL",
                b"get-master-addr-by-name",
                self.name.as_bytes(),
            ];
            let master = match conn.request(&args).await? {
                Reply::Array(items) => match &items[..] {
                    [Reply::Bulk(host), Reply::Bulk(port)] => MasterAddr::parse(
                        &String::from_utf8_lossy(host),
                        &String::from_utf8_lossy(port),
                    )?,
                    _ => bail!("malformed reply to SENTINEL get-master-addr-by-name"),
                },
                Reply::Nil => bail!("this Sentinel monitors no master named '{}'", self.name),
                Reply::Error(e) => bail!("SENTINEL get-master-addr-by-name: {e}"),
                other => bail!("unexpected reply to SENTINEL get-master-addr-by-name: {other:?}"),
            };
            Ok(Answer {
                master,
                epoch: None,
            })
        };
        tokio::time::timeout(TIMEOUT, ask)
            .await
            .context("timed out")?
    }

    /// The new master a `+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>`
    /// message names, when it is about this relay's master.
    fn switched(&self, message: &Reply) -> Option<MasterAddr> {
        let Reply::Array(items) = message else {
            return None;
        };
        let [kind, channel, Reply::Bulk(body)] = &items[..] else {
            return None;
        };
        if *kind != Reply::bulk("message") || *channel != Reply::bulk("+switch-master") {
            return None;
        }
        let body = String::from_utf8_lossy(body);
        match body.split_whitespace().collect::<Vec<_>>()[..] {
            [name, _, _, host, port] if name == self.name => MasterAddr::parse(host, port).ok(),
            _ => None,
        }
    }

    /// Follows `master` if it is new from the Sentinels and its INFO says it is a master. The
    /// first answer only records it when `--replicaof` names where to attach (a replica, or
    /// another relay): the Sentinels move such a relay at the next failover.
    async fn adopt(&mut self, answer: Answer, reason: Repoint) {
        let Answer { master, epoch } = answer;
        if self.named.as_ref() == Some(&master) {
            self.epoch = self.epoch.max(epoch);
            return;
        }
        if epoch.is_some() && epoch < self.epoch {
            return; // a Sentinel behind the one that named the master followed now
        }
        if self.named.is_none()
            && let Some(configured) = &self.up.settings.replicaof
        {
            info!(
                "Sentinel names {master} the master of '{}'; following {configured} as configured until the Sentinels announce a failover",
                self.name
            );
            self.up.sentinel.update(|s| s.named = Some(master.clone()));
            self.named = Some(master);
            self.epoch = epoch;
            return;
        }
        if let Err(e) = self.is_master(&master).await {
            warn!("Sentinel names {master} as the master, but it is not usable yet: {e:#}");
            return;
        }
        let why = match reason {
            Repoint::SwitchMaster => {
                format!("a Sentinel announced +switch-master for '{}'", self.name)
            }
            _ => format!("the Sentinels name it the master of '{}'", self.name),
        };
        self.up.control.set(Some(master.clone()), reason, &why);
        self.up.sentinel.update(|s| s.named = Some(master.clone()));
        self.named = Some(master);
        self.epoch = epoch;
    }

    /// Whether `master` says `role:master` in its INFO: a client checks what Sentinel names.
    async fn is_master(&self, master: &MasterAddr) -> Result<()> {
        let check = async {
            let mut conn = MasterConn::connect(&self.up.dialer, master, TIMEOUT).await?;
            let cfg = &self.up.settings;
            let auth = Auth {
                user: cfg.masteruser.as_deref(),
                pass: cfg.masterauth.as_deref(),
            };
            let info = conn.info(auth, b"replication").await?;
            match info.lines().find_map(|l| l.strip_prefix("role:")) {
                Some(r) if r.trim() == "master" => Ok(()),
                Some(r) => bail!("its INFO says role:{}", r.trim()),
                None => bail!("its INFO has no role"),
            }
        };
        tokio::time::timeout(TIMEOUT, check)
            .await
            .context("timed out")?
    }
}

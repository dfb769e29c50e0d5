//! Whether Redis may evict the queue's keys. A Redis whose
//! `maxmemory-policy` is anything but `noeviction` drops keys when it is
//! full: job records, stream entries, whole queues, in silence. The
//! services check it at start (and refuse, unless told to run anyway),
//! again whenever Redis answers after it did not (a restarted or
//! failed-over server may come back with another policy) and whenever
//! the policy changes ([`RedisQueue::watch_eviction`], which logs an error
//! a running service cannot refuse), and at every scrape of their
//! metrics.

use std::time::Duration;

use crate::QueueError;
use crate::queue::RedisQueue;

/// How often [`RedisQueue::watch_eviction`] reads the policy.
pub const EVICTION_WATCH_EVERY: Duration = Duration::from_secs(5);

/// The one policy under which Redis never drops the queue's keys.
pub const SAFE_POLICY: &str = "noeviction";

/// What one node holding a shard said of its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePolicy {
    /// The node (`host:port`).
    pub node: String,
    /// Its `maxmemory-policy`; `None` when `CONFIG GET` is not allowed
    /// there (some managed Redis services rename or forbid it).
    pub policy: Option<String>,
}

impl NodePolicy {
    /// Whether this node may evict keys (`false` when unknown).
    pub fn evicts(&self) -> bool {
        self.policy.as_deref().is_some_and(|p| p != SAFE_POLICY)
    }
}

impl RedisQueue {
    /// The `maxmemory-policy` of the node holding each shard. A node that
    /// does not answer fails the call; one that refuses `CONFIG` answers
    /// `None`.
    pub async fn eviction_policies(&self) -> Result<Vec<NodePolicy>, QueueError> {
        let mut out = Vec::new();
        for shard in self.shards() {
            let mut conn = shard.conn.clone();
            let mut cmd = redis::cmd("CONFIG");
            cmd.arg("GET").arg("maxmemory-policy");
            let node = conn
                .node_for(&shard.keys.stream)
                .unwrap_or_else(|| self.server().clone());
            let node = format!("{}:{}", node.address, node.port);
            let policy = match conn.query_at::<Vec<String>>(&shard.keys.stream, &cmd).await {
                Ok(pair) => pair.get(1).cloned(),
                Err(QueueError::Redis(e)) if e.kind() != redis::ErrorKind::Io => None,
                Err(e) => return Err(e),
            };
            if !out.iter().any(|p: &NodePolicy| p.node == node) {
                out.push(NodePolicy { node, policy });
            }
        }
        Ok(out)
    }

    /// Refuses a Redis that may evict the queue's keys (see the module
    /// docs), unless `allow`: then warns. A policy that cannot be read is
    /// warned about, not refused.
    pub async fn check_eviction(&self, allow: bool) -> Result<(), QueueError> {
        for node in self.eviction_policies().await? {
            match node.policy.as_deref() {
                None => tracing::warn!(
                    node = %node.node,
                    "could not read Redis's maxmemory-policy (CONFIG GET is not allowed): make \
                     sure it is noeviction, or jobs may vanish when Redis is full"
                ),
                Some(p) if p != SAFE_POLICY && allow => tracing::warn!(
                    node = %node.node,
                    policy = p,
                    "Redis's maxmemory-policy evicts keys when it is full: jobs may vanish \
                     without a trace (running anyway: REDIS_ALLOW_EVICTION)"
                ),
                Some(p) if p != SAFE_POLICY => {
                    return Err(QueueError::Config(format!(
                        "Redis at {} has maxmemory-policy {p}: when it is full it evicts keys, \
                         and jobs would vanish without a trace. Set it to noeviction (CONFIG SET \
                         maxmemory-policy noeviction, and in redis.conf), or set \
                         REDIS_ALLOW_EVICTION=true to run anyway",
                        node.node
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Reads the policy every [`EVICTION_WATCH_EVERY`] for as long as the
    /// returned task runs (abort it to stop): when Redis answers again
    /// after it did not (a reconnect), or when a node's policy changed, a
    /// policy that evicts is logged as an error (a warning under `allow`),
    /// and a safe one again as such. The metrics show it too.
    pub fn watch_eviction(&self, allow: bool) -> tokio::task::JoinHandle<()> {
        let queue = self.clone();
        tokio::spawn(async move {
            // What the last look found: at start, the check just passed.
            let mut last: Option<Vec<NodePolicy>> = queue.eviction_policies().await.ok();
            let mut was_down = last.is_none();
            loop {
                tokio::time::sleep(EVICTION_WATCH_EVERY).await;
                match queue.eviction_policies().await {
                    Err(_) => was_down = true,
                    Ok(nodes) => {
                        if last.as_ref() != Some(&nodes) {
                            report(&nodes, allow, "Redis's maxmemory-policy changed");
                        } else if was_down && nodes.iter().any(NodePolicy::evicts) {
                            report(&nodes, allow, "Redis answers again");
                        }
                        was_down = false;
                        last = Some(nodes);
                    }
                }
            }
        })
    }
}

/// Logs what `nodes` say of eviction, after `why` (a reconnect, a change).
fn report(nodes: &[NodePolicy], allow: bool, why: &str) {
    let evicting: Vec<String> = nodes
        .iter()
        .filter(|n| n.evicts())
        .map(|n| format!("{} ({})", n.node, n.policy.as_deref().unwrap_or_default()))
        .collect();
    if evicting.is_empty() {
        tracing::info!(
            why,
            "Redis's maxmemory-policy is noeviction: no job can be evicted"
        );
    } else if allow {
        tracing::warn!(
            why,
            nodes = %evicting.join(", "),
            "Redis's maxmemory-policy evicts keys when it is full: jobs may vanish without a \
             trace (running anyway: REDIS_ALLOW_EVICTION)"
        );
    } else {
        tracing::error!(
            why,
            nodes = %evicting.join(", "),
            "Redis's maxmemory-policy now evicts keys when it is full: jobs may vanish without \
             a trace. Set it to noeviction (CONFIG SET maxmemory-policy noeviction, and in \
             redis.conf); this service would refuse to start on it"
        );
    }
}

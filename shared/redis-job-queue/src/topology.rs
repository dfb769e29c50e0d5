//! Which node of a Redis Cluster answered, and what moved on the way.
//!
//! The redis crate's cluster client follows `MOVED` and `ASK` and rides
//! out a failover by itself, and says nothing of it. Spans want to know:
//! a Redis span names the node that answered as `server.address`, and a
//! redirect or a reconnect after a failover becomes one of its events.
//!
//! - Each node connection of the cluster client is a [`NodeConnection`]
//!   (the client's own plug for node connections, [`Connect`]): it sees
//!   every reply of its node and notes in a small process-wide journal the
//!   ones that change where a slot is served (a `MOVED` or `ASK` reply, a
//!   lost connection, a connection back to a node once lost).
//! - A [`ClusterView`] (one per target) keeps its own map of slots to
//!   masters from `CLUSTER SLOTS`, read at connect time and again after
//!   the journal notes anything about one of its nodes.
//! - [`RedisConnection::observe`](crate::RedisConnection::observe) runs
//!   commands on one key and answers the node that holds its slot once
//!   they are done, and the journal's notes about that slot or its nodes
//!   while they ran.
//!
//! Notes are matched to a call by slot and node, not by request: a call
//! whose slot moved while it ran is told so even if another call on the
//! same slot took the redirect first. Both went to the old node, and both
//! were answered by the new one.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use futures::FutureExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::Connect;
use redis::{AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use crate::ServerAddress;

/// What changed where a slot is served, as a Redis span's event tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyEvent {
    /// A node sent the command on (`MOVED`: the slot has a new master;
    /// `ASK`: the slot is being migrated and this key is already there).
    Redirect {
        /// `MOVED` or `ASK`.
        kind: RedirectKind,
        /// The slot.
        slot: u16,
        /// The node that sent it on.
        from: ServerAddress,
        /// The node it was sent to.
        to: ServerAddress,
    },
    /// The connection to the node that held the slot was lost (or could
    /// not be opened), and the command was answered by `to`: the promoted
    /// replica after a failover, or the same node once back.
    Reconnect {
        /// The node whose connection was lost.
        from: ServerAddress,
        /// The node that answered.
        to: ServerAddress,
        /// Why the connection was lost.
        error: String,
    },
}

/// The kind of a cluster redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// The slot has moved for good.
    Moved,
    /// The slot is migrating; this one command goes to the new node.
    Ask,
}

impl RedirectKind {
    /// `moved` or `ask`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Moved => "moved",
            Self::Ask => "ask",
        }
    }
}

/// What [`RedisConnection::observe`](crate::RedisConnection::observe)
/// found: the node that answered (`None` on one server, where it is the
/// one server) and what moved while the commands ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answered {
    /// The master of the key's slot once the commands were done.
    pub node: Option<ServerAddress>,
    /// Redirects and reconnects of the key's slot while they ran.
    pub events: Vec<TopologyEvent>,
}

/// A journal note.
#[derive(Debug, Clone)]
enum Note {
    Redirect {
        kind: RedirectKind,
        slot: u16,
        from: String,
        to: String,
    },
    Lost {
        node: String,
        error: String,
    },
    Back {
        node: String,
    },
}

/// How many notes the journal keeps: far more than a call sees.
const JOURNAL_LEN: usize = 1024;

/// The number of the newest note (0: none yet). Read without the lock to
/// tell at once that nothing happened during a call.
static SEQ: AtomicU64 = AtomicU64::new(0);
/// The newest notes, each with its number.
static JOURNAL: Mutex<VecDeque<(u64, Note)>> = Mutex::new(VecDeque::new());
/// Nodes whose connection was lost and not opened again since.
static LOST: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn note(n: Note) {
    let mut journal = JOURNAL.lock().unwrap_or_else(|e| e.into_inner());
    let seq = SEQ.fetch_add(1, Ordering::SeqCst) + 1;
    journal.push_back((seq, n));
    if journal.len() > JOURNAL_LEN {
        journal.pop_front();
    }
}

fn notes_after(seq: u64) -> Vec<Note> {
    let journal = JOURNAL.lock().unwrap_or_else(|e| e.into_inner());
    journal
        .iter()
        .filter(|(s, _)| *s > seq)
        .map(|(_, n)| n.clone())
        .collect()
}

fn lost(node: &str, error: &redis::RedisError) {
    LOST.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(node.to_owned());
    note(Note::Lost {
        node: node.to_owned(),
        error: error.to_string(),
    });
}

fn connected(node: &str) {
    let was_lost = LOST
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .is_some_and(|lost| lost.remove(node));
    if was_lost {
        note(Note::Back {
            node: node.to_owned(),
        });
    }
}

/// `host:port` of a node, as the cluster names it in `MOVED` replies and
/// `CLUSTER SLOTS`.
fn node_name(info: &redis::ConnectionInfo) -> String {
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port)
        | redis::ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port}"),
        other => other.to_string(),
    }
}

pub(crate) fn address(node: &str) -> ServerAddress {
    match node.rsplit_once(':') {
        Some((host, port)) => ServerAddress {
            address: host.to_owned(),
            port: port.parse().unwrap_or(0),
        },
        None => ServerAddress {
            address: node.to_owned(),
            port: 0,
        },
    }
}

/// A connection to one cluster node that notes the replies and failures
/// that move slots (see the module docs).
#[derive(Clone)]
pub struct NodeConnection {
    inner: MultiplexedConnection,
    node: std::sync::Arc<str>,
}

impl NodeConnection {
    /// Notes what `reply` says of where slots are served.
    fn saw(&self, reply: &Result<Value, redis::RedisError>) {
        match reply {
            Ok(Value::ServerError(e)) => {
                let kind = match e.kind() {
                    Some(redis::ServerErrorKind::Moved) => RedirectKind::Moved,
                    Some(redis::ServerErrorKind::Ask) => RedirectKind::Ask,
                    _ => return,
                };
                let mut detail = e.details().unwrap_or_default().split_ascii_whitespace();
                if let (Some(Ok(slot)), Some(to)) = (detail.next().map(str::parse), detail.next()) {
                    note(Note::Redirect {
                        kind,
                        slot,
                        from: self.node.to_string(),
                        to: to.to_owned(),
                    });
                }
            }
            Ok(_) => {}
            Err(e) => {
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                {
                    lost(&self.node, e);
                }
            }
        }
    }
}

impl Connect for NodeConnection {
    fn connect_with_config<'a, T>(info: T, config: AsyncConnectionConfig) -> RedisFuture<'a, Self>
    where
        T: IntoConnectionInfo + Send + 'a,
    {
        async move {
            let info = info.into_connection_info()?;
            let node = node_name(&info);
            match MultiplexedConnection::connect_with_config(info, config).await {
                Ok(inner) => {
                    connected(&node);
                    Ok(Self {
                        inner,
                        node: node.into(),
                    })
                }
                Err(e) => {
                    lost(&node, &e);
                    Err(e)
                }
            }
        }
        .boxed()
    }
}

impl ConnectionLike for NodeConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            let reply = self.inner.req_packed_command(cmd).await;
            self.saw(&reply);
            reply
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            let replies = self.inner.req_packed_commands(pipeline, offset, count).await;
            match &replies {
                Ok(values) => {
                    if let Some(redirect) = values.iter().find(|v| {
                        matches!(v, Value::ServerError(e)
                            if matches!(e.kind(), Some(redis::ServerErrorKind::Moved | redis::ServerErrorKind::Ask)))
                    }) {
                        self.saw(&Ok(redirect.clone()));
                    }
                }
                Err(e) => self.saw(&Err(e.clone())),
            }
            replies
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// A target's map of slots to masters.
#[derive(Debug, Default)]
struct Table {
    /// First slot, last slot, master (`host:port`), sorted.
    ranges: Vec<(u16, u16, String)>,
    /// Every node named, masters and replicas.
    nodes: HashSet<String>,
    /// The journal's newest note when it was read.
    seq: u64,
}

impl Table {
    fn master(&self, slot: u16) -> Option<&str> {
        self.ranges
            .iter()
            .find(|(from, to, _)| (*from..=*to).contains(&slot))
            .map(|(_, _, node)| node.as_str())
    }
}

/// Where each slot of a cluster is served, as this process last read it.
#[derive(Debug, Default)]
pub struct ClusterView {
    table: RwLock<Table>,
    reading: tokio::sync::Mutex<()>,
}

impl ClusterView {
    /// The master of `slot` (`host:port`), if known.
    pub(crate) fn master(&self, slot: u16) -> Option<String> {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .master(slot)
            .map(str::to_owned)
    }

    /// Reads `CLUSTER SLOTS` again, unless someone did since the journal's
    /// note `seq` (0: read it whatever). A failed read keeps the old map.
    pub(crate) async fn refresh<C: ConnectionLike + Send>(&self, conn: &mut C, seq: u64) {
        let _reading = self.reading.lock().await;
        if self.table.read().unwrap_or_else(|e| e.into_inner()).seq >= seq && seq > 0 {
            return;
        }
        let read_at = SEQ.load(Ordering::SeqCst);
        let Ok(slots) = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Vec<Value>>(conn)
            .await
        else {
            return;
        };
        let mut table = Table {
            seq: read_at,
            ..Table::default()
        };
        for entry in &slots {
            let Some((from, to, master, replicas)) = slot_range(entry) else {
                continue;
            };
            table.nodes.insert(master.clone());
            table.nodes.extend(replicas);
            table.ranges.push((from, to, master));
        }
        table.ranges.sort();
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = table;
    }

    /// The journal's newest note now, to pass to [`Self::answered`] once
    /// the call is done.
    pub(crate) fn mark() -> u64 {
        SEQ.load(Ordering::SeqCst)
    }

    /// What a call on `slot` that started at journal note `mark`, when
    /// `before` held the slot, should tell: the slot's master now, and the
    /// notes about the slot or its nodes since. Reads the map again first
    /// when one of its nodes was noted.
    pub(crate) async fn answered<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        slot: u16,
        mark: u64,
        before: Option<String>,
    ) -> Answered {
        let newest = SEQ.load(Ordering::SeqCst);
        let mut events = Vec::new();
        if newest != mark {
            let notes = notes_after(mark);
            let ours = {
                let table = self.table.read().unwrap_or_else(|e| e.into_inner());
                notes.iter().any(|n| match n {
                    Note::Redirect { from, .. } => table.nodes.contains(from),
                    Note::Lost { node, .. } | Note::Back { node } => table.nodes.contains(node),
                })
            };
            if ours {
                self.refresh(conn, newest).await;
            }
            let now = self.master(slot);
            events = relevant(&notes, slot, before.as_deref(), now.as_deref());
        }
        // An `ASK` sends one command to the slot's next node and leaves
        // the map as it was: that node answered.
        let asked = events.iter().rev().find_map(|e| match e {
            TopologyEvent::Redirect { kind, to, .. } => {
                Some((*kind == RedirectKind::Ask).then(|| to.clone()))
            }
            TopologyEvent::Reconnect { .. } => None,
        });
        Answered {
            node: asked
                .flatten()
                .or_else(|| self.master(slot).as_deref().map(address)),
            events,
        }
    }
}

/// The events for a call on `slot`, held by `before` when it started and
/// by `now` once done, among `notes`.
fn relevant(
    notes: &[Note],
    slot: u16,
    before: Option<&str>,
    now: Option<&str>,
) -> Vec<TopologyEvent> {
    let mut events: Vec<TopologyEvent> = Vec::new();
    let push = |events: &mut Vec<TopologyEvent>, e: TopologyEvent| {
        if !events.contains(&e) {
            events.push(e);
        }
    };
    let mut redirected = false;
    for n in notes {
        match n {
            Note::Redirect {
                kind,
                slot: s,
                from,
                to,
            } if *s == slot => {
                redirected |= *kind == RedirectKind::Moved;
                push(
                    &mut events,
                    TopologyEvent::Redirect {
                        kind: *kind,
                        slot,
                        from: address(from),
                        to: address(to),
                    },
                );
            }
            Note::Lost { node, error } if Some(node.as_str()) == before => {
                // One event for the node, with the first error: a failover
                // loses the connection, then refuses the next ones.
                let told = events.iter().any(|e| {
                    matches!(e, TopologyEvent::Reconnect { from, .. } if from == &address(node))
                });
                if let Some(now) = now
                    && !told
                {
                    push(
                        &mut events,
                        TopologyEvent::Reconnect {
                            from: address(node),
                            to: address(now),
                            error: error.clone(),
                        },
                    );
                }
            }
            _ => {}
        }
    }
    // A new master with no redirect seen and no failure noted (another
    // process's connection saw it): still a change of node.
    if let (Some(b), Some(n)) = (before, now)
        && b != n
        && !redirected
        && events.is_empty()
    {
        events.push(TopologyEvent::Reconnect {
            from: address(b),
            to: address(n),
            error: "the slot has a new master".into(),
        });
    }
    events
}

/// One `CLUSTER SLOTS` entry: its first and last slot, its master and its
/// replicas (`host:port`).
fn slot_range(entry: &Value) -> Option<(u16, u16, String, Vec<String>)> {
    let Value::Array(fields) = entry else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let node = |v: &Value| {
        let Value::Array(node) = v else {
            return None;
        };
        let host = match node.first()? {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let port = match node.get(1)? {
            Value::Int(n) => *n,
            _ => return None,
        };
        Some(format!("{host}:{port}"))
    };
    let (from, to) = (int(fields.first()?)?, int(fields.get(1)?)?);
    let master = node(fields.get(2)?)?;
    let replicas = fields.iter().skip(3).filter_map(node).collect();
    Some((from, to, master, replicas))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(slot: u16, from: &str, to: &str) -> Note {
        Note::Redirect {
            kind: RedirectKind::Moved,
            slot,
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn a_call_is_told_of_its_own_slot_only() {
        let notes = [
            moved(7, "h:1", "h:2"),
            moved(8, "h:1", "h:2"),
            moved(7, "h:1", "h:2"),
        ];
        let events = relevant(&notes, 7, Some("h:1"), Some("h:2"));
        assert_eq!(
            events,
            vec![TopologyEvent::Redirect {
                kind: RedirectKind::Moved,
                slot: 7,
                from: address("h:1"),
                to: address("h:2"),
            }],
            "one event for two equal notes, none for slot 8"
        );
    }

    #[test]
    fn a_lost_master_then_another_node_is_a_reconnect() {
        let notes = [
            Note::Lost {
                node: "h:1".into(),
                error: "broken pipe".into(),
            },
            Note::Lost {
                node: "h:9".into(),
                error: "not ours".into(),
            },
            Note::Lost {
                node: "h:1".into(),
                error: "connection refused".into(),
            },
        ];
        let events = relevant(&notes, 7, Some("h:1"), Some("h:4"));
        assert_eq!(
            events,
            vec![TopologyEvent::Reconnect {
                from: address("h:1"),
                to: address("h:4"),
                error: "broken pipe".into(),
            }]
        );
        // A new master learned with no note of this process's own.
        let events = relevant(&[], 7, Some("h:1"), Some("h:4"));
        assert!(
            matches!(&events[..], [TopologyEvent::Reconnect { .. }]),
            "{events:?}"
        );
        // Nothing moved.
        assert!(relevant(&notes[1..2], 7, Some("h:1"), Some("h:1")).is_empty());
    }
}

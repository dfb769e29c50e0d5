//! Reaching Redis: one server, or a Redis Cluster.
//!
//! `REDIS_URL` names one server (`redis://host:6379/`) or, as a
//! comma-separated list, seed nodes of a cluster
//! (`redis://10.0.0.1:7000,redis://10.0.0.2:7001`; any subset of the nodes
//! will do: the client reads the rest of the topology from them). A
//! cluster connection follows `MOVED` and `ASK` redirections and, after a
//! failover, finds the promoted replica; it is the redis crate's own
//! (`cluster-async`). TLS (`rediss://`, with a private CA when given) and
//! passwords in the URL work as they do for one server; every seed must
//! use the same ones.
//!
//! Every multi-key command, pipeline and script the project sends names
//! keys of one hash slot (see the key table in the crate docs), so the
//! same code runs on both.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, RedisFuture, Value};

use crate::QueueError;
use crate::topology::{Answered, ClusterView, NodeConnection};

/// Where Redis is, parsed from a URL (or a comma-separated list of them):
/// a client that opens connections to it. Cheap to clone.
#[derive(Clone)]
pub enum RedisTarget {
    /// One Redis server.
    Server(redis::Client),
    /// A Redis Cluster, reached through its seed nodes.
    Cluster {
        /// The cluster client (boxed: it is large, and a server's client
        /// is not).
        client: Box<ClusterClient>,
        /// The seeds and the root certificate, for a client of other
        /// timeouts ([`RedisTarget::connect_dedicated`]).
        seeds: Arc<(Vec<redis::ConnectionInfo>, Option<Vec<u8>>)>,
        /// The first seed's address.
        first: ServerAddress,
        /// Which master serves each slot, shared by every connection.
        view: Arc<ClusterView>,
    },
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only the address is shown.
        let (mode, address) = match self {
            Self::Server(client) => ("server", ServerAddress::of(client.get_connection_info())),
            Self::Cluster { first, .. } => ("cluster", first.clone()),
        };
        write!(
            f,
            "RedisTarget({mode} {}:{})",
            address.address, address.port
        )
    }
}

/// Where a Redis server is: the `server.address` and `server.port` of the
/// spans of its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// Host name or IP address (a socket path for Unix sockets).
    pub address: String,
    /// Port (0 for Unix sockets).
    pub port: u16,
}

impl ServerAddress {
    fn of(info: &redis::ConnectionInfo) -> Self {
        match info.addr() {
            redis::ConnectionAddr::Tcp(host, port)
            | redis::ConnectionAddr::TcpTls { host, port, .. } => Self {
                address: host.clone(),
                port: *port,
            },
            other => Self {
                address: format!("{other}"),
                port: 0,
            },
        }
    }
}

impl RedisTarget {
    /// Reads `url`: one `redis://` or `rediss://` URL for a server, several
    /// separated by commas for a cluster's seed nodes. With TLS, `ca_pem`
    /// is the root certificate to trust (else the system's roots). A
    /// password goes in the URL (`redis://:password@host/` or
    /// `user:password@`).
    pub fn open(url: &str, ca_pem: Option<&[u8]>) -> Result<Self, QueueError> {
        let urls: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let tls = urls.iter().any(|u| u.starts_with("rediss://"));
        if tls {
            // The redis crate takes TLS from the process's default provider;
            // another part of the process may have installed one already.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        } else if ca_pem.is_some() {
            return Err(QueueError::Config(
                "a TLS root certificate was given for a plain redis:// URL; use rediss://".into(),
            ));
        }
        match urls.as_slice() {
            [] => Err(QueueError::Config("the Redis URL is empty".into())),
            [one] => Ok(Self::Server(match ca_pem {
                Some(pem) if tls => redis::Client::build_with_tls(
                    *one,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.to_vec()),
                    },
                )?,
                _ => redis::Client::open(*one)?,
            })),
            seeds => {
                let infos = seeds
                    .iter()
                    .map(|u| redis::IntoConnectionInfo::into_connection_info(*u))
                    .collect::<Result<Vec<_>, _>>()?;
                Self::cluster(infos, ca_pem)
            }
        }
    }

    /// [`Self::open`], and then, for one URL, asks the server whether it
    /// is a node of a cluster (`INFO cluster`): if it is, it becomes the
    /// one seed of a cluster target. So a single node's URL works as well
    /// as a list.
    pub async fn discover(url: &str, ca_pem: Option<&[u8]>) -> Result<Self, QueueError> {
        let target = Self::open(url, ca_pem)?;
        let Self::Server(client) = &target else {
            return Ok(target);
        };
        let cfg = AsyncConnectionConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut conn)
            .await?;
        if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
            Self::cluster(vec![client.get_connection_info().clone()], ca_pem)
        } else {
            Ok(target)
        }
    }

    /// A cluster target with `seeds`.
    fn cluster(
        seeds: Vec<redis::ConnectionInfo>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, QueueError> {
        if seeds.iter().any(|i| i.redis_settings().db() != 0) {
            return Err(QueueError::Config(
                "a Redis Cluster has only database 0: drop the /db from the URLs".into(),
            ));
        }
        let first = ServerAddress::of(&seeds[0]);
        let client = cluster_client(&seeds, ca_pem, RESPONSE_TIMEOUT)?;
        Ok(Self::Cluster {
            client: Box::new(client),
            seeds: Arc::new((seeds, ca_pem.map(<[u8]>::to_vec))),
            first,
            view: Arc::default(),
        })
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// The server's address (a cluster's first seed; spans name the node
    /// that answered, see [`RedisConnection::observe`]).
    pub fn server(&self) -> ServerAddress {
        match self {
            Self::Server(client) => ServerAddress::of(client.get_connection_info()),
            Self::Cluster { first, .. } => first.clone(),
        }
    }

    /// A shared connection that reconnects by itself: a
    /// [`ConnectionManager`] to a server (which fails fast while the
    /// server is down), or a cluster connection.
    pub async fn connect(&self) -> Result<RedisConnection, QueueError> {
        self.connect_waiting(Duration::ZERO).await
    }

    /// [`Self::connect`], whose commands may take `longer` on top of the
    /// usual wait: for pushes that wait for replicas (`WAIT`).
    pub async fn connect_waiting(&self, longer: Duration) -> Result<RedisConnection, QueueError> {
        Ok(match self {
            Self::Server(client) => RedisConnection::Server(
                ConnectionManager::new_with_config(
                    client.clone(),
                    ConnectionManagerConfig::new()
                        .set_response_timeout(Some(RESPONSE_TIMEOUT + longer))
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_number_of_retries(1),
                )
                .await?,
            ),
            Self::Cluster {
                client,
                view,
                seeds,
                ..
            } => {
                let mut conn = if longer.is_zero() {
                    client.get_async_generic_connection().await?
                } else {
                    let (infos, ca_pem) = &**seeds;
                    cluster_client(infos, ca_pem.as_deref(), RESPONSE_TIMEOUT + longer)?
                        .get_async_generic_connection()
                        .await?
                };
                view.refresh(&mut conn, 0).await;
                RedisConnection::Cluster(conn, view.clone())
            }
        })
    }

    /// A connection of its own, for blocking commands (`XREADGROUP
    /// BLOCK`), which would hold up every other command on a shared one.
    /// Its commands may wait up to `response_timeout`.
    pub async fn connect_dedicated(
        &self,
        response_timeout: Duration,
    ) -> Result<RedisConnection, QueueError> {
        let cfg = AsyncConnectionConfig::new().set_response_timeout(Some(response_timeout));
        Ok(match self {
            Self::Server(client) => RedisConnection::Multiplexed(
                client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await?,
            ),
            Self::Cluster { seeds, view, .. } => {
                let (infos, ca_pem) = &**seeds;
                let client = cluster_client(infos, ca_pem.as_deref(), response_timeout)?;
                RedisConnection::Cluster(client.get_async_generic_connection().await?, view.clone())
            }
        })
    }
}

/// A cluster client on `seeds` whose commands wait `response_timeout`
/// each, through redirects and failovers.
fn cluster_client(
    seeds: &[redis::ConnectionInfo],
    ca_pem: Option<&[u8]>,
    response_timeout: Duration,
) -> Result<ClusterClient, QueueError> {
    let mut builder = ClusterClientBuilder::new(seeds.to_vec())
        // Each command's own wait; a failover takes longer, and the
        // client's retries (about 1.3 s apart) span it.
        .response_timeout(response_timeout)
        .overall_response_timeout(Some(FAILOVER_WAIT.max(response_timeout)))
        .connection_timeout(CONNECT_TIMEOUT)
        .retries(CLUSTER_RETRIES);
    if let Some(pem) = ca_pem {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        });
    }
    Ok(builder.build()?)
}

/// How long a command may wait for its reply before the connection is
/// considered broken (a 500-job script takes a few milliseconds).
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a cluster command may take in all, its retries through
/// redirections and a failover included: longer than a replica takes to
/// be promoted (`cluster-node-timeout`, 5 s in our Compose file, plus the
/// election). Past it the caller gets an error (the api answers 503).
pub const FAILOVER_WAIT: Duration = Duration::from_secs(15);
/// How many times a cluster command is retried within
/// [`FAILOVER_WAIT`]: the client waits about 1.3 s before each retry that
/// is not a redirection.
const CLUSTER_RETRIES: u32 = 12;

/// A connection to a server or a cluster; cheap to clone (clones share
/// it). Every `redis` command, pipeline and script runs on it.
#[derive(Clone)]
pub enum RedisConnection {
    /// A server, through a connection that reconnects.
    Server(ConnectionManager),
    /// A server, through a connection of its own.
    Multiplexed(redis::aio::MultiplexedConnection),
    /// A cluster, with its map of slots.
    Cluster(ClusterConnection<NodeConnection>, Arc<ClusterView>),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Server(_) => "RedisConnection(server)",
            Self::Multiplexed(_) => "RedisConnection(server, dedicated)",
            Self::Cluster(..) => "RedisConnection(cluster)",
        })
    }
}

impl RedisConnection {
    /// Runs `cmd` on the node that holds `key`'s slot: the same node a
    /// command on `key` goes to. Only a cluster tells the two apart: for
    /// commands that name no key (`CLIENT ID`, `CLIENT UNBLOCK`) but must
    /// reach that node.
    pub async fn query_at<T: FromRedisValue>(
        &mut self,
        key: &str,
        cmd: &Cmd,
    ) -> Result<T, QueueError> {
        match self {
            Self::Cluster(conn, _) => {
                let route = Route::new(slot(key.as_bytes()), SlotAddr::Master);
                let value = conn
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                Ok(redis::from_redis_value(value).map_err(redis::RedisError::from)?)
            }
            other => Ok(cmd.query_async(other).await?),
        }
    }
}

impl RedisConnection {
    /// The node that holds `key`'s slot, as last known: `None` on one
    /// server (it is the server).
    pub fn node_for(&self, key: &str) -> Option<ServerAddress> {
        match self {
            Self::Cluster(_, view) => view
                .master(slot(key.as_bytes()))
                .map(|node| crate::topology::address(&node)),
            _ => None,
        }
    }

    /// On a cluster, reads the slot map again (`CLUSTER SLOTS`), for a
    /// caller that shows where slots are now; nothing on one server.
    pub async fn reread_slots(&self) {
        if let Self::Cluster(conn, view) = self {
            view.refresh(&mut conn.clone(), 0).await;
        }
    }

    /// Runs `commands` (on `key`, or keys of its slot) and answers, with
    /// their output, the node that answered and the redirects and
    /// reconnects of the slot meanwhile (see [`crate::topology`]). On one
    /// server: its output and nothing more.
    pub async fn observe<F: Future>(&self, key: &str, commands: F) -> (F::Output, Answered) {
        let Self::Cluster(conn, view) = self else {
            return (commands.await, Answered::default());
        };
        let slot = slot(key.as_bytes());
        let mark = ClusterView::mark();
        let before = view.master(slot);
        let output = commands.await;
        let answered = view.answered(&mut conn.clone(), slot, mark, before).await;
        (output, answered)
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(c) => c.req_packed_command(cmd),
            Self::Multiplexed(c) => c.req_packed_command(cmd),
            Self::Cluster(c, _) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c, _) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(c) => c.get_db(),
            Self::Multiplexed(c) => c.get_db(),
            Self::Cluster(c, _) => c.get_db(),
        }
    }
}

/// The hash slot of `key` (0 to 16,383), as Redis Cluster computes it:
/// CRC16 (XMODEM) of the key's hash tag (the part between the first `{`
/// and the next `}`, when not empty), else of the whole key.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16_384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_computed_as_redis_cluster_does() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), 3443);
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(slot(b"foo{}{bar}"), 8363);
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    }

    #[test]
    fn a_comma_separated_url_is_a_cluster_and_one_url_a_server() -> Result<(), QueueError> {
        assert!(!RedisTarget::open("redis://127.0.0.1:6379/", None)?.is_cluster());
        let cluster = RedisTarget::open("redis://127.0.0.1:7000, redis://127.0.0.1:7001", None)?;
        assert!(cluster.is_cluster());
        assert_eq!(
            cluster.server(),
            ServerAddress {
                address: "127.0.0.1".into(),
                port: 7000
            }
        );
        let err = RedisTarget::open("redis://127.0.0.1:7000/2,redis://127.0.0.1:7001/2", None)
            .expect_err("a cluster has one database");
        assert!(err.to_string().contains("database 0"), "{err}");
        let err = RedisTarget::open(" , ", None).expect_err("nothing named");
        assert!(err.to_string().contains("empty"), "{err}");
        Ok(())
    }

    #[test]
    fn the_target_never_prints_its_password() -> Result<(), QueueError> {
        for url in [
            "redis://:s3cret@127.0.0.1:6379/",
            "redis://:s3cret@127.0.0.1:7000,redis://:s3cret@127.0.0.1:7001",
        ] {
            let shown = format!("{:?}", RedisTarget::open(url, None)?);
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        Ok(())
    }
}

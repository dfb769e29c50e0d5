//! The Redis a run drains against: the rig's one server, or a cluster
//! (its masters flushed and counted, every node's CPU summed).

use testkit::{RedisCluster, RedisServer};

/// Where a run's queue lives.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// One redis-server.
    Server(&'a RedisServer),
    /// A Redis Cluster.
    Cluster(&'a RedisCluster),
}

impl Target<'_> {
    /// `REDIS_URL` for the processes.
    pub fn url(&self) -> String {
        match self {
            Self::Server(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    /// A connection to each node that serves clients: the server, or each
    /// master.
    pub async fn masters(&self) -> anyhow::Result<Vec<redis::aio::MultiplexedConnection>> {
        let urls = match self {
            Self::Server(server) => vec![server.url()],
            Self::Cluster(cluster) => cluster
                .masters()?
                .into_iter()
                .map(|port| format!("redis://127.0.0.1:{port}/"))
                .collect(),
        };
        let mut conns = Vec::new();
        for url in urls {
            conns.push(
                redis::Client::open(url)?
                    .get_multiplexed_async_connection()
                    .await?,
            );
        }
        Ok(conns)
    }

    /// Zeroes the command counts of every node (`CONFIG RESETSTAT`).
    pub async fn reset_stats(&self) -> anyhow::Result<()> {
        match self {
            Self::Server(server) => {
                let mut conn = server.client()?.get_multiplexed_async_connection().await?;
                let _: () = redis::cmd("CONFIG")
                    .arg("RESETSTAT")
                    .query_async(&mut conn)
                    .await?;
            }
            Self::Cluster(cluster) => {
                for port in cluster.ports() {
                    cluster.cli(port, &["CONFIG", "RESETSTAT"])?;
                }
            }
        }
        Ok(())
    }

    /// Every node's process id (replicas too: replication costs CPU).
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Self::Server(server) => vec![server.pid()],
            Self::Cluster(cluster) => cluster.pids(),
        }
    }
}

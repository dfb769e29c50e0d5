//! [`Shard`]: one shard of a queue, a complete queue on one hash tag
//! (its streams, sets and job hashes). What it does is in `push.rs`,
//! `admin.rs` and `inspect.rs`; [`crate::RedisQueue`] spreads a queue over
//! its shards.

use std::sync::Arc;
use std::time::Duration;

use crate::batch::Batcher;
use crate::connection::{RedisConnection, RedisTarget};
use crate::finish::Finish;
use crate::job::{NewJob, Priority};
use crate::keys::Keys;
use crate::push_call::{NOT_REPLICATED, PUSHED, push_script, wait_replicas};
use crate::{QueueConfig, QueueError};

/// Most jobs or outcomes one group-committed script call carries.
const GROUP_COMMIT_MAX: usize = 256;

/// One shard of a queue. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub(crate) struct Shard {
    /// Its place among the queue's shards.
    pub(crate) index: usize,
    /// Opens the workers' blocking connections.
    pub(crate) target: RedisTarget,
    pub(crate) conn: RedisConnection,
    /// The pushes' connection: `conn`, or with
    /// [`QueueConfig::wait_replicas`] one of their own (a `WAIT` holds up
    /// every command behind it on its connection).
    pub(crate) push_conn: RedisConnection,
    pub(crate) cfg: Arc<QueueConfig>,
    pub(crate) keys: Arc<Keys>,
    /// Group-commits concurrent single pushes.
    pusher: Arc<Batcher<NewJob, u8>>,
    /// Group-commits the outcomes of jobs finishing together.
    pub(crate) finisher: Arc<Batcher<Finish, u8>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("queue", &self.cfg.name)
            .field("index", &self.index)
            .field("keys", &self.keys.stream)
            .field("redis", &self.target)
            .finish()
    }
}

impl Shard {
    /// Shard `index` of the queue `cfg` names, under hash tag `tag`, on
    /// `conn` (and `push_conn` for pushes).
    pub(crate) async fn open(
        target: RedisTarget,
        conn: RedisConnection,
        push_conn: RedisConnection,
        cfg: Arc<QueueConfig>,
        tag: &str,
        index: usize,
    ) -> Result<Self, QueueError> {
        let keys = Arc::new(Keys::new(&cfg, tag));
        let pusher = {
            let (conn, keys, cfg) = (push_conn.clone(), keys.clone(), cfg.clone());
            Batcher::spawn(GROUP_COMMIT_MAX, move |jobs: Vec<NewJob>| {
                let (mut conn, keys, cfg) = (conn.clone(), keys.clone(), cfg.clone());
                async move {
                    let mut codes: Vec<u8> = push_script(&keys, &cfg, &jobs)
                        .invoke_async(&mut conn)
                        .await?;
                    if codes.contains(&PUSHED) {
                        let reached = wait_replicas(&mut conn, &keys, &cfg).await?;
                        if reached < cfg.wait_replicas {
                            let code = NOT_REPLICATED + reached.min(200) as u8;
                            for c in codes.iter_mut().filter(|c| **c == PUSHED) {
                                *c = code;
                            }
                        }
                    }
                    Ok(codes)
                }
            })
        };
        let finisher = {
            let (conn, keys, cfg) = (conn.clone(), keys.clone(), cfg.clone());
            Batcher::spawn(GROUP_COMMIT_MAX, move |done: Vec<Finish>| {
                let (mut conn, keys, cfg) = (conn.clone(), keys.clone(), cfg.clone());
                async move {
                    crate::finish::finish_script(&keys, &cfg, &done)
                        .invoke_async(&mut conn)
                        .await
                }
            })
        };
        let queue = Self {
            index,
            target,
            conn,
            push_conn,
            cfg,
            keys,
            pusher: Arc::new(pusher),
            finisher: Arc::new(finisher),
        };
        queue.ensure_group().await?;
        Ok(queue)
    }

    /// The group-committed single pushes.
    pub(crate) fn pusher(&self) -> &Batcher<NewJob, u8> {
        &self.pusher
    }

    /// Whether Redis answers `PING` within `limit` (in a cluster, the node
    /// that holds the queue).
    pub(crate) async fn ping(&self, limit: Duration) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        match tokio::time::timeout(limit, conn.query_at::<String>(&self.keys.stream, &cmd)).await {
            Ok(answer) => answer.map(drop),
            Err(_) => Err(QueueError::Timeout(limit)),
        }
    }

    /// Creates each lane's stream and its group if missing. Reading from id
    /// `0` means entries added before the group existed are still
    /// delivered.
    pub(crate) async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        for priority in Priority::ALL {
            let res: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.keys.lane(priority))
                .arg(&self.keys.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match res {
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                other => other?,
            }
        }
        Ok(())
    }
}

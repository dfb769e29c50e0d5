//! [`RedisQueue`]: the handle producers and workers share, and how it
//! connects. What it does is in `push.rs`, `admin.rs` and `inspect.rs`.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::backend::QueueBackend;
use crate::batch::Batcher;
use crate::connection::{RedisConnection, RedisTarget, ServerAddress};
use crate::finish::Finish;
use crate::job::{NewJob, Priority};
use crate::keys::Keys;
use crate::push::{NOT_REPLICATED, PUSHED, push_script, wait_replicas};
use crate::{QueueConfig, QueueError};

/// Most jobs or outcomes one group-committed script call carries.
const GROUP_COMMIT_MAX: usize = 256;

/// A handle on one queue: push jobs, read their status, read queue stats,
/// and make apalis backends for workers. Cheap to clone; clones share one
/// multiplexed connection.
#[derive(Clone)]
pub struct RedisQueue {
    /// Opens the workers' blocking connections.
    pub(crate) target: RedisTarget,
    pub(crate) conn: RedisConnection,
    /// The pushes' connection: `conn`, or with
    /// [`QueueConfig::wait_replicas`] one of their own (a `WAIT` holds up
    /// every command behind it on its connection).
    pub(crate) push_conn: RedisConnection,
    pub(crate) cfg: Arc<QueueConfig>,
    pub(crate) keys: Arc<Keys>,
    server: Arc<ServerAddress>,
    /// Group-commits concurrent single pushes.
    pusher: Arc<Batcher<NewJob, u8>>,
    /// Group-commits the outcomes of jobs finishing together.
    pub(crate) finisher: Arc<Batcher<Finish, u8>>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("queue", &self.cfg.name)
            .field("keys", &self.keys.stream)
            .field("redis", &self.target)
            .finish()
    }
}

impl RedisQueue {
    /// Connects to Redis at `url` (one server, or a cluster's seed nodes
    /// separated by commas: see [`RedisTarget::discover`]) and makes sure the
    /// queue's consumer group exists. Fails fast when Redis is down: the
    /// api answers 503 at once, and workers retry in their own loops.
    pub async fn connect(url: &str, cfg: QueueConfig) -> Result<Self, QueueError> {
        let target = RedisTarget::discover(url, cfg.tls_ca_pem.as_deref()).await?;
        let conn = target.connect().await?;
        Self::open(target, conn, cfg).await
    }

    /// The handle on `conn`.
    async fn open(
        target: RedisTarget,
        conn: RedisConnection,
        cfg: QueueConfig,
    ) -> Result<Self, QueueError> {
        if cfg.name.is_empty() || cfg.name.contains(['{', '}']) {
            return Err(QueueError::Config(format!(
                "queue name {:?} must be non-empty and free of braces",
                cfg.name
            )));
        }
        let keys = Arc::new(Keys::new(&cfg));
        let push_conn = match cfg.wait_replicas {
            0 => conn.clone(),
            _ => target.connect().await?,
        };
        let cfg = Arc::new(cfg);
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
            server: Arc::new(target.server()),
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

    /// The queue's settings.
    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    /// The shared connection, for other users of the same Redis (a
    /// server's or a cluster's).
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }

    /// Where the queue's Redis is, to open other connections to it.
    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// Where the queue's Redis server is (a cluster's first seed).
    pub fn server(&self) -> &ServerAddress {
        &self.server
    }

    /// The Redis keys of the queue's schedules.
    pub fn schedule_keys(&self) -> &crate::ScheduleKeys {
        &self.keys.schedules
    }

    /// The consumer group workers read the queue through.
    pub fn consumer_group(&self) -> &str {
        &self.keys.group
    }

    /// The group-committed single pushes.
    pub(crate) fn pusher(&self) -> &Batcher<NewJob, u8> {
        &self.pusher
    }

    /// Whether Redis answers `PING` within `limit` (in a cluster, the node
    /// that holds the queue).
    pub async fn ping(&self, limit: Duration) -> Result<(), QueueError> {
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

    /// An apalis backend that runs at most `concurrency` jobs of this queue
    /// at once, under a consumer name unique to this backend.
    pub fn backend<Args>(&self, concurrency: usize) -> QueueBackend<Args> {
        QueueBackend::new(self.clone(), concurrency)
    }
}

/// Connects to the queue, retrying for up to a minute while Redis starts
/// (as it may in a fresh Compose stack).
pub async fn connect_with_retry(url: &str, cfg: QueueConfig) -> Result<RedisQueue, QueueError> {
    let connect = || RedisQueue::connect(url, cfg.clone());
    connect
        .retry(
            ExponentialBuilder::new()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .without_max_times()
                .with_total_delay(Some(Duration::from_secs(60))),
        )
        .when(|e| matches!(e, QueueError::Redis(_)))
        .notify(
            |e, delay| tracing::warn!(error = %e, retry_in = ?delay, "Redis is not reachable yet"),
        )
        .await
}

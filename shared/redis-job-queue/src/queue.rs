//! [`RedisQueue`]: the handle producers and workers share. A queue is one
//! or more shards ([`QueueConfig::shards`], see `shards.rs`); each job
//! lives in the shard its id picks, so a lookup by id is one round trip,
//! and what spans the queue (listings, stats, re-drive) asks every shard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::future::try_join_all;

use crate::backend::QueueBackend;
use crate::connection::{RedisConnection, RedisTarget, ServerAddress};
use crate::job::{
    Cancelled, ConsumerInfo, JobPage, JobRecord, JobStatus, NewJob, Pushed, QueueStats, Redriven,
};
use crate::keys::ScheduleKeys;
use crate::shard::Shard;
use crate::shards::{MAX_SHARDS, shard_tags};
use crate::{QueueConfig, QueueError};

/// A handle on one queue: push jobs, read their status, read queue stats,
/// and make apalis backends for workers. Cheap to clone; clones share one
/// multiplexed connection.
#[derive(Clone)]
pub struct RedisQueue {
    shards: Arc<[Shard]>,
    target: RedisTarget,
    conn: RedisConnection,
    cfg: Arc<QueueConfig>,
    schedules: Arc<ScheduleKeys>,
    server: Arc<ServerAddress>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("queue", &self.cfg.name)
            .field("shards", &self.shards.len())
            .field("redis", &self.target)
            .finish()
    }
}

/// One shard as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Its place among the queue's shards, from 0.
    pub index: usize,
    /// Its hash tag.
    pub tag: String,
    /// Its hash slot (0 to 16,383).
    pub slot: u16,
    /// The Redis node that holds it now (`host:port`).
    pub node: String,
    /// Its share of the queue.
    pub stats: QueueStats,
}

impl RedisQueue {
    /// Connects to Redis at `url` (one server, or a cluster's seed nodes
    /// separated by commas: see [`RedisTarget::discover`]) and makes sure
    /// each shard's consumer group exists. Fails fast when Redis is down:
    /// the api answers 503 at once, and workers retry in their own loops.
    ///
    /// A queue that holds jobs in another number of shards than
    /// [`QueueConfig::shards`] is refused ([`QueueError::Config`]): its
    /// jobs would be stranded where no lookup finds them.
    pub async fn connect(url: &str, cfg: QueueConfig) -> Result<Self, QueueError> {
        if cfg.name.is_empty() || cfg.name.contains(['{', '}']) {
            return Err(QueueError::Config(format!(
                "queue name {:?} must be non-empty and free of braces",
                cfg.name
            )));
        }
        if !(1..=MAX_SHARDS).contains(&cfg.shards) {
            return Err(QueueError::Config(format!(
                "{} shards: a queue has 1 to {MAX_SHARDS}",
                cfg.shards
            )));
        }
        let target = RedisTarget::discover(url, cfg.tls_ca_pem.as_deref()).await?;
        let conn = target.connect().await?;
        let push_conn = match cfg.wait_replicas {
            0 => conn.clone(),
            // Its own connection, whose commands may wait for replicas.
            _ => target.connect_waiting(cfg.wait_timeout).await?,
        };
        let cfg = Arc::new(cfg);
        crate::reshard::check(&conn, &cfg).await?;
        let tags = shard_tags(&cfg.name, cfg.shards);
        let shards = try_join_all(tags.iter().enumerate().map(|(index, tag)| {
            Shard::open(
                target.clone(),
                conn.clone(),
                push_conn.clone(),
                cfg.clone(),
                tag,
                index,
            )
        }))
        .await?;
        Ok(Self {
            schedules: Arc::new(shards[0].keys.schedules.clone()),
            server: Arc::new(target.server()),
            shards: shards.into(),
            target,
            conn,
            cfg,
        })
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

    /// The node that holds job `id`'s shard, as last known: the server,
    /// or the master of the shard's slot on a cluster.
    pub fn node_of(&self, id: &str) -> ServerAddress {
        self.conn
            .node_for(&self.shard(id).keys.stream)
            .unwrap_or_else(|| (*self.server).clone())
    }

    /// Runs `calls` on job `id` (a push, a lookup) and answers, with their
    /// output, the node that answered and what moved meanwhile (see
    /// [`RedisConnection::observe`]).
    pub async fn observe<F: std::future::Future>(
        &self,
        id: &str,
        calls: F,
    ) -> (F::Output, crate::Answered) {
        self.conn.observe(&self.shard(id).keys.stream, calls).await
    }

    /// The consumer group workers read the queue through.
    pub fn consumer_group(&self) -> &str {
        &self.shards[0].keys.group
    }

    /// The Redis keys of the queue's schedules.
    pub fn schedule_keys(&self) -> &ScheduleKeys {
        &self.schedules
    }

    /// The queue's shards, for backends.
    pub(crate) fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The shard that holds job `id` (see [`shard_of`]).
    pub(crate) fn shard(&self, id: &str) -> &Shard {
        &self.shards[shard_of(id, self.shards.len())]
    }

    /// The first shard: where what belongs to the queue as a whole is
    /// kept (in the queue's own hash tag, whatever shard that is).
    pub(crate) fn first_shard(&self) -> &Shard {
        &self.shards[0]
    }

    /// Whether every shard's Redis node answers `PING` within `limit`.
    pub async fn ping(&self, limit: Duration) -> Result<(), QueueError> {
        try_join_all(self.shards.iter().map(|s| s.ping(limit))).await?;
        Ok(())
    }

    /// Enqueues one job and returns its id. Pushes made at the same moment
    /// by concurrent callers share one script call. An idempotent job
    /// ([`NewJob::idempotency`]) whose key was already used the same way
    /// answers the id without enqueueing anything; [`Self::push_once`]
    /// tells the two apart.
    pub async fn push(&self, job: NewJob) -> Result<String, QueueError> {
        self.push_once(job).await.map(|p| p.id().to_owned())
    }

    /// Enqueues one job, saying whether it was new or a repeat of an
    /// idempotent push. It goes to the shard of its id (an idempotent
    /// job's id is made from its key, so a key is checked in one place).
    pub async fn push_once(&self, job: NewJob) -> Result<Pushed, QueueError> {
        self.shard(&job.id).push_once(job).await
    }

    /// Enqueues many jobs; each shard's share goes out pipelined. The
    /// answer says, per job and in order, whether it was enqueued (`false`:
    /// a job with that id already exists and was left untouched, or its
    /// idempotency key was used before). A batch's jobs
    /// ([`NewJob::in_batch`]) are listed by [`Self::batch`] in this order.
    pub async fn push_batch(&self, mut jobs: Vec<NewJob>) -> Result<Vec<bool>, QueueError> {
        let mut places: BTreeMap<String, u32> = BTreeMap::new();
        for job in &mut jobs {
            if let Some(batch) = &job.batch {
                let place = places.entry(batch.clone()).or_default();
                job.batch_position = *place;
                *place += 1;
            }
        }
        if self.shards.len() == 1 {
            return self.shards[0].push_batch(jobs).await;
        }
        let n = jobs.len();
        let mut parts: Vec<(Vec<usize>, Vec<NewJob>)> = vec![Default::default(); self.shards.len()];
        for (i, job) in jobs.into_iter().enumerate() {
            let part = &mut parts[shard_of(&job.id, self.shards.len())];
            part.0.push(i);
            part.1.push(job);
        }
        let answers = try_join_all(self.shards.iter().zip(parts).map(
            |(shard, (at, jobs))| async move {
                let added = match jobs.is_empty() {
                    true => Vec::new(),
                    false => shard.push_batch(jobs).await?,
                };
                Ok::<_, QueueError>((at, added))
            },
        ))
        .await?;
        let mut out = vec![false; n];
        for (at, added) in answers {
            for (i, added) in at.into_iter().zip(added) {
                out[i] = added;
            }
        }
        Ok(out)
    }

    /// Cancels a job that has not started. A queued job's stream entry
    /// stays until a worker reads and drops it.
    pub async fn cancel(&self, id: &str) -> Result<Cancelled, QueueError> {
        self.shard(id).cancel(id).await
    }

    /// Re-drives a failed job: it runs again as its next attempt with a
    /// fresh attempt budget, and its new attempt's span links to the
    /// failed one. Answers the status it had (`None`: no such job); only
    /// a `Failed` job was re-driven.
    pub async fn retry(&self, id: &str) -> Result<Option<JobStatus>, QueueError> {
        self.shard(id).retry(id).await
    }

    /// Pauses the queue: within a read (a quarter of a second when idle,
    /// the blocking read's timeout at most) no worker starts a job of it.
    /// Jobs already running finish; jobs pushed, delayed jobs coming due
    /// and schedules firing wait in the queue. The mark is in Redis, on
    /// every shard, so it outlives restarts; pausing again keeps the first
    /// time. Answers since when it is paused (epoch ms, Redis's clock).
    pub async fn pause(&self) -> Result<u64, QueueError> {
        let mut since = u64::MAX;
        for shard in self.shards.iter() {
            since = since.min(shard.pause().await?);
        }
        Ok(since)
    }

    /// Resumes a paused queue (nothing happens to one that runs).
    pub async fn resume(&self) -> Result<(), QueueError> {
        for shard in self.shards.iter() {
            shard.resume().await?;
        }
        Ok(())
    }

    /// Since when the queue is paused (epoch ms), or `None` while it runs.
    pub async fn paused_since(&self) -> Result<Option<u64>, QueueError> {
        let mut since = None;
        for shard in self.shards.iter() {
            if let Some(at) = shard.paused_since().await? {
                since = Some(since.map_or(at, |s: u64| s.min(at)));
            }
        }
        Ok(since)
    }

    /// Re-drives failed jobs, oldest first within each shard, all of them
    /// or those whose error type is `error_type`: at most `limit` per
    /// call, looking at most at 10,000 failed jobs per shard
    /// ([`Redriven::more`] says to call again).
    pub async fn redrive_failed(
        &self,
        error_type: Option<&str>,
        limit: usize,
    ) -> Result<Redriven, QueueError> {
        let limit = limit.max(1);
        let mut total = Redriven {
            redriven: 0,
            more: false,
        };
        for shard in self.shards.iter() {
            let left = limit - total.redriven as usize;
            if left == 0 {
                total.more = true;
                break;
            }
            let got = shard.redrive_failed(error_type, left).await?;
            total.redriven += got.redriven;
            total.more |= got.more;
        }
        Ok(total)
    }

    /// The job's status, attempts, result or error; `None` when the id is
    /// unknown or its record has expired.
    pub async fn status(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        self.shard(id).status(id).await
    }

    /// The jobs of batch `id` ([`NewJob::in_batch`]) in the order they were
    /// pushed, the first `limit` of them; `None` when no such batch is
    /// known (or its index expired with its last job).
    pub async fn batch(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Option<Vec<JobRecord>>, QueueError> {
        if self.shards.len() == 1 {
            return self.shards[0].batch(id, limit).await;
        }
        let parts = try_join_all(self.shards.iter().map(|s| s.batch(id, limit))).await?;
        if parts.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut jobs: Vec<JobRecord> = parts.into_iter().flatten().flatten().collect();
        jobs.sort_by_key(|j| j.batch_position);
        jobs.truncate(limit);
        Ok(Some(jobs))
    }

    /// One page of the jobs with `status`, at most `limit` (1 to 1,000),
    /// from `cursor` (`None` for the first page; then the page's
    /// `next_cursor`). Scheduled jobs come soonest first; succeeded and
    /// failed ones newest first (those within the retention), across every
    /// shard; queued and running ones oldest first, shard after shard.
    /// Cancelled jobs are not listed.
    pub async fn list(
        &self,
        status: JobStatus,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        if self.shards.len() == 1 {
            return self.shards[0].list(status, cursor, limit).await;
        }
        crate::listing::list(&self.shards, status, cursor, limit).await
    }

    /// One page of the jobs matching `q` (any status, cancelled too), at
    /// most `limit` (1 to 1,000), in the order they were queued, from
    /// `cursor` (`None` for the first page; then the page's
    /// `next_cursor`). A page may hold fewer jobs than `limit` and still
    /// have a next one: each call looks at a bounded number of jobs per
    /// shard (see [`crate::SCAN_BUDGET`]).
    pub async fn search(
        &self,
        q: &crate::JobQuery,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        crate::search::search(&self.shards, q, cursor, limit).await
    }

    /// One consistent snapshot of each shard, summed. Live consumers are
    /// counted once, however many shards each reads.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let parts = try_join_all(self.shards.iter().map(Shard::stats)).await?;
        Ok(parts
            .into_iter()
            .reduce(|a, b| QueueStats {
                waiting: a.waiting + b.waiting,
                waiting_high: a.waiting_high + b.waiting_high,
                waiting_low: a.waiting_low + b.waiting_low,
                in_flight: a.in_flight + b.in_flight,
                delayed: a.delayed + b.delayed,
                failed: a.failed + b.failed,
                live_consumers: a.live_consumers.max(b.live_consumers),
                enqueued_total: a.enqueued_total + b.enqueued_total,
                succeeded_total: a.succeeded_total + b.succeeded_total,
                failed_total: a.failed_total + b.failed_total,
                retried_total: a.retried_total + b.retried_total,
                deferred_total: a.deferred_total + b.deferred_total,
                paused: a.paused || b.paused,
            })
            .unwrap_or_default())
    }

    /// Each shard: its tag, slot, the node that holds it now (`host:port`:
    /// on a cluster, the master of its slot, the slot map read again; on
    /// one server, that server) and its stats.
    pub async fn shard_infos(&self) -> Result<Vec<ShardInfo>, QueueError> {
        self.conn.reread_slots().await;
        let nodes = self.shards.iter().map(|shard| {
            let node = self
                .conn
                .node_for(&shard.keys.stream)
                .or_else(|| (!self.target.is_cluster()).then(|| (*self.server).clone()));
            node.map_or_else(
                || "unknown".to_owned(),
                |n| format!("{}:{}", n.address, n.port),
            )
        });
        let stats = try_join_all(self.shards.iter().map(Shard::stats)).await?;
        Ok(self
            .shards
            .iter()
            .zip(stats)
            .zip(nodes)
            .map(|((shard, stats), node)| ShardInfo {
                index: shard.index,
                tag: shard.keys.tag.clone(),
                slot: crate::slot(shard.keys.stream.as_bytes()),
                node,
                stats,
            })
            .collect())
    }

    /// The consumers (worker backends) the queue knows, live or not, by
    /// name: when each last heart-beat and how many jobs each holds, over
    /// every shard.
    pub async fn consumers(&self) -> Result<Vec<ConsumerInfo>, QueueError> {
        let parts = try_join_all(self.shards.iter().map(Shard::consumers)).await?;
        let mut by_name: BTreeMap<String, ConsumerInfo> = BTreeMap::new();
        for c in parts.into_iter().flatten() {
            match by_name.get_mut(&c.name) {
                Some(seen) => {
                    seen.in_flight += c.in_flight;
                    seen.heartbeat_age_ms = seen.heartbeat_age_ms.min(c.heartbeat_age_ms);
                    seen.live |= c.live;
                }
                None => {
                    by_name.insert(c.name.clone(), c);
                }
            }
        }
        Ok(by_name.into_values().collect())
    }

    /// The latest jobs failed for good (at most `limit`, newest first)
    /// whose records are still kept, over every shard.
    pub async fn failed_jobs(&self, limit: usize) -> Result<Vec<JobRecord>, QueueError> {
        let parts = try_join_all(self.shards.iter().map(|s| s.failed_jobs(limit))).await?;
        let mut jobs: Vec<JobRecord> = parts.into_iter().flatten().collect();
        jobs.sort_by(|a, b| (b.finished_at_ms, &b.id).cmp(&(a.finished_at_ms, &a.id)));
        jobs.truncate(limit);
        Ok(jobs)
    }

    /// An apalis backend that runs at most `concurrency` jobs of this queue
    /// at once, under a consumer name unique to this backend, reading every
    /// shard in turn.
    pub fn backend<Args>(&self, concurrency: usize) -> QueueBackend<Args> {
        QueueBackend::new(self.clone(), concurrency)
    }
}

/// The shard of `shards` that holds job `id`: CRC16 of the id, modulo
/// the count. Any process computes it from the id alone.
pub fn shard_of(id: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    usize::from(crc16::State::<crc16::XMODEM>::calculate(id.as_bytes())) % shards
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

//! [`RedisQueue`]: the handle producers and workers share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt, stream};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::backend::{self, Finish, QueueBackend};
use crate::batch::Batcher;
use crate::job::{
    Cancelled, ConsumerInfo, JobPage, JobRecord, JobStatus, NewJob, Priority, Pushed, QueueStats,
    Redriven,
};
use crate::{QueueConfig, QueueError, scripts};

/// Most jobs or outcomes one group-committed script call carries.
const GROUP_COMMIT_MAX: usize = 256;
/// How many jobs one push script carries. Bounds the work of one script
/// call (so Redis stays responsive) while amortising round trips.
const PUSH_CHUNK: usize = 500;
/// Push chunks sent before the first answer is awaited.
const PUSH_CHUNKS_IN_FLIGHT: usize = 4;
/// How long a command may wait for its reply before the connection is
/// considered broken (a 500-job script takes a few milliseconds).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The name of every queue's consumer group
/// (`messaging.consumer.group.name`).
pub(crate) const CONSUMER_GROUP: &str = "workers";

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
    fn of(client: &redis::Client) -> Self {
        match client.get_connection_info().addr() {
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

/// Redis keys of one queue.
#[derive(Debug)]
pub(crate) struct Keys {
    /// The normal lane's stream.
    pub(crate) stream: String,
    /// The high lane's stream.
    pub(crate) stream_high: String,
    /// The low lane's stream.
    pub(crate) stream_low: String,
    pub(crate) delayed: String,
    pub(crate) failed: String,
    pub(crate) succeeded: String,
    pub(crate) consumers: String,
    pub(crate) stats: String,
    /// Prefix of the job hashes; the job id is appended.
    pub(crate) job_prefix: String,
    /// Prefix of the idempotency keys; the caller's key is appended.
    pub(crate) idem_prefix: String,
    /// Prefix of the batch indexes; the batch id is appended.
    pub(crate) batch_prefix: String,
    pub(crate) group: String,
}

impl Keys {
    fn new(cfg: &QueueConfig) -> Self {
        let base = format!("{}:{{{}}}", cfg.key_prefix, cfg.name);
        Self {
            stream: format!("{base}:stream"),
            stream_high: format!("{base}:stream:high"),
            stream_low: format!("{base}:stream:low"),
            delayed: format!("{base}:delayed"),
            failed: format!("{base}:failed"),
            succeeded: format!("{base}:succeeded"),
            consumers: format!("{base}:consumers"),
            stats: format!("{base}:stats"),
            job_prefix: format!("{base}:job:"),
            idem_prefix: format!("{base}:idem:"),
            batch_prefix: format!("{base}:batch:"),
            group: CONSUMER_GROUP.into(),
        }
    }

    pub(crate) fn job(&self, id: &str) -> String {
        format!("{}{id}", self.job_prefix)
    }

    /// The stream of `priority`'s lane.
    pub(crate) fn lane(&self, priority: Priority) -> &str {
        match priority {
            Priority::High => &self.stream_high,
            Priority::Normal => &self.stream,
            Priority::Low => &self.stream_low,
        }
    }
}

/// A handle on one queue: push jobs, read their status, read queue stats,
/// and make apalis backends for workers. Cheap to clone; clones share one
/// multiplexed connection.
#[derive(Clone)]
pub struct RedisQueue {
    pub(crate) client: redis::Client,
    pub(crate) conn: ConnectionManager,
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
            .finish()
    }
}

impl RedisQueue {
    /// Connects to Redis at `url` and makes sure the queue's consumer group
    /// exists.
    pub async fn connect(url: &str, cfg: QueueConfig) -> Result<Self, QueueError> {
        let client = redis_client(url, cfg.tls_ca_pem.as_deref())?;
        // Fail fast when Redis is down: the api answers 503 at once, and
        // workers retry in their own loops.
        let conn = ConnectionManager::new_with_config(
            client.clone(),
            ConnectionManagerConfig::new()
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_number_of_retries(1),
        )
        .await?;
        Self::open(client, conn, cfg).await
    }

    /// The handle on `conn`; `client` opens the workers' blocking
    /// connections.
    async fn open(
        client: redis::Client,
        conn: ConnectionManager,
        cfg: QueueConfig,
    ) -> Result<Self, QueueError> {
        if cfg.name.is_empty() || cfg.name.contains(['{', '}']) {
            return Err(QueueError::Config(format!(
                "queue name {:?} must be non-empty and free of braces",
                cfg.name
            )));
        }
        let keys = Arc::new(Keys::new(&cfg));
        let cfg = Arc::new(cfg);
        let pusher = {
            let (conn, keys, cfg) = (conn.clone(), keys.clone(), cfg.clone());
            Batcher::spawn(GROUP_COMMIT_MAX, move |jobs: Vec<NewJob>| {
                let (mut conn, keys, cfg) = (conn.clone(), keys.clone(), cfg.clone());
                async move {
                    push_script(&keys, &cfg, &jobs)
                        .invoke_async(&mut conn)
                        .await
                }
            })
        };
        let finisher = {
            let (conn, keys, cfg) = (conn.clone(), keys.clone(), cfg.clone());
            Batcher::spawn(GROUP_COMMIT_MAX, move |done: Vec<Finish>| {
                let (mut conn, keys, cfg) = (conn.clone(), keys.clone(), cfg.clone());
                async move {
                    backend::finish_script(&keys, &cfg, &done)
                        .invoke_async(&mut conn)
                        .await
                }
            })
        };
        let queue = Self {
            server: Arc::new(ServerAddress::of(&client)),
            client,
            conn,
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

    /// The shared connection, for other users of the same Redis.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Where the queue's Redis server is.
    pub fn server(&self) -> &ServerAddress {
        &self.server
    }

    /// The consumer group workers read the queue through.
    pub fn consumer_group(&self) -> &str {
        &self.keys.group
    }

    /// Whether Redis answers `PING` within `limit`.
    pub async fn ping(&self, limit: Duration) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        match tokio::time::timeout(limit, cmd.query_async::<String>(&mut conn)).await {
            Ok(answer) => answer.map(drop).map_err(QueueError::from),
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

    /// Enqueues one job and returns its id. Pushes made at the same moment
    /// by concurrent callers share one script call. An idempotent job
    /// ([`NewJob::idempotency`]) whose key was already used the same way
    /// answers the id without enqueueing anything; [`Self::push_once`]
    /// tells the two apart.
    pub async fn push(&self, job: NewJob) -> Result<String, QueueError> {
        self.push_once(job).await.map(|p| p.id().to_owned())
    }

    /// Enqueues one job, saying whether it was new or a repeat of an
    /// idempotent push.
    pub async fn push_once(&self, job: NewJob) -> Result<Pushed, QueueError> {
        job.check()?;
        let id = job.id.clone();
        let key = job.idempotency.as_ref().map(|(k, _)| k.clone());
        match self.pusher.submit(job).await? {
            1 => Ok(Pushed::New(id)),
            2 => Ok(Pushed::Repeat(id)),
            3 => Err(QueueError::IdempotencyConflict(key.unwrap_or_default())),
            _ => Err(QueueError::DuplicateId(id)),
        }
    }

    /// Enqueues many jobs; chunks go out pipelined on one connection. The
    /// answer says, per job and in order, whether it was enqueued (`false`:
    /// a job with that id already exists and was left untouched, or its
    /// idempotency key was used before).
    pub async fn push_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<bool>, QueueError> {
        jobs.iter().try_for_each(NewJob::check)?;
        // Built first, so the futures below borrow nothing (a future that
        // borrows the slice is not `Send` for every lifetime, which axum
        // handlers need).
        let calls: Vec<BoxFuture<'static, redis::RedisResult<Vec<u8>>>> = jobs
            .chunks(PUSH_CHUNK)
            .map(|chunk| {
                let inv = push_script(&self.keys, &self.cfg, chunk);
                let mut conn = self.conn.clone();
                async move { inv.invoke_async::<Vec<u8>>(&mut conn).await }.boxed()
            })
            .collect();
        // A few chunks in flight keep the connection busy without queueing
        // so much behind one another that later ones hit the reply timeout.
        let answers: Vec<Vec<u8>> = stream::iter(calls)
            .buffered(PUSH_CHUNKS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(answers
            .into_iter()
            .flatten()
            .map(|code| code == 1)
            .collect())
    }

    /// Cancels a job that has not started. A queued job's stream entry
    /// stays until a worker reads and drops it.
    pub async fn cancel(&self, id: &str) -> Result<Cancelled, QueueError> {
        let mut conn = self.conn.clone();
        let before: String = scripts::CANCEL
            .key(&self.keys.delayed)
            .key(&self.keys.stats)
            .arg(self.keys.job(id))
            .arg(id)
            .arg(self.cfg.retention.as_secs().max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(match JobStatus::parse(&before) {
            None => Cancelled::Unknown,
            Some(JobStatus::Scheduled | JobStatus::Queued) => Cancelled::Yes,
            Some(status) => Cancelled::TooLate(status),
        })
    }

    /// One page of the jobs with `status`, at most `limit` (1 to 1,000),
    /// from `cursor` (`None` for the first page; then the page's
    /// `next_cursor`). Scheduled jobs come soonest first; succeeded and
    /// failed ones newest first (those within the retention); queued and
    /// running ones oldest first. Cancelled jobs are not listed.
    pub async fn list(
        &self,
        status: JobStatus,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        let limit = limit.clamp(1, 1000);
        let (key, kind) = match status {
            JobStatus::Scheduled => (&self.keys.delayed, "asc"),
            JobStatus::Succeeded => (&self.keys.succeeded, "desc"),
            JobStatus::Failed => (&self.keys.failed, "desc"),
            JobStatus::Queued | JobStatus::Running => (&self.keys.stream, "stream"),
            JobStatus::Cancelled => {
                return Err(QueueError::Invalid(
                    "cancelled jobs are not listed; read one by its id".into(),
                ));
            }
        };
        // Every cursor reads `{number}:{rest}`: a score and a member, or a
        // stream entry id's two numbers.
        let cursor = cursor.unwrap_or_default();
        if !cursor.is_empty() && !is_cursor(cursor) {
            return Err(QueueError::Invalid(format!(
                "cursor {cursor:?} is not one this listing hands out ({{number}}:{{rest}})"
            )));
        }
        let cursor = match kind {
            "stream" => stream_cursor_to_entry(cursor),
            _ => cursor.to_owned(),
        };
        let mut conn = self.conn.clone();
        let mut answer: Vec<String> = scripts::LIST
            .key(key)
            .key(&self.keys.stream_high)
            .key(&self.keys.stream_low)
            .arg(&self.keys.job_prefix)
            .arg(kind)
            .arg(status.as_str())
            .arg(cursor)
            .arg(limit)
            // A page of queued jobs looks at most this many entries (the
            // running ones among them are skipped).
            .arg(limit * 10)
            .invoke_async(&mut conn)
            .await?;
        let next = match answer.first().map(String::as_str) {
            Some("") | None => None,
            Some(c) if kind == "stream" => Some(entry_to_stream_cursor(c)),
            Some(c) => Some(c.to_owned()),
        };
        let ids: Vec<String> = answer.drain(1.min(answer.len())..).collect();
        let jobs = self.records(&ids).await?;
        Ok(JobPage {
            jobs,
            next_cursor: next,
        })
    }

    /// Re-drives a failed job: it runs again as its next attempt with a
    /// fresh attempt budget, and its new attempt's span links to the
    /// failed one. Answers the status it had (`None`: no such job); only
    /// a `Failed` job was re-driven.
    pub async fn retry(&self, id: &str) -> Result<Option<JobStatus>, QueueError> {
        let mut conn = self.conn.clone();
        let (_, _, before): (u64, u64, String) = self
            .redrive_script()
            .arg("one")
            .arg(id)
            .arg(1)
            .arg(1)
            .invoke_async(&mut conn)
            .await?;
        Ok(JobStatus::parse(&before))
    }

    /// Re-drives failed jobs, oldest first, all of them or those whose
    /// error type is `error_type`: at most `limit` per call, looking at
    /// most at 10,000 failed jobs ([`Redriven::more`] says to call again).
    pub async fn redrive_failed(
        &self,
        error_type: Option<&str>,
        limit: usize,
    ) -> Result<Redriven, QueueError> {
        const SCAN: usize = 10_000;
        let mut conn = self.conn.clone();
        let (redriven, looked, _): (u64, u64, String) = self
            .redrive_script()
            .arg("all")
            .arg(error_type.unwrap_or_default())
            .arg(limit.max(1))
            .arg(SCAN)
            .invoke_async(&mut conn)
            .await?;
        Ok(Redriven {
            redriven,
            more: redriven as usize >= limit.max(1) || looked as usize >= SCAN,
        })
    }

    /// The jobs of batch `id` ([`NewJob::in_batch`]) in the order they were
    /// pushed, the first `limit` of them; `None` when no such batch is
    /// known (or its index expired with its last job).
    pub async fn batch(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Option<Vec<JobRecord>>, QueueError> {
        if limit == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("{}{id}", self.keys.batch_prefix))
            .arg(0)
            .arg(limit - 1)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(None);
        }
        self.records(&ids).await.map(Some)
    }

    /// The records of `ids` still kept, in that order.
    async fn records(&self, ids: &[String]) -> Result<Vec<JobRecord>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(self.keys.job(id));
        }
        let hashes: Vec<BTreeMap<String, String>> = pipe.query_async(&mut conn).await?;
        // A record may have expired since the index was read: skip it.
        ids.iter()
            .zip(hashes)
            .filter(|(_, fields)| !fields.is_empty())
            .map(|(id, fields)| JobRecord::from_hash(id, fields))
            .collect()
    }

    /// The re-drive script with its keys and first argument.
    fn redrive_script(&self) -> redis::ScriptInvocation<'static> {
        let mut inv = scripts::REDRIVE.prepare_invoke();
        inv.key(&self.keys.stream)
            .key(&self.keys.failed)
            .key(&self.keys.stats)
            .key(&self.keys.stream_high)
            .key(&self.keys.stream_low)
            .arg(&self.keys.job_prefix);
        inv
    }

    /// The job's status, attempts, result or error; `None` when the id is
    /// unknown or its record has expired.
    pub async fn status(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        let mut conn = self.conn.clone();
        let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.job(id))
            .query_async(&mut conn)
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        JobRecord::from_hash(id, fields).map(Some)
    }

    /// One consistent snapshot of the queue.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut conn = self.conn.clone();
        type Lane = (u64, u64);
        let (delayed, failed, consumers, counters, high, normal, low): (
            u64,
            u64,
            u64,
            BTreeMap<String, u64>,
            Lane,
            Lane,
            Lane,
        ) = scripts::STATS
            .key(&self.keys.stream)
            .key(&self.keys.delayed)
            .key(&self.keys.failed)
            .key(&self.keys.stats)
            .key(&self.keys.consumers)
            .key(&self.keys.stream_high)
            .key(&self.keys.stream_low)
            .arg(&self.keys.group)
            .arg(self.cfg.retention.as_millis() as u64)
            .arg(self.cfg.lease.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        let count = |name: &str| counters.get(name).copied().unwrap_or(0);
        let waiting = |(len, pending): Lane| len.saturating_sub(pending);
        Ok(QueueStats {
            waiting: waiting(high) + waiting(normal) + waiting(low),
            waiting_high: waiting(high),
            waiting_low: waiting(low),
            in_flight: high.1 + normal.1 + low.1,
            delayed,
            failed,
            live_consumers: consumers,
            enqueued_total: count("enqueued"),
            succeeded_total: count("succeeded"),
            failed_total: count("failed"),
            retried_total: count("retried"),
        })
    }

    /// The consumers (worker backends) the queue knows, live or not, by
    /// name: when each last heart-beat and how many jobs each holds.
    pub async fn consumers(&self) -> Result<Vec<ConsumerInfo>, QueueError> {
        let mut conn = self.conn.clone();
        // Heartbeats are stamped with the server's clock: read it in the
        // same round trip and measure their age on it.
        let ((secs, micros), beats): ((u64, u64), Vec<(String, u64)>) = redis::pipe()
            .cmd("TIME")
            .cmd("ZRANGE")
            .arg(&self.keys.consumers)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let now = secs * 1000 + micros / 1000;
        // What each holds, summed over the lanes. No group yet (nothing
        // read the queue): nobody holds anything.
        let mut held: BTreeMap<String, u64> = BTreeMap::new();
        for priority in Priority::ALL {
            let info: redis::RedisResult<redis::streams::StreamInfoConsumersReply> =
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(self.keys.lane(priority))
                    .arg(&self.keys.group)
                    .query_async(&mut conn)
                    .await;
            for c in info.map(|i| i.consumers).unwrap_or_default() {
                *held.entry(c.name).or_default() += c.pending as u64;
            }
        }
        let live_after = now.saturating_sub(self.cfg.lease.as_millis() as u64);
        Ok(beats
            .into_iter()
            .map(|(name, beat)| ConsumerInfo {
                in_flight: held.get(&name).copied().unwrap_or(0),
                heartbeat_age_ms: now.saturating_sub(beat),
                live: beat > live_after,
                name,
            })
            .collect())
    }

    /// The latest jobs failed for good (at most `limit`, newest first)
    /// whose records are still kept.
    pub async fn failed_jobs(&self, limit: usize) -> Result<Vec<JobRecord>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(&self.keys.failed)
            .arg(0)
            .arg(limit - 1)
            .query_async(&mut conn)
            .await?;
        self.records(&ids).await
    }

    /// An apalis backend that runs at most `concurrency` jobs of this queue
    /// at once, under a consumer name unique to this backend.
    pub fn backend<Args>(&self, concurrency: usize) -> QueueBackend<Args> {
        QueueBackend::new(self.clone(), concurrency)
    }
}

/// The push script for `jobs`; it answers, per job, whether it was added.
fn push_script(
    keys: &Keys,
    cfg: &QueueConfig,
    jobs: &[NewJob],
) -> redis::ScriptInvocation<'static> {
    let mut inv = scripts::PUSH.prepare_invoke();
    inv.key(&keys.stream)
        .key(&keys.delayed)
        .key(&keys.stats)
        .key(&keys.stream_high)
        .key(&keys.stream_low)
        .arg(&keys.job_prefix)
        .arg(&keys.idem_prefix)
        .arg(cfg.idempotency_window.as_secs().max(1))
        .arg(&keys.batch_prefix)
        .arg(cfg.retention.as_secs().max(1));
    for job in jobs {
        let (idem, fingerprint) = job
            .idempotency
            .as_ref()
            .map_or(("", ""), |(k, f)| (k.as_str(), f.as_str()));
        inv.arg(&job.id)
            .arg(&job.payload)
            .arg(job.metadata_json())
            .arg(job.max_attempts.unwrap_or(cfg.max_attempts))
            .arg(job.delay_ms())
            .arg(
                job.timeout
                    .map_or(0, |t| t.as_millis().clamp(1, u64::MAX as u128) as u64),
            )
            .arg(idem)
            .arg(fingerprint)
            .arg(job.priority.stored())
            .arg(job.batch.as_deref().unwrap_or_default());
    }
    inv
}

/// The client of the server at `url`: plain, or TLS for `rediss://`
/// (trusting `ca_pem` when given, else the system's roots). A password
/// goes in the URL (`redis://:password@host/` or `user:password@`). The
/// queue connects with it; other users of the same Redis may too.
pub fn redis_client(url: &str, ca_pem: Option<&[u8]>) -> Result<redis::Client, QueueError> {
    if url.starts_with("rediss://") {
        // The redis crate takes TLS from the process's default provider;
        // another part of the process may have installed one already.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        if let Some(pem) = ca_pem {
            return Ok(redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            )?);
        }
    } else if ca_pem.is_some() {
        return Err(QueueError::Config(
            "a TLS root certificate was given for a plain redis:// URL; use rediss://".into(),
        ));
    }
    Ok(redis::Client::open(url)?)
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

/// A listing cursor of the queued or running jobs, `{ms}:{seq}` with
/// `.high` or `.low` after it outside the normal lane, as the entry name
/// the list script takes (`h:{ms}-{seq}`); empty for the first page. A
/// cursor of the right shape not handed out reads as the nearest entry
/// id: a rest that is not a number as `{ms}-0`, a number past the
/// largest id as the largest (after which nothing comes).
fn stream_cursor_to_entry(cursor: &str) -> String {
    let Some((ms, rest)) = cursor.split_once(':') else {
        return String::new();
    };
    let ms = ms.parse::<u64>().unwrap_or(u64::MAX);
    let (seq, priority) = match rest.split_once('.') {
        Some((seq, "high")) => (seq, Priority::High),
        Some((seq, "low")) => (seq, Priority::Low),
        _ => (rest, Priority::Normal),
    };
    let seq = match seq.parse::<u64>() {
        Ok(seq) => seq,
        Err(_) if !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) => u64::MAX,
        Err(_) => 0,
    };
    format!("{}{ms}-{seq}", priority.entry_prefix())
}

/// The cursor [`stream_cursor_to_entry`] reads back, for an entry name.
fn entry_to_stream_cursor(entry: &str) -> String {
    let priority = Priority::of_entry(entry);
    let id = &entry[priority.entry_prefix().len()..];
    let cursor = id.replacen('-', ":", 1);
    match priority {
        Priority::Normal => cursor,
        other => format!("{cursor}.{}", other.as_str()),
    }
}

/// Whether `s` has the shape of a listing cursor: `{number}:{rest}`, the
/// number at most 20 digits, the rest 1 to 128 printable ASCII characters.
fn is_cursor(s: &str) -> bool {
    s.split_once(':').is_some_and(|(number, rest)| {
        (1..=20).contains(&number.len())
            && number.bytes().all(|b| b.is_ascii_digit())
            && (1..=128).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_graphic())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_cursors_name_the_lane_and_read_back() {
        for entry in [
            "1700000000000-3",
            "h:1700000000000-0",
            "l:5-18446744073709551615",
        ] {
            let cursor = entry_to_stream_cursor(entry);
            assert!(is_cursor(&cursor), "{cursor}");
            assert_eq!(stream_cursor_to_entry(&cursor), entry);
        }
        assert_eq!(entry_to_stream_cursor("h:12-4"), "12:4.high");
        assert_eq!(stream_cursor_to_entry("12:x.low"), "l:12-0");
        // Shapes the listing never hands out: past the largest id.
        let max = u64::MAX;
        assert_eq!(
            stream_cursor_to_entry("12:99999999999999999999"),
            format!("12-{max}")
        );
        assert_eq!(
            stream_cursor_to_entry("99999999999999999999:1"),
            format!("{max}-1")
        );
    }
}

//! The apalis backend: feeds one worker with jobs and records their outcomes.
//!
//! A [`QueueBackend`] owns one *consumer* of the queue's group, named
//! uniquely per backend. It keeps at most `concurrency` jobs taken at once:
//! each read asks Redis for exactly the free capacity, so a job is never
//! held by a worker that cannot start it. The blocking read runs on a
//! connection of its own (a blocked connection answers nothing else);
//! everything else shares the queue's multiplexed connection.
//!
//! Two background loops run beside each backend: the heartbeat (marks the
//! consumer live, renews the leases of its jobs, forgets dead consumers)
//! and the promoter (moves due delayed jobs onto the stream).
//!
//! [`QueueLayer`], installed by apalis as the backend's middleware, sees the
//! final outcome of every job and records it: success with the result,
//! a retry after a backoff, or failure for good.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::metadata::MetadataStore;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::task::AtomicWaker;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tower_layer::Layer;
use tower_service::Service;

use super::{Keys, QueueConfig, QueueError, RedisQueue, epoch_ms, scripts};

/// Metadata keys the backend adds to every task it hands out, beside the
/// metadata pushed with the job.
pub mod meta_keys {
    /// The attempt number, from 1.
    pub const ATTEMPT: &str = "job.attempt";
    /// When the job was pushed, in ms since the Unix epoch (server clock).
    pub const ENQUEUED_AT_MS: &str = "job.enqueued_at_ms";
}

/// Most jobs one read asks for, whatever the free capacity.
const MAX_FETCH: usize = 100;
/// Consumers silent for this many leases are forgotten once idle.
const DEAD_AFTER_LEASES: u32 = 3;

/// Which job and which attempt a task is: attached to every task the
/// backend hands out (read it with `task.data().get::<JobLease>()`).
#[derive(Debug, Clone)]
pub struct JobLease {
    /// The job's id.
    pub id: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed (0: no limit).
    pub max_attempts: u32,
    /// When the job was pushed, in ms since the Unix epoch.
    pub enqueued_at_ms: u64,
    /// The stream entry that delivered it.
    entry: String,
    /// Metadata to merge into the job for its next attempt, if it is
    /// retried (shared by the clones of this lease).
    carry: Arc<Mutex<BTreeMap<String, String>>>,
}

impl JobLease {
    /// Adds `key = value` to the job's metadata if this attempt fails and
    /// the job is retried: the next attempt sees it. The worker uses it to
    /// link each attempt's span to the previous one.
    pub fn carry_to_next_attempt(&self, key: impl Into<String>, value: impl Into<String>) {
        if let Ok(mut carry) = self.carry.lock() {
            carry.insert(key.into(), value.into());
        }
    }

    fn carried_json(&self) -> String {
        match self.carry.lock() {
            Ok(carry) if !carry.is_empty() => serde_json::to_string(&*carry).unwrap_or_default(),
            _ => String::new(),
        }
    }
}

/// A job marked running by the start script, not yet handed to the worker.
#[derive(Debug)]
struct Started {
    lease: JobLease,
    payload: String,
    meta: String,
}

/// State shared by the backend, its middleware and its background loops.
struct Shared {
    queue: RedisQueue,
    /// This backend's consumer name in the group, unique per backend.
    consumer: Arc<str>,
    concurrency: usize,
    fetch_batch: usize,
    /// Jobs handed to the worker and not finished.
    active: AtomicUsize,
    /// Stream entries this consumer holds (handed out or buffered): the
    /// heartbeat renews their leases.
    held: Mutex<HashSet<String>>,
    /// Woken when capacity frees up.
    waker: AtomicWaker,
    stopping: AtomicBool,
    /// `CLIENT ID` of the blocking-read connection (0: none), so shutdown
    /// can cut a blocked read short.
    reader_id: AtomicI64,
}

impl Shared {
    fn cfg(&self) -> &QueueConfig {
        &self.queue.cfg
    }

    fn hold(&self, entry: &str) {
        if let Ok(mut held) = self.held.lock() {
            held.insert(entry.to_owned());
        }
    }

    fn release(&self, entry: &str) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(entry);
        }
    }

    fn held_entries(&self) -> Vec<String> {
        self.held
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records one attempt's outcome, retrying while Redis is unreachable.
    /// If it never gets through, the lease expires and the job runs again:
    /// at-least-once, never lost.
    async fn finish(&self, lease: &JobLease, outcome: Outcome) {
        let (kind, value, retry_at_ms) = match outcome {
            Outcome::Succeeded(result) => ("ok", result, 0),
            Outcome::Retry { error, at_ms } => ("retry", error, at_ms),
            Outcome::Failed(error) => ("fail", error, 0),
        };
        let done = Finish {
            consumer: self.consumer.clone(),
            entry: lease.entry.clone(),
            id: lease.id.clone(),
            attempt: lease.attempt,
            kind,
            value,
            retry_at_ms,
            carry: lease.carried_json(),
        };
        let mut delay = Duration::from_millis(50);
        for _ in 0..6 {
            match self.queue.finisher.submit(done.clone()).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        job.id = %lease.id,
                        job.attempt = lease.attempt,
                        "outcome not recorded: the lease expired and a newer attempt owns the job"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(job.id = %lease.id, error = %e, "could not record job outcome, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        tracing::error!(
            job.id = %lease.id,
            "gave up recording the job outcome; it will run again once its lease expires"
        );
    }
}

/// What to record for a finished attempt.
fn decide<R: Serialize>(
    cfg: &QueueConfig,
    lease: &JobLease,
    res: &Result<R, BoxDynError>,
) -> Outcome {
    let err = match res {
        Ok(value) => {
            return match serde_json::to_string(value) {
                Ok(json) => Outcome::Succeeded(json),
                Err(e) => Outcome::Failed(format!("the result could not be encoded as JSON: {e}")),
            };
        }
        Err(err) => err,
    };
    if let Some(abort) = err.downcast_ref::<AbortError>() {
        return Outcome::Failed(source_text(abort));
    }
    let (message, delay) = match err.downcast_ref::<RetryAfterError>() {
        Some(retry) => (source_text(retry), retry.get_duration()),
        None => (err.to_string(), backoff(cfg, lease.attempt)),
    };
    if lease.max_attempts == 0 || lease.attempt < lease.max_attempts {
        Outcome::Retry {
            error: message,
            at_ms: epoch_ms(SystemTime::now() + delay),
        }
    } else {
        Outcome::Failed(message)
    }
}

/// Exponential backoff: `retry_backoff * 2^(attempt-1)`, capped.
fn backoff(cfg: &QueueConfig, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    cfg.retry_backoff
        .saturating_mul(factor)
        .min(cfg.retry_backoff_max)
}

/// The text of an error's cause (the wrapped error of `AbortError` and
/// `RetryAfterError`), falling back to the error itself.
fn source_text(err: &(dyn std::error::Error + 'static)) -> String {
    err.source()
        .map_or_else(|| err.to_string(), |s| s.to_string())
}

/// One attempt's outcome, as the finish script takes it.
#[derive(Debug, Clone)]
pub(crate) struct Finish {
    consumer: Arc<str>,
    entry: String,
    id: String,
    attempt: u32,
    /// `ok`, `retry` or `fail`.
    kind: &'static str,
    /// The result JSON, or the error text.
    value: String,
    retry_at_ms: u64,
    /// Metadata for the next attempt (JSON object, or empty).
    carry: String,
}

/// The finish script for a batch of outcomes; it answers, per outcome,
/// whether it was recorded.
pub(crate) fn finish_script(
    keys: &Keys,
    cfg: &QueueConfig,
    done: &[Finish],
) -> redis::ScriptInvocation<'static> {
    let mut inv = scripts::FINISH.prepare_invoke();
    inv.key(&keys.stream)
        .key(&keys.delayed)
        .key(&keys.failed)
        .key(&keys.stats)
        .arg(&keys.job_prefix)
        .arg(&keys.group)
        .arg(cfg.retention.as_secs().max(1));
    for d in done {
        inv.arg(&*d.consumer)
            .arg(&d.entry)
            .arg(&d.id)
            .arg(d.attempt)
            .arg(d.kind)
            .arg(&d.value)
            .arg(d.retry_at_ms)
            .arg(&d.carry);
    }
    inv
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Succeeded(String),
    Retry { error: String, at_ms: u64 },
    Failed(String),
}

/// The blocking-read connection and the reclaim cursor.
struct Reader {
    conn: MultiplexedConnection,
    claim_cursor: String,
    next_claim: Instant,
}

impl Reader {
    async fn connect(shared: &Shared) -> Result<Self, QueueError> {
        let cfg = shared.cfg();
        // The read blocks for up to `block_timeout`; the client must wait
        // longer than that before calling the server unresponsive.
        let conn_cfg = AsyncConnectionConfig::new()
            .set_response_timeout(Some(cfg.block_timeout + Duration::from_secs(5)));
        let mut conn = shared
            .queue
            .client
            .get_multiplexed_async_connection_with_config(&conn_cfg)
            .await?;
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await?;
        shared.reader_id.store(id, Ordering::SeqCst);
        Ok(Self {
            conn,
            claim_cursor: "0-0".into(),
            next_claim: Instant::now(),
        })
    }

    /// One read: reclaims expired leases when due, otherwise waits for new
    /// entries; then marks what it got as running.
    async fn read(&mut self, shared: &Shared, want: usize) -> Result<Vec<Started>, QueueError> {
        let q = &shared.queue;
        let keys = &q.keys;
        let mut entries = Vec::new();
        if Instant::now() >= self.next_claim {
            let mut conn = q.conn.clone();
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&keys.stream)
                .arg(&keys.group)
                .arg(&*shared.consumer)
                .arg(shared.cfg().lease.as_millis() as u64)
                .arg(&self.claim_cursor)
                .arg("COUNT")
                .arg(want)
                .query_async(&mut conn)
                .await?;
            if !reply.claimed.is_empty() {
                tracing::info!(
                    count = reply.claimed.len(),
                    consumer = %shared.consumer,
                    "reclaimed jobs whose lease expired"
                );
            }
            entries = reply.claimed;
            self.claim_cursor = reply.next_stream_id;
            if self.claim_cursor == "0-0" {
                // Scanned every pending entry: look again in half a lease.
                self.next_claim = Instant::now() + shared.cfg().lease / 2;
            }
        }
        if entries.is_empty() {
            // While there is a backlog, read and start in one round trip.
            let started = take(shared, want).await?;
            if !started.is_empty() {
                return Ok(started);
            }
            let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&keys.group)
                .arg(&*shared.consumer)
                .arg("COUNT")
                .arg(want)
                .arg("BLOCK")
                .arg(shared.cfg().block_timeout.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&keys.stream)
                .arg(">")
                .query_async(&mut self.conn)
                .await?;
            entries = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect();
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        start(shared, entries).await
    }
}

/// A start-type script with its common keys and arguments.
fn start_invocation(
    shared: &Shared,
    script: &'static redis::Script,
) -> redis::ScriptInvocation<'static> {
    let keys = &shared.queue.keys;
    let mut inv = script.prepare_invoke();
    inv.key(&keys.stream)
        .key(&keys.failed)
        .key(&keys.stats)
        .arg(&keys.job_prefix)
        .arg(&keys.group)
        .arg(&*shared.consumer)
        .arg(shared.cfg().retention.as_secs().max(1));
    inv
}

/// Reads up to `want` new entries without blocking and starts their jobs.
async fn take(shared: &Shared, want: usize) -> Result<Vec<Started>, QueueError> {
    let mut inv = start_invocation(shared, &scripts::TAKE);
    inv.arg(want);
    started(shared, inv).await
}

/// Starts the jobs of entries a blocking read or a reclaim delivered.
async fn start(shared: &Shared, entries: Vec<StreamId>) -> Result<Vec<Started>, QueueError> {
    let mut inv = start_invocation(shared, &scripts::START);
    for e in &entries {
        let job_id: String = e.get("id").unwrap_or_default();
        inv.arg(&e.id).arg(job_id);
    }
    started(shared, inv).await
}

async fn started(
    shared: &Shared,
    inv: redis::ScriptInvocation<'static>,
) -> Result<Vec<Started>, QueueError> {
    let mut conn = shared.queue.conn.clone();
    type Row = (String, String, String, String, u32, u32, u64);
    let rows: Vec<Row> = inv.invoke_async(&mut conn).await?;
    Ok(rows
        .into_iter()
        .map(
            |(entry, id, payload, meta, attempt, max_attempts, enqueued_at_ms)| {
                shared.hold(&entry);
                Started {
                    lease: JobLease {
                        id,
                        attempt,
                        max_attempts,
                        enqueued_at_ms,
                        entry,
                        carry: Arc::default(),
                    },
                    payload,
                    meta,
                }
            },
        )
        .collect())
}

/// Reads until it has at least one job, riding out Redis outages with a
/// capped backoff. Ends early, with no jobs, once the backend is stopping.
async fn fetch(
    shared: Arc<Shared>,
    mut reader: Option<Reader>,
    want: usize,
) -> (Option<Reader>, Vec<Started>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return (reader, Vec::new());
        }
        let mut r = match reader.take() {
            Some(r) => r,
            None => match Reader::connect(&shared).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot open the queue reader connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        match r.read(&shared, want).await {
            Ok(jobs) => {
                reader = Some(r);
                backoff = Duration::from_millis(50);
                if !jobs.is_empty() {
                    return (reader, jobs);
                }
            }
            Err(QueueError::Redis(e)) if e.code() == Some("NOGROUP") => {
                // The stream was deleted (FLUSHALL, say): make it again.
                reader = Some(r);
                if let Err(e) = shared.queue.ensure_group().await {
                    tracing::warn!(error = %e, "cannot recreate the queue's consumer group");
                    tokio::time::sleep(backoff).await;
                }
            }
            Err(e) => {
                // Drop the connection: it may be broken; reconnect next turn.
                tracing::warn!(error = %e, retry_in = ?backoff, "reading the queue failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Heartbeat loop: marks the consumer live, renews its leases and, about
/// once a lease, forgets dead consumers and trims the failed index.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let cfg = shared.cfg().clone();
    let keys = shared.queue.keys.clone();
    let every = (cfg.lease / 3).max(Duration::from_millis(50));
    let mut last_reap = Instant::now();
    loop {
        let mut conn = shared.queue.conn.clone();
        let mut inv = scripts::HEARTBEAT.prepare_invoke();
        inv.key(&keys.stream)
            .key(&keys.consumers)
            .arg(&keys.group)
            .arg(&*shared.consumer);
        for entry in shared.held_entries() {
            inv.arg(entry);
        }
        if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
            tracing::warn!(error = %e, "queue heartbeat failed");
        }
        if last_reap.elapsed() >= cfg.lease {
            last_reap = Instant::now();
            let now = epoch_ms(SystemTime::now());
            let res: redis::RedisResult<i64> = scripts::REAP
                .key(&keys.stream)
                .key(&keys.consumers)
                .key(&keys.failed)
                .arg(&keys.group)
                .arg(now.saturating_sub((cfg.lease * DEAD_AFTER_LEASES).as_millis() as u64))
                .arg(20)
                .arg(now.saturating_sub(cfg.retention.as_millis() as u64))
                .invoke_async(&mut conn)
                .await;
            match res {
                Ok(n) if n > 0 => tracing::info!(count = n, "forgot dead queue consumers"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "queue housekeeping failed"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Promoter loop: moves due delayed jobs onto the stream in bounded
/// chunks, sleeping until the next one is due (at most `promote_interval`).
async fn promote_loop(shared: Arc<Shared>) {
    let cfg = shared.cfg().clone();
    let keys = shared.queue.keys.clone();
    loop {
        let mut conn = shared.queue.conn.clone();
        let res: redis::RedisResult<(u64, i64, i64)> = scripts::PROMOTE
            .key(&keys.delayed)
            .key(&keys.stream)
            .arg(cfg.promote_batch.max(1))
            .invoke_async(&mut conn)
            .await;
        let pause = match res {
            Ok((moved, _, _)) if moved as usize >= cfg.promote_batch.max(1) => Duration::ZERO,
            Ok((_, next_due, now)) if next_due >= 0 => {
                Duration::from_millis(next_due.saturating_sub(now).max(1) as u64)
                    .min(cfg.promote_interval)
            }
            Ok(_) => cfg.promote_interval,
            Err(e) => {
                tracing::warn!(error = %e, "promoting delayed jobs failed");
                cfg.promote_interval.max(Duration::from_secs(1))
            }
        };
        if pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(pause).await;
        }
    }
}

/// The apalis backend of a [`RedisQueue`]: see the module docs.
pub struct QueueBackend<Args> {
    shared: Arc<Shared>,
    buffer: VecDeque<Started>,
    reader: Option<Reader>,
    fetching: Option<BoxFuture<'static, (Option<Reader>, Vec<Started>)>>,
    loops: Vec<JoinHandle<()>>,
    closing: Option<BoxFuture<'static, ()>>,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> std::fmt::Debug for QueueBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBackend")
            .field("queue", &self.shared.cfg().name)
            .field("consumer", &self.shared.consumer)
            .field("concurrency", &self.shared.concurrency)
            .finish()
    }
}

impl<Args> QueueBackend<Args> {
    pub(crate) fn new(queue: RedisQueue, concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let consumer: Arc<str> = format!("{host}-{}-{}", std::process::id(), &suffix[..8]).into();
        Self {
            shared: Arc::new(Shared {
                queue,
                consumer,
                concurrency,
                fetch_batch: concurrency.min(MAX_FETCH),
                active: AtomicUsize::new(0),
                held: Mutex::new(HashSet::new()),
                waker: AtomicWaker::new(),
                stopping: AtomicBool::new(false),
                reader_id: AtomicI64::new(0),
            }),
            buffer: VecDeque::new(),
            reader: None,
            fetching: None,
            loops: Vec::new(),
            closing: None,
            _args: PhantomData,
        }
    }

    /// This backend's consumer name in the queue's group.
    pub fn consumer(&self) -> &str {
        &self.shared.consumer
    }

    fn start_loops(&mut self) {
        if self.loops.is_empty() {
            self.loops
                .push(tokio::spawn(heartbeat_loop(self.shared.clone())));
            self.loops
                .push(tokio::spawn(promote_loop(self.shared.clone())));
        }
    }

    fn stop_loops(&mut self) {
        for handle in self.loops.drain(..) {
            handle.abort();
        }
    }
}

impl<Args: DeserializeOwned> QueueBackend<Args> {
    /// Turns a started job into an apalis task. A payload that does not
    /// decode can never succeed: the job is failed at once, not retried.
    fn to_task(&self, job: Started) -> Option<Task<Args>> {
        let args = match serde_json::from_str::<Args>(&job.payload) {
            Ok(args) => args,
            Err(e) => {
                let shared = self.shared.clone();
                let error = format!(
                    "the job's arguments do not decode as {}: {e}",
                    std::any::type_name::<Args>()
                );
                tracing::error!(job.id = %job.lease.id, %error, "dropping undecodable job");
                tokio::spawn(async move {
                    shared.finish(&job.lease, Outcome::Failed(error)).await;
                    shared.release(&job.lease.entry);
                });
                return None;
            }
        };
        let mut meta = MetadataStore::new();
        // Empty when the job was pushed without metadata.
        if !job.meta.is_empty() {
            match serde_json::from_str::<std::collections::BTreeMap<String, String>>(&job.meta) {
                Ok(carrier) => {
                    for (k, v) in carrier {
                        let _ = meta.insert(k, v);
                    }
                }
                // The job still runs; only its trace context is lost.
                Err(e) => {
                    tracing::warn!(job.id = %job.lease.id, error = %e, "job metadata is not a JSON map of strings; ignoring it")
                }
            }
        }
        let lease = job.lease;
        let _ = meta.insert(meta_keys::ATTEMPT, lease.attempt.to_string());
        let _ = meta.insert(meta_keys::ENQUEUED_AT_MS, lease.enqueued_at_ms.to_string());
        Some(
            TaskBuilder::new(args)
                .task_id(TaskId::from_string(lease.id.clone()))
                // apalis counts the attempt up when the task starts.
                .attempt(lease.attempt.saturating_sub(1) as usize)
                .max_attempts(lease.max_attempts as usize)
                .with_metadata(meta)
                .data(lease)
                .build(),
        )
    }
}

impl<Args> Drop for QueueBackend<Args> {
    fn drop(&mut self) {
        // Without a clean close the jobs held stay pending and are
        // reclaimed by another worker once their lease runs out.
        self.stop_loops();
    }
}

impl<Args: DeserializeOwned + Send + 'static> Backend for QueueBackend<Args> {
    type Task = Task<Args>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.start_loops();
        let shared = &self.shared;
        if shared.active.load(Ordering::SeqCst) < shared.concurrency {
            return Poll::Ready(Ok(()));
        }
        shared.waker.register(cx.waker());
        // Re-check: a job may have finished between the load and register.
        if shared.active.load(Ordering::SeqCst) < shared.concurrency {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        loop {
            if let Some(job) = self.buffer.pop_front() {
                if let Some(task) = self.to_task(job) {
                    self.shared.active.fetch_add(1, Ordering::SeqCst);
                    return Poll::Ready(Some(Ok(task)));
                }
                continue;
            }
            if self.fetching.is_none() {
                let free = self
                    .shared
                    .concurrency
                    .saturating_sub(self.shared.active.load(Ordering::SeqCst));
                if free == 0 {
                    self.shared.waker.register(cx.waker());
                    return Poll::Pending;
                }
                let want = free.min(self.shared.fetch_batch);
                self.fetching = Some(fetch(self.shared.clone(), self.reader.take(), want).boxed());
            }
            let Some(fetching) = self.fetching.as_mut() else {
                return Poll::Pending;
            };
            match fetching.poll_unpin(cx) {
                Poll::Ready((reader, jobs)) => {
                    self.reader = reader;
                    self.fetching = None;
                    self.buffer.extend(jobs);
                    if self.buffer.is_empty() {
                        // Only when stopping: nothing more will come.
                        return Poll::Pending;
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        if self.closing.is_none() {
            self.shared.stopping.store(true, Ordering::SeqCst);
            self.stop_loops();
            let fetching = self.fetching.take();
            let mut unstarted: Vec<Started> = self.buffer.drain(..).collect();
            let shared = self.shared.clone();
            self.closing = Some(
                async move {
                    if let Some(fetching) = fetching {
                        // Cut the blocked read short rather than wait it out.
                        let id = shared.reader_id.load(Ordering::SeqCst);
                        if id != 0 {
                            let mut conn = shared.queue.conn.clone();
                            let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                                .arg("UNBLOCK")
                                .arg(id)
                                .query_async(&mut conn)
                                .await;
                        }
                        let limit = shared.cfg().block_timeout + Duration::from_secs(1);
                        if let Ok((_, jobs)) = tokio::time::timeout(limit, fetching).await {
                            unstarted.extend(jobs);
                        }
                    }
                    leave(&shared, &unstarted).await;
                }
                .boxed(),
            );
        }
        match self.closing.as_mut() {
            Some(closing) => closing.poll_unpin(cx).map(Ok),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Gives back jobs taken but never started and deregisters the consumer.
async fn leave(shared: &Shared, unstarted: &[Started]) {
    let keys = &shared.queue.keys;
    let mut inv = scripts::LEAVE.prepare_invoke();
    inv.key(&keys.stream)
        .key(&keys.consumers)
        .arg(&keys.job_prefix)
        .arg(&keys.group)
        .arg(&*shared.consumer);
    for job in unstarted {
        inv.arg(&job.lease.entry)
            .arg(&job.lease.id)
            .arg(job.lease.attempt);
    }
    let mut conn = shared.queue.conn.clone();
    if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
        tracing::warn!(
            error = %e,
            "could not hand back unstarted jobs; they run again once their lease expires"
        );
    }
}

impl<Args> BackendConfig for QueueBackend<Args> {
    type Args = Args;
    type Id = String;
    type Kind = Ephemeral;
    type Config = QueueConfig;
    type Layer = QueueLayer;

    fn config(&self) -> &Self::Config {
        self.shared.cfg()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        QueueLayer {
            shared: self.shared.clone(),
        }
    }
}

/// Middleware that records each job's outcome in the queue. apalis installs
/// it outside the user's middleware, so it sees the final result.
#[derive(Clone)]
pub struct QueueLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QueueLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueLayer")
            .field("consumer", &self.shared.consumer)
            .finish()
    }
}

impl<S> Layer<S> for QueueLayer {
    type Service = QueueService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        QueueService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`QueueLayer`].
#[derive(Clone)]
pub struct QueueService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for QueueService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueService")
            .field("consumer", &self.shared.consumer)
            .finish()
    }
}

/// Frees the job's capacity slot however its future ends (completion,
/// panic unwinding, or the worker being dropped).
struct Slot {
    shared: Arc<Shared>,
    entry: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.release(&self.entry);
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
        self.shared.waker.wake();
    }
}

impl<S, Args, Res> Service<Task<Args>> for QueueService<S>
where
    S: Service<Task<Args>, Response = Res>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    Res: Serialize + Send + 'static,
{
    type Response = Res;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<Res, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let lease = task.data().get::<JobLease>().cloned();
        let shared = self.shared.clone();
        let slot = lease.as_ref().map(|l| Slot {
            shared: shared.clone(),
            entry: l.entry.clone(),
        });
        let fut = self.inner.call(task);
        async move {
            let res = fut.await.map_err(Into::into);
            if let Some(lease) = &lease {
                let outcome = decide(shared.cfg(), lease, &res);
                shared.finish(lease, outcome).await;
            }
            drop(slot);
            res
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(attempt: u32, max_attempts: u32) -> JobLease {
        JobLease {
            id: "j".into(),
            attempt,
            max_attempts,
            enqueued_at_ms: 0,
            entry: "1-0".into(),
            carry: Arc::default(),
        }
    }

    fn cfg() -> QueueConfig {
        let mut cfg = QueueConfig::new("q");
        cfg.retry_backoff = Duration::from_secs(1);
        cfg.retry_backoff_max = Duration::from_secs(10);
        cfg
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_the_ceiling() {
        let got: Vec<u64> = (1..=6).map(|a| backoff(&cfg(), a).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(&cfg(), u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn success_stores_the_result_as_json() {
        let res: Result<_, BoxDynError> = Ok(serde_json::json!({ "temp": 3.5 }));
        assert_eq!(
            decide(&cfg(), &lease(1, 3), &res),
            Outcome::Succeeded(r#"{"temp":3.5}"#.into())
        );
    }

    #[test]
    fn errors_retry_until_the_last_attempt() {
        let res: Result<(), BoxDynError> = Err("timeout".into());
        match decide(&cfg(), &lease(2, 3), &res) {
            Outcome::Retry { error, at_ms } => {
                assert_eq!(error, "timeout");
                let in_ms = at_ms.saturating_sub(epoch_ms(SystemTime::now()));
                assert!(
                    (1500..=2000).contains(&in_ms),
                    "second retry ~2 s away, got {in_ms} ms"
                );
            }
            other => panic!("expected a retry, got {other:?}"),
        }
        assert_eq!(
            decide(&cfg(), &lease(3, 3), &res),
            Outcome::Failed("timeout".into())
        );
        assert!(
            matches!(decide(&cfg(), &lease(9, 0), &res), Outcome::Retry { .. }),
            "0 = no limit"
        );
    }

    #[test]
    fn abort_fails_at_once_and_retry_after_sets_the_delay() {
        let res: Result<(), BoxDynError> = Err(AbortError::new("unknown place").into());
        assert_eq!(
            decide(&cfg(), &lease(1, 3), &res),
            Outcome::Failed("unknown place".into())
        );

        let res: Result<(), BoxDynError> =
            Err(RetryAfterError::new("rate limited", Duration::from_secs(60)).into());
        match decide(&cfg(), &lease(1, 3), &res) {
            Outcome::Retry { error, at_ms } => {
                assert_eq!(error, "rate limited");
                let in_ms = at_ms.saturating_sub(epoch_ms(SystemTime::now()));
                assert!((59_000..=60_000).contains(&in_ms), "got {in_ms} ms");
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }
}

//! The apalis backend: feeds one worker with jobs and records their outcomes.
//!
//! A [`QueueBackend`] owns one *consumer* of the queue's group, named
//! uniquely per backend. It keeps at most `concurrency` jobs taken at once:
//! each read asks Redis for exactly the free capacity, reserved before the
//! read so that the shards' parts, reading side by side, share it. A job
//! is held by a worker that cannot start it only when jobs land in several
//! empty lanes or shards at the same moment: each part's blocking read
//! gives its reservation back while it waits, so no shard waits on
//! another's. The blocking read runs on a
//! connection of its own (a blocked connection answers nothing else);
//! everything else shares the queue's multiplexed connection.
//!
//! Three background loops run beside each backend: the heartbeat (marks
//! the consumer live, renews the leases of its jobs, forgets dead
//! consumers), the promoter (moves due delayed jobs onto the stream), and
//! the recorder of outcomes kept through a Redis outage.
//!
//! [`QueueLayer`], installed by apalis as the backend's middleware, sees the
//! final outcome of every job and records it: success with the result,
//! a retry after a backoff, or failure for good.

mod layer;
mod loops;
mod outcome;
mod reader;
mod reclaim;
mod renewal;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::metadata::MetadataStore;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::task::AtomicWaker;
use redis::streams::StreamId;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use crate::shard::Shard;
use crate::{JobLease, Priority, QueueConfig, QueueError, RedisQueue, meta_keys};

pub use layer::{QueueLayer, QueueService};
use outcome::Outcome;
use reader::{Reader, fetch};

/// Most jobs one read asks for, whatever the free capacity.
const MAX_FETCH: usize = 100;

/// The entry with its name across lanes (`lua/lanes.lua`).
fn named(priority: Priority, mut entry: StreamId) -> StreamId {
    if priority != Priority::Normal {
        entry.id = format!("{}{}", priority.entry_prefix(), entry.id);
    }
    entry
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
    /// The shard this backend part reads.
    queue: Shard,
    /// This backend's consumer name in the group, unique per backend.
    consumer: Arc<str>,
    concurrency: usize,
    fetch_batch: usize,
    /// Jobs handed to the worker and not finished, over every shard's
    /// part of the backend (shared by them).
    active: Arc<AtomicUsize>,
    /// Places taken by reads under way and by jobs read but not yet handed
    /// to the worker, over every part (shared): with `active`, what the
    /// parts may not read past, so that shards read side by side do not
    /// take more than `concurrency` between them.
    reserved: Arc<AtomicUsize>,
    /// Non-blocking reads made: every [`crate::LOW_LANE_EVERY`]th serves
    /// the low lane first.
    reads: AtomicU64,
    /// Entries this consumer holds (handed out or buffered), by their name
    /// across lanes: the heartbeat renews their leases.
    held: Mutex<HashSet<String>>,
    /// Outcomes finished while Redis was unreachable, oldest first: their
    /// entries stay held (renewed) until the record loop writes them.
    unrecorded: Mutex<VecDeque<crate::finish::Finish>>,
    /// Woken when capacity frees up (shared by the parts).
    waker: Arc<AtomicWaker>,
    stopping: AtomicBool,
    /// `CLIENT ID` of the blocking-read connection (0: none), so shutdown
    /// can cut a blocked read short.
    reader_id: AtomicI64,
    /// Entries read (so pending for this consumer) whose start Redis
    /// refused for want of memory: started at the next read, not left to
    /// a reclaim a lease later.
    unstarted: std::sync::Mutex<Vec<redis::streams::StreamId>>,
}

impl Shared {
    fn cfg(&self) -> &QueueConfig {
        &self.queue.cfg
    }

    /// Gives back `n` reserved places, and wakes the worker to use them.
    fn unreserve(&self, n: usize) {
        if n == 0 {
            return;
        }
        let _ = self
            .reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
                Some(r.saturating_sub(n))
            });
        self.waker.wake();
    }

    fn hold(&self, entry: &str) {
        if let Ok(mut held) = self.held.lock() {
            held.insert(entry.to_owned());
        }
    }

    fn holds(&self, entry: &str) -> bool {
        self.held.lock().is_ok_and(|held| held.contains(entry))
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
}

/// The part of a [`QueueBackend`] that reads one shard.
struct ShardBackend<Args> {
    shared: Arc<Shared>,
    buffer: VecDeque<Started>,
    reader: Option<Reader>,
    fetching: Option<BoxFuture<'static, (Option<Reader>, Vec<Started>)>>,
    /// The places the read under way reserved.
    fetching_want: usize,
    loops: Vec<JoinHandle<()>>,
    closing: Option<BoxFuture<'static, ()>>,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> std::fmt::Debug for ShardBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardBackend")
            .field("queue", &self.shared.cfg().name)
            .field("consumer", &self.shared.consumer)
            .field("concurrency", &self.shared.concurrency)
            .finish()
    }
}

impl<Args> ShardBackend<Args> {
    fn new(
        queue: Shard,
        consumer: Arc<str>,
        concurrency: usize,
        active: Arc<AtomicUsize>,
        reserved: Arc<AtomicUsize>,
        waker: Arc<AtomicWaker>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue,
                consumer,
                concurrency,
                fetch_batch: concurrency.min(MAX_FETCH),
                active,
                reserved,
                reads: AtomicU64::new(0),
                held: Mutex::new(HashSet::new()),
                unrecorded: Mutex::new(VecDeque::new()),
                waker,
                stopping: AtomicBool::new(false),
                reader_id: AtomicI64::new(0),
                unstarted: std::sync::Mutex::new(Vec::new()),
            }),
            buffer: VecDeque::new(),
            reader: None,
            fetching: None,
            fetching_want: 0,
            loops: Vec::new(),
            closing: None,
            _args: PhantomData,
        }
    }

    fn start_loops(&mut self) {
        if self.loops.is_empty() {
            self.loops
                .push(tokio::spawn(renewal::heartbeat(self.shared.clone())));
            self.loops
                .push(tokio::spawn(loops::promote(self.shared.clone())));
            self.loops
                .push(tokio::spawn(loops::record(self.shared.clone())));
            self.loops
                .push(tokio::spawn(loops::sweep(self.shared.clone())));
        }
    }

    fn stop_loops(&mut self) {
        for handle in self.loops.drain(..) {
            handle.abort();
        }
    }
}

impl<Args: DeserializeOwned> ShardBackend<Args> {
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
                    if shared.finish(&job.lease, Outcome::Failed(error)).await {
                        shared.release(&job.lease.entry);
                    }
                });
                return None;
            }
        };
        let mut meta = MetadataStore::new();
        // Empty when the job was pushed without metadata.
        if !job.meta.is_empty() {
            match serde_json::from_str::<BTreeMap<String, String>>(&job.meta) {
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

impl<Args> Drop for ShardBackend<Args> {
    fn drop(&mut self) {
        // Without a clean close the jobs held stay pending and are
        // reclaimed by another worker once their lease runs out.
        self.stop_loops();
    }
}

impl<Args: DeserializeOwned + Send + 'static> ShardBackend<Args> {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Task<Args>, QueueError>>> {
        loop {
            if let Some(job) = self.buffer.pop_front() {
                let task = self.to_task(job);
                if task.is_some() {
                    // Counted active before the place is given back, so no
                    // other part sees it free meanwhile.
                    self.shared.active.fetch_add(1, Ordering::SeqCst);
                }
                self.shared.unreserve(1);
                if let Some(task) = task {
                    return Poll::Ready(Some(Ok(task)));
                }
                continue;
            }
            if self.fetching.is_none() {
                // Registered before the look, so a place freed in between
                // still wakes this task.
                self.shared.waker.register(cx.waker());
                let taken = self.shared.active.load(Ordering::SeqCst)
                    + self.shared.reserved.load(Ordering::SeqCst);
                let free = self.shared.concurrency.saturating_sub(taken);
                if free == 0 {
                    return Poll::Pending;
                }
                let want = free.min(self.shared.fetch_batch);
                self.shared.reserved.fetch_add(want, Ordering::SeqCst);
                self.fetching_want = want;
                self.fetching = Some(fetch(self.shared.clone(), self.reader.take(), want).boxed());
            }
            let Some(fetching) = self.fetching.as_mut() else {
                return Poll::Pending;
            };
            match fetching.poll_unpin(cx) {
                Poll::Ready((reader, jobs)) => {
                    self.reader = reader;
                    self.fetching = None;
                    // The jobs read keep their places until handed out;
                    // the rest of the reservation is given back.
                    self.shared.reserved.fetch_add(jobs.len(), Ordering::SeqCst);
                    self.shared
                        .unreserve(std::mem::take(&mut self.fetching_want));
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

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        if self.closing.is_none() {
            self.shared.stopping.store(true, Ordering::SeqCst);
            self.stop_loops();
            let fetching = self.fetching.take();
            let mut unstarted: Vec<Started> = self.buffer.drain(..).collect();
            self.shared.unreserve(unstarted.len());
            let shared = self.shared.clone();
            self.closing = Some(
                async move {
                    if let Some(fetching) = fetching {
                        // Cut the blocked read short rather than wait it out.
                        let id = shared.reader_id.load(Ordering::SeqCst);
                        if id != 0 {
                            let mut conn = shared.queue.conn.clone();
                            let _: Result<i64, QueueError> = conn
                                .query_at(
                                    &shared.queue.keys.stream,
                                    redis::cmd("CLIENT").arg("UNBLOCK").arg(id),
                                )
                                .await;
                        }
                        let limit = shared.cfg().block_timeout + Duration::from_secs(1);
                        if let Ok((_, jobs)) = tokio::time::timeout(limit, fetching).await {
                            unstarted.extend(jobs);
                        }
                    }
                    loops::record_before_leaving(&shared).await;
                    loops::leave(&shared, &unstarted).await;
                }
                .boxed(),
            );
        }
        match self.closing.as_mut() {
            Some(closing) => {
                let done = closing.poll_unpin(cx);
                if done.is_ready() {
                    // The backend may poll again while other parts close.
                    self.closing = Some(futures::future::ready(()).boxed());
                }
                done.map(Ok)
            }
            None => Poll::Ready(Ok(())),
        }
    }
}

/// The apalis backend of a [`RedisQueue`]: see the module docs. One part
/// per shard, read in turn, under one consumer name and one limit of
/// `concurrency` jobs at once.
pub struct QueueBackend<Args> {
    cfg: Arc<QueueConfig>,
    consumer: Arc<str>,
    concurrency: usize,
    active: Arc<AtomicUsize>,
    waker: Arc<AtomicWaker>,
    parts: Vec<ShardBackend<Args>>,
    /// The part to ask first next time, so no shard is starved.
    next: usize,
}

impl<Args> std::fmt::Debug for QueueBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBackend")
            .field("queue", &self.cfg.name)
            .field("consumer", &self.consumer)
            .field("concurrency", &self.concurrency)
            .field("shards", &self.parts.len())
            .finish()
    }
}

impl<Args> QueueBackend<Args> {
    pub(crate) fn new(queue: RedisQueue, concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let consumer: Arc<str> = format!("{host}-{}-{}", std::process::id(), &suffix[..8]).into();
        let active = Arc::new(AtomicUsize::new(0));
        let reserved = Arc::new(AtomicUsize::new(0));
        let waker = Arc::new(AtomicWaker::new());
        let parts = queue
            .shards()
            .iter()
            .map(|shard| {
                ShardBackend::new(
                    shard.clone(),
                    consumer.clone(),
                    concurrency,
                    active.clone(),
                    reserved.clone(),
                    waker.clone(),
                )
            })
            .collect();
        Self {
            cfg: Arc::new(queue.config().clone()),
            consumer,
            concurrency,
            active,
            waker,
            parts,
            next: 0,
        }
    }

    /// This backend's consumer name in the queue's group.
    pub fn consumer(&self) -> &str {
        &self.consumer
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
        for part in &mut self.parts {
            part.start_loops();
        }
        if self.active.load(Ordering::SeqCst) < self.concurrency {
            return Poll::Ready(Ok(()));
        }
        self.waker.register(cx.waker());
        // Re-check: a job may have finished between the load and register.
        if self.active.load(Ordering::SeqCst) < self.concurrency {
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
        let n = self.parts.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if let Poll::Ready(Some(item)) = self.parts[i].poll_next(cx) {
                self.next = (i + 1) % n;
                return Poll::Ready(Some(item));
            }
        }
        Poll::Pending
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        let mut closed = true;
        for part in &mut self.parts {
            match part.poll_close(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => closed = false,
            }
        }
        if closed {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl<Args> BackendConfig for QueueBackend<Args> {
    type Args = Args;
    type Id = String;
    type Kind = Ephemeral;
    type Config = QueueConfig;
    type Layer = QueueLayer;

    fn config(&self) -> &Self::Config {
        &self.cfg
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        QueueLayer {
            shards: self.parts.iter().map(|p| p.shared.clone()).collect(),
        }
    }
}

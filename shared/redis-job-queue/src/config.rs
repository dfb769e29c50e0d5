//! The settings of one queue.

use std::time::Duration;

/// Settings of one queue, shared by producers and workers.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Queue name, also the `messaging.destination.name` of its spans.
    pub name: String,
    /// Prefix of every Redis key, so several deployments can share a server.
    pub key_prefix: String,
    /// How long a worker may hold a job without renewing its lease before
    /// another worker may take the job over. Workers renew every third of it.
    pub lease: Duration,
    /// How long finished jobs (status and result) are kept.
    pub retention: Duration,
    /// Attempts a job gets before it is failed for good (counting runs cut
    /// short by a crashed worker). A job pushed with its own value keeps it.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled on each further attempt.
    pub retry_backoff: Duration,
    /// Ceiling of the retry delay.
    pub retry_backoff_max: Duration,
    /// Longest an attempt may run before it is cut short and counts as
    /// failed (retried by the policy); `None`: no limit. A job pushed with
    /// its own value keeps it.
    pub job_timeout: Option<Duration>,
    /// The most a job may be deferred in all ([`crate::Defer`]: a run
    /// that could not even try, which does not count as an attempt). Past
    /// it a deferral counts as a failed attempt.
    pub max_defer: Duration,
    /// Most events each shard's outbox holds (see `outbox.rs`); a
    /// success that finds it full drops its event, counted.
    pub outbox_max: u64,
    /// Longest a worker's read waits on Redis before it looks for expired
    /// leases to reclaim. New jobs wake it at once whatever this is.
    pub block_timeout: Duration,
    /// Most delayed jobs promoted by one script call.
    pub promote_batch: usize,
    /// Longest a worker sleeps between two looks at the delayed set; it
    /// sleeps less when the next delayed job is due sooner.
    pub promote_interval: Duration,
    /// How long an idempotency key is remembered ([`crate::NewJob::idempotency`]).
    pub idempotency_window: Duration,
    /// Root certificates (PEM) trusted for a `rediss://` server, in place
    /// of the system's: for a server whose certificate a private CA signed.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Replicas a push must reach before it is acknowledged (`WAIT`); 0:
    /// acknowledged once the master has it. Redis replicates
    /// asynchronously: a master that fails right after acknowledging a
    /// push may take it with it, unless a replica had it first.
    pub wait_replicas: u32,
    /// Longest a push waits for [`Self::wait_replicas`] replicas; past it
    /// the push is reported as not replicated ([`QueueError::NotReplicated`]).
    ///
    /// [`QueueError::NotReplicated`]: crate::QueueError::NotReplicated
    pub wait_timeout: Duration,
    /// How many shards the queue is split into, each under a hash tag of
    /// its own (1 to [`crate::MAX_SHARDS`]; 1 keeps the one-tag layout).
    /// On a Redis Cluster, N shards spread one queue over N masters.
    pub shards: u16,
}

impl QueueConfig {
    /// Settings with the defaults for a queue named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            key_prefix: "jobs".into(),
            lease: Duration::from_secs(30),
            retention: Duration::from_secs(3600),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(300),
            job_timeout: None,
            max_defer: Duration::from_secs(3600),
            outbox_max: 100_000,
            block_timeout: Duration::from_secs(2),
            promote_batch: 500,
            promote_interval: Duration::from_millis(250),
            idempotency_window: Duration::from_secs(24 * 3600),
            tls_ca_pem: None,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            shards: 1,
        }
    }
}

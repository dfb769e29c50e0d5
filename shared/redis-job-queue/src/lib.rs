//! A reliable job queue on Redis Streams, with an [apalis] backend.
//!
//! Producers push jobs (JSON arguments plus a string map of metadata, such
//! as a trace context); workers run them through apalis with at-least-once
//! delivery, leases that are renewed while a job runs, reclaim of jobs whose
//! worker died, retries with exponential backoff, delayed jobs, and memory
//! that stays bounded however many jobs have run. The queue knows nothing of
//! what the jobs do; it needs Redis 6.2 or newer.
//!
//! [apalis]: https://crates.io/crates/apalis
//!
//! # Use
//!
//! ```no_run
//! use apalis_core::error::BoxDynError;
//! use apalis_core::task::data::Data;
//! use apalis_core::worker::builder::WorkerBuilder;
//! use redis_job_queue::{JobLease, NewJob, QueueConfig, RedisQueue};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Resize { image: String }
//!
//! async fn resize(job: Resize, lease: Data<JobLease>) -> Result<String, BoxDynError> {
//!     Ok(format!("{} resized on attempt {}", job.image, lease.attempt))
//! }
//!
//! # async fn run() -> Result<(), BoxDynError> {
//! let queue = RedisQueue::connect("redis://127.0.0.1/", QueueConfig::new("images")).await?;
//! let id = queue.push(NewJob::new(&Resize { image: "cat.png".into() })?).await?;
//!
//! WorkerBuilder::new("resizer")
//!     .backend(queue.backend::<Resize>(8)) // at most 8 jobs at once
//!     .build(resize)
//!     .run()
//!     .await?;
//! let record = queue.status(&id).await?; // status, attempts, result or error
//! # Ok(()) }
//! ```
//!
//! The handler's `Ok` value is stored as the job's result (JSON). An error
//! schedules a retry after [`QueueConfig::retry_backoff`] (doubled per
//! attempt) until [`QueueConfig::max_attempts`];
//! `apalis_core::error::AbortError` fails the job at once and
//! `apalis_core::error::RetryAfterError` retries after the delay it gives.
//! The metadata pushed with a job comes back in the task's
//! `MetadataStore`, with the attempt number and enqueue time added
//! ([`meta_keys`]); [`JobLease`], in the task's data, says which job and
//! attempt a task is. Services that show jobs read a record's trace with
//! [`JobRecord::trace_id`], write its times with [`rfc3339_ms`], and look
//! up only ids that pass [`plausible_id`], so each reads them one way.
//!
//! `examples/traced_job.rs` runs a job whose trace crosses the queue, with
//! the `telemetry` crate's producer span and consumer layer;
//! `benches/queue.rs` measures this queue against apalis-redis.
//!
//! # Design
//!
//! Each queue is a Redis **Stream** read through one **consumer group**,
//! plus a few small side structures. All keys of a queue share the hash tag
//! `{queue}` so the queue also lives on one slot of a Redis Cluster.
//!
//! | key                         | type   | holds                                         |
//! |-----------------------------|--------|-----------------------------------------------|
//! | `{prefix}:{q}:job:{id}`     | hash   | payload, metadata, status, attempts, result   |
//! | `{prefix}:{q}:stream`       | stream | one entry `id={job id}` per runnable job       |
//! | `{prefix}:{q}:stream:high`  | stream | the same, for jobs of high priority           |
//! | `{prefix}:{q}:stream:low`   | stream | the same, for jobs of low priority            |
//! | `{prefix}:{q}:delayed`      | zset   | job ids scored by the time they may run (ms)  |
//! | `{prefix}:{q}:failed`       | zset   | failed job ids scored by failure time         |
//! | `{prefix}:{q}:succeeded`    | zset   | succeeded job ids scored by finish time       |
//! | `{prefix}:{q}:consumers`    | zset   | live consumers scored by last heartbeat       |
//! | `{prefix}:{q}:stats`        | hash   | lifetime counters                             |
//! | `{prefix}:{q}:paused`       | string | while paused: since when (epoch ms)           |
//! | `{prefix}:{q}:index`        | zset   | every job, `{queued ms}:{id}` (searches)      |
//! | `{prefix}:{q}:index:sweep`  | string | where the sweep of the index stopped          |
//! | `{prefix}:{q}:bulk:{id}`    | hash   | a bulk action's filter and progress (expires) |
//! | `{prefix}:{q}:idem:{key}`   | string | an idempotency key's fingerprint (expires)    |
//! | `{prefix}:{q}:batch:{id}`   | list   | the ids of a batch's jobs (expires with them) |
//! | `{prefix}:{q}:outbox`       | stream | events of succeeded jobs, until relayed       |
//! | `{prefix}:{q}:outbox:relay` | string | the relay holding the outbox's lease          |
//! | `{prefix}:{q}:scheduler`    | string | the worker holding the scheduler's lease      |
//! | `{prefix}:{q}:schedules`    | hash   | each schedule's cron, place, last and next run |
//!
//! Why Streams rather than lists (`BLMOVE`) or sorted sets:
//! - `XREADGROUP BLOCK` wakes a waiting worker the moment `XADD` lands, so
//!   pickup has no polling delay, and `COUNT n` fetches a batch in one trip.
//! - The group's pending-entries list records which consumer holds which
//!   job and for how long; `XAUTOCLAIM` hands jobs whose lease ran out to a
//!   live worker. Lists would need a processing list per worker and a
//!   scan of every such list to find orphans.
//! - Streams keep the ids in insertion order at O(1) per entry, and an
//!   acknowledged entry is deleted (`XACK` + `XDEL`), so the stream only
//!   ever holds waiting and in-flight jobs.
//!
//! The stream entry carries only the job id; the job hash is the single
//! source of truth. Every multi-step change is one Lua script (`lua/`), and
//! each script's work is bounded by the batch it is given, never by the
//! length of the queue: delayed jobs are promoted at most
//! [`QueueConfig::promote_batch`] at a time, and leases are renewed only for
//! the calling consumer's own jobs.
//!
//! **Priorities.** Each [`Priority`] is a lane with a stream of its own,
//! all read by the one group. A worker's non-blocking read takes the high
//! lane, then the normal one, then the low one, so a waiting high job
//! starts before any waiting normal job. So that low jobs never starve,
//! one read in [`LOW_LANE_EVERY`] of each worker takes the low lane first:
//! under a flood of high and normal jobs, low ones still get that share of
//! the reads. An idle worker blocks on all three lanes at once. Outside
//! the scripts an entry is named with its lane in front (`h:`, `l:`).
//!
//! Finished jobs (succeeded or failed) get a TTL of
//! [`QueueConfig::retention`], so memory is bounded by the throughput times
//! the retention, whatever the total number of jobs run. The failed index
//! is trimmed to the same retention.
//!
//! Delivery is at-least-once: a worker that dies leaves its entries pending;
//! once they have been idle longer than [`QueueConfig::lease`] another
//! worker claims them and runs them again with the attempt number
//! incremented. Each attempt number acts as a fencing token: a worker whose
//! lease was taken over cannot overwrite the newer attempt's outcome.
//! An outcome Redis cannot take (it is down) stays in the worker, with its
//! lease, and is written when Redis is back; so does the fence make a
//! late write safe. Every time is the Redis server's (`TIME` inside the
//! scripts): callers pass durations, so host clocks never disagree.
//!
//! A run that could not even try returns [`Defer`]: the job waits for the
//! delay given with its attempt number given back, up to
//! [`QueueConfig::max_defer`] in all. An attempt may attach an event
//! ([`JobLease::publish_on_success`]): the script that records the success
//! writes it to the outbox stream, for a relay to send on (`outbox.rs`).
//!
//! Pushes made at the same moment by concurrent callers, and the outcomes
//! of jobs finishing together, are group-committed: they share one script
//! call. A graceful stop lets running jobs finish, cuts a blocked read
//! short with `CLIENT UNBLOCK`, hands back the jobs taken but not started,
//! and leaves the group.

mod admin;
mod backend;
mod batch;
mod bulk;
mod config;
mod connection;
mod defer;
mod error;
mod eviction;
mod finish;
mod format;
mod inspect;
mod job;
mod keys;
mod lease;
mod listing;
mod outbox;
mod push;
mod push_call;
mod queue;
mod reshard;
mod scripts;
mod search;
mod shard;
mod shards;
pub mod topology;

pub use backend::{QueueBackend, QueueLayer, QueueService};
pub use bulk::{BulkAction, BulkRun, BulkState, Deleted};
pub use config::QueueConfig;
pub use connection::{FAILOVER_WAIT, RedisConnection, RedisTarget, ServerAddress, slot};
pub use defer::Defer;
pub use error::{JobTimedOut, QueueError};
pub use eviction::{EVICTION_WATCH_EVERY, NodePolicy, SAFE_POLICY};
pub use format::{plausible_id, rfc3339_ms};
pub use job::{
    Cancelled, ConsumerInfo, JobPage, JobRecord, JobStatus, LOW_LANE_EVERY, MAX_DELAY, NewJob,
    Priority, Pushed, QueueStats, Redriven, TRACEPARENT,
};
pub use keys::ScheduleKeys;
pub use lease::{JobLease, meta_keys};
pub use outbox::{OutboxEntry, OutboxEvent, OutboxStats};
pub use queue::{RedisQueue, ShardInfo, connect_with_retry, shard_of};
pub use search::{GeoBox, JobQuery, Order, SCAN_BUDGET, TextPrefix};
pub use shards::{MAX_SHARDS, shard_tags};
pub use topology::{Answered, RedirectKind, TopologyEvent};

//! The Redis keys of one queue (the table in the crate docs).

use crate::QueueConfig;
use crate::job::Priority;

/// The name of every queue's consumer group
/// (`messaging.consumer.group.name`).
pub(crate) const CONSUMER_GROUP: &str = "workers";

/// Redis keys of one queue.
#[derive(Debug)]
pub(crate) struct Keys {
    /// The shard's hash tag (without braces).
    pub(crate) tag: String,
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
    /// Set while the queue is paused (its value: since when, epoch ms).
    pub(crate) paused: String,
    /// Every job of the shard by the time it was queued, for searches:
    /// a sorted set, every score 0, members `{ms, 15 digits}:{id}`.
    pub(crate) index: String,
    /// Where the sweep of the index stopped (a member), to go on from.
    pub(crate) index_sweep: String,
    /// The events of succeeded jobs waiting for the relay (a stream; see
    /// `outbox.rs`).
    pub(crate) outbox: String,
    /// The relay's lease (not per shard: in the queue's own tag).
    pub(crate) relay_lease: String,
    /// Prefix of the bulk actions' records (not per shard: in the queue's
    /// own tag); the action's id is appended.
    pub(crate) bulk_prefix: String,
    /// Prefix of the job hashes; the job id is appended.
    pub(crate) job_prefix: String,
    /// Prefix of the idempotency keys; the caller's key is appended.
    pub(crate) idem_prefix: String,
    /// Prefix of the batch indexes; the batch id is appended.
    pub(crate) batch_prefix: String,
    pub(crate) group: String,
    /// The scheduler's keys (kept by the workers' scheduler, read by the
    /// console).
    pub(crate) schedules: ScheduleKeys,
}

/// The Redis keys of a queue's schedules: in the queue's hash tag, beside
/// its other keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleKeys {
    /// A string: the worker that holds the scheduler's lease (it alone
    /// fires the runs), with a TTL.
    pub lease: String,
    /// A hash of each schedule's state, `{name}:{field}` for the fields
    /// `cron`, `city`, `last`, `next` and `definition`.
    pub state: String,
}

impl Keys {
    /// The keys of the shard of `cfg`'s queue under hash tag `tag` (the
    /// queue's name when it has one shard).
    pub(crate) fn new(cfg: &QueueConfig, tag: &str) -> Self {
        let base = format!("{}:{{{tag}}}", cfg.key_prefix);
        // Not per shard: in the queue's own tag.
        let queue = format!("{}:{{{}}}", cfg.key_prefix, cfg.name);
        Self {
            tag: tag.to_owned(),
            stream: format!("{base}:stream"),
            stream_high: format!("{base}:stream:high"),
            stream_low: format!("{base}:stream:low"),
            delayed: format!("{base}:delayed"),
            failed: format!("{base}:failed"),
            succeeded: format!("{base}:succeeded"),
            consumers: format!("{base}:consumers"),
            stats: format!("{base}:stats"),
            paused: format!("{base}:paused"),
            index: format!("{base}:index"),
            index_sweep: format!("{base}:index:sweep"),
            outbox: format!("{base}:outbox"),
            relay_lease: format!("{queue}:outbox:relay"),
            bulk_prefix: format!("{queue}:bulk:"),
            job_prefix: format!("{base}:job:"),
            idem_prefix: format!("{base}:idem:"),
            batch_prefix: format!("{base}:batch:"),
            group: CONSUMER_GROUP.into(),
            schedules: ScheduleKeys {
                lease: format!("{queue}:scheduler"),
                state: format!("{queue}:schedules"),
            },
        }
    }

    /// The hash of job `id`.
    pub(crate) fn job(&self, id: &str) -> String {
        format!("{}{id}", self.job_prefix)
    }

    /// The idempotency key `key`'s fingerprint.
    pub(crate) fn idempotency(&self, key: &str) -> String {
        format!("{}{key}", self.idem_prefix)
    }

    /// The index of batch `id`'s jobs.
    pub(crate) fn batch(&self, id: &str) -> String {
        format!("{}{id}", self.batch_prefix)
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

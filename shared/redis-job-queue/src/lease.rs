//! Which job and which attempt a task is.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Metadata keys the backend adds to every task it hands out, beside the
/// metadata pushed with the job.
pub mod meta_keys {
    /// The attempt number, from 1.
    pub const ATTEMPT: &str = "job.attempt";
    /// When the job was pushed, in ms since the Unix epoch (server clock).
    pub const ENQUEUED_AT_MS: &str = "job.enqueued_at_ms";
}

/// Which job and which attempt a task is: attached to every task the
/// backend hands out (read it with `task.data().get::<JobLease>()`, or take
/// `Data<JobLease>` in a handler).
#[derive(Debug, Clone)]
pub struct JobLease {
    /// The job's id.
    pub id: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed (0: no limit).
    pub max_attempts: u32,
    /// When the job was pushed, in ms since the Unix epoch (server clock).
    pub enqueued_at_ms: u64,
    /// When this attempt started, in ms since the Unix epoch (server
    /// clock, like `enqueued_at_ms`).
    pub started_at_ms: u64,
    /// Longest this attempt may run (the job's own limit, else the
    /// queue's); `None`: no limit.
    pub timeout: Option<Duration>,
    /// How long the job was deferred so far, all deferrals together (see
    /// [`crate::Defer`]).
    pub deferred: Duration,
    /// The most a job may be deferred in all (the queue's
    /// [`crate::QueueConfig::max_defer`]).
    pub(crate) max_defer: Duration,
    /// Set once this attempt was cut short by its timeout (shared by the
    /// clones of this lease), so layers inside can tell.
    pub(crate) timed_out: Arc<AtomicBool>,
    /// The stream entry that delivered it.
    pub(crate) entry: String,
    /// The batch the job belongs to, if any.
    pub(crate) batch: Option<String>,
    /// The shard it was read from.
    pub(crate) shard: usize,
    /// Metadata to merge into the job for its next attempt, if it is
    /// retried (shared by the clones of this lease).
    pub(crate) carry: Arc<Mutex<BTreeMap<String, String>>>,
    /// The failed attempt's error type, as a layer named it.
    pub(crate) error_type: Arc<Mutex<Option<String>>>,
    /// The event to publish if this attempt succeeds (shared by the
    /// clones of this lease).
    pub(crate) event: Arc<Mutex<Option<crate::OutboxEvent>>>,
}

impl JobLease {
    pub(crate) fn new(
        entry: String,
        id: String,
        attempt: u32,
        max_attempts: u32,
        enqueued_at_ms: u64,
        started_at_ms: u64,
    ) -> Self {
        Self {
            id,
            attempt,
            max_attempts,
            enqueued_at_ms,
            started_at_ms,
            timeout: None,
            deferred: Duration::ZERO,
            max_defer: Duration::ZERO,
            timed_out: Arc::default(),
            entry,
            batch: None,
            shard: 0,
            carry: Arc::default(),
            error_type: Arc::default(),
            event: Arc::default(),
        }
    }

    /// The lane the job waited in.
    pub fn priority(&self) -> crate::Priority {
        crate::Priority::of_entry(&self.entry)
    }

    /// Whether this attempt was cut short by its timeout. Layers inside
    /// the backend's see their future dropped; this tells them why.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    /// How long the job waited from its push to this attempt's start
    /// (across every attempt so far). Both times are the Redis server's,
    /// so a worker whose clock is off still measures it right.
    pub fn queue_wait(&self) -> Duration {
        Duration::from_millis(self.started_at_ms.saturating_sub(self.enqueued_at_ms))
    }

    /// Whether a [`crate::Defer`] of `delay` would defer the job (not count
    /// the attempt): only while the job's deferrals, this one included,
    /// stay within the queue's maximum. Past it the refusal counts as a
    /// failed attempt.
    pub fn may_defer(&self, delay: Duration) -> bool {
        self.deferred
            .saturating_add(delay.max(crate::defer::MIN_DEFER))
            <= self.max_defer
    }

    /// Adds `key = value` to the job's metadata if this attempt fails and
    /// the job is retried: the next attempt sees it. Tracing uses it to
    /// link each attempt's span to the previous one.
    pub fn carry_to_next_attempt(&self, key: impl Into<String>, value: impl Into<String>) {
        if let Ok(mut carry) = self.carry.lock() {
            carry.insert(key.into(), value.into());
        }
    }

    /// Publishes `event` if this attempt succeeds: the script that records
    /// the success puts it in the queue's outbox in the same step, for
    /// the relay to send on (see `outbox.rs`). A later call replaces it.
    pub fn publish_on_success(&self, event: crate::OutboxEvent) {
        if let Ok(mut slot) = self.event.lock() {
            *slot = Some(event);
        }
    }

    pub(crate) fn event(&self) -> Option<crate::OutboxEvent> {
        self.event.lock().ok().and_then(|e| e.clone())
    }

    /// Names the type of this attempt's error (low cardinality, as
    /// `error.type` on spans): stored with the job if the attempt fails,
    /// so failed jobs can be re-driven by type.
    pub fn set_error_type(&self, error_type: impl Into<String>) {
        if let Ok(mut t) = self.error_type.lock() {
            *t = Some(error_type.into());
        }
    }

    pub(crate) fn error_type(&self) -> Option<String> {
        self.error_type.lock().ok().and_then(|t| t.clone())
    }

    /// What to carry over, as the finish script takes it (JSON, or empty).
    pub(crate) fn carried_json(&self) -> String {
        match self.carry.lock() {
            Ok(carry) if !carry.is_empty() => serde_json::to_string(&*carry).unwrap_or_default(),
            _ => String::new(),
        }
    }
}

//! What goes into the queue and what can be read back out of it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::QueueError;

/// The longest delay a job or a retry can be given: 100 years. Longer is
/// a mistake (a careless `Duration::MAX`), refused rather than stored.
pub const MAX_DELAY: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The metadata key of a job's W3C trace context ([`JobRecord::trace_id`]).
pub const TRACEPARENT: &str = "traceparent";

/// A job about to be pushed: its id, JSON arguments and metadata.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub(crate) id: String,
    pub(crate) payload: String,
    pub(crate) metadata: BTreeMap<String, String>,
    /// How long after the push the job may run. A delay, not an instant:
    /// the push script adds it to the Redis server's clock, the one clock
    /// every time in the queue is read on.
    pub(crate) delay: Option<Duration>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    /// Idempotency key and the fingerprint of what was asked.
    pub(crate) idempotency: Option<(String, String)>,
    pub(crate) priority: Priority,
    /// The batch it was pushed with, if any.
    pub(crate) batch: Option<String>,
    /// Its place in the batch (set by [`crate::RedisQueue::push_batch`]):
    /// a batch's jobs are listed in this order across shards.
    pub(crate) batch_position: u32,
}

/// Which lane a job waits in. A waiting high job starts before any waiting
/// normal one, and a normal one before a low one; but at least one read
/// in [`LOW_LANE_EVERY`] of every worker serves the low lane first, so
/// low jobs keep moving under a flood of the others.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Before everything waiting in the other lanes.
    High,
    /// The default lane.
    #[default]
    Normal,
    /// After the other lanes, except on its share of reads.
    Low,
}

/// One read in this many serves the low lane first (per worker).
pub const LOW_LANE_EVERY: u64 = 8;

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Self; 3] = [Self::High, Self::Normal, Self::Low];

    /// The priority named `s` (as [`Self::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// `high`, `normal` or `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    /// As the scripts store it: nothing for the default lane.
    pub(crate) fn stored(self) -> &'static str {
        match self {
            Self::Normal => "",
            other => other.as_str(),
        }
    }

    /// The lane an entry name points into (see `lua/lanes.lua`).
    pub(crate) fn of_entry(entry: &str) -> Self {
        if entry.starts_with("h:") {
            Self::High
        } else if entry.starts_with("l:") {
            Self::Low
        } else {
            Self::Normal
        }
    }

    /// What an entry name in this lane starts with.
    pub(crate) fn entry_prefix(self) -> &'static str {
        match self {
            Self::High => "h:",
            Self::Normal => "",
            Self::Low => "l:",
        }
    }
}

impl NewJob {
    /// A job carrying `args` as JSON, with a fresh time-ordered id.
    pub fn new<T: Serialize>(args: &T) -> Result<Self, QueueError> {
        let payload = serde_json::to_string(args).map_err(QueueError::Encode)?;
        Ok(Self {
            id: uuid::Uuid::now_v7().to_string(),
            payload,
            metadata: BTreeMap::new(),
            delay: None,
            max_attempts: None,
            timeout: None,
            idempotency: None,
            priority: Priority::Normal,
            batch: None,
            batch_position: 0,
        })
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Uses `id` instead of a generated id. Pushing a second job with the
    /// same id is refused while the first one's record exists.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Adds one metadata entry (a trace carrier header, say). Metadata
    /// travels with the job and is handed to the worker unchanged.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds many metadata entries.
    pub fn with_metadata_map<K, V>(mut self, entries: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.metadata
            .extend(entries.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Runs the job no earlier than `at`, by this host's clock: it is
    /// turned into a delay from now (none when `at` has passed), which the
    /// queue counts on the Redis server's clock.
    pub fn run_at(self, at: SystemTime) -> Self {
        let delay = at.duration_since(SystemTime::now()).unwrap_or_default();
        self.run_after(delay)
    }

    /// Runs the job no earlier than `delay` after it is pushed. A delay
    /// over [`MAX_DELAY`] makes the push refuse the job.
    pub fn run_after(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Whether the job can be pushed as it is.
    pub(crate) fn check(&self) -> Result<(), QueueError> {
        match self.delay {
            Some(delay) if delay > MAX_DELAY => Err(QueueError::Invalid(format!(
                "job {}: run_after({delay:?}) is over the longest delay, {} days",
                self.id,
                MAX_DELAY.as_secs() / 86_400
            ))),
            _ => Ok(()),
        }
    }

    /// How long after the push the job may run, if delayed (by a
    /// millisecond or more: the queue's clock counts whole ones).
    pub fn delay(&self) -> Option<Duration> {
        self.delay.filter(|d| d.as_millis() >= 1)
    }

    /// The delay in ms as the push script takes it (0: run now).
    pub(crate) fn delay_ms(&self) -> u64 {
        self.delay.map_or(0, |d| d.as_millis() as u64)
    }

    /// Gives this job its own run-time limit per attempt instead of the
    /// queue's [`crate::QueueConfig::job_timeout`].
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Makes the push idempotent: a second push with the same `key` within
    /// [`crate::QueueConfig::idempotency_window`] enqueues nothing and
    /// answers [`Pushed::Repeat`] when its `fingerprint` (a digest of what
    /// was asked) matches, or fails with
    /// [`QueueError::IdempotencyConflict`] when it does not. Give such a
    /// job an id derived from the key, so a repeat names the same job.
    pub fn idempotency(mut self, key: impl Into<String>, fingerprint: impl Into<String>) -> Self {
        self.idempotency = Some((key.into(), fingerprint.into()));
        self
    }

    /// Puts the job in the lane of `priority` (normal unless given). A
    /// retry or a re-drive goes back to the same lane.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// The lane the job waits in.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Lists the job in batch `id`, so [`crate::RedisQueue::batch`] reads
    /// the jobs of a batch together.
    pub fn in_batch(mut self, id: impl Into<String>) -> Self {
        self.batch = Some(id.into());
        self
    }

    /// The batch the job is listed in.
    pub fn batch(&self) -> Option<&str> {
        self.batch.as_deref()
    }

    /// Gives this job its own attempt budget instead of the queue's.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// The metadata as stored: a JSON object, or nothing when empty.
    pub(crate) fn metadata_json(&self) -> String {
        if self.metadata.is_empty() {
            return String::new();
        }
        // A map of strings always serialises.
        serde_json::to_string(&self.metadata).unwrap_or_default()
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its run time: delayed, or waiting to be retried.
    Scheduled,
    /// Waiting for a worker.
    Queued,
    /// A worker is running it.
    Running,
    /// Done; the result is stored.
    Succeeded,
    /// Given up on; the error is stored.
    Failed,
    /// Cancelled before it ran.
    Cancelled,
}

impl JobStatus {
    /// Every status, in the order of a job's life.
    pub const ALL: [Self; 6] = [
        Self::Scheduled,
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The status named `s` (as [`Self::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// The status as stored and shown (`queued`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether a job with this status is done for good.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// The job was enqueued under this id.
    New(String),
    /// A job was pushed with the same idempotency key and the same
    /// fingerprint within the window: that job (this id) stands, and
    /// nothing was enqueued.
    Repeat(String),
}

impl Pushed {
    /// The job's id.
    pub fn id(&self) -> &str {
        match self {
            Self::New(id) | Self::Repeat(id) => id,
        }
    }
}

/// What cancelling a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It was scheduled or queued, and will not run.
    Yes,
    /// It has started or finished (or was cancelled before): it stays as
    /// it is.
    TooLate(JobStatus),
    /// No such job (or its record expired).
    Unknown,
}

/// Everything the queue knows about one job. Times are milliseconds since
/// the Unix epoch, on the Redis server's clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    /// The job's id.
    pub id: String,
    /// Where the job is.
    pub status: JobStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The job's arguments.
    pub payload: serde_json::Value,
    /// Metadata pushed with the job (trace carrier and the like).
    pub metadata: BTreeMap<String, String>,
    /// When it was pushed.
    pub enqueued_at_ms: u64,
    /// When it may (next) run, for delayed jobs and retries.
    pub run_at_ms: Option<u64>,
    /// When its latest attempt started.
    pub started_at_ms: Option<u64>,
    /// When it succeeded or failed for good.
    pub finished_at_ms: Option<u64>,
    /// Consumer that ran (or runs) its latest attempt.
    pub worker: Option<String>,
    /// The handler's result, once succeeded.
    pub result: Option<serde_json::Value>,
    /// The latest error: final once failed, the last attempt's while
    /// scheduled for a retry.
    pub error: Option<String>,
    /// The latest error's type (`error.type`), when a layer named it.
    pub error_type: Option<String>,
    /// The lane it waits in.
    pub priority: Priority,
    /// The batch it was pushed with, if any.
    pub batch: Option<String>,
    /// Its place in that batch, from 0.
    pub batch_position: u32,
    /// Times it was deferred (a run that could not even try, which did
    /// not count as an attempt: see [`crate::Defer`]).
    pub deferrals: u32,
    /// How long it was deferred, all deferrals together.
    pub deferred_ms: u64,
    /// Why it was last deferred.
    pub deferred_reason: Option<String>,
}

/// One page of jobs with a status ([`crate::RedisQueue::list`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobPage {
    /// The jobs, in the status's order.
    pub jobs: Vec<JobRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What a bulk re-drive did ([`crate::RedisQueue::redrive_failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Redriven {
    /// Failed jobs that run again.
    pub redriven: u64,
    /// Whether failed jobs were left unexamined: call again for more.
    pub more: bool,
}

impl JobRecord {
    /// Whether the job is done for good (succeeded, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        self.status.is_final()
    }

    /// The trace the job continues: the trace id in the W3C `traceparent`
    /// of its metadata (`00-{trace id}-{span id}-{flags}`), as a traced
    /// producer writes it. `None` when the job carries none.
    pub fn trace_id(&self) -> Option<&str> {
        self.metadata.get(TRACEPARENT)?.split('-').nth(1)
    }

    pub(crate) fn from_hash(id: &str, mut f: BTreeMap<String, String>) -> Result<Self, QueueError> {
        let corrupt = |reason: String| QueueError::Corrupt {
            id: id.to_owned(),
            reason,
        };
        let status = f.get("status").map(String::as_str).unwrap_or_default();
        let status = JobStatus::parse(status)
            .ok_or_else(|| corrupt(format!("unknown status {status:?}")))?;
        let num = |f: &BTreeMap<String, String>, name: &str| -> Result<Option<u64>, QueueError> {
            f.get(name)
                .map(|v| v.parse::<u64>())
                .transpose()
                .map_err(|e| corrupt(format!("field {name}: {e}")))
        };
        let json = |v: String, name: &str| {
            serde_json::from_str::<serde_json::Value>(&v)
                .map_err(|e| corrupt(format!("field {name}: {e}")))
        };
        let priority = match f.remove("priority") {
            None => Priority::Normal,
            Some(p) => {
                Priority::parse(&p).ok_or_else(|| corrupt(format!("unknown priority {p:?}")))?
            }
        };
        let metadata = match f.remove("meta").filter(|m| !m.is_empty()) {
            Some(m) => serde_json::from_str(&m).map_err(|e| corrupt(format!("field meta: {e}")))?,
            None => BTreeMap::new(),
        };
        Ok(Self {
            id: id.to_owned(),
            status,
            attempts: num(&f, "attempts")?.unwrap_or(0) as u32,
            max_attempts: num(&f, "max_attempts")?.unwrap_or(0) as u32,
            enqueued_at_ms: num(&f, "enqueued_at")?.unwrap_or(0),
            run_at_ms: num(&f, "run_at")?,
            started_at_ms: num(&f, "started_at")?,
            finished_at_ms: num(&f, "finished_at")?,
            payload: f
                .remove("payload")
                .map(|p| json(p, "payload"))
                .transpose()?
                .unwrap_or_default(),
            result: f.remove("result").map(|r| json(r, "result")).transpose()?,
            error: f.remove("error"),
            error_type: f.remove("error_type"),
            worker: f.remove("worker"),
            metadata,
            priority,
            batch: f.remove("batch"),
            batch_position: num(&f, "batch_pos")?.unwrap_or(0) as u32,
            deferrals: num(&f, "deferrals")?.unwrap_or(0) as u32,
            deferred_ms: num(&f, "deferred_ms")?.unwrap_or(0),
            deferred_reason: f.remove("deferred_reason"),
        })
    }
}

/// One consumer of a queue (a worker's backend), as the queue sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerInfo {
    /// Its name in the group (`{host}-{pid}-{random}`).
    pub name: String,
    /// Milliseconds since its last heartbeat (Redis clock against ours).
    pub heartbeat_age_ms: u64,
    /// Whether it heart-beat within the lease.
    pub live: bool,
    /// Jobs it holds (running, or taken and about to run).
    pub in_flight: u64,
}

/// A snapshot of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Runnable jobs no worker has taken yet (the queue depth), in every
    /// lane.
    pub waiting: u64,
    /// Of those, the ones in the high lane.
    pub waiting_high: u64,
    /// Of those, the ones in the low lane.
    pub waiting_low: u64,
    /// Jobs taken by a worker and not finished.
    pub in_flight: u64,
    /// Jobs waiting for their run time or for a retry.
    pub delayed: u64,
    /// Jobs failed for good within the retention window.
    pub failed: u64,
    /// Consumers whose heartbeat is younger than the lease.
    pub live_consumers: u64,
    /// Jobs ever pushed.
    pub enqueued_total: u64,
    /// Jobs ever succeeded.
    pub succeeded_total: u64,
    /// Jobs ever failed for good.
    pub failed_total: u64,
    /// Attempts that failed and were scheduled again.
    pub retried_total: u64,
    /// Runs deferred without counting as an attempt ([`crate::Defer`]).
    pub deferred_total: u64,
    /// Whether the queue is paused: no worker starts a job of it.
    pub paused: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(fields: &[(&str, &str)]) -> BTreeMap<String, String> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_finished_record_parses_with_defaults_for_missing_fields() {
        let rec = JobRecord::from_hash(
            "j1",
            hash(&[
                ("status", "succeeded"),
                ("payload", r#"{"city":"Oslo"}"#),
                ("max_attempts", "3"),
                ("attempts", "1"),
                ("enqueued_at", "1000"),
                ("started_at", "1005"),
                ("finished_at", "1010"),
                ("result", "42"),
                ("worker", "host-1-abc"),
            ]),
        )
        .expect("parses");
        assert_eq!(rec.status, JobStatus::Succeeded);
        assert_eq!((rec.attempts, rec.max_attempts), (1, 3));
        assert_eq!(rec.result, Some(serde_json::json!(42)));
        assert_eq!(rec.payload, serde_json::json!({ "city": "Oslo" }));
        assert!(rec.metadata.is_empty());
        assert_eq!(rec.run_at_ms, None);
        assert_eq!(rec.finished_at_ms, Some(1010));
    }

    #[test]
    fn a_malformed_record_is_an_error_naming_the_field() {
        let err =
            JobRecord::from_hash("j2", hash(&[("status", "sleeping")])).expect_err("bad status");
        assert!(err.to_string().contains("sleeping"), "{err}");
        let err = JobRecord::from_hash("j3", hash(&[("status", "queued"), ("attempts", "many")]))
            .expect_err("bad number");
        assert!(err.to_string().contains("attempts"), "{err}");
    }

    #[test]
    fn the_trace_id_is_read_from_the_traceparent() {
        let record = |meta: &[(&str, &str)]| {
            let mut fields = vec![("status", "queued")];
            let json = serde_json::to_string(&hash(meta)).expect("encode");
            fields.push(("meta", &json));
            JobRecord::from_hash("j4", hash(&fields)).expect("parses")
        };
        let traced = record(&[(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        assert_eq!(traced.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(record(&[]).trace_id(), None);
        assert_eq!(record(&[("b3", "4bf92f35-00f067aa")]).trace_id(), None);
        // Not validated: whatever stands between the first two dashes.
        assert_eq!(record(&[(TRACEPARENT, "nonsense")]).trace_id(), None);
        assert_eq!(record(&[(TRACEPARENT, "00-abc")]).trace_id(), Some("abc"));
    }

    #[test]
    fn empty_metadata_is_stored_as_nothing() {
        let job = NewJob::new(&1).expect("encode");
        assert_eq!(job.metadata_json(), "");
        let job = job.with_metadata("baggage", "a=1");
        assert_eq!(job.metadata_json(), r#"{"baggage":"a=1"}"#);
    }
}

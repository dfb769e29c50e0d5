//! What the api answers: a job, a batch, a page of jobs, and the problem
//! of every error, as the OpenAPI document describes them
//! ([`crate::openapi`]); and how a queue record becomes the job a caller
//! sees.

use std::time::Duration;

use redis_job_queue::{JobRecord, rfc3339_ms};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An RFC 9457 problem: the body of every error the api answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "about:blank",
    "title": "Unprocessable Entity",
    "status": 422,
    "detail": "\"latitude\" must be between -90 and 90, got 91"
}))]
pub struct Problem {
    /// Always `about:blank`: the status alone says what kind of problem
    /// it is.
    #[serde(rename = "type")]
    #[schema(format = "uri-reference")]
    pub kind: String,
    /// The status's reason phrase (`Not Found`).
    pub title: String,
    /// The HTTP status code, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong and what to do about it, for a person to read.
    pub detail: String,
}

/// Unit system of a job's result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Units {
    /// °C and km/h.
    #[default]
    Metric,
    /// °F and mph.
    Imperial,
}

/// A job's lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Starts before any waiting normal or low job.
    High,
    /// The default.
    Normal,
    /// Starts after the others, but gets one read in eight.
    Low,
}

impl From<redis_job_queue::Priority> for Priority {
    fn from(p: redis_job_queue::Priority) -> Self {
        match p {
            redis_job_queue::Priority::High => Self::High,
            redis_job_queue::Priority::Normal => Self::Normal,
            redis_job_queue::Priority::Low => Self::Low,
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for its run time: delayed, or waiting to be retried.
    Scheduled,
    /// Waiting for a worker.
    Queued,
    /// A worker is running it.
    Running,
    /// Done; `result` holds the weather.
    Succeeded,
    /// Given up on; `error` says why.
    Failed,
    /// Cancelled before it ran.
    Cancelled,
    /// Finished, and its record gone after the retention
    /// (`JOB_RETENTION_SECS`): its outcome is no longer known. Only a
    /// repeated request with its `Idempotency-Key` can name such a job.
    Expired,
}

impl From<redis_job_queue::JobStatus> for JobStatus {
    fn from(s: redis_job_queue::JobStatus) -> Self {
        use redis_job_queue::JobStatus as Q;
        match s {
            Q::Scheduled => Self::Scheduled,
            Q::Queued => Self::Queued,
            Q::Running => Self::Running,
            Q::Succeeded => Self::Succeeded,
            Q::Failed => Self::Failed,
            Q::Cancelled => Self::Cancelled,
        }
    }
}

impl JobStatus {
    /// Where a job is once pushed with `delay`: scheduled while it waits
    /// for its run time, else queued.
    /// The queue keeps time in whole milliseconds: a shorter delay is none.
    pub(crate) fn pushed(delay: Option<Duration>) -> Self {
        match delay {
            Some(d) if d.as_millis() >= 1 => Self::Scheduled,
            _ => Self::Queued,
        }
    }
}

/// The answer to an accepted job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0190b1a2-7c3e-7000-8000-5a1d2e3f4a5b",
    "status": "queued",
    "repeat": false,
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"
}))]
pub struct JobAccepted {
    /// The job's id, for `GET /v1/jobs/{id}`.
    pub id: String,
    /// `queued`, or `scheduled` for a delayed job; for a repeat, where
    /// the first request's job is now (`expired` once its record is gone).
    pub status: JobStatus,
    /// `true` when an `Idempotency-Key` repeated an earlier request: this
    /// is that request's job, and nothing new was enqueued.
    pub repeat: bool,
    /// The trace the job continues: the request's own, or a new one
    /// (`null` when tracing is disabled, `OTEL_SDK_DISABLED`).
    #[schema(required = true, pattern = "^[0-9a-f]{32}$")]
    pub trace_id: Option<String>,
}

/// What became of one job of a batch: its id and status, or why it was
/// refused.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchItem {
    /// Its place in the request's `jobs`, from 0.
    pub index: usize,
    /// Its id, when enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `queued` or `scheduled`, when enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    /// Why it was refused (what `POST /v1/jobs` would answer in a `422`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to a batch: one result per job, in order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchAccepted {
    /// The batch's id: `GET /v1/batches/{id}` shows its jobs together.
    pub batch_id: String,
    /// The trace of the batch's PRODUCER span (`null` when tracing is
    /// disabled).
    #[schema(required = true, pattern = "^[0-9a-f]{32}$")]
    pub trace_id: Option<String>,
    /// Jobs enqueued.
    pub accepted: usize,
    /// Jobs refused.
    pub refused: usize,
    /// Per job, in the request's order.
    pub results: Vec<BatchItem>,
}

/// One page of jobs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// The `cursor` of the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The jobs of one batch, together.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Batch {
    /// The batch's id.
    pub id: String,
    /// How many of its jobs are in each status.
    pub counts: BatchCounts,
    /// Its jobs still kept, in the order they were sent.
    pub jobs: Vec<Job>,
}

/// How many jobs of a batch are in each status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct BatchCounts {
    /// Waiting for their run time or a retry.
    pub scheduled: usize,
    /// Waiting for a worker.
    pub queued: usize,
    /// Running.
    pub running: usize,
    /// Done.
    pub succeeded: usize,
    /// Given up on.
    pub failed: usize,
    /// Cancelled before they ran.
    pub cancelled: usize,
}

impl BatchCounts {
    /// How many of `records` are in each status.
    pub(crate) fn of(records: &[JobRecord]) -> Self {
        use redis_job_queue::JobStatus as Q;
        let mut counts = Self::default();
        for r in records {
            *match r.status {
                Q::Scheduled => &mut counts.scheduled,
                Q::Queued => &mut counts.queued,
                Q::Running => &mut counts.running,
                Q::Succeeded => &mut counts.succeeded,
                Q::Failed => &mut counts.failed,
                Q::Cancelled => &mut counts.cancelled,
            } += 1;
        }
        counts
    }
}

/// A queue's state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueState {
    /// The queue's name.
    pub name: String,
    /// Whether it is paused: no worker starts a job of it.
    pub paused: bool,
    /// Since when (RFC 3339, Redis's clock), while paused.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub paused_at: Option<String>,
}

/// What a bulk re-drive did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RedriveResult {
    /// Failed jobs that run again.
    pub redriven: u64,
    /// Whether failed jobs may be left: call again.
    pub more: bool,
}

/// A stored place: `{"city"}` or `{"latitude", "longitude"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Place {
    /// By name.
    City {
        /// The name, trimmed.
        city: String,
    },
    /// By coordinates.
    Coordinates {
        /// Degrees north.
        latitude: f64,
        /// Degrees east.
        longitude: f64,
    },
}

/// A job as the worker reads it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoredJob {
    /// Where.
    pub place: Place,
    /// In which units.
    pub units: Units,
}

/// A job's status, attempts, trace, and its result or error.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// The job's id.
    pub id: String,
    /// Where it is.
    pub status: JobStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts it may get.
    pub max_attempts: u32,
    /// The trace it continues (`null` if it carries none).
    #[schema(required = true, pattern = "^[0-9a-f]{32}$")]
    pub trace_id: Option<String>,
    /// What was asked for.
    #[schema(value_type = StoredJob)]
    pub job: serde_json::Value,
    /// When it was enqueued.
    #[schema(format = DateTime)]
    pub enqueued_at: String,
    /// When it may (next) run, for delayed jobs and retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
    /// When its latest attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    /// When it succeeded or failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    /// The weather, once succeeded (place, coordinates, temperature,
    /// wind, their units, and whether it came from the cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The latest error: final once failed, the last attempt's while
    /// queued for a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The latest error's type (`error.type` on its span: `timeout`,
    /// `upstream_5xx`, ...), to re-drive failed jobs by type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The worker that ran (or runs) the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Its lane.
    pub priority: Priority,
    /// The batch it was sent with (`GET /v1/batches/{id}`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Times it was deferred: runs the weather service's circuit breaker
    /// or rate limit refused, which are not attempts (`JOB_MAX_DEFER_SECS`
    /// bounds them).
    #[serde(default)]
    pub deferrals: u32,
    /// How long it was deferred in all, in milliseconds.
    #[serde(default)]
    pub deferred_ms: u64,
    /// Why it was last deferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_reason: Option<String>,
}

impl From<JobRecord> for Job {
    /// A job record as the api shows it.
    fn from(record: JobRecord) -> Self {
        Self {
            trace_id: record.trace_id().map(str::to_owned),
            id: record.id,
            status: record.status.into(),
            attempts: record.attempts,
            max_attempts: record.max_attempts,
            job: record.payload,
            enqueued_at: rfc3339_ms(record.enqueued_at_ms),
            run_at: record.run_at_ms.map(rfc3339_ms),
            started_at: record.started_at_ms.map(rfc3339_ms),
            finished_at: record.finished_at_ms.map(rfc3339_ms),
            result: record.result,
            error: record.error,
            error_type: record.error_type,
            worker: record.worker,
            priority: record.priority.into(),
            batch_id: record.batch,
            deferrals: record.deferrals,
            deferred_ms: record.deferred_ms,
            deferred_reason: record.deferred_reason,
        }
    }
}

/// `GET /healthz`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    pub status: String,
}

/// `GET /readyz`'s answer when Redis answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// Always `ready`.
    #[schema(pattern = "^ready$")]
    pub status: String,
}

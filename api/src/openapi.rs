//! The api's contract as an OpenAPI 3.1 document, made from the code: the
//! handlers' `#[utoipa::path]` annotations and the types below, which are
//! the shapes the api reads and writes. Served at `GET /openapi.json`;
//! `GET /docs` renders it (`docs.rs`).
//!
//! Every error is an RFC 9457 problem ([`Problem`], `application/problem+json`);
//! the reusable responses below name each one a caller can meet.

use std::sync::LazyLock;

use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

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

/// A field that may only be `null`, which counts as leaving it out.
fn null_only() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Null)
        .description(Some("Only `null`, the same as leaving the field out"))
        .build()
}

/// The weather at a place name, geocoded by the worker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"city": "Berlin", "units": "metric"}))]
pub struct CityJob {
    /// The place name; spaces around it are dropped.
    // The pattern: at least one character that is not a space, and no
    // control characters (`char::is_control`: U+0000 to U+001F and U+007F
    // to U+009F), as `validate::job` checks.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub city: String,
    /// Units of the result (default `metric`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Units>,
    /// Run no earlier than this many seconds from now (at most
    /// `MAX_DELAY_SECS`, 30 days by default). Not with `run_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 2_592_000, nullable = false)]
    pub delay_secs: Option<f64>,
    /// Run no earlier than this time (RFC 3339; a past time means now).
    /// Not with `delay_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false)]
    pub run_at: Option<String>,
    /// How the job's span relates to the request's: `parent` (one trace)
    /// or `link` (a trace of its own, linked). Default: the worker's
    /// `QUEUE_TRACE_MODE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub trace: Option<TraceMode>,
    /// Its lane: a waiting `high` job starts before any waiting `normal`
    /// one; `low` ones go last but still get one read in eight. Default
    /// `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub priority: Option<Priority>,
    /// Not with a city.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = null_only)]
    pub latitude: Option<()>,
    /// Not with a city.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = null_only)]
    pub longitude: Option<()>,
}

/// The weather at coordinates, used as they are.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"latitude": 52.52, "longitude": 13.41, "units": "imperial"}))]
pub struct CoordinatesJob {
    /// Degrees north.
    #[schema(minimum = -90, maximum = 90)]
    pub latitude: f64,
    /// Degrees east.
    #[schema(minimum = -180, maximum = 180)]
    pub longitude: f64,
    /// Units of the result (default `metric`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Units>,
    /// Run no earlier than this many seconds from now (at most
    /// `MAX_DELAY_SECS`, 30 days by default). Not with `run_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 2_592_000, nullable = false)]
    pub delay_secs: Option<f64>,
    /// Run no earlier than this time (RFC 3339; a past time means now).
    /// Not with `delay_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false)]
    pub run_at: Option<String>,
    /// How the job's span relates to the request's: `parent` (one trace)
    /// or `link` (a trace of its own, linked). Default: the worker's
    /// `QUEUE_TRACE_MODE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub trace: Option<TraceMode>,
    /// Its lane: a waiting `high` job starts before any waiting `normal`
    /// one; `low` ones go last but still get one read in eight. Default
    /// `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub priority: Option<Priority>,
    /// Not with coordinates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = null_only)]
    pub city: Option<()>,
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

/// How a job's span relates to the request that enqueued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TraceMode {
    /// The job's span is a child of the request's: one trace.
    Parent,
    /// The job starts a trace of its own, linked to the request's.
    Link,
}

/// A job to enqueue: a place name or coordinates, not both.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum NewJob {
    /// By name.
    City(CityJob),
    /// By coordinates.
    Coordinates(CoordinatesJob),
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
    /// the first request's job is now.
    pub status: JobStatus,
    /// `true` when an `Idempotency-Key` repeated an earlier request: this
    /// is that request's job, and nothing new was enqueued.
    pub repeat: bool,
    /// The trace the job continues: the request's own, or a new one
    /// (`null` when tracing is disabled, `OTEL_SDK_DISABLED`).
    #[schema(required = true, pattern = "^[0-9a-f]{32}$")]
    pub trace_id: Option<String>,
}

/// Jobs to enqueue together, in one PRODUCER span.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"jobs": [{"city": "Oslo"}, {"city": "Bergen", "delay_secs": 60}]}))]
pub struct NewBatch {
    /// 1 to 1,000 jobs, each as `POST /v1/jobs` takes one.
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<NewJob>,
    /// The trace mode of the jobs that name none: `link` by default (a
    /// trace per job, linked to the batch's PRODUCER span).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub trace: Option<TraceMode>,
    /// The priority of the jobs that name none (default `normal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub priority: Option<Priority>,
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

/// Which jobs to list.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `scheduled` (soonest first), `queued` or `running` (oldest first),
    /// `succeeded` or `failed` (newest first, within the retention).
    pub status: ListStatus,
    /// Where to go on from: the `next_cursor` of the page before (empty:
    /// the first page).
    #[param(pattern = "^([0-9]{1,20}:[!-~]{1,128})?$")]
    pub cursor: Option<String>,
    /// Jobs per page: 1 to 500, 50 by default.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u16>,
}

/// A status jobs can be listed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListStatus {
    /// Waiting for their run time.
    Scheduled,
    /// Waiting for a worker.
    Queued,
    /// Being run.
    Running,
    /// Done.
    Succeeded,
    /// Given up on.
    Failed,
}

impl From<ListStatus> for redis_job_queue::JobStatus {
    fn from(s: ListStatus) -> Self {
        match s {
            ListStatus::Scheduled => Self::Scheduled,
            ListStatus::Queued => Self::Queued,
            ListStatus::Running => Self::Running,
            ListStatus::Succeeded => Self::Succeeded,
            ListStatus::Failed => Self::Failed,
        }
    }
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

/// Which failed jobs to re-drive.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Only those whose `error_type` is this; all failed jobs without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, min_length = 1, max_length = 100)]
    pub error_type: Option<String>,
    /// At most this many (1 to 10,000; 1,000 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 10_000)]
    pub limit: Option<u32>,
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

/// The request is malformed: the body is not valid JSON.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct BadRequest(pub Problem);

/// No valid API key: the api has keys (`API_KEYS`) and the request
/// carries none of them.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer`"))
)]
pub struct Unauthorized(pub Problem);

/// No such job (it never existed, or it finished longer ago than the
/// retention time), or no such endpoint.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct NotFound(pub Problem);

/// The path exists, but not for this method.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Allow" = String, description = "The methods the path takes"))
)]
pub struct MethodNotAllowed(pub Problem);

/// The body is larger than 64 KiB (1 MiB for a batch).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct PayloadTooLarge(pub Problem);

/// The body is not sent as `application/json`.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct UnsupportedMediaType(pub Problem);

/// The job is not in a state that allows this: it has started or
/// finished (cancel), or it has not failed (retry).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Conflict(pub Problem);

/// The body is JSON but not a job: `detail` names the field at fault.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct UnprocessableEntity(pub Problem);

/// A fault of the api's; the trace id in its logs leads to the cause.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct InternalError(pub Problem);

/// Try again later: the job queue (Redis) is unavailable, or the api has
/// as many requests in flight as it may (`API_MAX_IN_FLIGHT`; then with
/// `Retry-After: 1`).
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = String, description = "Seconds to wait, when the api sheds load"))
)]
pub struct ServiceUnavailable(pub Problem);

/// Whether the process runs
///
/// Outside the in-flight limit: an overloaded api still looks alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process runs", body = Health))
)]
#[allow(dead_code)] // served by the telemetry crate's routes; only described here
fn healthz() {}

/// Prometheus metrics
///
/// OpenMetrics, with trace ids as exemplars, when the `Accept` header asks
/// for `application/openmetrics-text`; the classic text format otherwise.
/// Outside the in-flight limit.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "The metrics", content(
        (String = "text/plain"),
        (String = "application/openmetrics-text"),
    )))
)]
#[allow(dead_code)] // served by the telemetry crate's routes; only described here
fn metrics() {}

const DESCRIPTION: &str = "\
Enqueues weather jobs for the workers and reports their status; every \
request is traced (W3C `traceparent` or B3 headers continue the caller's \
trace).

**Keys.** When the api is given keys (`API_KEYS`), every write under \
`/v1` (`POST /v1/jobs`, `DELETE /v1/jobs/{id}`) needs one, as `Authorization: Bearer <key>` \
or `X-API-Key: <key>`; reads need none. Without keys the api is open.

**Load.** Past `API_MAX_IN_FLIGHT` requests at once, the others are \
answered `503` with `Retry-After: 1` at once; `/healthz` and `/metrics` \
are always answered.

**Errors** are RFC 9457 problems (`application/problem+json`, schema \
`Problem`). A path the api does not serve is a `404` problem, a method a \
path does not take a `405` problem with an `Allow` header.";

/// The document's fixed parts; the operations come from the router.
#[derive(OpenApi)]
#[openapi(
    info(title = "traced-jobs api", description = DESCRIPTION),
    paths(healthz, metrics),
    components(
        schemas(Problem, ListStatus),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            Conflict,
            MethodNotAllowed,
            PayloadTooLarge,
            UnsupportedMediaType,
            UnprocessableEntity,
            InternalError,
            ServiceUnavailable
        )
    ),
    modifiers(&KeySchemes),
    tags(
        (name = "jobs", description = "Enqueue weather jobs and follow them"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "contract", description = "This document, and a page to read it")
    )
)]
pub(crate) struct ApiDoc;

/// The two ways to send an API key.
struct KeySchemes;

impl Modify for KeySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key as a bearer token (when `API_KEYS` is set)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key (when `API_KEYS` is set)",
            ))),
        );
    }
}

/// The whole document: the fixed parts and every routed operation.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = crate::routes().split_for_parts().1;
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// Built once: it depends on the code alone. It is patched as JSON where
/// utoipa has no word for a rule: `delay_secs` and `run_at` exclude each
/// other (`not: {required: [delay_secs, run_at]}`).
static DOCUMENT: LazyLock<serde_json::Value> = LazyLock::new(|| {
    let mut doc = serde_json::to_value(openapi()).unwrap_or_default();
    for form in ["CityJob", "CoordinatesJob"] {
        if let Some(schema) = doc
            .pointer_mut(&format!("/components/schemas/{form}"))
            .and_then(serde_json::Value::as_object_mut)
        {
            schema.insert(
                "not".into(),
                serde_json::json!({ "required": ["delay_secs", "run_at"] }),
            );
        }
    }
    doc
});

/// This document
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "contract",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub(crate) async fn openapi_json() -> Json<&'static serde_json::Value> {
    Json(&DOCUMENT)
}

/// The document as JSON, for the docs page.
pub(crate) fn document_json() -> Result<String, serde_json::Error> {
    serde_json::to_string(&*DOCUMENT)
}

//! The HTTP API: validates weather jobs, enqueues them with the caller's
//! trace context, and reports their status.
//!
//! | route | answers |
//! |---|---|
//! | `POST /v1/jobs` | `202` `{"id", "status", "repeat", "trace_id"}`, `Location: /v1/jobs/{id}`; `200` for a repeat of an `Idempotency-Key` |
//! | `GET /v1/jobs/{id}` | the job's status, attempts, trace id, result or error; `404` if unknown |
//! | `POST /v1/jobs/batch` | up to 1,000 jobs in one PRODUCER span: `202` with each job's id, or why it was refused |
//! | `GET /v1/jobs?status=&cursor=&limit=` | a page of jobs with a status, and the next page's cursor |
//! | `POST /v1/jobs/{id}/retry` | re-drives a failed job (`202`); `409` for a job that has not failed |
//! | `POST /v1/jobs/retry` | re-drives failed jobs, all or those of one `error_type` |
//! | `DELETE /v1/jobs/{id}` | cancels a scheduled or queued job (`200` with the job); `409` once it has started |
//! | `GET /healthz` | `200` while the process runs |
//! | `GET /readyz` | `200` when Redis answers, else `503` |
//! | `GET /metrics` | Prometheus metrics (OpenMetrics with exemplars when asked) |
//! | `GET /openapi.json` | this api's OpenAPI 3.1 document, made from the code ([`openapi`]) |
//! | `GET /docs` | that document as a page; self-contained, it works offline |
//!
//! With `API_KEYS` set, every write (`POST`, `DELETE`) under `/v1` needs one of
//! the keys ([`auth`]); reads stay open. Past `API_MAX_IN_FLIGHT` requests
//! at once, the rest (but `/healthz` and `/metrics`) are answered `503`
//! with `Retry-After: 1` ([`limit`]). Errors are
//! `application/problem+json`. Every request is a SERVER span
//! (continuing the caller's trace); enqueueing is a PRODUCER span
//! ([`TracedProducer`]) whose context travels in the job's metadata.

pub mod auth;
mod docs;
pub mod error;
pub mod limit;
pub mod openapi;
mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use prometheus_client::metrics::counter::Counter;
use redis_job_queue::{Cancelled, JobRecord, JobStatus, NewJob, QueueError, RedisQueue};
use serde_json::Value;
use sha2::{Digest, Sha256};
use telemetry::TelemetryArgs;
use telemetry::attributes::JOB_ID;
use telemetry::http_server::HttpTelemetry;
use telemetry::messaging::{TraceMode, TracedProducer};
use telemetry::metrics::Metrics;
use telemetry::propagation::Propagation;
use tokio::net::TcpListener;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weather_jobs::WeatherJob;
use weather_jobs::settings::QueueArgs;

pub use auth::ApiKeys;
pub use error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The default of `MAX_DELAY_SECS`: 30 days.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30 * 86_400);

/// Most jobs one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// Largest batch body accepted: 1,000 jobs of up to 1 KiB each.
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;

/// The header that makes a POST idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The api's settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "api",
    version,
    about = "Enqueue weather jobs and read their status"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "API_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Who may enqueue.
    #[command(flatten)]
    pub api_keys: ApiKeys,
    /// Longest delay a job may be given (`delay_secs`, `run_at`), in
    /// seconds.
    #[arg(long, env = "MAX_DELAY_SECS", default_value_t = 30 * 86_400)]
    pub max_delay_secs: u64,
    /// Requests handled at once; more are refused with 503 and
    /// `Retry-After: 1`, never queued. /healthz and /metrics are exempt.
    #[arg(
        long,
        env = "API_MAX_IN_FLIGHT",
        default_value_t = limit::DEFAULT_MAX_IN_FLIGHT,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_in_flight: u32,
    /// Redis and the weather queue.
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Tracing and logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The weather queue, to read job status.
    pub queue: RedisQueue,
    /// Pushes jobs onto it inside PRODUCER spans.
    pub producer: TracedProducer,
    /// Propagators (inbound headers, job metadata).
    pub propagation: Propagation,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// The keys that guard the mutating endpoints (none: open).
    pub api_keys: Arc<ApiKeys>,
    /// Requests handled at once ([`limit`]).
    pub max_in_flight: usize,
    /// Requests refused for being past that, also in `metrics`.
    pub shed: Counter,
    /// Longest delay a job may be given.
    pub max_delay: Duration,
}

impl AppState {
    /// The state of an api enqueueing onto `queue`, open to anyone (see
    /// [`Self::with_api_keys`]).
    pub fn new(queue: RedisQueue, propagation: Propagation) -> Self {
        let shed = Counter::default();
        let metrics = Arc::new(Metrics::with(|registry| {
            let (name, help) = limit::SHED_METRIC;
            registry.register(name, help, shed.clone());
        }));
        let producer =
            TracedProducer::new(queue.clone(), propagation.clone()).with_metrics(metrics.clone());
        Self {
            queue,
            producer,
            propagation,
            metrics,
            api_keys: Arc::default(),
            max_in_flight: limit::DEFAULT_MAX_IN_FLIGHT as usize,
            shed,
            max_delay: DEFAULT_MAX_DELAY,
        }
    }

    /// Handles at most `max` requests at once (at least one).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Refuses jobs delayed longer than `max`.
    pub fn with_max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// Requires one of `keys` on the mutating endpoints.
    pub fn with_api_keys(mut self, keys: ApiKeys) -> Self {
        self.api_keys = Arc::new(keys);
        self
    }
}

/// The routes the api serves itself, each with its description: a handler
/// cannot be routed here without being in the OpenAPI document.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(retry_job))
        .routes(routes!(redrive_failed))
        .routes({
            // A batch may carry 1,000 jobs with long place names.
            let (schemas, paths, route) = routes!(create_batch);
            (
                schemas,
                paths,
                route.layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
            )
        })
        .routes(routes!(job_status, cancel_job))
        .routes(routes!(batch_status))
        .routes(routes!(ready))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(docs::page))
}

/// The api's routes.
pub fn app(state: AppState) -> Router {
    let telemetry = HttpTelemetry {
        propagation: state.propagation.clone(),
        metrics: Some(state.metrics.clone()),
    };
    let ops = telemetry::messaging::metrics_routes(state.metrics.clone(), state.queue.clone());
    Router::from(routes())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.api_keys.clone(),
            auth::require_key,
        ))
        .layer(limit::layer(state.max_in_flight, state.shed.clone()))
        .with_state(state)
        .merge(ops)
        .layer(axum::middleware::from_fn_with_state(
            telemetry,
            telemetry::http_server::trace_request,
        ))
}

/// Serves the api on `listener` until `shutdown` completes.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(
        addr = %listener.local_addr()?,
        queue = %state.queue.config().name,
        api_keys = ?state.api_keys,
        max_in_flight = state.max_in_flight,
        "api listening"
    );
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Turns axum's JSON rejections into precise problems.
fn rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "send the job as JSON with `Content-Type: application/json`".into(),
        ),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::BadRequest(format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => ApiError::Invalid(e.body_text()),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::TooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes"))
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// Enqueue a weather job
///
/// The job continues the caller's trace (from `traceparent` or B3
/// headers) or starts one; its id and trace id come back at once, and
/// `GET /v1/jobs/{id}` follows it. `delay_secs` or `run_at` delays it
/// (`scheduled` until then); `trace` picks how its span relates to this
/// request's. With an `Idempotency-Key`, a repeat of the same request
/// within 24 hours enqueues nothing and answers `200` with the first
/// request's job (`repeat: true`); the same key with another body is a
/// `422`.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body(content = openapi::NewJob, content_type = "application/json"),
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "Makes the request safe to retry: 1 to 255 printable ASCII characters, unique per job",
            min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")
    ),
    responses(
        (status = 202, description = "Enqueued", body = openapi::JobAccepted,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 200, description = "A repeat of an earlier request with this `Idempotency-Key`: its job, nothing enqueued",
            body = openapi::JobAccepted,
            headers(
                ("Location" = String, description = "`/v1/jobs/{id}`"),
                ("Idempotent-Replayed" = String, description = "`true`"),
            )),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 415, response = openapi::UnsupportedMediaType),
        (status = 422, response = openapi::UnprocessableEntity),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn create_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let Json(body) = body.map_err(rejection)?;
    let job: WeatherJob = validate::job(&body).map_err(ApiError::Invalid)?;
    let options = validate::options(&body, state.max_delay).map_err(ApiError::Invalid)?;
    let mut new = NewJob::new(&job)?;
    if let Some(delay) = options.delay {
        new = new.run_after(delay);
    }
    if let Some(mode) = options.trace {
        let (k, v) = mode.metadata();
        new = new.with_metadata(k, v);
    }
    if let Some(priority) = options.priority {
        new = new.with_priority(priority);
    }
    if let Some(key) = key {
        new = new
            .with_id(idempotent_id(&state.queue, key))
            .idempotency(key, fingerprint(&body));
    }
    let sent = state.producer.send(new).await?;
    let location = format!("/v1/jobs/{}", sent.id);
    if sent.repeat {
        tracing::info!({ JOB_ID } = %sent.id, "repeated request: the job exists");
        // Where the first request's job is now (gone once expired).
        let status = match state.queue.status(&sent.id).await? {
            Some(record) => record.status.into(),
            None => openapi::JobStatus::Succeeded,
        };
        let accepted = openapi::JobAccepted {
            id: sent.id,
            status,
            repeat: true,
            trace_id: sent.trace_id,
        };
        return Ok((
            StatusCode::OK,
            [
                (header::LOCATION, location),
                (
                    HeaderName::from_static("idempotent-replayed"),
                    "true".into(),
                ),
            ],
            Json(accepted),
        )
            .into_response());
    }
    tracing::info!({ JOB_ID } = %sent.id, "job queued");
    let accepted = openapi::JobAccepted {
        id: sent.id,
        status: match options.delay {
            Some(_) => openapi::JobStatus::Scheduled,
            None => openapi::JobStatus::Queued,
        },
        repeat: false,
        trace_id: sent.trace_id,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(accepted),
    )
        .into_response())
}

/// Enqueue jobs together
///
/// Up to 1,000 jobs, each as `POST /v1/jobs` takes one, in one PRODUCER
/// span (`messaging.batch.message_count`). Each job is checked on its own:
/// the answer says, per job, its id or why it was refused. Each job's
/// CONSUMER span links to the batch's PRODUCER span; by default (`trace`:
/// `link`) each job has a trace of its own, with `parent` they all hang
/// off the batch's trace.
#[utoipa::path(
    post,
    path = "/v1/jobs/batch",
    tag = "jobs",
    request_body(content = openapi::NewBatch, content_type = "application/json"),
    responses(
        (status = 202, description = "Some or all jobs enqueued; per job, its id or why it was refused",
            body = openapi::BatchAccepted),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 415, response = openapi::UnsupportedMediaType),
        (status = 422, response = openapi::UnprocessableEntity),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn create_batch(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(rejection)?;
    let batch = validate::batch(&body, MAX_BATCH).map_err(ApiError::Invalid)?;
    let batch_id = uuid::Uuid::now_v7().to_string();
    let mut results = Vec::with_capacity(batch.jobs.len());
    let mut jobs = Vec::new();
    for (index, item) in batch.jobs.iter().enumerate() {
        let checked = validate::job(item)
            .and_then(|job| validate::options(item, state.max_delay).map(|options| (job, options)));
        let (job, options) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                results.push(openapi::BatchItem {
                    index,
                    id: None,
                    status: None,
                    error: Some(error),
                });
                continue;
            }
        };
        let mut new = NewJob::new(&job)?.in_batch(&batch_id);
        if let Some(delay) = options.delay {
            new = new.run_after(delay);
        }
        // Fan-out defaults to a trace per job.
        let mode = options.trace.or(batch.trace).unwrap_or(TraceMode::Link);
        let (k, v) = mode.metadata();
        new = new.with_metadata(k, v);
        if let Some(priority) = options.priority.or(batch.priority) {
            new = new.with_priority(priority);
        }
        results.push(openapi::BatchItem {
            index,
            id: Some(new.id().to_owned()),
            status: Some(match options.delay {
                Some(_) => openapi::JobStatus::Scheduled,
                None => openapi::JobStatus::Queued,
            }),
            error: None,
        });
        jobs.push(new);
    }
    if jobs.is_empty() {
        let first = results
            .first()
            .and_then(|r| r.error.clone())
            .unwrap_or_default();
        return Err(ApiError::Invalid(format!(
            "no job of the batch is valid; job 0: {first}"
        )));
    }
    let sent = state.producer.send_batch(jobs).await?;
    // Fresh ids are never taken; a refusal here would be a broken id source.
    let mut enqueued = sent.enqueued.into_iter();
    for r in results.iter_mut().filter(|r| r.id.is_some()) {
        if enqueued.next() == Some(false) {
            r.error = Some("a job with this id already exists".into());
            r.id = None;
            r.status = None;
        }
    }
    let accepted = results.iter().filter(|r| r.id.is_some()).count();
    tracing::info!(
        batch.id = %batch_id,
        accepted,
        refused = results.len() - accepted,
        "batch queued"
    );
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/batches/{batch_id}"))],
        Json(openapi::BatchAccepted {
            batch_id,
            trace_id: sent.trace_id,
            accepted,
            refused: results.len() - accepted,
            results,
        }),
    )
        .into_response())
}

/// The request's `Idempotency-Key`, if any: 1 to 255 printable ASCII
/// characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key))
        }
        _ => Err(ApiError::BadRequest(
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces".into(),
        )),
    }
}

/// The id of the job an idempotency key makes: the same key, the same
/// job, whichever api instance takes the request.
fn idempotent_id(queue: &RedisQueue, key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(queue.config().name.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    format!("idem-{}", hex(&digest[..16]))
}

/// What identifies a request body: its JSON with keys sorted, hashed.
fn fingerprint(body: &Value) -> String {
    // serde_json's maps are sorted by key, so equal bodies print equally.
    hex(&Sha256::digest(body.to_string().as_bytes()))
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Ids this api hands out (and anything else that could be a key part
/// safely); others cannot exist.
fn plausible_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The trace id in a job's `traceparent`.
fn trace_id_of(record: &JobRecord) -> Option<String> {
    let tp = record.metadata.get("traceparent")?;
    tp.split('-').nth(1).map(str::to_owned)
}

/// Read a job's status
///
/// Its status, attempts, trace id, and its result or error once finished.
/// Finished jobs are kept for `JOB_RETENTION_SECS`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The id `POST /v1/jobs` answered")),
    responses(
        (status = 200, description = "The job", body = openapi::Job),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    )
)]
async fn job_status(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<openapi::Job>, ApiError> {
    let id = job_id(id)?;
    Ok(Json(current_view(&state, &id).await?))
}

/// Read a batch
///
/// The jobs `POST /v1/jobs/batch` sent together, in their order, with how
/// many are in each status. A batch is kept as long as its jobs are.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The `batch_id` `POST /v1/jobs/batch` answered")),
    responses(
        (status = 200, description = "The batch", body = openapi::Batch),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    )
)]
async fn batch_status(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<openapi::Batch>, ApiError> {
    let id = id.map_or_else(|_| String::new(), |Path(id)| id);
    let unknown = || {
        ApiError::NotFound(format!(
            "no batch with id {id:?} (batches are kept as long as their jobs)"
        ))
    };
    if !plausible_id(&id) {
        return Err(unknown());
    }
    let records = state
        .queue
        .batch(&id, MAX_BATCH)
        .await?
        .ok_or_else(unknown)?;
    let mut counts = openapi::BatchCounts::default();
    for r in &records {
        *match r.status {
            JobStatus::Scheduled => &mut counts.scheduled,
            JobStatus::Queued => &mut counts.queued,
            JobStatus::Running => &mut counts.running,
            JobStatus::Succeeded => &mut counts.succeeded,
            JobStatus::Failed => &mut counts.failed,
            JobStatus::Cancelled => &mut counts.cancelled,
        } += 1;
    }
    Ok(Json(openapi::Batch {
        id,
        counts,
        jobs: records.into_iter().map(job_view).collect(),
    }))
}

/// The job id of a path; one that does not decode (`%FF`) or could not
/// be an id names no job.
fn job_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let id = id.map_or_else(|_| String::new(), |Path(id)| id);
    if plausible_id(&id) {
        Ok(id)
    } else {
        Err(unknown_job(&id))
    }
}

/// Job `id` as it is now.
async fn current_view(state: &AppState, id: &str) -> Result<openapi::Job, ApiError> {
    let record = state
        .queue
        .status(id)
        .await?
        .ok_or_else(|| unknown_job(id))?;
    Ok(job_view(record))
}

fn unknown_job(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no job with id {id:?} (finished jobs are kept for a limited time)"
    ))
}

/// A job record as the api shows it.
fn job_view(record: JobRecord) -> openapi::Job {
    openapi::Job {
        trace_id: trace_id_of(&record),
        id: record.id,
        status: record.status.into(),
        attempts: record.attempts,
        max_attempts: record.max_attempts,
        job: record.payload,
        enqueued_at: rfc3339(record.enqueued_at_ms),
        run_at: record.run_at_ms.map(rfc3339),
        started_at: record.started_at_ms.map(rfc3339),
        finished_at: record.finished_at_ms.map(rfc3339),
        result: record.result,
        error: record.error,
        error_type: record.error_type,
        worker: record.worker,
        priority: record.priority.into(),
        batch_id: record.batch,
    }
}

/// Cancel a job
///
/// A scheduled or queued job is cancelled and will not run; one that has
/// started or finished is left as it is (`409`).
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The id `POST /v1/jobs` answered")),
    responses(
        (status = 200, description = "Cancelled: the job, now `cancelled`", body = openapi::Job),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 409, response = openapi::Conflict),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn cancel_job(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<openapi::Job>, ApiError> {
    let id = job_id(id)?;
    match state.queue.cancel(&id).await? {
        Cancelled::Yes => {
            tracing::info!({ JOB_ID } = %id, "job cancelled");
            Ok(Json(current_view(&state, &id).await?))
        }
        Cancelled::TooLate(status) => Err(ApiError::Conflict(format!(
            "job {id} is {}: only scheduled or queued jobs can be cancelled",
            status.as_str()
        ))),
        Cancelled::Unknown => Err(unknown_job(&id)),
    }
}

/// List jobs by status
///
/// One page at a time: pass `next_cursor` back as `cursor` for the next.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    params(openapi::ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = openapi::JobList),
        (status = 400, response = openapi::BadRequest),
        (status = 422, response = openapi::UnprocessableEntity),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    )
)]
async fn list_jobs(
    State(state): State<AppState>,
    query: Result<Query<openapi::ListQuery>, QueryRejection>,
) -> Result<Json<openapi::JobList>, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::BadRequest(format!(
            "{}; list with ?status=scheduled|queued|running|succeeded|failed, and optionally \
             &limit=1..500 and &cursor=",
            e.body_text()
        ))
    })?;
    let limit = match q.limit {
        None => 50,
        Some(n @ 1..=500) => usize::from(n),
        Some(n) => {
            return Err(ApiError::Invalid(format!(
                "limit must be 1 to 500, not {n}"
            )));
        }
    };
    let page = state
        .queue
        .list(q.status.into(), q.cursor.as_deref(), limit)
        .await
        .map_err(|e| match e {
            QueueError::Invalid(why) => ApiError::Invalid(why),
            other => other.into(),
        })?;
    Ok(Json(openapi::JobList {
        jobs: page.jobs.into_iter().map(job_view).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Re-drive a failed job
///
/// The job runs again as its next attempt, with a fresh attempt budget;
/// the new attempt's span links to the failed one.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    tag = "jobs",
    params(("id" = String, Path, description = "The id of a failed job")),
    responses(
        (status = 202, description = "Queued again: the job", body = openapi::Job),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 409, response = openapi::Conflict),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn retry_job(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    match state.queue.retry(&id).await? {
        Some(JobStatus::Failed) => {
            tracing::info!({ JOB_ID } = %id, "failed job re-driven");
            Ok((StatusCode::ACCEPTED, Json(current_view(&state, &id).await?)).into_response())
        }
        Some(status) => Err(ApiError::Conflict(format!(
            "job {id} is {}: only failed jobs can be re-driven",
            status.as_str()
        ))),
        None => Err(unknown_job(&id)),
    }
}

/// Re-drive failed jobs
///
/// All failed jobs, oldest first, or only those of one `error_type`; at
/// most `limit` per call (`more` says to call again).
#[utoipa::path(
    post,
    path = "/v1/jobs/retry",
    tag = "jobs",
    request_body(content = openapi::RedriveRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued again", body = openapi::RedriveResult),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 415, response = openapi::UnsupportedMediaType),
        (status = 422, response = openapi::UnprocessableEntity),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn redrive_failed(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(rejection)?;
    let (error_type, limit) = validate::redrive(&body).map_err(ApiError::Invalid)?;
    let done = state
        .queue
        .redrive_failed(error_type.as_deref(), limit)
        .await?;
    tracing::info!(
        redriven = done.redriven,
        more = done.more,
        "failed jobs re-driven"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(openapi::RedriveResult {
            redriven: done.redriven,
            more: done.more,
        }),
    )
        .into_response())
}

/// Whether Redis answers
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Redis answers", body = openapi::Ready),
        (status = 503, response = openapi::ServiceUnavailable),
    )
)]
async fn ready(State(state): State<AppState>) -> Result<Json<openapi::Ready>, ApiError> {
    match state.queue.ping(Duration::from_secs(1)).await {
        Ok(()) => Ok(Json(openapi::Ready {
            status: "ready".into(),
        })),
        Err(e) => {
            tracing::warn!(error = %e, "Redis is not answering");
            Err(ApiError::Unavailable("Redis is not answering".into()))
        }
    }
}

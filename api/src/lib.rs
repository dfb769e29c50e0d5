//! The HTTP API: validates weather jobs, enqueues them with the caller's
//! trace context, and reports their status.
//!
//! | route | answers |
//! |---|---|
//! | `POST /v1/jobs` | `202` `{"id", "status": "queued", "trace_id"}`, `Location: /v1/jobs/{id}` |
//! | `GET /v1/jobs/{id}` | the job's status, attempts, trace id, result or error; `404` if unknown |
//! | `GET /healthz` | `200` while the process runs |
//! | `GET /readyz` | `200` when Redis answers, else `503` |
//! | `GET /metrics` | Prometheus metrics (OpenMetrics with exemplars when asked) |
//! | `GET /openapi.json` | this api's OpenAPI 3.1 document, made from the code ([`openapi`]) |
//! | `GET /docs` | that document as a page; self-contained, it works offline |
//!
//! With `API_KEYS` set, every `POST` (any write) under `/v1` needs one of
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

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use prometheus_client::metrics::counter::Counter;
use redis_job_queue::{JobRecord, NewJob, RedisQueue};
use serde_json::Value;
use telemetry::TelemetryArgs;
use telemetry::attributes::JOB_ID;
use telemetry::http_server::HttpTelemetry;
use telemetry::messaging::TracedProducer;
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
        }
    }

    /// Handles at most `max` requests at once (at least one).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
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
        .routes(routes!(create_job))
        .routes(routes!(job_status))
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
/// `GET /v1/jobs/{id}` follows it.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body(content = openapi::NewJob, content_type = "application/json"),
    responses(
        (status = 202, description = "Enqueued", body = openapi::JobAccepted,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
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
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(rejection)?;
    let job: WeatherJob = validate::job(&body).map_err(ApiError::Invalid)?;
    let sent = state.producer.send(NewJob::new(&job)?).await?;
    tracing::info!({ JOB_ID } = %sent.id, "job queued");

    let location = format!("/v1/jobs/{}", sent.id);
    let accepted = openapi::JobAccepted {
        id: sent.id,
        status: openapi::JobStatus::Queued,
        trace_id: sent.trace_id,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(accepted),
    )
        .into_response())
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
    // A path that does not decode (`%FF`) names no job either.
    let id = id.map_or_else(|_| String::new(), |Path(id)| id);
    let unknown = || {
        ApiError::NotFound(format!(
            "no job with id {id:?} (finished jobs are kept for a limited time)"
        ))
    };
    if !plausible_id(&id) {
        return Err(unknown());
    }
    let record = state.queue.status(&id).await?.ok_or_else(unknown)?;
    Ok(Json(openapi::Job {
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
        worker: record.worker,
    }))
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

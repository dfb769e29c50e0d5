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
//! the keys ([`auth`]); reads stay open unless `API_KEYS_FOR_READS`. Past `API_MAX_IN_FLIGHT` requests
//! at once, the rest (but `/healthz` and `/metrics`) are answered `503`
//! with `Retry-After: 1` ([`limit`]). Errors are
//! `application/problem+json`. Every request is a SERVER span
//! (continuing the caller's trace); enqueueing is a PRODUCER span
//! ([`TracedProducer`]) whose context travels in the job's metadata.
//!
//! | file | holds |
//! |---|---|
//! | [`config`] | the settings, from flags or the environment |
//! | `state.rs` | [`AppState`], what every handler shares |
//! | `jobs.rs`, `batches.rs`, `ready.rs` | the routes |
//! | `validate.rs` | a body checked into a job and its options |
//! | `idempotency.rs` | the `Idempotency-Key` rule: one key, one job |
//! | [`requests`], [`views`] | the JSON the api reads and answers |
//! | [`openapi`] | the OpenAPI document made from those and the routes |
//! | [`error`], [`auth`], [`limit`] | problems, API keys, the in-flight limit |
//!
//! [`TracedProducer`]: telemetry::messaging::TracedProducer

pub mod auth;
mod batches;
mod bulk;
pub mod config;
mod docs;
pub mod error;
mod idempotency;
mod jobs;
pub mod limit;
pub mod openapi;
mod queues;
mod ready;
pub mod requests;
mod search;
pub mod serve;
mod state;
mod validate;
pub mod views;

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use telemetry::http_server::HttpTelemetry;
use tokio::net::TcpListener;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::ApiKeys;
pub use batches::{MAX_BATCH, MAX_BATCH_BODY_BYTES};
pub use config::{Config, DEFAULT_MAX_DELAY};
pub use error::ApiError;
pub use idempotency::IDEMPOTENCY_KEY;
pub use state::AppState;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The routes the api serves itself, each with its description: a handler
/// cannot be routed here without being in the OpenAPI document.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(jobs::create_job, jobs::list_jobs))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(bulk::count_jobs))
        .routes(routes!(bulk::start_bulk))
        .routes(routes!(bulk::bulk_status))
        .routes(routes!(bulk::stop_bulk))
        .routes(routes!(jobs::redrive_failed))
        .routes({
            // A batch may carry 1,000 jobs with long place names.
            let (schemas, paths, route) = routes!(batches::create_batch);
            (
                schemas,
                paths,
                route.layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
            )
        })
        .routes(routes!(jobs::job_status, jobs::cancel_job))
        .routes(routes!(batches::batch_status))
        .routes(routes!(queues::queue_state))
        .routes(routes!(queues::pause_queue))
        .routes(routes!(queues::resume_queue))
        .routes(routes!(ready::ready))
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
            limit::InFlight::new(state.max_in_flight, state.shed.clone()),
            limit::limit,
        ))
        // Outside the limit: a slow body holds no place in flight.
        .layer(axum::middleware::from_fn_with_state(
            serve::BodyLimits {
                timeout: state.request_timeout,
                batch: MAX_BATCH_BODY_BYTES,
                other: MAX_BODY_BYTES,
            },
            serve::read_body,
        ))
        // Outermost: a request without a valid key is refused from its
        // head, before its body is read or a place is taken.
        .layer(axum::middleware::from_fn_with_state(
            state.api_keys.clone(),
            auth::require_key,
        ))
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
        request_timeout = ?state.request_timeout,
        "api listening"
    );
    let timeout = state.request_timeout;
    serve::serve(listener, app(state), timeout, shutdown).await
}

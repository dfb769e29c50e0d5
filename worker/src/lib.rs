//! The worker: takes weather jobs off the Redis queue (apalis), resumes
//! each job's trace, fetches the weather through a Redis cache, and records
//! the result for the api.
//!
//! Each job is a CONSUMER span `process {queue}` whose parent is the api's
//! PRODUCER span (from the job's metadata) and which also links to it; in
//! `link` trace mode it starts a new trace, linked to the producer. Under
//! it: the cache lookup (Redis `GET`), on a miss the geocoding and forecast
//! calls (HTTP CLIENT spans, continued by the weather service), and the
//! cache write (Redis `SET`). A retried job's span also links to the span
//! of the attempt before it.

mod weather_client;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use apalis::layers::WorkerBuilderExt;
use apalis_core::error::{AbortError, BoxDynError};
use apalis_core::task::data::Data;
use apalis_core::task::metadata::MetadataStore;
use apalis_core::worker::builder::WorkerBuilder;
use axum::routing::get;
use axum::{Json, Router};
use clap::ValueEnum;
use opentelemetry::trace::TraceContextExt;
use reqwest::Url;
use serde_json::json;
use shared::cache::{RedisPeer, WeatherCache};
use shared::config::QueueArgs;
use shared::http_client::{HttpError, TracedClient};
use shared::jobs::{Place, Source, WeatherJob, WeatherResult};
use shared::metrics::{CacheLabels, Metrics, OutcomeLabels, QueueLabels};
use shared::propagation::Propagation;
use shared::queue::{JobLease, RedisQueue};
use shared::telemetry::TelemetryArgs;
use tokio::net::TcpListener;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use weather_client::WeatherClient;

/// How a job's CONSUMER span relates to the PRODUCER span that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceMode {
    /// Child of the producer (one tree per job, Celery-style), plus a link.
    Parent,
    /// A new trace per job, linked to the producer (fan-out, scheduled work).
    Link,
}

/// The worker's settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "worker",
    version,
    about = "Run weather jobs from the Redis queue"
)]
pub struct Config {
    /// Address of the health endpoint.
    #[arg(long, env = "WORKER_LISTEN", default_value = "0.0.0.0:9100")]
    pub listen: SocketAddr,
    /// Jobs run at once by this process.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Seconds a weather result stays in the cache.
    #[arg(long, env = "CACHE_TTL_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_ttl_secs: u64,
    /// Base URL of the geocoding API (Open-Meteo's, or the stub's).
    #[arg(
        long,
        env = "GEOCODING_BASE_URL",
        default_value = "https://geocoding-api.open-meteo.com/"
    )]
    pub geocoding_base_url: Url,
    /// Base URL of the forecast API (Open-Meteo's, or the stub's).
    #[arg(
        long,
        env = "WEATHER_BASE_URL",
        default_value = "https://api.open-meteo.com/"
    )]
    pub weather_base_url: Url,
    /// Timeout of one weather-service request, in milliseconds.
    #[arg(long, env = "HTTP_TIMEOUT_MS", default_value_t = 5000)]
    pub http_timeout_ms: u64,
    /// How a job's span relates to the span that enqueued it.
    #[arg(long, env = "QUEUE_TRACE_MODE", value_enum, default_value = "parent")]
    pub trace_mode: TraceMode,
    /// Redis and the weather queue.
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Tracing and logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// What every job needs.
#[derive(Debug)]
pub struct Deps {
    /// Propagators (job metadata).
    pub propagation: Propagation,
    /// The weather cache.
    pub cache: WeatherCache,
    /// The weather service.
    pub weather: WeatherClient,
    /// Span relation to the producer.
    pub trace_mode: TraceMode,
    /// Queue name, for span names and attributes.
    pub queue_name: String,
    /// The Redis server, for span attributes.
    pub redis: RedisPeer,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
}

impl Deps {
    /// Builds the dependencies from the settings.
    pub fn new(
        config: &Config,
        queue: &RedisQueue,
        redis: RedisPeer,
        propagation: Propagation,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let http = TracedClient::new(
            propagation.clone(),
            Duration::from_millis(config.http_timeout_ms),
            Some(metrics.clone()),
        )?;
        let weather =
            WeatherClient::new(http, &config.geocoding_base_url, &config.weather_base_url)
                .map_err(anyhow::Error::msg)?;
        let cache = WeatherCache::new(
            queue.connection(),
            redis.clone(),
            format!("{}:cache:weather", config.queue.queue_key_prefix),
            Duration::from_secs(config.cache_ttl_secs),
        );
        Ok(Self {
            propagation,
            cache,
            weather,
            trace_mode: config.trace_mode,
            queue_name: queue.config().name.clone(),
            redis,
            metrics,
        })
    }
}

/// Why a job failed; decides retry or give up.
#[derive(Debug, thiserror::Error)]
enum JobError {
    /// Geocoding found nothing: retrying cannot help.
    #[error("unknown place {0:?}: the weather service has no match for it")]
    UnknownPlace(String),
    /// The weather service failed.
    #[error(transparent)]
    Upstream(#[from] HttpError),
}

impl JobError {
    fn error_type(&self) -> String {
        match self {
            Self::UnknownPlace(_) => "unknown_place".into(),
            Self::Upstream(e) => e.error_type(),
        }
    }

    /// apalis error: abort (no retry) or plain (retried with backoff).
    fn into_apalis(self) -> BoxDynError {
        match &self {
            Self::Upstream(e) if e.is_retryable() => Box::new(self),
            _ => Box::new(AbortError::new(self)),
        }
    }
}

/// Job metadata key holding the `traceparent` of the previous attempt's
/// CONSUMER span, so each retry links to the attempt before it.
pub const PREVIOUS_ATTEMPT: &str = "otel.previous_attempt";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs one weather job inside its CONSUMER span.
pub async fn process(
    job: WeatherJob,
    lease: Data<JobLease>,
    metadata: MetadataStore,
    deps: Data<Arc<Deps>>,
) -> Result<WeatherResult, BoxDynError> {
    let producer = deps
        .propagation
        .extract_job(metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let producer_span = producer.span().span_context().clone();
    let queue = &deps.queue_name;
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("process {queue}"),
        otel.kind = "consumer",
        messaging.system = "redis",
        messaging.operation.name = "process",
        messaging.operation.type = "process",
        messaging.destination.name = %queue,
        messaging.consumer.group.name = "workers",
        messaging.message.id = %lease.id,
        server.address = %deps.redis.address,
        server.port = deps.redis.port,
        job.id = %lease.id,
        job.attempt = lease.attempt,
        job.queue_wait_ms = now_ms().saturating_sub(lease.enqueued_at_ms),
        weather.cache.hit = Empty,
        otel.status_code = Empty,
        error.type = Empty,
    );
    if deps.trace_mode == TraceMode::Parent {
        let _ = span.set_parent(producer);
    }
    if producer_span.is_valid() {
        span.add_link(producer_span);
    }
    // A retry links to the attempt before it.
    if let Some(previous) = metadata.get(PREVIOUS_ATTEMPT) {
        let cx = deps.propagation.extract_job([("traceparent", previous)]);
        let previous = cx.span().span_context().clone();
        if previous.is_valid() {
            span.add_link(previous);
        }
    }
    let job_id = lease.id.clone();
    async {
        let span = tracing::Span::current();
        let started = Instant::now();
        let waited = Duration::from_millis(now_ms().saturating_sub(lease.enqueued_at_ms));
        let queue = QueueLabels {
            messaging_destination_name: deps.queue_name.clone(),
        };
        Metrics::observe(&deps.metrics.queue_wait, &queue, waited);
        let result = fetch(&job, &deps).await;
        let outcome = OutcomeLabels {
            messaging_destination_name: deps.queue_name.clone(),
            outcome: if result.is_ok() { "success" } else { "failure" }.into(),
            error_type: result.as_ref().err().map(JobError::error_type).unwrap_or_default(),
        };
        Metrics::count(&deps.metrics.jobs_processed, &outcome);
        Metrics::observe(&deps.metrics.process_duration, &outcome, started.elapsed());
        match result {
            Ok(result) => {
                tracing::info!(job.id = %job_id, source = ?result.source, "weather job done");
                Ok(result)
            }
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", e.error_type());
                if let Some(tp) = deps.propagation.inject_job(&span.context()).remove("traceparent") {
                    lease.carry_to_next_attempt(PREVIOUS_ATTEMPT, tp);
                }
                tracing::warn!(job.id = %job_id, attempt = lease.attempt, error = %e, "weather job failed");
                Err(e.into_apalis())
            }
        }
    }
    .instrument(span)
    .await
}

/// The weather for the job: from the cache, or from the weather service
/// (and then cached).
async fn fetch(job: &WeatherJob, deps: &Deps) -> Result<WeatherResult, JobError> {
    let key = format!("{}:{}", job.place.cache_key(), job.units.as_str());
    match deps.cache.get(&key).await {
        Ok(Some(mut cached)) => {
            tracing::Span::current().record("weather.cache.hit", true);
            Metrics::count(
                &deps.metrics.cache_requests,
                &CacheLabels {
                    result: "hit".into(),
                },
            );
            cached.source = Source::Cache;
            return Ok(cached);
        }
        Ok(None) => {
            tracing::Span::current().record("weather.cache.hit", false);
            Metrics::count(
                &deps.metrics.cache_requests,
                &CacheLabels {
                    result: "miss".into(),
                },
            );
        }
        // The cache is an optimisation: without it, ask upstream.
        Err(e) => tracing::warn!(error = %e, "cache lookup failed"),
    }
    let (place, country, latitude, longitude) = match &job.place {
        Place::City { city } => {
            let found = deps
                .weather
                .geocode(city)
                .await?
                .ok_or_else(|| JobError::UnknownPlace(city.clone()))?;
            (
                Some(found.name),
                found.country,
                found.latitude,
                found.longitude,
            )
        }
        Place::Coordinates {
            latitude,
            longitude,
        } => (None, None, *latitude, *longitude),
    };
    let conditions = deps.weather.current(latitude, longitude, job.units).await?;
    let result = WeatherResult {
        place,
        country,
        latitude,
        longitude,
        temperature: conditions.current.temperature_2m,
        temperature_unit: conditions.temperature_unit,
        wind_speed: conditions.current.wind_speed_10m,
        wind_speed_unit: conditions.wind_speed_unit,
        wind_direction: conditions.current.wind_direction_10m,
        weather_code: conditions.current.weather_code,
        source: Source::Upstream,
        fetched_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    if let Err(e) = deps.cache.set(&key, &result).await {
        tracing::warn!(error = %e, "cache write failed");
    }
    Ok(result)
}

/// The worker's own HTTP routes: `/healthz`, and `/metrics` with the
/// queue gauges read from Redis at each scrape.
pub fn health_app(queue: RedisQueue, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| async move {
                let accept = headers
                    .get(axum::http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let (content_type, body) = shared::metrics::scrape(&metrics, &queue, accept).await;
                ([(axum::http::header::CONTENT_TYPE, content_type)], body)
            }),
        )
}

/// Runs the worker (and its health endpoint on `listener`) until
/// `shutdown` completes; running jobs finish first.
pub async fn run(
    config: &Config,
    queue: RedisQueue,
    deps: Arc<Deps>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let backend = queue.backend::<WeatherJob>(config.concurrency as usize);
    let (queue_for_http, metrics) = (queue.clone(), deps.metrics.clone());
    tracing::info!(
        addr = %listener.local_addr()?,
        queue = %deps.queue_name,
        consumer = backend.consumer(),
        concurrency = config.concurrency,
        "worker started"
    );
    let worker = WorkerBuilder::new(backend.consumer().to_owned())
        .backend(backend)
        .catch_panic()
        .data(deps)
        .build(process);
    let (stop_health, health_stopped) = tokio::sync::oneshot::channel::<()>();
    let health = tokio::spawn(async move {
        axum::serve(listener, health_app(queue_for_http, metrics))
            .with_graceful_shutdown(async {
                let _ = health_stopped.await;
            })
            .await
    });
    let ran = worker
        .run_until(async move {
            shutdown.await;
            Ok::<(), std::io::Error>(())
        })
        .await;
    let _ = stop_health.send(());
    let _ = health.await;
    ran?;
    Ok(())
}

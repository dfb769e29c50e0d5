//! One weather job: the cache, then the weather service behind its
//! protections (breaker, rate limit, resends, single flight), the result
//! cached, and the event attached to the success; and what its errors
//! mean for the queue (retry, give up, or defer).

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use apalis_core::task::data::Data;
use redis_job_queue::{Defer, JobLease, OutboxEvent};
use telemetry::attributes::{JOB_ID, WEATHER_CACHE_HIT};
use telemetry::http_client::HttpError;
use telemetry::propagation::Propagation;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use weather_jobs::{Place, Source, WeatherJob, WeatherResult, WeatherUpdated};

use crate::{Deps, upstream};

/// How long a job is deferred when the shared rate limit could not be
/// read.
const RATE_LIMIT_RETRY: Duration = Duration::from_secs(1);

/// The first resend's backoff, doubled for each further one (with jitter).
const RESEND_BACKOFF: Duration = Duration::from_millis(100);

/// The longest `Retry-After` honoured by a resend within the attempt; a
/// longer one ends the attempt, and the job runs again after it.
const MAX_RESEND_WAIT: Duration = Duration::from_secs(1);

/// The longest `Retry-After` a job waits, whatever the service asks.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why a job failed; decides retry or give up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// Geocoding found nothing: retrying cannot help.
    #[error("unknown place {0:?}: the weather service has no match for it")]
    UnknownPlace(String),
    /// The weather service failed.
    #[error(transparent)]
    Upstream(#[from] HttpError),
    /// The circuit breaker is open: the weather service was not called.
    #[error("the weather service keeps failing: circuit open, a call goes through in {} ms", .0.as_millis())]
    CircuitOpen(Duration),
    /// The shared rate limit could not be read (Redis failed): the
    /// weather service was not called, rather than called unlimited.
    #[error("the shared rate limit is unavailable: {0}")]
    RateLimitUnavailable(#[source] redis::RedisError),
}

impl JobError {
    fn error_type(&self) -> String {
        match self {
            Self::UnknownPlace(_) => "unknown_place".into(),
            Self::Upstream(e) => e.error_type(),
            Self::CircuitOpen(_) => "circuit_open".into(),
            Self::RateLimitUnavailable(_) => "rate_limit_unavailable".into(),
        }
    }

    /// The `error.type` of a job's error, if it is one of ours (for the
    /// consumer span and the metrics).
    pub(crate) fn classify(e: &(dyn std::error::Error + 'static)) -> Option<Cow<'static, str>> {
        e.downcast_ref::<Self>().map(|e| e.error_type().into())
    }

    /// apalis error: abort (no retry) or plain (retried with backoff).
    fn into_apalis(self) -> BoxDynError {
        match &self {
            // The service said when to come back (a 429's Retry-After).
            // At most an hour, whatever it asked: a job is not parked for
            // days on one answer's say-so. The job's span says so.
            Self::Upstream(e) if e.is_retryable() => match e.retry_after() {
                Some(asked) => {
                    let wait = asked.min(MAX_RETRY_AFTER);
                    tracing::info!(
                        retry_after.asked_s = asked.as_secs(),
                        retry_after.used_s = wait.as_secs(),
                        retry_after.capped = asked > MAX_RETRY_AFTER,
                        "retry after the wait the weather service asked for"
                    );
                    Box::new(RetryAfterError::new(self, wait))
                }
                None => Box::new(self),
            },
            // The weather service was not called: not an attempt. The job
            // runs again once the breaker may let a call through.
            Self::CircuitOpen(wait) => {
                let wait = *wait;
                Box::new(Defer::new(self, wait))
            }
            Self::RateLimitUnavailable(_) => Box::new(Defer::new(self, RATE_LIMIT_RETRY)),
            _ => Box::new(AbortError::new(self)),
        }
    }
}

/// Runs one weather job; [`ConsumerTracing`] has opened its span.
pub async fn process(
    job: WeatherJob,
    lease: Data<JobLease>,
    deps: Data<Arc<Deps>>,
) -> Result<WeatherResult, BoxDynError> {
    match fetch(&job, &deps).await {
        Ok(result) => {
            tracing::info!({ JOB_ID } = %lease.id, source = ?result.source, "weather job done");
            if deps.events.is_some() {
                publish_on_success(&deps.propagation, &lease, &job, &result);
            }
            Ok(result)
        }
        // Refused before the weather service was called: the queue defers
        // the job (the consumer span says so), a failure only past the
        // job's most deferral.
        Err(e @ (JobError::CircuitOpen(_) | JobError::RateLimitUnavailable(_))) => {
            tracing::info!({ JOB_ID } = %lease.id, attempt = lease.attempt, error = %e, "weather job refused a call");
            Err(e.into_apalis())
        }
        Err(e) => {
            tracing::warn!({ JOB_ID } = %lease.id, attempt = lease.attempt, error = %e, "weather job failed");
            Err(e.into_apalis())
        }
    }
}

/// Attaches the job's `weather.updated` event to its success: the queue
/// puts it in the outbox when it records the success, with the context of
/// the job's span, for the relay to send on.
fn publish_on_success(
    propagation: &Propagation,
    lease: &JobLease,
    job: &WeatherJob,
    result: &WeatherResult,
) {
    let event = WeatherUpdated::new(&lease.id, job, result);
    match serde_json::to_string(&event) {
        Ok(payload) => lease.publish_on_success(OutboxEvent {
            key: event.key,
            job_id: lease.id.clone(),
            payload,
            context: propagation.inject_job(&tracing::Span::current().context()),
        }),
        Err(e) => tracing::warn!(error = %e, "cannot encode the weather event"),
    }
}

/// The weather for the job: from the cache, or from the weather service
/// (and then cached).
async fn fetch(job: &WeatherJob, deps: &Deps) -> Result<WeatherResult, JobError> {
    let key = format!("{}:{}", job.place.cache_key(), job.units.as_str());
    match deps.cache.get(&key).await {
        Ok(Some(mut cached)) => {
            tracing::Span::current().set_attribute(WEATHER_CACHE_HIT, true);
            deps.count_cache("hit");
            cached.source = Source::Cache;
            return Ok(cached);
        }
        Ok(None) => {
            tracing::Span::current().set_attribute(WEATHER_CACHE_HIT, false);
            deps.count_cache("miss");
        }
        // The cache is an optimisation: without it, ask upstream.
        Err(e) => tracing::warn!(error = %e, "cache lookup failed"),
    }
    // One fetch per place at a time, across workers; the others read its
    // result from the cache.
    let cached = || async { matches!(deps.cache.get(&key).await, Ok(Some(_))) };
    let token = match deps.upstream.fly(&key, &deps.cache.key(&key), cached).await {
        upstream::Flight::Leader(token) => token,
        upstream::Flight::Waited => {
            if let Ok(Some(mut cached)) = deps.cache.get(&key).await {
                deps.count_cache("hit");
                cached.source = Source::Cache;
                return Ok(cached);
            }
            String::new()
        }
    };
    // On success the lease is released with the cache write (one round
    // trip); on failure, here.
    let fetched = fetch_upstream(job, deps, &key, &token).await;
    if fetched.is_err() && !token.is_empty() {
        deps.upstream.land(&token).await;
    }
    fetched
}

/// Calls the weather service through the breaker and the rate limit,
/// sending a failed call again (up to [`Deps::resends`] times) when that
/// may help; `call` gets the number of sends before it.
async fn guarded<T, F, Fut>(deps: &Deps, call: F) -> Result<T, JobError>
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<T, HttpError>>,
{
    let mut resend = 0;
    loop {
        if let upstream::Permit::Open(wait) = deps.upstream.permit() {
            return Err(JobError::CircuitOpen(wait));
        }
        deps.upstream
            .take_slot()
            .await
            .map_err(JobError::RateLimitUnavailable)?;
        let result = call(resend).await;
        let failed = matches!(&result, Err(e) if e.is_retryable());
        deps.upstream.record(!failed);
        match result {
            Err(e)
                if failed
                    && resend < deps.resends
                    && e.retry_after().is_none_or(|w| w <= MAX_RESEND_WAIT) =>
            {
                let wait = resend_backoff(resend).max(e.retry_after().unwrap_or_default());
                tracing::info!(
                    error = %e,
                    wait_ms = wait.as_millis() as u64,
                    resend = resend + 1,
                    "the weather service failed: sending again"
                );
                tokio::time::sleep(wait).await;
                resend += 1;
            }
            other => return Ok(other?),
        }
    }
}

/// The wait before resend `n + 1`: [`RESEND_BACKOFF`] doubled per resend,
/// with full jitter in its upper half (so workers that failed together do
/// not send again together).
fn resend_backoff(n: u32) -> Duration {
    let ceiling = RESEND_BACKOFF.saturating_mul(2u32.saturating_pow(n.min(10)));
    ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// Geocodes (for a city) and reads the current weather, then caches it,
/// releasing the single-flight lease `token` in the same round trip.
async fn fetch_upstream(
    job: &WeatherJob,
    deps: &Deps,
    key: &str,
    token: &str,
) -> Result<WeatherResult, JobError> {
    let (place, country, latitude, longitude) = match &job.place {
        Place::City { city } => {
            let found = guarded(deps, |resend| deps.weather.geocode(city, resend))
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
    let conditions = guarded(deps, |resend| {
        deps.weather.current(latitude, longitude, job.units, resend)
    })
    .await?;
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
    if let Err(e) = deps
        .cache
        .set(key, &result, deps.upstream.land_cmd(token))
        .await
    {
        tracing::warn!(error = %e, "cache write failed");
    }
    Ok(result)
}

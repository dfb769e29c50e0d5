//! The worker: takes weather jobs off the Redis queue (apalis), resumes
//! each job's trace, fetches the weather through a Redis cache, and records
//! the result for the api.
//!
//! Each job runs in a CONSUMER span `process {queue}` opened by the
//! `telemetry` crate's [`ConsumerTracing`] layer: its parent is the api's
//! PRODUCER span (from the job's metadata) and it also links to it; in
//! `link` trace mode it starts a new trace, linked to the producer; a retry
//! also links to the attempt before it. Under it, [`process`] makes the
//! cache lookup (Redis `GET`), on a miss the geocoding and forecast calls
//! (HTTP CLIENT spans, continued by the weather service), and the cache
//! write (Redis `SET`). With `KAFKA_BROKERS` set, a successful job's
//! `weather.updated` event goes into the queue's outbox with its success
//! (one script), and the outbox relay ([`outbox`]) sends it to Kafka in a
//! PRODUCER span `send weather.updated`, child of the job's span (the
//! `telemetry` crate's [`EventProducer`]); the job never waits for Kafka,
//! and no event is lost while Kafka is away.

mod cache;
mod config;
mod job;
pub mod outbox;
pub mod schedule;
pub mod upstream;
mod weather_client;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::ext::parallelize::ParallelizeExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use redis_job_queue::RedisQueue;
use telemetry::http_client::TracedClient;
use telemetry::kafka::EventProducer;
use telemetry::messaging::{ConsumerTracing, TracedProducer};
use telemetry::metrics::Metrics;
use telemetry::propagation::Propagation;
use tokio::net::TcpListener;
use weather_jobs::WeatherJob;

pub use cache::WeatherCache;
pub use config::Config;
pub use job::{MAX_RETRY_AFTER, process};
pub use weather_client::WeatherClient;

/// Cache lookup labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit` or `miss`.
    pub result: String,
}

/// What every job needs.
#[derive(Debug)]
pub struct Deps {
    /// Propagators (job metadata, outbound HTTP).
    pub propagation: Propagation,
    /// The weather cache.
    pub cache: WeatherCache,
    /// The weather service.
    pub weather: WeatherClient,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// `weather_cache_requests_total`, in [`Self::metrics`].
    pub cache_requests: Family<CacheLabels, Counter>,
    /// Rate limit, circuit breaker and single flight for the weather
    /// service.
    pub upstream: upstream::Upstream,
    /// Sends the `weather.updated` events from the outbox (with
    /// `KAFKA_BROKERS`).
    pub events: Option<EventProducer>,
    /// The outbox's gauges (kept by the relay).
    pub outbox_gauges: outbox::OutboxGauges,
    /// Times a failed weather-service call is sent again within one
    /// attempt (`WEATHER_HTTP_RESENDS`).
    pub resends: u32,
}

impl Deps {
    /// Builds the dependencies from the settings.
    pub fn new(
        config: &Config,
        queue: &RedisQueue,
        propagation: Propagation,
    ) -> anyhow::Result<Self> {
        let cache_requests = Family::<CacheLabels, Counter>::default();
        let outbox_gauges = outbox::OutboxGauges::default();
        let upstream = upstream::Upstream::new(
            queue.connection(),
            format!("{}:weather", config.queue.queue_key_prefix),
            config.weather_rate_limit,
            upstream::Breaker::new(
                config.breaker_failure_ratio,
                config.breaker_min_calls as usize,
                Duration::from_secs(config.breaker_window_secs),
                Duration::from_secs(config.breaker_cooldown_secs),
            ),
        );
        let metrics = Arc::new(Metrics::with(|registry| {
            registry.register(
                "weather_cache_requests",
                "Weather cache lookups, by hit or miss",
                cache_requests.clone(),
            );
            registry.register(
                "weather_circuit_state",
                "The weather-service circuit breaker: 0 closed, 1 open, 2 half-open",
                upstream.circuit_state.clone(),
            );
            registry.register(
                "weather_rate_limited",
                "Weather-service calls that waited for the shared rate limit",
                upstream.rate_limited.clone(),
            );
            registry.register(
                "weather_single_flight_waits",
                "Jobs that waited for another job's fetch of the same place",
                upstream.single_flight_waits.clone(),
            );
            outbox_gauges.register(registry);
        }));
        let http = TracedClient::new(
            propagation.clone(),
            Duration::from_millis(config.http_timeout_ms),
            Some(metrics.clone()),
        )?
        .with_max_body(config.http_max_body_bytes as usize);
        let weather =
            WeatherClient::new(http, &config.geocoding_base_url, &config.weather_base_url)
                .map_err(anyhow::Error::msg)?;
        let cache = WeatherCache::new(
            queue.connection(),
            queue.server().clone(),
            format!("{}:cache:weather", config.queue.queue_key_prefix),
            Duration::from_secs(config.cache_ttl_secs),
        );
        let events = match config.kafka.kafka_brokers.as_deref().map(str::trim) {
            Some(brokers) if !brokers.is_empty() => Some(
                EventProducer::new(
                    &telemetry::kafka::ProducerSettings {
                        brokers: brokers.to_owned(),
                        topic: config.kafka.kafka_topic.clone(),
                        buffer: config.kafka_relay_batch,
                        delivery_timeout: Duration::from_millis(config.kafka_delivery_timeout_ms),
                    },
                    propagation.clone(),
                    Some(metrics.clone()),
                )
                .map_err(|e| anyhow::anyhow!("KAFKA_BROKERS: {e}"))?,
            ),
            _ => None,
        };
        Ok(Self {
            propagation,
            cache,
            weather,
            metrics,
            cache_requests,
            upstream,
            events,
            outbox_gauges,
            resends: config.http_resends,
        })
    }

    pub(crate) fn count_cache(&self, result: &str) {
        Metrics::count(
            &self.cache_requests,
            &CacheLabels {
                result: result.into(),
            },
        );
    }
}

/// Runs `job` as a task of its own, aborted when the returned future is
/// dropped.
fn spawn_owned<F>(job: F) -> Owned<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Owned(tokio::spawn(job))
}

/// A spawned job's handle that aborts the job when dropped.
struct Owned<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Owned<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the worker (and its `/healthz` and `/metrics` on `listener`) until
/// `shutdown` completes; running jobs finish first.
pub async fn run(
    config: &Config,
    queue: RedisQueue,
    deps: Arc<Deps>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let file = match &config.schedules_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("SCHEDULES_FILE {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let schedules = schedule::parse_schedules(&config.schedules, file.as_deref())
        .map_err(|e| anyhow::anyhow!("SCHEDULES: {e}"))?;
    let backend = queue.backend::<WeatherJob>(config.concurrency as usize);
    let scheduler = tokio::spawn(
        schedule::Scheduler::new(
            schedules,
            &queue,
            TracedProducer::new(queue.clone(), deps.propagation.clone())
                .with_metrics(deps.metrics.clone()),
            deps.propagation.clone(),
            backend.consumer().to_owned(),
        )
        .run(),
    );
    tracing::info!(
        addr = %listener.local_addr()?,
        queue = %queue.config().name,
        consumer = backend.consumer(),
        concurrency = config.concurrency,
        "worker started"
    );
    let tracing = ConsumerTracing::new(&queue, deps.propagation.clone())
        .mode(config.trace_mode)
        .metrics(deps.metrics.clone())
        .error_type(job::JobError::classify);
    let (stop_relay, relay_stop) = tokio::sync::watch::channel(false);
    let relay = deps.events.clone().map(|producer| {
        tokio::spawn(
            outbox::Relay::new(
                queue.clone(),
                producer,
                deps.propagation.clone(),
                deps.outbox_gauges.clone(),
                backend.consumer().to_owned(),
                config.kafka_relay_batch as usize,
            )
            .run(relay_stop),
        )
    });
    let routes = telemetry::messaging::metrics_routes(deps.metrics.clone(), queue);
    let worker = WorkerBuilder::new(backend.consumer().to_owned())
        .backend(backend)
        // Each job runs as a task of its own on the runtime, so a worker
        // uses every core it is given (apalis otherwise polls every job
        // inside the worker's one future, on one thread). The task is
        // aborted when its future is dropped (a timeout, the end of the
        // grace), as the job itself would be without the spawn.
        .parallelize(spawn_owned)
        .layer(tracing)
        .catch_panic()
        .data(deps)
        .build(process);
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        axum::serve(listener, routes)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await
    });
    let (stopping, stop_asked) = tokio::sync::oneshot::channel::<()>();
    let run = worker.run_until(async move {
        shutdown.await;
        tracing::info!("stopping: running jobs get to finish");
        let _ = stopping.send(());
        Ok::<(), std::io::Error>(())
    });
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let grace_over = async move {
        if stop_asked.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let ran = tokio::select! {
        ran = run => ran,
        () = grace_over => {
            tracing::warn!(
                grace_secs = config.shutdown_grace_secs,
                "jobs still running after the shutdown grace; they run again elsewhere once \
                 their lease expires"
            );
            Ok(())
        }
    };
    scheduler.abort();
    if let Some(relay) = relay {
        // A round under way gets two seconds to finish (else its events are
        // sent again by another relay, and counted once); events not yet
        // sent stay in the outbox for the other workers' relays.
        let _ = stop_relay.send(true);
        if tokio::time::timeout(Duration::from_secs(2), relay)
            .await
            .is_err()
        {
            tracing::warn!(
                "the outbox relay was still waiting for Kafka at shutdown; its events stay in the outbox"
            );
        }
    }
    let _ = stop_http.send(());
    let _ = http.await;
    ran?;
    Ok(())
}

//! The alerts service: the downstream consumer of the worker's
//! `weather.updated` events.
//!
//! - It reads the topic in a Kafka consumer group and runs each record in
//!   a CONSUMER span `process weather.updated` that continues the job's
//!   trace (its parent is the worker's PRODUCER span, read from the record
//!   headers, plus a link), the `telemetry` crate's
//!   [`telemetry::kafka::process_span`] (`consumer.rs`).
//! - It applies the rules of its settings (wind at or above
//!   `ALERT_WIND_KMH`, temperature at or above `ALERT_HEAT_C` or at or
//!   below `ALERT_FROST_C`, `rules.rs`) and keeps the newest alerts in
//!   Redis (`store.rs`).
//! - Delivery is at least once: a record's offset is stored for commit
//!   only once it is processed (commits go out every
//!   `KAFKA_COMMIT_INTERVAL_MS`, and at a clean stop), and Redis remembers
//!   each event id (the job id) in the same script that stores its alerts,
//!   so a record delivered again (the service died before its commit)
//!   changes nothing: its span says `alerts.duplicate=true`.
//! - It serves the alerts (`GET /v1/alerts`), `/healthz` and `/metrics`
//!   (`alerts_raised_total{kind}`, `alerts_events_total{result}`, and the
//!   messaging metrics of the consumed records) (`http.rs`).

mod config;
mod consumer;
mod http;
mod lanes;
mod rules;
mod store;
mod topic;

use std::sync::Arc;
use std::time::Duration;

use telemetry::metrics::Metrics;
use telemetry::propagation::Propagation;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
pub use http::app;
pub use rules::{Alert, Rules};
pub use store::AlertStore;

use consumer::{Counters, Ctx, Subscription};

/// Runs the service until `shutdown` completes: the consumer finishes the
/// record in hand (uncommitted records are delivered again to the group).
pub async fn run(
    config: Config,
    propagation: Propagation,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let brokers = config.brokers()?;
    let counters = Counters::new();
    let metrics = Arc::new(Metrics::with(|registry| counters.register(registry)));
    let ca = config.redis_ca()?;
    // A malformed URL is a settings error, reported at once.
    redis_job_queue::RedisTarget::open(config.redis_url.expose(), ca.as_deref())
        .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
    let (stop, stopped) = watch::channel(false);
    let store = AlertStore::connect(
        config.redis_url.expose(),
        ca.as_deref(),
        &config.key_prefix,
        config.keep,
        Duration::from_secs(config.dedup_secs),
        stopped.clone(),
    )
    .await?;
    let ctx = Arc::new(Ctx {
        propagation: propagation.clone(),
        rules: config.rules(),
        store: store.clone(),
        metrics: metrics.clone(),
        counters,
        topic: config.kafka.kafka_topic.clone(),
        group: config.group.clone(),
        server: telemetry::kafka::first_broker(&brokers),
    });
    let subscription =
        Subscription::start(&config, &brokers, ctx.counters.topic_lost.clone()).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        brokers = %brokers,
        topic = %config.kafka.kafka_topic,
        group = %config.group,
        "alerts started"
    );

    let app = app(store, propagation, metrics);
    let mut http_stopped = stopped.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stopped.wait_for(|s| *s).await;
            })
            .await
    });
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("stopping: the record in hand is finished first");
        let _ = stop.send(true);
    });
    subscription.consume(ctx, stopped).await;
    let _ = http.await;
    Ok(())
}

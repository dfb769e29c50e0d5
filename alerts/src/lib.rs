//! The alerts service: the downstream consumer of the worker's
//! `weather.updated` events.
//!
//! - It reads the topic in a Kafka consumer group and runs each record in
//!   a CONSUMER span `process weather.updated` that continues the job's
//!   trace (its parent is the worker's PRODUCER span, read from the record
//!   headers, plus a link), the `telemetry` crate's
//!   [`telemetry::kafka::process_span`].
//! - It applies the rules of its settings (wind at or above
//!   `ALERT_WIND_KMH`, temperature at or above `ALERT_HEAT_C` or at or
//!   below `ALERT_FROST_C`) and keeps the newest alerts in Redis.
//! - Delivery is at least once: a record's offset is stored for commit
//!   only once it is processed (commits go out every
//!   `KAFKA_COMMIT_INTERVAL_MS`, and at a clean stop), and Redis remembers
//!   each event id (the job id) in the same script that stores its alerts,
//!   so a record delivered again (the service died before its commit)
//!   changes nothing: its span says `alerts.duplicate=true`.
//! - It serves the alerts (`GET /v1/alerts`), `/healthz` and `/metrics`
//!   (`alerts_raised_total{kind}`, `alerts_events_total{result}`, and the
//!   messaging metrics of the consumed records).

mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use opentelemetry::trace::TraceContextExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use serde::{Deserialize, Serialize};
use telemetry::TelemetryArgs;
use telemetry::attributes::{ALERTS_DUPLICATE, ALERTS_RAISED, ERROR_TYPE, MESSAGING_MESSAGE_ID};
use telemetry::metrics::{Metrics, OutcomeLabels};
use telemetry::propagation::Propagation;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use weather_jobs::WeatherUpdated;
use weather_jobs::settings::{KafkaArgs, RedisUrl};

pub use store::AlertStore;

/// The alerts service's settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "alerts",
    version,
    about = "Raise alerts from the weather.updated events on Kafka"
)]
pub struct Config {
    /// Address of the HTTP endpoint (`/v1/alerts`, `/healthz`, `/metrics`).
    #[arg(long, env = "ALERTS_LISTEN", default_value = "0.0.0.0:9300")]
    pub listen: SocketAddr,
    /// Kafka and the topic to read.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The consumer group: services in one group share the partitions.
    #[arg(long, env = "KAFKA_GROUP", default_value = "alerts")]
    pub group: String,
    /// How long the group waits for a silent member before handing its
    /// partitions to the others, in milliseconds.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u32,
    /// How often the offsets of processed records are committed, in
    /// milliseconds. Records processed since the last commit come again
    /// after a crash, and are recognised.
    #[arg(long, env = "KAFKA_COMMIT_INTERVAL_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub commit_interval_ms: u32,
    /// Partitions of the topic, when this service creates it.
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_partitions: i32,
    /// Replicas of the topic, when this service creates it.
    #[arg(long, env = "KAFKA_TOPIC_REPLICATION", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_replication: i32,
    /// Redis URL: the alerts and the event ids already processed.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: RedisUrl,
    /// PEM file of the root certificate(s) to trust for a `rediss://`
    /// server, in place of the system's (a private CA).
    #[arg(long, env = "REDIS_CA_CERT")]
    pub redis_ca_cert: Option<std::path::PathBuf>,
    /// Prefix of the service's Redis keys.
    #[arg(long, env = "ALERTS_KEY_PREFIX", default_value = "alerts")]
    pub key_prefix: String,
    /// Wind alert: at or above this speed, km/h.
    #[arg(long, env = "ALERT_WIND_KMH", default_value_t = 60.0)]
    pub wind_kmh: f64,
    /// Heat alert: at or above this temperature, °C.
    #[arg(
        long,
        env = "ALERT_HEAT_C",
        default_value_t = 35.0,
        allow_negative_numbers = true
    )]
    pub heat_c: f64,
    /// Frost alert: at or below this temperature, °C.
    #[arg(long, env = "ALERT_FROST_C", default_value_t = -10.0, allow_negative_numbers = true)]
    pub frost_c: f64,
    /// Alerts kept (the newest).
    #[arg(long, env = "ALERTS_KEEP", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub keep: u32,
    /// How long an event id is remembered, to recognise a record delivered
    /// again, in seconds.
    #[arg(long, env = "ALERTS_DEDUP_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub dedup_secs: u64,
    /// Tracing and logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// The thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Wind at or above, km/h.
    pub wind_kmh: f64,
    /// Temperature at or above, °C.
    pub heat_c: f64,
    /// Temperature at or below, °C.
    pub frost_c: f64,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `wind`, `heat` or `frost`.
    pub kind: String,
    /// The event that raised it (the weather job's id).
    pub event_id: String,
    /// The place's name.
    pub place: String,
    /// The place's key (the event's Kafka key).
    pub key: String,
    /// Latitude, degrees.
    pub latitude: f64,
    /// Longitude, degrees.
    pub longitude: f64,
    /// The measured value, in `unit`.
    pub value: f64,
    /// The rule's threshold, in `unit`.
    pub threshold: f64,
    /// `km/h` or `°C`.
    pub unit: String,
    /// When the weather was fetched.
    pub fetched_at: String,
    /// When the alert was raised (RFC 3339).
    pub raised_at: String,
    /// The trace of the job that led to it.
    pub trace_id: Option<String>,
}

impl Rules {
    /// The alerts `event` raises (kind, value, threshold, unit).
    pub fn check(&self, event: &WeatherUpdated) -> Vec<(&'static str, f64, f64, &'static str)> {
        let (wind, temperature) = (event.wind_kmh(), event.temperature_c());
        let mut raised = Vec::new();
        if wind >= self.wind_kmh {
            raised.push(("wind", wind, self.wind_kmh, "km/h"));
        }
        if temperature >= self.heat_c {
            raised.push(("heat", temperature, self.heat_c, "°C"));
        }
        if temperature <= self.frost_c {
            raised.push(("frost", temperature, self.frost_c, "°C"));
        }
        raised
    }
}

/// Labels of `alerts_raised_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Labels of `alerts_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    /// `new`, `duplicate` or `invalid`.
    result: String,
}

/// What processing a record needs.
struct Ctx {
    propagation: Propagation,
    rules: Rules,
    store: AlertStore,
    metrics: Arc<Metrics>,
    raised: Family<KindLabels, Counter>,
    events: Family<ResultLabels, Counter>,
    topic: String,
    group: String,
    server: (String, u16),
}

/// What became of a record.
#[derive(Debug, PartialEq, Eq)]
enum Handled {
    /// Processed (or recognised): commit it.
    Done,
    /// Stopping before it was stored: leave it uncommitted, to be
    /// delivered again.
    Stopped,
}

/// Runs the service until `shutdown` completes: the consumer finishes the
/// record in hand (uncommitted records are delivered again to the group).
pub async fn run(
    config: Config,
    propagation: Propagation,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let brokers = config
        .kafka
        .kafka_brokers
        .clone()
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("KAFKA_BROKERS is required: the brokers to read from"))?;
    let raised = Family::<KindLabels, Counter>::default();
    let events = Family::<ResultLabels, Counter>::default();
    for kind in ["wind", "heat", "frost"] {
        raised
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc_by(0);
    }
    for result in ["new", "duplicate", "invalid"] {
        events
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc_by(0);
    }
    let metrics = Arc::new(Metrics::with(|registry| {
        registry.register("alerts_raised", "Alerts raised, by kind", raised.clone());
        registry.register(
            "alerts_events",
            "Weather events read: new, delivered again (duplicate), or unreadable (invalid)",
            events.clone(),
        );
    }));
    let ca = match &config.redis_ca_cert {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("REDIS_CA_CERT {}: {e}", path.display()))?,
        ),
        None => None,
    };
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
        rules: Rules {
            wind_kmh: config.wind_kmh,
            heat_c: config.heat_c,
            frost_c: config.frost_c,
        },
        store: store.clone(),
        metrics: metrics.clone(),
        raised,
        events,
        topic: config.kafka.kafka_topic.clone(),
        group: config.group.clone(),
        server: telemetry::kafka::first_broker(&brokers),
    });
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &config.group)
        .set("client.id", "alerts")
        // At least once: the offset of a record is stored once it is
        // processed, and stored offsets are committed in the background.
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            config.commit_interval_ms.to_string(),
        )
        .set("reconnect.backoff.max.ms", "2000")
        // An event waits at most this long in the broker for company.
        .set("fetch.wait.max.ms", "100")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .create()?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    let topic = NewTopic::new(
        &config.kafka.kafka_topic,
        config.topic_partitions,
        TopicReplication::Fixed(config.topic_replication),
    );
    ensure_topic(&admin, &topic).await;
    consumer.subscribe(&[&config.kafka.kafka_topic])?;
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
    consume(&ctx, &consumer, &admin, &topic, stopped).await;
    let _ = http.await;
    Ok(())
}

/// Creates the topic unless it exists (a broker that is down is tried
/// again when the consumer finds the topic missing).
async fn ensure_topic(admin: &AdminClient<DefaultClientContext>, topic: &NewTopic<'_>) {
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(5)))
        .request_timeout(Some(Duration::from_secs(5)));
    match admin.create_topics([topic], &options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(name) => tracing::info!(topic = %name, "topic created"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        tracing::warn!(topic = %name, error = %code, "cannot create the topic")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot create the topic (is Kafka up?)"),
    }
}

/// Reads, processes and commits records until told to stop.
async fn consume(
    ctx: &Ctx,
    consumer: &StreamConsumer,
    admin: &AdminClient<DefaultClientContext>,
    topic: &NewTopic<'_>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut last_warning: Option<Instant> = None;
    loop {
        let received = tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            received = consumer.recv() => received,
        };
        match received {
            Ok(record) => {
                if handle(ctx, &record).await == Handled::Stopped {
                    return;
                }
                if let Err(e) = consumer.store_offset_from_message(&record) {
                    tracing::warn!(error = %e, "cannot store the offset: the record may come again");
                }
            }
            Err(e) => {
                // A broker that lost the topic (or never had it).
                if matches!(
                    e,
                    KafkaError::MessageConsumption(
                        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
                    )
                ) {
                    ensure_topic(admin, topic).await;
                }
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(error = %e, "cannot read from Kafka");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Processes one record in its CONSUMER span.
async fn handle(ctx: &Ctx, record: &BorrowedMessage<'_>) -> Handled {
    let span = telemetry::kafka::process_span(&ctx.propagation, record, &ctx.group, &ctx.server);
    let started = Instant::now();
    let payload = record.payload().unwrap_or_default();
    let (handled, error) = process(ctx, payload, &span).instrument(span.clone()).await;
    if let Some(error) = error {
        span.record("otel.status_code", "ERROR");
        span.record(ERROR_TYPE, error);
    }
    if handled == Handled::Done {
        let outcome = OutcomeLabels::new(&ctx.topic, error);
        Metrics::count(&ctx.metrics.jobs_processed, &outcome);
        Metrics::observe_in(
            &span,
            &ctx.metrics.process_duration,
            &outcome,
            started.elapsed(),
        );
    }
    handled
}

/// Decodes the event, applies the rules and stores the alerts with the
/// event's id; answers the `error.type` of an event it cannot read.
async fn process(
    ctx: &Ctx,
    payload: &[u8],
    span: &tracing::Span,
) -> (Handled, Option<&'static str>) {
    let count = |result: &str| {
        ctx.events
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    };
    let event: WeatherUpdated = match serde_json::from_slice(payload) {
        Ok(event) => event,
        Err(e) => {
            // Not ours to fix: skipped (and committed), so it cannot block
            // the partition.
            tracing::warn!(error = %e, "unreadable weather event skipped");
            count("invalid");
            return (Handled::Done, Some("invalid_event"));
        }
    };
    span.record(MESSAGING_MESSAGE_ID, event.job_id.as_str());
    let trace = span.context().span().span_context().clone();
    let trace_id = trace.is_valid().then(|| trace.trace_id().to_string());
    let raised_at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let alerts: Vec<Alert> = ctx
        .rules
        .check(&event)
        .into_iter()
        .map(|(kind, value, threshold, unit)| Alert {
            kind: kind.into(),
            event_id: event.job_id.clone(),
            place: event.place.clone(),
            key: event.key.clone(),
            latitude: event.latitude,
            longitude: event.longitude,
            value,
            threshold,
            unit: unit.into(),
            fetched_at: event.fetched_at.clone(),
            raised_at: raised_at.clone(),
            trace_id: trace_id.clone(),
        })
        .collect();
    let Some(stored) = ctx.store.record(&event.job_id, &alerts).await else {
        return (Handled::Stopped, None);
    };
    match stored {
        store::Stored::New => {
            count("new");
            span.set_attribute(ALERTS_DUPLICATE, false);
            span.set_attribute(ALERTS_RAISED, alerts.len() as i64);
            for alert in &alerts {
                ctx.raised
                    .get_or_create(&KindLabels {
                        kind: alert.kind.clone(),
                    })
                    .inc();
                tracing::info!(
                    kind = %alert.kind,
                    place = %alert.place,
                    value = alert.value,
                    threshold = alert.threshold,
                    "alert raised"
                );
            }
        }
        store::Stored::Duplicate => {
            count("duplicate");
            span.set_attribute(ALERTS_DUPLICATE, true);
            span.set_attribute(ALERTS_RAISED, 0);
            tracing::info!(event_id = %event.job_id, "event delivered again: already processed");
        }
    }
    (Handled::Done, None)
}

/// `GET /v1/alerts`'s query.
#[derive(Debug, Deserialize)]
struct Recent {
    limit: Option<String>,
}

/// The newest alerts first, at most `limit` (1 to 1000, default 50).
async fn recent(
    State(store): State<AlertStore>,
    q: Result<Query<Recent>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return telemetry::http_server::problem(
            StatusCode::BAD_REQUEST,
            "the query takes one `limit`, a whole number from 1 to 1000",
        );
    };
    let limit = match q.limit.as_deref().map(str::parse::<u32>) {
        None => 50,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return telemetry::http_server::problem(
                StatusCode::BAD_REQUEST,
                "limit must be a whole number from 1 to 1000",
            );
        }
    };
    match store.recent(limit).await {
        Ok(alerts) => Json(serde_json::json!({ "alerts": alerts })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the alerts");
            telemetry::http_server::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the alert store (Redis) is unavailable",
            )
        }
    }
}

/// The service's routes.
pub fn app(store: AlertStore, propagation: Propagation, metrics: Arc<Metrics>) -> Router {
    let ops = telemetry::metrics::routes(metrics.clone(), |_| async {});
    Router::new()
        .route("/v1/alerts", get(recent))
        .with_state(store)
        .fallback(|| async {
            telemetry::http_server::problem(StatusCode::NOT_FOUND, "no such endpoint")
        })
        .layer(axum::middleware::from_fn_with_state(
            telemetry::http_server::HttpTelemetry {
                propagation,
                metrics: Some(metrics),
            },
            telemetry::http_server::trace_request,
        ))
        .merge(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weather_jobs::Source;

    fn event(temperature: f64, unit_t: &str, wind: f64, unit_w: &str) -> WeatherUpdated {
        WeatherUpdated {
            job_id: "j".into(),
            key: "city:oslo".into(),
            place: "Oslo".into(),
            country: None,
            latitude: 59.9,
            longitude: 10.7,
            temperature,
            temperature_unit: unit_t.into(),
            wind_speed: wind,
            wind_speed_unit: unit_w.into(),
            weather_code: 0,
            source: Source::Upstream,
            fetched_at: String::new(),
        }
    }

    #[test]
    fn rules_fire_at_their_thresholds_in_any_units() {
        let rules = Rules {
            wind_kmh: 60.0,
            heat_c: 35.0,
            frost_c: -10.0,
        };
        let kinds = |e: &WeatherUpdated| -> Vec<&str> {
            rules.check(e).into_iter().map(|(k, ..)| k).collect()
        };
        assert!(kinds(&event(20.0, "°C", 59.9, "km/h")).is_empty());
        assert_eq!(kinds(&event(35.0, "°C", 60.0, "km/h")), ["wind", "heat"]);
        assert_eq!(kinds(&event(-10.0, "°C", 0.0, "km/h")), ["frost"]);
        // 14 °F is -10 °C; 40 mp/h is 64 km/h.
        assert_eq!(kinds(&event(14.0, "°F", 40.0, "mp/h")), ["wind", "frost"]);
    }
}

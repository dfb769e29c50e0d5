//! The Kafka side: the consumer in its group, the loop that reads,
//! processes and commits records, and each record's CONSUMER span.
//!
//! Delivery is at least once: a record's offset is stored for commit only
//! once it is processed; the store recognises an event delivered again.
//! Each partition is processed in a lane of its own ([`crate::lanes`]), so
//! a record that cannot be stored holds up its own partition only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::TraceContextExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rdkafka::ClientConfig;
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use telemetry::attributes::{ALERTS_DUPLICATE, ALERTS_RAISED, ERROR_TYPE, MESSAGING_MESSAGE_ID};
use telemetry::metrics::{Metrics, OutcomeLabels};
use telemetry::propagation::Propagation;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use weather_jobs::WeatherUpdated;

use crate::config::Config;
use crate::lanes::{Flow, Lanes};
use crate::rules::{KINDS, Rules};
use crate::store::{AlertStore, Stored};
use crate::topic::Keeper;

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

/// The service's own metrics: alerts raised, and events read.
#[derive(Clone, Default)]
pub(crate) struct Counters {
    raised: Family<KindLabels, Counter>,
    events: Family<ResultLabels, Counter>,
    /// Times the topic was found gone and created again.
    pub(crate) topic_lost: Counter,
}

impl Counters {
    /// Every series at 0, so rates work from the start.
    pub(crate) fn new() -> Self {
        let counters = Self::default();
        for kind in KINDS {
            counters
                .raised
                .get_or_create(&KindLabels { kind: kind.into() })
                .inc_by(0);
        }
        for result in ["new", "duplicate", "invalid", "store_failed"] {
            counters.events_of(result).inc_by(0);
        }
        counters
    }

    /// Registers them beside the shared metrics.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "alerts_raised",
            "Alerts raised, by kind",
            self.raised.clone(),
        );
        registry.register(
            "alerts_topic_lost",
            "Times the topic was found gone (deleted, or lost with a broker's data) and created again",
            self.topic_lost.clone(),
        );
        registry.register(
            "alerts_events",
            "Weather events read: new, delivered again (duplicate), unreadable (invalid), or refused by Redis for good (store_failed)",
            self.events.clone(),
        );
    }

    fn events_of(&self, result: &str) -> Counter {
        self.events
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .clone()
    }
}

/// What processing a record needs.
pub(crate) struct Ctx {
    pub(crate) propagation: Propagation,
    pub(crate) rules: Rules,
    pub(crate) store: AlertStore,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) counters: Counters,
    /// `messaging.destination.name` of the metrics.
    pub(crate) topic: String,
    /// `messaging.consumer.group.name` of the spans.
    pub(crate) group: String,
    /// `server.address` and `server.port` of the spans: the first broker.
    pub(crate) server: (String, u16),
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

/// The consumer, subscribed to the topic, and the keeper of the topic
/// (`topic.rs`), which creates it again when a broker loses it.
pub(crate) struct Subscription<'a> {
    consumer: Arc<StreamConsumer>,
    keeper: Keeper<'a>,
}

impl<'a> Subscription<'a> {
    /// Joins the group of `config` on `brokers`, creating the topic
    /// unless it exists; `lost` counts the times the topic vanished.
    pub(crate) async fn start(
        config: &'a Config,
        brokers: &str,
        lost: Counter,
    ) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
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
            // A topic created again is seen within seconds, not minutes.
            .set("topic.metadata.refresh.interval.ms", "5000")
            .create()?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()?;
        let consumer = Arc::new(consumer);
        let keeper = Keeper {
            consumer: consumer.clone(),
            admin,
            topic: NewTopic::new(
                &config.kafka.kafka_topic,
                config.topic_partitions,
                TopicReplication::Fixed(config.topic_replication),
            ),
            lost,
        };
        keeper.ensure().await;
        consumer.subscribe(&[&config.kafka.kafka_topic])?;
        Ok(Self { consumer, keeper })
    }

    /// Reads records until told to stop, each partition's processed and
    /// committed in its own lane.
    pub(crate) async fn consume(&self, ctx: Arc<Ctx>, stopped: watch::Receiver<bool>) {
        tokio::join!(self.keeper.watch(stopped.clone()), self.read(ctx, stopped));
    }

    async fn read(&self, ctx: Arc<Ctx>, mut stopped: watch::Receiver<bool>) {
        let flow = Pauser {
            consumer: &self.consumer,
            topic: self.keeper.topic.name,
        };
        let for_lanes = stopped.clone();
        let mut lanes = Lanes::new(|_partition, records| {
            lane(
                ctx.clone(),
                self.consumer.clone(),
                records,
                for_lanes.clone(),
            )
        });
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut last_warning: Option<Instant> = None;
        loop {
            let received = tokio::select! {
                _ = stopped.wait_for(|s| *s) => break,
                _ = tick.tick() => {
                    lanes.unblock(&flow);
                    continue;
                }
                received = self.consumer.recv() => received,
            };
            match received {
                Ok(record) => {
                    let partition = record.partition();
                    lanes.offer(partition, record.detach(), &flow);
                }
                Err(e) => {
                    // Errors are events in the consumer's queue, one each
                    // time librdkafka finds every broker down (twice a
                    // second through an outage): read them at once, or a
                    // long outage leaves a backlog that holds up the
                    // records after it for as long again. A topic that
                    // vanished is the keeper's (`topic.rs`).
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        last_warning = Some(Instant::now());
                        tracing::warn!(error = %e, "cannot read from Kafka");
                    }
                }
            }
        }
        lanes.close().await;
    }
}

/// Pauses and resumes partitions of the topic at the consumer.
struct Pauser<'a> {
    consumer: &'a StreamConsumer,
    topic: &'a str,
}

impl Pauser<'_> {
    fn set(&self, partition: i32, pause: bool) {
        let mut list = TopicPartitionList::new();
        list.add_partition(self.topic, partition);
        let done = if pause {
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        match done {
            Ok(()) if pause => {
                tracing::warn!(
                    partition,
                    "a partition's records are not keeping up: paused"
                );
            }
            Ok(()) => tracing::info!(partition, "the partition is going again: resumed"),
            // Revoked meanwhile: its next owner reads it.
            Err(e) => tracing::debug!(partition, error = %e, "cannot pause or resume"),
        }
    }
}

impl Flow for Pauser<'_> {
    fn pause(&self, partition: i32) {
        self.set(partition, true);
    }

    fn resume(&self, partition: i32) {
        self.set(partition, false);
    }
}

/// One partition's task: its records in order, each processed and then
/// its offset stored; ends with its queue, or at a stop (the record in
/// hand is finished or left uncommitted).
async fn lane(
    ctx: Arc<Ctx>,
    consumer: Arc<StreamConsumer>,
    mut records: mpsc::Receiver<OwnedMessage>,
    stopped: watch::Receiver<bool>,
) {
    while let Some(record) = records.recv().await {
        if *stopped.borrow() || handle(&ctx, &record).await == Handled::Stopped {
            return;
        }
        if let Err(e) = consumer.store_offset(record.topic(), record.partition(), record.offset()) {
            tracing::warn!(error = %e, "cannot store the offset: the record may come again");
        }
    }
}

/// Processes one record in its CONSUMER span.
async fn handle(ctx: &Ctx, record: &OwnedMessage) -> Handled {
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
    let count = |result: &str| ctx.counters.events_of(result).inc();
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
    let alerts = ctx.rules.alerts(&event, &raised_at, trace_id.as_deref());
    let Some(stored) = ctx.store.record(&event.job_id, &alerts).await else {
        return (Handled::Stopped, None);
    };
    match stored {
        Stored::New => {
            count("new");
            span.set_attribute(ALERTS_DUPLICATE, false);
            span.set_attribute(ALERTS_RAISED, alerts.len() as i64);
            for alert in &alerts {
                ctx.counters
                    .raised
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
        Stored::Duplicate => {
            count("duplicate");
            span.set_attribute(ALERTS_DUPLICATE, true);
            span.set_attribute(ALERTS_RAISED, 0);
            tracing::info!(event_id = %event.job_id, "event delivered again: already processed");
        }
        // Given up (the store logged why): committed, so one event that
        // cannot be written does not hold up the ones after it.
        Stored::Failed(code) => {
            count("store_failed");
            return (Handled::Done, Some(code));
        }
    }
    (Handled::Done, None)
}

//! Tracing across Kafka, the event-stream half of the messaging pattern
//! (the job queue is the other, in `messaging`):
//!
//! - **Producer side**: [`EventProducer::send`] sends a record inside a
//!   PRODUCER span `send {topic}` whose parent is the context it is given
//!   (the span that published the event: a job's, read back from the
//!   queue's outbox) and whose context goes into the record's headers (W3C
//!   `traceparent`, `tracestate`, `baggage`, plus B3 when configured). The
//!   future it answers resolves when the broker acknowledges the record
//!   (the span then gets the partition and offset and ends) or gives up on
//!   it within the delivery timeout; the caller, the outbox relay, keeps
//!   the event until then. Records go out in the order they are sent, and
//!   a retried request never overtakes a later one (one request in flight
//!   per broker connection).
//! - **Consumer side**: [`process_span`] opens the CONSUMER span `process
//!   {topic}` of a received record: its parent is the producer's span, read
//!   from the headers, and it links to it, as for a job.
//!
//! Both spans carry the Kafka conventions: `messaging.system=kafka`, the
//! topic, partition, offset and `messaging.kafka.message.key`, and the
//! broker as `server.address`/`server.port` (the Zipkin exporter makes it
//! the remote endpoint `kafka`, so the dependency graph draws
//! producer → kafka → consumer).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::attributes::{
    ERROR_TYPE, JOB_OUTBOX_WAIT_MS, MESSAGING_CONSUMER_GROUP_NAME, MESSAGING_DESTINATION_NAME,
    MESSAGING_DESTINATION_PARTITION_ID, MESSAGING_KAFKA_MESSAGE_KEY, MESSAGING_KAFKA_OFFSET,
    MESSAGING_MESSAGE_BODY_SIZE, MESSAGING_MESSAGE_ID, MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE, MESSAGING_SYSTEM, SERVER_ADDRESS, SERVER_PORT,
};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::propagation::Propagation;

/// `messaging.system` of the Kafka spans.
pub const MESSAGING_SYSTEM_KAFKA: &str = "kafka";

/// Where and how an [`EventProducer`] publishes.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// `host:port` of the brokers, comma-separated.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// Most records waiting for the broker at once (the caller sends no
    /// more than this before it awaits their acknowledgements).
    pub buffer: u32,
    /// How long a record may wait for the broker (a down broker, say)
    /// before its send fails.
    pub delivery_timeout: Duration,
}

/// The first broker of a `host:port,…` list, as `server.address` and
/// `server.port`.
pub fn first_broker(brokers: &str) -> (String, u16) {
    let first = brokers.split(',').next().unwrap_or_default().trim();
    match first.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_matches(['[', ']']).to_owned(),
            port.parse().unwrap_or(9092),
        ),
        None => (first.to_owned(), 9092),
    }
}

struct Inner {
    producer: FutureProducer,
    topic: String,
    /// `send {topic}`, made once.
    span_name: String,
    server: (String, u16),
    propagation: Propagation,
    metrics: Option<Arc<Metrics>>,
}

/// Sends records to one topic inside PRODUCER spans (see the module
/// docs). Cheap to clone.
#[derive(Clone)]
pub struct EventProducer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("topic", &self.inner.topic)
            .field("server", &self.inner.server)
            .finish()
    }
}

impl EventProducer {
    /// A producer for `settings.topic`, writing trace context with
    /// `propagation` and counting sends in `metrics`'
    /// `messaging_client_sent_messages_total`. Connects lazily: a broker
    /// that is down now is not an error.
    pub fn new(
        settings: &ProducerSettings,
        propagation: Propagation,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, KafkaError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set(
                "queue.buffering.max.messages",
                settings.buffer.max(1).to_string(),
            )
            .set(
                "message.timeout.ms",
                settings.delivery_timeout.as_millis().max(1).to_string(),
            )
            // A request retried after a lost answer must not overtake the
            // next: events of one key stay in order.
            .set("max.in.flight.requests.per.connection", "1")
            .set("linger.ms", "5")
            // Back soon after the broker is.
            .set("reconnect.backoff.max.ms", "2000")
            .create()?;
        Ok(Self {
            inner: Arc::new(Inner {
                producer,
                topic: settings.topic.clone(),
                span_name: format!("send {}", settings.topic),
                server: first_broker(&settings.brokers),
                propagation,
                metrics,
            }),
        })
    }

    /// Sends `payload` under `key` inside a PRODUCER span `send {topic}`
    /// whose parent is `parent` (the context of the span that published
    /// the event), `message_id` naming it in the span, and
    /// `outbox_wait` (how long the event waited to be sent) on it. The
    /// record is queued at once, in order; the answer resolves when the
    /// broker has it, or with the `error.type` of why not. Must run inside
    /// a tokio runtime.
    pub fn send(
        &self,
        parent: &opentelemetry::Context,
        key: &str,
        message_id: &str,
        payload: &[u8],
        outbox_wait: Duration,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + use<> {
        let inner = &self.inner;
        let span = tracing::info_span!(
            target: "telemetry::kafka::producer",
            parent: None,
            "send",
            otel.name = inner.span_name.as_str(),
            otel.kind = "producer",
            { MESSAGING_SYSTEM } = MESSAGING_SYSTEM_KAFKA,
            { MESSAGING_OPERATION_NAME } = "send",
            { MESSAGING_OPERATION_TYPE } = "send",
            { MESSAGING_DESTINATION_NAME } = inner.topic.as_str(),
            { MESSAGING_KAFKA_MESSAGE_KEY } = key,
            { MESSAGING_MESSAGE_ID } = message_id,
            { MESSAGING_MESSAGE_BODY_SIZE } = payload.len() as u64,
            { SERVER_ADDRESS } = inner.server.0.as_str(),
            { SERVER_PORT } = inner.server.1,
            { JOB_OUTBOX_WAIT_MS } = outbox_wait.as_millis() as u64,
            { MESSAGING_DESTINATION_PARTITION_ID } = Empty,
            { MESSAGING_KAFKA_OFFSET } = Empty,
            otel.status_code = Empty,
            { ERROR_TYPE } = Empty,
        );
        let _ = span.set_parent(parent.clone());
        let mut headers = OwnedHeaders::new();
        for (name, value) in inner.propagation.inject_record(&span.context()) {
            headers = headers.insert(Header {
                key: &name,
                value: Some(&value),
            });
        }
        let record = FutureRecord::to(&inner.topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        let queued = inner.producer.send_result(record).map_err(|(e, _)| e);
        let this = self.clone();
        async move {
            let error = match queued {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(d)) => {
                        span.record(MESSAGING_DESTINATION_PARTITION_ID, d.partition.to_string());
                        span.record(MESSAGING_KAFKA_OFFSET, d.offset);
                        None
                    }
                    Ok(Err((e, _))) => Some(error_type(&e)),
                    // The producer went away with the record.
                    Err(_) => Some("cancelled".to_owned()),
                },
                Err(e) => Some(error_type(&e)),
            };
            this.settle(&span, error.as_deref());
            error.map_or(Ok(()), Err)
        }
    }

    /// Records a record's fate on its span and in the metrics.
    fn settle(&self, span: &tracing::Span, error: Option<&str>) {
        let inner = &self.inner;
        if let Some(error) = error {
            span.record("otel.status_code", "ERROR");
            span.record(ERROR_TYPE, error);
            tracing::warn!(
                parent: span,
                topic = %inner.topic,
                error.type = error,
                "the broker did not take the event; it stays in the outbox and is sent again"
            );
        }
        if let Some(metrics) = &inner.metrics {
            Metrics::count(&metrics.jobs_sent, &OutcomeLabels::new(&inner.topic, error));
        }
    }
}

/// A low-cardinality `error.type` for a Kafka error.
fn error_type(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => "buffer_full".into(),
        Some(RDKafkaErrorCode::MessageTimedOut) => "timeout".into(),
        Some(code) => format!("{code:?}").to_ascii_lowercase(),
        None => "kafka".into(),
    }
}

/// The CONSUMER span `process {topic}` of a received record, in consumer
/// group `group` of the brokers at `server`: its parent is the span that
/// published it (from the headers), and it links to it. A record without
/// a trace context starts a new trace. `messaging.message.id` is left to
/// record once the payload is read.
pub fn process_span<M: Message>(
    propagation: &Propagation,
    record: &M,
    group: &str,
    server: &(String, u16),
) -> tracing::Span {
    let headers: Vec<(&str, &str)> = record
        .headers()
        .map(|h| {
            h.iter()
                .filter_map(|h| Some((h.key, std::str::from_utf8(h.value?).ok()?)))
                .collect()
        })
        .unwrap_or_default();
    let producer = propagation.extract_record(headers);
    let producer_span = producer.span().span_context().clone();
    let topic = record.topic();
    let key = record
        .key()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let span = tracing::info_span!(
        target: "telemetry::kafka::consumer",
        "process",
        otel.name = %format!("process {topic}"),
        otel.kind = "consumer",
        { MESSAGING_SYSTEM } = MESSAGING_SYSTEM_KAFKA,
        { MESSAGING_OPERATION_NAME } = "process",
        { MESSAGING_OPERATION_TYPE } = "process",
        { MESSAGING_DESTINATION_NAME } = topic,
        { MESSAGING_CONSUMER_GROUP_NAME } = group,
        { MESSAGING_DESTINATION_PARTITION_ID } = record.partition().to_string(),
        { MESSAGING_KAFKA_OFFSET } = record.offset(),
        { MESSAGING_KAFKA_MESSAGE_KEY } = key.as_ref(),
        { MESSAGING_MESSAGE_BODY_SIZE } = record.payload().map_or(0, <[u8]>::len) as u64,
        { SERVER_ADDRESS } = server.0.as_str(),
        { SERVER_PORT } = server.1,
        { MESSAGING_MESSAGE_ID } = Empty,
        otel.status_code = Empty,
        { ERROR_TYPE } = Empty,
    );
    if producer_span.is_valid() {
        let _ = span.set_parent(producer);
        span.add_link(producer_span);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_broker_names_the_server() {
        assert_eq!(
            first_broker("127.0.0.1:19092,other:9092"),
            ("127.0.0.1".into(), 19092)
        );
        assert_eq!(first_broker("kafka"), ("kafka".into(), 9092));
        assert_eq!(first_broker("[::1]:9093"), ("::1".into(), 9093));
    }
}

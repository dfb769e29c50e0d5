//! Every attribute name the project's spans and logs use, in one place.
//!
//! Names the OpenTelemetry semantic conventions define come from the
//! `opentelemetry-semantic-conventions` crate (messaging is still marked
//! experimental there). Our own namespaces, `job.*` and `weather.*`, are for
//! what the conventions have no name for.
//!
//! In `tracing` macros a constant is written in braces:
//! `tracing::info_span!("send", { MESSAGING_SYSTEM } = "redis")`.

pub use opentelemetry_semantic_conventions::attribute::{
    DB_OPERATION_NAME, DB_QUERY_TEXT, DB_SYSTEM_NAME, ERROR_TYPE, HTTP_REQUEST_METHOD,
    HTTP_REQUEST_RESEND_COUNT, HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE,
    MESSAGING_BATCH_MESSAGE_COUNT, MESSAGING_CONSUMER_GROUP_NAME, MESSAGING_DESTINATION_NAME,
    MESSAGING_DESTINATION_PARTITION_ID, MESSAGING_KAFKA_MESSAGE_KEY, MESSAGING_KAFKA_OFFSET,
    MESSAGING_MESSAGE_BODY_SIZE, MESSAGING_MESSAGE_ID, MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE, MESSAGING_SYSTEM, OTEL_SCOPE_NAME, OTEL_STATUS_CODE, SERVER_ADDRESS,
    SERVER_PORT, URL_FULL, URL_PATH, URL_SCHEME,
};
pub use opentelemetry_semantic_conventions::resource::SERVICE_NAME;

/// The remote service a CLIENT span calls (`weather-service`), which
/// Zipkin shows as the span's remote endpoint. The conventions have renamed
/// it `service.peer.name`; Zipkin's tooling and Jaeger still read
/// `peer.service`, so it keeps that name here.
pub const PEER_SERVICE: &str = "peer.service";

/// The job's id (also `messaging.message.id` on messaging spans); log lines
/// about a job carry it too.
pub const JOB_ID: &str = "job.id";
/// The attempt number of a job, from 1.
pub const JOB_ATTEMPT: &str = "job.attempt";
/// How long the job waited in the queue before this attempt started, in
/// milliseconds.
pub const JOB_QUEUE_WAIT_MS: &str = "job.queue_wait_ms";
/// On a PRODUCER span: the push repeated an idempotent one (same key, same
/// job) and enqueued nothing.
pub const JOB_REPEAT: &str = "job.repeat";
/// On a PRODUCER span: how long after the push the job may run, in
/// milliseconds (delayed jobs).
pub const JOB_DELAY_MS: &str = "job.delay_ms";
/// The job's priority lane: `high`, `normal` or `low` (on a batch's
/// PRODUCER span only when every job shares it).
pub const JOB_PRIORITY: &str = "job.priority";
/// On a batch's PRODUCER span: the batch's id, which lists its jobs.
pub const JOB_BATCH_ID: &str = "job.batch_id";
/// How the CONSUMER span relates to the PRODUCER span: `parent` or `link`.
pub const JOB_TRACE_MODE: &str = "job.trace_mode";
/// How long this run deferred its job (it could not even try: a circuit
/// breaker or rate limit refused it), in ms; a deferred run is no attempt.
pub const JOB_DEFERRED_MS: &str = "job.deferred_ms";
/// How long a job's event waited in the outbox before the relay sent it,
/// in ms (on the PRODUCER span that sends it).
pub const JOB_OUTBOX_WAIT_MS: &str = "job.outbox_wait_ms";
/// Whether the weather cache had the answer (on the cache lookup span and
/// on the job's span).
pub const WEATHER_CACHE_HIT: &str = "weather.cache.hit";
/// On the alerts service's CONSUMER span: how many alerts the event raised.
pub const ALERTS_RAISED: &str = "alerts.raised";
/// On the alerts service's CONSUMER span: the event was delivered again
/// and had been processed already (nothing changed).
pub const ALERTS_DUPLICATE: &str = "alerts.duplicate";

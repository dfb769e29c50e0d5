//! Tracing across a `redis-job-queue` queue, as reusable parts (the
//! Celery-style pattern, OpenTelemetry messaging conventions):
//!
//! - **Producer side**: [`TracedProducer`] pushes jobs inside a PRODUCER
//!   span `send {queue}` and writes that span's context (W3C `traceparent`,
//!   `tracestate`, `baggage`) into each job's metadata.
//! - **Consumer side**: [`ConsumerTracing`], an apalis (tower) layer, runs
//!   each attempt inside a CONSUMER span `process {queue}` that resumes the
//!   producer as its parent (plus a link) or, in [`TraceMode::Link`], only
//!   links to it; links each retry to the attempt before it; records the
//!   attempt, the queue wait, the outcome and `error.type`; and feeds the
//!   messaging metrics.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use apalis_core::worker::builder::WorkerBuilder;
//! # use redis_job_queue::{NewJob, RedisQueue};
//! # use telemetry::messaging::{ConsumerTracing, TracedProducer};
//! # async fn f(queue: RedisQueue, propagation: telemetry::propagation::Propagation) -> Result<(), Box<dyn std::error::Error>> {
//! # async fn handler(n: u32) -> Result<u32, apalis_core::error::BoxDynError> { Ok(n) }
//! let producer = TracedProducer::new(queue.clone(), propagation.clone());
//! let sent = producer.send(NewJob::new(&7u32)?).await?; // sent.trace_id: the caller's trace
//!
//! WorkerBuilder::new("worker")
//!     .backend(queue.backend::<u32>(8))
//!     .layer(ConsumerTracing::new(&queue, propagation))
//!     .build(handler)
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! `messaging.system` is `redis`: the conventions have no value for a
//! Redis Streams queue, and naming the broker makes Zipkin's dependency
//! graph draw producer → redis → consumer.

mod consumer;
mod producer;

use std::sync::Arc;

use axum::Router;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use redis_job_queue::{Priority, QueueError, QueueStats, RedisQueue};

use crate::metrics::{LaneLabels, Metrics, QueueLabels};

pub use consumer::{ConsumerTracing, TraceMode, TracedConsumer};
pub use producer::{Sent, SentBatch, TracedProducer};

/// `messaging.system` of the queue's spans.
pub const MESSAGING_SYSTEM_REDIS: &str = "redis";

/// Job metadata key holding the `traceparent` of the previous attempt's
/// CONSUMER span, so each retry links to the attempt before it.
pub const PREVIOUS_ATTEMPT: &str = "otel.previous_attempt";
/// Job metadata naming the job's own trace mode (`parent` or `link`), in
/// place of the consumer's default ([`TraceMode::metadata`]).
pub const TRACE_MODE: &str = "job.trace_mode";

/// `error.type` of a job refused because its id is taken.
const DUPLICATE_ID: &str = "duplicate_id";

/// A low-cardinality `error.type` for a queue error.
fn queue_error_type(e: &QueueError) -> &'static str {
    match e {
        QueueError::Redis(_) | QueueError::Batch(_) => "redis",
        QueueError::Timeout(_) => "timeout",
        QueueError::Closed => "closed",
        QueueError::DuplicateId(_) => DUPLICATE_ID,
        QueueError::IdempotencyConflict(_) => "idempotency_conflict",
        QueueError::Encode(_) => "encode",
        QueueError::Invalid(_) => "invalid",
        QueueError::Corrupt { .. } => "corrupt",
        QueueError::Config(_) => "config",
        QueueError::NotReplicated { .. } => "not_replicated",
    }
}

impl Metrics {
    /// Sets the queue gauges from a fresh snapshot of queue `queue`.
    fn set_queue(&self, queue: &str, stats: &QueueStats) {
        let labels = QueueLabels {
            messaging_destination_name: queue.to_owned(),
        };
        let set = |family: &Family<QueueLabels, Gauge>, v: u64| {
            family
                .get_or_create(&labels)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.queue_depth, stats.waiting);
        set(&self.in_flight, stats.in_flight);
        set(&self.delayed, stats.delayed);
        set(&self.failed, stats.failed);
        set(&self.live_workers, stats.live_consumers);
        set(&self.paused, u64::from(stats.paused));
        let normal = stats
            .waiting
            .saturating_sub(stats.waiting_high + stats.waiting_low);
        for (priority, n) in [
            (Priority::High, stats.waiting_high),
            (Priority::Normal, normal),
            (Priority::Low, stats.waiting_low),
        ] {
            let labels = LaneLabels {
                messaging_destination_name: queue.to_owned(),
                job_priority: priority.as_str().to_owned(),
            };
            self.waiting
                .get_or_create(&labels)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// `GET /healthz` and `GET /metrics` of a service using `queue`: each
/// scrape reads the queue gauges from Redis first. Redis being down costs
/// only the gauges' freshness, never the scrape.
pub fn metrics_routes(metrics: Arc<Metrics>, queue: RedisQueue) -> Router {
    crate::ops::routes(metrics, move |metrics: Arc<Metrics>| {
        let queue = queue.clone();
        async move {
            match queue.stats().await {
                Ok(stats) => metrics.set_queue(&queue.config().name, &stats),
                Err(e) => tracing::warn!(error = %e, "cannot read queue stats for /metrics"),
            }
            // Read again at every scrape: a Redis restarted with another
            // policy shows here, not only at the service's start.
            if let Ok(nodes) = queue.eviction_policies().await {
                let evicting = nodes.iter().filter(|n| n.evicts()).count();
                metrics
                    .evicting
                    .get_or_create(&QueueLabels {
                        messaging_destination_name: queue.config().name.clone(),
                    })
                    .set(i64::try_from(evicting).unwrap_or(i64::MAX));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_gauges_follow_the_stats() {
        let m = Metrics::new();
        let stats = QueueStats {
            waiting: 7,
            waiting_high: 4,
            waiting_low: 1,
            in_flight: 2,
            delayed: 1,
            failed: 3,
            live_consumers: 2,
            enqueued_total: 0,
            succeeded_total: 0,
            failed_total: 0,
            retried_total: 0,
            deferred_total: 0,
            paused: true,
        };
        m.set_queue("weather", &stats);
        let text = m.openmetrics();
        for line in [
            r#"jobs_queue_depth{messaging_destination_name="weather"} 7"#,
            r#"jobs_waiting{messaging_destination_name="weather",job_priority="high"} 4"#,
            r#"jobs_waiting{messaging_destination_name="weather",job_priority="normal"} 2"#,
            r#"jobs_waiting{messaging_destination_name="weather",job_priority="low"} 1"#,
            r#"jobs_in_flight{messaging_destination_name="weather"} 2"#,
            r#"jobs_delayed{messaging_destination_name="weather"} 1"#,
            r#"jobs_failed{messaging_destination_name="weather"} 3"#,
            r#"jobs_live_workers{messaging_destination_name="weather"} 2"#,
            r#"jobs_queue_paused{messaging_destination_name="weather"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}

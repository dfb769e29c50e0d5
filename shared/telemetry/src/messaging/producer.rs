//! The producer side: push jobs inside a PRODUCER span, its context
//! injected into each job's metadata.

use std::sync::Arc;

use opentelemetry::trace::TraceContextExt;
use redis_job_queue::{NewJob, Pushed, QueueError, RedisQueue, ServerAddress};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{DUPLICATE_ID, MESSAGING_SYSTEM_REDIS, queue_error_type};
use crate::attributes::{
    ERROR_TYPE, JOB_BATCH_ID, JOB_DELAY_MS, JOB_PRIORITY, JOB_REPEAT,
    MESSAGING_BATCH_MESSAGE_COUNT, MESSAGING_DESTINATION_NAME, MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION_NAME, MESSAGING_OPERATION_TYPE, MESSAGING_SYSTEM, SERVER_ADDRESS,
    SERVER_PORT,
};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::propagation::Propagation;

/// A job pushed by [`TracedProducer::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The job's id.
    pub id: String,
    /// The push repeated an idempotent one: nothing was enqueued, and `id`
    /// is the job the first push made.
    pub repeat: bool,
    /// The trace the job continues (32 hex digits), sampled or not; `None`
    /// when tracing is disabled (`OTEL_SDK_DISABLED`).
    pub trace_id: Option<String>,
}

/// Jobs pushed by [`TracedProducer::send_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentBatch {
    /// Per job and in order, whether it was enqueued (`false`: a job with
    /// that id already exists and was left untouched).
    pub enqueued: Vec<bool>,
    /// The trace every job of the batch continues (`None` when tracing is
    /// disabled).
    pub trace_id: Option<String>,
}

/// Pushes jobs onto a queue inside PRODUCER spans (`send {queue}`, child
/// of the current span), with the span's context in each job's metadata so
/// the worker resumes the trace. Counts what it sends in
/// `messaging_client_sent_messages_total` when given metrics. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct TracedProducer {
    queue: RedisQueue,
    propagation: Propagation,
    metrics: Option<Arc<Metrics>>,
}

impl TracedProducer {
    /// A producer for `queue`, writing job metadata with `propagation`.
    pub fn new(queue: RedisQueue, propagation: Propagation) -> Self {
        Self {
            queue,
            propagation,
            metrics: None,
        }
    }

    /// Counts sent jobs in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Pushes one job inside a PRODUCER span whose `messaging.message.id`
    /// is the job's id.
    pub async fn send(&self, job: NewJob) -> Result<Sent, QueueError> {
        let id = job.id().to_owned();
        let node = self.queue.node_of(&id);
        let span = self.span(Some(&id), None, &node);
        span.record(JOB_PRIORITY, job.priority().as_str());
        if let Some(delay) = job.delay() {
            span.record(JOB_DELAY_MS, delay.as_millis() as u64);
        }
        let trace_id = trace_id(&span);
        let pushed = async {
            let job = job.with_metadata_map(self.carrier());
            let pushed = self.queue.push_once(job).await;
            match &pushed {
                Ok(Pushed::Repeat(_)) => {
                    tracing::Span::current().record(JOB_REPEAT, true);
                }
                other => self.outcome(other.as_ref().err(), 1),
            }
            pushed
        }
        .instrument(span.clone());
        let (pushed, answered) = self.queue.observe(&id, pushed).await;
        crate::db::record_answered(&span, &node, &answered);
        let pushed = pushed?;
        Ok(Sent {
            repeat: matches!(pushed, Pushed::Repeat(_)),
            id: pushed.id().to_owned(),
            trace_id,
        })
    }

    /// Pushes many jobs inside one PRODUCER span carrying
    /// `messaging.batch.message_count`; every job gets its context.
    pub async fn send_batch(&self, jobs: Vec<NewJob>) -> Result<SentBatch, QueueError> {
        // The node named is the one holding the first job's shard (a batch
        // over several shards reaches several).
        let first = jobs.first().map(|j| j.id().to_owned()).unwrap_or_default();
        let node = self.queue.node_of(&first);
        let span = self.span(None, Some(jobs.len()), &node);
        if let Some(first) = jobs.first()
            && jobs.iter().all(|j| j.priority() == first.priority())
        {
            span.record(JOB_PRIORITY, first.priority().as_str());
        }
        if let Some(batch) = jobs.first().and_then(NewJob::batch)
            && jobs.iter().all(|j| j.batch() == Some(batch))
        {
            span.record(JOB_BATCH_ID, batch);
        }
        let trace_id = trace_id(&span);
        let enqueued = async {
            let carrier = self.carrier();
            let count = jobs.len() as u64;
            let jobs = jobs
                .into_iter()
                .map(|job| job.with_metadata_map(carrier.clone()))
                .collect();
            let pushed = self.queue.push_batch(jobs).await;
            match &pushed {
                Ok(enqueued) => {
                    let sent = enqueued.iter().filter(|e| **e).count() as u64;
                    self.outcome(None, sent);
                    // Refused ids are not an error of the call, only of
                    // those jobs.
                    self.count(Some(DUPLICATE_ID), count - sent);
                }
                Err(e) => self.outcome(Some(e), count),
            }
            pushed
        }
        .instrument(span.clone());
        let (enqueued, answered) = self.queue.observe(&first, enqueued).await;
        crate::db::record_answered(&span, &node, &answered);
        let enqueued = enqueued?;
        Ok(SentBatch { enqueued, trace_id })
    }

    /// The PRODUCER span, with every messaging attribute set at its start
    /// so samplers can use them.
    fn span(
        &self,
        message_id: Option<&str>,
        batch: Option<usize>,
        server: &ServerAddress,
    ) -> tracing::Span {
        let queue = &self.queue.config().name;
        tracing::info_span!(
            "send",
            otel.name = %format!("send {queue}"),
            otel.kind = "producer",
            { MESSAGING_SYSTEM } = MESSAGING_SYSTEM_REDIS,
            { MESSAGING_OPERATION_NAME } = "send",
            { MESSAGING_OPERATION_TYPE } = "send",
            { MESSAGING_DESTINATION_NAME } = %queue,
            { MESSAGING_MESSAGE_ID } = message_id,
            { MESSAGING_BATCH_MESSAGE_COUNT } = batch,
            { SERVER_ADDRESS } = %server.address,
            { SERVER_PORT } = server.port,
            { JOB_DELAY_MS } = Empty,
            { JOB_BATCH_ID } = Empty,
            { JOB_PRIORITY } = Empty,
            { JOB_REPEAT } = Empty,
            otel.status_code = Empty,
            { ERROR_TYPE } = Empty,
        )
    }

    /// The current (PRODUCER) span's context, as job metadata.
    fn carrier(&self) -> std::collections::BTreeMap<String, String> {
        self.propagation
            .inject_job(&tracing::Span::current().context())
    }

    /// Records the outcome of a call that pushed `n` jobs: on the current
    /// span when it failed, and in the metrics.
    fn outcome(&self, error: Option<&QueueError>, n: u64) {
        let error_type = error.map(queue_error_type);
        if let Some(error_type) = error_type {
            let span = tracing::Span::current();
            span.record("otel.status_code", "ERROR");
            span.record(ERROR_TYPE, error_type);
        }
        self.count(error_type, n);
    }

    /// Counts `n` jobs sent, or not sent for `error_type`.
    fn count(&self, error_type: Option<&str>, n: u64) {
        if let Some(metrics) = &self.metrics
            && n > 0
        {
            let labels = OutcomeLabels::new(&self.queue.config().name, error_type);
            metrics.jobs_sent.get_or_create(&labels).inc_by(n);
        }
    }
}

/// The trace id of `span`, sampled or not; `None` when there is no
/// tracing layer (`OTEL_SDK_DISABLED`).
fn trace_id(span: &tracing::Span) -> Option<String> {
    let sc = span.context().span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

//! The consumer side: an apalis layer that runs each attempt of a job in a
//! CONSUMER span resuming the producer's trace.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use futures::FutureExt;
use futures::future::BoxFuture;
use opentelemetry::trace::TraceContextExt;
use redis_job_queue::{Defer, JobLease, RedisQueue};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{MESSAGING_SYSTEM_REDIS, PREVIOUS_ATTEMPT};
use crate::attributes::{
    ERROR_TYPE, JOB_ATTEMPT, JOB_DEFERRED_MS, JOB_ID, JOB_PRIORITY, JOB_QUEUE_WAIT_MS,
    JOB_TRACE_MODE, MESSAGING_CONSUMER_GROUP_NAME, MESSAGING_DESTINATION_NAME,
    MESSAGING_MESSAGE_ID, MESSAGING_OPERATION_NAME, MESSAGING_OPERATION_TYPE, MESSAGING_SYSTEM,
    SERVER_ADDRESS, SERVER_PORT,
};
use crate::metrics::{Metrics, OutcomeLabels, QueueLabels};
use crate::propagation::Propagation;

/// How a job's CONSUMER span relates to the PRODUCER span that sent it.
/// The consumer has a default; a job may name its own in its metadata
/// ([`Self::metadata`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceMode {
    /// Child of the producer (one tree per job, Celery-style), plus a link.
    #[default]
    Parent,
    /// A new trace per job, linked to the producer (fan-out, scheduled work).
    Link,
}

impl TraceMode {
    /// `parent` or `link`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parent => "parent",
            Self::Link => "link",
        }
    }

    /// The mode named `s` (`parent` or `link`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "parent" => Some(Self::Parent),
            "link" => Some(Self::Link),
            _ => None,
        }
    }

    /// The job metadata entry that gives a job this mode.
    pub fn metadata(self) -> (&'static str, &'static str) {
        (super::TRACE_MODE, self.as_str())
    }
}

/// Names the low-cardinality `error.type` of a failed attempt, given the
/// error the handler returned; `None` when it does not know the error.
type ErrorTyper = dyn Fn(&(dyn Error + 'static)) -> Option<Cow<'static, str>> + Send + Sync;

/// What every traced attempt shares.
#[derive(Clone)]
struct Settings {
    propagation: Propagation,
    mode: TraceMode,
    queue: String,
    /// `process {queue}`, made once.
    span_name: String,
    group: String,
    /// The queue, to name the node that holds each job's shard.
    nodes: RedisQueue,
    metrics: Option<Arc<Metrics>>,
    error_type: Arc<ErrorTyper>,
}

/// An apalis layer that runs every attempt of a job from a
/// `redis-job-queue` backend inside a CONSUMER span `process {queue}`:
///
/// - its parent is the producer's span, read from the job's metadata, and
///   it links to it ([`TraceMode::Parent`]); or it starts a new trace that
///   only links to it ([`TraceMode::Link`]). A job sent without a trace
///   context starts a new trace; an unsampled one stays unsampled;
/// - a retry also links to the span of the attempt before it;
/// - it carries the messaging attributes, `job.id`, `job.attempt` and
///   `job.queue_wait_ms` from its start; a failure sets status ERROR and
///   `error.type`;
/// - with metrics, it observes the queue wait, counts the attempt by
///   outcome and observes its duration, with the trace as exemplar.
///
/// Add it with `WorkerBuilder::layer` before other layers (such as
/// `catch_panic`), so that it sees what they make of the handler's result.
/// Tasks that do not come from a `redis-job-queue` backend (no
/// `JobLease`) pass through untraced.
#[derive(Clone)]
pub struct ConsumerTracing {
    settings: Arc<Settings>,
}

impl fmt::Debug for ConsumerTracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerTracing")
            .field("queue", &self.settings.queue)
            .field("mode", &self.settings.mode)
            .finish()
    }
}

impl ConsumerTracing {
    /// Traces the jobs of `queue`, reading their trace context with
    /// `propagation`, in [`TraceMode::Parent`] and without metrics.
    pub fn new(queue: &RedisQueue, propagation: Propagation) -> Self {
        Self {
            settings: Arc::new(Settings {
                propagation,
                mode: TraceMode::Parent,
                queue: queue.config().name.clone(),
                span_name: format!("process {}", queue.config().name),
                group: queue.consumer_group().to_owned(),
                nodes: queue.clone(),
                metrics: None,
                error_type: Arc::new(|_| None),
            }),
        }
    }

    fn set(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(Arc::make_mut(&mut self.settings));
        self
    }

    /// How each job's span relates to its producer's.
    pub fn mode(self, mode: TraceMode) -> Self {
        self.set(|s| s.mode = mode)
    }

    /// Feeds the messaging metrics in `metrics`.
    pub fn metrics(self, metrics: Arc<Metrics>) -> Self {
        self.set(|s| s.metrics = Some(metrics))
    }

    /// Names the `error.type` of failed attempts. `classify` gets each
    /// error in the chain the handler returned (the error itself, then its
    /// sources, so errors wrapped in `AbortError` are found too); the first
    /// name it gives wins. Errors it names none for are `_OTHER`, as the
    /// conventions say.
    pub fn error_type<F>(self, classify: F) -> Self
    where
        F: Fn(&(dyn Error + 'static)) -> Option<Cow<'static, str>> + Send + Sync + 'static,
    {
        self.set(|s| s.error_type = Arc::new(classify))
    }
}

impl<S> Layer<S> for ConsumerTracing {
    type Service = TracedConsumer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TracedConsumer {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// The service made by [`ConsumerTracing`].
#[derive(Clone)]
pub struct TracedConsumer<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> fmt::Debug for TracedConsumer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedConsumer")
            .field("queue", &self.settings.queue)
            .finish()
    }
}

impl<S, Args, Res> Service<Task<Args>> for TracedConsumer<S>
where
    S: Service<Task<Args>, Response = Res>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<Res, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let Some(lease) = task.data().get::<JobLease>().cloned() else {
            return self.inner.call(task).map(|r| r.map_err(Into::into)).boxed();
        };
        let settings = self.settings.clone();
        let span = settings.span(&task, &lease);
        let fut = span.in_scope(|| self.inner.call(task));
        if let Some(metrics) = &settings.metrics {
            let queue = QueueLabels {
                messaging_destination_name: settings.queue.clone(),
            };
            Metrics::observe_in(&span, &metrics.queue_wait, &queue, lease.queue_wait());
        }
        let mut attempt = Attempt {
            span: span.clone(),
            lease,
            settings,
            started: Instant::now(),
            ended: false,
        };
        async move {
            let result = fut.await.map_err(Into::into);
            let error = result.as_ref().err();
            let error_type = error.map(|e| attempt.settings.classify(e.as_ref()));
            let deferred = error
                .and_then(|e| Defer::find(e.as_ref()))
                .filter(|d| attempt.lease.may_defer(d.delay()));
            match (deferred, error_type) {
                (Some(defer), Some(why)) => attempt.defer(defer, &why),
                (_, error_type) => attempt.end(error_type),
            }
            result
        }
        .instrument(span)
        .boxed()
    }
}

/// One attempt under way: records its outcome when it ends, or, when its
/// future is dropped first (the queue's timeout cut it short, or the
/// worker was stopped hard), records that instead.
struct Attempt {
    span: tracing::Span,
    lease: JobLease,
    settings: Arc<Settings>,
    started: Instant,
    ended: bool,
}

impl Attempt {
    fn end(&mut self, error_type: Option<Cow<'static, str>>) {
        self.ended = true;
        let settings = &self.settings;
        if let Some(error_type) = &error_type {
            self.span.record("otel.status_code", "ERROR");
            self.span.record(ERROR_TYPE, error_type.as_ref());
            // Kept with a failed job, to re-drive failed jobs by type.
            self.lease.set_error_type(error_type.as_ref());
            // The next attempt, if any (a retry, or a re-drive once
            // failed), links to this one.
            self.link_next_run();
        }
        if let Some(metrics) = &settings.metrics {
            let outcome = OutcomeLabels::new(&settings.queue, error_type.as_deref());
            Metrics::count(&metrics.jobs_processed, &outcome);
            Metrics::observe_in(
                &self.span,
                &metrics.process_duration,
                &outcome,
                self.started.elapsed(),
            );
        }
    }

    /// Has the job's next run link to this one.
    fn link_next_run(&self) {
        if let Some(tp) = self
            .settings
            .propagation
            .inject_job(&self.span.context())
            .remove("traceparent")
        {
            self.lease.carry_to_next_attempt(PREVIOUS_ATTEMPT, tp);
        }
    }

    /// Records a run that deferred its job (the queue runs it again with
    /// the same attempt number): not an error, but said on the span, with
    /// the reason typed `why` in the metrics.
    fn defer(&mut self, defer: &Defer, why: &str) {
        self.ended = true;
        let delay_ms = defer.delay().as_millis() as u64;
        self.span.record(JOB_DEFERRED_MS, delay_ms);
        tracing::info!(
            parent: &self.span,
            reason = %defer.reason(),
            { JOB_DEFERRED_MS } = delay_ms,
            { ERROR_TYPE } = why,
            "deferred: the job could not run now, and this run is not counted as an attempt"
        );
        self.link_next_run();
        if let Some(metrics) = &self.settings.metrics {
            let outcome = OutcomeLabels::deferred(&self.settings.queue, why);
            Metrics::count(&metrics.jobs_processed, &outcome);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.ended {
            let why = if self.lease.timed_out() {
                "timeout"
            } else {
                "cancelled"
            };
            self.end(Some(Cow::Borrowed(why)));
        }
    }
}

impl Settings {
    /// The CONSUMER span of one attempt, every attribute set at its start,
    /// with its parent and links.
    fn span<Args>(&self, task: &Task<Args>, lease: &JobLease) -> tracing::Span {
        let metadata = task.metadata();
        let producer = self
            .propagation
            .extract_job(metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let producer_span = producer.span().span_context().clone();
        let queue = self.queue.as_str();
        let server = self.nodes.node_of(&lease.id);
        let span = tracing::info_span!(
            "process",
            otel.name = self.span_name.as_str(),
            otel.kind = "consumer",
            { MESSAGING_SYSTEM } = MESSAGING_SYSTEM_REDIS,
            { MESSAGING_OPERATION_NAME } = "process",
            { MESSAGING_OPERATION_TYPE } = "process",
            { MESSAGING_DESTINATION_NAME } = queue,
            { MESSAGING_CONSUMER_GROUP_NAME } = self.group.as_str(),
            { MESSAGING_MESSAGE_ID } = lease.id.as_str(),
            { SERVER_ADDRESS } = server.address.as_str(),
            { SERVER_PORT } = server.port,
            { JOB_ID } = lease.id.as_str(),
            { JOB_ATTEMPT } = lease.attempt,
            { JOB_QUEUE_WAIT_MS } = lease.queue_wait().as_millis() as u64,
            { JOB_PRIORITY } = lease.priority().as_str(),
            { JOB_TRACE_MODE } = Empty,
            { JOB_DEFERRED_MS } = Empty,
            otel.status_code = Empty,
            { ERROR_TYPE } = Empty,
        );
        let mode = metadata
            .get(super::TRACE_MODE)
            .and_then(TraceMode::parse)
            .unwrap_or(self.mode);
        span.record(JOB_TRACE_MODE, mode.as_str());
        if mode == TraceMode::Parent {
            let _ = span.set_parent(producer);
        }
        if producer_span.is_valid() {
            span.add_link(producer_span);
        }
        if let Some(previous) = metadata.get(PREVIOUS_ATTEMPT) {
            let cx = self.propagation.extract_job([("traceparent", previous)]);
            let previous = cx.span().span_context().clone();
            if previous.is_valid() {
                span.add_link(previous);
            }
        }
        span
    }

    /// The `error.type` of a failed attempt's error.
    fn classify(&self, error: &(dyn Error + 'static)) -> Cow<'static, str> {
        std::iter::successors(Some(error), |&e| e.source())
            .find_map(|e| (self.error_type)(e))
            .unwrap_or(Cow::Borrowed("_OTHER"))
    }
}

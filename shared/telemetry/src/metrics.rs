//! Prometheus metrics of the api and the workers: one registry per process
//! (`prometheus-client`, the official Rust client, because it writes
//! exemplars; the OpenTelemetry Prometheus exporter cannot).
//!
//! Names follow the OpenTelemetry semantic conventions as Prometheus renders
//! them (dots become underscores, the unit and `_total` are suffixed);
//! where the conventions have no metric, names start with `jobs_`. A
//! service adds metrics of its own with [`Metrics::with`]. Histograms
//! carry exemplars with the `trace_id` of the request or job they measured,
//! so a slow bucket leads to its trace.

use std::sync::LazyLock;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry, Unit};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The exemplar of a measurement: the trace it belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    /// 32 hex digits, as Zipkin shows it.
    pub trace_id: String,
}

/// The exemplar for `span`, if it is sampled (an unsampled trace cannot be
/// looked up).
fn exemplar_of(span: &tracing::Span) -> Option<TraceExemplar> {
    let cx = span.context();
    let span = cx.span();
    let sc = span.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| TraceExemplar {
        trace_id: sc.trace_id().to_string(),
    })
}

/// The `outcome` and `error_type` label values of a result: `success` with
/// no error type, or `failure` with its low-cardinality `error.type`.
fn outcome(error_type: Option<&str>) -> (String, String) {
    match error_type {
        None => ("success".into(), String::new()),
        Some(t) => ("failure".into(), t.to_owned()),
    }
}

/// `http.server.request.duration` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpServerLabels {
    /// `GET`, `POST`, ...
    pub http_request_method: String,
    /// The route template (`/v1/jobs/{id}`), empty when none matched.
    pub http_route: String,
    /// The answer's status.
    pub http_response_status_code: u16,
}

/// `http.client.request.duration` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpClientLabels {
    /// The remote service (`weather-service`).
    pub peer_service: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// Low-cardinality failure cause, empty on success.
    pub error_type: String,
}

impl HttpClientLabels {
    /// The labels of a call to `peer_service` that failed with
    /// `error_type`, or succeeded (`None`).
    pub fn new(peer_service: &str, error_type: Option<&str>) -> Self {
        let (outcome, error_type) = outcome(error_type);
        Self {
            peer_service: peer_service.to_owned(),
            outcome,
            error_type,
        }
    }
}

/// Labels of a queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue name.
    pub messaging_destination_name: String,
}

/// Labels of a queue's priority lane.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabels {
    /// The queue name.
    pub messaging_destination_name: String,
    /// `high`, `normal` or `low`.
    pub job_priority: String,
}

/// Labels of a job outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The queue name.
    pub messaging_destination_name: String,
    /// `success`, `failure`, or (for a job's run) `deferred`.
    pub outcome: String,
    /// Low-cardinality failure cause, empty on success.
    pub error_type: String,
}

impl OutcomeLabels {
    /// The labels of a send or an attempt on `queue` that failed with
    /// `error_type`, or succeeded (`None`).
    pub fn new(queue: &str, error_type: Option<&str>) -> Self {
        let (outcome, error_type) = outcome(error_type);
        Self {
            messaging_destination_name: queue.to_owned(),
            outcome,
            error_type,
        }
    }

    /// The labels of a run on `queue` that deferred its job, for the
    /// reason typed `error_type` (no attempt: see `redis_job_queue::Defer`).
    pub fn deferred(queue: &str, error_type: &str) -> Self {
        Self {
            messaging_destination_name: queue.to_owned(),
            outcome: "deferred".into(),
            error_type: error_type.to_owned(),
        }
    }
}

/// Makes histograms with fixed buckets.
#[derive(Clone, Copy, Debug)]
pub struct Buckets(&'static [f64]);

impl MetricConstructor<HistogramWithExemplars<TraceExemplar>> for Buckets {
    fn new_metric(&self) -> HistogramWithExemplars<TraceExemplar> {
        HistogramWithExemplars::new(self.0.iter().copied())
    }
}

/// Seconds, from 1 ms to 30 s (HTTP and job durations).
const LATENCY: Buckets = Buckets(&[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
]);
/// Seconds, from 1 ms to 10 min (time spent waiting in the queue).
const WAIT: Buckets = Buckets(&[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
]);

/// Histograms with trace exemplars, one per label set.
pub type Histograms<L> = Family<L, HistogramWithExemplars<TraceExemplar>, Buckets>;

/// Why spans were dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `queue_full` (the exporter fell behind: the collector is slow,
    /// down, or never answers) or `export_failed` (the collector refused
    /// them, or could not be reached).
    pub reason: String,
}

/// Spans never delivered, by reason, in every registry of the process
/// (the span processor has no handle on a registry).
pub static SPANS_DROPPED: LazyLock<Family<DropLabels, Counter>> = LazyLock::new(Family::default);

/// Counts `n` spans dropped for `reason`.
pub(crate) fn spans_dropped(reason: &str, n: u64) {
    SPANS_DROPPED
        .get_or_create(&DropLabels {
            reason: reason.to_owned(),
        })
        .inc_by(n);
}

/// Registers `metric`, with its unit when it has one.
fn register(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: impl Metric,
) {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric),
        None => registry.register(name, help, metric),
    }
}

/// Declares [`Metrics`] from one table: each row is a field, its type, how
/// it is made, and the name, help and unit it is registered under.
macro_rules! metrics {
    ($(
        $(#[$doc:meta])*
        $vis:vis $field:ident: $ty:ty = $make:expr, $name:literal, $help:literal, $unit:expr;
    )*) => {
        /// Every metric of a process, and the registry that renders them.
        #[derive(Debug)]
        pub struct Metrics {
            registry: Registry,
            $( $(#[$doc])* $vis $field: $ty, )*
        }

        impl Metrics {
            /// A registry with every metric of the table, and what `extra`
            /// registers beside them (a service's own metrics).
            pub fn with(extra: impl FnOnce(&mut Registry)) -> Self {
                let mut registry = Registry::default();
                $(
                    let $field: $ty = $make;
                    register(&mut registry, $name, $help, $unit, $field.clone());
                )*
                // Both series exist from the start, so rates work from 0.
                spans_dropped("queue_full", 0);
                spans_dropped("export_failed", 0);
                register(
                    &mut registry,
                    "otel_spans_dropped",
                    "Spans never delivered to the trace collector, by reason",
                    None,
                    SPANS_DROPPED.clone(),
                );
                extra(&mut registry);
                Self { registry, $($field,)* }
            }
        }
    };
}

metrics! {
    /// `http_server_request_duration_seconds`.
    pub http_server_duration: Histograms<HttpServerLabels> = Family::new_with_constructor(LATENCY),
        "http_server_request_duration", "Duration of HTTP server requests", Some(Unit::Seconds);
    /// `http_client_request_duration_seconds`.
    pub http_client_duration: Histograms<HttpClientLabels> = Family::new_with_constructor(LATENCY),
        "http_client_request_duration", "Duration of HTTP client requests", Some(Unit::Seconds);
    /// `messaging_client_sent_messages_total`: jobs enqueued.
    pub jobs_sent: Family<OutcomeLabels, Counter> = Family::default(),
        "messaging_client_sent_messages", "Jobs sent to the queue", None;
    /// `messaging_client_consumed_messages_total`: job attempts processed.
    pub jobs_processed: Family<OutcomeLabels, Counter> = Family::default(),
        "messaging_client_consumed_messages", "Job attempts processed, by outcome", None;
    /// `messaging_process_duration_seconds`: time to process a job.
    pub process_duration: Histograms<OutcomeLabels> = Family::new_with_constructor(LATENCY),
        "messaging_process_duration", "Time to process a job attempt", Some(Unit::Seconds);
    /// `jobs_queue_wait_duration_seconds`: push to pickup.
    pub queue_wait: Histograms<QueueLabels> = Family::new_with_constructor(WAIT),
        "jobs_queue_wait_duration", "Time a job waited in the queue before a worker took it",
        Some(Unit::Seconds);
    /// `jobs_queue_depth`: jobs waiting for a worker.
    pub queue_depth: Family<QueueLabels, Gauge> = Family::default(),
        "jobs_queue_depth", "Jobs waiting for a worker", None;
    /// `jobs_waiting`: jobs waiting for a worker, by priority lane.
    pub waiting: Family<LaneLabels, Gauge> = Family::default(),
        "jobs_waiting", "Jobs waiting for a worker, by priority lane", None;
    /// `jobs_in_flight`.
    pub in_flight: Family<QueueLabels, Gauge> = Family::default(),
        "jobs_in_flight", "Jobs taken by a worker, not finished", None;
    /// `jobs_delayed`.
    pub delayed: Family<QueueLabels, Gauge> = Family::default(),
        "jobs_delayed", "Jobs waiting for their run time or a retry", None;
    /// `jobs_failed`.
    pub failed: Family<QueueLabels, Gauge> = Family::default(),
        "jobs_failed", "Jobs failed for good within the retention window", None;
    /// `jobs_live_workers`.
    pub live_workers: Family<QueueLabels, Gauge> = Family::default(),
        "jobs_live_workers", "Worker processes heart-beating on the queue", None;
    /// `jobs_queue_paused`: 1 while the queue is paused, else 0.
    pub paused: Family<QueueLabels, Gauge> = Family::default(),
        "jobs_queue_paused", "1 while the queue is paused (no worker starts a job), else 0", None;
    /// `jobs_redis_evicting_nodes`: nodes holding the queue whose
    /// `maxmemory-policy` evicts keys (0 is safe).
    pub evicting: Family<QueueLabels, Gauge> = Family::default(),
        "jobs_redis_evicting_nodes", "Redis nodes holding the queue whose maxmemory-policy evicts keys when full (jobs may vanish); 0 when every one is noeviction", None;
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric, empty.
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// Observes a duration, with the current span's trace as exemplar.
    pub fn observe<L>(family: &Histograms<L>, labels: &L, took: Duration)
    where
        L: Clone + std::hash::Hash + Eq,
    {
        Self::observe_in(&tracing::Span::current(), family, labels, took);
    }

    /// Observes a duration, with `span`'s trace as exemplar.
    pub fn observe_in<L>(span: &tracing::Span, family: &Histograms<L>, labels: &L, took: Duration)
    where
        L: Clone + std::hash::Hash + Eq,
    {
        family
            .get_or_create(labels)
            .observe(took.as_secs_f64(), exemplar_of(span), None);
    }

    /// Counts one event.
    pub fn count<L>(family: &Family<L, Counter>, labels: &L)
    where
        L: Clone + std::hash::Hash + Eq,
    {
        family.get_or_create(labels).inc();
    }

    /// The metrics in OpenMetrics text, with exemplars.
    pub fn openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The metrics in the classic Prometheus text format: OpenMetrics
    /// without exemplars and the `# EOF` marker, which that format lacks.
    pub(crate) fn prometheus_text(&self) -> String {
        self.openmetrics()
            .lines()
            .filter(|l| *l != "# EOF")
            .map(|l| match l.find(" # {") {
                Some(cut) if !l.starts_with('#') => &l[..cut],
                _ => l,
            })
            .fold(String::new(), |mut out, l| {
                out.push_str(l);
                out.push('\n');
                out
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_histograms_keep_exemplars() {
        let m = Metrics::new();
        m.http_server_duration
            .get_or_create(&HttpServerLabels {
                http_request_method: "POST".into(),
                http_route: "/v1/jobs".into(),
                http_response_status_code: 202,
            })
            .observe(
                0.003,
                Some(TraceExemplar {
                    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                }),
                None,
            );
        m.jobs_sent
            .get_or_create(&OutcomeLabels {
                messaging_destination_name: "weather".into(),
                outcome: "success".into(),
                error_type: String::new(),
            })
            .inc();
        let text = m.openmetrics();
        assert!(
            text.contains("# TYPE http_server_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(r#"http_server_request_duration_seconds_bucket{le="0.005",http_request_method="POST",http_route="/v1/jobs",http_response_status_code="202"} 1 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.003"#),
            "{text}"
        );
        assert!(
            text.contains(r#"messaging_client_sent_messages_total{messaging_destination_name="weather",outcome="success",error_type=""} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"otel_spans_dropped_total{reason="queue_full"}"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));

        let classic = m.prometheus_text();
        assert!(
            !classic.contains("trace_id"),
            "no exemplars in the classic format"
        );
        assert!(!classic.contains("# EOF"));
        assert!(
            classic.contains(r#"http_response_status_code="202"} 1"#),
            "{classic}"
        );
    }
}

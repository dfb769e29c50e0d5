//! Prometheus metrics of the api and the workers: one registry per process
//! (`prometheus-client`, the official Rust client, because it writes
//! exemplars; the OpenTelemetry Prometheus exporter cannot).
//!
//! Names follow the OpenTelemetry semantic conventions as Prometheus renders
//! them (dots become underscores, the unit and `_total` are suffixed);
//! where the conventions have no metric, names start with `jobs_` or
//! `weather_`. Histograms carry exemplars with the `trace_id` of the
//! request or job they measured, so a slow bucket leads to its trace.

use std::sync::LazyLock;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::queue::QueueStats;

/// The exemplar of a measurement: the trace it belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    /// 32 hex digits, as Zipkin shows it.
    pub trace_id: String,
}

/// The exemplar for the current span, if it is sampled (an unsampled trace
/// cannot be looked up).
pub fn current_exemplar() -> Option<TraceExemplar> {
    exemplar_of(&tracing::Span::current())
}

/// The exemplar for `span`, if it is sampled.
pub fn exemplar_of(span: &tracing::Span) -> Option<TraceExemplar> {
    let cx = span.context();
    let span = cx.span();
    let sc = span.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| TraceExemplar {
        trace_id: sc.trace_id().to_string(),
    })
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

/// Labels of a queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue name.
    pub messaging_destination_name: String,
}

/// Labels of a job outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The queue name.
    pub messaging_destination_name: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// Low-cardinality failure cause, empty on success.
    pub error_type: String,
}

/// Cache lookup labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit` or `miss`.
    pub result: String,
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

type Histograms<L> = Family<L, HistogramWithExemplars<TraceExemplar>, Buckets>;

/// Spans the exporter failed to deliver, in every registry of the process
/// (the exporter has no handle on a registry).
pub static SPANS_DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Every metric of a process, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `http_server_request_duration_seconds`.
    pub http_server_duration: Histograms<HttpServerLabels>,
    /// `http_client_request_duration_seconds` (weather-service calls).
    pub http_client_duration: Histograms<HttpClientLabels>,
    /// `messaging_client_sent_messages_total`: jobs enqueued.
    pub jobs_sent: Family<OutcomeLabels, Counter>,
    /// `messaging_client_consumed_messages_total`: job attempts processed.
    pub jobs_processed: Family<OutcomeLabels, Counter>,
    /// `messaging_process_duration_seconds`: time to process a job.
    pub process_duration: Histograms<OutcomeLabels>,
    /// `jobs_queue_wait_duration_seconds`: push to pickup.
    pub queue_wait: Histograms<QueueLabels>,
    /// `weather_cache_requests_total`.
    pub cache_requests: Family<CacheLabels, Counter>,
    queue_depth: Family<QueueLabels, Gauge>,
    in_flight: Family<QueueLabels, Gauge>,
    delayed: Family<QueueLabels, Gauge>,
    failed: Family<QueueLabels, Gauge>,
    live_workers: Family<QueueLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric, empty.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            http_server_duration: Family::new_with_constructor(LATENCY),
            http_client_duration: Family::new_with_constructor(LATENCY),
            jobs_sent: Family::default(),
            jobs_processed: Family::default(),
            process_duration: Family::new_with_constructor(LATENCY),
            queue_wait: Family::new_with_constructor(WAIT),
            cache_requests: Family::default(),
            queue_depth: Family::default(),
            in_flight: Family::default(),
            delayed: Family::default(),
            failed: Family::default(),
            live_workers: Family::default(),
            registry: Registry::default(),
        };
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP server requests",
            Unit::Seconds,
            m.http_server_duration.clone(),
        );
        registry.register_with_unit(
            "http_client_request_duration",
            "Duration of weather-service requests",
            Unit::Seconds,
            m.http_client_duration.clone(),
        );
        registry.register(
            "messaging_client_sent_messages",
            "Jobs sent to the queue",
            m.jobs_sent.clone(),
        );
        registry.register(
            "messaging_client_consumed_messages",
            "Job attempts processed, by outcome",
            m.jobs_processed.clone(),
        );
        registry.register_with_unit(
            "messaging_process_duration",
            "Time to process a job attempt",
            Unit::Seconds,
            m.process_duration.clone(),
        );
        registry.register_with_unit(
            "jobs_queue_wait_duration",
            "Time a job waited in the queue before a worker took it",
            Unit::Seconds,
            m.queue_wait.clone(),
        );
        registry.register(
            "weather_cache_requests",
            "Weather cache lookups, by hit or miss",
            m.cache_requests.clone(),
        );
        registry.register(
            "jobs_queue_depth",
            "Jobs waiting for a worker",
            m.queue_depth.clone(),
        );
        registry.register(
            "jobs_in_flight",
            "Jobs taken by a worker, not finished",
            m.in_flight.clone(),
        );
        registry.register(
            "jobs_delayed",
            "Jobs waiting for their run time or a retry",
            m.delayed.clone(),
        );
        registry.register(
            "jobs_failed",
            "Jobs failed for good within the retention window",
            m.failed.clone(),
        );
        registry.register(
            "jobs_live_workers",
            "Worker processes heart-beating on the queue",
            m.live_workers.clone(),
        );
        registry.register(
            "otel_spans_dropped",
            "Spans the trace exporter failed to deliver",
            SPANS_DROPPED.clone(),
        );
        Self { registry, ..m }
    }

    /// Sets the queue gauges from a fresh snapshot.
    pub fn set_queue(&self, queue: &str, stats: &QueueStats) {
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
    }

    /// Observes a duration, with the current trace as exemplar.
    pub fn observe<L>(family: &Histograms<L>, labels: &L, took: Duration)
    where
        L: Clone + std::hash::Hash + Eq,
    {
        family
            .get_or_create(labels)
            .observe(took.as_secs_f64(), current_exemplar(), None);
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
    pub fn prometheus_text(&self) -> String {
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

/// Content type of [`Metrics::openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`Metrics::prometheus_text`].
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A `/metrics` page: refreshes the queue gauges from Redis, then renders
/// for the request's `Accept` header. Redis being down costs only the
/// gauges' freshness, never the scrape.
pub async fn scrape(
    metrics: &Metrics,
    queue: &crate::queue::RedisQueue,
    accept: Option<&str>,
) -> (&'static str, String) {
    match queue.stats().await {
        Ok(stats) => metrics.set_queue(&queue.config().name, &stats),
        Err(e) => tracing::warn!(error = %e, "cannot read queue stats for /metrics"),
    }
    render(metrics, accept)
}

/// The `/metrics` answer for a request's `Accept` header: OpenMetrics (with
/// exemplars) when the scraper asks for it, the classic text otherwise.
pub fn render(metrics: &Metrics, accept: Option<&str>) -> (&'static str, String) {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (OPENMETRICS_CONTENT_TYPE, metrics.openmetrics())
    } else {
        (PROMETHEUS_TEXT_CONTENT_TYPE, metrics.prometheus_text())
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
        assert!(text.contains("otel_spans_dropped_total"), "{text}");
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

    #[test]
    fn the_scraper_chooses_the_format() {
        let m = Metrics::new();
        let (ct, _) = render(
            &m,
            Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
        );
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        assert_eq!(render(&m, Some("*/*")).0, PROMETHEUS_TEXT_CONTENT_TYPE);
        assert_eq!(render(&m, None).0, PROMETHEUS_TEXT_CONTENT_TYPE);
    }

    #[test]
    fn queue_gauges_follow_the_stats() {
        let m = Metrics::new();
        let stats = QueueStats {
            waiting: 7,
            in_flight: 2,
            delayed: 1,
            failed: 3,
            live_consumers: 2,
            enqueued_total: 0,
            succeeded_total: 0,
            failed_total: 0,
            retried_total: 0,
        };
        m.set_queue("weather", &stats);
        let text = m.openmetrics();
        for line in [
            r#"jobs_queue_depth{messaging_destination_name="weather"} 7"#,
            r#"jobs_in_flight{messaging_destination_name="weather"} 2"#,
            r#"jobs_delayed{messaging_destination_name="weather"} 1"#,
            r#"jobs_failed{messaging_destination_name="weather"} 3"#,
            r#"jobs_live_workers{messaging_destination_name="weather"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}

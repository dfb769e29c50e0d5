//! What every handler shares: the queue, the producer that pushes onto it
//! inside PRODUCER spans, and the limits the api was started with.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis_job_queue::RedisQueue;
use telemetry::messaging::TracedProducer;
use telemetry::metrics::Metrics;
use telemetry::propagation::Propagation;

use crate::auth::ApiKeys;
use crate::config::DEFAULT_MAX_DELAY;
use crate::limit;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The weather queue, to read job status.
    pub queue: RedisQueue,
    /// Pushes jobs onto it inside PRODUCER spans.
    pub producer: TracedProducer,
    /// Propagators (inbound headers, job metadata).
    pub propagation: Propagation,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// The keys that guard the mutating endpoints (none: open).
    pub api_keys: Arc<ApiKeys>,
    /// Requests handled at once ([`limit`]).
    pub max_in_flight: usize,
    /// How long a request's head and body may take to arrive.
    pub request_timeout: Duration,
    /// Requests refused for being past that, also in `metrics`.
    pub shed: Counter,
    /// Longest delay a job may be given.
    pub max_delay: Duration,
}

impl AppState {
    /// The state of an api enqueueing onto `queue`, open to anyone (see
    /// [`Self::with_api_keys`]).
    pub fn new(queue: RedisQueue, propagation: Propagation) -> Self {
        let shed = Counter::default();
        let metrics = Arc::new(Metrics::with(|registry| {
            let (name, help) = limit::SHED_METRIC;
            registry.register(name, help, shed.clone());
        }));
        let producer =
            TracedProducer::new(queue.clone(), propagation.clone()).with_metrics(metrics.clone());
        Self {
            queue,
            producer,
            propagation,
            metrics,
            api_keys: Arc::default(),
            max_in_flight: limit::DEFAULT_MAX_IN_FLIGHT as usize,
            request_timeout: crate::serve::DEFAULT_REQUEST_TIMEOUT,
            shed,
            max_delay: DEFAULT_MAX_DELAY,
        }
    }

    /// Handles at most `max` requests at once (at least one).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Cuts off requests whose head or body takes longer than `timeout`
    /// to arrive (at least a millisecond).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Refuses jobs delayed longer than `max`.
    pub fn with_max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// Requires one of `keys` on the mutating endpoints.
    pub fn with_api_keys(mut self, keys: ApiKeys) -> Self {
        self.api_keys = Arc::new(keys);
        self
    }
}

//! At most so many requests at once (`API_MAX_IN_FLIGHT`): past that the
//! api answers `503` with `Retry-After: 1` at once instead of queueing
//! requests it may never get to, and counts them in
//! `http_server_requests_shed_total`. The health check and the scrape are
//! exempt (they are merged in outside the limit), so an overloaded api
//! still looks alive and can still be watched.
//!
//! One semaphore holds the places, shared by every limited route (axum
//! clones the middleware's state, not the semaphore); a request that finds
//! none free is refused at once rather than queued. `/readyz` is exempt
//! too, though it is a route of the api's own (it is in the OpenAPI
//! document): an overloaded api is still ready, and a probe that failed
//! for load would take it out of service when it is busiest.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

use crate::ApiError;

/// Requests handled at once by default.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 1024;

/// Name (without `_total`) and help of the shed counter.
pub(crate) const SHED_METRIC: (&str, &str) = (
    "http_server_requests_shed",
    "HTTP requests refused with 503 because the api had API_MAX_IN_FLIGHT requests in flight",
);

/// Routes never shed: the probes.
const NEVER_SHED: &[&str] = &["/healthz", "/readyz"];

/// The places, and the counter of requests refused for want of one.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    places: Arc<Semaphore>,
    shed: Counter,
}

impl InFlight {
    /// `max` places; refusals counted in `shed`.
    pub(crate) fn new(max: usize, shed: Counter) -> Self {
        Self {
            places: Arc::new(Semaphore::new(max.max(1))),
            shed,
        }
    }
}

/// axum middleware: a place for the request while it is handled, or `503`
/// with `Retry-After: 1` at once.
pub(crate) async fn limit(State(limit): State<InFlight>, request: Request, next: Next) -> Response {
    if NEVER_SHED.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(_place) = limit.places.clone().try_acquire_owned() else {
        limit.shed.inc();
        return ApiError::Overloaded.into_response();
    };
    next.run(request).await
}

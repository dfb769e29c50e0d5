//! At most so many requests at once (`API_MAX_IN_FLIGHT`): past that the
//! api answers `503` with `Retry-After: 1` at once instead of queueing
//! requests it may never get to, and counts them in
//! `http_server_requests_shed_total`. The health check and the scrape are
//! exempt (they are merged in outside the limit), so an overloaded api
//! still looks alive and can still be watched.
//!
//! tower's pieces: a concurrency limit whose one semaphore is shared by
//! every route ([`GlobalConcurrencyLimitLayer`]; axum gives each route its
//! own copy of a layer, so a per-copy limit would not be global), load
//! shedding that fails a request instead of waiting for a permit
//! ([`LoadShedLayer`]), and [`HandleErrorLayer`] turning that failure into
//! the problem.

use std::convert::Infallible;

use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::Route;
use prometheus_client::metrics::counter::Counter;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::load_shed::error::Overloaded;
use tower::{BoxError, Layer, Service, ServiceBuilder};

use crate::ApiError;

/// Requests handled at once by default.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 1024;

/// Name (without `_total`) and help of the shed counter.
pub(crate) const SHED_METRIC: (&str, &str) = (
    "http_server_requests_shed",
    "HTTP requests refused with 503 because the api had API_MAX_IN_FLIGHT requests in flight",
);

/// The layer for the limited routes: `max` requests in flight, the rest
/// answered `503` and counted in `shed`.
pub(crate) fn layer(
    max: usize,
    shed: Counter,
) -> impl Layer<
    Route,
    Service = impl Service<Request, Response = Response, Error = Infallible, Future = impl Send>
              + Clone
              + Send
              + Sync
              + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |e: BoxError| {
            let shed = shed.clone();
            async move { refuse(&e, &shed).into_response() }
        }))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(max))
}

fn refuse(e: &BoxError, shed: &Counter) -> ApiError {
    if e.is::<Overloaded>() {
        shed.inc();
        ApiError::Overloaded
    } else {
        // The routes cannot fail (their error type is `Infallible`), so
        // shedding is the only error that reaches here.
        ApiError::Unexpected(anyhow::anyhow!(
            "request failed in the in-flight limit: {e}"
        ))
    }
}

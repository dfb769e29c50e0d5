//! SERVER spans for axum services, continuing the caller's trace.
//!
//! Span name `{method} {route}` (just `{method}` when no route matched),
//! attributes from the OpenTelemetry HTTP server conventions, status ERROR
//! only for 5xx answers. The parent comes from the request headers through
//! [`Propagation`]; headers that are missing or malformed start a new trace.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation::Propagation;

/// axum middleware: wrap with
/// `axum::middleware::from_fn_with_state(propagation, trace_request)`,
/// added with `Router::layer` so unmatched requests are traced too.
pub async fn trace_request(
    State(propagation): State<Propagation>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let span = tracing::info_span!(
        "http request",
        otel.name = %name,
        otel.kind = "server",
        http.request.method = %method,
        http.route = Empty,
        url.path = %request.uri().path(),
        url.scheme = "http",
        http.response.status_code = Empty,
        otel.status_code = Empty,
    );
    if let Some(route) = &route {
        span.record("http.route", route.as_str());
    }
    // An empty context (no or malformed headers) makes this a root span.
    let _ = span.set_parent(propagation.extract_http(request.headers()));
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

//! SERVER spans for axum services, continuing the caller's trace.
//!
//! Span name `{method} {route}` (just `{method}` when no route matched),
//! attributes from the OpenTelemetry HTTP server conventions, status ERROR
//! only for 5xx answers. The parent comes from the request headers through
//! [`Propagation`]; headers that are missing or malformed start a new trace.
//! Health checks and scrapes are not traced ([`UNTRACED_PATHS`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::attributes::{
    HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, URL_PATH, URL_SCHEME,
};
use crate::metrics::{HttpServerLabels, Metrics};
use crate::propagation::Propagation;

/// What the middleware needs: the propagators, and the metrics to record
/// request durations in (none for services without metrics).
#[derive(Debug, Clone)]
pub struct HttpTelemetry {
    /// Reads the caller's trace context.
    pub propagation: Propagation,
    /// `http_server_request_duration_seconds`, if the service has metrics.
    pub metrics: Option<Arc<Metrics>>,
}

/// Paths of health checks and scrapes: polled every few seconds, they
/// would bury the traces worth seeing under roots of their own, so they
/// are neither traced nor measured.
pub const UNTRACED_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// The method label of a method the HTTP conventions do not know.
pub const OTHER_METHOD: &str = "_OTHER";

/// `method` as the span attribute and the metric label take it: one of the
/// methods HTTP defines, or [`OTHER_METHOD`], so made-up methods cannot
/// add a metric series each.
pub fn known_method(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => OTHER_METHOD,
    }
}

/// axum middleware: wrap with
/// `axum::middleware::from_fn_with_state(telemetry, trace_request)`,
/// added with `Router::layer` so unmatched requests are traced too.
/// Requests for [`UNTRACED_PATHS`] pass through untouched.
pub async fn trace_request(
    State(telemetry): State<HttpTelemetry>,
    request: Request,
    next: Next,
) -> Response {
    if UNTRACED_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let propagation = &telemetry.propagation;
    let original = request.method().as_str();
    let method = known_method(request.method()).to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    // The conventions name an unknown method's span `HTTP`.
    let shown = if method == OTHER_METHOD {
        "HTTP"
    } else {
        &method
    };
    let name = match &route {
        Some(route) => format!("{shown} {route}"),
        None => shown.to_owned(),
    };
    let span = tracing::info_span!(
        "http request",
        otel.name = %name,
        otel.kind = "server",
        { HTTP_REQUEST_METHOD } = %method,
        { HTTP_ROUTE } = Empty,
        http.request.method_original = Empty,
        { URL_PATH } = %request.uri().path(),
        { URL_SCHEME } = "http",
        { HTTP_RESPONSE_STATUS_CODE } = Empty,
        otel.status_code = Empty,
    );
    if let Some(route) = &route {
        span.record(HTTP_ROUTE, route.as_str());
    }
    if method == OTHER_METHOD {
        // Cut short: a made-up method may be long.
        let cut: String = original.chars().take(32).collect();
        span.record("http.request.method_original", cut.as_str());
    }
    // An empty context (no or malformed headers, or an untrusted caller)
    // makes this a root span; an untrusted caller's span is linked.
    let inbound = propagation.inbound_http(request.headers());
    let _ = span.set_parent(inbound.parent);
    if let Some(caller) = inbound.link {
        span.add_link(caller);
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record(HTTP_RESPONSE_STATUS_CODE, status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(metrics) = &telemetry.metrics {
        let labels = HttpServerLabels {
            http_request_method: method,
            http_route: route.unwrap_or_default(),
            http_response_status_code: status.as_u16(),
        };
        Metrics::observe_in(
            &span,
            &metrics.http_server_duration,
            &labels,
            started.elapsed(),
        );
    }
    response
}

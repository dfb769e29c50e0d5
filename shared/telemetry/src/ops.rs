//! The operations routes every service serves beside its own:
//! `GET /healthz` for liveness probes and `GET /metrics` for Prometheus.
//!
//! Both are left out of traces and request metrics
//! ([`crate::http_server::UNTRACED_PATHS`]): they are polled every few
//! seconds and say nothing about the work.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::metrics::Metrics;

/// `GET /healthz` (200 while the process runs) and `GET /metrics`, which
/// awaits `refresh` (to read gauges from elsewhere) before it renders.
pub fn routes<F, Fut>(metrics: Arc<Metrics>, refresh: F) -> Router
where
    F: Fn(Arc<Metrics>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Router::new().route("/healthz", get(healthz)).route(
        "/metrics",
        get(move |headers: HeaderMap| async move {
            refresh(metrics.clone()).await;
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
            let (content_type, body) = render(&metrics, accept);
            ([(header::CONTENT_TYPE, content_type)], body)
        }),
    )
}

/// `GET /healthz`: `200 {"status": "ok"}` while the process runs.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Content type of [`Metrics::openmetrics`].
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`Metrics::prometheus_text`].
const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/metrics` answer for a request's `Accept` header: OpenMetrics (with
/// exemplars) when the scraper asks for it, the classic text otherwise.
fn render(metrics: &Metrics, accept: Option<&str>) -> (&'static str, String) {
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
}

//! The HTTP endpoint: the newest alerts (`GET /v1/alerts`), beside
//! `/healthz` and `/metrics`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use telemetry::metrics::Metrics;
use telemetry::propagation::Propagation;

use crate::store::AlertStore;

/// `GET /v1/alerts`'s query.
#[derive(Debug, Deserialize)]
struct Recent {
    limit: Option<String>,
}

/// The newest alerts first, at most `limit` (1 to 1000, default 50).
async fn recent(
    State(store): State<AlertStore>,
    q: Result<Query<Recent>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return weather_jobs::problem(
            StatusCode::BAD_REQUEST,
            "the query takes one `limit`, a whole number from 1 to 1000",
        );
    };
    let limit = match q.limit.as_deref().map(str::parse::<u32>) {
        None => 50,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return weather_jobs::problem(
                StatusCode::BAD_REQUEST,
                "limit must be a whole number from 1 to 1000",
            );
        }
    };
    match store.recent(limit).await {
        Ok(alerts) => Json(serde_json::json!({ "alerts": alerts })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the alerts");
            weather_jobs::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the alert store (Redis) is unavailable",
            )
        }
    }
}

/// The service's routes.
pub fn app(store: AlertStore, propagation: Propagation, metrics: Arc<Metrics>) -> Router {
    let ops = telemetry::ops::routes(metrics.clone(), |_| async {});
    Router::new()
        .route("/v1/alerts", get(recent))
        .with_state(store)
        .fallback(|| async { weather_jobs::problem(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            telemetry::http_server::HttpTelemetry {
                propagation,
                metrics: Some(metrics),
            },
            telemetry::http_server::trace_request,
        ))
        .merge(ops)
}

//! What the pages' script sends through the console: a job for the api,
//! passed on with the browser's trace context (and the api key only the
//! console holds), and the page's own spans, for the trace source.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use weather_jobs::problem;

use super::{Ui, UiState};

/// Forwards a job to the api with the browser's `traceparent`, so the
/// api's span continues the browser's trace.
pub(crate) async fn create_job(State(ui): Ui, headers: HeaderMap, body: Bytes) -> Response {
    let mut req = ui
        .api
        .post(format!("{}/v1/jobs", ui.api_url))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    for name in ["traceparent", "tracestate", "baggage"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v);
        }
    }
    match req.send().await {
        Ok(res) => pass_on(res).await,
        Err(e) => unreachable_api(&ui, &e),
    }
}

/// The api's answer, as the api gave it (status, media type, body).
pub(crate) async fn pass_on(res: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let body = res.bytes().await.unwrap_or_default();
    (status, [(header::CONTENT_TYPE, ct)], body).into_response()
}

/// The problem of an api that did not answer.
pub(crate) fn unreachable_api(ui: &UiState, e: &reqwest::Error) -> Response {
    problem(
        StatusCode::BAD_GATEWAY,
        &format!("the api at {} could not be reached: {e}", ui.api_url),
    )
}

/// Spans the page records (its own span of each submission).
pub(crate) async fn browser_spans(State(ui): Ui, body: Bytes) -> Response {
    match ui.source.ingest(&ui.http, &body).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => problem(StatusCode::BAD_REQUEST, &e),
    }
}

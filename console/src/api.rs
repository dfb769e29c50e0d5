//! Zipkin's v2 HTTP API over the [`crate::Store`]: the contract is Zipkin's own
//! OpenAPI file (`zipkin2-api.yaml`), with Zipkin's server behaviour where
//! the file is loose (span names are plain strings, names are lower-cased,
//! ids are normalised).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::Semaphore;
use tower_http::decompression::RequestDecompressionLayer;
use weather_jobs::problem;

use crate::store::model::{SpanIn, TraceId};
use crate::store::{Store, TraceQuery};
use crate::{AppState, now_ms};

/// Largest batch of spans accepted, once decompressed.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Span batches read and stored at once: each may take 16 MiB to read and
/// as much again to store, so more at once would take memory outside
/// `CONSOLE_MAX_BYTES`.
pub const MAX_INGESTS: usize = 2;
/// How long a batch may wait for its turn before it is refused (`503`).
const INGEST_WAIT: Duration = Duration::from_secs(10);
/// How long a batch's body may take to arrive once its turn has come.
const INGEST_READ: Duration = Duration::from_secs(15);

/// Most trace ids one `/traceMany` asks for.
pub const MAX_TRACE_IDS: usize = 100;

/// What can go wrong; each variant says what the caller can do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    /// A malformed request or parameter (400): fix it.
    #[error("{0}")]
    BadRequest(String),
    /// No such trace or route (404).
    #[error("{0}")]
    NotFound(String),
    /// A body the console cannot read (415): send JSON.
    #[error("{0}")]
    Unsupported(String),
    /// A body over [`MAX_BATCH_BYTES`] (413): send smaller batches.
    #[error("{0}")]
    TooLarge(String),
    /// Too many batches arriving at once (503, `Retry-After: 1`): send it
    /// again.
    #[error("{0}")]
    Busy(String),
    /// A batch whose body did not arrive in time (408).
    #[error("{0}")]
    Slow(String),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Slow(_) => StatusCode::REQUEST_TIMEOUT,
        };
        let mut res = problem(status, &self.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        res
    }
}

type Params = Query<Vec<(String, String)>>;

/// The last value of query parameter `name`.
fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(q: &'a [(String, String)], name: &str) -> Result<&'a str, ConsoleError> {
    param(q, name)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ConsoleError::BadRequest(format!("the {name} parameter is required")))
}

fn int(q: &[(String, String)], name: &str) -> Result<Option<i64>, ConsoleError> {
    param(q, name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ConsoleError::BadRequest(format!("{name} must be a whole number, not {v:?}"))
            })
        })
        .transpose()
}

/// The `/api/v2` routes, and problems for every other path.
pub(crate) fn routes(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/spans",
            // The turns are the posts' alone: reading span names waits on
            // none.
            get(span_names).post(post_spans.layer(axum::middleware::from_fn_with_state(
                Arc::new(Semaphore::new(MAX_INGESTS)),
                one_of_few,
            ))),
        )
        .route("/services", get(services))
        .route("/traces", get(traces))
        .route("/trace/{trace_id}", get(trace))
        .route("/traceMany", get(trace_many))
        .route("/dependencies", get(dependencies))
        .route("/autocompleteKeys", get(autocomplete_keys))
        .route("/autocompleteValues", get(autocomplete_values))
        .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES))
        // Unknown encodings reach the handler, which names them.
        .layer(RequestDecompressionLayer::new().pass_through_unaccepted(true))
        .with_state(state);
    Router::new().nest("/api/v2", api).merge(fallback())
}

/// Problems for paths no route serves.
pub(crate) fn fallback() -> Router {
    Router::new().fallback(|| async { ConsoleError::NotFound("no such endpoint".into()) })
}

/// Whether a `Content-Type` is JSON (or absent, which Zipkin reads as JSON).
fn is_json(headers: &HeaderMap) -> Result<(), ConsoleError> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or_default();
        if !encoding.eq_ignore_ascii_case("identity") {
            return Err(ConsoleError::Unsupported(format!(
                "Content-Encoding {encoding:?} is not supported: send gzip or nothing"
            )));
        }
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
    if ct.starts_with("application/json") {
        Ok(())
    } else if ct.starts_with("application/x-protobuf") {
        Err(ConsoleError::Unsupported(
            "protobuf spans are not supported: send Zipkin v2 JSON".into(),
        ))
    } else {
        Err(ConsoleError::Unsupported(format!(
            "Content-Type {ct:?} is not supported: send application/json"
        )))
    }
}

async fn post_spans(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ConsoleError> {
    is_json(&headers)?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ConsoleError::TooLarge(format!(
            "the batch is larger than {MAX_BATCH_BYTES} bytes (decompressed)"
        )),
        _ => ConsoleError::BadRequest(format!("the body could not be read: {}", e.body_text())),
    })?;
    let copy = state.forward.as_ref().map(|_| body.clone());
    let done = state
        .store
        .off_runtime(move |store| {
            let spans: Vec<SpanIn<'_>> = serde_json::from_slice(&body).map_err(|e| {
                ConsoleError::BadRequest(format!(
                    "the body is not a JSON list of Zipkin v2 spans: {e}"
                ))
            })?;
            store
                .ingest(spans)
                .map_err(|e| ConsoleError::BadRequest(e.to_string()))
        })
        .await?;
    if let (Some(forward), Some(copy)) = (&state.forward, copy) {
        forward.send(copy);
    }
    let m = &state.metrics;
    m.received.inc_by(done.spans as u64);
    m.evicted_spans.inc_by(done.evicted_spans as u64);
    m.evicted_traces.inc_by(done.evicted_traces as u64);
    Ok(StatusCode::ACCEPTED)
}

/// axum middleware of `POST /spans`: at most [`MAX_INGESTS`] batches are
/// read and stored at once, each within [`INGEST_READ`]; the others wait
/// their turn up to [`INGEST_WAIT`], then get `503` with `Retry-After: 1`
/// (Zipkin reporters send again). The body is read only once its turn
/// has come, so the memory of batches in flight is bounded too.
async fn one_of_few(
    State(turns): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Result<Response, ConsoleError> {
    let Ok(Ok(_turn)) = tokio::time::timeout(INGEST_WAIT, turns.acquire_owned()).await else {
        return Err(ConsoleError::Busy(
            "the console is storing as many span batches as it may; send this one again".into(),
        ));
    };
    let (parts, body) = request.into_parts();
    // One byte past the limit, so that the handler's own limit answers.
    let read = Limited::new(body, MAX_BATCH_BYTES + 1).collect();
    match tokio::time::timeout(INGEST_READ, read).await {
        Ok(Ok(body)) => {
            let request = Request::from_parts(parts, axum::body::Body::from(body.to_bytes()));
            Ok(next.run(request).await)
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ConsoleError::TooLarge(format!(
                "the batch is larger than {MAX_BATCH_BYTES} bytes (decompressed)"
            )))
        }
        Ok(Err(e)) => Err(ConsoleError::BadRequest(format!(
            "the body could not be read: {e}"
        ))),
        Err(_) => Err(ConsoleError::Slow(format!(
            "the batch did not arrive within {} s",
            INGEST_READ.as_secs()
        ))),
    }
}

async fn services(State(state): State<AppState>) -> Json<Vec<String>> {
    Json(state.store.off_runtime(Store::services).await)
}

/// The span names of a service: plain strings, as Zipkin's server answers
/// (the OpenAPI file calls the list `ListOfSpans`, a known slip of it).
async fn span_names(
    State(state): State<AppState>,
    Query(q): Params,
) -> Result<Json<Vec<String>>, ConsoleError> {
    let service = required(&q, "serviceName")?.to_owned();
    Ok(Json(
        state
            .store
            .off_runtime(move |store| store.span_names(&service))
            .await,
    ))
}

async fn traces(State(state): State<AppState>, Query(q): Params) -> Result<Response, ConsoleError> {
    let query = TraceQuery::new(
        param(&q, "serviceName"),
        param(&q, "spanName"),
        param(&q, "annotationQuery"),
        int(&q, "minDuration")?,
        int(&q, "maxDuration")?,
        int(&q, "endTs")?,
        int(&q, "lookback")?,
        int(&q, "limit")?,
        now_ms(),
        state.query_lookback,
    )
    .map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    let found = state
        .store
        .off_runtime(move |store| store.traces(&query))
        .await;
    Ok(Json(found).into_response())
}

fn trace_id(s: &str) -> Result<TraceId, ConsoleError> {
    TraceId::parse(s).ok_or_else(|| {
        ConsoleError::BadRequest(format!("{s:?} is not a trace id (16 or 32 hex digits)"))
    })
}

async fn trace(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let id = trace_id(&id)?;
    let spans = state
        .store
        .off_runtime(move |store| store.trace(id))
        .await
        .ok_or_else(|| ConsoleError::NotFound(format!("trace {id} not found")))?;
    Ok(Json(spans).into_response())
}

async fn trace_many(
    State(state): State<AppState>,
    Query(q): Params,
) -> Result<Response, ConsoleError> {
    let ids = required(&q, "traceIds")?
        .split(',')
        .map(|s| trace_id(s.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() < 2 || unique.len() != ids.len() {
        return Err(ConsoleError::BadRequest(
            "traceIds needs at least two different trace ids; use /trace/{traceId} for one".into(),
        ));
    }
    if ids.len() > MAX_TRACE_IDS {
        return Err(ConsoleError::BadRequest(format!(
            "traceIds names {} traces: ask for at most {MAX_TRACE_IDS} at a time",
            ids.len()
        )));
    }
    let found = state
        .store
        .off_runtime(move |store| store.traces_by_id(&ids))
        .await;
    Ok(Json(found).into_response())
}

async fn dependencies(
    State(state): State<AppState>,
    Query(q): Params,
) -> Result<Response, ConsoleError> {
    let end_ts = int(&q, "endTs")?
        .ok_or_else(|| ConsoleError::BadRequest("the endTs parameter is required".into()))?;
    let lookback = int(&q, "lookback")?;
    if end_ts <= 0 || lookback.is_some_and(|l| l <= 0) {
        return Err(ConsoleError::BadRequest(
            "endTs and lookback must be above 0".into(),
        ));
    }
    let lookback = lookback
        .map_or(state.query_lookback, |l| l as u64)
        .min(state.query_lookback);
    let links = state
        .store
        .off_runtime(move |store| store.dependencies(end_ts as u64, lookback))
        .await;
    Ok(Json(links).into_response())
}

async fn autocomplete_keys(State(state): State<AppState>) -> Json<Vec<String>> {
    Json(state.store.off_runtime(Store::autocomplete_keys).await)
}

async fn autocomplete_values(
    State(state): State<AppState>,
    Query(q): Params,
) -> Result<Json<Vec<String>>, ConsoleError> {
    let key = required(&q, "key")?.to_owned();
    Ok(Json(
        state
            .store
            .off_runtime(move |store| store.autocomplete_values(&key))
            .await,
    ))
}

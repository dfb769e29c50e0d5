//! Where the console reads traces: its own store, or a Zipkin running
//! beside it (the same v2 API either way).

use std::sync::Arc;

use crate::store::Store;
use crate::store::TraceQuery;
use crate::store::model::{DependencyLink, Kind, Span, SpanIn, TraceId};

/// The console's traces.
#[derive(Clone)]
pub(crate) enum TraceSource {
    /// The embedded store.
    Embedded(Arc<Store>),
    /// A Zipkin (or another console) at this base URL.
    Zipkin(String),
}

impl TraceSource {
    /// The spans of `trace` (none when unknown or unreadable).
    pub(crate) async fn trace(
        &self,
        http: &reqwest::Client,
        trace: &str,
    ) -> Result<Vec<Span>, String> {
        let Some(id) = TraceId::parse(trace) else {
            return Ok(Vec::new());
        };
        match self {
            Self::Embedded(store) => Ok(store
                .off_runtime(move |store| store.trace(id))
                .await
                .unwrap_or_default()),
            Self::Zipkin(base) => {
                let res = http
                    .get(format!("{}/api/v2/trace/{id}", base.trim_end_matches('/')))
                    .send()
                    .await
                    .map_err(|e| format!("Zipkin at {base} could not be reached: {e}"))?;
                if res.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(Vec::new());
                }
                res.error_for_status()
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| format!("Zipkin at {base} sent an unexpected answer: {e}"))
            }
        }
    }

    /// The spans of the traces that hold a span tagged `job.id` = `job`
    /// (a job that runs in a trace of its own, linked to the request's),
    /// looking back to `since_ms`.
    pub(crate) async fn job_traces(
        &self,
        http: &reqwest::Client,
        job: &str,
        since_ms: u64,
    ) -> Result<Vec<Span>, String> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let lookback = now_ms.saturating_sub(since_ms).saturating_add(60_000);
        let tag = format!("job.id={job}");
        match self {
            Self::Embedded(store) => {
                let q = TraceQuery {
                    service_name: None,
                    span_name: None,
                    annotation_query: vec![("job.id".into(), Some(job.into()))],
                    min_duration: None,
                    max_duration: None,
                    end_ts: now_ms,
                    lookback,
                    limit: 10,
                };
                let found = store.off_runtime(move |store| store.traces(&q)).await;
                Ok(found.into_iter().flatten().collect())
            }
            Self::Zipkin(base) => {
                let req = http
                    .get(format!("{}/api/v2/traces", base.trim_end_matches('/')))
                    .query(&[
                        ("annotationQuery", tag.as_str()),
                        ("endTs", &now_ms.to_string()),
                        ("lookback", &lookback.to_string()),
                        ("limit", "10"),
                    ]);
                let traces: Vec<Vec<Span>> = zipkin_json(req, base).await?;
                Ok(traces.into_iter().flatten().collect())
            }
        }
    }

    /// The traces matching `q`, newest first (Zipkin's trace search).
    pub(crate) async fn search(
        &self,
        http: &reqwest::Client,
        q: TraceQuery,
    ) -> Result<Vec<Vec<Span>>, String> {
        match self {
            Self::Embedded(store) => Ok(store.off_runtime(move |store| store.traces(&q)).await),
            Self::Zipkin(base) => {
                let terms: Vec<String> = q
                    .annotation_query
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    })
                    .collect();
                let mut query: Vec<(&str, String)> = vec![
                    ("endTs", q.end_ts.to_string()),
                    ("lookback", q.lookback.to_string()),
                    ("limit", q.limit.to_string()),
                ];
                if let Some(s) = &q.service_name {
                    query.push(("serviceName", s.clone()));
                }
                if let Some(s) = &q.span_name {
                    query.push(("spanName", s.clone()));
                }
                if !terms.is_empty() {
                    query.push(("annotationQuery", terms.join(" and ")));
                }
                if let Some(d) = q.min_duration {
                    query.push(("minDuration", d.to_string()));
                }
                if let Some(d) = q.max_duration {
                    query.push(("maxDuration", d.to_string()));
                }
                let req = http
                    .get(format!("{}/api/v2/traces", base.trim_end_matches('/')))
                    .query(&query);
                zipkin_json(req, base).await
            }
        }
    }

    /// The service graph of the last `lookback_ms`.
    pub(crate) async fn dependencies(
        &self,
        http: &reqwest::Client,
        end_ts_ms: u64,
        lookback_ms: u64,
    ) -> Result<Vec<DependencyLink>, String> {
        match self {
            Self::Embedded(store) => Ok(store
                .off_runtime(move |store| store.dependencies(end_ts_ms, lookback_ms))
                .await),
            Self::Zipkin(base) => {
                let req = http.get(format!(
                    "{}/api/v2/dependencies?endTs={end_ts_ms}&lookback={lookback_ms}",
                    base.trim_end_matches('/')
                ));
                zipkin_json(req, base).await
            }
        }
    }

    /// How long the CONSUMER spans of queue `queue` lasted (µs), for those
    /// that started between `from_ms` and `to_ms`.
    pub(crate) async fn consumer_durations(
        &self,
        http: &reqwest::Client,
        queue: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Vec<u64> {
        match self {
            Self::Embedded(store) => {
                let queue = queue.to_owned();
                store
                    .off_runtime(move |store| {
                        store.consumer_durations(&queue, from_ms * 1000, to_ms * 1000)
                    })
                    .await
            }
            Self::Zipkin(base) => {
                // Zipkin lower-cases span names; the CONSUMER span is
                // `process {queue}`.
                let url = format!("{}/api/v2/traces", base.trim_end_matches('/'));
                let span_name = format!("process {queue}").to_lowercase();
                let query = [
                    ("spanName", span_name.as_str()),
                    ("endTs", &to_ms.to_string()),
                    (
                        "lookback",
                        &to_ms.saturating_sub(from_ms).max(1).to_string(),
                    ),
                    ("limit", "1000"),
                ];
                let traces: Vec<Vec<Span>> = match http.get(url).query(&query).send().await {
                    Ok(res) => res.json().await.unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                traces
                    .iter()
                    .flatten()
                    .filter(|s| {
                        s.kind == Some(Kind::Consumer)
                            && s.name.as_deref() == Some(span_name.as_str())
                            && s.timestamp
                                .is_some_and(|t| t >= from_ms * 1000 && t < to_ms * 1000)
                    })
                    .filter_map(|s| s.duration)
                    .collect()
            }
        }
    }

    /// Stores spans the browser sent (Zipkin v2 JSON).
    pub(crate) async fn ingest(&self, http: &reqwest::Client, body: &[u8]) -> Result<(), String> {
        match self {
            Self::Embedded(store) => {
                let body = body.to_vec();
                store
                    .off_runtime(move |store| {
                        let spans: Vec<SpanIn<'_>> =
                            serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                        store.ingest(spans).map(drop).map_err(|e| e.to_string())
                    })
                    .await
            }
            Self::Zipkin(base) => http
                .post(format!("{}/api/v2/spans", base.trim_end_matches('/')))
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map(drop)
                .map_err(|e| format!("Zipkin at {base} refused the spans: {e}")),
        }
    }
}

/// Sends `req` to the Zipkin at `base` and decodes its JSON answer.
async fn zipkin_json<T: serde::de::DeserializeOwned>(
    req: reqwest::RequestBuilder,
    base: &str,
) -> Result<T, String> {
    req.send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("Zipkin at {base} could not be read: {e}"))?
        .json()
        .await
        .map_err(|e| format!("Zipkin at {base} sent an unexpected answer: {e}"))
}

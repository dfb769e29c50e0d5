//! A Zipkin collector stand-in: receives the Zipkin v2 JSON the services
//! export, so tests can check what really went over the wire.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

type Spans = Arc<Mutex<Vec<Value>>>;

/// Listens on a free loopback port for `POST /api/v2/spans`.
#[derive(Debug)]
pub struct ZipkinCollector {
    port: u16,
    spans: Spans,
    server: tokio::task::JoinHandle<()>,
}

async fn receive(State(spans): State<Spans>, body: axum::body::Bytes) -> StatusCode {
    match serde_json::from_slice::<Vec<Value>>(&body) {
        Ok(batch) => {
            if let Ok(mut s) = spans.lock() {
                s.extend(batch);
            }
            StatusCode::ACCEPTED
        }
        // A real Zipkin refuses what it cannot parse; so do we, loudly.
        Err(e) => {
            eprintln!("zipkin collector: unparseable batch: {e}");
            StatusCode::BAD_REQUEST
        }
    }
}

impl ZipkinCollector {
    /// Starts the collector.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let spans: Spans = Arc::default();
        let app = Router::new()
            .route("/api/v2/spans", post(receive))
            .with_state(spans.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            port,
            spans,
            server,
        })
    }

    /// The endpoint to give `OTEL_EXPORTER_ZIPKIN_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/api/v2/spans", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<Value> {
        self.spans()
            .into_iter()
            .filter(|s| s["traceId"] == trace_id)
            .collect()
    }

    /// Waits until `found` picks something out of the spans received.
    pub async fn wait_for<T>(
        &self,
        limit: Duration,
        what: &str,
        mut found: impl FnMut(&[Value]) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(t) = found(&self.spans()) {
                return Ok(t);
            }
            if Instant::now() > deadline {
                let spans = serde_json::to_string_pretty(&self.spans()).context("dump")?;
                bail!("no {what} within {limit:?}; spans received:\n{spans}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for ZipkinCollector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

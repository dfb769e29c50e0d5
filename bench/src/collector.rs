//! The span listener every system exports to: it takes Zipkin v2 JSON,
//! counts the spans and their traces, and keeps nothing else, so it costs
//! the systems nothing but the export itself.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;

#[derive(Debug, Default)]
struct Counts {
    spans: u64,
    traces: HashSet<String>,
}

/// A running listener.
#[derive(Debug)]
pub struct Collector {
    port: u16,
    counts: Arc<Mutex<Counts>>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Deserialize)]
struct Span {
    #[serde(rename = "traceId")]
    trace_id: String,
}

async fn receive(State(counts): State<Arc<Mutex<Counts>>>, body: axum::body::Bytes) -> StatusCode {
    match serde_json::from_slice::<Vec<Span>>(&body) {
        Ok(batch) => {
            if let Ok(mut c) = counts.lock() {
                c.spans += batch.len() as u64;
                c.traces.extend(batch.into_iter().map(|s| s.trace_id));
            }
            StatusCode::ACCEPTED
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

impl Collector {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(Mutex::new(Counts::default()));
        let app = Router::new()
            .route("/api/v2/spans", post(receive))
            .with_state(counts.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            port,
            counts,
            server,
        })
    }

    /// The URL to export to.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/api/v2/spans", self.port)
    }

    /// Spans and distinct traces received since the last reset.
    pub fn counts(&self) -> (u64, u64) {
        self.counts
            .lock()
            .map(|c| (c.spans, c.traces.len() as u64))
            .unwrap_or_default()
    }

    pub fn reset(&self) {
        if let Ok(mut c) = self.counts.lock() {
            *c = Counts::default();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

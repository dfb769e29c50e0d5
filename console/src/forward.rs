//! Passing each stored batch of spans on to a Zipkin too
//! (`CONSOLE_FORWARD_URL`): the console keeps the history (on disk with
//! `CONSOLE_DATA_DIR`) and a Zipkin beside it gets the same spans for its
//! own UI, as in the Compose stack.
//!
//! Best effort, never in the way: batches wait in a bounded queue and go
//! one at a time; a full queue drops the newest, and a Zipkin that is down
//! or slow costs a failed post, both counted. The services' batch has
//! been answered `202` by then either way.

use std::time::Duration;

use axum::body::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// Batches waiting to be passed on.
const QUEUED: usize = 256;
/// Longest one post may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The forwarder's counters.
#[derive(Debug, Clone, Default)]
pub struct ForwardMetrics {
    /// `console_forward_batches_total`: batches passed on.
    pub sent: Counter,
    /// `console_forward_failed_total`: posts that failed.
    pub failed: Counter,
    /// `console_forward_dropped_total`: batches dropped, the queue full.
    pub dropped: Counter,
}

/// Where batches go to be passed on.
#[derive(Debug, Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<Bytes>,
    metrics: ForwardMetrics,
}

impl Forwarder {
    /// Starts passing batches on to `url` (a Zipkin's `/api/v2/spans`).
    /// Must run inside a tokio runtime.
    pub fn start(url: String, metrics: ForwardMetrics) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUED);
        let m = metrics.clone();
        tokio::spawn(async move {
            let http = match reqwest::Client::builder().timeout(TIMEOUT).build() {
                Ok(http) => http,
                Err(e) => {
                    tracing::error!(error = %e, "no HTTP client for CONSOLE_FORWARD_URL: spans are not passed on");
                    return;
                }
            };
            while let Some(body) = rx.recv().await {
                let sent = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status);
                match sent {
                    Ok(_) => {
                        m.sent.inc();
                    }
                    Err(e) => {
                        m.failed.inc();
                        tracing::warn!(%url, error = %e, "passing spans on failed; the console keeps them");
                    }
                };
            }
        });
        Self { tx, metrics }
    }

    /// Queues `body` (a JSON list of spans) to be passed on.
    pub fn send(&self, body: Bytes) {
        if self.tx.try_send(body).is_err() {
            self.metrics.dropped.inc();
        }
    }
}

//! The web console: submit jobs and watch them live, each job's trace as a
//! waterfall, the queues, the workers, the failed jobs, the service map
//! and the alerts the weather events raised. Server-rendered HTML (maud, which escapes every value), a little
//! plain JavaScript for live updates, SVG for charts and the map; the
//! assets are compiled into the binary, so it works offline.

mod actions;
mod attempts;
mod batch;
mod bulk;
mod charts;
mod events;
mod frame;
mod jobs;
mod map;
mod pages;
mod proxy;
mod scheduled;
mod shards;
pub(crate) mod source;
mod traces;
mod waterfall;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use redis_job_queue::RedisQueue;

use source::TraceSource;

/// One reading of the queue, for the charts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Epoch ms.
    pub at_ms: u64,
    /// Jobs finished per second since the reading before.
    pub per_second: f64,
    /// Processing time of the attempts that ended since then, ms.
    pub p50_ms: Option<f64>,
    /// Ditto.
    pub p99_ms: Option<f64>,
}

/// Readings kept: ten minutes at one every ten seconds.
const SAMPLES: usize = 60;
/// Time between readings.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// What the pages share.
pub(crate) struct UiState {
    pub source: TraceSource,
    queue: RwLock<Option<RedisQueue>>,
    pub queue_name: String,
    pub api_url: String,
    pub zipkin_ui: Option<String>,
    /// The alerts service, if any.
    pub alerts_url: Option<String>,
    /// For the trace source (a Zipkin, perhaps).
    pub http: reqwest::Client,
    /// For the api: carries the api key, if any, which no other service
    /// may see.
    pub api: reqwest::Client,
    pub samples: Mutex<VecDeque<Sample>>,
    /// Permits for the job status streams open at once.
    pub streams: Arc<tokio::sync::Semaphore>,
}

impl UiState {
    /// The queue, once connected.
    pub(crate) fn queue(&self) -> Option<RedisQueue> {
        self.queue.read().ok().and_then(|q| q.clone())
    }
}

/// What every handler of the console's pages takes.
pub(crate) type Ui = State<Arc<UiState>>;

/// Starts the UI's background work (connecting to Redis, sampling the
/// queue) and answers its state.
pub(crate) fn start(source: TraceSource, config: &crate::Config) -> Arc<UiState> {
    let redis_url = config.queue.redis_url.expose().to_owned();
    let queue = config.queue.queue_config_with_ca().unwrap_or_else(|e| {
        tracing::error!(error = %e, "the queue pages cannot use Redis's CA");
        config.queue.queue_config()
    });
    let (api_url, zipkin_ui, alerts_url) = (
        &config.api_url,
        config.zipkin_ui_url.clone(),
        config.alerts_url.clone(),
    );
    // The key goes with every request to the api, marked sensitive so
    // no log or debug output shows it.
    let mut headers = header::HeaderMap::new();
    if let Some(key) = &config.api_key
        && let Ok(mut value) = header::HeaderValue::from_str(&format!("Bearer {}", key.expose()))
    {
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    let state = Arc::new(UiState {
        source,
        queue: RwLock::new(None),
        queue_name: queue.name.clone(),
        api_url: api_url.trim_end_matches('/').to_owned(),
        zipkin_ui,
        alerts_url: alerts_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty()),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default(),
        api: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .default_headers(headers)
            .build()
            .unwrap_or_default(),
        samples: Mutex::new(VecDeque::with_capacity(SAMPLES)),
        streams: Arc::new(tokio::sync::Semaphore::new(config.max_streams as usize)),
    });
    let s = state.clone();
    tokio::spawn(async move {
        // Redis may start after the console, or never (a console used as a
        // trace store only): keep trying, quietly after the first warning.
        let mut warned = false;
        let connected = loop {
            match RedisQueue::connect(&redis_url, queue.clone()).await {
                Ok(q) => break q,
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "the queue is not reachable yet; the queue pages wait for it");
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        if let Ok(mut q) = s.queue.write() {
            *q = Some(connected.clone());
        }
        charts::sample(s, connected).await;
    });
    state
}

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// The console's pages and their data endpoints.
pub(crate) fn routes(state: Arc<UiState>) -> Router {
    Router::new()
        .route("/", get(pages::submit))
        .route("/jobs", get(jobs::search))
        .route("/jobs/bulk", get(bulk::review))
        .route("/bulk/{id}", get(bulk::status_page))
        .route("/ui/bulk", post(bulk::start))
        .route("/ui/bulk/{id}/stop", post(bulk::stop))
        .route("/ui/bulk/{id}/fragment", get(bulk::fragment))
        .route("/jobs/{id}", get(pages::job))
        .route("/queues", get(pages::queues))
        .route("/workers", get(pages::workers))
        .route("/failed", get(pages::failed))
        .route("/scheduled", get(pages::scheduled))
        .route("/map", get(pages::map))
        .route("/alerts", get(pages::alerts))
        .route("/batches/{id}", get(batch::page))
        .route("/ui/batches/{id}/fragment", get(batch::fragment))
        .route("/ui/jobs", post(proxy::create_job))
        .route("/ui/jobs/{id}/events", get(events::job_events))
        .route("/ui/jobs/{id}/trace", get(pages::job_trace))
        .route("/ui/fragment/{page}", get(pages::fragment))
        .route("/ui/spans", post(proxy::browser_spans))
        .route("/ui/jobs/{id}/cancel", post(actions::cancel))
        .route("/ui/jobs/{id}/retry", post(actions::retry))
        .route("/ui/retry", post(actions::retry_many))
        .route("/traces", get(traces::search))
        .route("/traces/{id}", get(traces::trace))
        .route("/ui/queues/{name}/pause", post(actions::pause))
        .route("/ui/queues/{name}/resume", post(actions::resume))
        .route(
            "/static/app.css",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
            }),
        )
        .route(
            "/static/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    JS,
                )
                    .into_response()
            }),
        )
        .with_state(state)
}

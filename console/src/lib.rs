//! The console: an embedded trace store that speaks Zipkin's v2 API, so
//! every service's default Zipkin endpoint (`localhost:9411`) already
//! points at it, and no Docker or Zipkin is needed to see a trace.
//!
//! | route | answers |
//! |---|---|
//! | `POST /api/v2/spans` | `202`: Zipkin v2 JSON spans, gzip or not, stored |
//! | `GET /api/v2/services`, `/spans?serviceName=` | service names; span names of a service |
//! | `GET /api/v2/traces?…` | traces matching `serviceName`, `spanName`, `annotationQuery`, `minDuration`, `maxDuration`, `endTs`, `lookback`, `limit` |
//! | `GET /api/v2/trace/{traceId}`, `/traceMany?traceIds=` | one trace; several |
//! | `GET /api/v2/dependencies?endTs=&lookback=` | the service graph, by Zipkin's linking rules |
//! | `GET /api/v2/autocompleteKeys`, `/autocompleteValues?key=` | tag keys and their values, for search |
//! | `GET /healthz`, `/metrics` | health; Prometheus metrics of the store |
//!
//! `console trace ID` prints a trace, or a job's, as an indented tree.
//!
//! The store keeps at most `CONSOLE_MAX_SPANS` spans and `CONSOLE_MAX_BYTES`
//! bytes, evicting the oldest traces first; long values are cut (see
//! [`store`]). Errors are `application/problem+json`. The console traces
//! none of its own routes: its spans would land in itself.

mod api;
pub mod auth;
pub mod cli;
pub mod forward;
pub mod store;
pub mod tree;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use telemetry::TelemetryArgs;
use telemetry::metrics::Metrics;
use tokio::net::TcpListener;
use weather_jobs::settings::QueueArgs;

pub use store::Store;

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The console's settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "console",
    version,
    about = "A Zipkin-compatible trace store and a console for jobs and their traces"
)]
pub struct Config {
    /// Address to listen on (Zipkin's port, so services find it unchanged).
    /// Loopback by default; any other address needs `CONSOLE_USERS` (or
    /// `CONSOLE_AUTH=off`).
    #[arg(long, env = "CONSOLE_LISTEN", default_value = "127.0.0.1:9411")]
    pub listen: SocketAddr,
    /// Users who may log in, comma-separated `name:role:hash` (role
    /// `viewer` or `operator`; the hash from `console hash-password`).
    #[arg(long, env = "CONSOLE_USERS", hide_env_values = true)]
    pub users: Option<String>,
    /// A file of users, one `name:role:hash` a line (instead of
    /// `CONSOLE_USERS`).
    #[arg(long, env = "CONSOLE_USERS_FILE")]
    pub users_file: Option<std::path::PathBuf>,
    /// `off` serves with no login on any address (behind a proxy that logs
    /// users in, or in a private network); warned about at every start.
    #[arg(long, env = "CONSOLE_AUTH", value_enum, default_value = "on")]
    pub auth: auth::AuthSwitch,
    /// Host names the console answers to when it has no users, besides
    /// loopback names and the listen address, comma-separated (a
    /// request naming any other host is refused: DNS rebinding).
    #[arg(long, env = "CONSOLE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Most spans kept in memory; the oldest traces are evicted first.
    #[arg(long, env = "CONSOLE_MAX_SPANS", default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_spans: u64,
    /// Most bytes the store keeps, counted from its strings and records
    /// (the process's memory stays under about twice this); the oldest
    /// traces are evicted first.
    #[arg(long, env = "CONSOLE_MAX_BYTES", default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1_048_576..))]
    pub max_bytes: u64,
    /// Keep spans on disk in this directory too, so they survive a
    /// restart (unset: in memory only). The disk holds what memory holds,
    /// within `CONSOLE_MAX_SPANS` and `CONSOLE_MAX_BYTES`.
    #[arg(long, env = "CONSOLE_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// With `CONSOLE_DATA_DIR`: how long a trace is kept after it arrived
    /// (`7d`, `36h`, `90m`).
    #[arg(long, env = "CONSOLE_RETENTION", default_value = "7d", value_parser = retention)]
    pub retention: std::time::Duration,
    /// With `CONSOLE_DATA_DIR`: most bytes of span records kept on disk
    /// (as written; the engine compresses them, so the directory is
    /// usually smaller); the oldest traces are evicted first.
    #[arg(long, env = "CONSOLE_DISK_BYTES", default_value_t = 1024 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1_048_576..))]
    pub disk_bytes: u64,
    /// Longest window a query looks back over, in milliseconds (also the
    /// default `lookback`).
    #[arg(long, env = "QUERY_LOOKBACK", default_value_t = 86_400_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub query_lookback: u64,
    /// Tag keys whose values are offered for autocompletion in searches,
    /// comma-separated.
    #[arg(
        long,
        env = "AUTOCOMPLETE_KEYS",
        value_delimiter = ',',
        default_value = "messaging.destination.name,http.route,error.type"
    )]
    pub autocomplete_keys: Vec<String>,
    /// Also pass each batch of spans stored on to this Zipkin endpoint
    /// (`http://zipkin:9411/api/v2/spans`), for its own UI; best effort.
    #[arg(long, env = "CONSOLE_FORWARD_URL")]
    pub forward_url: Option<String>,
    /// Read traces from this Zipkin (or console) instead of storing them;
    /// the console then serves no `/api/v2` of its own.
    #[arg(long, env = "CONSOLE_ZIPKIN_URL")]
    pub zipkin_url: Option<String>,
    /// Zipkin's web UI, for an "open in Zipkin" link on each trace.
    #[arg(long, env = "ZIPKIN_UI_URL")]
    pub zipkin_ui_url: Option<String>,
    /// The api, where the console's page submits jobs.
    #[arg(long, env = "API_URL", default_value = "http://localhost:8080")]
    pub api_url: String,
    /// The alerts service (`/v1/alerts`), for the console's alerts page
    /// (unset: the page says there is none).
    #[arg(long, env = "ALERTS_URL")]
    pub alerts_url: Option<String>,
    /// A key of the api's `API_KEYS`, sent with what the console passes on
    /// to the api (submit, cancel, retry); never to the browser.
    #[arg(long, env = "CONSOLE_API_KEY", hide_env_values = true)]
    pub api_key: Option<ApiKey>,
    /// Most job status streams (the Submit page's live rows) open at once.
    #[arg(long, env = "CONSOLE_MAX_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streams: u32,
    /// Redis and the weather queue, for the queue, worker and job pages.
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Logging (the console exports no spans of its own).
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Without a command, the console serves.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A retention: a human duration of at least a second.
fn retention(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (for example 7d, 36h, 90m)"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err("a retention is at least 1s".into());
    }
    Ok(d)
}

/// An api key; it never prints.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key itself, to send.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ApiKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "an api key is printable ASCII without spaces (the value is not shown)".into(),
            );
        }
        Ok(Self(key.to_owned()))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What the console can do besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print a trace (or a job's) as an indented tree: service, span, kind,
    /// duration, errors. Reads from this console or from any Zipkin.
    Trace(cli::TraceArgs),
    /// Read a password from stdin and print its argon2id hash, for
    /// `CONSOLE_USERS`.
    HashPassword,
}

/// The store's metrics.
#[derive(Debug, Clone, Default)]
pub struct StoreMetrics {
    /// `console_spans_received_total`.
    pub received: Counter,
    /// `console_spans_evicted_total`.
    pub evicted_spans: Counter,
    /// `console_traces_evicted_total`.
    pub evicted_traces: Counter,
    /// `console_spans_stored`.
    pub spans: Gauge,
    /// `console_traces_stored`.
    pub traces: Gauge,
    /// `console_store_bytes`.
    pub bytes: Gauge,
    /// `console_store_disk_bytes`.
    pub disk_bytes: Gauge,
    /// `console_data_dir_bytes`.
    pub dir_bytes: Gauge,
    /// `console_disk_errors_total`.
    pub disk_errors: Counter,
    /// `console_traces_expired_total`.
    pub expired: Counter,
    /// The forwarder's counters (`CONSOLE_FORWARD_URL`).
    pub forward: forward::ForwardMetrics,
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The trace store (empty and unserved when traces are read from a
    /// Zipkin; read back from disk with `CONSOLE_DATA_DIR`).
    pub store: Arc<Store>,
    /// Its metrics.
    pub metrics: StoreMetrics,
    /// Longest lookback of a query, ms.
    pub query_lookback: u64,
    /// Whether the store serves `/api/v2` (not when a Zipkin does).
    pub serve_store: bool,
    /// Who may do what.
    pub auth: Arc<auth::Auth>,
    /// Where stored batches are passed on (`CONSOLE_FORWARD_URL`).
    pub forward: Option<forward::Forwarder>,
    ui: Arc<ui::UiState>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .field("serve_store", &self.serve_store)
            .finish()
    }
}

impl AppState {
    /// A store with the settings of `config` (read back from disk with
    /// `CONSOLE_DATA_DIR`), and the background work (connecting to Redis,
    /// sampling the queue, syncing and expiring the disk) started. Must run
    /// inside a tokio runtime. Fails when the access settings do not hold
    /// (users that do not load, an exposed address without users), or the
    /// data directory cannot be opened.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let auth = auth::Auth::new(
            config.users.as_deref(),
            config.users_file.as_deref(),
            config.auth,
            &config.allowed_hosts,
            config.listen,
        )?;
        let mut store = Store::new(
            usize::try_from(config.max_spans).unwrap_or(usize::MAX),
            &config.autocomplete_keys,
        )
        .with_max_bytes(usize::try_from(config.max_bytes).unwrap_or(usize::MAX));
        let metrics = StoreMetrics::default();
        let on_disk = config.zipkin_url.is_none() && config.data_dir.is_some();
        if let (Some(dir), true) = (&config.data_dir, on_disk) {
            let started = std::time::Instant::now();
            let options = store::DiskOptions {
                dir: dir.clone(),
                max_bytes: config.disk_bytes,
                retention: config.retention,
            };
            let (opened, found) = store
                .with_disk(&options)
                .map_err(|e| anyhow::anyhow!("CONSOLE_DATA_DIR {}: {e}", dir.display()))?;
            store = opened;
            tracing::info!(
                dir = %dir.display(),
                spans = found.spans,
                traces = found.traces,
                dropped_traces = found.dropped_traces,
                bad_records = found.bad_records,
                took_ms = started.elapsed().as_millis() as u64,
                "trace store read back from disk"
            );
        }
        let store = Arc::new(store);
        if on_disk {
            tokio::spawn(keep_disk(store.clone(), metrics.clone()));
        }
        let source = match &config.zipkin_url {
            Some(url) => ui::source::TraceSource::Zipkin(url.clone()),
            None => ui::source::TraceSource::Embedded(store.clone()),
        };
        let ui = ui::start(source, config);
        let forward = config
            .forward_url
            .clone()
            .filter(|_| config.zipkin_url.is_none())
            .map(|url| forward::Forwarder::start(url, metrics.forward.clone()));
        Ok(Self {
            store,
            forward,
            metrics,
            query_lookback: config.query_lookback,
            serve_store: config.zipkin_url.is_none(),
            auth: Arc::new(auth),
            ui,
        })
    }
}

/// Every second: syncs the store's disk to the device, and expires what
/// is past the retention (a look at the oldest trace when none is).
async fn keep_disk(store: Arc<Store>, m: StoreMetrics) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (dir, expired) = store.off_runtime(|s| (s.sync(), s.expire())).await;
        if let Some(bytes) = dir {
            m.dir_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        m.expired.inc_by(expired as u64);
    }
}

/// The console's routes.
pub fn app(state: AppState) -> Router {
    let m = state.metrics.clone();
    let failures = state.auth.failures.clone();
    let metrics = Arc::new(Metrics::with(|r| {
        r.register(
            "console_spans_received",
            "Spans received on /api/v2/spans",
            m.received.clone(),
        );
        r.register(
            "console_spans_evicted",
            "Spans evicted to keep the store within CONSOLE_MAX_SPANS and CONSOLE_MAX_BYTES",
            m.evicted_spans.clone(),
        );
        r.register(
            "console_traces_evicted",
            "Traces evicted to keep the store within CONSOLE_MAX_SPANS and CONSOLE_MAX_BYTES",
            m.evicted_traces.clone(),
        );
        r.register(
            "console_spans_stored",
            "Spans in the store",
            m.spans.clone(),
        );
        r.register(
            "console_traces_stored",
            "Traces in the store",
            m.traces.clone(),
        );
        r.register(
            "console_store_bytes",
            "Bytes the store counts against CONSOLE_MAX_BYTES",
            m.bytes.clone(),
        );
        r.register(
            "console_store_disk_bytes",
            "Bytes of span records on disk, counted against CONSOLE_DISK_BYTES (0 without CONSOLE_DATA_DIR)",
            m.disk_bytes.clone(),
        );
        r.register(
            "console_data_dir_bytes",
            "Bytes the data directory holds (compressed tables and journal)",
            m.dir_bytes.clone(),
        );
        r.register(
            "console_disk_errors",
            "Writes to the data directory that failed (their spans are kept in memory only)",
            m.disk_errors.clone(),
        );
        r.register(
            "console_traces_expired",
            "Traces evicted for being older than CONSOLE_RETENTION",
            m.expired.clone(),
        );
        r.register(
            "console_forward_batches",
            "Span batches passed on to CONSOLE_FORWARD_URL",
            m.forward.sent.clone(),
        );
        r.register(
            "console_forward_failed",
            "Span batches CONSOLE_FORWARD_URL did not take (down, slow, or refused)",
            m.forward.failed.clone(),
        );
        r.register(
            "console_forward_dropped",
            "Span batches dropped before being passed on, the queue to CONSOLE_FORWARD_URL full",
            m.forward.dropped.clone(),
        );
        r.register(
            "console_login_failures",
            "Failed logins (login page and HTTP Basic)",
            failures.clone(),
        );
    }));
    let store = state.store.clone();
    let ops = telemetry::ops::routes(metrics, move |_| {
        let (store, m) = (store.clone(), m.clone());
        async move {
            let stats = store.stats();
            m.spans.set(i64::try_from(stats.spans).unwrap_or(i64::MAX));
            m.traces
                .set(i64::try_from(stats.traces).unwrap_or(i64::MAX));
            m.bytes.set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
            m.disk_bytes
                .set(i64::try_from(stats.disk_bytes).unwrap_or(i64::MAX));
            let errors = stats.disk_errors.saturating_sub(m.disk_errors.get());
            m.disk_errors.inc_by(errors);
        }
    });
    let pages = ui::routes(state.ui.clone());
    let auth = state.auth.clone();
    let api = if state.serve_store {
        api::routes(state)
    } else {
        api::fallback()
    };
    api.merge(ops)
        .merge(pages)
        .merge(auth::routes(auth.clone()))
        .layer(axum::middleware::from_fn_with_state(auth, auth::guard))
}

/// Serves the console on `listener` until `shutdown` completes.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "console listening");
    // The client's address, for the login throttle and its log lines.
    let app = app(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

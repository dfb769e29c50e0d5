//! The worker's settings: read once at start from flags or the
//! environment (`worker --help` lists each with its variable).

use std::net::SocketAddr;

use reqwest::Url;
use telemetry::TelemetryArgs;
use telemetry::messaging::TraceMode;
use weather_jobs::settings::{KafkaArgs, QueueArgs};

/// The worker's settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "worker",
    version,
    about = "Run weather jobs from the Redis queue"
)]
pub struct Config {
    /// Address of the health endpoint.
    #[arg(long, env = "WORKER_LISTEN", default_value = "0.0.0.0:9100")]
    pub listen: SocketAddr,
    /// Jobs run at once by this process.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Seconds a weather result stays in the cache.
    #[arg(long, env = "CACHE_TTL_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_ttl_secs: u64,
    /// Base URL of the geocoding API (Open-Meteo's, or the stub's).
    #[arg(
        long,
        env = "GEOCODING_BASE_URL",
        default_value = "https://geocoding-api.open-meteo.com/"
    )]
    pub geocoding_base_url: Url,
    /// Base URL of the forecast API (Open-Meteo's, or the stub's).
    #[arg(
        long,
        env = "WEATHER_BASE_URL",
        default_value = "https://api.open-meteo.com/"
    )]
    pub weather_base_url: Url,
    /// Timeout of one weather-service request, in milliseconds.
    #[arg(long, env = "HTTP_TIMEOUT_MS", default_value_t = 5000)]
    pub http_timeout_ms: u64,
    /// The largest answer the weather service may send, in bytes; a job
    /// whose answer is larger fails (`error.type` `body_too_large`).
    #[arg(long, env = "HTTP_MAX_BODY_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u32).range(1024..=67_108_864))]
    pub http_max_body_bytes: u32,
    /// How a job's span relates to the span that enqueued it.
    #[arg(long, env = "QUEUE_TRACE_MODE", value_enum, default_value = "parent")]
    pub trace_mode: TraceMode,
    /// Seconds running jobs get to finish once a stop is asked (SIGTERM);
    /// jobs still running then are left to run again elsewhere after
    /// their lease. Keep it under the orchestrator's kill timeout.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 25)]
    pub shutdown_grace_secs: u64,
    /// Most weather-service calls per second, all workers together (0: no
    /// limit).
    #[arg(long, env = "WEATHER_RATE_LIMIT", default_value_t = 0)]
    pub weather_rate_limit: u32,
    /// The share of weather-service calls (0 to 1) that, failed within
    /// the window, opens the circuit breaker.
    #[arg(long, env = "WEATHER_BREAKER_FAILURE_RATIO", default_value_t = 0.8, value_parser = parse_ratio)]
    pub breaker_failure_ratio: f64,
    /// Calls that must have ended within the window before the breaker
    /// may open.
    #[arg(long, env = "WEATHER_BREAKER_MIN_CALLS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_min_calls: u32,
    /// The breaker's window for counting calls, in seconds.
    #[arg(long, env = "WEATHER_BREAKER_WINDOW_SECS", default_value_t = 30)]
    pub breaker_window_secs: u64,
    /// How long an open breaker refuses calls (their jobs are deferred,
    /// not failed) before it lets a probe through, in seconds.
    #[arg(long, env = "WEATHER_BREAKER_COOLDOWN_SECS", default_value_t = 10)]
    pub breaker_cooldown_secs: u64,
    /// Times a failed weather-service call (5xx, 429, no answer) is sent
    /// again within one attempt, after a short backoff, before the
    /// attempt fails.
    #[arg(long, env = "WEATHER_HTTP_RESENDS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub http_resends: u32,
    /// Periodic refreshes, `;`-separated: `name|cron|city` (cron with 5
    /// fields, or 6 with seconds first), such as `oslo|*/15 * * * *|Oslo`.
    #[arg(long, env = "SCHEDULES", default_value = "")]
    pub schedules: String,
    /// A file of schedules, one `name|cron|city` per line (`#` comments).
    #[arg(long, env = "SCHEDULES_FILE")]
    pub schedules_file: Option<std::path::PathBuf>,
    /// Redis and the weather queue.
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Kafka, for the `weather.updated` events.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Most events each queue shard's outbox keeps for Kafka (a slow or
    /// down broker); a job that succeeds while it is full still succeeds,
    /// and its event is dropped and counted (`kafka_outbox_dropped`).
    #[arg(long, env = "KAFKA_OUTBOX_MAX", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub kafka_outbox_max: u64,
    /// Events the relay sends to Kafka at once, in order, before it waits
    /// for the broker to acknowledge them.
    #[arg(long, env = "KAFKA_RELAY_BATCH", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub kafka_relay_batch: u32,
    /// How long the relay waits for the broker to acknowledge its events
    /// before it sends them again, in milliseconds (they stay in the
    /// outbox meanwhile).
    #[arg(long, env = "KAFKA_DELIVERY_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub kafka_delivery_timeout_ms: u64,
    /// Tracing and logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// A share, from 0 to 1 (above 0).
fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a share above 0 and at most 1 (such as 0.8)"
        )),
    }
}

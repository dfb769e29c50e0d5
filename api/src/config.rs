//! The api's settings: read once at start from flags or the environment
//! (`api --help` lists each with its variable).

use std::net::SocketAddr;
use std::time::Duration;

use telemetry::TelemetryArgs;
use weather_jobs::settings::QueueArgs;

use crate::auth::ApiKeys;
use crate::limit;

/// The default of `MAX_DELAY_SECS`: 30 days.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30 * 86_400);

/// The api's settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "api",
    version,
    about = "Enqueue weather jobs and read their status"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "API_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Who may enqueue.
    #[command(flatten)]
    pub api_keys: ApiKeys,
    /// Longest delay a job may be given (`delay_secs`, `run_at`), in
    /// seconds.
    #[arg(long, env = "MAX_DELAY_SECS", default_value_t = DEFAULT_MAX_DELAY.as_secs())]
    pub max_delay_secs: u64,
    /// Requests handled at once; more are refused with 503 and
    /// `Retry-After: 1`, never queued. /healthz, /readyz and /metrics are exempt.
    #[arg(
        long,
        env = "API_MAX_IN_FLIGHT",
        default_value_t = limit::DEFAULT_MAX_IN_FLIGHT,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_in_flight: u32,
    /// How long a request's head, and then its body, may take to arrive,
    /// in seconds: a slower one is cut off (its head: the connection is
    /// closed; its body: `408`). A body is read whole before the request
    /// takes a place in flight, so slow clients hold none.
    #[arg(
        long,
        env = "API_REQUEST_TIMEOUT_SECS",
        default_value_t = crate::serve::DEFAULT_REQUEST_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub request_timeout_secs: u64,
    /// Redis and the weather queue.
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Tracing and logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

//! The service's settings, read once at start (flags, or the environment).

use std::net::SocketAddr;

use telemetry::TelemetryArgs;
use weather_jobs::settings::{KafkaArgs, RedisUrl};

use crate::rules::Rules;

/// The alerts service's settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "alerts",
    version,
    about = "Raise alerts from the weather.updated events on Kafka"
)]
pub struct Config {
    /// Address of the HTTP endpoint (`/v1/alerts`, `/healthz`, `/metrics`).
    #[arg(long, env = "ALERTS_LISTEN", default_value = "0.0.0.0:9300")]
    pub listen: SocketAddr,
    /// Kafka and the topic to read.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The consumer group: services in one group share the partitions.
    #[arg(long, env = "KAFKA_GROUP", default_value = "alerts")]
    pub group: String,
    /// How long the group waits for a silent member before handing its
    /// partitions to the others, in milliseconds.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u32,
    /// How often the offsets of processed records are committed, in
    /// milliseconds. Records processed since the last commit come again
    /// after a crash, and are recognised.
    #[arg(long, env = "KAFKA_COMMIT_INTERVAL_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub commit_interval_ms: u32,
    /// Partitions of the topic, when this service creates it.
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_partitions: i32,
    /// Replicas of the topic, when this service creates it.
    #[arg(long, env = "KAFKA_TOPIC_REPLICATION", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_replication: i32,
    /// Redis URL: the alerts and the event ids already processed.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: RedisUrl,
    /// PEM file of the root certificate(s) to trust for a `rediss://`
    /// server, in place of the system's (a private CA).
    #[arg(long, env = "REDIS_CA_CERT")]
    pub redis_ca_cert: Option<std::path::PathBuf>,
    /// Prefix of the service's Redis keys.
    #[arg(long, env = "ALERTS_KEY_PREFIX", default_value = "alerts")]
    pub key_prefix: String,
    /// Wind alert: at or above this speed, km/h.
    #[arg(long, env = "ALERT_WIND_KMH", default_value_t = 60.0)]
    pub wind_kmh: f64,
    /// Heat alert: at or above this temperature, °C.
    #[arg(
        long,
        env = "ALERT_HEAT_C",
        default_value_t = 35.0,
        allow_negative_numbers = true
    )]
    pub heat_c: f64,
    /// Frost alert: at or below this temperature, °C.
    #[arg(long, env = "ALERT_FROST_C", default_value_t = -10.0, allow_negative_numbers = true)]
    pub frost_c: f64,
    /// Alerts kept (the newest).
    #[arg(long, env = "ALERTS_KEEP", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub keep: u32,
    /// How long an event id is remembered, to recognise a record delivered
    /// again, in seconds.
    #[arg(long, env = "ALERTS_DEDUP_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub dedup_secs: u64,
    /// Tracing and logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// The brokers to read from (`KAFKA_BROKERS`, required here).
    pub fn brokers(&self) -> anyhow::Result<String> {
        self.kafka
            .kafka_brokers
            .clone()
            .filter(|b| !b.trim().is_empty())
            .ok_or_else(|| anyhow::anyhow!("KAFKA_BROKERS is required: the brokers to read from"))
    }

    /// The root certificate(s) of `REDIS_CA_CERT`, read now so a missing
    /// file is reported at start.
    pub fn redis_ca(&self) -> anyhow::Result<Option<Vec<u8>>> {
        match &self.redis_ca_cert {
            Some(path) => {
                Ok(Some(std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("REDIS_CA_CERT {}: {e}", path.display())
                })?))
            }
            None => Ok(None),
        }
    }

    /// The thresholds.
    pub fn rules(&self) -> Rules {
        Rules {
            wind_kmh: self.wind_kmh,
            heat_c: self.heat_c,
            frost_c: self.frost_c,
        }
    }
}

//! Settings shared by the api and the worker: where Redis is and how the
//! weather queue behaves. Each is a flag with an environment fallback.

use std::fmt;
use std::time::Duration;

use clap::Args;

use redis_job_queue::{QueueConfig, QueueError, RedisQueue};

use crate::WEATHER_QUEUE;

/// A Redis URL. It may hold a password, so it never prints in full.
#[derive(Clone)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL itself, to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        redis::parse_redis_url(s)
            .map(|_| Self(s.to_owned()))
            .ok_or_else(|| "not a redis:// or rediss:// URL".to_owned())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match redis::parse_redis_url(&self.0) {
            Some(url) => write!(
                f,
                "{}://{}{}:{}{}",
                url.scheme(),
                if url.password().is_some() { "***@" } else { "" },
                url.host_str().unwrap_or_default(),
                url.port().unwrap_or(6379),
                url.path()
            ),
            None => f.write_str("<invalid redis url>"),
        }
    }
}

/// Redis and queue settings.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// Redis URL, for the queue and the cache.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: RedisUrl,
    /// PEM file of the root certificate(s) to trust for a `rediss://`
    /// server, in place of the system's (a private CA).
    #[arg(long, env = "REDIS_CA_CERT")]
    pub redis_ca_cert: Option<std::path::PathBuf>,
    /// Name of the weather queue.
    #[arg(long, env = "QUEUE_NAME", default_value = WEATHER_QUEUE)]
    pub queue_name: String,
    /// Prefix of the queue's Redis keys.
    #[arg(long, env = "QUEUE_KEY_PREFIX", default_value = "jobs")]
    pub queue_key_prefix: String,
    /// Seconds a worker may hold a job without renewing its lease before
    /// another worker takes the job over.
    #[arg(long, env = "JOB_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_lease_secs: u64,
    /// Seconds finished jobs (status, result, error) are kept.
    #[arg(long, env = "JOB_RETENTION_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_retention_secs: u64,
    /// Attempts a job gets, crashed workers included.
    #[arg(long, env = "JOB_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub job_max_attempts: u32,
    /// Delay before the first retry in milliseconds, doubled per attempt.
    #[arg(long, env = "JOB_RETRY_BACKOFF_MS", default_value_t = 1000)]
    pub job_retry_backoff_ms: u64,
    /// Seconds an attempt may run before it is cut short and retried by
    /// the policy (0: no limit).
    #[arg(long, env = "JOB_TIMEOUT_SECS", default_value_t = 300)]
    pub job_timeout_secs: u64,
}

impl QueueArgs {
    /// Connects to the queue these flags describe, retrying while Redis
    /// starts.
    pub async fn connect(&self) -> Result<RedisQueue, QueueError> {
        redis_job_queue::connect_with_retry(self.redis_url.expose(), self.queue_config_with_ca()?)
            .await
    }

    /// [`Self::queue_config`] with the root certificates of
    /// `REDIS_CA_CERT` read in.
    pub fn queue_config_with_ca(&self) -> Result<QueueConfig, QueueError> {
        let mut cfg = self.queue_config();
        if let Some(path) = &self.redis_ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                QueueError::Config(format!("REDIS_CA_CERT {}: {e}", path.display()))
            })?;
            cfg.tls_ca_pem = Some(pem);
        }
        Ok(cfg)
    }

    /// The queue settings these flags describe.
    pub fn queue_config(&self) -> QueueConfig {
        let mut cfg = QueueConfig::new(&self.queue_name);
        cfg.key_prefix.clone_from(&self.queue_key_prefix);
        cfg.lease = Duration::from_secs(self.job_lease_secs);
        cfg.retention = Duration::from_secs(self.job_retention_secs);
        cfg.max_attempts = self.job_max_attempts;
        cfg.retry_backoff = Duration::from_millis(self.job_retry_backoff_ms);
        cfg.job_timeout =
            (self.job_timeout_secs > 0).then(|| Duration::from_secs(self.job_timeout_secs));
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_never_prints() {
        let url: RedisUrl = "redis://:hunter2@cache.internal:6380/2"
            .parse()
            .expect("valid");
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(shown, "redis://***@cache.internal:6380/2");
        assert!("http://nope".parse::<RedisUrl>().is_err());
    }
}

/// Where the `weather.updated` events go (Kafka).
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka brokers, `host:port` comma-separated. Unset: no events.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// The topic of the weather events.
    #[arg(long, env = "KAFKA_TOPIC", default_value = crate::WEATHER_UPDATED_TOPIC)]
    pub kafka_topic: String,
}

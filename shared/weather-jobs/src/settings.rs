//! Settings shared by the services: where Redis is and how the weather
//! queue behaves (the api, the worker and the console), and where Kafka
//! is (the worker and the alerts service, which also reads the Redis URL
//! from here). Each is a flag with an environment fallback.

use std::fmt;
use std::time::Duration;

use clap::Args;

use redis_job_queue::{QueueConfig, QueueError, RedisQueue};

use crate::WEATHER_QUEUE;

/// A Redis URL, or a comma-separated list of them: the seed nodes of a
/// Redis Cluster. It may hold a password, so it never prints in full.
#[derive(Clone)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL itself, to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Each URL of the list (one for a single server).
    fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.split(',').map(str::trim).filter(|u| !u.is_empty())
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = Self(s.to_owned());
        if url.parts().next().is_none() {
            return Err("no redis:// or rediss:// URL".to_owned());
        }
        let bad = url
            .parts()
            .find(|u| redis::parse_redis_url(u).is_none())
            .map(|u| Self(u.to_owned()));
        match bad {
            Some(bad) if url.parts().count() > 1 => Err(format!(
                "{bad:?} in the list is not a redis:// or rediss:// URL"
            )),
            Some(_) => Err(
                "not a redis:// or rediss:// URL (or a comma-separated list of them, \
                 for a Redis Cluster)"
                    .to_owned(),
            ),
            None => Ok(url),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.parts().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match redis::parse_redis_url(part) {
                Some(url) => write!(
                    f,
                    "{}://{}{}:{}{}",
                    url.scheme(),
                    if url.password().is_some() { "***@" } else { "" },
                    url.host_str().unwrap_or_default(),
                    url.port().unwrap_or(6379),
                    url.path()
                )?,
                None => f.write_str("<invalid redis url>")?,
            }
        }
        Ok(())
    }
}

/// Redis and queue settings.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// Redis URL, for the queue and the cache; for a Redis Cluster, the
    /// URLs of some of its nodes, comma-separated (a single node's URL
    /// works too: the client asks it).
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
    /// Seconds a job may be deferred in all: runs that could not even try
    /// (the weather service's circuit breaker or rate limit refused them)
    /// are not attempts, up to this; past it they count as attempts.
    #[arg(long, env = "JOB_MAX_DEFER_SECS", default_value_t = 3600)]
    pub job_max_defer_secs: u64,
    /// Delay before the first retry in milliseconds, doubled per attempt.
    #[arg(long, env = "JOB_RETRY_BACKOFF_MS", default_value_t = 1000)]
    pub job_retry_backoff_ms: u64,
    /// Seconds an attempt may run before it is cut short and retried by
    /// the policy (0: no limit).
    #[arg(long, env = "JOB_TIMEOUT_SECS", default_value_t = 300)]
    pub job_timeout_secs: u64,
    /// Shards of the queue, each under a hash tag of its own: on a Redis
    /// Cluster, N shards spread one queue over N masters. Every process of
    /// a queue must use the same number; a queue that holds jobs in
    /// another number of shards is refused at start.
    #[arg(long, env = "QUEUE_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=i64::from(redis_job_queue::MAX_SHARDS)))]
    pub queue_shards: u16,
    /// Replicas a push must reach (Redis `WAIT`) before the api answers
    /// 202; 0: once the master has it. Replication is asynchronous, so
    /// without it a failover can lose a push the api acknowledged.
    #[arg(long, env = "QUEUE_WAIT_REPLICAS", default_value_t = 0)]
    pub queue_wait_replicas: u32,
    /// Milliseconds a push waits for QUEUE_WAIT_REPLICAS replicas; past
    /// it the api answers 503 (the job may still run: send it again with
    /// the same Idempotency-Key).
    #[arg(long, env = "QUEUE_WAIT_TIMEOUT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_wait_timeout_ms: u64,
    /// Start the api and the workers even when Redis's maxmemory-policy
    /// evicts keys (anything but noeviction): jobs may then vanish when
    /// Redis is full. Without it they refuse to start; with it they warn.
    #[arg(long, env = "REDIS_ALLOW_EVICTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_allow_eviction: bool,
}

impl QueueArgs {
    /// Connects to the queue these flags describe, retrying while Redis
    /// starts; then refuses a Redis that may evict keys, unless
    /// `REDIS_ALLOW_EVICTION` (see [`RedisQueue::check_eviction`]), and
    /// watches the policy from then on ([`RedisQueue::watch_eviction`]).
    pub async fn connect(&self) -> Result<RedisQueue, QueueError> {
        self.connect_with(|_| {}).await
    }

    /// [`Self::connect`], with the settings these flags describe changed
    /// by `adjust` first (for settings of one process only).
    pub async fn connect_with(
        &self,
        adjust: impl FnOnce(&mut QueueConfig),
    ) -> Result<RedisQueue, QueueError> {
        let mut cfg = self.queue_config_with_ca()?;
        adjust(&mut cfg);
        let queue = redis_job_queue::connect_with_retry(self.redis_url.expose(), cfg).await?;
        queue.check_eviction(self.redis_allow_eviction).await?;
        // Runs for the life of the process, as the queue does.
        drop(queue.watch_eviction(self.redis_allow_eviction));
        Ok(queue)
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
        cfg.max_defer = Duration::from_secs(self.job_max_defer_secs);
        cfg.retry_backoff = Duration::from_millis(self.job_retry_backoff_ms);
        cfg.job_timeout =
            (self.job_timeout_secs > 0).then(|| Duration::from_secs(self.job_timeout_secs));
        cfg.wait_replicas = self.queue_wait_replicas;
        cfg.shards = self.queue_shards;
        cfg.wait_timeout = Duration::from_millis(self.queue_wait_timeout_ms);
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

    #[test]
    fn a_list_of_urls_names_a_clusters_seed_nodes_and_hides_their_passwords() {
        let url: RedisUrl = "redis://:hunter2@10.0.0.1:7000, redis://:hunter2@10.0.0.2:7001"
            .parse()
            .expect("valid");
        let shown = format!("{url:?}");
        assert_eq!(shown, "redis://***@10.0.0.1:7000,redis://***@10.0.0.2:7001");
        let err = "redis://10.0.0.1:7000,http://:hunter2@10.0.0.2"
            .parse::<RedisUrl>()
            .expect_err("one is not a Redis URL");
        assert!(
            err.contains("in the list") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(" , ".parse::<RedisUrl>().is_err());
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

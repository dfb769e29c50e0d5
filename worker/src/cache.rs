//! The weather cache in Redis, with a CLIENT span per command.

use std::time::Duration;

use redis_job_queue::{RedisConnection, ServerAddress};
use telemetry::attributes::{ERROR_TYPE, WEATHER_CACHE_HIT};
use tracing::Instrument;
use tracing::field::Empty;
use weather_jobs::WeatherResult;

/// A CLIENT span for one Redis command (`db.query.text` carries no
/// values), which says whether the cache had the entry.
fn redis_span(
    server: &ServerAddress,
    operation: &'static str,
    query: &'static str,
) -> tracing::Span {
    telemetry::redis_span!(
        server.address.as_str(),
        server.port,
        operation,
        query,
        { WEATHER_CACHE_HIT } = Empty,
    )
}

fn failed(span: &tracing::Span, e: &redis::RedisError) {
    span.record("otel.status_code", "ERROR");
    span.record(ERROR_TYPE, e.code().unwrap_or("redis_error"));
}

/// Weather results cached by place and units, with a TTL.
#[derive(Clone)]
pub struct WeatherCache {
    conn: RedisConnection,
    server: ServerAddress,
    prefix: String,
    ttl: Duration,
}

impl std::fmt::Debug for WeatherCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeatherCache")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl WeatherCache {
    /// A cache on `conn` (to `server`) whose entries live `ttl`.
    pub fn new(
        conn: RedisConnection,
        server: ServerAddress,
        prefix: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            conn,
            server,
            prefix: prefix.into(),
            ttl,
        }
    }

    /// The Redis key of the entry `key`: `key` is its hash tag, which the
    /// single-flight lease of the same entry shares (so the two are in one
    /// slot of a Redis Cluster, and entries spread over its nodes).
    pub fn key(&self, key: &str) -> String {
        format!("{}:{{{key}}}", self.prefix)
    }

    /// The cached result under `key`. An entry that no longer decodes
    /// (written by another version) counts as a miss.
    pub async fn get(&self, key: &str) -> Result<Option<WeatherResult>, redis::RedisError> {
        let key = self.key(key);
        let node = self.node_for(&key);
        let span = redis_span(&node, "GET", "GET ?");
        let mut conn = self.conn.clone();
        let get = async {
            let raw: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .inspect_err(|e| failed(&tracing::Span::current(), e))?;
            let hit = raw.and_then(|r| serde_json::from_str::<WeatherResult>(&r).ok());
            tracing::Span::current().record(WEATHER_CACHE_HIT, hit.is_some());
            Ok(hit)
        }
        .instrument(span.clone());
        let (hit, answered) = self.conn.observe(&key, get).await;
        telemetry::db::record_answered(&span, &node, &answered);
        hit
    }

    /// The node that holds `key` (the server, or its slot's master).
    fn node_for(&self, key: &str) -> ServerAddress {
        self.conn
            .node_for(key)
            .unwrap_or_else(|| self.server.clone())
    }

    /// Stores `value` under `key` for the TTL, and sends `also` in the
    /// same round trip (its answer ignored): releasing a single-flight
    /// lease, say.
    pub async fn set(
        &self,
        key: &str,
        value: &WeatherResult,
        also: Option<redis::Cmd>,
    ) -> Result<(), redis::RedisError> {
        let key = self.key(key);
        let node = self.node_for(&key);
        let span = redis_span(&node, "SET", "SET ? ? EX ?");
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(value).unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(json)
            .arg("EX")
            .arg(self.ttl.as_secs().max(1))
            .ignore();
        if let Some(cmd) = also {
            pipe.add_command(cmd).ignore();
        }
        let set = async {
            pipe.query_async::<()>(&mut conn)
                .await
                .inspect_err(|e| failed(&tracing::Span::current(), e))
        }
        .instrument(span.clone());
        let (set, answered) = self.conn.observe(&key, set).await;
        telemetry::db::record_answered(&span, &node, &answered);
        set
    }
}

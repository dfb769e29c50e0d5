//! The weather cache in Redis, with a CLIENT span per command.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tracing::Instrument;
use tracing::field::Empty;

use crate::jobs::WeatherResult;

/// Where a Redis server is, for span attributes and Zipkin's
/// `remoteEndpoint`.
#[derive(Debug, Clone)]
pub struct RedisPeer {
    /// Host name or address.
    pub address: String,
    /// Port.
    pub port: u16,
}

impl RedisPeer {
    /// The peer a client connects to.
    pub fn of(client: &redis::Client) -> Self {
        match client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, port)
            | redis::ConnectionAddr::TcpTls { host, port, .. } => Self {
                address: host.clone(),
                port: *port,
            },
            other => Self {
                address: format!("{other}"),
                port: 0,
            },
        }
    }
}

/// A CLIENT span for one Redis command, per the database conventions
/// (`db.query.text` carries no values).
pub fn redis_span(peer: &RedisPeer, operation: &'static str, query: &'static str) -> tracing::Span {
    tracing::info_span!(
        "redis",
        otel.name = operation,
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = operation,
        db.query.text = query,
        server.address = %peer.address,
        server.port = peer.port,
        weather.cache.hit = Empty,
        otel.status_code = Empty,
        error.type = Empty,
    )
}

fn failed(span: &tracing::Span, e: &redis::RedisError) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", e.code().unwrap_or("redis_error"));
}

/// Weather results cached by place and units, with a TTL.
#[derive(Clone)]
pub struct WeatherCache {
    conn: ConnectionManager,
    peer: RedisPeer,
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
    /// A cache on `conn` whose entries live `ttl`.
    pub fn new(
        conn: ConnectionManager,
        peer: RedisPeer,
        prefix: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            conn,
            peer,
            prefix: prefix.into(),
            ttl,
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    /// The cached result under `key`. An entry that no longer decodes
    /// (written by another version) counts as a miss.
    pub async fn get(&self, key: &str) -> Result<Option<WeatherResult>, redis::RedisError> {
        let span = redis_span(&self.peer, "GET", "GET ?");
        let mut conn = self.conn.clone();
        let key = self.key(key);
        async {
            let raw: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .inspect_err(|e| failed(&tracing::Span::current(), e))?;
            let hit = raw.and_then(|r| serde_json::from_str::<WeatherResult>(&r).ok());
            tracing::Span::current().record("weather.cache.hit", hit.is_some());
            Ok(hit)
        }
        .instrument(span)
        .await
    }

    /// Stores `value` under `key` for the TTL.
    pub async fn set(&self, key: &str, value: &WeatherResult) -> Result<(), redis::RedisError> {
        let span = redis_span(&self.peer, "SET", "SET ? ? EX ?");
        let mut conn = self.conn.clone();
        let key = self.key(key);
        let json = serde_json::to_string(value).unwrap_or_default();
        async {
            redis::cmd("SET")
                .arg(&key)
                .arg(json)
                .arg("EX")
                .arg(self.ttl.as_secs().max(1))
                .query_async::<()>(&mut conn)
                .await
                .inspect_err(|e| failed(&tracing::Span::current(), e))
        }
        .instrument(span)
        .await
    }
}

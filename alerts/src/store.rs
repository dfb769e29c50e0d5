//! The alerts in Redis: a capped list of the newest, and the event ids
//! already processed, written together by one script (so a record
//! delivered again is recognised, and an alert is never stored twice).

use std::time::Duration;

use redis_job_queue::{RedisConnection, RedisTarget};
use telemetry::attributes::ERROR_TYPE;
use tokio::sync::watch;
use tracing::Instrument;

use crate::rules::Alert;

/// Marks the event seen unless it was, and then stores its alerts.
/// KEYS: 1 the event's seen mark, 2 the alerts list.
/// ARGV: 1 seconds the mark lasts, 2 alerts kept, then the alerts (JSON).
/// Answers 1, or 0 for an event already seen.
static RECORD: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 3, #ARGV do redis.call('LPUSH', KEYS[2], ARGV[i]) end
if #ARGV > 2 then redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1) end
return 1",
    )
});

/// What [`AlertStore::record`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new event: its alerts are stored.
    New,
    /// An event already processed: nothing changed.
    Duplicate,
}

/// The alerts and the processed event ids, in Redis.
#[derive(Clone)]
pub struct AlertStore {
    conn: RedisConnection,
    server: (String, u16),
    prefix: String,
    keep: u32,
    dedup: Duration,
    stopped: watch::Receiver<bool>,
}

impl std::fmt::Debug for AlertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertStore")
            .field("prefix", &self.prefix)
            .field("keep", &self.keep)
            .finish()
    }
}

impl AlertStore {
    /// Connects to Redis at `url` (a server or a cluster, see
    /// [`RedisTarget::discover`]; `ca_pem` for TLS), trying again
    /// until it answers or `stopped` turns true. Keys start with `prefix`,
    /// as a hash tag (`{alerts}:recent`, `{alerts}:seen:{event}`), so the
    /// script that writes two of them stays in one slot of a cluster; the
    /// newest `keep` alerts are kept; event ids are remembered for `dedup`.
    pub async fn connect(
        url: &str,
        ca_pem: Option<&[u8]>,
        prefix: &str,
        keep: u32,
        dedup: Duration,
        mut stopped: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let mut wait = Duration::from_millis(100);
        let (target, conn) = loop {
            let connected = match RedisTarget::discover(url, ca_pem).await {
                Ok(target) => target.connect().await.map(|conn| (target, conn)),
                Err(e) => Err(e),
            };
            match connected {
                Ok(connected) => break connected,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach Redis yet");
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => anyhow::bail!("stopped before Redis answered"),
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        };
        let address = target.server();
        Ok(Self {
            conn,
            server: (address.address, address.port),
            prefix: prefix.to_owned(),
            keep,
            dedup,
            stopped,
        })
    }

    fn list_key(&self) -> String {
        format!("{{{}}}:recent", self.prefix)
    }

    /// Stores `alerts` of event `event_id` unless the event was seen.
    /// While Redis is down it tries again (the record stays uncommitted);
    /// `None` when told to stop first.
    pub async fn record(&self, event_id: &str, alerts: &[Alert]) -> Option<Stored> {
        let seen = format!("{{{}}}:seen:{event_id}", self.prefix);
        let list = self.list_key();
        let mut invocation = RECORD.prepare_invoke();
        invocation
            .key(&seen)
            .key(&list)
            .arg(self.dedup.as_secs().max(1))
            .arg(self.keep);
        for alert in alerts {
            invocation.arg(serde_json::to_string(alert).unwrap_or_default());
        }
        let mut wait = Duration::from_millis(100);
        let mut stopped = self.stopped.clone();
        loop {
            let span = telemetry::redis_span!(
                self.server.0.as_str(),
                self.server.1,
                "EVALSHA",
                "EVALSHA ? 2 ? ? ? ?"
            );
            let mut conn = self.conn.clone();
            let answer: redis::RedisResult<i64> = invocation
                .invoke_async(&mut conn)
                .instrument(span.clone())
                .await;
            match answer {
                Ok(1) => return Some(Stored::New),
                Ok(_) => return Some(Stored::Duplicate),
                Err(e) => {
                    span.record("otel.status_code", "ERROR");
                    span.record(ERROR_TYPE, e.code().unwrap_or("redis_error"));
                    tracing::warn!(error = %e, "cannot store the alerts; trying again");
                }
            }
            drop(span);
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return None,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// The newest `limit` alerts, newest first.
    pub async fn recent(&self, limit: u32) -> redis::RedisResult<Vec<Alert>> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(self.list_key())
            .arg(0)
            .arg(i64::from(limit) - 1)
            .query_async(&mut conn)
            .await?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }
}

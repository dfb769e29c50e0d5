//! The alerts in Redis: a capped list of the newest, and the event ids
//! already processed, written together by one script (so a record
//! delivered again is recognised, and an alert is never stored twice).

use std::time::Duration;

use redis_job_queue::{RedisConnection, RedisTarget, ServerAddress};
use telemetry::attributes::ERROR_TYPE;
use tokio::sync::watch;
use tracing::Instrument;

use crate::rules::Alert;

/// Stores the event's alerts unless it was seen, and then marks it seen.
/// KEYS: 1 the event's seen mark, 2 the alerts list.
/// ARGV: 1 seconds the mark lasts, 2 alerts kept, then the alerts (JSON).
/// Answers 1, or 0 for an event already seen.
///
/// The mark is written last: a script that fails part way (an alerts key
/// of the wrong type) keeps what it wrote, and a mark written first would
/// make the event's next try look like a repeat, its alerts lost in
/// silence.
static RECORD: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 3, #ARGV do redis.call('LPUSH', KEYS[2], ARGV[i]) end
if #ARGV > 2 then redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1) end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
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
    /// Redis refused the write for a reason that waiting does not mend
    /// (`WRONGTYPE` on a key someone else wrote, `CROSSSLOT`, a script
    /// error): tried [`PERMANENT_TRIES`] times, then given up, with the
    /// error's code.
    Failed(&'static str),
}

/// Tries of a write that fails with a permanent error before the event is
/// given up (counted and logged, so the partition moves on).
pub const PERMANENT_TRIES: u32 = 3;

/// The code of a Redis error that waiting does not mend, if `e` is one:
/// an outage (no connection, a timeout, `LOADING`, `TRYAGAIN`, a failover
/// under way) is not.
fn permanent(e: &redis::RedisError) -> Option<&'static str> {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
        return None;
    }
    match e.code() {
        Some("WRONGTYPE") => Some("WRONGTYPE"),
        Some("CROSSSLOT") => Some("CROSSSLOT"),
        Some("NOSCRIPT") => Some("NOSCRIPT"),
        Some("ERR") => Some("ERR"),
        _ => None,
    }
}

/// The alerts and the processed event ids, in Redis.
#[derive(Clone)]
pub struct AlertStore {
    conn: RedisConnection,
    /// The server (a cluster's first seed): spans name the node that
    /// answered.
    server: ServerAddress,
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
        Ok(Self {
            conn,
            server: target.server(),
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
    /// a permanent refusal ([`Stored::Failed`]) is tried a few times, then
    /// given up. `None` when told to stop first.
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
        let mut refused = 0;
        loop {
            let node = self
                .conn
                .node_for(&list)
                .unwrap_or_else(|| self.server.clone());
            let span = telemetry::redis_span!(
                node.address.as_str(),
                node.port,
                "EVALSHA",
                "EVALSHA ? 2 ? ? ? ?"
            );
            let mut conn = self.conn.clone();
            let (answer, answered) = self
                .conn
                .observe(
                    &list,
                    invocation
                        .invoke_async::<i64>(&mut conn)
                        .instrument(span.clone()),
                )
                .await;
            telemetry::db::record_answered(&span, &node, &answered);
            match answer {
                Ok(1) => return Some(Stored::New),
                Ok(_) => return Some(Stored::Duplicate),
                Err(e) => {
                    span.record("otel.status_code", "ERROR");
                    span.record(ERROR_TYPE, e.code().unwrap_or("redis_error"));
                    if let Some(code) = permanent(&e) {
                        refused += 1;
                        if refused >= PERMANENT_TRIES {
                            tracing::error!(
                                error = %e,
                                event_id,
                                "Redis refused the alerts for good: the event is given up"
                            );
                            return Some(Stored::Failed(code));
                        }
                    }
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

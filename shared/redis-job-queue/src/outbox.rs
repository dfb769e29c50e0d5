//! The outbox: events a job publishes when it succeeds, kept in Redis
//! until a relay has handed them to their broker.
//!
//! A handler attaches its event to the attempt
//! ([`JobLease::publish_on_success`]); the script that records the
//! attempt's success (`lua/finish.lua`) appends the event to the shard's
//! outbox stream in the same step, so a job never succeeds without its
//! event, nor sends one without succeeding. A relay (one at a time, by a
//! lease: [`RedisQueue::relay_lease`]) reads the oldest events
//! ([`RedisQueue::outbox_read`]), sends them on, and deletes them once the
//! broker has them ([`RedisQueue::outbox_remove`]). A relay that dies
//! between the send and the delete leaves the events to the next: they
//! are delivered at least once.
//!
//! **Order.** Each shard's stream keeps its events in the order their jobs
//! succeeded. A read merges the shards by entry id (the server's clock in
//! ms, then a sequence) and hands out only the events no unread event of
//! another shard could precede, so on one Redis server the events of the
//! whole queue come out in the order their jobs succeeded. On a Redis
//! Cluster the shards' masters have clocks of their own: events of one
//! shard keep their order, and across shards the order is as good as the
//! masters' clocks agree.
//!
//! **Bound.** Each shard's outbox holds at most
//! [`QueueConfig::outbox_max`] events. A success that finds it full is
//! still recorded, and its event is dropped and counted
//! ([`OutboxStats::dropped_total`]): jobs never stop because the broker
//! is away, and the bound says how long an outage the outbox rides out.
//!
//! [`JobLease::publish_on_success`]: crate::JobLease::publish_on_success
//! [`QueueConfig::outbox_max`]: crate::QueueConfig::outbox_max

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::try_join_all;

use crate::{QueueError, RedisQueue};

/// An event to publish once its job has succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The record's key (events of one key keep their order).
    pub key: String,
    /// The job that published it (the record's message id).
    pub job_id: String,
    /// The record's body.
    pub payload: String,
    /// The trace context of the span that published it (`traceparent`,
    /// ...), so the relay's span continues the job's trace.
    pub context: BTreeMap<String, String>,
}

/// An event read from the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The event.
    pub event: OutboxEvent,
    /// When its job succeeded, in ms since the Unix epoch (the shard's
    /// server clock).
    pub at_ms: u64,
    /// The shard whose outbox holds it.
    shard: usize,
    /// Its stream entry id.
    entry: String,
}

/// How full the outbox is, all shards together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Events waiting for the relay.
    pub depth: u64,
    /// How long the oldest has waited (zero when none waits).
    pub oldest_age: Duration,
    /// Events dropped because their shard's outbox was full, ever.
    pub dropped_total: u64,
    /// The most events the outbox holds, all shards together.
    pub capacity: u64,
}

/// A stream entry as XRANGE answers it: id, then field/value pairs.
type RawEntry = (String, Vec<(String, String)>);

/// The (ms, sequence) of a stream entry id, to merge shards by.
fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

impl OutboxEntry {
    fn parse(shard: usize, (entry, fields): RawEntry) -> Self {
        let mut event = OutboxEvent {
            key: String::new(),
            job_id: String::new(),
            payload: String::new(),
            context: BTreeMap::new(),
        };
        for (name, value) in fields {
            match name.as_str() {
                "key" => event.key = value,
                "id" => event.job_id = value,
                "payload" => event.payload = value,
                "context" => event.context = serde_json::from_str(&value).unwrap_or_default(),
                _ => {}
            }
        }
        Self {
            event,
            at_ms: entry_order(&entry).0,
            shard,
            entry,
        }
    }
}

impl RedisQueue {
    /// Up to `limit` of the oldest events of each shard's outbox, merged
    /// into the order their jobs succeeded (see the module docs); an
    /// event is handed out only once no unread event of another shard may
    /// come before it, so a call may answer fewer than there are.
    pub async fn outbox_read(&self, limit: usize) -> Result<Vec<OutboxEntry>, QueueError> {
        let limit = limit.max(1);
        let pages = try_join_all(self.shards().iter().map(|s| {
            let mut conn = self.connection();
            let key = s.keys.outbox.clone();
            async move {
                let page: Vec<RawEntry> = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut conn)
                    .await?;
                Ok::<_, QueueError>(page)
            }
        }))
        .await?;
        // A full page may have more behind it: nothing after its last
        // entry can be handed out yet, lest an unread one precede it.
        let horizon = pages
            .iter()
            .filter(|p| p.len() >= limit)
            .filter_map(|p| p.last().map(|(id, _)| entry_order(id)))
            .min();
        let mut merged: Vec<OutboxEntry> = pages
            .into_iter()
            .enumerate()
            .flat_map(|(shard, page)| page.into_iter().map(move |e| OutboxEntry::parse(shard, e)))
            .filter(|e| horizon.is_none_or(|h| entry_order(&e.entry) <= h))
            .collect();
        merged.sort_by_key(|e| (entry_order(&e.entry), e.shard));
        Ok(merged)
    }

    /// Deletes events the broker has taken.
    pub async fn outbox_remove(&self, done: &[OutboxEntry]) -> Result<(), QueueError> {
        let mut by_shard: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for e in done {
            by_shard.entry(e.shard).or_default().push(&e.entry);
        }
        for (shard, entries) in by_shard {
            let Some(s) = self.shards().get(shard) else {
                continue;
            };
            let mut conn = self.connection();
            for chunk in entries.chunks(1000) {
                let _: u64 = redis::cmd("XDEL")
                    .arg(&s.keys.outbox)
                    .arg(chunk)
                    .query_async(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// The outbox's depth, the age of its oldest event, and the events
    /// dropped because it was full.
    pub async fn outbox_stats(&self) -> Result<OutboxStats, QueueError> {
        let parts = try_join_all(self.shards().iter().map(|s| {
            let mut conn = self.connection();
            let (outbox, stats) = (s.keys.outbox.clone(), s.keys.stats.clone());
            async move {
                let (depth, oldest, dropped, now_ms): (u64, String, u64, u64) = OUTBOX_STATS
                    .key(&outbox)
                    .key(&stats)
                    .invoke_async(&mut conn)
                    .await?;
                let age = if oldest.is_empty() {
                    0
                } else {
                    now_ms.saturating_sub(entry_order(&oldest).0)
                };
                Ok::<_, QueueError>((depth, age, dropped))
            }
        }))
        .await?;
        Ok(OutboxStats {
            depth: parts.iter().map(|p| p.0).sum(),
            oldest_age: Duration::from_millis(parts.iter().map(|p| p.1).max().unwrap_or(0)),
            dropped_total: parts.iter().map(|p| p.2).sum(),
            capacity: self.config().outbox_max * self.shards().len() as u64,
        })
    }

    /// Takes, or keeps, the relay's lease for `holder` for `ttl`: answers
    /// whether `holder` is the relay now. One relay at a time keeps the
    /// order of the events it sends; when it stops renewing (it died),
    /// another takes over once the lease lapses.
    pub async fn relay_lease(&self, holder: &str, ttl: Duration) -> Result<bool, QueueError> {
        let mut conn = self.connection();
        let held: i64 = RELAY_LEASE
            .key(&self.shards()[0].keys.relay_lease)
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Gives the relay's lease up, if `holder` has it (at a clean stop, so
    /// another relay need not wait for it to lapse).
    pub async fn relay_release(&self, holder: &str) -> Result<(), QueueError> {
        let mut conn = self.connection();
        let _: i64 = RELAY_RELEASE
            .key(&self.shards()[0].keys.relay_lease)
            .arg(holder)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

/// The outbox's length, its oldest entry's id ('' for none), the events
/// dropped for want of room, and the server's now in ms: one call on the
/// shard's own node, so the age is measured on the clock that stamped it.
static OUTBOX_STATS: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local t = redis.call('TIME')
return { redis.call('XLEN', KEYS[1]), oldest and oldest[1] or '',
  tonumber(redis.call('HGET', KEYS[2], 'outbox_dropped') or '0'),
  tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) }",
    )
});

/// Takes the lease if free, renews it if the caller holds it: 1 when the
/// caller holds it after the call.
static RELAY_LEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0",
    )
});

/// Deletes the lease if the caller holds it.
static RELAY_RELEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_order_by_time_then_sequence() {
        assert!(entry_order("1700000000000-2") < entry_order("1700000000000-10"));
        assert!(entry_order("1700000000000-99") < entry_order("1700000000001-0"));
    }

    #[test]
    fn an_entry_reads_back_its_event() {
        let e = OutboxEntry::parse(
            1,
            (
                "1700000000123-0".into(),
                vec![
                    ("key".into(), "city:oslo".into()),
                    ("id".into(), "j1".into()),
                    ("payload".into(), "{}".into()),
                    ("context".into(), r#"{"traceparent":"00-a-b-01"}"#.into()),
                ],
            ),
        );
        assert_eq!(e.at_ms, 1_700_000_000_123);
        assert_eq!(e.event.key, "city:oslo");
        assert_eq!(e.event.job_id, "j1");
        assert_eq!(e.event.context["traceparent"], "00-a-b-01");
    }
}

//! Reading the queue: a job's record, listings by status, batches,
//! stats and consumers.

use std::collections::BTreeMap;

use crate::job::{ConsumerInfo, JobPage, JobRecord, JobStatus, Priority, QueueStats};
use crate::shard::Shard;
use crate::{QueueError, scripts};

impl Shard {
    /// One page of the jobs with `status`, at most `limit` (1 to 1,000),
    /// from `cursor` (`None` for the first page; then the page's
    /// `next_cursor`). Scheduled jobs come soonest first; succeeded and
    /// failed ones newest first (those within the retention); queued and
    /// running ones oldest first. Cancelled jobs are not listed.
    pub(crate) async fn list(
        &self,
        status: JobStatus,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        let limit = limit.clamp(1, 1000);
        let (key, kind) = match status {
            JobStatus::Scheduled => (&self.keys.delayed, "asc"),
            JobStatus::Succeeded => (&self.keys.succeeded, "desc"),
            JobStatus::Failed => (&self.keys.failed, "desc"),
            JobStatus::Queued | JobStatus::Running => (&self.keys.stream, "stream"),
            JobStatus::Cancelled => {
                return Err(QueueError::Invalid(
                    "cancelled jobs are not listed; read one by its id".into(),
                ));
            }
        };
        // Every cursor reads `{number}:{rest}`: a score and a member, or a
        // stream entry id's two numbers.
        let cursor = cursor.unwrap_or_default();
        if !cursor.is_empty() && !is_cursor(cursor) {
            return Err(QueueError::Invalid(format!(
                "cursor {cursor:?} is not one this listing hands out ({{number}}:{{rest}})"
            )));
        }
        let cursor = match kind {
            "stream" => stream_cursor_to_entry(cursor),
            _ => cursor.to_owned(),
        };
        let mut conn = self.conn.clone();
        let mut answer: Vec<String> = scripts::LIST
            .key(key)
            .key(&self.keys.stream_high)
            .key(&self.keys.stream_low)
            .arg(&self.keys.job_prefix)
            .arg(kind)
            .arg(status.as_str())
            .arg(cursor)
            .arg(limit)
            // A page of queued jobs looks at most this many entries (the
            // running ones among them are skipped).
            .arg(limit * 10)
            .invoke_async(&mut conn)
            .await?;
        let next = match answer.first().map(String::as_str) {
            Some("") | None => None,
            Some(c) if kind == "stream" => Some(entry_to_stream_cursor(c)),
            Some(c) => Some(c.to_owned()),
        };
        let ids: Vec<String> = answer.drain(1.min(answer.len())..).collect();
        let jobs = self.records(&ids).await?;
        Ok(JobPage {
            jobs,
            next_cursor: next,
        })
    }

    /// The jobs of batch `id` ([`NewJob::in_batch`]) in the order they were
    /// pushed, the first `limit` of them; `None` when no such batch is
    /// known (or its index expired with its last job).
    pub(crate) async fn batch(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Option<Vec<JobRecord>>, QueueError> {
        if limit == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("{}{id}", self.keys.batch_prefix))
            .arg(0)
            .arg(limit - 1)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(None);
        }
        self.records(&ids).await.map(Some)
    }

    /// The records of `ids` still kept, in that order.
    pub(crate) async fn records(&self, ids: &[String]) -> Result<Vec<JobRecord>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(self.keys.job(id));
        }
        let hashes: Vec<BTreeMap<String, String>> = pipe.query_async(&mut conn).await?;
        // A record may have expired since the index was read: skip it.
        ids.iter()
            .zip(hashes)
            .filter(|(_, fields)| !fields.is_empty())
            .map(|(id, fields)| JobRecord::from_hash(id, fields))
            .collect()
    }

    /// The job's status, attempts, result or error; `None` when the id is
    /// unknown or its record has expired.
    pub(crate) async fn status(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        let mut conn = self.conn.clone();
        let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.job(id))
            .query_async(&mut conn)
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        JobRecord::from_hash(id, fields).map(Some)
    }

    /// One consistent snapshot of the queue.
    pub(crate) async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut conn = self.conn.clone();
        type Lane = (u64, u64);
        let (delayed, failed, consumers, counters, high, normal, low, paused): (
            u64,
            u64,
            u64,
            BTreeMap<String, u64>,
            Lane,
            Lane,
            Lane,
            u8,
        ) = scripts::STATS
            .key(&self.keys.stream)
            .key(&self.keys.delayed)
            .key(&self.keys.failed)
            .key(&self.keys.stats)
            .key(&self.keys.consumers)
            .key(&self.keys.paused)
            .key(&self.keys.stream_high)
            .key(&self.keys.stream_low)
            .arg(&self.keys.group)
            .arg(self.cfg.retention.as_millis() as u64)
            .arg(self.cfg.lease.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        let count = |name: &str| counters.get(name).copied().unwrap_or(0);
        let waiting = |(len, pending): Lane| len.saturating_sub(pending);
        Ok(QueueStats {
            waiting: waiting(high) + waiting(normal) + waiting(low),
            waiting_high: waiting(high),
            waiting_low: waiting(low),
            in_flight: high.1 + normal.1 + low.1,
            delayed,
            failed,
            live_consumers: consumers,
            enqueued_total: count("enqueued"),
            succeeded_total: count("succeeded"),
            failed_total: count("failed"),
            retried_total: count("retried"),
            deferred_total: count("deferred"),
            paused: paused == 1,
        })
    }

    /// The consumers (worker backends) the queue knows, live or not, by
    /// name: when each last heart-beat and how many jobs each holds.
    pub(crate) async fn consumers(&self) -> Result<Vec<ConsumerInfo>, QueueError> {
        let mut conn = self.conn.clone();
        // Heartbeats are stamped with the server's clock: read it in the
        // same round trip and measure their age on it.
        let ((secs, micros), beats): ((u64, u64), Vec<(String, u64)>) = redis::pipe()
            .cmd("TIME")
            .cmd("ZRANGE")
            .arg(&self.keys.consumers)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let now = secs * 1000 + micros / 1000;
        // What each holds, summed over the lanes. No group yet (nothing
        // read the queue): nobody holds anything.
        let mut held: BTreeMap<String, u64> = BTreeMap::new();
        for priority in Priority::ALL {
            let info: redis::RedisResult<redis::streams::StreamInfoConsumersReply> =
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(self.keys.lane(priority))
                    .arg(&self.keys.group)
                    .query_async(&mut conn)
                    .await;
            for c in info.map(|i| i.consumers).unwrap_or_default() {
                *held.entry(c.name).or_default() += c.pending as u64;
            }
        }
        let live_after = now.saturating_sub(self.cfg.lease.as_millis() as u64);
        Ok(beats
            .into_iter()
            .map(|(name, beat)| ConsumerInfo {
                in_flight: held.get(&name).copied().unwrap_or(0),
                heartbeat_age_ms: now.saturating_sub(beat),
                live: beat > live_after,
                name,
            })
            .collect())
    }

    /// The latest jobs failed for good (at most `limit`, newest first)
    /// whose records are still kept.
    pub(crate) async fn failed_jobs(&self, limit: usize) -> Result<Vec<JobRecord>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(&self.keys.failed)
            .arg(0)
            .arg(limit - 1)
            .query_async(&mut conn)
            .await?;
        self.records(&ids).await
    }
}

/// A listing cursor of the queued or running jobs, `{ms}:{seq}` with
/// `.high` or `.low` after it outside the normal lane, as the entry name
/// the list script takes (`h:{ms}-{seq}`); empty for the first page. A
/// cursor of the right shape not handed out reads as the nearest entry
/// id: a rest that is not a number as `{ms}-0`, a number past the
/// largest id as the largest (after which nothing comes).
fn stream_cursor_to_entry(cursor: &str) -> String {
    let Some((ms, rest)) = cursor.split_once(':') else {
        return String::new();
    };
    let ms = ms.parse::<u64>().unwrap_or(u64::MAX);
    let (seq, priority) = match rest.split_once('.') {
        Some((seq, "high")) => (seq, Priority::High),
        Some((seq, "low")) => (seq, Priority::Low),
        _ => (rest, Priority::Normal),
    };
    let seq = match seq.parse::<u64>() {
        Ok(seq) => seq,
        Err(_) if !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) => u64::MAX,
        Err(_) => 0,
    };
    format!("{}{ms}-{seq}", priority.entry_prefix())
}

/// The cursor [`stream_cursor_to_entry`] reads back, for an entry name.
fn entry_to_stream_cursor(entry: &str) -> String {
    let priority = Priority::of_entry(entry);
    let id = &entry[priority.entry_prefix().len()..];
    let cursor = id.replacen('-', ":", 1);
    match priority {
        Priority::Normal => cursor,
        other => format!("{cursor}.{}", other.as_str()),
    }
}

/// Whether `s` has the shape of a listing cursor: `{number}:{rest}`, the
/// number at most 20 digits, the rest 1 to 128 printable ASCII characters.
fn is_cursor(s: &str) -> bool {
    s.split_once(':').is_some_and(|(number, rest)| {
        (1..=20).contains(&number.len())
            && number.bytes().all(|b| b.is_ascii_digit())
            && (1..=128).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_graphic())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_cursors_name_the_lane_and_read_back() {
        for entry in [
            "1700000000000-3",
            "h:1700000000000-0",
            "l:5-18446744073709551615",
        ] {
            let cursor = entry_to_stream_cursor(entry);
            assert!(is_cursor(&cursor), "{cursor}");
            assert_eq!(stream_cursor_to_entry(&cursor), entry);
        }
        assert_eq!(entry_to_stream_cursor("h:12-4"), "12:4.high");
        assert_eq!(stream_cursor_to_entry("12:x.low"), "l:12-0");
        // Shapes the listing never hands out: past the largest id.
        let max = u64::MAX;
        assert_eq!(
            stream_cursor_to_entry("12:99999999999999999999"),
            format!("12-{max}")
        );
        assert_eq!(
            stream_cursor_to_entry("99999999999999999999:1"),
            format!("{max}-1")
        );
    }
}

//! Reading: the blocking read of new jobs, the non-blocking read-and-start
//! while there is a backlog, and the reclaim of jobs whose lease ran out.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use redis::streams::{StreamId, StreamReadReply};

use super::reclaim::Reclaim;
use super::{Shared, Started, named};
use crate::{JobLease, LOW_LANE_EVERY, Priority, QueueError, scripts};

/// Longest pause between two reads while Redis is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often a paused queue is looked at again.
const PAUSE_POLL: Duration = Duration::from_millis(250);

/// The blocking-read connection and the reclaim cursor.
pub(super) struct Reader {
    conn: crate::RedisConnection,
    /// The scan for expired leases.
    reclaim: Reclaim,
}

impl Reader {
    async fn connect(shared: &Shared) -> Result<Self, QueueError> {
        let cfg = shared.cfg();
        // The read blocks for up to `block_timeout`; the client must wait
        // longer than that before calling the server unresponsive.
        let mut conn = shared
            .queue
            .target
            .connect_dedicated(cfg.block_timeout + Duration::from_secs(5))
            .await?;
        // On the node that holds the queue, where the read blocks (and
        // where `CLIENT UNBLOCK` must go).
        let id: i64 = conn
            .query_at(&shared.queue.keys.stream, redis::cmd("CLIENT").arg("ID"))
            .await?;
        shared.reader_id.store(id, Ordering::SeqCst);
        Ok(Self {
            conn,
            reclaim: Reclaim::new(shared),
        })
    }

    /// One read: reclaims expired leases when due, otherwise waits for new
    /// entries; then marks what it got as running.
    async fn read(&mut self, shared: &Shared, want: usize) -> Result<Vec<Started>, QueueError> {
        let q = &shared.queue;
        let keys = &q.keys;
        let unstarted =
            std::mem::take(&mut *shared.unstarted.lock().unwrap_or_else(|e| e.into_inner()));
        if !unstarted.is_empty() {
            return start(shared, unstarted).await;
        }
        let mut entries = Vec::new();
        if self.reclaim.due() {
            entries = self.reclaim.claim(shared, want).await?;
        }
        if entries.is_empty() {
            // While there is a backlog, read and start in one round trip.
            let Some(started) = take(shared, want).await? else {
                // Paused: nothing is read or started. The wait holds no
                // places, as a blocking read's does not.
                shared.unreserve(want);
                tokio::time::sleep(PAUSE_POLL).await;
                shared.reserved.fetch_add(want, Ordering::SeqCst);
                return Ok(Vec::new());
            };
            if !started.is_empty() {
                return Ok(started);
            }
            // Nothing waits in any lane: block on all three. Entries that
            // land in several lanes at the same moment all come back (up
            // to `want` each); the extra ones wait, held, in the buffer.
            // The wait holds no places: another shard's part may read
            // meanwhile (reserved again once it ends, for the caller to
            // settle).
            shared.unreserve(want);
            let reply: Result<Option<StreamReadReply>, _> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&keys.group)
                .arg(&*shared.consumer)
                .arg("COUNT")
                .arg(want)
                .arg("BLOCK")
                .arg(shared.cfg().block_timeout.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&keys.stream_high)
                .arg(&keys.stream)
                .arg(&keys.stream_low)
                .arg(">")
                .arg(">")
                .arg(">")
                .query_async(&mut self.conn)
                .await;
            shared.reserved.fetch_add(want, Ordering::SeqCst);
            entries = reply?
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| {
                    let priority = Priority::ALL
                        .into_iter()
                        .find(|p| keys.lane(*p) == k.key)
                        .unwrap_or_default();
                    k.ids.into_iter().map(move |e| named(priority, e))
                })
                .collect();
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // Paused since the read began: the script gives the entries back.
        start(shared, entries).await
    }
}

/// A start-type script with its common keys and arguments.
fn start_invocation(
    shared: &Shared,
    script: &'static redis::Script,
) -> redis::ScriptInvocation<'static> {
    let keys = &shared.queue.keys;
    let mut inv = script.prepare_invoke();
    inv.key(&keys.stream)
        .key(&keys.failed)
        .key(&keys.stats)
        .key(&keys.paused)
        .key(&keys.stream_high)
        .key(&keys.stream_low)
        .arg(&keys.job_prefix)
        .arg(&keys.group)
        .arg(&*shared.consumer)
        .arg(shared.cfg().retention.as_secs().max(1));
    inv
}

/// Reads up to `want` new entries without blocking and starts their jobs:
/// high lane first, except on one read in [`LOW_LANE_EVERY`], which takes
/// the low lane first so low jobs never starve. `None` while the queue is
/// paused (the script's one row with an empty entry id says so).
async fn take(shared: &Shared, want: usize) -> Result<Option<Vec<Started>>, QueueError> {
    let mut inv = start_invocation(shared, &scripts::TAKE);
    let read = shared.reads.fetch_add(1, Ordering::Relaxed);
    let low_first = read % LOW_LANE_EVERY == LOW_LANE_EVERY - 1;
    inv.arg(want).arg(if low_first { "1" } else { "0" });
    started(shared, inv).await
}

/// Starts the jobs of entries a blocking read or a reclaim delivered. When
/// Redis refuses the script for want of memory (it then ran none of it),
/// the entries are kept for the next read; other errors leave them to the
/// reclaim, since the script may have run.
async fn start(shared: &Shared, entries: Vec<StreamId>) -> Result<Vec<Started>, QueueError> {
    let mut inv = start_invocation(shared, &scripts::START);
    for e in &entries {
        let job_id: String = e.get("id").unwrap_or_default();
        inv.arg(&e.id).arg(job_id);
    }
    match started(shared, inv).await {
        Ok(jobs) => Ok(jobs.unwrap_or_default()),
        Err(e) if e.is_full() => {
            shared
                .unstarted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(entries);
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// The jobs a start-type script started; `None` when it answered that the
/// queue is paused (one row with an empty entry id).
async fn started(
    shared: &Shared,
    inv: redis::ScriptInvocation<'static>,
) -> Result<Option<Vec<Started>>, QueueError> {
    let mut conn = shared.queue.conn.clone();
    type Row = (
        String,
        String,
        String,
        String,
        u32,
        u32,
        u64,
        u64,
        u64,
        String,
        u64,
    );
    let rows: Vec<Row> = inv.invoke_async(&mut conn).await?;
    if matches!(&rows[..], [only] if only.0.is_empty()) {
        return Ok(None);
    }
    let default_timeout = shared.cfg().job_timeout;
    Ok(Some(
        rows.into_iter()
            .map(
                |(
                    entry,
                    id,
                    payload,
                    meta,
                    attempt,
                    max_attempts,
                    enqueued_at_ms,
                    timeout_ms,
                    started_at_ms,
                    batch,
                    deferred_ms,
                )| {
                    shared.hold(&entry);
                    let mut lease = JobLease::new(
                        entry,
                        id,
                        attempt,
                        max_attempts,
                        enqueued_at_ms,
                        started_at_ms,
                    );
                    lease.batch = (!batch.is_empty()).then_some(batch);
                    lease.shard = shared.queue.index;
                    lease.deferred = Duration::from_millis(deferred_ms);
                    lease.max_defer = shared.cfg().max_defer;
                    lease.timeout = match timeout_ms {
                        0 => default_timeout,
                        ms => Some(Duration::from_millis(ms)),
                    };
                    Started {
                        lease,
                        payload,
                        meta,
                    }
                },
            )
            .collect(),
    ))
}

/// Reads until it has at least one job, riding out Redis outages with a
/// capped backoff. Ends early, with no jobs, once the backend is stopping.
pub(super) async fn fetch(
    shared: Arc<Shared>,
    mut reader: Option<Reader>,
    want: usize,
) -> (Option<Reader>, Vec<Started>) {
    let delays = || {
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(MAX_BACKOFF)
            .without_max_times()
            .build()
    };
    let mut backoff = delays();
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return (reader, Vec::new());
        }
        let mut r = match reader.take() {
            Some(r) => r,
            None => match Reader::connect(&shared).await {
                Ok(r) => r,
                Err(e) => {
                    let delay = backoff.next().unwrap_or(MAX_BACKOFF);
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot open the queue reader connection");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            },
        };
        match r.read(&shared, want).await {
            Ok(jobs) => {
                reader = Some(r);
                backoff = delays();
                if !jobs.is_empty() {
                    return (reader, jobs);
                }
            }
            Err(QueueError::Redis(e)) if e.code() == Some("NOGROUP") => {
                // The stream was deleted (FLUSHALL, say): make it again.
                reader = Some(r);
                if let Err(e) = shared.queue.ensure_group().await {
                    tracing::warn!(error = %e, "cannot recreate the queue's consumer group");
                    tokio::time::sleep(backoff.next().unwrap_or(MAX_BACKOFF)).await;
                }
            }
            Err(e) => {
                // Drop the connection: it may be broken; reconnect next turn.
                let delay = backoff.next().unwrap_or(MAX_BACKOFF);
                tracing::warn!(error = %e, retry_in = ?delay, "reading the queue failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

//! The work beside the reads, but for lease renewal (`renewal.rs`): the
//! promoter of delayed jobs, the recorder of outcomes kept through an
//! outage, and leaving the group.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::renewal::RETRY_SOON;
use super::{Shared, Started};
use crate::scripts::{self, DeclaredKeys};

/// Longest a stopping worker keeps trying to record kept outcomes.
const RECORD_ON_LEAVE: Duration = Duration::from_secs(5);

/// How often the sweep of the search index runs, and how many of its
/// entries one sweep looks at: 200 a second, well past the rate jobs
/// expire at on one shard.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
const SWEEP_COUNT: usize = 1_000;

/// Sweeper loop: drops from the shard's search index the jobs whose
/// record has expired (see `search.rs`), a slice at a time. Every worker
/// sweeps; they share where the sweep stopped, so more workers sweep
/// faster, never twice over.
pub(super) async fn sweep(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        if let Err(e) = crate::search::sweep(&shared.queue, SWEEP_COUNT).await {
            tracing::debug!(error = %e, "sweeping the search index failed; the next sweep tries again");
        }
    }
}

/// Promoter loop: moves due delayed jobs onto their lane's stream in bounded
/// chunks, sleeping until the next one is due (at most `promote_interval`).
pub(super) async fn promote(shared: Arc<Shared>) {
    let cfg = shared.cfg().clone();
    let keys = shared.queue.keys.clone();
    loop {
        let mut conn = shared.queue.conn.clone();
        let res: redis::RedisResult<(u64, i64, i64)> = scripts::PROMOTE
            .key(&keys.stream)
            .key(&keys.delayed)
            .key(&keys.stream_high)
            .key(&keys.stream_low)
            .arg(cfg.promote_batch.max(1))
            .arg(&keys.job_prefix)
            .invoke_async(&mut conn)
            .await;
        let pause = match res {
            Ok((moved, _, _)) if moved as usize >= cfg.promote_batch.max(1) => Duration::ZERO,
            Ok((_, next_due, now)) if next_due >= 0 => {
                Duration::from_millis(next_due.saturating_sub(now).max(1) as u64)
                    .min(cfg.promote_interval)
            }
            Ok(_) => cfg.promote_interval,
            Err(e) => {
                tracing::warn!(error = %e, "promoting delayed jobs failed");
                cfg.promote_interval.max(Duration::from_secs(1))
            }
        };
        if pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Recorder loop: writes the outcomes kept while Redis was unreachable.
pub(super) async fn record(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(RETRY_SOON).await;
        while shared.record_unrecorded().await > 0 {
            tokio::time::sleep(RETRY_SOON).await;
        }
    }
}

/// A stopping worker's last tries to record kept outcomes; what is still
/// kept after [`RECORD_ON_LEAVE`] runs again once its lease expires.
pub(super) async fn record_before_leaving(shared: &Shared) {
    let deadline = Instant::now() + RECORD_ON_LEAVE;
    loop {
        let left = shared.record_unrecorded().await;
        if left == 0 {
            return;
        }
        if Instant::now() >= deadline {
            tracing::error!(
                count = left,
                "Redis stayed unreachable: job outcomes not recorded; those jobs run again \
                 once their lease expires"
            );
            return;
        }
        tokio::time::sleep(RETRY_SOON).await;
    }
}

/// Gives back jobs taken but never started and deregisters the consumer.
pub(super) async fn leave(shared: &Shared, unstarted: &[Started]) {
    let keys = &shared.queue.keys;
    let mut declared = DeclaredKeys::new(&[&keys.stream, &keys.consumers]);
    let hashes: Vec<usize> = unstarted
        .iter()
        .map(|job| declared.declare(keys.job(&job.lease.id)))
        .collect();
    let mut inv = declared.invocation(&scripts::LEAVE, keys);
    inv.arg(&keys.group).arg(&*shared.consumer);
    for (job, hash) in unstarted.iter().zip(hashes) {
        inv.arg(&job.lease.entry)
            .arg(&job.lease.id)
            .arg(job.lease.attempt)
            .arg(hash);
    }
    let mut conn = shared.queue.conn.clone();
    if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
        tracing::warn!(
            error = %e,
            "could not hand back unstarted jobs; they run again once their lease expires"
        );
    }
}

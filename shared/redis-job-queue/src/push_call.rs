//! The push script's call: its keys and arguments for a group of jobs, its
//! answers, and the wait for replicas after it. Used by a shard's
//! group-committed pushes (`shard.rs`) and its batches (`push.rs`).

use crate::job::NewJob;
use crate::keys::Keys;
use crate::scripts::{self, DeclaredKeys};
use crate::{QueueConfig, QueueError};

/// The push script's answer for a job it enqueued (see `lua/push.lua`).
pub(crate) const PUSHED: u8 = 1;
/// A job enqueued but confirmed by fewer replicas than asked for: this
/// plus the number that confirmed it.
pub(crate) const NOT_REPLICATED: u8 = 16;

/// With [`QueueConfig::wait_replicas`], waits (`WAIT`) until that many
/// replicas have every write made so far on `conn`, the pushes just made
/// among them, or the wait runs out; answers how many have. On a cluster
/// it goes to the master holding the queue, where the pushes went.
pub(crate) async fn wait_replicas(
    conn: &mut crate::RedisConnection,
    keys: &Keys,
    cfg: &QueueConfig,
) -> Result<u32, redis::RedisError> {
    if cfg.wait_replicas == 0 {
        return Ok(0);
    }
    let mut cmd = redis::cmd("WAIT");
    cmd.arg(cfg.wait_replicas)
        .arg(cfg.wait_timeout.as_millis().max(1) as u64);
    conn.query_at(&keys.stream, &cmd)
        .await
        .map_err(|e| match e {
            QueueError::Redis(e) => e,
            other => redis::RedisError::from((
                redis::ErrorKind::Io,
                "WAIT for replicas failed",
                other.to_string(),
            )),
        })
}

/// The push script for `jobs`; it answers, per job, whether it was added.
/// Every key it touches is declared: the queue's (its search index the
/// fourth), then each job's hash,
/// idempotency key and batch index (one entry per distinct key), then the
/// lanes' streams last, as `lua/lanes.lua` wants them.
pub(crate) fn push_script(
    keys: &Keys,
    cfg: &QueueConfig,
    jobs: &[NewJob],
) -> redis::ScriptInvocation<'static> {
    let mut declared = DeclaredKeys::new(&[&keys.stream, &keys.delayed, &keys.stats, &keys.index]);
    let per_job: Vec<(usize, usize, usize)> = jobs
        .iter()
        .map(|job| {
            let hash = declared.declare(keys.job(&job.id));
            let idem = job
                .idempotency
                .as_ref()
                .map_or(0, |(k, _)| declared.declare(keys.idempotency(k)));
            let batch = job
                .batch
                .as_deref()
                .map_or(0, |b| declared.declare(keys.batch(b)));
            (hash, idem, batch)
        })
        .collect();
    let mut inv = declared.invocation(&scripts::PUSH, keys);
    inv.arg(cfg.idempotency_window.as_secs().max(1))
        .arg(cfg.retention.as_secs().max(1));
    for (job, (hash, idem, batch)) in jobs.iter().zip(per_job) {
        let fingerprint = job.idempotency.as_ref().map_or("", |(_, f)| f.as_str());
        inv.arg(&job.id)
            .arg(&job.payload)
            .arg(job.metadata_json())
            .arg(job.max_attempts.unwrap_or(cfg.max_attempts))
            .arg(job.delay_ms())
            .arg(
                job.timeout
                    .map_or(0, |t| t.as_millis().clamp(1, u64::MAX as u128) as u64),
            )
            .arg(fingerprint)
            .arg(job.priority.stored())
            .arg(job.batch.as_deref().unwrap_or_default())
            .arg(hash)
            .arg(idem)
            .arg(batch)
            .arg(job.batch_position);
    }
    inv
}

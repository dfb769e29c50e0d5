//! Enqueueing: one job (group-committed with concurrent pushes) or many.

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt, stream};

use crate::job::{NewJob, Pushed};
use crate::keys::Keys;
use crate::scripts::{self, DeclaredKeys};
use crate::shard::Shard;
use crate::{QueueConfig, QueueError};

/// How many jobs one push script carries. Bounds the work of one script
/// call (so Redis stays responsive) while amortising round trips.
const PUSH_CHUNK: usize = 500;
/// Push chunks sent before the first answer is awaited.
const PUSH_CHUNKS_IN_FLIGHT: usize = 4;

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

impl Shard {
    /// Enqueues one job, saying whether it was new or a repeat of an
    /// idempotent push.
    pub(crate) async fn push_once(&self, job: NewJob) -> Result<Pushed, QueueError> {
        job.check()?;
        let id = job.id.clone();
        let key = job.idempotency.as_ref().map(|(k, _)| k.clone());
        match self.pusher().submit(job).await? {
            PUSHED => Ok(Pushed::New(id)),
            2 => Ok(Pushed::Repeat(id)),
            3 => Err(QueueError::IdempotencyConflict(key.unwrap_or_default())),
            code if code >= NOT_REPLICATED => Err(QueueError::NotReplicated {
                wanted: self.cfg.wait_replicas,
                reached: u32::from(code - NOT_REPLICATED),
            }),
            _ => Err(QueueError::DuplicateId(id)),
        }
    }

    /// Enqueues many jobs; chunks go out pipelined on one connection. The
    /// answer says, per job and in order, whether it was enqueued (`false`:
    /// a job with that id already exists and was left untouched, or its
    /// idempotency key was used before). With
    /// [`QueueConfig::wait_replicas`], the answer comes once the replicas
    /// have them all, or is [`QueueError::NotReplicated`].
    pub(crate) async fn push_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<bool>, QueueError> {
        jobs.iter().try_for_each(NewJob::check)?;
        // Built first, so the futures below borrow nothing (a future that
        // borrows the slice is not `Send` for every lifetime, which axum
        // handlers need).
        let calls: Vec<BoxFuture<'static, redis::RedisResult<Vec<u8>>>> = jobs
            .chunks(PUSH_CHUNK)
            .map(|chunk| {
                let inv = push_script(&self.keys, &self.cfg, chunk);
                let mut conn = self.push_conn.clone();
                async move { inv.invoke_async::<Vec<u8>>(&mut conn).await }.boxed()
            })
            .collect();
        // A few chunks in flight keep the connection busy without queueing
        // so much behind one another that later ones hit the reply timeout.
        let answers: Vec<Vec<u8>> = stream::iter(calls)
            .buffered(PUSH_CHUNKS_IN_FLIGHT)
            .try_collect()
            .await?;
        let added: Vec<bool> = answers
            .into_iter()
            .flatten()
            .map(|code| code == PUSHED)
            .collect();
        if added.contains(&true) {
            let mut conn = self.push_conn.clone();
            let reached = wait_replicas(&mut conn, &self.keys, &self.cfg).await?;
            if reached < self.cfg.wait_replicas {
                return Err(QueueError::NotReplicated {
                    wanted: self.cfg.wait_replicas,
                    reached,
                });
            }
        }
        Ok(added)
    }
}

/// The push script for `jobs`; it answers, per job, whether it was added.
/// Every key it touches is declared: the queue's, then each job's hash,
/// idempotency key and batch index (one entry per distinct key), then the
/// lanes' streams last, as `lua/lanes.lua` wants them.
pub(crate) fn push_script(
    keys: &Keys,
    cfg: &QueueConfig,
    jobs: &[NewJob],
) -> redis::ScriptInvocation<'static> {
    let mut declared = DeclaredKeys::new(&[&keys.stream, &keys.delayed, &keys.stats]);
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

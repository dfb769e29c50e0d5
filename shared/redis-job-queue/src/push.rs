//! Enqueueing: one job (group-committed with concurrent pushes) or many.

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt, stream};

use crate::job::{NewJob, Pushed};
use crate::keys::Keys;
use crate::{QueueConfig, QueueError, RedisQueue, scripts};

/// How many jobs one push script carries. Bounds the work of one script
/// call (so Redis stays responsive) while amortising round trips.
const PUSH_CHUNK: usize = 500;
/// Push chunks sent before the first answer is awaited.
const PUSH_CHUNKS_IN_FLIGHT: usize = 4;

impl RedisQueue {
    /// Enqueues one job and returns its id. Pushes made at the same moment
    /// by concurrent callers share one script call. An idempotent job
    /// ([`NewJob::idempotency`]) whose key was already used the same way
    /// answers the id without enqueueing anything; [`Self::push_once`]
    /// tells the two apart.
    pub async fn push(&self, job: NewJob) -> Result<String, QueueError> {
        self.push_once(job).await.map(|p| p.id().to_owned())
    }

    /// Enqueues one job, saying whether it was new or a repeat of an
    /// idempotent push.
    pub async fn push_once(&self, job: NewJob) -> Result<Pushed, QueueError> {
        job.check()?;
        let id = job.id.clone();
        let key = job.idempotency.as_ref().map(|(k, _)| k.clone());
        match self.pusher().submit(job).await? {
            1 => Ok(Pushed::New(id)),
            2 => Ok(Pushed::Repeat(id)),
            3 => Err(QueueError::IdempotencyConflict(key.unwrap_or_default())),
            _ => Err(QueueError::DuplicateId(id)),
        }
    }

    /// Enqueues many jobs; chunks go out pipelined on one connection. The
    /// answer says, per job and in order, whether it was enqueued (`false`:
    /// a job with that id already exists and was left untouched, or its
    /// idempotency key was used before).
    pub async fn push_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<bool>, QueueError> {
        jobs.iter().try_for_each(NewJob::check)?;
        // Built first, so the futures below borrow nothing (a future that
        // borrows the slice is not `Send` for every lifetime, which axum
        // handlers need).
        let calls: Vec<BoxFuture<'static, redis::RedisResult<Vec<u8>>>> = jobs
            .chunks(PUSH_CHUNK)
            .map(|chunk| {
                let inv = push_script(&self.keys, &self.cfg, chunk);
                let mut conn = self.conn.clone();
                async move { inv.invoke_async::<Vec<u8>>(&mut conn).await }.boxed()
            })
            .collect();
        // A few chunks in flight keep the connection busy without queueing
        // so much behind one another that later ones hit the reply timeout.
        let answers: Vec<Vec<u8>> = stream::iter(calls)
            .buffered(PUSH_CHUNKS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(answers
            .into_iter()
            .flatten()
            .map(|code| code == 1)
            .collect())
    }
}

/// The push script for `jobs`; it answers, per job, whether it was added.
pub(crate) fn push_script(
    keys: &Keys,
    cfg: &QueueConfig,
    jobs: &[NewJob],
) -> redis::ScriptInvocation<'static> {
    let mut inv = scripts::PUSH.prepare_invoke();
    inv.key(&keys.stream)
        .key(&keys.delayed)
        .key(&keys.stats)
        .key(&keys.stream_high)
        .key(&keys.stream_low)
        .arg(&keys.job_prefix)
        .arg(&keys.idem_prefix)
        .arg(cfg.idempotency_window.as_secs().max(1))
        .arg(&keys.batch_prefix)
        .arg(cfg.retention.as_secs().max(1));
    for job in jobs {
        let (idem, fingerprint) = job
            .idempotency
            .as_ref()
            .map_or(("", ""), |(k, f)| (k.as_str(), f.as_str()));
        inv.arg(&job.id)
            .arg(&job.payload)
            .arg(job.metadata_json())
            .arg(job.max_attempts.unwrap_or(cfg.max_attempts))
            .arg(job.delay_ms())
            .arg(
                job.timeout
                    .map_or(0, |t| t.as_millis().clamp(1, u64::MAX as u128) as u64),
            )
            .arg(idem)
            .arg(fingerprint)
            .arg(job.priority.stored())
            .arg(job.batch.as_deref().unwrap_or_default());
    }
    inv
}

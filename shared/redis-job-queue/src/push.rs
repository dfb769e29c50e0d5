//! Enqueueing: one job (group-committed with concurrent pushes) or many.

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt, stream};

use crate::QueueError;
use crate::job::{NewJob, Pushed};
use crate::push_call::{NOT_REPLICATED, PUSHED, push_script, wait_replicas};
use crate::shard::Shard;

/// How many jobs one push script carries. Bounds the work of one script
/// call (so Redis stays responsive) while amortising round trips.
const PUSH_CHUNK: usize = 500;
/// Push chunks sent before the first answer is awaited.
const PUSH_CHUNKS_IN_FLIGHT: usize = 4;

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

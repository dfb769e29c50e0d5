//! Acting on jobs already queued: cancel, re-drive failed ones, pause and
//! resume.

use crate::QueueError;
use crate::job::{Cancelled, JobStatus, Redriven};
use crate::scripts::{self, DeclaredKeys};
use crate::shard::Shard;

impl Shard {
    /// Sets the paused mark (keeping an earlier one); answers since when
    /// (epoch ms).
    pub(crate) async fn pause(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let since: u64 = scripts::PAUSE
            .key(&self.keys.paused)
            .invoke_async(&mut conn)
            .await?;
        Ok(since)
    }

    /// Removes the paused mark.
    pub(crate) async fn resume(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(&self.keys.paused)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Since when the shard is paused (epoch ms), if it is.
    pub(crate) async fn paused_since(&self) -> Result<Option<u64>, QueueError> {
        let mut conn = self.conn.clone();
        let since: Option<u64> = redis::cmd("GET")
            .arg(&self.keys.paused)
            .query_async(&mut conn)
            .await?;
        Ok(since)
    }

    /// Cancels a job that has not started. A queued job's stream entry
    /// stays until a worker reads and drops it.
    pub(crate) async fn cancel(&self, id: &str) -> Result<Cancelled, QueueError> {
        let mut conn = self.conn.clone();
        let before: String = scripts::CANCEL
            .key(&self.keys.delayed)
            .key(&self.keys.stats)
            .key(self.keys.job(id))
            .arg(id)
            .arg(self.cfg.retention.as_secs().max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(match JobStatus::parse(&before) {
            None => Cancelled::Unknown,
            Some(JobStatus::Scheduled | JobStatus::Queued) => Cancelled::Yes,
            Some(status) => Cancelled::TooLate(status),
        })
    }

    /// Re-drives a failed job: it runs again as its next attempt with a
    /// fresh attempt budget, and its new attempt's span links to the
    /// failed one. Answers the status it had (`None`: no such job); only
    /// a `Failed` job was re-driven.
    pub(crate) async fn retry(&self, id: &str) -> Result<Option<JobStatus>, QueueError> {
        let mut conn = self.conn.clone();
        let (_, _, before): (u64, u64, String) = self
            .redrive_script(Some(id))
            .arg("one")
            .arg(id)
            .arg(1)
            .arg(1)
            .invoke_async(&mut conn)
            .await?;
        Ok(JobStatus::parse(&before))
    }

    /// Re-drives failed jobs, oldest first, all of them or those whose
    /// error type is `error_type`: at most `limit` per call, looking at
    /// most at 10,000 failed jobs ([`Redriven::more`] says to call again).
    pub(crate) async fn redrive_failed(
        &self,
        error_type: Option<&str>,
        limit: usize,
    ) -> Result<Redriven, QueueError> {
        const SCAN: usize = 10_000;
        let mut conn = self.conn.clone();
        let (redriven, looked, _): (u64, u64, String) = self
            .redrive_script(None)
            .arg("all")
            .arg(error_type.unwrap_or_default())
            .arg(limit.max(1))
            .arg(SCAN)
            .invoke_async(&mut conn)
            .await?;
        Ok(Redriven {
            redriven,
            more: redriven as usize >= limit.max(1) || looked as usize >= SCAN,
        })
    }

    /// The re-drive script with its keys and first argument.
    fn redrive_script(&self, job: Option<&str>) -> redis::ScriptInvocation<'static> {
        let mut declared =
            DeclaredKeys::new(&[&self.keys.stream, &self.keys.failed, &self.keys.stats]);
        if let Some(id) = job {
            declared.declare(self.keys.job(id));
        }
        let mut inv = declared.invocation(&scripts::REDRIVE, &self.keys);
        inv.arg(&self.keys.job_prefix);
        inv
    }
}

//! Acting on every job a search finds: deleting one finished job, counting
//! a search's jobs, and the record of a bulk action (its filter and its
//! progress) that whoever runs it keeps in Redis, so that any replica of
//! the api can show it and stop it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::job::JobStatus;
use crate::queue::RedisQueue;
use crate::search::JobQuery;
use crate::{QueueError, scripts};

/// How long a bulk action's record is kept after its last change.
pub const BULK_RECORD_TTL: Duration = Duration::from_secs(7 * 86_400);

/// What [`RedisQueue::delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The job's record is gone.
    Yes,
    /// The job is still to run, or running: left alone.
    NotFinished(JobStatus),
    /// No such job (or its record expired).
    Unknown,
}

/// What a bulk action does to each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Cancel the jobs not started yet.
    Cancel,
    /// Re-drive the failed jobs.
    Retry,
    /// Delete the finished jobs.
    Delete,
}

impl BulkAction {
    /// `cancel`, `retry` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Retry => "retry",
            Self::Delete => "delete",
        }
    }

    /// The action named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Cancel, Self::Retry, Self::Delete]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// Where a bulk action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkState {
    /// Going through the jobs.
    Running,
    /// Asked to stop: it stops after the page it is on.
    Stopping,
    /// Stopped before the end, as asked.
    Stopped,
    /// Went through every job found.
    Done,
    /// Ended on an error (`error` says which).
    Failed,
}

impl BulkState {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Stopping,
            Self::Stopped,
            Self::Done,
            Self::Failed,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// Whether it has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Stopped | Self::Done | Self::Failed)
    }
}

/// A bulk action's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkRun {
    /// Its id.
    pub id: String,
    /// What it does.
    pub action: BulkAction,
    /// The filter, as its caller wrote it (JSON).
    pub filter: String,
    /// Where it is.
    pub state: BulkState,
    /// Jobs the search matched when it started.
    pub total: u64,
    /// Jobs it acted on.
    pub done: u64,
    /// Jobs it found but left as they were (a job already started, for a
    /// cancel; not failed, for a retry; not finished, for a delete).
    pub skipped: u64,
    /// Epoch ms.
    pub started_at_ms: u64,
    /// Epoch ms of its last progress.
    pub updated_at_ms: u64,
    /// Epoch ms, once ended.
    pub finished_at_ms: Option<u64>,
    /// The trace that records it.
    pub trace_id: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

impl BulkRun {
    fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("action", self.action.as_str().to_owned()),
            ("filter", self.filter.clone()),
            ("state", self.state.as_str().to_owned()),
            ("total", self.total.to_string()),
            ("done", self.done.to_string()),
            ("skipped", self.skipped.to_string()),
            ("started_at", self.started_at_ms.to_string()),
            ("updated_at", self.updated_at_ms.to_string()),
        ];
        if let Some(t) = self.finished_at_ms {
            f.push(("finished_at", t.to_string()));
        }
        if let Some(t) = &self.trace_id {
            f.push(("trace_id", t.clone()));
        }
        if let Some(e) = &self.error {
            f.push(("error", e.clone()));
        }
        f
    }

    fn from_fields(id: &str, f: &BTreeMap<String, String>) -> Option<Self> {
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
        Some(Self {
            id: id.to_owned(),
            action: BulkAction::parse(f.get("action")?)?,
            filter: f.get("filter").cloned().unwrap_or_default(),
            state: BulkState::parse(f.get("state")?)?,
            total: num("total").unwrap_or(0),
            done: num("done").unwrap_or(0),
            skipped: num("skipped").unwrap_or(0),
            started_at_ms: num("started_at").unwrap_or(0),
            updated_at_ms: num("updated_at").unwrap_or(0),
            finished_at_ms: num("finished_at"),
            trace_id: f.get("trace_id").cloned(),
            error: f.get("error").cloned(),
        })
    }
}

impl RedisQueue {
    /// Deletes a finished job (succeeded, failed or cancelled) before its
    /// retention ends.
    pub async fn delete(&self, id: &str) -> Result<Deleted, QueueError> {
        let shard = self.shard(id);
        let mut conn = shard.conn.clone();
        let (code, status): (u8, String) = scripts::DELETE
            .key(shard.keys.job(id))
            .key(&shard.keys.failed)
            .key(&shard.keys.succeeded)
            .key(&shard.keys.index)
            .arg(id)
            .invoke_async(&mut conn)
            .await?;
        Ok(match (code, JobStatus::parse(&status)) {
            (1, _) => Deleted::Yes,
            (2, Some(s)) => Deleted::NotFinished(s),
            _ => Deleted::Unknown,
        })
    }

    /// How many jobs match `q` now: every page of the search, counted
    /// (a second or two a million jobs).
    pub async fn count(&self, q: &JobQuery) -> Result<u64, QueueError> {
        let mut n = 0;
        let mut cursor: Option<String> = None;
        loop {
            let page = self.search(q, cursor.as_deref(), 1000).await?;
            n += page.jobs.len() as u64;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(n),
            }
        }
    }

    fn bulk_key(&self, id: &str) -> String {
        format!("{}{id}", self.first_shard().keys.bulk_prefix)
    }

    async fn bulk_write(
        &self,
        id: &str,
        fields: &[(&'static str, String)],
    ) -> Result<(), QueueError> {
        let key = self.bulk_key(id);
        let mut conn = self.first_shard().conn.clone();
        redis::pipe()
            .atomic()
            .hset_multiple(&key, fields)
            .ignore()
            .expire(&key, BULK_RECORD_TTL.as_secs() as i64)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Writes a new bulk action's record, kept `BULK_RECORD_TTL` after
    /// its last change.
    pub async fn bulk_save(&self, run: &BulkRun) -> Result<(), QueueError> {
        self.bulk_write(&run.id, &run.to_fields()).await
    }

    /// Writes a bulk action's progress (its counts), leaving its state to
    /// whoever asked it to stop.
    pub async fn bulk_progress(&self, run: &BulkRun) -> Result<(), QueueError> {
        self.bulk_write(
            &run.id,
            &[
                ("done", run.done.to_string()),
                ("skipped", run.skipped.to_string()),
                ("updated_at", run.updated_at_ms.to_string()),
            ],
        )
        .await
    }

    /// A bulk action's record; `None` when unknown or expired.
    pub async fn bulk_run(&self, id: &str) -> Result<Option<BulkRun>, QueueError> {
        let mut conn = self.first_shard().conn.clone();
        let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.bulk_key(id))
            .query_async(&mut conn)
            .await?;
        Ok(BulkRun::from_fields(id, &fields))
    }

    /// Asks a running bulk action to stop (after the page it is on);
    /// answers its record as it is now (`None`: unknown).
    pub async fn bulk_stop(&self, id: &str) -> Result<Option<BulkRun>, QueueError> {
        let key = self.bulk_key(id);
        let mut conn = self.first_shard().conn.clone();
        // Only a running action becomes stopping; an ended one stays.
        let _: i64 = redis::Script::new(
            "if redis.call('HGET', KEYS[1], 'state') == 'running' then \
             return redis.call('HSET', KEYS[1], 'state', 'stopping') end return 0",
        )
        .key(&key)
        .invoke_async(&mut conn)
        .await?;
        self.bulk_run(id).await
    }
}

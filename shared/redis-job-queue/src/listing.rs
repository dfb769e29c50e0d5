//! Listing jobs by status across a queue's shards.
//!
//! Scheduled, succeeded and failed jobs are merged: every shard is asked
//! for a page after the same cursor (`{score}:{id}`, an order every shard
//! shares: run time, or finish time, then id), and the pages are merged in
//! that order. Queued and running jobs are listed shard after shard, each
//! oldest first; the cursor names the shard (`{entry}@{shard}`).

use crate::QueueError;
use crate::job::{JobPage, JobRecord, JobStatus};
use crate::shard::Shard;

/// One page of the jobs with `status` over `shards` (more than one).
pub(crate) async fn list(
    shards: &[Shard],
    status: JobStatus,
    cursor: Option<&str>,
    limit: usize,
) -> Result<JobPage, QueueError> {
    let limit = limit.clamp(1, 1000);
    match status {
        JobStatus::Queued | JobStatus::Running => by_shard(shards, status, cursor, limit).await,
        _ => merged(shards, status, cursor, limit).await,
    }
}

async fn merged(
    shards: &[Shard],
    status: JobStatus,
    cursor: Option<&str>,
    limit: usize,
) -> Result<JobPage, QueueError> {
    let pages =
        futures::future::try_join_all(shards.iter().map(|s| s.list(status, cursor, limit))).await?;
    let more = pages.iter().any(|p| p.next_cursor.is_some());
    let key = |j: &JobRecord| match status {
        JobStatus::Scheduled => j.run_at_ms.unwrap_or(0),
        _ => j.finished_at_ms.unwrap_or(0),
    };
    let mut jobs: Vec<JobRecord> = pages.into_iter().flat_map(|p| p.jobs).collect();
    match status {
        JobStatus::Scheduled => jobs.sort_by(|a, b| (key(a), &a.id).cmp(&(key(b), &b.id))),
        _ => jobs.sort_by(|a, b| (key(b), &b.id).cmp(&(key(a), &a.id))),
    }
    let cut = jobs.len() > limit;
    jobs.truncate(limit);
    let next_cursor = match (more || cut, jobs.last()) {
        (true, Some(last)) => Some(format!("{}:{}", key(last), last.id)),
        _ => None,
    };
    Ok(JobPage { jobs, next_cursor })
}

async fn by_shard(
    shards: &[Shard],
    status: JobStatus,
    cursor: Option<&str>,
    limit: usize,
) -> Result<JobPage, QueueError> {
    let (mut inner, mut at) = match cursor {
        None | Some("") => (None, 0),
        Some(c) => {
            let parsed = c
                .rsplit_once('@')
                .and_then(|(inner, shard)| Some((inner, shard.parse::<usize>().ok()?)))
                .filter(|(_, shard)| *shard < shards.len());
            match parsed {
                Some((inner, shard)) => (Some(inner.to_owned()), shard),
                None => {
                    return Err(QueueError::Invalid(format!(
                        "cursor {c:?} is not one this listing hands out"
                    )));
                }
            }
        }
    };
    let mut jobs = Vec::new();
    while at < shards.len() {
        let page = shards[at]
            .list(status, inner.as_deref(), limit - jobs.len())
            .await?;
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(next) => {
                return Ok(JobPage {
                    jobs,
                    next_cursor: Some(format!("{next}@{at}")),
                });
            }
            None => {
                at += 1;
                inner = None;
                if jobs.len() >= limit && at < shards.len() {
                    // From the start of the next shard.
                    return Ok(JobPage {
                        jobs,
                        next_cursor: Some(format!("0:0@{at}")),
                    });
                }
            }
        }
    }
    Ok(JobPage {
        jobs,
        next_cursor: None,
    })
}

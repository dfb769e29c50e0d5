//! Searching a queue's jobs by what they hold: status, error type,
//! priority, batch, a text or a box of coordinates in the payload, and
//! the time they were queued, newest or oldest first.
//!
//! Each shard keeps an index of its jobs by the time they were queued
//! (`{prefix}:{q}:index`: members `{ms, 15 digits}:{id}` of one sorted
//! set, so they sort by time, then id). A search walks it in order and
//! reads each job's own record for the rest (`lua/search.lua`), so what it
//! finds is always the job's status now, through retries, cancels and
//! re-drives, with no second index to keep in step. A job whose record has
//! expired leaves the index when a search meets it, or when the workers'
//! sweep does (`lua/sweep.lua`, a bounded slice every few seconds).
//!
//! A call looks at most [`SCAN_BUDGET`] entries per shard, so a page
//! costs Redis a bounded time however rare the matches: a page may hold
//! fewer jobs than asked for, with a `next_cursor` to go on from. The
//! cursor is the last index member looked at (every shard shares the
//! order), so it stays valid as jobs come and go.

use futures::future::try_join_all;

use crate::job::{JobPage, JobRecord, JobStatus, Priority};
use crate::shard::Shard;
use crate::{QueueError, scripts};

/// Most index entries one search call looks at, per shard.
pub const SCAN_BUDGET: usize = 5_000;

/// Oldest or newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Newest queued first.
    #[default]
    Desc,
    /// Oldest queued first.
    Asc,
}

/// A text a payload field must start with (any case, spaces around it
/// ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPrefix {
    /// The field's dotted path in the payload (`place.city`).
    pub path: String,
    /// What its text starts with.
    pub prefix: String,
}

/// A box of coordinates two payload fields must fall in.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoBox {
    /// The latitude's dotted path in the payload.
    pub lat_path: String,
    /// The longitude's.
    pub lon_path: String,
    /// Degrees: south, west, north, east (a west past east crosses the
    /// antimeridian).
    pub south: f64,
    /// West edge.
    pub west: f64,
    /// North edge.
    pub north: f64,
    /// East edge.
    pub east: f64,
}

/// What to search for; every field given must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobQuery {
    /// The job's status now.
    pub status: Option<JobStatus>,
    /// The error type of its last failed attempt.
    pub error_type: Option<String>,
    /// Its priority.
    pub priority: Option<Priority>,
    /// The batch it was pushed in.
    pub batch: Option<String>,
    /// A payload text by prefix.
    pub text: Option<TextPrefix>,
    /// A payload position in a box.
    pub geo: Option<GeoBox>,
    /// Queued at or after (epoch ms).
    pub queued_after_ms: Option<u64>,
    /// Queued before (epoch ms).
    pub queued_before_ms: Option<u64>,
    /// Newest or oldest first.
    pub order: Order,
}

/// An index member's prefix for time `ms`.
fn at(ms: u64) -> String {
    format!("{ms:015}")
}

/// The index member a cursor `{ms}:{id}` names: the time padded to 15
/// digits (a later one than 15 digits hold is the latest), so that any
/// cursor of that shape reads as a place in the index's order; `None`
/// for another shape.
fn member_of(cursor: &str) -> Option<String> {
    let (ms, id) = cursor.split_once(':')?;
    if ms.is_empty() || id.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms = ms.trim_start_matches('0');
    Some(if ms.len() > 15 {
        format!("{}:{id}", "9".repeat(15))
    } else {
        format!("{ms:0>15}:{id}")
    })
}

/// What one shard found.
struct Found {
    /// Where its scan stopped; `None` when it reached the end of the range.
    stopped: Option<String>,
    members: Vec<String>,
}

impl Shard {
    async fn search(
        &self,
        q: &JobQuery,
        cursor: &str,
        limit: usize,
        budget: usize,
    ) -> Result<Found, QueueError> {
        let (text_path, text_prefix) =
            q.text.as_ref().map_or((String::new(), String::new()), |t| {
                (t.path.clone(), t.prefix.trim().to_ascii_lowercase())
            });
        let geo = q.geo.clone().unwrap_or(GeoBox {
            lat_path: String::new(),
            lon_path: String::new(),
            south: 0.0,
            west: 0.0,
            north: 0.0,
            east: 0.0,
        });
        let mut conn = self.conn.clone();
        let mut answer: Vec<String> = scripts::SEARCH
            .key(&self.keys.index)
            .arg(&self.keys.job_prefix)
            .arg(match q.order {
                Order::Asc => "asc",
                Order::Desc => "desc",
            })
            .arg(cursor)
            .arg(
                q.queued_after_ms
                    .map_or("-".to_owned(), |ms| format!("[{}", at(ms))),
            )
            .arg(
                q.queued_before_ms
                    .map_or("+".to_owned(), |ms| format!("({}", at(ms))),
            )
            .arg(limit)
            .arg(budget)
            .arg(q.status.map_or("", JobStatus::as_str))
            .arg(q.error_type.as_deref().unwrap_or_default())
            .arg(q.priority.map_or("", Priority::as_str))
            .arg(q.batch.as_deref().unwrap_or_default())
            .arg(text_path)
            .arg(text_prefix)
            .arg(&geo.lat_path)
            .arg(&geo.lon_path)
            .arg(geo.south)
            .arg(geo.west)
            .arg(geo.north)
            .arg(geo.east)
            .invoke_async(&mut conn)
            .await?;
        let stopped = match answer.first().map(String::as_str) {
            Some("") | None => None,
            Some(s) => Some(s.to_owned()),
        };
        let members = answer.drain(1.min(answer.len())..).collect();
        Ok(Found { stopped, members })
    }

    /// The records of index `members` still kept, in that order.
    async fn records_of(&self, members: &[String]) -> Result<Vec<JobRecord>, QueueError> {
        let ids: Vec<String> = members.iter().map(|m| m[16..].to_owned()).collect();
        self.records(&ids).await
    }
}

/// One page of the jobs of `shards` matching `q`, at most `limit` (1 to
/// 1,000), from `cursor` (`None` for the first page; then the page's
/// `next_cursor`). See the module docs.
pub(crate) async fn search(
    shards: &[Shard],
    q: &JobQuery,
    cursor: Option<&str>,
    limit: usize,
) -> Result<JobPage, QueueError> {
    let limit = limit.clamp(1, 1000);
    let cursor = match cursor.unwrap_or_default() {
        "" => String::new(),
        c => member_of(c).ok_or_else(|| {
            QueueError::Invalid(format!(
                "cursor {c:?} is not one this search hands out ({{number}}:{{id}})"
            ))
        })?,
    };
    let cursor = cursor.as_str();
    let found = try_join_all(
        shards
            .iter()
            .map(|s| s.search(q, cursor, limit, SCAN_BUDGET)),
    )
    .await?;
    // A shard that stopped early has not looked past where it stopped:
    // what the others found beyond the least advanced of those waits for
    // the next page.
    let ahead = |a: &str, b: &str| match q.order {
        Order::Asc => a > b,
        Order::Desc => a < b,
    };
    let frontier = found
        .iter()
        .filter_map(|f| f.stopped.as_deref())
        .reduce(|a, b| if ahead(a, b) { b } else { a })
        .map(str::to_owned);
    let mut members: Vec<(usize, String)> = found
        .into_iter()
        .enumerate()
        .flat_map(|(shard, f)| f.members.into_iter().map(move |m| (shard, m)))
        .filter(|(_, m)| frontier.as_deref().is_none_or(|f| !ahead(m, f)))
        .collect();
    members.sort_by(|a, b| match q.order {
        Order::Asc => a.1.cmp(&b.1),
        Order::Desc => b.1.cmp(&a.1),
    });
    members.truncate(limit);
    let next_cursor = if members.len() == limit {
        members.last().map(|(_, m)| m.clone())
    } else {
        frontier
    };
    // The records, a pipeline per shard, back in the page's order.
    let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); shards.len()];
    for (shard, m) in &members {
        by_shard[*shard].push(m.clone());
    }
    let records =
        try_join_all(shards.iter().zip(&by_shard).map(|(s, ms)| s.records_of(ms))).await?;
    let mut jobs: Vec<JobRecord> = records.into_iter().flatten().collect();
    jobs.sort_by(|a, b| {
        let (ka, kb) = (
            (a.enqueued_at_ms, a.id.as_str()),
            (b.enqueued_at_ms, b.id.as_str()),
        );
        match q.order {
            Order::Asc => ka.cmp(&kb),
            Order::Desc => kb.cmp(&ka),
        }
    });
    Ok(JobPage { jobs, next_cursor })
}

/// The workers' sweep of a shard's index: drops up to `count` entries of
/// jobs whose record is gone, going on where the last sweep stopped;
/// answers how many it looked at and dropped.
pub(crate) async fn sweep(shard: &Shard, count: usize) -> Result<(u64, u64), QueueError> {
    let mut conn = shard.conn.clone();
    Ok(scripts::SWEEP
        .key(&shard.keys.index)
        .key(&shard.keys.index_sweep)
        .arg(&shard.keys.job_prefix)
        .arg(count.max(1))
        .invoke_async(&mut conn)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_as_index_members() {
        let m = |c: &str| member_of(c);
        assert_eq!(
            m("001764000000000:01a2-x").as_deref(),
            Some("001764000000000:01a2-x")
        );
        assert_eq!(
            m("1764000000000:01a2").as_deref(),
            Some("001764000000000:01a2")
        );
        assert_eq!(m("48:x").as_deref(), Some("000000000000048:x"));
        assert_eq!(
            m("99999999999999999999:x").as_deref(),
            Some("999999999999999:x")
        );
        assert_eq!(
            m("000000000000000000048:x").as_deref(),
            Some("000000000000048:x")
        );
        for bad in ["nonsense", "1:", ":1", "1a:x", "-1:x"] {
            assert_eq!(m(bad), None, "{bad}");
        }
        assert_eq!(at(1_764_000_000_000), "001764000000000");
    }
}

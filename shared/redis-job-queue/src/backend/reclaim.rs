//! Reclaim: a reader takes over the jobs whose lease ran out (their
//! worker died or stalled), lane after lane, with `XAUTOCLAIM`; the leases
//! of jobs still running are kept fresh by `renewal.rs`.

use std::time::{Duration, Instant};

use redis::streams::{StreamAutoClaimReply, StreamId};

use super::renewal::heartbeat_period;
use super::{Shared, named};
use crate::{Priority, QueueError};

/// Where a reader's scan for expired leases is: the lane being scanned,
/// where in it, and when the next scan is due.
pub(super) struct Reclaim {
    lane: usize,
    cursor: String,
    next: Instant,
}

impl Reclaim {
    /// A scan that starts a heartbeat period from now: after an outage
    /// every lease looks expired, and the workers still running those jobs
    /// (or holding their outcomes) need that long to renew them first.
    pub(super) fn new(shared: &Shared) -> Self {
        Self {
            lane: 0,
            cursor: "0-0".into(),
            next: Instant::now() + heartbeat_period(shared.cfg().lease),
        }
    }

    /// Whether a scan is due.
    pub(super) fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    /// Claims entries whose lease ran out, lane after lane, up to `want`;
    /// once every lane is scanned, the next scan is due in half a lease.
    pub(super) async fn claim(
        &mut self,
        shared: &Shared,
        want: usize,
    ) -> Result<Vec<StreamId>, QueueError> {
        let keys = &shared.queue.keys;
        let mut entries = Vec::new();
        while entries.len() < want {
            let priority = Priority::ALL[self.lane % Priority::ALL.len()];
            let mut conn = shared.queue.conn.clone();
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(keys.lane(priority))
                .arg(&keys.group)
                .arg(&*shared.consumer)
                .arg(shared.cfg().lease.as_millis() as u64)
                .arg(&self.cursor)
                .arg("COUNT")
                .arg(want - entries.len())
                .query_async(&mut conn)
                .await?;
            // Entries this consumer holds are running here: their lease
            // only looked lapsed (heartbeats failed during an outage, say).
            // The claim renewed them; starting them again would run the
            // job twice at once.
            let claimed: Vec<StreamId> = reply
                .claimed
                .into_iter()
                .map(|e| named(priority, e))
                .filter(|e| !shared.holds(&e.id))
                .collect();
            if !claimed.is_empty() {
                tracing::info!(
                    count = claimed.len(),
                    consumer = %shared.consumer,
                    priority = priority.as_str(),
                    "reclaimed jobs whose lease expired"
                );
            }
            entries.extend(claimed);
            self.cursor = reply.next_stream_id;
            if self.cursor != "0-0" {
                // More pending in this lane: go on from here next read.
                break;
            }
            // Scanned every pending entry of this lane: on to the next;
            // after the last, look again in half a lease.
            self.lane = (self.lane + 1) % Priority::ALL.len();
            if self.lane == 0 {
                let half = shared.cfg().lease / 2;
                self.next = Instant::now()
                    .checked_add(half)
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                break;
            }
        }
        Ok(entries)
    }
}

//! Lease renewal: the heartbeat that marks a consumer live and renews the
//! leases of the jobs it holds (so no other worker reclaims them while
//! they run), and, about once a lease, forgets dead consumers and trims
//! the finished indexes. Reclaiming the jobs of a dead consumer is in
//! `reclaim.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use crate::scripts;

/// How soon a failed heartbeat, or a kept outcome, is tried again: soon
/// after Redis comes back, leases are renewed and outcomes recorded
/// before any other worker's reader looks for expired leases (it waits a
/// heartbeat period after connecting).
pub(super) const RETRY_SOON: Duration = Duration::from_millis(200);

/// Consumers silent for this many leases are forgotten once idle.
const DEAD_AFTER_LEASES: u32 = 3;

/// How often a consumer heart-beats: three times a lease.
pub(super) fn heartbeat_period(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(50))
}

/// Heartbeat loop: marks the consumer live, renews its leases and, about
/// once a lease, forgets dead consumers and trims the failed index.
pub(super) async fn heartbeat(shared: Arc<Shared>) {
    let cfg = shared.cfg().clone();
    let keys = shared.queue.keys.clone();
    let every = heartbeat_period(cfg.lease);
    let mut last_reap = Instant::now();
    loop {
        let mut conn = shared.queue.conn.clone();
        let mut inv = scripts::HEARTBEAT.prepare_invoke();
        inv.key(&keys.stream)
            .key(&keys.consumers)
            .key(&keys.stream_high)
            .key(&keys.stream_low)
            .arg(&keys.group)
            .arg(&*shared.consumer);
        for entry in shared.held_entries() {
            inv.arg(entry);
        }
        if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
            tracing::warn!(error = %e, "queue heartbeat failed");
            tokio::time::sleep(RETRY_SOON.min(every)).await;
            continue;
        }
        if last_reap.elapsed() >= cfg.lease {
            last_reap = Instant::now();
            let res: redis::RedisResult<i64> = scripts::REAP
                .key(&keys.stream)
                .key(&keys.consumers)
                .key(&keys.failed)
                .key(&keys.succeeded)
                .key(&keys.stream_high)
                .key(&keys.stream_low)
                .arg(&keys.group)
                .arg(cfg.lease.saturating_mul(DEAD_AFTER_LEASES).as_millis() as u64)
                .arg(20)
                .arg(cfg.retention.as_millis() as u64)
                .invoke_async(&mut conn)
                .await;
            match res {
                Ok(n) if n > 0 => tracing::info!(count = n, "forgot dead queue consumers"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "queue housekeeping failed"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

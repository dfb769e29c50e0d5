//! Guarding the shard count, and finding where each shard lives.
//!
//! A queue records its number of shards in `{prefix}:{name}:shards`. A
//! process that asks for another number is refused while the queue holds
//! jobs in the recorded layout (waiting, running, delayed or failed): they
//! would sit where no lookup by id, no worker and no re-drive looks. To
//! change the number, drain the queue (let the workers finish, re-drive or
//! let the failed expire), then start every process with the new number.
//! Succeeded jobs are not counted: their records stay until the retention
//! ends but are no longer found by id.

use crate::connection::RedisConnection;
use crate::keys::Keys;
use crate::shards::shard_tags;
use crate::{Priority, QueueConfig, QueueError};

/// The key that records the queue's number of shards.
fn marker(cfg: &QueueConfig) -> String {
    format!("{}:{{{}}}:shards", cfg.key_prefix, cfg.name)
}

/// Refuses `cfg.shards` when the queue holds jobs in another number of
/// shards; records it otherwise.
pub(crate) async fn check(conn: &RedisConnection, cfg: &QueueConfig) -> Result<(), QueueError> {
    let mut conn = conn.clone();
    let key = marker(cfg);
    let recorded: Option<u16> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
    // A queue from before the record existed had one shard.
    let before = recorded.unwrap_or(1);
    if before != cfg.shards {
        let held = jobs_held(&mut conn, cfg, before).await?;
        if held > 0 {
            return Err(QueueError::Config(format!(
                "queue {:?} holds {held} jobs in {before} shard(s), and QUEUE_SHARDS is {}: \
                 they would be stranded. Drain the queue first (or keep QUEUE_SHARDS={before}); \
                 see the queue crate's reshard docs",
                cfg.name, cfg.shards
            )));
        }
    }
    if recorded != Some(cfg.shards) {
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(cfg.shards)
            .query_async(&mut conn)
            .await?;
    }
    Ok(())
}

/// Jobs waiting, running, delayed or failed in the layout of `shards`.
async fn jobs_held(
    conn: &mut RedisConnection,
    cfg: &QueueConfig,
    shards: u16,
) -> Result<u64, QueueError> {
    let mut held = 0;
    for tag in shard_tags(&cfg.name, shards) {
        let keys = Keys::new(cfg, &tag);
        for priority in Priority::ALL {
            let n: u64 = redis::cmd("XLEN")
                .arg(keys.lane(priority))
                .query_async(conn)
                .await?;
            held += n;
        }
        for set in [&keys.delayed, &keys.failed] {
            let n: u64 = redis::cmd("ZCARD").arg(set).query_async(conn).await?;
            held += n;
        }
    }
    Ok(held)
}

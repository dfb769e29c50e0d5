//! The Queues page's table of shards: where each part of a queue split
//! over hash tags lives (`QUEUE_SHARDS`), and how much it holds.

use maud::{Markup, html};
use redis_job_queue::RedisQueue;

/// One row per shard (nothing for a queue of one shard): its hash tag and
/// slot, the Redis node that holds it now, and its depth.
pub(crate) async fn shards_table(queue: &RedisQueue) -> Markup {
    if queue.config().shards <= 1 {
        return html! {};
    }
    match queue.shard_infos().await {
        Err(e) => html! {
            p.notice role="status" { "The shards could not be read: " (e.to_string()) }
        },
        Ok(shards) => html! {
            table.shards {
                caption { "Shards of the queue, one hash tag each" }
                thead { tr {
                    th scope="col" { "Shard" } th scope="col" { "Hash tag" } th scope="col" { "Slot" }
                    th scope="col" { "Node" } th scope="col" { "Waiting" } th scope="col" { "In flight" }
                    th scope="col" { "Delayed" } th scope="col" { "Failed" }
                } }
                tbody {
                    @for s in &shards {
                        tr {
                            td data-label="Shard" { (s.index) }
                            td data-label="Hash tag" { code { "{" (s.tag) "}" } }
                            td data-label="Slot" { (s.slot) }
                            td data-label="Node" { code { (s.node) } }
                            td data-label="Waiting" { (s.stats.waiting) }
                            td data-label="In flight" { (s.stats.in_flight) }
                            td data-label="Delayed" { (s.stats.delayed) }
                            td data-label="Failed" { (s.stats.failed) }
                        }
                    }
                }
            }
        },
    }
}

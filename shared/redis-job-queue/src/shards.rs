//! Queue shards: a queue split into N parts, each under a hash tag of its
//! own, so that on a Redis Cluster one queue spreads over every master.
//!
//! With one shard (the default) the tag is the queue's name, as it always
//! was: `jobs:{weather}:stream`. With N shards, shard `i`'s tag is
//! `{name}:{i}:{k}`, where `k` is the smallest number that puts the tag's
//! slot in the middle half of the `i`-th of N equal slot ranges. A cluster
//! made by `redis-cli --cluster create` gives each of its M masters one
//! contiguous range of 16,384 / M slots, so N shards on N masters land one
//! on each, and N = 2M lands two on each. Every process computes the same
//! tags from the name and N alone.

use crate::connection::slot;

/// The number of hash slots of a Redis Cluster.
const SLOTS: u32 = 16_384;

/// The most shards a queue may have.
pub const MAX_SHARDS: u16 = 256;

/// The hash tags (without braces) of `name`'s `shards` shards, in order.
pub fn shard_tags(name: &str, shards: u16) -> Vec<String> {
    if shards <= 1 {
        return vec![name.to_owned()];
    }
    let n = u32::from(shards);
    (0..n)
        .map(|i| {
            let (lo, hi) = (i * SLOTS / n, (i + 1) * SLOTS / n);
            let quarter = (hi - lo) / 4;
            let (from, to) = (lo + quarter, hi - quarter);
            (0u32..)
                .map(|k| format!("{name}:{i}:{k}"))
                .find(|tag| (from..to).contains(&u32::from(slot(tag.as_bytes()))))
                .unwrap_or_else(|| unreachable!("some k lands in any range of 16 slots or more"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_keeps_the_queues_own_tag() {
        assert_eq!(shard_tags("weather", 1), vec!["weather".to_owned()]);
        assert_eq!(shard_tags("weather", 0), vec!["weather".to_owned()]);
    }

    #[test]
    fn n_shards_land_one_in_each_of_n_equal_slot_ranges() {
        for n in [2u16, 3, 4, 6, 16, MAX_SHARDS] {
            let tags = shard_tags("weather", n);
            assert_eq!(tags.len(), usize::from(n));
            for (i, tag) in tags.iter().enumerate() {
                let s = u32::from(slot(tag.as_bytes()));
                let (lo, hi) = (
                    i as u32 * SLOTS / u32::from(n),
                    (i as u32 + 1) * SLOTS / u32::from(n),
                );
                assert!((lo..hi).contains(&s), "{n} shards: {tag} at slot {s}");
                assert!(tag.starts_with(&format!("weather:{i}:")), "{tag}");
            }
        }
    }

    #[test]
    fn the_tags_are_the_same_in_every_process() {
        assert_eq!(shard_tags("weather", 3), shard_tags("weather", 3));
        assert_ne!(shard_tags("weather", 3), shard_tags("images", 3));
    }
}

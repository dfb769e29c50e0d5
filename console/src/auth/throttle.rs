//! Repeated failed logins are slowed: after [`FREE_FAILURES`] failures in a
//! row for a user name or from an address, each further attempt must wait
//! twice as long as the one before (1 s, 2 s, 4 s, ... up to
//! [`MAX_WAIT`]), and is refused with `429` until then, before any
//! password is checked (so a flood costs no hashing either).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures in a row allowed before attempts are slowed.
pub(crate) const FREE_FAILURES: u32 = 3;
/// The longest wait between two attempts.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(300);
/// A failure older than this is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most names and addresses tracked at once.
const MAX_TRACKED: usize = 50_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Failures by key (`user:{name}` or `ip:{address}`).
#[derive(Debug, Default)]
pub(crate) struct Throttle(Mutex<HashMap<String, Failures>>);

impl Throttle {
    /// How long the caller must still wait, if any of `keys` is slowed.
    pub(crate) fn wait(&self, keys: &[String]) -> Option<Duration> {
        let map = self.0.lock().ok()?;
        let now = Instant::now();
        keys.iter()
            .filter_map(|k| map.get(k))
            .filter_map(|f| {
                let over = f.count.checked_sub(FREE_FAILURES)?;
                let wait = Duration::from_secs(1u64 << over.min(16)).min(MAX_WAIT);
                let until = f.last + wait;
                (until > now).then(|| until - now)
            })
            .max()
    }

    /// Counts a failure against each of `keys`.
    pub(crate) fn fail(&self, keys: &[String]) {
        let Ok(mut map) = self.0.lock() else { return };
        let now = Instant::now();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        }
        for key in keys {
            let f = map.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.duration_since(f.last) >= FORGET_AFTER {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
        }
    }

    /// Forgets the failures of `keys` (after a success).
    pub(crate) fn succeed(&self, keys: &[String]) {
        if let Ok(mut map) = self.0.lock() {
            for key in keys {
                map.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_starts_after_the_free_failures_and_doubles() {
        let t = Throttle::default();
        let keys = ["user:ann".to_owned()];
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.wait(&keys), None);
            t.fail(&keys);
        }
        t.fail(&keys);
        let first = t.wait(&keys).expect("slowed");
        assert!(first > Duration::from_millis(1500), "{first:?}");
        t.fail(&keys);
        let second = t.wait(&keys).expect("slowed");
        assert!(second > Duration::from_millis(3500), "{second:?}");
        assert_eq!(t.wait(&["user:bob".to_owned()]), None, "per key");
        t.succeed(&keys);
        assert_eq!(t.wait(&keys), None);
    }
}

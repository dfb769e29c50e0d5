//! The one clock helper: times in Redis are milliseconds since the epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for times before it).
pub(crate) fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// [`epoch_ms`] of now.
pub(crate) fn now_ms() -> u64 {
    epoch_ms(SystemTime::now())
}

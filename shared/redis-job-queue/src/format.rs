//! How a job is named and dated outside the queue: the shape of an id a
//! service may look up, and the RFC 3339 form of a record's times. Every
//! service that shows jobs (the api's JSON, the console's pages) writes
//! them this way, so a time or an id reads the same everywhere.

use std::time::{Duration, UNIX_EPOCH};

/// Longest id [`plausible_id`] accepts.
const MAX_ID_LEN: usize = 128;

/// Whether `id` could name a job or a batch: 1 to 128 ASCII letters,
/// digits, `-` and `_`. The ids [`crate::NewJob::new`] makes (UUIDs) and
/// those derived from idempotency keys are of this shape, and it is safe
/// in a Redis key; anything else names nothing, so a service answers
/// "not found" without asking Redis.
pub fn plausible_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A time of a [`crate::JobRecord`] (milliseconds since the Unix epoch) as
/// RFC 3339 in UTC, to the millisecond: `2026-01-31T12:00:00.250Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_the_queue_makes_are_plausible() {
        let new = crate::NewJob::new(&1).expect("encode");
        assert!(plausible_id(new.id()), "{}", new.id());
        assert!(plausible_id("idem-0123456789abcdef0123456789abcdef"));
        assert!(plausible_id("a_b-C9"));
        assert!(plausible_id(&"x".repeat(MAX_ID_LEN)));
    }

    #[test]
    fn ids_that_could_not_be_a_key_part_are_not() {
        for id in ["", "a b", "a:b", "a/b", "{tag}", "é", "a\n", "%FF", "!"] {
            assert!(!plausible_id(id), "{id:?}");
        }
        assert!(!plausible_id(&"x".repeat(MAX_ID_LEN + 1)));
    }

    #[test]
    fn times_are_utc_to_the_millisecond() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_769_860_800_250), "2026-01-31T12:00:00.250Z");
        // A leap day, and the last millisecond of a year.
        assert_eq!(rfc3339_ms(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
    }
}

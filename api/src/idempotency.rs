//! The idempotency rule: a `POST /v1/jobs` with an `Idempotency-Key`
//! makes one job, however often it is sent and whichever api instance
//! takes it. The key names the job's id, so a repeat names the same job;
//! the body's fingerprint tells a repeat (answered with the first job)
//! from a different request under the same key (refused). The queue
//! keeps each key for its idempotency window (24 hours). With `API_KEYS`,
//! a key belongs to the api key that sent it: two callers who happen to
//! use the same one make two jobs.

use axum::http::HeaderMap;
use redis_job_queue::NewJob;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ApiError;
use crate::auth::Caller;

/// The header that makes a POST idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The request's `Idempotency-Key`, if any: 1 to 255 printable ASCII
/// characters.
pub(crate) fn key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key))
        }
        _ => Err(ApiError::BadRequest(
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces".into(),
        )),
    }
}

/// `new` as the job of `key` on queue `queue`, asked for with `body` by
/// `caller` (with `API_KEYS`; none without).
pub(crate) fn apply(
    new: NewJob,
    queue: &str,
    caller: Option<&Caller>,
    key: &str,
    body: &Value,
) -> NewJob {
    // The key as the queue keeps it: the caller's own.
    let scoped = match caller {
        Some(Caller(who)) => format!("{who}/{key}"),
        None => key.to_owned(),
    };
    new.with_id(job_id(queue, &scoped))
        .idempotency(&scoped, fingerprint(body))
}

/// The id of the job an idempotency key makes: the same key, the same
/// job, whichever api instance takes the request.
fn job_id(queue: &str, key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(queue.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    format!("idem-{}", hex(&digest[..16]))
}

/// What identifies a request body: its JSON with keys sorted, hashed.
fn fingerprint(body: &Value) -> String {
    // serde_json's maps are sorted by key, so equal bodies print equally.
    hex(&Sha256::digest(body.to_string().as_bytes()))
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn headers(key: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            IDEMPOTENCY_KEY,
            HeaderValue::from_bytes(key).expect("header value"),
        );
        h
    }

    #[test]
    fn a_key_is_1_to_255_printable_ascii_characters() {
        assert_eq!(key(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(key(&headers(b"order-42")).ok(), Some(Some("order-42")));
        let longest = "k".repeat(255);
        assert!(key(&headers(longest.as_bytes())).is_ok());
        let too_long = "k".repeat(256);
        for bad in [b"".as_slice(), b"a b", "é".as_bytes(), too_long.as_bytes()] {
            assert!(key(&headers(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_key_names_one_job_per_queue() {
        let id = job_id("weather", "order-42");
        assert_eq!(id, job_id("weather", "order-42"));
        assert!(redis_job_queue::plausible_id(&id), "{id}");
        assert_eq!(id.len(), "idem-".len() + 32);
        assert_ne!(id, job_id("weather", "order-43"));
        assert_ne!(id, job_id("other", "order-42"));
    }

    #[test]
    fn a_body_is_known_by_its_content_not_its_key_order() {
        let a = json!({"city": "Oslo", "units": "metric"});
        let b: Value = serde_json::from_str(r#"{"units":"metric", "city":"Oslo"}"#).expect("JSON");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&json!({"city": "Bergen"})));
    }
}

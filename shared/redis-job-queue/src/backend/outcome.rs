//! The outcome policy: what a finished attempt leaves in the queue
//! (success with its result, a retry after a backoff, or failure for good),
//! and how it is recorded.

use std::sync::Arc;
use std::time::Duration;

use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;

use super::Shared;
use crate::queue::Keys;
use crate::{JobLease, MAX_DELAY, QueueConfig, QueueError, scripts};

impl Shared {
    /// Records one attempt's outcome, retrying while Redis is unreachable.
    /// If it never gets through, the lease expires and the job runs again:
    /// at-least-once, never lost.
    pub(super) async fn finish(&self, lease: &JobLease, outcome: Outcome) {
        let (kind, value, retry_in_ms) = match outcome {
            Outcome::Succeeded(result) => ("ok", result, 0),
            Outcome::Retry { error, delay } => ("retry", error, delay.as_millis() as u64),
            Outcome::Failed(error) => ("fail", error, 0),
        };
        let done = Finish {
            consumer: self.consumer.clone(),
            entry: lease.entry.clone(),
            id: lease.id.clone(),
            attempt: lease.attempt,
            kind,
            value,
            retry_in_ms,
            carry: lease.carried_json(),
        };
        let submit = || self.queue.finisher.submit(done.clone());
        let recorded = submit
            .retry(
                ExponentialBuilder::new()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_times(5),
            )
            .notify(|e: &QueueError, _| {
                tracing::warn!(job.id = %lease.id, error = %e, "could not record job outcome, retrying");
            })
            .await;
        match recorded {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                job.id = %lease.id,
                job.attempt = lease.attempt,
                "outcome not recorded: the lease expired and a newer attempt owns the job"
            ),
            Err(_) => tracing::error!(
                job.id = %lease.id,
                "gave up recording the job outcome; it will run again once its lease expires"
            ),
        }
    }
}

/// What to record for a finished attempt.
pub(super) fn decide<R: Serialize>(
    cfg: &QueueConfig,
    lease: &JobLease,
    res: &Result<R, BoxDynError>,
) -> Outcome {
    let err = match res {
        Ok(value) => {
            return match serde_json::to_string(value) {
                Ok(json) => Outcome::Succeeded(json),
                Err(e) => Outcome::Failed(format!("the result could not be encoded as JSON: {e}")),
            };
        }
        Err(err) => err,
    };
    if let Some(abort) = err.downcast_ref::<AbortError>() {
        return Outcome::Failed(source_text(abort));
    }
    let (message, delay) = match err.downcast_ref::<RetryAfterError>() {
        Some(retry) => (source_text(retry), retry.get_duration()),
        None => (err.to_string(), backoff(cfg, lease.attempt)),
    };
    if lease.max_attempts != 0 && lease.attempt >= lease.max_attempts {
        return Outcome::Failed(message);
    }
    // A delay past any sensible date (a careless RetryAfterError) is the
    // handler's error, not a panic of the worker.
    if delay > MAX_DELAY {
        return Outcome::Failed(format!(
            "{message} (not retried: the retry delay {delay:?} is over the longest delay, {} days)",
            MAX_DELAY.as_secs() / 86_400
        ));
    }
    Outcome::Retry {
        error: message,
        delay,
    }
}

/// Exponential backoff: `retry_backoff * 2^(attempt-1)`, capped.
fn backoff(cfg: &QueueConfig, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    cfg.retry_backoff
        .saturating_mul(factor)
        .min(cfg.retry_backoff_max)
}

/// The text of an error's cause (the wrapped error of `AbortError` and
/// `RetryAfterError`), falling back to the error itself.
fn source_text(err: &(dyn std::error::Error + 'static)) -> String {
    err.source()
        .map_or_else(|| err.to_string(), |s| s.to_string())
}

/// One attempt's outcome, as the finish script takes it.
#[derive(Debug, Clone)]
pub(crate) struct Finish {
    consumer: Arc<str>,
    entry: String,
    id: String,
    attempt: u32,
    /// `ok`, `retry` or `fail`.
    kind: &'static str,
    /// The result JSON, or the error text.
    value: String,
    /// How long from the server's now until the retry may run.
    retry_in_ms: u64,
    /// Metadata for the next attempt (JSON object, or empty).
    carry: String,
}

/// The finish script for a batch of outcomes; it answers, per outcome,
/// whether it was recorded.
pub(crate) fn finish_script(
    keys: &Keys,
    cfg: &QueueConfig,
    done: &[Finish],
) -> redis::ScriptInvocation<'static> {
    let mut inv = scripts::FINISH.prepare_invoke();
    inv.key(&keys.stream)
        .key(&keys.delayed)
        .key(&keys.failed)
        .key(&keys.stats)
        .arg(&keys.job_prefix)
        .arg(&keys.group)
        .arg(cfg.retention.as_secs().max(1));
    for d in done {
        inv.arg(&*d.consumer)
            .arg(&d.entry)
            .arg(&d.id)
            .arg(d.attempt)
            .arg(d.kind)
            .arg(&d.value)
            .arg(d.retry_in_ms)
            .arg(&d.carry);
    }
    inv
}

/// What a finished attempt leaves in the queue.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    Succeeded(String),
    Retry { error: String, delay: Duration },
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(attempt: u32, max_attempts: u32) -> JobLease {
        JobLease::new("1-0".into(), "j".into(), attempt, max_attempts, 0, 0)
    }

    fn cfg() -> QueueConfig {
        let mut cfg = QueueConfig::new("q");
        cfg.retry_backoff = Duration::from_secs(1);
        cfg.retry_backoff_max = Duration::from_secs(10);
        cfg
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_the_ceiling() {
        let got: Vec<u64> = (1..=6).map(|a| backoff(&cfg(), a).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(&cfg(), u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn a_retry_delay_past_any_date_fails_the_job_instead_of_panicking() {
        let res: Result<(), BoxDynError> =
            Err(RetryAfterError::new("come back much later", Duration::MAX).into());
        match decide(&cfg(), &lease(1, 3), &res) {
            Outcome::Failed(error) => {
                assert!(error.contains("come back much later"), "{error}");
                assert!(error.contains("longest delay"), "{error}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn success_stores_the_result_as_json() {
        let res: Result<_, BoxDynError> = Ok(serde_json::json!({ "temp": 3.5 }));
        assert_eq!(
            decide(&cfg(), &lease(1, 3), &res),
            Outcome::Succeeded(r#"{"temp":3.5}"#.into())
        );
    }

    #[test]
    fn errors_retry_until_the_last_attempt() {
        let res: Result<(), BoxDynError> = Err("timeout".into());
        match decide(&cfg(), &lease(2, 3), &res) {
            Outcome::Retry { error, delay } => {
                assert_eq!(error, "timeout");
                assert_eq!(
                    delay,
                    Duration::from_secs(2),
                    "the second retry is 2 s away"
                );
            }
            other => panic!("expected a retry, got {other:?}"),
        }
        assert_eq!(
            decide(&cfg(), &lease(3, 3), &res),
            Outcome::Failed("timeout".into())
        );
        assert!(
            matches!(decide(&cfg(), &lease(9, 0), &res), Outcome::Retry { .. }),
            "0 = no limit"
        );
    }

    #[test]
    fn abort_fails_at_once_and_retry_after_sets_the_delay() {
        let res: Result<(), BoxDynError> = Err(AbortError::new("unknown place").into());
        assert_eq!(
            decide(&cfg(), &lease(1, 3), &res),
            Outcome::Failed("unknown place".into())
        );

        let res: Result<(), BoxDynError> =
            Err(RetryAfterError::new("rate limited", Duration::from_secs(60)).into());
        match decide(&cfg(), &lease(1, 3), &res) {
            Outcome::Retry { error, delay } => {
                assert_eq!(error, "rate limited");
                assert_eq!(delay, Duration::from_secs(60));
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }
}

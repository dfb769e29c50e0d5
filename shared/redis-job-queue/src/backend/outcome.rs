//! The outcome policy: what a finished attempt leaves in the queue
//! (success with its result, a retry after a backoff, or failure for good),
//! and how it is recorded.

use std::time::Duration;

use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;

use super::Shared;
use crate::defer::MIN_DEFER;
use crate::finish::{Finish, finish_script};
use crate::{Defer, JobLease, MAX_DELAY, QueueConfig, QueueError};

/// Most outcomes kept while Redis is unreachable. Past it an outcome is
/// dropped, and its job runs again once its lease expires.
pub(super) const MAX_UNRECORDED: usize = 10_000;

/// What the finish script answered for one outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recorded {
    Yes,
    /// A newer attempt owns the job.
    Stale,
    /// The job's record is gone.
    Gone,
    /// Recorded, but the outbox was full: the job's event is dropped.
    EventDropped,
}

impl From<u8> for Recorded {
    fn from(code: u8) -> Self {
        match code {
            1 => Self::Yes,
            2 => Self::Gone,
            3 => Self::EventDropped,
            _ => Self::Stale,
        }
    }
}

impl Shared {
    /// Records one attempt's outcome, retrying briefly. While Redis stays
    /// unreachable the outcome is kept (up to [`MAX_UNRECORDED`]) and its
    /// entry stays held, so its lease is renewed as soon as Redis is back
    /// and the outcome recorded then, instead of the job running again.
    /// Answers whether the outcome is settled (recorded, refused, or given
    /// up); `false` means it is kept for later and the entry still held.
    pub(super) async fn finish(&self, lease: &JobLease, outcome: Outcome) -> bool {
        let (kind, value, retry_in_ms) = match outcome {
            Outcome::Succeeded(result) => ("ok", result, 0),
            Outcome::Retry { error, delay } => ("retry", error, delay.as_millis() as u64),
            Outcome::Failed(error) => ("fail", error, 0),
            Outcome::Defer { reason, delay } => ("defer", reason, delay.as_millis() as u64),
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
            error_type: lease.error_type().unwrap_or_default(),
            batch: lease.batch.clone(),
            event: lease.event(),
        };
        let submit = || self.queue.finisher.submit(done.clone());
        let recorded = submit
            .retry(
                ExponentialBuilder::new()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_times(3),
            )
            .notify(|e: &QueueError, _| {
                tracing::warn!(job.id = %lease.id, error = %e, "could not record job outcome, retrying");
            })
            .await;
        match recorded {
            Ok(code) => {
                report(&done, code.into());
                true
            }
            Err(e) => self.keep_unrecorded(done, &e),
        }
    }

    /// Keeps an outcome Redis could not take; answers whether it was
    /// given up instead (the buffer is full).
    fn keep_unrecorded(&self, done: Finish, error: &QueueError) -> bool {
        let Ok(mut kept) = self.unrecorded.lock() else {
            return true;
        };
        if kept.len() >= MAX_UNRECORDED {
            tracing::error!(
                job.id = %done.id,
                kept = kept.len(),
                %error,
                "too many outcomes waiting for Redis; this one is dropped and its job \
                 runs again once its lease expires"
            );
            return true;
        }
        tracing::warn!(
            job.id = %done.id,
            %error,
            "Redis is unreachable: the job's outcome is kept and recorded once it is back"
        );
        kept.push_back(done);
        false
    }

    /// Tries once to record the kept outcomes (a chunk at a time); the
    /// ones Redis answered are released. Answers how many are still kept.
    pub(super) async fn record_unrecorded(&self) -> usize {
        let chunk: Vec<Finish> = match self.unrecorded.lock() {
            Ok(kept) => kept.iter().take(MAX_RECORD_CHUNK).cloned().collect(),
            Err(_) => return 0,
        };
        if chunk.is_empty() {
            return 0;
        }
        let mut conn = self.queue.conn.clone();
        let res: redis::RedisResult<Vec<u8>> = finish_script(&self.queue.keys, self.cfg(), &chunk)
            .invoke_async(&mut conn)
            .await;
        let Ok(mut kept) = self.unrecorded.lock() else {
            return 0;
        };
        match res {
            Ok(codes) => {
                tracing::info!(
                    count = chunk.len(),
                    "Redis is back: recorded kept job outcomes"
                );
                for (done, code) in chunk.iter().zip(codes) {
                    report(done, code.into());
                    self.release(&done.entry);
                }
                let n = chunk.len().min(kept.len());
                kept.drain(..n);
            }
            Err(e) => tracing::debug!(error = %e, "kept job outcomes not recorded yet"),
        }
        kept.len()
    }
}

/// Most kept outcomes recorded by one script call.
const MAX_RECORD_CHUNK: usize = 256;

/// Logs what became of an outcome Redis answered for.
fn report(done: &Finish, recorded: Recorded) {
    match recorded {
        Recorded::Yes => {}
        Recorded::EventDropped => tracing::error!(
            job.id = %done.id,
            "the job succeeded, but the outbox is full: its event is dropped (counted in \
             the outbox's dropped total); is the relay's broker away?"
        ),
        Recorded::Stale => tracing::warn!(
            job.id = %done.id,
            job.attempt = done.attempt,
            "outcome not recorded: the lease expired and a newer attempt owns the job"
        ),
        Recorded::Gone => tracing::error!(
            job.id = %done.id,
            job.attempt = done.attempt,
            "outcome not recorded: the job's record is gone from Redis, which lost its data \
             (restarted without persistence?)"
        ),
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
    if let Some(defer) = Defer::find(err.as_ref()) {
        let delay = defer.delay().max(MIN_DEFER);
        let reason = defer.reason().to_string();
        if lease.may_defer(delay) {
            return Outcome::Defer { reason, delay };
        }
        // Deferred for as long as the queue allows: from now on a refusal
        // is an attempt like any other, so the job ends some day.
        let message = format!(
            "{reason} (counted as an attempt: the job was deferred {:?} in all, and the \
             queue defers a job at most {:?})",
            lease.deferred, lease.max_defer
        );
        return counted(lease, message, delay);
    }
    if let Some(abort) = err.downcast_ref::<AbortError>() {
        return Outcome::Failed(source_text(abort));
    }
    let (message, delay) = match err.downcast_ref::<RetryAfterError>() {
        Some(retry) => (source_text(retry), retry.get_duration()),
        None => (err.to_string(), backoff(cfg, lease.attempt)),
    };
    counted(lease, message, delay)
}

/// A failed attempt: retried after `delay`, unless it was the last.
fn counted(lease: &JobLease, message: String, delay: Duration) -> Outcome {
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

/// What a finished attempt leaves in the queue.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    Succeeded(String),
    Retry {
        error: String,
        delay: Duration,
    },
    Failed(String),
    /// Not an attempt: run again after `delay` with the same attempt
    /// number ([`Defer`]).
    Defer {
        reason: String,
        delay: Duration,
    },
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
    fn a_deferral_is_not_an_attempt_until_the_job_was_deferred_the_most_the_queue_allows() {
        let refused = || -> Result<(), BoxDynError> {
            Err(Defer::new("circuit open", Duration::from_secs(10)).into())
        };
        let mut l = lease(3, 3);
        l.max_defer = Duration::from_secs(60);
        l.deferred = Duration::from_secs(50);
        assert_eq!(
            decide(&cfg(), &l, &refused()),
            Outcome::Defer {
                reason: "circuit open".into(),
                delay: Duration::from_secs(10)
            },
            "even on the last attempt, a deferral within the bound is no attempt"
        );
        l.deferred = Duration::from_secs(51);
        match decide(&cfg(), &l, &refused()) {
            Outcome::Failed(error) => assert!(error.contains("at most 60s"), "{error}"),
            other => panic!("past the bound the last attempt fails, got {other:?}"),
        }
        let mut l = lease(1, 3);
        l.max_defer = Duration::from_secs(5);
        assert!(
            matches!(decide(&cfg(), &l, &refused()), Outcome::Retry { delay, .. } if delay == Duration::from_secs(10)),
            "past the bound an earlier attempt is retried after the delay asked"
        );
        l.max_defer = Duration::from_secs(60);
        let now: Result<(), BoxDynError> = Err(Defer::new("busy", Duration::ZERO).into());
        assert_eq!(
            decide(&cfg(), &l, &now),
            Outcome::Defer {
                reason: "busy".into(),
                delay: MIN_DEFER
            },
            "a deferral never spins"
        );
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

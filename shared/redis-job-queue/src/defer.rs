//! Deferring a job: running it later without counting the attempt.
//!
//! A handler that could not even try (a circuit breaker refused the call,
//! a rate limit had no slot) returns [`Defer`]. The job goes back to the
//! delayed set for the delay given, and its attempt number is given back:
//! the next run has the same number, so refusals never use up the job's
//! attempts. Deferrals add up per job; once a job's total would pass the
//! queue's [`QueueConfig::max_defer`], the refusal counts as an ordinary
//! failed attempt (retried, or failed on the last attempt), so no job is
//! put off for ever.
//!
//! [`QueueConfig::max_defer`]: crate::QueueConfig::max_defer

use std::time::Duration;

use apalis_core::error::BoxDynError;

/// The handler's error for "not now, and it was not an attempt": the job
/// runs again after `delay` with the same attempt number (see the module
/// docs for the bound).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct Defer {
    /// Why the job could not run now.
    #[source]
    source: BoxDynError,
    /// How long until it may.
    delay: Duration,
}

impl Defer {
    /// Defers the job by `delay` because of `reason`.
    pub fn new(reason: impl Into<BoxDynError>, delay: Duration) -> Self {
        Self {
            source: reason.into(),
            delay,
        }
    }

    /// How long until the job runs again.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Why the job could not run now.
    pub fn reason(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.source.as_ref()
    }

    /// The deferral in `error`, if it is one (or wraps one).
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        std::iter::successors(Some(error), |&e| e.source()).find_map(|e| e.downcast_ref::<Self>())
    }
}

/// The shortest deferral: a refusal that says "now" still waits this long,
/// so a handler that defers at once cannot spin its job.
pub(crate) const MIN_DEFER: Duration = Duration::from_millis(100);

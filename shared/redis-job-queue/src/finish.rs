//! Recording outcomes: one attempt's outcome as the finish script
//! (`lua/finish.lua`) takes it, and the script call for a batch of them.

use std::sync::Arc;

use crate::keys::Keys;
use crate::{QueueConfig, scripts};

/// One attempt's outcome, as the finish script takes it.
#[derive(Debug, Clone)]
pub(crate) struct Finish {
    pub(crate) consumer: Arc<str>,
    pub(crate) entry: String,
    pub(crate) id: String,
    pub(crate) attempt: u32,
    /// `ok`, `retry` or `fail`.
    pub(crate) kind: &'static str,
    /// The result JSON, or the error text.
    pub(crate) value: String,
    /// How long from the server's now until the retry may run.
    pub(crate) retry_in_ms: u64,
    /// Metadata for the next attempt (JSON object, or empty).
    pub(crate) carry: String,
    /// The error's low-cardinality type, if the attempt failed and a
    /// layer named it (empty otherwise).
    pub(crate) error_type: String,
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
        .key(&keys.succeeded)
        .key(&keys.stream_high)
        .key(&keys.stream_low)
        .arg(&keys.job_prefix)
        .arg(&keys.group)
        .arg(cfg.retention.as_secs().max(1))
        .arg(&keys.batch_prefix);
    for d in done {
        inv.arg(&*d.consumer)
            .arg(&d.entry)
            .arg(&d.id)
            .arg(d.attempt)
            .arg(d.kind)
            .arg(&d.value)
            .arg(d.retry_in_ms)
            .arg(&d.carry)
            .arg(&d.error_type);
    }
    inv
}

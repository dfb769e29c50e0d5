//! Recording outcomes: one attempt's outcome as the finish script
//! (`lua/finish.lua`) takes it, and the script call for a batch of them.

use std::sync::Arc;

use crate::QueueConfig;
use crate::keys::Keys;
use crate::scripts::{self, DeclaredKeys};

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
    /// The batch the job belongs to, if any: its index lives as long as
    /// the job's record.
    pub(crate) batch: Option<String>,
    /// The event to put in the outbox if the outcome is a success.
    pub(crate) event: Option<crate::OutboxEvent>,
}

/// The finish script for a batch of outcomes; it answers, per outcome,
/// whether it was recorded (and its event kept).
pub(crate) fn finish_script(
    keys: &Keys,
    cfg: &QueueConfig,
    done: &[Finish],
) -> redis::ScriptInvocation<'static> {
    let mut declared = DeclaredKeys::new(&[
        &keys.stream,
        &keys.delayed,
        &keys.failed,
        &keys.stats,
        &keys.succeeded,
        &keys.outbox,
    ]);
    let per_outcome: Vec<(usize, usize)> = done
        .iter()
        .map(|d| {
            let hash = declared.declare(keys.job(&d.id));
            let batch = d
                .batch
                .as_deref()
                .map_or(0, |b| declared.declare(keys.batch(b)));
            (hash, batch)
        })
        .collect();
    let mut inv = declared.invocation(&scripts::FINISH, keys);
    inv.arg(&keys.group)
        .arg(cfg.retention.as_secs().max(1))
        .arg(cfg.outbox_max);
    for (d, (hash, batch)) in done.iter().zip(per_outcome) {
        inv.arg(&*d.consumer)
            .arg(&d.entry)
            .arg(&d.id)
            .arg(d.attempt)
            .arg(d.kind)
            .arg(&d.value)
            .arg(d.retry_in_ms)
            .arg(&d.carry)
            .arg(&d.error_type)
            .arg(hash)
            .arg(batch);
        match d.event.as_ref().filter(|_| d.kind == "ok") {
            Some(e) => inv
                .arg(&e.key)
                .arg(&e.job_id)
                .arg(&e.payload)
                .arg(serde_json::to_string(&e.context).unwrap_or_default()),
            None => inv.arg("").arg("").arg("").arg(""),
        };
    }
    inv
}

//! Errors of the queue.

/// What can go wrong talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis could not be reached or refused a command; retrying later may
    /// succeed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis failed a batched call this request was part of.
    #[error("redis: {0}")]
    Batch(std::sync::Arc<redis::RedisError>),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The queue's background task is gone (the runtime is shutting down).
    #[error("the queue is shut down")]
    Closed,
    /// A job with this id already exists; pick another id.
    #[error("a job with id {0:?} already exists")]
    DuplicateId(String),
    /// The idempotency key was used, within its window, for a job asked
    /// differently: use another key for another job.
    #[error("idempotency key {0:?} was already used for a different job")]
    IdempotencyConflict(String),
    /// A job's settings are unusable (a delay past any date, say); fix
    /// the job.
    #[error("invalid job: {0}")]
    Invalid(String),
    /// A job's arguments could not be encoded as JSON.
    #[error("job arguments could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
    /// A stored job record is not in the expected shape (written by an
    /// incompatible version, or edited by hand).
    #[error("job {id} has a malformed record: {reason}")]
    Corrupt {
        /// The job's id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The queue settings are unusable.
    #[error("invalid queue settings: {0}")]
    Config(String),
    /// The push reached the master but not enough replicas within the
    /// wait ([`crate::QueueConfig::wait_replicas`]): it may be lost if the
    /// master fails now, and may also still run. Push it again with the
    /// same idempotency key to be sure of one job.
    #[error("the push reached {reached} of the {wanted} replicas asked for in time")]
    NotReplicated {
        /// Replicas asked for.
        wanted: u32,
        /// Replicas that confirmed it.
        reached: u32,
    },
}

impl QueueError {
    /// Whether Redis refused a write because it is full (`OOM`: at
    /// `maxmemory` under `noeviction`). Nothing was written.
    pub fn is_full(&self) -> bool {
        match self {
            Self::Redis(e) => e.code() == Some("OOM"),
            Self::Batch(e) => e.code() == Some("OOM"),
            _ => false,
        }
    }

    /// Whether the queue itself is unreachable (Redis down, slow or shut
    /// down), so that the same call may succeed later; the other errors are
    /// about the call or the data.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Redis(_)
                | Self::Batch(_)
                | Self::Timeout(_)
                | Self::Closed
                | Self::NotReplicated { .. }
        )
    }
}

/// An attempt ran longer than its timeout and was cut short; it counts as
/// failed and is retried by the queue's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the attempt ran longer than its timeout of {0:?}")]
pub struct JobTimedOut(pub std::time::Duration);

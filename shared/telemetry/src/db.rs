//! CLIENT spans for database calls (Redis), per the database conventions.

/// A CLIENT span `{operation}` for one Redis command to `address:port`:
/// `db.system.name=redis`, `db.operation.name`, `db.query.text` (which must
/// carry no values: `GET ?`), `server.address`, `server.port`, and
/// `otel.status_code` and `error.type` to record on failure. More fields
/// may follow, as in `tracing::info_span!`.
///
/// A macro rather than a function so that the span's target is the module
/// that opens it (`worker::cache`), which is what `TRACE_FILTER` matches.
#[macro_export]
macro_rules! redis_span {
    ($address:expr, $port:expr, $operation:expr, $query:expr $(, $($fields:tt)+)?) => {
        ::tracing::info_span!(
            "redis",
            otel.name = $operation,
            otel.kind = "client",
            { $crate::attributes::DB_SYSTEM_NAME } = "redis",
            { $crate::attributes::DB_OPERATION_NAME } = $operation,
            { $crate::attributes::DB_QUERY_TEXT } = $query,
            { $crate::attributes::SERVER_ADDRESS } = $address,
            { $crate::attributes::SERVER_PORT } = $port,
            otel.status_code = ::tracing::field::Empty,
            { $crate::attributes::ERROR_TYPE } = ::tracing::field::Empty,
            $($($fields)+)?
        )
    };
}

/// Names on `span` (a Redis CLIENT, PRODUCER or CONSUMER span that
/// started naming `started_with`) the node that `answered`, when it is
/// another, and adds an event for each redirect and reconnect of the
/// slot while the commands ran:
///
/// - `redis.redirect` with `redis.redirect.kind` (`moved` or `ask`),
///   `redis.slot`, `redis.redirect.from` and `redis.redirect.to`
///   (`host:port`);
/// - `redis.reconnect` with `redis.reconnect.from` (the node whose
///   connection was lost), `redis.reconnect.to` (the node that answered)
///   and `error.message`.
///
/// The remote service stays `redis`, so the service map is the same
/// whichever node answered.
#[cfg(feature = "queue")]
pub fn record_answered(
    span: &tracing::Span,
    started_with: &redis_job_queue::ServerAddress,
    answered: &redis_job_queue::Answered,
) {
    use crate::attributes::{SERVER_ADDRESS, SERVER_PORT};
    use redis_job_queue::TopologyEvent;

    if let Some(node) = &answered.node
        && node != started_with
    {
        span.record(SERVER_ADDRESS, node.address.as_str());
        span.record(SERVER_PORT, node.port);
    }
    let at = |a: &redis_job_queue::ServerAddress| format!("{}:{}", a.address, a.port);
    for event in &answered.events {
        match event {
            TopologyEvent::Redirect {
                kind,
                slot,
                from,
                to,
            } => tracing::info!(
                parent: span,
                redis.redirect.kind = kind.as_str(),
                redis.slot = slot,
                redis.redirect.from = at(from),
                redis.redirect.to = at(to),
                "redis.redirect"
            ),
            TopologyEvent::Reconnect { from, to, error } => tracing::info!(
                parent: span,
                redis.reconnect.from = at(from),
                redis.reconnect.to = at(to),
                error.message = error.as_str(),
                "redis.reconnect"
            ),
        }
    }
}

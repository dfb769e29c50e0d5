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

//! API errors as RFC 9457 problem details (`application/problem+json`).

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use redis_job_queue::QueueError;
use weather_jobs::problem;

use crate::MAX_BODY_BYTES;

/// What can go wrong serving a request; each variant says what the caller
/// can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (400): fix its syntax.
    #[error("{0}")]
    BadRequest(String),
    /// The body is well-formed but says something unusable (422): fix it.
    #[error("{0}")]
    Invalid(String),
    /// The body is not JSON-typed (415): send `Content-Type: application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No valid API key (401): send one the api was given.
    #[error("{0}")]
    Unauthorized(String),
    /// The body is too large (413): send less.
    #[error("{0}")]
    TooLarge(String),
    /// The request's body did not arrive in time (408).
    #[error("{0}")]
    RequestTimeout(String),
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is at odds with the resource's state (cancelling a job
    /// that has started, say).
    #[error("{0}")]
    Conflict(String),
    /// The route exists for other methods (405).
    #[error("this route does not take that method; the Allow header lists those it does")]
    MethodNotAllowed,
    /// The api has as many requests in flight as it may (503, with
    /// `Retry-After: 1`): try again in a moment.
    #[error("the api is handling as many requests as it may; try again in a second")]
    Overloaded,
    /// A dependency is down (503): try again later.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of ours (500): the details are logged, not sent.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Overloaded | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<JsonRejection> for ApiError {
    /// axum's refusals of a JSON body, as precise problems.
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "send the job as JSON with `Content-Type: application/json`".into(),
            ),
            JsonRejection::JsonSyntaxError(e) => {
                Self::BadRequest(format!("the body is not valid JSON: {}", e.body_text()))
            }
            JsonRejection::JsonDataError(e) => Self::Invalid(e.body_text()),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::TooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes"))
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<QueueError> for ApiError {
    /// Redis being down or slow is a 503 the caller can retry; anything
    /// else is our fault.
    fn from(e: QueueError) -> Self {
        if let QueueError::IdempotencyConflict(_) = e {
            return Self::Invalid(
                "this Idempotency-Key was used within the last 24 hours for a different \
                 request body; send the same body, or use a new key for a new job"
                    .into(),
            );
        }
        if let QueueError::NotReplicated { wanted, reached } = e {
            tracing::warn!(
                wanted,
                reached,
                "a push was not confirmed by enough replicas"
            );
            return Self::Unavailable(format!(
                "the job reached {reached} of the {wanted} Redis replicas required in time, so it \
                 may be lost in a failover (or may still run); send it again with the same \
                 Idempotency-Key to be sure of exactly one job"
            ));
        }
        if e.is_full() {
            // Nothing was written: Redis refuses every write when full.
            tracing::error!(error = %e, "Redis is full (maxmemory) and refuses writes");
            return Self::Unavailable(
                "the job queue is full and takes no new job for now; nothing was queued, try \
                 again shortly"
                    .into(),
            );
        }
        if e.is_unavailable() {
            // Redis's own words stay in the log (and the span).
            tracing::warn!(error = %e, "the job queue is unavailable");
            Self::Unavailable("the job queue is unavailable; try again shortly".into())
        } else {
            Self::Unexpected(e.into())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Unexpected(e) => {
                // Logged inside the request span, so it carries the trace id.
                tracing::error!(error = ?e, "request failed");
                problem(
                    status,
                    "internal error; the trace id in the logs leads to the cause",
                )
            }
            Self::Unavailable(detail) => {
                tracing::warn!(%detail, "dependency unavailable");
                let mut res = problem(status, detail);
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                res
            }
            Self::Unauthorized(detail) => {
                let mut res = problem(status, detail);
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                res
            }
            Self::Overloaded => {
                let mut res = problem(status, &self.to_string());
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                res
            }
            other => problem(status, &other.to_string()),
        }
    }
}

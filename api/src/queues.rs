//! A queue's state: pause and resume (`/v1/queues/{name}`).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use redis_job_queue::rfc3339_ms;

use crate::views::QueueState;
use crate::{ApiError, AppState, openapi};

/// The queue named by the path: the api's own, or a 404.
fn own_queue(state: &AppState, name: Result<Path<String>, PathRejection>) -> Result<(), ApiError> {
    let Path(name) = name.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let own = &state.queue.config().name;
    if &name == own {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "no queue named {name:?}: this api serves {own:?}"
        )))
    }
}

/// The queue's state now.
async fn current(state: &AppState) -> Result<QueueState, ApiError> {
    let since = state.queue.paused_since().await?;
    Ok(QueueState {
        name: state.queue.config().name.clone(),
        paused: since.is_some(),
        paused_at: since.map(rfc3339_ms),
    })
}

/// A queue's state
///
/// Whether it is paused, and since when.
#[utoipa::path(
    get,
    path = "/v1/queues/{name}",
    tag = "queues",
    params(("name" = String, Path, description = "The queue's name (the api's is `weather`)")),
    responses(
        (status = 200, description = "The queue's state", body = QueueState),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn queue_state(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    own_queue(&state, name)?;
    Ok(Json(current(&state).await?).into_response())
}

/// Pause a queue
///
/// Within a second no worker starts a job of it. Jobs already running
/// finish; jobs sent meanwhile, delayed jobs coming due and schedules
/// firing wait in the queue. The pause is kept in Redis: it outlives
/// restarts of every service. Pausing a paused queue keeps its first time.
#[utoipa::path(
    post,
    path = "/v1/queues/{name}/pause",
    tag = "queues",
    params(("name" = String, Path, description = "The queue's name (the api's is `weather`)")),
    responses(
        (status = 200, description = "Paused: the queue's state", body = QueueState),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn pause_queue(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    own_queue(&state, name)?;
    state.queue.pause().await?;
    tracing::warn!(queue = %state.queue.config().name, "queue paused: no job starts until it is resumed");
    Ok(Json(current(&state).await?).into_response())
}

/// Resume a queue
///
/// Workers start its jobs again at once (resuming a running queue does
/// nothing).
#[utoipa::path(
    post,
    path = "/v1/queues/{name}/resume",
    tag = "queues",
    params(("name" = String, Path, description = "The queue's name (the api's is `weather`)")),
    responses(
        (status = 200, description = "Running: the queue's state", body = QueueState),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn resume_queue(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    own_queue(&state, name)?;
    state.queue.resume().await?;
    tracing::info!(queue = %state.queue.config().name, "queue resumed");
    Ok(Json(current(&state).await?).into_response())
}

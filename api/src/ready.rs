//! `GET /readyz`: whether the api can serve, which is whether Redis
//! answers. (`/healthz`, whether the process runs, is served with the
//! metrics.)

use std::time::Duration;

use axum::Json;
use axum::extract::State;

use crate::views::Ready;
use crate::{ApiError, AppState, openapi};

/// Whether Redis answers
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Redis answers", body = Ready),
        (status = 503, response = openapi::ServiceUnavailable),
    )
)]
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    match state.queue.ping(Duration::from_secs(1)).await {
        Ok(()) => Ok(Json(Ready {
            status: "ready".into(),
        })),
        Err(e) => {
            tracing::warn!(error = %e, "Redis is not answering");
            Err(ApiError::Unavailable("Redis is not answering".into()))
        }
    }
}

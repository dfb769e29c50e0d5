//! Bulk actions: cancel, retry or delete every job a search finds
//! (`/v1/jobs/bulk`), and the count that comes first (`/v1/jobs/count`).
//!
//! An action runs in the background, a page of 100 jobs at a time, and
//! keeps its progress in Redis (`jobs:{weather}:bulk:{id}`), so any
//! replica of the api shows it and stops it; it stops after the page it
//! is on. It is recorded as a trace: a `bulk {action}` span under the
//! request that started it, and under it a span per page that links to
//! the trace of every job it touched.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry::trace::TraceContextExt;
use redis_job_queue::{BulkAction, BulkRun, BulkState, Cancelled, Deleted, JobQuery, JobStatus};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use utoipa::ToSchema;

use crate::requests::{ListQuery, ListStatus};
use crate::views::Priority;
use crate::{ApiError, AppState, openapi};

/// Jobs a page of a bulk action acts on (and its span links to).
const PAGE: usize = 100;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkActionName {
    /// Cancel the jobs not started yet (the others are skipped).
    Cancel,
    /// Re-drive the failed jobs (the others are skipped).
    Retry,
    /// Delete the finished jobs: succeeded, failed or cancelled (the
    /// others are skipped).
    Delete,
}

impl From<BulkActionName> for BulkAction {
    fn from(a: BulkActionName) -> Self {
        match a {
            BulkActionName::Cancel => Self::Cancel,
            BulkActionName::Retry => Self::Retry,
            BulkActionName::Delete => Self::Delete,
        }
    }
}

/// The jobs to act on: a search's filters (see `GET /v1/jobs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    /// The job's status now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<ListStatus>,
    /// The error type of its last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, min_length = 1, max_length = 100)]
    pub error_type: Option<String>,
    /// Its priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub priority: Option<Priority>,
    /// The batch it was sent in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, min_length = 1, max_length = 128)]
    pub batch_id: Option<String>,
    /// The start of its city's name, any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, min_length = 1, max_length = 100)]
    pub place: Option<String>,
    /// Its coordinates in this box: `west,south,east,north`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        nullable = false,
        pattern = "^-?[0-9]{1,3}(\\.[0-9]{1,12})?(,-?[0-9]{1,3}(\\.[0-9]{1,12})?){3}$"
    )]
    pub bbox: Option<String>,
    /// Queued at or after (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub queued_after: Option<String>,
    /// Queued before (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub queued_before: Option<String>,
}

impl BulkFilter {
    /// The search it stands for.
    fn query(&self) -> Result<JobQuery, ApiError> {
        crate::search::job_query(&ListQuery {
            status: self.status,
            error_type: self.error_type.clone(),
            priority: self.priority,
            batch_id: self.batch_id.clone(),
            place: self.place.clone(),
            bbox: self.bbox.clone(),
            queued_after: self.queued_after.clone(),
            queued_before: self.queued_before.clone(),
            order: None,
            cursor: None,
            limit: None,
        })
    }
}

/// A bulk action to start.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// What to do to each job found.
    pub action: BulkActionName,
    /// Which jobs: every one when absent. (An object: read as a map first,
    /// since serde would take a list for a struct's fields in order.)
    #[serde(default)]
    #[schema(value_type = BulkFilter)]
    pub filter: serde_json::Map<String, serde_json::Value>,
}

/// A bulk action and its progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkView {
    /// Its id.
    pub id: String,
    /// What it does.
    pub action: BulkActionName,
    /// The jobs it acts on.
    pub filter: BulkFilter,
    /// `running`, `stopping` (after the page it is on), `stopped`, `done`
    /// or `failed`.
    pub state: String,
    /// Jobs the filter matched when it started.
    pub total: u64,
    /// Jobs it acted on so far.
    pub done: u64,
    /// Jobs it found but left as they were (already started, for a
    /// cancel; not failed, for a retry; not finished, for a delete).
    pub skipped: u64,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it last moved on.
    pub updated_at: String,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub finished_at: Option<String>,
    /// The trace that records it: a span for it, a span per page linked
    /// to every job it touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub trace_id: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

impl From<BulkRun> for BulkView {
    fn from(r: BulkRun) -> Self {
        use redis_job_queue::rfc3339_ms;
        Self {
            id: r.id,
            action: match r.action {
                BulkAction::Cancel => BulkActionName::Cancel,
                BulkAction::Retry => BulkActionName::Retry,
                BulkAction::Delete => BulkActionName::Delete,
            },
            filter: serde_json::from_str(&r.filter).unwrap_or_default(),
            state: r.state.as_str().to_owned(),
            total: r.total,
            done: r.done,
            skipped: r.skipped,
            started_at: rfc3339_ms(r.started_at_ms),
            updated_at: rfc3339_ms(r.updated_at_ms),
            finished_at: r.finished_at_ms.map(rfc3339_ms),
            trace_id: r.trace_id,
            error: r.error,
        }
    }
}

/// Which jobs to count: a search's filters.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CountQuery {
    /// The job's status now.
    pub status: Option<ListStatus>,
    /// The error type of its last failed attempt.
    #[param(min_length = 1, max_length = 100)]
    pub error_type: Option<String>,
    /// Its priority.
    pub priority: Option<Priority>,
    /// The batch it was sent in.
    #[param(min_length = 1, max_length = 128)]
    pub batch_id: Option<String>,
    /// The start of its city's name, any case.
    #[param(min_length = 1, max_length = 100)]
    pub place: Option<String>,
    /// Its coordinates in this box: `west,south,east,north`.
    #[param(pattern = "^-?[0-9]{1,3}(\\.[0-9]{1,12})?(,-?[0-9]{1,3}(\\.[0-9]{1,12})?){3}$")]
    pub bbox: Option<String>,
    /// Queued at or after (RFC 3339).
    #[param(format = DateTime)]
    pub queued_after: Option<String>,
    /// Queued before (RFC 3339).
    #[param(format = DateTime)]
    pub queued_before: Option<String>,
}

/// How many jobs a search matches.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobCount {
    /// Jobs matching now.
    pub count: u64,
}

/// Count the jobs a search matches
///
/// The filters of `GET /v1/jobs`, every page of them counted: what a bulk
/// action on them would reach now.
#[utoipa::path(
    get,
    path = "/v1/jobs/count",
    tag = "jobs",
    params(CountQuery),
    responses(
        (status = 200, description = "How many jobs match", body = JobCount),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 422, response = openapi::UnprocessableEntity),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn count_jobs(
    State(state): State<AppState>,
    query: Result<Query<CountQuery>, QueryRejection>,
) -> Result<Json<JobCount>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let search = BulkFilter {
        status: q.status,
        error_type: q.error_type,
        priority: q.priority,
        batch_id: q.batch_id,
        place: q.place,
        bbox: q.bbox,
        queued_after: q.queued_after,
        queued_before: q.queued_before,
    }
    .query()?;
    Ok(Json(JobCount {
        count: state.queue.count(&search).await?,
    }))
}

/// Start a bulk action
///
/// Cancels, re-drives or deletes every job the filter matches (count them
/// first with `GET /v1/jobs/count`). It runs in the background, 100 jobs
/// a page; follow it at the `Location` answered, stop it with
/// `POST /v1/jobs/bulk/{id}/stop`.
#[utoipa::path(
    post,
    path = "/v1/jobs/bulk",
    tag = "jobs",
    request_body(content = BulkRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Started", body = BulkView,
            headers(("location" = String, description = "Where to follow it"))),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 415, response = openapi::UnsupportedMediaType),
        (status = 422, response = openapi::UnprocessableEntity),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn start_bulk(
    State(state): State<AppState>,
    body: Result<Json<BulkRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    if let Some((name, _)) = req.filter.iter().find(|(_, v)| v.is_null()) {
        return Err(ApiError::Invalid(format!(
            "filter.{name} is null: leave a filter out to match every job"
        )));
    }
    let filter: BulkFilter = serde_json::from_value(serde_json::Value::Object(req.filter))
        .map_err(|e| ApiError::Invalid(format!("filter: {e}")))?;
    let query = filter.query()?;
    let total = state.queue.count(&query).await?;
    let action: BulkAction = req.action.into();
    let id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!(
        "bulk",
        otel.name = %format!("bulk {}", action.as_str()),
        job.bulk.id = %id,
        job.bulk.action = action.as_str(),
        job.bulk.total = total,
        job.bulk.done = tracing::field::Empty,
        job.bulk.skipped = tracing::field::Empty,
        job.bulk.state = tracing::field::Empty,
    );
    let trace_id = span.context().span().span_context().trace_id();
    let now = now_ms();
    let run = BulkRun {
        id: id.clone(),
        action,
        filter: serde_json::to_string(&filter).unwrap_or_default(),
        state: BulkState::Running,
        total,
        done: 0,
        skipped: 0,
        started_at_ms: now,
        updated_at_ms: now,
        finished_at_ms: None,
        trace_id: (trace_id != opentelemetry::trace::TraceId::INVALID)
            .then(|| trace_id.to_string()),
        error: None,
    };
    state.queue.bulk_save(&run).await?;
    tracing::info!(bulk.id = %id, action = action.as_str(), total, "bulk action started");
    tokio::spawn(run_bulk(state, run.clone(), query).instrument(span));
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/jobs/bulk/{id}"))],
        Json(BulkView::from(run)),
    )
        .into_response())
}

/// Goes through every job `query` finds, a page at a time, until the end
/// or until asked to stop; keeps `run`'s progress in Redis.
async fn run_bulk(state: AppState, mut run: BulkRun, query: JobQuery) {
    let mut cursor: Option<String> = None;
    let mut page_no = 0u64;
    let (end, error) = loop {
        match state.queue.bulk_run(&run.id).await {
            Ok(Some(now)) if now.state == BulkState::Stopping => break (BulkState::Stopped, None),
            Ok(_) => {}
            Err(e) => break (BulkState::Failed, Some(e.to_string())),
        }
        let page = match state.queue.search(&query, cursor.as_deref(), PAGE).await {
            Ok(page) => page,
            Err(e) => break (BulkState::Failed, Some(e.to_string())),
        };
        if !page.jobs.is_empty() {
            page_no += 1;
            let span = tracing::info_span!(
                "bulk page",
                otel.name = %format!("bulk {} page", run.action.as_str()),
                job.bulk.page = page_no,
                messaging.batch.message_count = page.jobs.len() as u64,
            );
            // A link to the trace of every job it touches.
            for job in &page.jobs {
                let cx = state
                    .propagation
                    .extract_job(job.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                let linked = cx.span().span_context().clone();
                if linked.is_valid() {
                    span.add_link(linked);
                }
            }
            let acted = act(&state, run.action, &page.jobs).instrument(span).await;
            run.done += acted.0;
            run.skipped += acted.1;
        }
        run.updated_at_ms = now_ms();
        if let Err(e) = state.queue.bulk_progress(&run).await {
            break (BulkState::Failed, Some(e.to_string()));
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break (BulkState::Done, None),
        }
    };
    run.state = end;
    run.error = error;
    run.finished_at_ms = Some(now_ms());
    run.updated_at_ms = now_ms();
    let current = tracing::Span::current();
    current.record("job.bulk.done", run.done);
    current.record("job.bulk.skipped", run.skipped);
    current.record("job.bulk.state", end.as_str());
    if let Some(e) = &run.error {
        tracing::error!(bulk.id = %run.id, error = %e, "bulk action failed");
    } else {
        tracing::info!(bulk.id = %run.id, done = run.done, skipped = run.skipped, state = end.as_str(), "bulk action ended");
    }
    if let Err(e) = state.queue.bulk_save(&run).await {
        tracing::error!(bulk.id = %run.id, error = %e, "the bulk action's end could not be recorded");
    }
}

/// Does `action` to each of `jobs`: answers how many it acted on and how
/// many it left as they were.
async fn act(
    state: &AppState,
    action: BulkAction,
    jobs: &[redis_job_queue::JobRecord],
) -> (u64, u64) {
    let (mut done, mut skipped) = (0, 0);
    for job in jobs {
        let acted = match action {
            BulkAction::Cancel => state
                .queue
                .cancel(&job.id)
                .await
                .map(|c| c == Cancelled::Yes),
            BulkAction::Retry => state
                .queue
                .retry(&job.id)
                .await
                .map(|before| before == Some(JobStatus::Failed)),
            BulkAction::Delete => state.queue.delete(&job.id).await.map(|d| d == Deleted::Yes),
        };
        match acted {
            Ok(true) => done += 1,
            Ok(false) => skipped += 1,
            Err(e) => {
                tracing::warn!({ telemetry::attributes::JOB_ID } = %job.id, error = %e, "a bulk action's step failed; the job is skipped");
                skipped += 1;
            }
        }
    }
    (done, skipped)
}

fn bulk_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if redis_job_queue::plausible_id(&id) {
        Ok(id)
    } else {
        Err(ApiError::NotFound(format!("no bulk action {id:?}")))
    }
}

/// A bulk action's progress
#[utoipa::path(
    get,
    path = "/v1/jobs/bulk/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The bulk action's id")),
    responses(
        (status = 200, description = "The action and its progress", body = BulkView),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn bulk_status(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<BulkView>, ApiError> {
    let id = bulk_id(id)?;
    match state.queue.bulk_run(&id).await? {
        Some(run) => Ok(Json(run.into())),
        None => Err(ApiError::NotFound(format!("no bulk action {id:?}"))),
    }
}

/// Stop a bulk action
///
/// It stops after the page it is on (`stopping`, then `stopped`). An
/// action that has ended stays as it is.
#[utoipa::path(
    post,
    path = "/v1/jobs/bulk/{id}/stop",
    tag = "jobs",
    params(("id" = String, Path, description = "The bulk action's id")),
    responses(
        (status = 200, description = "The action, asked to stop", body = BulkView),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn stop_bulk(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<BulkView>, ApiError> {
    let id = bulk_id(id)?;
    match state.queue.bulk_stop(&id).await? {
        Some(run) => {
            tracing::info!(bulk.id = %id, "bulk action asked to stop");
            Ok(Json(run.into()))
        }
        None => Err(ApiError::NotFound(format!("no bulk action {id:?}"))),
    }
}

//! The job routes: enqueue one job, read it, list jobs by status, cancel
//! a job, re-drive failed ones.

use axum::Extension;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use redis_job_queue::{Cancelled, JobStatus, NewJob, QueueError, plausible_id};
use serde_json::Value;
use telemetry::attributes::JOB_ID;
use telemetry::messaging::Sent;
use weather_jobs::WeatherJob;

use crate::auth::Caller;
use crate::views::{self, Job, JobAccepted, JobList, RedriveResult};
use crate::{ApiError, AppState, idempotency, openapi, requests, validate};

/// Enqueue a weather job
///
/// The job continues the caller's trace (from `traceparent` or B3
/// headers) or starts one; its id and trace id come back at once, and
/// `GET /v1/jobs/{id}` follows it. `delay_secs` or `run_at` delays it
/// (`scheduled` until then); `trace` picks how its span relates to this
/// request's. With an `Idempotency-Key`, a repeat of the same request
/// within 24 hours enqueues nothing and answers `200` with the first
/// request's job (`repeat: true`, its status `expired` once its record is
/// gone after the retention); the same key with another body is a `422`.
/// With `API_KEYS`, a key belongs to the api key that sent it.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body(content = requests::NewJob, content_type = "application/json"),
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "Makes the request safe to retry: 1 to 255 printable ASCII characters, unique per job",
            min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")
    ),
    responses(
        (status = 202, description = "Enqueued", body = JobAccepted,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 200, description = "A repeat of an earlier request with this `Idempotency-Key`: its job, nothing enqueued",
            body = JobAccepted,
            headers(
                ("Location" = String, description = "`/v1/jobs/{id}`"),
                ("Idempotent-Replayed" = String, description = "`true`"),
            )),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 415, response = openapi::UnsupportedMediaType),
        (status = 422, response = openapi::UnprocessableEntity),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn create_job(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let key = idempotency::key(&headers)?;
    let Json(body) = body?;
    let job: WeatherJob = validate::job(&body).map_err(ApiError::Invalid)?;
    let options = validate::options(&body, state.max_delay).map_err(ApiError::Invalid)?;
    let mut new = options.apply(NewJob::new(&job)?);
    if let Some(key) = key {
        let caller = caller.as_ref().map(|Extension(c)| c);
        new = idempotency::apply(new, &state.queue.config().name, caller, key, &body);
    }
    let sent = match state.producer.send(new).await {
        Ok(sent) => sent,
        // The key's record outlived its window while the job it made is
        // still kept (the job's id comes from the key): a repeat all the
        // same, of that job.
        Err(QueueError::DuplicateId(id)) if key.is_some() => Sent {
            id,
            repeat: true,
            trace_id: None,
        },
        Err(e) => return Err(e.into()),
    };
    let location = format!("/v1/jobs/{}", sent.id);
    if sent.repeat {
        tracing::info!({ JOB_ID } = %sent.id, "repeated request: the job exists");
        // Where the first request's job is now; once its record is gone
        // (after the retention), its outcome is no longer known.
        let record = state.queue.status(&sent.id).await?;
        let (status, trace_id) = match record {
            Some(record) => (
                record.status.into(),
                sent.trace_id
                    .or_else(|| record.trace_id().map(str::to_owned)),
            ),
            None => (views::JobStatus::Expired, sent.trace_id),
        };
        let accepted = JobAccepted {
            id: sent.id,
            status,
            repeat: true,
            trace_id,
        };
        return Ok((
            StatusCode::OK,
            [
                (header::LOCATION, location),
                (
                    HeaderName::from_static("idempotent-replayed"),
                    "true".into(),
                ),
            ],
            Json(accepted),
        )
            .into_response());
    }
    tracing::info!({ JOB_ID } = %sent.id, "job queued");
    let accepted = JobAccepted {
        id: sent.id,
        status: views::JobStatus::pushed(options.delay),
        repeat: false,
        trace_id: sent.trace_id,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(accepted),
    )
        .into_response())
}

/// Read a job's status
///
/// Its status, attempts, trace id, and its result or error once finished.
/// Finished jobs are kept for `JOB_RETENTION_SECS`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The id `POST /v1/jobs` answered")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    )
)]
pub(crate) async fn job_status(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Job>, ApiError> {
    let id = job_id(id)?;
    Ok(Json(current_view(&state, &id).await?))
}

/// The job id of a path; one that does not decode (`%FF`) or could not
/// be an id names no job.
fn job_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let id = id.map_or_else(|_| String::new(), |Path(id)| id);
    if plausible_id(&id) {
        Ok(id)
    } else {
        Err(unknown_job(&id))
    }
}

/// Job `id` as it is now.
async fn current_view(state: &AppState, id: &str) -> Result<Job, ApiError> {
    let record = state
        .queue
        .status(id)
        .await?
        .ok_or_else(|| unknown_job(id))?;
    Ok(record.into())
}

fn unknown_job(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no job with id {id:?} (finished jobs are kept for a limited time)"
    ))
}

/// Cancel a job
///
/// A scheduled or queued job is cancelled and will not run; one that has
/// started or finished is left as it is (`409`).
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The id `POST /v1/jobs` answered")),
    responses(
        (status = 200, description = "Cancelled: the job, now `cancelled`", body = Job),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 409, response = openapi::Conflict),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Job>, ApiError> {
    let id = job_id(id)?;
    match state.queue.cancel(&id).await? {
        Cancelled::Yes => {
            tracing::info!({ JOB_ID } = %id, "job cancelled");
            Ok(Json(current_view(&state, &id).await?))
        }
        Cancelled::TooLate(status) => Err(ApiError::Conflict(format!(
            "job {id} is {}: only scheduled or queued jobs can be cancelled",
            status.as_str()
        ))),
        Cancelled::Unknown => Err(unknown_job(&id)),
    }
}

/// List jobs by status, or search them
///
/// With `status` alone: the jobs of that status, in its own order. With
/// any other filter: a search of every job (any status, cancelled too)
/// matching them all, by the time it was queued, newest first unless
/// `order=asc`; the status is the job's status now. One page at a time:
/// pass `next_cursor` back as `cursor` for the next. A search's page may
/// hold fewer jobs than `limit` and still have a `next_cursor`: each page
/// looks at a bounded number of jobs, so it answers quickly however rare
/// the matches.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    params(requests::ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, response = openapi::BadRequest),
        (status = 422, response = openapi::UnprocessableEntity),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    )
)]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    query: Result<Query<requests::ListQuery>, QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::BadRequest(format!(
            "{}; list with ?status=scheduled|queued|running|succeeded|failed, or search with \
             status, error_type, priority, batch_id, place, bbox, queued_after, queued_before \
             and order; and optionally &limit=1..500 and &cursor=",
            e.body_text()
        ))
    })?;
    let limit = match q.limit {
        None => 50,
        Some(n @ 1..=500) => usize::from(n),
        Some(n) => {
            return Err(ApiError::Invalid(format!(
                "limit must be 1 to 500, not {n}"
            )));
        }
    };
    let page = match q.status {
        Some(status) if !q.is_search() => {
            state
                .queue
                .list(status.into(), q.cursor.as_deref(), limit)
                .await
        }
        _ => {
            let search = crate::search::job_query(&q)?;
            state
                .queue
                .search(&search, q.cursor.as_deref(), limit)
                .await
        }
    }
    .map_err(|e| match e {
        QueueError::Invalid(why) => ApiError::Invalid(why),
        other => other.into(),
    })?;
    Ok(Json(JobList {
        jobs: page.jobs.into_iter().map(Job::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Re-drive a failed job
///
/// The job runs again as its next attempt, with a fresh attempt budget;
/// the new attempt's span links to the failed one.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    tag = "jobs",
    params(("id" = String, Path, description = "The id of a failed job")),
    responses(
        (status = 202, description = "Queued again: the job", body = Job),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 409, response = openapi::Conflict),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn retry_job(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    match state.queue.retry(&id).await? {
        Some(JobStatus::Failed) => {
            tracing::info!({ JOB_ID } = %id, "failed job re-driven");
            Ok((StatusCode::ACCEPTED, Json(current_view(&state, &id).await?)).into_response())
        }
        Some(status) => Err(ApiError::Conflict(format!(
            "job {id} is {}: only failed jobs can be re-driven",
            status.as_str()
        ))),
        None => Err(unknown_job(&id)),
    }
}

/// Re-drive failed jobs
///
/// All failed jobs, oldest first, or only those of one `error_type`; at
/// most `limit` per call (`more` says to call again).
#[utoipa::path(
    post,
    path = "/v1/jobs/retry",
    tag = "jobs",
    request_body(content = requests::RedriveRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued again", body = RedriveResult),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 415, response = openapi::UnsupportedMediaType),
        (status = 422, response = openapi::UnprocessableEntity),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn redrive_failed(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let (error_type, limit) = validate::redrive(&body).map_err(ApiError::Invalid)?;
    let done = state
        .queue
        .redrive_failed(error_type.as_deref(), limit)
        .await?;
    tracing::info!(
        redriven = done.redriven,
        more = done.more,
        "failed jobs re-driven"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(RedriveResult {
            redriven: done.redriven,
            more: done.more,
        }),
    )
        .into_response())
}

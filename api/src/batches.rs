//! The batch routes: enqueue up to 1,000 jobs in one PRODUCER span, and
//! read a batch's jobs together.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use redis_job_queue::{NewJob, plausible_id};
use serde_json::Value;
use telemetry::messaging::TraceMode;

use crate::validate::JobOptions;
use crate::views::{Batch, BatchAccepted, BatchCounts, BatchItem, Job, JobStatus};
use crate::{ApiError, AppState, openapi, requests, validate};

/// Most jobs one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// Largest batch body accepted: 1,000 jobs of up to 1 KiB each.
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;

/// Enqueue jobs together
///
/// Up to 1,000 jobs, each as `POST /v1/jobs` takes one, in one PRODUCER
/// span (`messaging.batch.message_count`). Each job is checked on its own:
/// the answer says, per job, its id or why it was refused. Each job's
/// CONSUMER span links to the batch's PRODUCER span; by default (`trace`:
/// `link`) each job has a trace of its own, with `parent` they all hang
/// off the batch's trace.
#[utoipa::path(
    post,
    path = "/v1/jobs/batch",
    tag = "jobs",
    request_body(content = requests::NewBatch, content_type = "application/json"),
    responses(
        (status = 202, description = "Some or all jobs enqueued; per job, its id or why it was refused",
            body = BatchAccepted),
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
pub(crate) async fn create_batch(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let batch = validate::batch(&body, MAX_BATCH).map_err(ApiError::Invalid)?;
    let batch_id = uuid::Uuid::now_v7().to_string();
    // What the batch gives the jobs that name none; fan-out defaults to a
    // trace per job.
    let defaults = JobOptions {
        delay: None,
        trace: Some(batch.trace.unwrap_or(TraceMode::Link)),
        priority: batch.priority,
    };
    let mut results = Vec::with_capacity(batch.jobs.len());
    let mut jobs = Vec::new();
    for (index, item) in batch.jobs.iter().enumerate() {
        let checked = validate::job(item)
            .and_then(|job| validate::options(item, state.max_delay).map(|options| (job, options)));
        let (job, options) = match checked {
            Ok((job, options)) => (job, options.or(defaults)),
            Err(error) => {
                results.push(BatchItem {
                    index,
                    id: None,
                    status: None,
                    error: Some(error),
                });
                continue;
            }
        };
        let new = options.apply(NewJob::new(&job)?.in_batch(&batch_id));
        results.push(BatchItem {
            index,
            id: Some(new.id().to_owned()),
            status: Some(JobStatus::pushed(options.delay)),
            error: None,
        });
        jobs.push(new);
    }
    if jobs.is_empty() {
        let first = results
            .first()
            .and_then(|r| r.error.clone())
            .unwrap_or_default();
        return Err(ApiError::Invalid(format!(
            "no job of the batch is valid; job 0: {first}"
        )));
    }
    let sent = state.producer.send_batch(jobs).await?;
    // Fresh ids are never taken; a refusal here would be a broken id source.
    let mut enqueued = sent.enqueued.into_iter();
    for r in results.iter_mut().filter(|r| r.id.is_some()) {
        if enqueued.next() == Some(false) {
            r.error = Some("a job with this id already exists".into());
            r.id = None;
            r.status = None;
        }
    }
    let accepted = results.iter().filter(|r| r.id.is_some()).count();
    tracing::info!(
        batch.id = %batch_id,
        accepted,
        refused = results.len() - accepted,
        "batch queued"
    );
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/batches/{batch_id}"))],
        Json(BatchAccepted {
            batch_id,
            trace_id: sent.trace_id,
            accepted,
            refused: results.len() - accepted,
            results,
        }),
    )
        .into_response())
}

/// Read a batch
///
/// The jobs `POST /v1/jobs/batch` sent together, in their order, with how
/// many are in each status. A batch is kept as long as its jobs are.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The `batch_id` `POST /v1/jobs/batch` answered")),
    responses(
        (status = 200, description = "The batch", body = Batch),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::ServiceUnavailable),
    )
)]
pub(crate) async fn batch_status(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Batch>, ApiError> {
    let id = id.map_or_else(|_| String::new(), |Path(id)| id);
    let unknown = || {
        ApiError::NotFound(format!(
            "no batch with id {id:?} (batches are kept as long as their jobs)"
        ))
    };
    if !plausible_id(&id) {
        return Err(unknown());
    }
    let records = state
        .queue
        .batch(&id, MAX_BATCH)
        .await?
        .ok_or_else(unknown)?;
    Ok(Json(Batch {
        counts: BatchCounts::of(&records),
        jobs: records.into_iter().map(Job::from).collect(),
        id,
    }))
}

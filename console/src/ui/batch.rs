//! A batch's page: the jobs one `POST /v1/jobs/batch` sent, shown
//! together, their statuses following as they run.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use redis_job_queue::{JobRecord, JobStatus, RedisQueue};
use weather_jobs::problem;

use super::frame::{no_queue, page as frame};
use redis_job_queue::{plausible_id, rfc3339_ms};

use super::Ui;

/// Most jobs one batch can hold (the api's limit).
const MAX_JOBS: usize = 1000;

pub(crate) async fn page(State(ui): Ui, Path(id): Path<String>) -> Response {
    let Some(queue) = ui.queue() else {
        return no_queue("Batch", "");
    };
    match body(&queue, &id).await {
        Ok(Some(body)) => frame(
            &format!("Batch {id}"),
            "",
            html! { div #live data-refresh=(format!("/ui/batches/{id}/fragment")) data-live="poll" { (body) } },
        ),
        Ok(None) => {
            let mut res = frame(
                "Batch not found",
                "",
                html! { p { "No batch with id " code { (id) } " (a batch is kept as long as its jobs)." } },
            );
            *res.status_mut() = StatusCode::NOT_FOUND;
            res
        }
        Err(res) => res,
    }
}

/// The live part of a batch's page.
pub(crate) async fn fragment(State(ui): Ui, Path(id): Path<String>) -> Response {
    let Some(queue) = ui.queue() else {
        return no_queue("Batch", "");
    };
    match body(&queue, &id).await {
        Ok(Some(body)) => body.into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such batch"),
        Err(res) => res,
    }
}

/// The batch's summary and its jobs; `None` for an unknown batch.
async fn body(queue: &RedisQueue, id: &str) -> Result<Option<Markup>, Response> {
    if !plausible_id(id) {
        return Ok(None);
    }
    let jobs = queue.batch(id, MAX_JOBS).await.map_err(|e| {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the job queue is unavailable: {e}"),
        )
    })?;
    Ok(jobs.map(|jobs| render(&jobs)))
}

fn render(jobs: &[JobRecord]) -> Markup {
    let counts: Vec<(JobStatus, usize)> = JobStatus::ALL
        .into_iter()
        .map(|s| (s, jobs.iter().filter(|j| j.status == s).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    html! {
        section aria-labelledby="batch-h" {
            h2 #batch-h { "Its jobs" }
            p #batch-counts {
                (jobs.len()) " jobs: "
                @for (i, (status, n)) in counts.iter().enumerate() {
                    @if i > 0 { ", " }
                    span class=(format!("status status-{}", status.as_str())) { (n) " " (status.as_str()) }
                }
            }
            table.batch {
                caption { "In the order they were sent" }
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Place" } th scope="col" { "Status" }
                    th scope="col" { "Attempts" } th scope="col" { "Priority" } th scope="col" { "Queued at" } th scope="col" { "Trace" }
                } }
                tbody {
                    @for r in jobs {
                        tr {
                            td data-label="Job" { a href=(format!("/jobs/{}", r.id)) { code { (r.id) } } }
                            td data-label="Place" { (place(r)) }
                            td data-label="Status" { span class=(format!("status status-{}", r.status.as_str())) { (r.status.as_str()) } }
                            td data-label="Attempts" { (r.attempts) " of " (r.max_attempts) }
                            td data-label="Priority" { (r.priority.as_str()) }
                            td data-label="Queued at" { (rfc3339_ms(r.enqueued_at_ms)) }
                            td data-label="Trace" {
                                @if let Some(t) = r.trace_id() { a href=(format!("/jobs/{}#trace-h", r.id)) { code { (t) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The place a job asks about: its city, or its coordinates.
fn place(r: &JobRecord) -> String {
    let p = &r.payload["place"];
    match (
        p["city"].as_str(),
        p["latitude"].as_f64(),
        p["longitude"].as_f64(),
    ) {
        (Some(city), _, _) => city.to_owned(),
        (None, Some(lat), Some(lon)) => format!("{lat}, {lon}"),
        _ => r.payload.to_string(),
    }
}

//! What the console's buttons do: cancel a job, re-drive one or many
//! failed jobs. Each is a plain form post that the console passes on to
//! the api, then sends the browser back to the page it came from (`303`),
//! so the buttons work without the page's script. An api refusal (a job
//! that started meanwhile: `409`) is shown as the api's problem.
//!
//! Also the page of what waits for its time: delayed jobs with the time
//! each will run, and the schedules with their last and next runs.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use redis_job_queue::{JobStatus, RedisQueue};
use serde::Deserialize;

use super::pages::{Ui, pass_on, rfc3339, unreachable_api};
use telemetry::http_server::problem;

/// Passes a request on to the api; on success sends the browser to
/// `back`, else answers what the api said.
async fn forward(ui: &super::UiState, req: reqwest::RequestBuilder, back: &str) -> Response {
    match req.send().await {
        Ok(res) if res.status().is_success() => {
            (StatusCode::SEE_OTHER, [(header::LOCATION, back.to_owned())]).into_response()
        }
        Ok(res) => pass_on(res).await,
        Err(e) => unreachable_api(ui, &e),
    }
}

/// Ids the console links to; others are refused before the api is asked.
fn plausible(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `POST /ui/jobs/{id}/cancel`.
pub(crate) async fn cancel(State(ui): Ui, Path(id): Path<String>) -> Response {
    if !plausible(&id) {
        return problem(StatusCode::NOT_FOUND, "no such job");
    }
    let req = ui.api.delete(format!("{}/v1/jobs/{id}", ui.api_url));
    forward(&ui, req, &format!("/jobs/{id}")).await
}

/// `POST /ui/jobs/{id}/retry`.
pub(crate) async fn retry(State(ui): Ui, Path(id): Path<String>) -> Response {
    if !plausible(&id) {
        return problem(StatusCode::NOT_FOUND, "no such job");
    }
    let req = ui.api.post(format!("{}/v1/jobs/{id}/retry", ui.api_url));
    forward(&ui, req, &format!("/jobs/{id}")).await
}

/// The bulk re-drive form: an error type, or none for every failed job.
#[derive(Debug, Deserialize)]
pub(crate) struct RetryMany {
    #[serde(default)]
    error_type: String,
}

/// `POST /ui/retry`.
pub(crate) async fn retry_many(State(ui): Ui, Form(form): Form<RetryMany>) -> Response {
    let body = match form.error_type.trim() {
        "" => serde_json::json!({}),
        t => serde_json::json!({ "error_type": t }),
    };
    let req = ui
        .api
        .post(format!("{}/v1/jobs/retry", ui.api_url))
        .json(&body);
    forward(&ui, req, "/failed").await
}

/// A button that posts to `action` (a form of its own, so it works
/// without script).
pub(crate) fn button(action: &str, label: &str) -> Markup {
    html! {
        form.action method="post" action=(action) {
            button type="submit" { (label) }
        }
    }
}

/// Buttons above the failed jobs: re-drive them all, or those of one
/// error type.
pub(crate) fn retry_buttons(error_types: &[String]) -> Markup {
    html! {
        div.actions {
            form.action method="post" action="/ui/retry" {
                button type="submit" { "Retry all failed jobs" }
            }
            @for t in error_types {
                form.action method="post" action="/ui/retry" {
                    input type="hidden" name="error_type" value=(t);
                    button type="submit" { "Retry those failed with " code { (t) } }
                }
            }
        }
    }
}

/// The delayed jobs and the schedules.
pub(crate) async fn scheduled_body(queue: &RedisQueue) -> Markup {
    let jobs = queue.list(JobStatus::Scheduled, None, 50).await;
    let schedules = schedules(queue).await;
    html! {
        section aria-labelledby="delayed-h" {
            h2 #delayed-h { "Delayed jobs" }
            @match &jobs {
                Err(e) => p.notice role="status" { "The delayed jobs could not be read: " (e.to_string()) },
                Ok(page) if page.jobs.is_empty() => p { "No job waits for its time." },
                Ok(page) => table.delayed {
                    caption { "The next 50 jobs to run, soonest first (retries too)" }
                    thead { tr { th scope="col" { "Job" } th scope="col" { "Runs at" } th scope="col" { "Attempts" } th scope="col" { "" } } }
                    tbody {
                        @for r in &page.jobs {
                            tr {
                                td data-label="Job" { a href=(format!("/jobs/{}", r.id)) { code { (r.id) } } }
                                td data-label="Runs at" { (r.run_at_ms.map(rfc3339).unwrap_or_default()) }
                                td data-label="Attempts" { (r.attempts) }
                                td { (button(&format!("/ui/jobs/{}/cancel", r.id), "Cancel")) }
                            }
                        }
                    }
                },
            }
        }
        section aria-labelledby="schedules-h" {
            h2 #schedules-h { "Schedules" }
            @match &schedules {
                Err(e) => p.notice role="status" { "The schedules could not be read: " (e) },
                Ok(list) if list.is_empty() => p { "No schedule has run (workers take them from SCHEDULES)." },
                Ok(list) => table.schedules {
                    thead { tr { th scope="col" { "Schedule" } th scope="col" { "Cron" } th scope="col" { "Place" } th scope="col" { "Last run" } th scope="col" { "Next run" } } }
                    tbody {
                        @for s in list {
                            tr {
                                td data-label="Schedule" { code { (s.name) } }
                                td data-label="Cron" { code { (s.cron) } }
                                td data-label="Place" { (s.city) }
                                td data-label="Last run" { (s.last_ms.map(rfc3339).unwrap_or_default()) }
                                td data-label="Next run" { (s.next_ms.map(rfc3339).unwrap_or_default()) }
                            }
                        }
                    }
                },
            }
        }
    }
}

/// A schedule as the workers' scheduler keeps it in Redis.
#[derive(Debug, Default)]
struct ScheduleRow {
    name: String,
    cron: String,
    city: String,
    last_ms: Option<u64>,
    next_ms: Option<u64>,
}

/// The schedules, from the hash the scheduler writes
/// (`{name}:cron`, `:city`, `:last`, `:next`).
async fn schedules(queue: &RedisQueue) -> Result<Vec<ScheduleRow>, String> {
    let key = &queue.schedule_keys().state;
    let mut conn = queue.connection();
    let fields: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows: std::collections::BTreeMap<String, ScheduleRow> = Default::default();
    for (field, value) in fields {
        let Some((name, what)) = field.rsplit_once(':') else {
            continue;
        };
        let row = rows.entry(name.to_owned()).or_insert_with(|| ScheduleRow {
            name: name.to_owned(),
            ..ScheduleRow::default()
        });
        match what {
            "cron" => row.cron = value,
            "city" => row.city = value,
            "last" => row.last_ms = value.parse().ok(),
            "next" => row.next_ms = value.parse().ok(),
            _ => {}
        }
    }
    Ok(rows.into_values().filter(|r| !r.cron.is_empty()).collect())
}

//! The console's pages (Submit, a job, Queues, Workers, Failed jobs,
//! Scheduled, Service map, Alerts), and the live parts their script
//! refreshes: a job's waterfall, each page's fragment.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use redis_job_queue::{JobRecord, JobStatus, RedisQueue};
use serde_json::Value;
use weather_jobs::problem;

use super::actions::{button, retry_buttons};
use super::charts::sparkline;
use super::frame::{counted, no_queue, page};
use super::waterfall::{self, millis};
use redis_job_queue::{plausible_id, rfc3339_ms};

use super::{Ui, UiState, attempts, map, scheduled, shards};
use crate::store::model::{Kind, Span};

// ---- Submit -------------------------------------------------------------

pub(crate) async fn submit() -> Response {
    if !crate::auth::current().may_act() {
        return page(
            "Submit jobs",
            "/",
            html! {
                p.notice role="status" { "You are logged in as a viewer: an operator submits jobs. Every page and trace is yours to read." }
            },
        );
    }
    page(
        "Submit jobs",
        "/",
        html! {
            form #submit {
                p {
                    label for="places" { "Places, one a line: a city, or latitude, longitude" }
                    textarea #places name="places" rows="4" required { "Berlin\nOslo\n52.52, 13.41" }
                }
                p {
                    label for="units" { "Units" }
                    select #units name="units" {
                        option value="metric" { "metric (°C, km/h)" }
                        option value="imperial" { "imperial (°F, mph)" }
                    }
                }
                p {
                    label for="priority" { "Priority" }
                    select #priority name="priority" {
                        option value="high" { "high" }
                        option value="normal" selected { "normal" }
                        option value="low" { "low" }
                    }
                }
                button type="submit" { "Submit" }
            }
            p.hint { "Each job's trace starts here, in your browser: the page sends a " code { "traceparent" } " with the job and records its own span." }
            table #jobs aria-live="polite" {
                caption { "Jobs submitted from this page" }
                thead { tr { th scope="col" { "Place" } th scope="col" { "Job" } th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Trace" } } }
                tbody {}
            }
        },
    )
}

// ---- Job ----------------------------------------------------------------

async fn lookup(ui: &UiState, id: &str) -> Result<Option<JobRecord>, Response> {
    let Some(queue) = ui.queue() else {
        return Err(no_queue("Job", ""));
    };
    if !plausible_id(id) {
        return Ok(None);
    }
    queue.status(id).await.map_err(|e| {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the job queue is unavailable: {e}"),
        )
    })
}

pub(crate) async fn job(
    State(ui): Ui,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let rows = waterfall::rows_asked(&query);
    let record = match lookup(&ui, &id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            let mut res = page(
                "Job not found",
                "",
                html! { p { "No job with id " code { (id) } " (finished jobs are kept for a limited time)." } },
            );
            *res.status_mut() = StatusCode::NOT_FOUND;
            return res;
        }
        Err(res) => return res,
    };
    let trace = job_spans(&ui, &record).await.unwrap_or_default();
    let waited = record
        .started_at_ms
        .map(|s| s.saturating_sub(record.enqueued_at_ms));
    let ran = record
        .finished_at_ms
        .zip(record.started_at_ms)
        .map(|(f, s)| f.saturating_sub(s));
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    page(
        &format!("Job {}", record.id),
        "",
        html! {
            section aria-labelledby="job-h" {
                h2 #job-h { "The job" }
                dl.job {
                    dt { "Status" } dd { span class=(format!("status status-{}", record.status.as_str())) #status { (record.status.as_str()) } }
                    @if let Some(error) = &record.error { dt { "Error" } dd.err { (error) } }
                    dt { "Attempts" } dd { (record.attempts) " of " (record.max_attempts) }
                    @if record.deferrals > 0 {
                        dt { "Deferred" }
                        dd #deferred {
                            (counted(record.deferrals.into(), "time", "times")) ", "
                            (millis(record.deferred_ms.saturating_mul(1000))) " in all; not attempts"
                            @if let Some(why) = &record.deferred_reason { br; small { (why) } }
                        }
                    }
                    dt { "Priority" } dd #priority { (record.priority.as_str()) }
                    @if let Some(b) = &record.batch { dt { "Batch" } dd { a #batch href=(format!("/batches/{b}")) { code { (b) } } } }
                    dt { "Queued at" } dd { (rfc3339_ms(record.enqueued_at_ms)) }
                    @if let (JobStatus::Scheduled, Some(at)) = (record.status, record.run_at_ms) {
                        dt { "Runs at" } dd #runs-at { (rfc3339_ms(at)) }
                    }
                    @if let Some(w) = waited { dt { "Waited" } dd { (millis(w * 1000)) } }
                    @if let Some(r) = ran { dt { "Ran" } dd { (millis(r * 1000)) } }
                    @if let Some(w) = &record.worker { dt { "Worker" } dd { code { (w) } } }
                    dt { "Payload" } dd { code { (record.payload.to_string()) } }
                }
                @match record.status {
                    JobStatus::Scheduled | JobStatus::Queued => (button(&format!("/ui/jobs/{}/cancel", record.id), "Cancel this job")),
                    JobStatus::Failed => (button(&format!("/ui/jobs/{}/retry", record.id), "Retry this job")),
                    _ => {}
                }
            }
            section aria-labelledby="trace-h" {
                h2 #trace-h { "Its trace" }
                div #trace data-refresh=(format!("/ui/jobs/{}/trace?spans={rows}", record.id)) data-live=(if record.is_finished() { "settle" } else { "live" }) {
                    (attempts::attempts(&trace, &record.id))
                    (waterfall::render(&trace, ui.zipkin_ui.as_deref(), rows, &format!("/jobs/{}", record.id)))
                }
            }
            @if let Some(result) = &record.result {
                section aria-labelledby="result-h" {
                    h2 #result-h { "Its result" }
                    pre { (pretty(result)) }
                }
            }
        },
    )
}

/// The spans of a job's trace: the request's trace it carries, and, when
/// the job ran in a trace of its own (link mode: no CONSUMER span of it in
/// the request's), that trace too.
async fn job_spans(ui: &UiState, record: &JobRecord) -> Result<Vec<Span>, String> {
    let mut spans = match record.trace_id() {
        Some(t) => ui.source.trace(&ui.http, t).await?,
        None => Vec::new(),
    };
    let ran_here = spans.iter().any(|s| {
        s.kind == Some(Kind::Consumer)
            && s.tags.get("job.id").map(String::as_str) == Some(&record.id)
    });
    if record.attempts > 0 && !ran_here {
        let own = ui
            .source
            .job_traces(&ui.http, &record.id, record.enqueued_at_ms)
            .await?;
        for s in own {
            if !spans
                .iter()
                .any(|x| x.trace_id == s.trace_id && x.id == s.id)
            {
                spans.push(s);
            }
        }
    }
    Ok(spans)
}

/// The waterfall of a job's trace, for the job page to refresh.
pub(crate) async fn job_trace(
    State(ui): Ui,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let rows = waterfall::rows_asked(&query);
    let record = match lookup(&ui, &id).await {
        Ok(Some(r)) => r,
        Ok(None) => return problem(StatusCode::NOT_FOUND, "no such job"),
        Err(res) => return res,
    };
    let trace = match job_spans(&ui, &record).await {
        Ok(spans) => spans,
        Err(e) => return problem(StatusCode::BAD_GATEWAY, &e),
    };
    let mut res = html! {
        (attempts::attempts(&trace, &record.id))
        (waterfall::render(&trace, ui.zipkin_ui.as_deref(), rows, &format!("/jobs/{}", record.id)))
    }
    .into_response();
    res.headers_mut().insert(
        "x-job-finished",
        if record.is_finished() {
            "true"
        } else {
            "false"
        }
        .parse()
        .unwrap_or(header::HeaderValue::from_static("false")),
    );
    res
}

// ---- Queues, workers, failed jobs, map --------------------------------

async fn queues_body(ui: &UiState, queue: &RedisQueue) -> Markup {
    let stats = match queue.stats().await {
        Ok(s) => s,
        Err(e) => {
            return html! { p.notice role="status" { "The queue could not be read: " (e.to_string()) } };
        }
    };
    let samples: Vec<_> = ui
        .samples
        .lock()
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    let rate: Vec<Option<f64>> = samples.iter().map(|s| Some(s.per_second)).collect();
    let p50: Vec<Option<f64>> = samples.iter().map(|s| s.p50_ms).collect();
    let p99: Vec<Option<f64>> = samples.iter().map(|s| s.p99_ms).collect();
    let name = &queue.config().name;
    html! {
        @if stats.paused {
            p.notice #queue-paused role="status" { "Paused: no worker starts a job of this queue until it is resumed. Jobs sent meanwhile, delayed jobs coming due and schedules firing wait in it; jobs that were running finish." }
            (button(&format!("/ui/queues/{name}/resume"), "Resume the queue"))
        } @else {
            (button(&format!("/ui/queues/{name}/pause"), "Pause the queue"))
        }
        table.stats {
            caption { "Queue " code { (queue.config().name) } }
            thead { tr { th scope="col" { "Waiting" } th scope="col" { "In flight" } th scope="col" { "Delayed" } th scope="col" { "Failed" } th scope="col" { "Live workers" } } }
            tbody { tr {
                td data-label="Waiting" { (stats.waiting) }
                td data-label="In flight" { (stats.in_flight) }
                td data-label="Delayed" { (stats.delayed) }
                td data-label="Failed" { (stats.failed) }
                td data-label="Live workers" { (stats.live_consumers) }
            } }
        }
        p {
            (counted(stats.enqueued_total, "job", "jobs")) " enqueued, " (stats.succeeded_total) " succeeded, " (stats.failed_total) " failed, "
            (counted(stats.retried_total, "attempt", "attempts")) " retried, "
            (counted(stats.deferred_total, "run", "runs")) " deferred (not attempts), since the queue began."
        }
        (shards::shards_table(queue).await)
        div.charts {
            (sparkline("Jobs finished per second", "/s", &[("rate", "#1f6feb", rate)]))
            (sparkline("Processing time", "ms", &[("p50", "#1a7f37", p50), ("p99", "#cf222e", p99)]))
        }
    }
}

async fn workers_body(queue: &RedisQueue) -> Markup {
    match queue.consumers().await {
        Err(e) => {
            html! { p.notice role="status" { "The workers could not be read: " (e.to_string()) } }
        }
        Ok(list) if list.is_empty() => html! { p { "No worker has joined the queue." } },
        Ok(list) => html! {
            table.workers {
                caption { "Consumers of the queue's group" }
                thead { tr { th scope="col" { "Worker" } th scope="col" { "Heartbeat" } th scope="col" { "Jobs in flight" } th scope="col" { "State" } } }
                tbody {
                    @for c in &list {
                        tr {
                            td data-label="Worker" { code { (c.name) } }
                            td data-label="Heartbeat" { (format!("{:.1} s ago", c.heartbeat_age_ms as f64 / 1000.0)) }
                            td data-label="Jobs in flight" { (c.in_flight) }
                            td data-label="State" { @if c.live { "live" } @else { span.err { "silent" } } }
                        }
                    }
                }
            }
        },
    }
}

async fn failed_body(queue: &RedisQueue) -> Markup {
    match queue.failed_jobs(50).await {
        Err(e) => {
            html! { p.notice role="status" { "The failed jobs could not be read: " (e.to_string()) } }
        }
        Ok(list) if list.is_empty() => html! { p { "No job has failed (within the retention)." } },
        Ok(list) => html! {
            (retry_buttons(&error_types(&list)))
            table.failed {
                caption { "The latest 50 jobs failed for good" }
                thead { tr { th scope="col" { "Job" } th scope="col" { "Failed at" } th scope="col" { "Attempts" } th scope="col" { "Error" } th scope="col" { "Type" } th scope="col" { "Trace" } th scope="col" { "" } } }
                tbody {
                    @for r in &list {
                        tr {
                            td data-label="Job" { a href=(format!("/jobs/{}", r.id)) { code { (r.id) } } }
                            td data-label="Failed at" { (r.finished_at_ms.map(rfc3339_ms).unwrap_or_default()) }
                            td data-label="Attempts" { (r.attempts) }
                            td.err data-label="Error" { (r.error.as_deref().unwrap_or("")) }
                            td data-label="Type" { @if let Some(t) = &r.error_type { code { (t) } } }
                            td data-label="Trace" {
                                @if let Some(t) = r.trace_id() { a href=(format!("/jobs/{}#trace-h", r.id)) { code { (t) } } }
                            }
                            td { (button(&format!("/ui/jobs/{}/retry", r.id), "Retry")) }
                        }
                    }
                }
            }
        },
    }
}

/// The distinct error types of `list`, in order of first appearance.
fn error_types(list: &[JobRecord]) -> Vec<String> {
    let mut types: Vec<String> = Vec::new();
    for t in list.iter().filter_map(|r| r.error_type.as_ref()) {
        if !types.contains(t) {
            types.push(t.clone());
        }
    }
    types
}

/// The newest alerts, read from the alerts service.
async fn alerts_body(ui: &UiState) -> Markup {
    let Some(base) = &ui.alerts_url else {
        return html! { p { "No alerts service is set (" code { "ALERTS_URL" } "): alerts come from the weather events on Kafka, read by the alerts service." } };
    };
    let read = async {
        ui.http
            .get(format!("{base}/v1/alerts?limit=100"))
            .send()
            .await?
            .error_for_status()?
            .json::<Value>()
            .await
    };
    let list = match read.await {
        Ok(page) => page["alerts"].as_array().cloned().unwrap_or_default(),
        Err(e) => {
            return html! { p.notice role="status" { "The alerts service could not be read: " (e.to_string()) } };
        }
    };
    if list.is_empty() {
        return html! { p { "No alert yet: none of the weather events crossed a threshold." } };
    }
    let text = |a: &Value, k: &str| a[k].as_str().unwrap_or_default().to_owned();
    html! {
        table.alerts {
            caption { "The newest 100 alerts, each from a weather job's event" }
            thead { tr { th scope="col" { "Raised at" } th scope="col" { "Kind" } th scope="col" { "Place" } th scope="col" { "Value" } th scope="col" { "Threshold" } th scope="col" { "Job and its trace" } } }
            tbody {
                @for a in &list {
                    @let unit = text(a, "unit");
                    tr {
                        td data-label="Raised at" { (text(a, "raised_at")) }
                        td data-label="Kind" { code { (text(a, "kind")) } }
                        td data-label="Place" { (text(a, "place")) }
                        td data-label="Value" { (format!("{:.1} {unit}", a["value"].as_f64().unwrap_or_default())) }
                        td data-label="Threshold" { (format!("{:.1} {unit}", a["threshold"].as_f64().unwrap_or_default())) }
                        td data-label="Job and its trace" {
                            a href=(format!("/jobs/{}#trace-h", text(a, "event_id"))) { code { (text(a, "event_id")) } }
                        }
                    }
                }
            }
        }
    }
}

async fn fragment_body(ui: &UiState, which: &str) -> Option<Result<Markup, Response>> {
    if which == "map" {
        return Some(Ok(map::body(ui).await));
    }
    if which == "alerts" {
        return Some(Ok(alerts_body(ui).await));
    }
    let queue = ui.queue();
    let body = match (which, &queue) {
        ("queues" | "workers" | "failed" | "scheduled", None) => {
            return Some(Err(no_queue("Queue", "")));
        }
        ("queues", Some(q)) => queues_body(ui, q).await,
        ("workers", Some(q)) => workers_body(q).await,
        ("failed", Some(q)) => failed_body(q).await,
        ("scheduled", Some(q)) => scheduled::body(q).await,
        _ => return None,
    };
    Some(Ok(body))
}

async fn live_page(ui: &UiState, which: &str, title: &str, here: &str) -> Response {
    match fragment_body(ui, which).await {
        Some(Ok(body)) => page(
            title,
            here,
            html! { div #live data-refresh=(format!("/ui/fragment/{which}")) data-live="poll" { (body) } },
        ),
        Some(Err(_)) => no_queue(title, here),
        None => problem(StatusCode::NOT_FOUND, "no such page"),
    }
}

pub(crate) async fn queues(State(ui): Ui) -> Response {
    live_page(&ui, "queues", "Queues", "/queues").await
}

pub(crate) async fn workers(State(ui): Ui) -> Response {
    live_page(&ui, "workers", "Workers", "/workers").await
}

pub(crate) async fn failed(State(ui): Ui) -> Response {
    live_page(&ui, "failed", "Failed jobs", "/failed").await
}

pub(crate) async fn scheduled(State(ui): Ui) -> Response {
    live_page(&ui, "scheduled", "Scheduled", "/scheduled").await
}

pub(crate) async fn map(State(ui): Ui) -> Response {
    live_page(&ui, "map", "Service map", "/map").await
}

pub(crate) async fn alerts(State(ui): Ui) -> Response {
    live_page(&ui, "alerts", "Alerts", "/alerts").await
}

/// A page's live part, for its script to refresh.
pub(crate) async fn fragment(State(ui): Ui, Path(which): Path<String>) -> Response {
    match fragment_body(&ui, &which).await {
        Some(Ok(body)) => body.into_response(),
        Some(Err(res)) => res,
        None => problem(StatusCode::NOT_FOUND, "no such fragment"),
    }
}

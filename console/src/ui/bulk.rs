//! Bulk actions from the Jobs page: cancel, retry or delete everything a
//! search finds. The count comes first (`/jobs/bulk?…`, a page to
//! confirm on), the console passes the confirmed action on to the api
//! (`POST /ui/bulk`), and the action's page follows it as it runs
//! (`/bulk/{id}`), with a Stop button and a link to its trace. Operators
//! only: a viewer sees no button, and the guard refuses their posts.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use redis_job_queue::{BulkAction, BulkRun, RedisQueue, plausible_id, rfc3339_ms};
use serde_json::{Map, Value};
use weather_jobs::problem;

use super::Ui;
use super::actions::{button, csrf_field};
use super::frame::{field, no_queue, page};
use super::jobs::{FIELDS, query_of, time_field};
use super::proxy::{pass_on, unreachable_api};

/// What each action does, and to which jobs, in words.
fn says(action: BulkAction) -> (&'static str, &'static str) {
    match action {
        BulkAction::Cancel => ("Cancel", "jobs that have started are left as they are"),
        BulkAction::Retry => ("Retry", "only failed jobs are run again"),
        BulkAction::Delete => (
            "Delete",
            "only finished jobs (succeeded, failed, cancelled) are deleted",
        ),
    }
}

/// The action a form names.
fn action_of(params: &HashMap<String, String>) -> Option<BulkAction> {
    field(params, "action").and_then(BulkAction::parse)
}

/// The bulk form under the Jobs page's filter bar: the search's filters,
/// an action, and a button to count them first; nothing for a viewer.
pub(crate) fn form(params: &HashMap<String, String>) -> Markup {
    if !crate::auth::current().may_act() {
        return html! {};
    }
    html! {
        form.bulk method="get" action="/jobs/bulk" aria-label="Act on every job found" {
            @for name in FIELDS {
                @if let Some(v) = field(params, name) {
                    input type="hidden" name=(name) value=(v);
                }
            }
            label { "Every job found: "
                select name="action" {
                    option value="retry" { "retry" }
                    option value="cancel" { "cancel" }
                    option value="delete" { "delete" }
                }
            }
            button type="submit" { "Count them first…" }
        }
    }
}

/// `GET /jobs/bulk`: how many jobs the search matches now, and the button
/// that confirms the action on them.
pub(crate) async fn review(
    State(ui): Ui,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(queue) = ui.queue() else {
        return no_queue("Bulk action", "/jobs");
    };
    let (Some(action), Ok(q)) = (action_of(&params), query_of(&params)) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "a bulk action needs an action (cancel, retry or delete) and a search the Jobs page can read",
        );
    };
    let count = match queue.count(&q).await {
        Ok(n) => n,
        Err(e) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the queue could not be searched: {e}"),
            );
        }
    };
    let (verb, rule) = says(action);
    let back = {
        let mut url = form_urlencoded::Serializer::new(String::new());
        for name in FIELDS {
            if let Some(v) = field(&params, name) {
                url.append_pair(name, v);
            }
        }
        format!("/jobs?{}", url.finish())
    };
    page(
        &format!("{verb} {count} jobs?"),
        "/jobs",
        html! {
            p #bulk-count { (count) " jobs match this search now (" (rule) ")." }
            @if crate::auth::current().may_act() && count > 0 {
                form.action method="post" action="/ui/bulk" {
                    (csrf_field())
                    input type="hidden" name="action" value=(action.as_str());
                    @for name in FIELDS {
                        @if let Some(v) = field(&params, name) {
                            input type="hidden" name=(name) value=(v);
                        }
                    }
                    button type="submit" { (verb) " " (count) " jobs" }
                }
            }
            p { a href=(back) { "Back to the search" } }
        },
    )
}

/// `POST /ui/bulk`: starts the confirmed action at the api, then sends
/// the browser to its page.
pub(crate) async fn start(State(ui): Ui, Form(params): Form<HashMap<String, String>>) -> Response {
    let Some(action) = action_of(&params) else {
        return problem(StatusCode::BAD_REQUEST, "no such bulk action");
    };
    if let Err(why) = query_of(&params) {
        return problem(StatusCode::BAD_REQUEST, &why);
    }
    let mut filter = Map::new();
    for name in FIELDS.iter().filter(|n| **n != "order") {
        let Some(v) = field(&params, name) else {
            continue;
        };
        // The form's times (`datetime-local`, UTC) as the api reads them.
        let v = match time_field(name, v) {
            Some(Ok(ms)) => rfc3339_ms(ms),
            Some(Err(why)) => return problem(StatusCode::BAD_REQUEST, &why),
            None => v.to_owned(),
        };
        filter.insert((*name).to_owned(), Value::String(v));
    }
    let body = serde_json::json!({ "action": action.as_str(), "filter": filter });
    let sent = ui
        .api
        .post(format!("{}/v1/jobs/bulk", ui.api_url))
        .json(&body)
        .send()
        .await;
    match sent {
        Ok(res) if res.status() == StatusCode::ACCEPTED => {
            let run: Value = res.json().await.unwrap_or_default();
            match run["id"].as_str().filter(|id| plausible_id(id)) {
                Some(id) => (
                    StatusCode::SEE_OTHER,
                    [(header::LOCATION, format!("/bulk/{id}"))],
                )
                    .into_response(),
                None => problem(
                    StatusCode::BAD_GATEWAY,
                    "the api answered no bulk action id",
                ),
            }
        }
        Ok(res) => pass_on(res).await,
        Err(e) => unreachable_api(&ui, &e),
    }
}

/// `POST /ui/bulk/{id}/stop`.
pub(crate) async fn stop(State(ui): Ui, Path(id): Path<String>) -> Response {
    if !plausible_id(&id) {
        return problem(StatusCode::NOT_FOUND, "no such bulk action");
    }
    match ui
        .api
        .post(format!("{}/v1/jobs/bulk/{id}/stop", ui.api_url))
        .send()
        .await
    {
        Ok(res) if res.status().is_success() => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("/bulk/{id}"))],
        )
            .into_response(),
        Ok(res) => pass_on(res).await,
        Err(e) => unreachable_api(&ui, &e),
    }
}

/// `GET /bulk/{id}`: the action, following it as it runs.
pub(crate) async fn status_page(State(ui): Ui, Path(id): Path<String>) -> Response {
    let Some(queue) = ui.queue() else {
        return no_queue("Bulk action", "/jobs");
    };
    match body(&queue, &id).await {
        Ok(Some(body)) => page(
            &format!("Bulk action {id}"),
            "/jobs",
            html! { div #live data-refresh=(format!("/ui/bulk/{id}/fragment")) data-live="poll" { (body) } },
        ),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "no such bulk action (they are kept a week)",
        ),
        Err(res) => res,
    }
}

/// The live part of `/bulk/{id}`.
pub(crate) async fn fragment(State(ui): Ui, Path(id): Path<String>) -> Response {
    let Some(queue) = ui.queue() else {
        return no_queue("Bulk action", "/jobs");
    };
    match body(&queue, &id).await {
        Ok(Some(body)) => body.into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such bulk action"),
        Err(res) => res,
    }
}

async fn body(queue: &RedisQueue, id: &str) -> Result<Option<Markup>, Response> {
    if !plausible_id(id) {
        return Ok(None);
    }
    let run = queue.bulk_run(id).await.map_err(|e| {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the job queue is unavailable: {e}"),
        )
    })?;
    Ok(run.map(|run| render(&run)))
}

fn render(run: &BulkRun) -> Markup {
    let (verb, rule) = says(run.action);
    let reached = run.done + run.skipped;
    let filter: Map<String, Value> = serde_json::from_str(&run.filter).unwrap_or_default();
    html! {
        dl.bulk {
            dt { "Action" } dd { (verb) " (" (rule) ")" }
            dt { "Jobs" } dd {
                @if filter.is_empty() { "every job" }
                @for (k, v) in &filter { code { (k) "=" (v.as_str().unwrap_or_default()) } " " }
            }
            dt { "State" } dd #bulk-state { (run.state.as_str()) }
            dt { "Progress" } dd {
                progress max=(run.total.max(reached)) value=(reached) {}
                " " span #bulk-progress { (reached) " of " (run.total) ": " (run.done) " done, " (run.skipped) " skipped" }
            }
            dt { "Started" } dd { (rfc3339_ms(run.started_at_ms)) }
            @if let Some(end) = run.finished_at_ms { dt { "Ended" } dd { (rfc3339_ms(end)) } }
            @if let Some(e) = &run.error { dt { "Error" } dd.err { (e) } }
            @if let Some(t) = &run.trace_id { dt { "Trace" } dd { a href=(format!("/traces/{t}")) { code { (t) } } } }
        }
        @if !run.state.is_final() {
            (button(&format!("/ui/bulk/{}/stop", run.id), "Stop"))
        }
    }
}

//! What the console's buttons do: cancel a job, re-drive one or many
//! failed jobs, pause and resume the queue. Each is a plain form post that the console passes on to
//! the api, then sends the browser back to the page it came from (`303`),
//! so the buttons work without the page's script. An api refusal (a job
//! that started meanwhile: `409`) is shown as the api's problem.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use weather_jobs::problem;

use super::proxy::{pass_on, unreachable_api};
use redis_job_queue::plausible_id;

use super::{Ui, UiState};

/// Passes a request on to the api; on success sends the browser to
/// `back`, else answers what the api said.
async fn forward(ui: &UiState, req: reqwest::RequestBuilder, back: &str) -> Response {
    match req.send().await {
        Ok(res) if res.status().is_success() => {
            (StatusCode::SEE_OTHER, [(header::LOCATION, back.to_owned())]).into_response()
        }
        Ok(res) => pass_on(res).await,
        Err(e) => unreachable_api(ui, &e),
    }
}

/// `POST /ui/jobs/{id}/cancel`.
pub(crate) async fn cancel(State(ui): Ui, Path(id): Path<String>) -> Response {
    if !plausible_id(&id) {
        return problem(StatusCode::NOT_FOUND, "no such job");
    }
    let req = ui.api.delete(format!("{}/v1/jobs/{id}", ui.api_url));
    forward(&ui, req, &format!("/jobs/{id}")).await
}

/// `POST /ui/jobs/{id}/retry`.
pub(crate) async fn retry(State(ui): Ui, Path(id): Path<String>) -> Response {
    if !plausible_id(&id) {
        return problem(StatusCode::NOT_FOUND, "no such job");
    }
    let req = ui.api.post(format!("{}/v1/jobs/{id}/retry", ui.api_url));
    forward(&ui, req, &format!("/jobs/{id}")).await
}

/// `POST /ui/queues/{name}/pause` and `/resume` (`action`).
async fn queue_action(ui: &UiState, name: &str, action: &str) -> Response {
    let plausible = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !plausible {
        return problem(StatusCode::NOT_FOUND, "no such queue");
    }
    let req = ui
        .api
        .post(format!("{}/v1/queues/{name}/{action}", ui.api_url));
    forward(ui, req, "/queues").await
}

/// `POST /ui/queues/{name}/pause`.
pub(crate) async fn pause(State(ui): Ui, Path(name): Path<String>) -> Response {
    queue_action(&ui, &name, "pause").await
}

/// `POST /ui/queues/{name}/resume`.
pub(crate) async fn resume(State(ui): Ui, Path(name): Path<String>) -> Response {
    queue_action(&ui, &name, "resume").await
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

/// The session's CSRF token as a form field, when there is a session.
pub(crate) fn csrf_field() -> Markup {
    html! {
        @if let Some(token) = crate::auth::current().csrf {
            input type="hidden" name="csrf" value=(token);
        }
    }
}

/// A button that posts to `action` (a form of its own, so it works
/// without script); nothing for a viewer.
pub(crate) fn button(action: &str, label: &str) -> Markup {
    if !crate::auth::current().may_act() {
        return html! {};
    }
    html! {
        form.action method="post" action=(action) {
            (csrf_field())
            button type="submit" { (label) }
        }
    }
}

/// Buttons above the failed jobs: re-drive them all, or those of one
/// error type; nothing for a viewer.
pub(crate) fn retry_buttons(error_types: &[String]) -> Markup {
    if !crate::auth::current().may_act() {
        return html! {};
    }
    html! {
        div.actions {
            form.action method="post" action="/ui/retry" {
                (csrf_field())
                button type="submit" { "Retry all failed jobs" }
            }
            @for t in error_types {
                form.action method="post" action="/ui/retry" {
                    (csrf_field())
                    input type="hidden" name="error_type" value=(t);
                    button type="submit" { "Retry those failed with " code { (t) } }
                }
            }
        }
    }
}

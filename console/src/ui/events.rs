//! The job status stream (server-sent events) the Submit page follows
//! each submitted job by.
//!
//! The queue has no change feed to subscribe to, so the stream polls the
//! job's record and sends what changed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use redis_job_queue::{JobRecord, plausible_id};
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;
use weather_jobs::problem;

use super::{Ui, UiState};

/// How often a stream reads its job's status.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// Polls after which a stream sends the status one last time and ends:
/// 2,400 at [`POLL_EVERY`] are ten minutes. A job not finished by then
/// (one delayed for later, or lost) stops holding a connection and a poll
/// loop open; the Submit page stops following it (its own page still
/// shows it).
const MAX_POLLS: u32 = 2_400;

/// The status event's data.
fn status_json(r: &JobRecord) -> Value {
    json!({
        "id": r.id,
        "status": r.status.as_str(),
        "attempts": r.attempts,
        "max_attempts": r.max_attempts,
        "error": r.error,
        "trace_id": r.trace_id(),
    })
}

/// Server-sent events with a job's status, for the Submit page's rows:
/// one at once, then one whenever a poll of the queue (every
/// [`POLL_EVERY`]) finds it changed. The stream ends after the event that
/// shows the job finished, or after [`MAX_POLLS`] polls with one last
/// event whatever the status.
///
/// An id that is no job's is refused at once (`404`), and at most
/// `CONSOLE_MAX_STREAMS` streams are open at a time (`503` past it): each
/// holds a connection and a poll loop.
pub(crate) async fn job_events(State(ui): Ui, Path(id): Path<String>) -> Response {
    if !plausible_id(&id) {
        return problem(StatusCode::NOT_FOUND, "no such job");
    }
    let Some(queue) = ui.queue() else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the queue is not reachable yet",
        );
    };
    match queue.status(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return problem(StatusCode::NOT_FOUND, "no such job"),
        Err(e) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the job queue is unavailable: {e}"),
            );
        }
    }
    let Ok(permit) = ui.streams.clone().try_acquire_owned() else {
        let mut res = problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many job streams are open (CONSOLE_MAX_STREAMS): try again shortly",
        );
        res.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        return res;
    };
    let stream = status_events(ui, id, permit);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The stream of [`job_events`]; it holds `permit` (one of the open
/// streams) until it ends or the client goes.
fn status_events(
    ui: Arc<UiState>,
    id: String,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (ui, id, None::<Value>, false, 0u32, permit),
        |(ui, id, last, done, polls, permit)| async move {
            if done || polls > MAX_POLLS {
                return None;
            }
            let mut polls = polls;
            loop {
                if polls > 0 {
                    tokio::time::sleep(POLL_EVERY).await;
                }
                polls += 1;
                let record = match ui.queue() {
                    Some(q) => q.status(&id).await.ok().flatten(),
                    None => None,
                };
                let now = match &record {
                    Some(r) => status_json(r),
                    None => json!({ "id": id, "status": "unknown" }),
                };
                let finished = record.as_ref().is_some_and(JobRecord::is_finished);
                if last.as_ref() != Some(&now) || polls > MAX_POLLS {
                    let event = Event::default().event("status").data(now.to_string());
                    return Some((Ok(event), (ui, id, Some(now), finished, polls, permit)));
                }
            }
        },
    )
}

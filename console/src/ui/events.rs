//! The job status stream (server-sent events) the Submit page follows
//! each submitted job by.
//!
//! The queue has no change feed to subscribe to, so the stream polls the
//! job's record and sends what changed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use redis_job_queue::JobRecord;
use serde_json::{Value, json};

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
pub(crate) async fn job_events(
    State(ui): Ui,
    Path(id): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = status_events(ui, id);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The stream of [`job_events`].
fn status_events(ui: Arc<UiState>, id: String) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (ui, id, None::<Value>, false, 0u32),
        |(ui, id, last, done, polls)| async move {
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
                    return Some((Ok(event), (ui, id, Some(now), finished, polls)));
                }
            }
        },
    )
}

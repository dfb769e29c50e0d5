//! The body of every error the services answer over HTTP: an RFC 9457
//! problem (`application/problem+json`). The api, the console and the
//! alerts service all answer errors this way, so a client reads one shape
//! whichever it asked.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The media type of a problem.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem-details response (`application/problem+json`)
/// whose `detail` says what went wrong.
pub fn problem(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, PROBLEM_JSON)],
        Json(body(status, detail)),
    )
        .into_response()
}

/// The problem's fields: `about:blank`, so the status alone says what
/// kind of problem it is, and its reason phrase as the title.
fn body(status: StatusCode, detail: &str) -> Value {
    json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_problem_json_with_the_status_repeated() {
        let res = problem(StatusCode::NOT_FOUND, "no such job");
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(res.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let bytes =
            futures::executor::block_on(axum::body::to_bytes(res.into_body(), 4096)).expect("body");
        let body: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(
            body,
            json!({
                "type": "about:blank",
                "title": "Not Found",
                "status": 404,
                "detail": "no such job",
            })
        );
    }

    #[test]
    fn a_status_without_a_reason_phrase_is_titled_error() {
        let status = StatusCode::from_u16(599).expect("status");
        assert_eq!(body(status, "?")["title"], "Error");
    }
}

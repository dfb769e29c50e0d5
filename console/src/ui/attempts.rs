//! A job's attempts, from its CONSUMER spans across the traces its page
//! shows: the table above its waterfall.

use maud::{Markup, html};

use super::waterfall::millis;
use crate::store::model::{Kind, Span};

/// Every attempt of job `job` the spans hold (its CONSUMER spans, across
/// the traces shown), in order: when it waited and how long, how long it
/// ran, and how it ended, each linked to its row of the waterfall. Nothing
/// before the first attempt.
pub(crate) fn attempts(spans: &[Span], job: &str) -> Markup {
    let mut runs: Vec<(u64, &Span)> = spans
        .iter()
        .filter(|s| {
            s.kind == Some(Kind::Consumer) && s.tags.get("job.id").map(String::as_str) == Some(job)
        })
        .map(|s| {
            let attempt = s
                .tags
                .get("job.attempt")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            (attempt, s)
        })
        .collect();
    if runs.is_empty() {
        return html! {};
    }
    runs.sort_by_key(|(attempt, s)| (*attempt, s.timestamp));
    html! {
        table.attempts #attempts {
            caption { "Its attempts (and runs deferred), each with the time it waited in the queue" }
            thead { tr {
                th scope="col" { "Attempt" } th scope="col" { "Started" } th scope="col" { "Waited" }
                th scope="col" { "Ran" } th scope="col" { "Outcome" } th scope="col" { "Trace" }
            } }
            tbody {
                @for (attempt, s) in &runs {
                    tr {
                        td data-label="Attempt" { a href=(format!("#span-{}", s.id)) { (attempt) } }
                        td data-label="Started" { (s.timestamp.map_or("?".into(), |t| redis_job_queue::rfc3339_ms(t / 1000))) }
                        td data-label="Waited" { (ms_tag(s, "job.queue_wait_ms").map_or("?".into(), millis)) }
                        td data-label="Ran" { (s.duration.map_or("?".into(), millis)) }
                        td data-label="Outcome" {
                            // A run the breaker or rate limit refused deferred its job
                            // and gave its attempt number back.
                            @match (s.tags.get("error.type"), ms_tag(s, "job.deferred_ms")) {
                                (Some(e), _) => span.err { (e) },
                                (None, _) if s.tags.contains_key("error") => span.err { "error" },
                                (None, Some(ms)) => { "deferred " (millis(ms)) ", not an attempt" }
                                (None, None) => "succeeded",
                            }
                        }
                        td data-label="Trace" { code { (&s.trace_id[..8.min(s.trace_id.len())]) } }
                    }
                }
            }
        }
    }
}

/// A tag in milliseconds, in microseconds (as [`millis`] takes them).
fn ms_tag(s: &Span, name: &str) -> Option<u64> {
    let ms: u64 = s.tags.get(name)?.parse().ok()?;
    Some(ms.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::test_span as span;

    #[test]
    fn every_attempt_of_the_job_is_listed_with_its_wait() {
        let attempt = |id: u64, n: &str, wait: &str, error: Option<&str>| {
            let mut s = span(
                id,
                Some(1),
                "worker",
                "process weather",
                Some(Kind::Consumer),
                id * 10,
                5,
            );
            s.tags.insert("job.id".into(), "job-1".into());
            s.tags.insert("job.attempt".into(), n.into());
            s.tags.insert("job.queue_wait_ms".into(), wait.into());
            if let Some(e) = error {
                s.tags.insert("error".into(), "true".into());
                s.tags.insert("error.type".into(), e.into());
            }
            s
        };
        let mut refused = attempt(4, "2", "7", None);
        refused
            .tags
            .insert("job.deferred_ms".into(), "10000".into());
        let mut other = attempt(9, "1", "1", None);
        other.tags.insert("job.id".into(), "job-2".into());
        let spans = vec![
            span(1, None, "api", "post", Some(Kind::Server), 0, 100),
            attempt(3, "2", "40", None),
            attempt(2, "1", "3", Some("upstream_5xx")),
            refused,
            other,
        ];
        let html = attempts(&spans, "job-1").into_string();
        assert_eq!(
            html.matches("<tr>").count(),
            4,
            "a header, two attempts and a deferred run: {html}"
        );
        assert_eq!(
            html.matches("succeeded").count(),
            1,
            "the deferred run did not succeed: {html}"
        );
        assert!(html.contains("deferred 10000 ms, not an attempt"), "{html}");
        let first = html.find("upstream_5xx").expect("attempt 1 failed");
        let second = html.find("40.0 ms").expect("attempt 2 waited 40 ms");
        assert!(first < second, "in order: {html}");
        assert!(
            html.contains("3.0 ms") && html.contains("succeeded"),
            "{html}"
        );
        assert!(attempts(&spans, "job-3").into_string().is_empty());
    }
}

//! Trace search, as Zipkin's and Jaeger's: by service, span name, tags
//! (`key=value`, or a bare word for an annotation or a tag key), shortest
//! and longest duration, and how far back; each trace found with its root,
//! duration, spans, services and errors, opening on its waterfall. The
//! search is a plain GET form, so its state is in the URL and a search can
//! be shared.

use std::collections::{BTreeSet, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use super::Ui;
use super::frame::{field, page};
use super::waterfall::{self, millis};
use crate::store::TraceQuery;
use crate::store::model::{Span, TraceId};

/// How far back a search looks, as the form offers it.
const LOOKBACKS: &[(&str, &str, u64)] = &[
    ("15m", "15 minutes", 15 * 60_000),
    ("1h", "an hour", 3_600_000),
    ("6h", "6 hours", 6 * 3_600_000),
    ("24h", "a day", 86_400_000),
    ("7d", "a week", 7 * 86_400_000),
];
/// Traces a search lists by default.
const LIMIT: i64 = 20;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The query the form asks for, or what is wrong with it.
fn query_of(params: &HashMap<String, String>) -> Result<TraceQuery, String> {
    let ms = |name: &str, label: &str| -> Result<Option<i64>, String> {
        field(params, name)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|ms| ms.is_finite() && *ms > 0.0 && *ms < 1e12)
                    .map(|ms| (ms * 1000.0).round() as i64)
                    .ok_or_else(|| {
                        format!("{label} must be a number of milliseconds above 0, not {v:?}")
                    })
            })
            .transpose()
    };
    let lookback = match field(params, "lookback") {
        None => LOOKBACKS[1].2,
        Some(v) => LOOKBACKS
            .iter()
            .find(|(key, _, _)| *key == v)
            .map(|(_, _, ms)| *ms)
            .ok_or_else(|| format!("unknown time range {v:?}"))?,
    };
    let limit = match field(params, "limit") {
        None => LIMIT,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("limit must be 1 to 1000, not {v:?}"))?,
    };
    let now = now_ms();
    TraceQuery::new(
        field(params, "service"),
        field(params, "span"),
        field(params, "tags"),
        ms("min_ms", "the shortest duration")?,
        ms("max_ms", "the longest duration")?,
        Some(now as i64),
        Some(lookback as i64),
        Some(limit),
        now,
        lookback,
    )
    .map_err(|e| e.to_string())
}

/// What a result row shows of one trace.
struct Found<'a> {
    id: &'a str,
    root: String,
    start_us: u64,
    duration_us: u64,
    spans: usize,
    services: BTreeSet<&'a str>,
    errors: usize,
}

fn summary(spans: &[Span]) -> Option<Found<'_>> {
    let first = spans.first()?;
    // The root: a span without a parent in the trace, earliest first.
    let roots = crate::tree::children(spans);
    let root = roots
        .get(&None)
        .and_then(|r| r.iter().min_by_key(|s| s.timestamp.unwrap_or(u64::MAX)))
        .copied()
        .unwrap_or(first);
    let (start, end) = crate::tree::bounds(spans);
    Some(Found {
        id: first.trace_id.as_str(),
        root: format!(
            "{}: {}",
            waterfall::service(root),
            root.name.as_deref().unwrap_or("?")
        ),
        start_us: start,
        duration_us: end.saturating_sub(start),
        spans: spans.len(),
        services: spans
            .iter()
            .filter_map(|s| s.local_endpoint.as_ref()?.service_name.as_deref())
            .collect(),
        errors: spans
            .iter()
            .filter(|s| s.tags.contains_key("error"))
            .count(),
    })
}

/// The search page with what went wrong instead of results.
fn refused(params: &HashMap<String, String>, status: StatusCode, why: &str) -> Response {
    let mut res = page(
        "Traces",
        "/traces",
        html! { (form(params)) p.notice role="alert" { (why) } },
    );
    *res.status_mut() = status;
    res
}

/// The search form, filled in as asked.
fn form(params: &HashMap<String, String>) -> Markup {
    let value = |name: &str| field(params, name).unwrap_or_default().to_owned();
    let lookback = field(params, "lookback")
        .unwrap_or(LOOKBACKS[1].0)
        .to_owned();
    html! {
        form.search method="get" action="/traces" role="search" aria-label="Trace search" {
            label { "Service " input name="service" value=(value("service")) placeholder="worker"; }
            label { "Span name " input name="span" value=(value("span")) placeholder="get"; }
            label { "Tags " input name="tags" value=(value("tags")) placeholder="error and job.priority=high" size="28"; }
            label { "Longer than (ms) " input name="min_ms" value=(value("min_ms")) inputmode="decimal" size="6"; }
            label { "Shorter than (ms) " input name="max_ms" value=(value("max_ms")) inputmode="decimal" size="6"; }
            label { "In the last "
                select name="lookback" {
                    @for (key, name, _) in LOOKBACKS {
                        option value=(key) selected[*key == lookback] { (name) }
                    }
                }
            }
            label { "At most " input name="limit" value=(value("limit")) placeholder=(LIMIT) inputmode="numeric" size="4"; }
            button type="submit" { "Search" }
        }
    }
}

/// `GET /traces`: the form, and the traces it finds.
pub(crate) async fn search(
    State(ui): Ui,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let q = match query_of(&params) {
        Ok(q) => q,
        Err(why) => return refused(&params, StatusCode::BAD_REQUEST, &why),
    };
    let traces = match ui.source.search(&ui.http, q).await {
        Ok(t) => t,
        Err(e) => return refused(&params, StatusCode::BAD_GATEWAY, &e),
    };
    let found: Vec<Found<'_>> = traces.iter().filter_map(|t| summary(t)).collect();
    page(
        "Traces",
        "/traces",
        html! {
            (form(&params))
            @if found.is_empty() {
                p.empty #no-traces { "No trace matches: try a longer time range, or fewer conditions." }
            } @else {
                table.traces #traces {
                    caption { (found.len()) @if found.len() == 1 { " trace" } @else { " traces, newest first" } }
                    thead { tr {
                        th scope="col" { "Root" } th scope="col" { "Started" } th scope="col" { "Duration" }
                        th scope="col" { "Spans" } th scope="col" { "Services" } th scope="col" { "Errors" }
                    } }
                    tbody {
                        @for t in &found {
                            tr {
                                td data-label="Root" { a href=(format!("/traces/{}", t.id)) { (t.root) } }
                                td data-label="Started" { (redis_job_queue::rfc3339_ms(t.start_us / 1000)) }
                                td data-label="Duration" { (millis(t.duration_us)) }
                                td data-label="Spans" { (t.spans) }
                                td data-label="Services" { (t.services.iter().copied().collect::<Vec<_>>().join(", ")) }
                                td data-label="Errors" {
                                    @if t.errors > 0 { span.err { (t.errors) } } @else { "0" }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `GET /traces/{id}`: one trace's waterfall.
pub(crate) async fn trace(
    State(ui): Ui,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(trace) = TraceId::parse(&id) else {
        return not_found(&id);
    };
    let spans = match ui.source.trace(&ui.http, &trace.to_string()).await {
        Ok(spans) if !spans.is_empty() => spans,
        Ok(_) => return not_found(&id),
        Err(e) => {
            let mut res = page("Trace", "/traces", html! { p.notice role="alert" { (e) } });
            *res.status_mut() = StatusCode::BAD_GATEWAY;
            return res;
        }
    };
    page(
        &format!("Trace {trace}"),
        "/traces",
        waterfall::render(
            &spans,
            ui.zipkin_ui.as_deref(),
            waterfall::rows_asked(&params),
            &format!("/traces/{trace}"),
        ),
    )
}

fn not_found(id: &str) -> Response {
    let mut res = page(
        "Trace not found",
        "/traces",
        html! { p { "No trace with id " code { (id) } " is kept (traces are kept for a limited time)." } },
    );
    *res.status_mut() = StatusCode::NOT_FOUND;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_form_becomes_a_zipkin_query_and_bad_fields_say_why() {
        let q = query_of(&params(&[
            ("service", "Worker"),
            ("tags", "error and job.priority=high"),
            ("min_ms", "2.5"),
            ("lookback", "6h"),
            ("limit", "5"),
        ]))
        .expect("query");
        assert_eq!(q.service_name.as_deref(), Some("worker"));
        assert_eq!(
            q.annotation_query,
            vec![
                ("error".to_owned(), None),
                ("job.priority".to_owned(), Some("high".to_owned()))
            ]
        );
        assert_eq!(q.min_duration, Some(2_500));
        assert_eq!(q.lookback, 6 * 3_600_000);
        assert_eq!(q.limit, 5);
        let empty = query_of(&params(&[("service", " "), ("limit", "")])).expect("defaults");
        assert_eq!((empty.service_name, empty.limit), (None, LIMIT as usize));
        for (bad, why) in [
            (("min_ms", "soon"), "shortest duration"),
            (("max_ms", "-1"), "longest duration"),
            (("lookback", "forever"), "time range"),
            (("limit", "5000"), "limit"),
        ] {
            let err = query_of(&params(&[bad])).expect_err("refused");
            assert!(err.contains(why), "{err}");
        }
        let err = query_of(&params(&[("min_ms", "5"), ("max_ms", "1")])).expect_err("min > max");
        assert!(err.contains("minDuration"), "{err}");
    }
}

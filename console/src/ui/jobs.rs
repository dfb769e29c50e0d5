//! The Jobs page: every job the queue keeps, searched by status, error
//! type, priority, batch, place (a city's first letters or a box of
//! coordinates) and the time it was queued, newest or oldest first, a page
//! at a time. The filter bar is a plain GET form, so a search is its URL
//! and can be shared.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use redis_job_queue::{JobQuery, JobRecord, JobStatus, Order, Priority, rfc3339_ms};
use weather_jobs::search::{bbox, place_prefix, time_ms};

use super::Ui;
use super::frame::{field, no_queue, page};

/// Jobs a page lists.
const PAGE: usize = 50;

/// The filters, as the form names them.
pub(crate) const FIELDS: &[&str] = &[
    "status",
    "error_type",
    "priority",
    "batch_id",
    "place",
    "bbox",
    "queued_after",
    "queued_before",
    "order",
];

/// A time as the form sends it: RFC 3339, or a `datetime-local` input's
/// `2026-12-04T15:00` (UTC).
fn form_time(name: &str, v: &str) -> Result<u64, String> {
    time_ms(name, v)
        .or_else(|e| time_ms(name, &format!("{v}:00Z")).map_err(|_| e.clone()))
        .or_else(|e| time_ms(name, &format!("{v}Z")).map_err(|_| e))
}

/// A time field of the form (`queued_after`, `queued_before`) as epoch
/// ms; `None` for another field.
pub(crate) fn time_field(name: &str, v: &str) -> Option<Result<u64, String>> {
    matches!(name, "queued_after" | "queued_before").then(|| form_time(&name.replace('_', " "), v))
}

/// The search the form asks for, or what is wrong with it.
pub(crate) fn query_of(params: &HashMap<String, String>) -> Result<JobQuery, String> {
    let f = |name| field(params, name);
    Ok(JobQuery {
        status: f("status")
            .map(|s| JobStatus::parse(s).ok_or(format!("no status is called {s:?}")))
            .transpose()?,
        error_type: f("error_type").map(str::to_owned),
        priority: f("priority")
            .map(|p| Priority::parse(p).ok_or(format!("no priority is called {p:?}")))
            .transpose()?,
        batch: f("batch_id").map(str::to_owned),
        text: f("place").map(place_prefix),
        geo: f("bbox").map(bbox).transpose()?,
        queued_after_ms: f("queued_after")
            .and_then(|v| time_field("queued_after", v))
            .transpose()?,
        queued_before_ms: f("queued_before")
            .and_then(|v| time_field("queued_before", v))
            .transpose()?,
        order: match f("order") {
            Some("asc") => Order::Asc,
            _ => Order::Desc,
        },
    })
}

/// The URL of this search with `cursor`.
fn url_with(params: &HashMap<String, String>, cursor: &str) -> String {
    let mut url = form_urlencoded::Serializer::new(String::new());
    for name in FIELDS {
        if let Some(v) = field(params, name) {
            url.append_pair(name, v);
        }
    }
    url.append_pair("cursor", cursor);
    format!("/jobs?{}", url.finish())
}

/// The filter bar, filled in as asked.
fn form(params: &HashMap<String, String>) -> Markup {
    let value = |name: &str| field(params, name).unwrap_or_default().to_owned();
    let chosen = value("status");
    let priority = value("priority");
    let order = value("order");
    html! {
        form.search method="get" action="/jobs" role="search" aria-label="Job search" {
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in JobStatus::ALL {
                        option value=(s.as_str()) selected[chosen == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            label { "Error type " input name="error_type" value=(value("error_type")) placeholder="upstream_5xx" size="14"; }
            label { "Priority "
                select name="priority" {
                    option value="" { "any" }
                    @for p in Priority::ALL {
                        option value=(p.as_str()) selected[priority == p.as_str()] { (p.as_str()) }
                    }
                }
            }
            label { "Batch " input name="batch_id" value=(value("batch_id")) size="12"; }
            label { "City starts with " input name="place" value=(value("place")) placeholder="ber" size="10"; }
            label { "Box " input name="bbox" value=(value("bbox")) placeholder="west,south,east,north" size="18"; }
            label { "Queued after (UTC) " input name="queued_after" type="datetime-local" step="1" value=(value("queued_after")); }
            label { "before " input name="queued_before" type="datetime-local" step="1" value=(value("queued_before")); }
            label { "Order "
                select name="order" {
                    option value="desc" selected[order != "asc"] { "newest first" }
                    option value="asc" selected[order == "asc"] { "oldest first" }
                }
            }
            button type="submit" { "Search" }
        }
    }
}

/// Where a job's weather is for.
fn place(r: &JobRecord) -> String {
    let p = &r.payload["place"];
    match (
        p["city"].as_str(),
        p["latitude"].as_f64(),
        p["longitude"].as_f64(),
    ) {
        (Some(city), _, _) => city.to_owned(),
        (None, Some(lat), Some(lon)) => format!("{lat:.2}, {lon:.2}"),
        _ => String::new(),
    }
}

fn table(jobs: &[JobRecord]) -> Markup {
    html! {
        table.jobs {
            caption { "Jobs found, by the time they were queued" }
            thead { tr {
                th scope="col" { "Job" } th scope="col" { "Status" } th scope="col" { "Place" }
                th scope="col" { "Priority" } th scope="col" { "Queued at" } th scope="col" { "Attempts" }
                th scope="col" { "Error type" } th scope="col" { "Batch" }
            } }
            tbody {
                @for r in jobs {
                    tr {
                        td data-label="Job" { a href=(format!("/jobs/{}", r.id)) { code { (r.id) } } }
                        td data-label="Status" { span class=(format!("status {}", r.status.as_str())) { (r.status.as_str()) } }
                        td data-label="Place" { (place(r)) }
                        td data-label="Priority" { (r.priority.as_str()) }
                        td data-label="Queued at" { (rfc3339_ms(r.enqueued_at_ms)) }
                        td data-label="Attempts" { (r.attempts) }
                        td data-label="Error type" { @if let Some(t) = &r.error_type { code { (t) } } }
                        td data-label="Batch" { @if let Some(b) = &r.batch { a href=(format!("/batches/{b}")) { code { (b) } } } }
                    }
                }
            }
        }
    }
}

/// `GET /jobs`: the filter bar, and a page of the jobs it finds.
pub(crate) async fn search(
    State(ui): Ui,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(queue) = ui.queue() else {
        return no_queue("Jobs", "/jobs");
    };
    let refused = |status: StatusCode, why: &str| {
        let mut res = page(
            "Jobs",
            "/jobs",
            html! { (form(&params)) p.notice role="alert" { (why) } },
        );
        *res.status_mut() = status;
        res
    };
    let q = match query_of(&params) {
        Ok(q) => q,
        Err(why) => return refused(StatusCode::BAD_REQUEST, &why),
    };
    let cursor = field(&params, "cursor");
    let found = match queue.search(&q, cursor, PAGE).await {
        Ok(found) => found,
        Err(redis_job_queue::QueueError::Invalid(why)) => {
            return refused(StatusCode::BAD_REQUEST, &why);
        }
        Err(e) => {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("The queue could not be searched: {e}"),
            );
        }
    };
    page(
        "Jobs",
        "/jobs",
        html! {
            (form(&params))
            (super::bulk::form(&params))
            @if found.jobs.is_empty() {
                p.empty { "No job on this page matches." }
            } @else {
                (table(&found.jobs))
            }
            @if let Some(next) = &found.next_cursor {
                p.more {
                    a href=(url_with(&params, next)) rel="next" { "Next page" }
                    @if found.jobs.len() < PAGE { " (this page looked at as many jobs as a page may; the search goes on)" }
                }
            }
        },
    )
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
    fn the_form_reads_as_a_search_and_its_times_as_utc() {
        let q = query_of(&params(&[
            ("status", "failed"),
            ("priority", "low"),
            ("place", " Ber "),
            ("queued_after", "2026-12-04T15:00"),
            ("queued_before", "2026-12-04T16:00:30"),
            ("order", "asc"),
            ("batch_id", ""),
        ]))
        .expect("a search");
        assert_eq!(q.status, Some(JobStatus::Failed));
        assert_eq!(q.priority, Some(Priority::Low));
        assert_eq!(q.text.map(|t| t.prefix), Some("ber".to_owned()));
        assert_eq!(q.queued_after_ms, Some(1_796_396_400_000));
        assert_eq!(q.queued_before_ms, Some(1_796_400_030_000));
        assert_eq!(q.order, Order::Asc);
        assert_eq!(q.batch, None, "an empty field is no filter");
        for (k, v) in [
            ("status", "lost"),
            ("priority", "urgent"),
            ("bbox", "1,2"),
            ("queued_after", "soon"),
        ] {
            assert!(query_of(&params(&[(k, v)])).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn the_next_page_keeps_the_filters() {
        let url = url_with(&params(&[("place", "oslo"), ("cursor", "old")]), "12:a b");
        assert_eq!(url, "/jobs?place=oslo&cursor=12%3Aa+b");
    }
}

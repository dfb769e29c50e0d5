//! `GET /v1/jobs` as a search: its query parameters into the queue's
//! [`JobQuery`], each checked with an error that names it (the parts that
//! depend on a weather job's payload are `weather_jobs::search`'s, shared
//! with the console).

use redis_job_queue::{JobQuery, Order};
use weather_jobs::search::{bbox, place_prefix, time_ms};

use crate::error::ApiError;
use crate::requests::{ListOrder, ListQuery};
use crate::views::Priority;

/// The search `q` asks for.
pub(crate) fn job_query(q: &ListQuery) -> Result<JobQuery, ApiError> {
    // Lengths as the OpenAPI document gives them (in characters).
    let within = |name: &str, v: &Option<String>, max: usize| -> Result<Option<String>, ApiError> {
        match v.as_deref() {
            Some("") => Err(ApiError::Invalid(format!("{name} is empty"))),
            Some(s) if s.chars().count() > max => Err(ApiError::Invalid(format!(
                "{name} is longer than {max} characters"
            ))),
            v => Ok(v.map(str::to_owned)),
        }
    };
    let time = |name: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| time_ms(name, v))
            .transpose()
            .map_err(ApiError::Invalid)
    };
    Ok(JobQuery {
        status: q.status.map(Into::into),
        error_type: within("error_type", &q.error_type, 100)?,
        priority: q.priority.map(|p| match p {
            Priority::High => redis_job_queue::Priority::High,
            Priority::Normal => redis_job_queue::Priority::Normal,
            Priority::Low => redis_job_queue::Priority::Low,
        }),
        batch: within("batch_id", &q.batch_id, 128)?,
        text: within("place", &q.place, 100)?.map(|p| place_prefix(&p)),
        geo: q
            .bbox
            .as_deref()
            .map(bbox)
            .transpose()
            .map_err(ApiError::Invalid)?,
        queued_after_ms: time("queued_after", &q.queued_after)?,
        queued_before_ms: time("queued_before", &q.queued_before)?,
        order: match q.order {
            Some(ListOrder::Asc) => Order::Asc,
            Some(ListOrder::Desc) | None => Order::Desc,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<JobQuery, ApiError> {
        let url: String = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "%20").replace('+', "%2B")))
            .collect::<Vec<_>>()
            .join("&");
        let q: ListQuery = serde_urlencoded_like(&url);
        job_query(&q)
    }

    /// The query string parsed as axum's `Query` parses it.
    fn serde_urlencoded_like(s: &str) -> ListQuery {
        let uri: axum::http::Uri = format!("/v1/jobs?{s}").parse().expect("uri");
        axum::extract::Query::<ListQuery>::try_from_uri(&uri)
            .expect("parses")
            .0
    }

    #[test]
    fn a_search_reads_every_filter() {
        let q = query(&[
            ("status", "failed"),
            ("error_type", "upstream_unavailable"),
            ("priority", "low"),
            ("batch_id", "b-1"),
            ("place", " Ber "),
            ("bbox", "10.5,59.8,11,60"),
            ("queued_after", "2026-12-04T15:00:00Z"),
            ("queued_before", "2026-12-04T17:00:00+01:00"),
            ("order", "asc"),
        ])
        .expect("a query");
        assert_eq!(q.status, Some(redis_job_queue::JobStatus::Failed));
        assert_eq!(q.priority, Some(redis_job_queue::Priority::Low));
        assert_eq!(
            q.text.map(|t| (t.path, t.prefix)),
            Some((weather_jobs::search::CITY.into(), "ber".into()))
        );
        let geo = q.geo.expect("a box");
        assert_eq!(
            (geo.west, geo.south, geo.east, geo.north),
            (10.5, 59.8, 11.0, 60.0)
        );
        assert_eq!(q.queued_after_ms, Some(1_796_396_400_000));
        assert_eq!(q.queued_before_ms, Some(1_796_400_000_000), "16:00 UTC");
        assert_eq!(q.order, Order::Asc);
    }

    #[test]
    fn edges_past_the_world_are_its_edges_and_early_times_1970() {
        let q = query(&[
            ("bbox", "-200,-95,200,95"),
            ("queued_after", "1960-01-01T00:00:00Z"),
            ("place", "  "),
        ])
        .expect("a query");
        let geo = q.geo.expect("a box");
        assert_eq!(
            (geo.west, geo.south, geo.east, geo.north),
            (-180.0, -90.0, 180.0, 90.0)
        );
        assert_eq!(q.queued_after_ms, Some(0));
        assert_eq!(q.text.map(|t| t.prefix), Some(String::new()), "any city");
    }

    #[test]
    fn bad_filters_are_refused_naming_them() {
        for (pairs, names) in [
            (vec![("bbox", "1,2,3")], "bbox"),
            (vec![("bbox", "NaN,1,2,3")], "four numbers"),
            (vec![("bbox", "1,2,3,4,5")], "four numbers"),
            (vec![("queued_after", "yesterday")], "RFC 3339"),
            (vec![("place", "")], "place is empty"),
            (vec![("error_type", &"x".repeat(101))], "longer than 100"),
        ] {
            let err = query(&pairs).expect_err("refused");
            assert!(err.to_string().contains(names), "{pairs:?}: {err}");
        }
    }
}

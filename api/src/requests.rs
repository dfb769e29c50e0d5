//! What the api reads: the bodies and query a caller sends, as the OpenAPI
//! document describes them ([`crate::openapi`]). The bodies' types are the
//! contract, not the parser: a body is read as JSON and checked by
//! `validate`, so each refusal names the field at fault. The list query
//! ([`ListQuery`]) is parsed as it is declared.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

use crate::views::{Priority, Units};

/// A field that may only be `null`, which counts as leaving it out.
fn null_only() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Null)
        .description(Some("Only `null`, the same as leaving the field out"))
        .build()
}

/// The weather at a place name, geocoded by the worker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"city": "Berlin", "units": "metric"}))]
pub struct CityJob {
    /// The place name; spaces around it are dropped.
    // The pattern: at least one character that is not a space, and no
    // control characters (`char::is_control`: U+0000 to U+001F and U+007F
    // to U+009F), as `validate::job` checks.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub city: String,
    /// Units of the result (default `metric`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Units>,
    /// Run no earlier than this many seconds from now (at most
    /// `MAX_DELAY_SECS`, 30 days by default). Not with `run_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 2_592_000, nullable = false)]
    pub delay_secs: Option<f64>,
    /// Run no earlier than this time (RFC 3339; a past time means now).
    /// Not with `delay_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false)]
    pub run_at: Option<String>,
    /// How the job's span relates to the request's: `parent` (one trace)
    /// or `link` (a trace of its own, linked). Default: the worker's
    /// `QUEUE_TRACE_MODE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub trace: Option<TraceMode>,
    /// Its lane: a waiting `high` job starts before any waiting `normal`
    /// one; `low` ones go last but still get one read in eight. Default
    /// `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub priority: Option<Priority>,
    /// Not with a city.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = null_only)]
    pub latitude: Option<()>,
    /// Not with a city.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = null_only)]
    pub longitude: Option<()>,
}

/// The weather at coordinates, used as they are.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"latitude": 52.52, "longitude": 13.41, "units": "imperial"}))]
pub struct CoordinatesJob {
    /// Degrees north.
    #[schema(minimum = -90, maximum = 90)]
    pub latitude: f64,
    /// Degrees east.
    #[schema(minimum = -180, maximum = 180)]
    pub longitude: f64,
    /// Units of the result (default `metric`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Units>,
    /// Run no earlier than this many seconds from now (at most
    /// `MAX_DELAY_SECS`, 30 days by default). Not with `run_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 2_592_000, nullable = false)]
    pub delay_secs: Option<f64>,
    /// Run no earlier than this time (RFC 3339; a past time means now).
    /// Not with `delay_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false)]
    pub run_at: Option<String>,
    /// How the job's span relates to the request's: `parent` (one trace)
    /// or `link` (a trace of its own, linked). Default: the worker's
    /// `QUEUE_TRACE_MODE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub trace: Option<TraceMode>,
    /// Its lane: a waiting `high` job starts before any waiting `normal`
    /// one; `low` ones go last but still get one read in eight. Default
    /// `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub priority: Option<Priority>,
    /// Not with coordinates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = null_only)]
    pub city: Option<()>,
}

/// How a job's span relates to the request that enqueued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TraceMode {
    /// The job's span is a child of the request's: one trace.
    Parent,
    /// The job starts a trace of its own, linked to the request's.
    Link,
}

/// A job to enqueue: a place name or coordinates, not both.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum NewJob {
    /// By name.
    City(CityJob),
    /// By coordinates.
    Coordinates(CoordinatesJob),
}

/// Jobs to enqueue together, in one PRODUCER span.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"jobs": [{"city": "Oslo"}, {"city": "Bergen", "delay_secs": 60}]}))]
pub struct NewBatch {
    /// 1 to 1,000 jobs, each as `POST /v1/jobs` takes one.
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<NewJob>,
    /// The trace mode of the jobs that name none: `link` by default (a
    /// trace per job, linked to the batch's PRODUCER span).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub trace: Option<TraceMode>,
    /// The priority of the jobs that name none (default `normal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub priority: Option<Priority>,
}

/// Which jobs to list, or to search for.
///
/// With `status` alone, the jobs of that status in its own order. With any
/// other filter (or `order`, or `status=cancelled`), a search: every job
/// that matches all the filters given, by the time it was queued, newest
/// first unless `order=asc`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Alone: `scheduled` (soonest first), `queued` or `running` (oldest
    /// first), `succeeded` or `failed` (newest first, within the
    /// retention). In a search: the job's status now (`cancelled` too).
    pub status: Option<ListStatus>,
    /// The error type of the job's last failed attempt
    /// (`upstream_unavailable`, `place_not_found`, ...).
    #[param(min_length = 1, max_length = 100)]
    pub error_type: Option<String>,
    /// The job's priority.
    pub priority: Option<Priority>,
    /// The batch the job was submitted in.
    #[param(min_length = 1, max_length = 128)]
    pub batch_id: Option<String>,
    /// The start of the city's name, any case, spaces around it ignored
    /// (`ber` finds Berlin and Bergen; only spaces: any city).
    #[param(min_length = 1, max_length = 100)]
    pub place: Option<String>,
    /// Jobs for coordinates in this box: `west,south,east,north` in
    /// degrees (a west past east crosses the antimeridian; edges past the
    /// poles or ±180 are taken as those; a south above the north holds
    /// nothing).
    #[param(pattern = "^-?[0-9]{1,3}(\\.[0-9]{1,12})?(,-?[0-9]{1,3}(\\.[0-9]{1,12})?){3}$")]
    pub bbox: Option<String>,
    /// Queued at or after this time (RFC 3339; one before 1970 is 1970).
    #[param(format = DateTime)]
    pub queued_after: Option<String>,
    /// Queued before this time (RFC 3339; at or before `queued_after`, no
    /// job is).
    #[param(format = DateTime)]
    pub queued_before: Option<String>,
    /// `desc` (newest first, the default) or `asc`.
    pub order: Option<ListOrder>,
    /// Where to go on from: the `next_cursor` of the page before (empty:
    /// the first page).
    #[param(pattern = "^([0-9]{1,20}:[!-~]{1,128})?$")]
    pub cursor: Option<String>,
    /// Jobs per page: 1 to 500, 50 by default. A search's page may hold
    /// fewer and still have a `next_cursor`: each looks at a bounded
    /// number of jobs.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u16>,
}

impl ListQuery {
    /// Whether this asks for a search rather than a listing by status.
    pub fn is_search(&self) -> bool {
        self.status.is_none_or(|s| s == ListStatus::Cancelled)
            || self.error_type.is_some()
            || self.priority.is_some()
            || self.batch_id.is_some()
            || self.place.is_some()
            || self.bbox.is_some()
            || self.queued_after.is_some()
            || self.queued_before.is_some()
            || self.order.is_some()
    }
}

/// Newest or oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListOrder {
    /// Newest queued first.
    Desc,
    /// Oldest queued first.
    Asc,
}

/// A status jobs can be listed or searched by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListStatus {
    /// Waiting for their run time.
    Scheduled,
    /// Waiting for a worker.
    Queued,
    /// Being run.
    Running,
    /// Done.
    Succeeded,
    /// Given up on.
    Failed,
    /// Cancelled before they ran (searches only).
    Cancelled,
}

impl From<ListStatus> for redis_job_queue::JobStatus {
    fn from(s: ListStatus) -> Self {
        match s {
            ListStatus::Scheduled => Self::Scheduled,
            ListStatus::Queued => Self::Queued,
            ListStatus::Running => Self::Running,
            ListStatus::Succeeded => Self::Succeeded,
            ListStatus::Failed => Self::Failed,
            ListStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// Which failed jobs to re-drive.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Only those whose `error_type` is this; all failed jobs without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, min_length = 1, max_length = 100)]
    pub error_type: Option<String>,
    /// At most this many (1 to 10,000; 1,000 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 10_000)]
    pub limit: Option<u32>,
}

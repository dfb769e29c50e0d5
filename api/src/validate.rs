//! Turns a request body into a weather job, or says precisely what is wrong.
//!
//! Accepted: `{"city": "Berlin"}` or `{"latitude": 52.5, "longitude": 13.4}`,
//! each with an optional `"units": "metric" | "imperial"`, and options of
//! the job: `"delay_secs"` or `"run_at"` (RFC 3339),
//! `"trace": "parent" | "link"` and `"priority": "high" | "normal" | "low"`.

use std::time::{Duration, SystemTime};

use redis_job_queue::{NewJob, Priority};
use serde_json::{Map, Value};
use telemetry::messaging::TraceMode;
use time::format_description::well_known::Rfc3339;
use weather_jobs::{Place, Units, WeatherJob};

/// How a job is to be run, beside what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct JobOptions {
    /// Run no earlier than this long after the push.
    pub(crate) delay: Option<Duration>,
    /// The job's own trace mode.
    pub(crate) trace: Option<TraceMode>,
    /// The job's own priority.
    pub(crate) priority: Option<Priority>,
}

impl JobOptions {
    /// These options, with `defaults` for those not given (a batch's
    /// trace mode and priority for its jobs).
    pub(crate) fn or(self, defaults: Self) -> Self {
        Self {
            delay: self.delay.or(defaults.delay),
            trace: self.trace.or(defaults.trace),
            priority: self.priority.or(defaults.priority),
        }
    }

    /// `new` with these options: its delay, trace mode and lane; what is
    /// not given is left to the queue and the worker.
    pub(crate) fn apply(self, mut new: NewJob) -> NewJob {
        if let Some(delay) = self.delay {
            new = new.run_after(delay);
        }
        if let Some(mode) = self.trace {
            let (k, v) = mode.metadata();
            new = new.with_metadata(k, v);
        }
        if let Some(priority) = self.priority {
            new = new.with_priority(priority);
        }
        new
    }
}

/// The options of `body` (already checked to be an object by [`job`]);
/// delays past `max_delay` are refused.
pub(crate) fn options(body: &Value, max_delay: Duration) -> Result<JobOptions, String> {
    let empty = Map::new();
    let body = body.as_object().unwrap_or(&empty);
    let too_long = |d: Duration| {
        format!(
            "the job may be delayed at most {} seconds (MAX_DELAY_SECS), not {}",
            max_delay.as_secs(),
            d.as_secs()
        )
    };
    let delay = match (body.get("delay_secs"), body.get("run_at")) {
        (Some(_), Some(_)) => {
            return Err("give either \"delay_secs\" or \"run_at\", not both".into());
        }
        (Some(Value::Number(n)), None) => {
            let secs = n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or("\"delay_secs\" must be a number of seconds, 0 or more")?;
            Some(Duration::try_from_secs_f64(secs).map_err(|_| too_long(Duration::MAX))?)
        }
        (Some(other), None) => {
            return Err(format!(
                "\"delay_secs\" must be a number, got {}",
                kind(other)
            ));
        }
        (None, Some(Value::String(at))) => {
            let at = time::OffsetDateTime::parse(at, &Rfc3339).map_err(|e| {
                format!("\"run_at\" must be an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}")
            })?;
            Some(
                SystemTime::from(at)
                    .duration_since(SystemTime::now())
                    .unwrap_or_default(),
            )
        }
        (None, Some(other)) => {
            return Err(format!("\"run_at\" must be a string, got {}", kind(other)));
        }
        (None, None) => None,
    };
    if let Some(d) = delay.filter(|d| *d > max_delay) {
        return Err(too_long(d));
    }
    let trace = trace_mode(body)?;
    let priority = priority(body)?;
    Ok(JobOptions {
        delay: delay.filter(|d| !d.is_zero()),
        trace,
        priority,
    })
}

/// Longest place name accepted (the longest real ones are under 100).
const MAX_CITY_CHARS: usize = 200;
const FIELDS: &[&str] = &[
    "city",
    "latitude",
    "longitude",
    "units",
    "delay_secs",
    "run_at",
    "trace",
    "priority",
];

fn number(body: &Map<String, Value>, name: &str, limit: f64) -> Result<Option<f64>, String> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n
                .as_f64()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("\"{name}\" must be a finite number"))?;
            if v.abs() > limit {
                return Err(format!(
                    "\"{name}\" must be between -{limit} and {limit}, got {v}"
                ));
            }
            Ok(Some(v))
        }
        Some(other) => Err(format!("\"{name}\" must be a number, got {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The job `body` describes.
pub(crate) fn job(body: &Value) -> Result<WeatherJob, String> {
    let Value::Object(body) = body else {
        return Err(format!(
            "the body must be a JSON object such as {{\"city\": \"Berlin\"}}, got {}",
            kind(body)
        ));
    };
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field \"{unknown}\"; the fields are city, latitude, longitude, units, \
             delay_secs, run_at, trace and priority"
        ));
    }
    let units = match body.get("units") {
        None | Some(Value::Null) => Units::default(),
        Some(Value::String(s)) => match s.as_str() {
            "metric" => Units::Metric,
            "imperial" => Units::Imperial,
            other => {
                return Err(format!(
                    "\"units\" must be \"metric\" or \"imperial\", got \"{other}\""
                ));
            }
        },
        Some(other) => return Err(format!("\"units\" must be a string, got {}", kind(other))),
    };
    let latitude = number(body, "latitude", 90.0)?;
    let longitude = number(body, "longitude", 180.0)?;
    let place = match (body.get("city"), latitude, longitude) {
        (Some(Value::String(city)), None, None) => {
            let city = city.trim();
            if city.is_empty() {
                return Err("\"city\" must not be empty".into());
            }
            if city.chars().count() > MAX_CITY_CHARS {
                return Err(format!(
                    "\"city\" must be at most {MAX_CITY_CHARS} characters"
                ));
            }
            if city.chars().any(char::is_control) {
                return Err("\"city\" must not contain control characters".into());
            }
            Place::City {
                city: city.to_owned(),
            }
        }
        (Some(Value::String(_)), _, _) => {
            return Err("give either \"city\" or \"latitude\" and \"longitude\", not both".into());
        }
        (Some(Value::Null) | None, Some(latitude), Some(longitude)) => Place::Coordinates {
            latitude,
            longitude,
        },
        (Some(Value::Null) | None, Some(_), None) => {
            return Err("\"longitude\" is missing (coordinates need both)".into());
        }
        (Some(Value::Null) | None, None, Some(_)) => {
            return Err("\"latitude\" is missing (coordinates need both)".into());
        }
        (Some(Value::Null) | None, None, None) => {
            return Err("missing place: give \"city\", or \"latitude\" and \"longitude\"".into());
        }
        (Some(other), _, _) => {
            return Err(format!("\"city\" must be a string, got {}", kind(other)));
        }
    };
    Ok(WeatherJob { place, units })
}

/// The `"trace"` field of `body`: `"parent"` or `"link"`, if given.
fn trace_mode(body: &Map<String, Value>) -> Result<Option<TraceMode>, String> {
    match body.get("trace") {
        None => Ok(None),
        Some(Value::String(m)) => TraceMode::parse(m)
            .map(Some)
            .ok_or_else(|| format!("\"trace\" must be \"parent\" or \"link\", got \"{m}\"")),
        Some(other) => Err(format!("\"trace\" must be a string, got {}", kind(other))),
    }
}

/// The `"priority"` field of `body`: `"high"`, `"normal"` or `"low"`, if
/// given.
fn priority(body: &Map<String, Value>) -> Result<Option<Priority>, String> {
    match body.get("priority") {
        None => Ok(None),
        Some(Value::String(p)) => Priority::parse(p).map(Some).ok_or_else(|| {
            format!("\"priority\" must be \"high\", \"normal\" or \"low\", got \"{p}\"")
        }),
        Some(other) => Err(format!(
            "\"priority\" must be a string, got {}",
            kind(other)
        )),
    }
}

/// A batch request `{"jobs": [...], "trace"?, "priority"?}`: its jobs
/// (checked on their own later) and the defaults for those that name
/// none.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    pub(crate) jobs: &'a [Value],
    pub(crate) trace: Option<TraceMode>,
    pub(crate) priority: Option<Priority>,
}

/// The batch `body` asks for, with at most `max` jobs.
pub(crate) fn batch(body: &Value, max: usize) -> Result<Batch<'_>, String> {
    let Value::Object(body) = body else {
        return Err(format!(
            "the body must be a JSON object such as {{\"jobs\": [{{\"city\": \"Berlin\"}}]}}, got {}",
            kind(body)
        ));
    };
    if let Some(unknown) = body
        .keys()
        .find(|k| !["jobs", "trace", "priority"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown field \"{unknown}\"; a batch has \"jobs\" and, optionally, \"trace\" \
             and \"priority\""
        ));
    }
    let jobs = match body.get("jobs") {
        Some(Value::Array(jobs)) => jobs,
        None => return Err("missing \"jobs\": the list of jobs to enqueue".into()),
        Some(other) => return Err(format!("\"jobs\" must be an array, got {}", kind(other))),
    };
    if jobs.is_empty() || jobs.len() > max {
        return Err(format!(
            "\"jobs\" must hold 1 to {max} jobs, not {}",
            jobs.len()
        ));
    }
    Ok(Batch {
        jobs,
        trace: trace_mode(body)?,
        priority: priority(body)?,
    })
}

/// The error type and limit of a bulk re-drive `{"error_type"?, "limit"?}`.
pub(crate) fn redrive(body: &Value) -> Result<(Option<String>, usize), String> {
    let Value::Object(body) = body else {
        return Err(format!(
            "the body must be a JSON object such as {{}} or {{\"error_type\": \"timeout\"}}, got {}",
            kind(body)
        ));
    };
    if let Some(unknown) = body
        .keys()
        .find(|k| !["error_type", "limit"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown field \"{unknown}\"; the fields are error_type and limit"
        ));
    }
    let error_type = match body.get("error_type") {
        None => None,
        Some(Value::String(t)) if (1..=100).contains(&t.chars().count()) => Some(t.clone()),
        Some(Value::String(_)) => return Err("\"error_type\" must be 1 to 100 characters".into()),
        Some(other) => {
            return Err(format!(
                "\"error_type\" must be a string, got {}",
                kind(other)
            ));
        }
    };
    let limit = match body.get("limit") {
        None => 1000,
        // 451 and 451.0 are the same JSON integer.
        Some(Value::Number(n)) => match n.as_f64() {
            Some(n) if n.fract() == 0.0 && (1.0..=10_000.0).contains(&n) => n as usize,
            _ => return Err("\"limit\" must be a whole number from 1 to 10000".into()),
        },
        Some(other) => return Err(format!("\"limit\" must be a number, got {}", kind(other))),
    };
    Ok((error_type, limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MONTH: Duration = Duration::from_secs(30 * 86_400);

    #[test]
    fn options_delay_by_seconds_or_until_a_time_and_name_a_trace_mode() {
        assert_eq!(
            options(&json!({ "city": "Oslo" }), MONTH),
            Ok(JobOptions::default())
        );
        let o = options(
            &json!({ "delay_secs": 2.5, "trace": "link", "priority": "high" }),
            MONTH,
        )
        .expect("ok");
        assert_eq!(o.delay, Some(Duration::from_millis(2500)));
        assert_eq!(o.trace, Some(TraceMode::Link));
        assert_eq!(o.priority, Some(Priority::High));
        let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(60);
        let at = soon
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format");
        let o = options(&json!({ "run_at": at }), MONTH).expect("ok");
        let d = o.delay.expect("a delay");
        assert!(
            d > Duration::from_secs(55) && d <= Duration::from_secs(60),
            "{d:?}"
        );
        let past = options(&json!({ "run_at": "2001-01-01T00:00:00+02:00" }), MONTH);
        assert_eq!(past.map(|o| o.delay), Ok(None), "a past time is now");
    }

    #[test]
    fn a_batch_is_an_object_with_1_to_max_jobs() {
        let body = json!({ "jobs": [{ "city": "Oslo" }, { "city": "" }], "trace": "parent" });
        let b = batch(&body, 3).expect("a batch");
        assert_eq!(
            (b.jobs.len(), b.trace, b.priority),
            (2, Some(TraceMode::Parent), None)
        );
        let body = json!({ "jobs": [1], "priority": "low" });
        let b = batch(&body, 3).expect("a batch");
        assert_eq!(b.priority, Some(Priority::Low));
        for (body, want) in [
            (json!([]), "JSON object"),
            (json!({}), "missing \"jobs\""),
            (json!({ "jobs": {} }), "must be an array"),
            (json!({ "jobs": [] }), "1 to 3 jobs"),
            (json!({ "jobs": [1, 2, 3, 4] }), "1 to 3 jobs, not 4"),
            (
                json!({ "jobs": [1], "trace": "up" }),
                "\"parent\" or \"link\"",
            ),
            (json!({ "jobs": [1], "when": 1 }), "unknown field \"when\""),
            (
                json!({ "jobs": [1], "priority": "urgent" }),
                "\"high\", \"normal\" or \"low\"",
            ),
        ] {
            let err = batch(&body, 3).expect_err(&body.to_string());
            assert!(err.contains(want), "{body}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn every_option_mistake_gets_a_message_naming_it() {
        let cases = [
            (json!({ "delay_secs": -1 }), "0 or more"),
            (json!({ "delay_secs": "5" }), "must be a number"),
            (json!({ "delay_secs": 1e300 }), "at most 2592000 seconds"),
            (
                json!({ "delay_secs": 2_592_001 }),
                "at most 2592000 seconds",
            ),
            (json!({ "run_at": "tomorrow" }), "RFC 3339"),
            (json!({ "run_at": 5 }), "must be a string"),
            (json!({ "run_at": "2999-01-01T00:00:00Z" }), "at most"),
            (
                json!({ "delay_secs": 1, "run_at": "2030-01-01T00:00:00Z" }),
                "not both",
            ),
            (json!({ "trace": "sideways" }), "\"parent\" or \"link\""),
            (
                json!({ "priority": "urgent" }),
                "\"high\", \"normal\" or \"low\"",
            ),
            (json!({ "priority": 1 }), "must be a string, got a number"),
            (json!({ "priority": null }), "must be a string, got null"),
            (json!({ "trace": true }), "must be a string"),
            (json!({ "trace": null }), "must be a string"),
            (json!({ "delay_secs": null }), "must be a number, got null"),
            (
                json!({ "delay_secs": null, "run_at": "2030-01-01T00:00:00Z" }),
                "not both",
            ),
        ];
        for (body, want) in cases {
            let err = options(&body, MONTH).expect_err(&body.to_string());
            assert!(err.contains(want), "{body}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn cities_and_coordinates_are_accepted() {
        assert_eq!(
            job(&json!({ "city": "  Berlin " })),
            Ok(WeatherJob {
                place: Place::City {
                    city: "Berlin".into()
                },
                units: Units::Metric
            })
        );
        assert_eq!(
            job(&json!({ "latitude": 52.5, "longitude": -13, "units": "imperial" })),
            Ok(WeatherJob {
                place: Place::Coordinates {
                    latitude: 52.5,
                    longitude: -13.0
                },
                units: Units::Imperial
            })
        );
        assert!(
            job(&json!({ "latitude": 90, "longitude": -180 })).is_ok(),
            "bounds are inclusive"
        );
    }

    #[test]
    fn every_mistake_gets_a_message_naming_it() {
        let cases = [
            (json!([1]), "JSON object"),
            (json!("Berlin"), "JSON object"),
            (json!({}), "missing place"),
            (json!({ "city": "" }), "must not be empty"),
            (json!({ "city": "   " }), "must not be empty"),
            (json!({ "city": 12 }), "\"city\" must be a string"),
            (json!({ "city": "a".repeat(201) }), "at most 200"),
            (json!({ "city": "Ber\u{0}lin" }), "control characters"),
            (
                json!({ "city": "Oslo", "latitude": 1, "longitude": 2 }),
                "not both",
            ),
            (
                json!({ "latitude": 91, "longitude": 0 }),
                "between -90 and 90",
            ),
            (
                json!({ "latitude": 0, "longitude": -180.5 }),
                "between -180 and 180",
            ),
            (
                json!({ "latitude": "52", "longitude": 13 }),
                "must be a number, got a string",
            ),
            (json!({ "latitude": 52 }), "\"longitude\" is missing"),
            (json!({ "longitude": 13 }), "\"latitude\" is missing"),
            (
                json!({ "city": "Oslo", "units": "kelvin" }),
                "\"metric\" or \"imperial\"",
            ),
            (
                json!({ "city": "Oslo", "units": 1 }),
                "\"units\" must be a string",
            ),
            (
                json!({ "city": "Oslo", "country": "NO" }),
                "unknown field \"country\"",
            ),
        ];
        for (body, want) in cases {
            let err = job(&body).expect_err(&body.to_string());
            assert!(err.contains(want), "{body}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn a_jobs_own_options_win_over_its_batchs_and_are_applied() {
        let defaults = JobOptions {
            delay: None,
            trace: Some(TraceMode::Link),
            priority: Some(Priority::Low),
        };
        let own = JobOptions {
            delay: Some(Duration::from_secs(60)),
            trace: Some(TraceMode::Parent),
            priority: None,
        };
        let merged = own.or(defaults);
        assert_eq!(
            merged,
            JobOptions {
                priority: Some(Priority::Low),
                ..own
            }
        );
        let new = merged.apply(NewJob::new(&1).expect("encode"));
        assert_eq!(new.delay(), Some(Duration::from_secs(60)));
        assert_eq!(new.priority(), Priority::Low);
        let plain = JobOptions::default().apply(NewJob::new(&1).expect("encode"));
        assert_eq!((plain.delay(), plain.priority()), (None, Priority::Normal));
    }
}

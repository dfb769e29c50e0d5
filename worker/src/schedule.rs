//! Periodic refreshes: configured places enqueued on cron expressions
//! (`SCHEDULES`, `SCHEDULES_FILE`).
//!
//! Every worker runs the scheduler loop, and exactly one of them fires each
//! run: the holder of a lease in Redis (`SET NX PX`, renewed while held),
//! taken over by another worker when its holder stops renewing it. A run's
//! job id is the schedule's name and due time, so even two holders at once
//! (a holder stalled past its lease) push one job per run. Times come
//! from Redis's clock.
//!
//! A schedule remembers its last run in Redis. After an outage (no worker
//! running, Redis down) the runs missed are fired once, as the latest one
//! due, never as a burst. Each run is a trace of its own: a root span
//! `run schedule {name}` linked to the schedule's definition (a span made
//! once, when the schedule is first seen, whose context Redis keeps), with
//! the job's PRODUCER span under it and the job's CONSUMER span under that.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use redis_job_queue::{NewJob, QueueError, RedisQueue};
use telemetry::messaging::{TraceMode, TracedProducer};
use telemetry::propagation::Propagation;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use weather_jobs::{Place, Units, WeatherJob};

/// How often the scheduler looks at the clock.
const TICK: Duration = Duration::from_millis(200);
/// How long the scheduler lease lasts unless renewed.
const LEASE: Duration = Duration::from_secs(3);

/// One configured schedule: refresh `city` on `cron`.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its name: lower-case letters, digits, `-` and `_`.
    pub name: String,
    /// The cron expression as written (5 fields, or 6 with seconds first).
    pub expression: String,
    cron: croner::Cron,
    /// The place refreshed.
    pub city: String,
}

impl Schedule {
    /// The latest run due in `(last, now]`, if any: missed runs collapse
    /// into one.
    pub fn due(&self, last_ms: u64, now_ms: u64) -> Option<u64> {
        let mut at = ms_to_time(last_ms)?;
        let now = ms_to_time(now_ms)?;
        let mut due = None;
        // Bounded: an every-second schedule down for a day looks 86,400
        // times; past the bound, the latest seen is fired.
        for _ in 0..200_000 {
            match self.cron.find_next_occurrence(&at, false) {
                Ok(next) if next <= now => {
                    due = Some(next);
                    at = next;
                }
                _ => break,
            }
        }
        due.map(|t| t.timestamp_millis() as u64)
    }

    /// The first run after `ms`.
    pub fn next_after(&self, ms: u64) -> Option<u64> {
        let at = ms_to_time(ms)?;
        self.cron
            .find_next_occurrence(&at, false)
            .ok()
            .map(|t| t.timestamp_millis() as u64)
    }
}

fn ms_to_time(ms: u64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(i64::try_from(ms).ok()?).single()
}

impl FromStr for Schedule {
    type Err = String;

    /// `name|cron|city`, such as `oslo-hourly|0 * * * *|Oslo`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, '|').map(str::trim);
        let (Some(name), Some(expression), Some(city)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "schedule {s:?}: write name|cron|city, such as oslo-hourly|0 * * * *|Oslo"
            ));
        };
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "schedule name {name:?}: 1 to 64 lower-case letters, digits, - and _"
            ));
        }
        if city.is_empty() || city.chars().count() > 200 || city.chars().any(char::is_control) {
            return Err(format!(
                "schedule {name}: the city {city:?} is not a place name"
            ));
        }
        let cron = croner::Cron::new(expression)
            .with_seconds_optional()
            .parse()
            .map_err(|e| format!("schedule {name}: cron {expression:?}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            expression: expression.to_owned(),
            cron,
            city: city.to_owned(),
        })
    }
}

/// Parses `SCHEDULES` (`;`-separated) and the lines of `SCHEDULES_FILE`
/// (blank lines and `#` comments skipped); names must be unique.
pub fn parse_schedules(inline: &str, file: Option<&str>) -> Result<Vec<Schedule>, String> {
    let lines = inline
        .split(';')
        .chain(file.into_iter().flat_map(str::lines))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let mut schedules: Vec<Schedule> = Vec::new();
    for line in lines {
        let s: Schedule = line.parse()?;
        if schedules.iter().any(|o| o.name == s.name) {
            return Err(format!("schedule {} is defined twice", s.name));
        }
        schedules.push(s);
    }
    Ok(schedules)
}

/// Where a schedule stands, as kept in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    /// The schedule's name.
    pub name: String,
    /// Its last run's due time (ms, Redis clock), if it ran.
    pub last_ms: Option<u64>,
}

/// The scheduler of one worker: see the module docs.
pub struct Scheduler {
    schedules: Vec<Schedule>,
    producer: TracedProducer,
    propagation: Propagation,
    conn: redis_job_queue::RedisConnection,
    /// This worker's name in the lease.
    me: String,
    lease_key: String,
    state_key: String,
    /// The definition span of each schedule, once read or made.
    definitions: HashMap<String, SpanContext>,
}

impl Scheduler {
    /// A scheduler of `schedules` on `queue`, for the worker named `me`.
    pub fn new(
        schedules: Vec<Schedule>,
        queue: &RedisQueue,
        producer: TracedProducer,
        propagation: Propagation,
        me: String,
    ) -> Self {
        Self {
            schedules,
            producer,
            propagation,
            conn: queue.connection(),
            me,
            lease_key: queue.schedule_keys().lease.clone(),
            state_key: queue.schedule_keys().state.clone(),
            definitions: HashMap::new(),
        }
    }

    /// Runs until the task is dropped; does nothing without schedules.
    pub async fn run(mut self) {
        if self.schedules.is_empty() {
            return;
        }
        tracing::info!(
            schedules = self.schedules.len(),
            "scheduler started; the lease holder fires the runs"
        );
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "scheduler tick failed");
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// Fires what is due, if this worker holds the lease.
    async fn tick(&mut self) -> Result<(), QueueError> {
        let lead: i64 = LEAD
            .key(&self.lease_key)
            .arg(&self.me)
            .arg(LEASE.as_millis() as u64)
            .invoke_async(&mut self.conn)
            .await?;
        if lead != 1 {
            return Ok(());
        }
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut self.conn).await?;
        let now = secs * 1000 + micros / 1000;
        for i in 0..self.schedules.len() {
            let schedule = self.schedules[i].clone();
            let last: Option<u64> = redis::cmd("HGET")
                .arg(&self.state_key)
                .arg(format!("{}:last", schedule.name))
                .query_async(&mut self.conn)
                .await?;
            let Some(last) = last else {
                // First seen: its runs start from now, no history.
                self.define(&schedule).await?;
                self.set_last(&schedule, now).await?;
                continue;
            };
            if let Some(due) = schedule.due(last, now) {
                self.fire(&schedule, due).await?;
                self.set_last(&schedule, due).await?;
            }
        }
        Ok(())
    }

    /// Keeps the last run, and what the console shows of the schedule:
    /// its cron, place and next run.
    async fn set_last(&mut self, schedule: &Schedule, ms: u64) -> Result<(), QueueError> {
        let name = &schedule.name;
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&self.state_key)
            .arg(format!("{name}:last"))
            .arg(ms)
            .arg(format!("{name}:cron"))
            .arg(&schedule.expression)
            .arg(format!("{name}:city"))
            .arg(&schedule.city);
        if let Some(next) = schedule.next_after(ms) {
            cmd.arg(format!("{name}:next")).arg(next);
        }
        let _: () = cmd.query_async(&mut self.conn).await?;
        Ok(())
    }

    /// The schedule's definition span: read from Redis, or made and kept
    /// there by the first scheduler to see the schedule.
    async fn define(&mut self, schedule: &Schedule) -> Result<SpanContext, QueueError> {
        if let Some(sc) = self.definitions.get(&schedule.name) {
            return Ok(sc.clone());
        }
        let field = format!("{}:definition", schedule.name);
        let stored: Option<String> = redis::cmd("HGET")
            .arg(&self.state_key)
            .arg(&field)
            .query_async(&mut self.conn)
            .await?;
        let traceparent = match stored {
            Some(tp) => tp,
            None => {
                let span = tracing::info_span!(
                    parent: None,
                    "schedule",
                    otel.name = %format!("schedule {}", schedule.name),
                    "schedule.name" = %schedule.name,
                    "schedule.cron" = %schedule.expression,
                    "weather.place" = %schedule.city,
                );
                let _ = span.set_parent(opentelemetry::Context::new());
                let tp = self
                    .propagation
                    .inject_job(&span.context())
                    .remove("traceparent")
                    .unwrap_or_default();
                drop(span);
                let _: i64 = redis::cmd("HSETNX")
                    .arg(&self.state_key)
                    .arg(&field)
                    .arg(&tp)
                    .query_async(&mut self.conn)
                    .await?;
                redis::cmd("HGET")
                    .arg(&self.state_key)
                    .arg(&field)
                    .query_async(&mut self.conn)
                    .await?
            }
        };
        let cx = self
            .propagation
            .extract_job([("traceparent", traceparent.as_str())]);
        let sc = cx.span().span_context().clone();
        self.definitions.insert(schedule.name.clone(), sc.clone());
        Ok(sc)
    }

    /// Pushes the run due at `due_ms`, in a trace of its own linked to the
    /// schedule's definition.
    async fn fire(&mut self, schedule: &Schedule, due_ms: u64) -> Result<(), QueueError> {
        let definition = self.define(schedule).await?;
        let span = tracing::info_span!(
            parent: None,
            "run schedule",
            otel.name = %format!("run schedule {}", schedule.name),
            "schedule.name" = %schedule.name,
            "schedule.due_ms" = due_ms,
        );
        let _ = span.set_parent(opentelemetry::Context::new());
        if definition.is_valid() {
            span.add_link(definition);
        }
        let job = WeatherJob {
            place: Place::City {
                city: schedule.city.clone(),
            },
            units: Units::default(),
        };
        let (k, v) = TraceMode::Parent.metadata();
        let new = NewJob::new(&job)?
            .with_id(format!("sched-{}-{due_ms}", schedule.name))
            .with_metadata(k, v);
        match self.producer.send(new).instrument(span).await {
            Ok(sent) => {
                tracing::info!(schedule = %schedule.name, job.id = %sent.id, due_ms, "scheduled run fired");
                Ok(())
            }
            // Another holder (one that stalled past its lease) fired it.
            Err(QueueError::DuplicateId(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Takes the lease, or renews it when held; answers 1 when held.
static LEAD: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    fn every_second() -> Schedule {
        "tick|* * * * * *|Oslo".parse().expect("valid")
    }

    #[test]
    fn missed_runs_fire_once_as_the_latest_due() {
        let s = every_second();
        let t0 = 1_800_000_000_000;
        assert_eq!(s.due(t0, t0 + 500), None, "nothing due within the second");
        assert_eq!(s.due(t0, t0 + 1_000), Some(t0 + 1_000));
        assert_eq!(
            s.due(t0, t0 + 3_600_000 + 250),
            Some(t0 + 3_600_000),
            "an hour down: one run, the latest"
        );
        let hourly: Schedule = "h|0 * * * *|Oslo".parse().expect("valid");
        // t0 is on the hour: the next run is an hour later.
        assert_eq!(hourly.next_after(t0), Some(t0 + 3_600_000));
    }

    #[test]
    fn schedules_parse_or_say_what_is_wrong() {
        let all = parse_schedules(
            "a|*/5 * * * *|Oslo; b|0 0 * * * *|Bergen",
            Some("# comment\n\nc|@hourly|Tromsø\n"),
        )
        .expect("valid");
        let names: Vec<_> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        for (bad, want) in [
            ("a|* * * * *", "name|cron|city"),
            ("A|* * * * *|Oslo", "lower-case"),
            ("a|every day|Oslo", "cron"),
            ("a|* * * * *|", "not a place"),
            ("a|* * * * *|Oslo;a|* * * * *|Bergen", "defined twice"),
        ] {
            let err = parse_schedules(bad, None).expect_err(bad);
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}

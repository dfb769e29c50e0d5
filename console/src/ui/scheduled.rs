//! The Scheduled page's content: what waits for its time, the delayed
//! jobs with the time each will run, and the schedules with their last
//! and next runs. (The page around it is one of the live pages of
//! `pages.rs`, which refresh this part every few seconds.)

use std::collections::BTreeMap;

use maud::{Markup, html};
use redis_job_queue::{JobStatus, RedisQueue};

use super::actions::button;
use redis_job_queue::rfc3339_ms;

/// The delayed jobs and the schedules.
pub(crate) async fn body(queue: &RedisQueue) -> Markup {
    let jobs = queue.list(JobStatus::Scheduled, None, 50).await;
    let schedules = schedules(queue).await;
    html! {
        section aria-labelledby="delayed-h" {
            h2 #delayed-h { "Delayed jobs" }
            @match &jobs {
                Err(e) => p.notice role="status" { "The delayed jobs could not be read: " (e.to_string()) },
                Ok(page) if page.jobs.is_empty() => p { "No job waits for its time." },
                Ok(page) => table.delayed {
                    caption { "The next 50 jobs to run, soonest first (retries too)" }
                    thead { tr { th scope="col" { "Job" } th scope="col" { "Runs at" } th scope="col" { "Attempts" } th scope="col" { "" } } }
                    tbody {
                        @for r in &page.jobs {
                            tr {
                                td data-label="Job" { a href=(format!("/jobs/{}", r.id)) { code { (r.id) } } }
                                td data-label="Runs at" { (r.run_at_ms.map(rfc3339_ms).unwrap_or_default()) }
                                td data-label="Attempts" { (r.attempts) }
                                td { (button(&format!("/ui/jobs/{}/cancel", r.id), "Cancel")) }
                            }
                        }
                    }
                },
            }
        }
        section aria-labelledby="schedules-h" {
            h2 #schedules-h { "Schedules" }
            @match &schedules {
                Err(e) => p.notice role="status" { "The schedules could not be read: " (e) },
                Ok(list) if list.is_empty() => p { "No schedule has run (workers take them from SCHEDULES)." },
                Ok(list) => table.schedules {
                    thead { tr { th scope="col" { "Schedule" } th scope="col" { "Cron" } th scope="col" { "Place" } th scope="col" { "Last run" } th scope="col" { "Next run" } } }
                    tbody {
                        @for s in list {
                            tr {
                                td data-label="Schedule" { code { (s.name) } }
                                td data-label="Cron" { code { (s.cron) } }
                                td data-label="Place" { (s.city) }
                                td data-label="Last run" { (s.last_ms.map(rfc3339_ms).unwrap_or_default()) }
                                td data-label="Next run" { (s.next_ms.map(rfc3339_ms).unwrap_or_default()) }
                            }
                        }
                    }
                },
            }
        }
    }
}

/// A schedule as the workers' scheduler keeps it in Redis.
#[derive(Debug, Default)]
struct ScheduleRow {
    name: String,
    cron: String,
    city: String,
    last_ms: Option<u64>,
    next_ms: Option<u64>,
}

/// The schedules, from the hash the scheduler writes
/// (`{name}:cron`, `:city`, `:last`, `:next`).
async fn schedules(queue: &RedisQueue) -> Result<Vec<ScheduleRow>, String> {
    let key = &queue.schedule_keys().state;
    let mut conn = queue.connection();
    let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows: BTreeMap<String, ScheduleRow> = Default::default();
    for (field, value) in fields {
        let Some((name, what)) = field.rsplit_once(':') else {
            continue;
        };
        let row = rows.entry(name.to_owned()).or_insert_with(|| ScheduleRow {
            name: name.to_owned(),
            ..ScheduleRow::default()
        });
        match what {
            "cron" => row.cron = value,
            "city" => row.city = value,
            "last" => row.last_ms = value.parse().ok(),
            "next" => row.next_ms = value.parse().ok(),
            _ => {}
        }
    }
    Ok(rows.into_values().filter(|r| !r.cron.is_empty()).collect())
}

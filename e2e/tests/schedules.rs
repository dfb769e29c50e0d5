//! Schedules: three workers, one run per tick; missed runs fired once.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::{Stack, WAIT, tag};
use serde_json::Value;

/// The due times (ms) of the runs of schedule `tick` that succeeded.
async fn runs(stack: &Stack) -> anyhow::Result<Vec<u64>> {
    let res = stack
        .http
        .get(format!(
            "{}/v1/jobs?status=succeeded&limit=500",
            stack.api_url
        ))
        .send()
        .await?;
    let page: Value = res.json().await?;
    let mut due: Vec<u64> = page["jobs"]
        .as_array()
        .context("jobs")?
        .iter()
        .filter_map(|j| j["id"].as_str()?.strip_prefix("sched-tick-")?.parse().ok())
        .collect();
    due.sort_unstable();
    Ok(due)
}

async fn wait_runs(stack: &Stack, at_least: usize, after: u64) -> anyhow::Result<Vec<u64>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let due = runs(stack).await?;
        if due.iter().filter(|d| **d > after).count() >= at_least {
            return Ok(due);
        }
        if Instant::now() > deadline {
            bail!("fewer than {at_least} runs after {after}: {due:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn three_workers_fire_each_run_once_and_missed_runs_once_after_an_outage()
-> anyhow::Result<()> {
    let every_second = [("SCHEDULES", "tick|* * * * * *|Oslo")];
    let mut stack = Stack::start_with(&[], &every_second).await?;
    stack.add_worker().await?;

    let due = wait_runs(&stack, 4, 0).await?;
    for pair in due.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "one run per second: {due:?}");
    }

    // Every worker stops; three seconds pass; one comes back.
    let before = *due.last().context("a run")?;
    for worker in stack.workers.drain(..) {
        worker.stop(Duration::from_secs(10)).await?;
    }
    stack.worker_urls.clear();
    let stopped = *runs(&stack).await?.last().context("a run")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.add_worker().await?;
    let due = wait_runs(&stack, 3, stopped).await?;
    let after: Vec<u64> = due.into_iter().filter(|d| *d > stopped).collect();
    assert!(
        after[0] - stopped >= 3000,
        "the missed runs were fired as one (the latest): {stopped} then {after:?}"
    );
    for pair in after.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "then one per second: {after:?}");
    }
    assert!(before <= stopped);

    // In the trace: one run span per run, each its own trace, linked to
    // the one definition span; no second push of a run.
    let zipkin = stack.flush().await?;
    let spans = zipkin.spans();
    let run_spans: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == "run schedule tick")
        .collect();
    let pushed: Vec<&Value> = spans
        .iter()
        .filter(|s| {
            s["kind"] == "PRODUCER" && tag(s, "messaging.message.id").starts_with("sched-tick-")
        })
        .collect();
    assert!(
        pushed.iter().all(|s| tag(s, "error.type").is_empty()),
        "a run was pushed twice: {pushed:#?}"
    );
    assert_eq!(run_spans.len(), pushed.len());
    let definition = spans
        .iter()
        .find(|s| s["name"] == "schedule tick")
        .context("the schedule's definition span")?;
    let to_definition = format!(
        "{}-{}",
        definition["traceId"].as_str().unwrap_or_default(),
        definition["id"].as_str().unwrap_or_default()
    );
    let mut traces = std::collections::HashSet::new();
    for run in &run_spans {
        assert!(run.get("parentId").is_none(), "a root: {run}");
        assert_eq!(tag(run, "otel.link.0"), to_definition, "{run}");
        traces.insert(run["traceId"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(traces.len(), run_spans.len(), "a trace per run");
    Ok(())
}

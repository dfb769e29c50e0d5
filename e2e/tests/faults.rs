//! Faults, with real processes on loopback: workers killed or stopped in
//! the middle of jobs, Redis restarted under them, jobs longer than their
//! lease or hung, and workers whose clock is off.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use e2e::{Options, Stack, WAIT, skewed_clock_env, sum};
use serde_json::Value;

#[tokio::test]
async fn a_job_whose_worker_is_killed_mid_job_succeeds_as_a_linked_attempt_of_its_trace()
-> anyhow::Result<()> {
    // Slow weather answers keep the job running long enough to kill its
    // worker; a short lease hands it over soon after.
    let mut stack =
        Stack::start_with(&[("STUB_LATENCY_MS", "1500")], &[("JOB_LEASE_SECS", "1")]).await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Bergen"}"#, &[]).await?;

    let victim = stack.worker_running(&id).await?;
    let pid = stack.workers[victim].pid().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()?;
    assert!(killed.success());

    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "the survivor ran it again: {done}");
    assert!(stack.workers[1 - victim].is_running());

    // The re-run is the trace's CONSUMER span for attempt 2: under the
    // api's PRODUCER span, linked to it.
    let (producer, consumer) = stack
        .zipkin
        .wait_for(WAIT, "the second attempt's span", |spans| {
            let of_trace = || spans.iter().filter(|s| s["traceId"] == trace.as_str());
            let producer = of_trace().find(|s| s["kind"] == "PRODUCER")?.clone();
            let consumer = of_trace()
                .find(|s| s["kind"] == "CONSUMER" && s["tags"]["job.attempt"] == "2")?
                .clone();
            Some((producer, consumer))
        })
        .await?;
    assert_eq!(consumer["parentId"], producer["id"]);
    assert_eq!(
        consumer["tags"]["otel.link.0"],
        format!("{trace}-{}", producer["id"].as_str().unwrap_or_default())
    );
    assert!(!stack.workers[victim].is_running(), "the victim stays dead");
    Ok(())
}

#[tokio::test]
async fn workers_a_minute_ahead_of_redis_count_as_live_and_measure_queue_waits_right()
-> anyhow::Result<()> {
    let skew = skewed_clock_env("+60s")?;
    let env: Vec<(&'static str, &str)> = skew.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stack = Stack::start_with(&[], &env).await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Tromsø"}"#, &[]).await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");

    let consumer = stack
        .zipkin
        .wait_for(WAIT, "the job's CONSUMER span", |spans| {
            spans
                .iter()
                .find(|s| s["traceId"] == trace.as_str() && s["kind"] == "CONSUMER")
                .cloned()
        })
        .await?;
    // The skew is real: the worker stamps its spans a minute ahead.
    let now_us = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64;
    let ahead_s = (consumer["timestamp"].as_i64().context("timestamp")? - now_us) / 1_000_000;
    assert!(
        (50..=70).contains(&ahead_s),
        "worker clock {ahead_s} s ahead"
    );
    // Waits are measured on Redis's clock at both ends, not a minute long.
    let wait_ms: u64 = consumer["tags"]["job.queue_wait_ms"]
        .as_str()
        .context("job.queue_wait_ms")?
        .parse()?;
    assert!(wait_ms < 5_000, "queue wait {wait_ms} ms: {consumer}");

    // Both workers heart-beat on Redis's clock: the gauge the
    // NoLiveWorkers alert reads counts them. A worker's first heartbeat
    // comes from a task of its own, in no order with the job above.
    for url in &stack.worker_urls {
        testkit::eventually(
            &format!("{url} counting both workers live"),
            WAIT,
            Duration::from_millis(100),
            || async {
                let page = stack.scrape(url).await?;
                let live = sum(&page, "jobs_live_workers", &[]);
                if live != 2.0 {
                    bail!("jobs_live_workers is {live}: {page}");
                }
                Ok(Some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// Posts `n` jobs for distinct places (so none is a cache hit); answers
/// their ids and trace ids.
async fn post_many(stack: &Stack, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut jobs = Vec::new();
    for i in 0..n {
        jobs.push(
            stack
                .enqueue(&format!(r#"{{"city": "Place {i}"}}"#), &[])
                .await?,
        );
    }
    Ok(jobs)
}

/// The CONSUMER spans of a trace.
fn consumer_spans(spans: &[Value], trace: &str) -> Vec<Value> {
    spans
        .iter()
        .filter(|s| s["traceId"] == trace && s["kind"] == "CONSUMER")
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_worker_stopped_under_load_finishes_its_jobs_and_exits_0_within_the_grace()
-> anyhow::Result<()> {
    let mut stack = Stack::start_with(
        &[("STUB_LATENCY_MS", "150")],
        &[("WORKER_CONCURRENCY", "4"), ("SHUTDOWN_GRACE_SECS", "10")],
    )
    .await?;
    let jobs = post_many(&stack, 40).await?;
    let victim = stack.worker_running(&jobs[0].0).await?;
    let started = Instant::now();
    let status = stack
        .workers
        .remove(victim)
        .stop(Duration::from_secs(15))
        .await?;
    let took = started.elapsed();
    assert!(status.success(), "the worker exited {status}");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");

    let mut ran_twice = 0;
    for (id, _) in &jobs {
        let done = stack.wait_done(id).await?;
        assert_eq!(done["status"], "succeeded", "{done}");
        ran_twice += usize::from(done["attempts"] != 1);
    }
    assert_eq!(ran_twice, 0, "jobs run twice");
    // The stopped worker flushed its spans on the way out: every job has
    // exactly one CONSUMER span.
    let zipkin = stack.flush().await?;
    let spans = zipkin.spans();
    for (id, trace) in &jobs {
        let consumers = consumer_spans(&spans, trace);
        assert_eq!(consumers.len(), 1, "job {id}: {consumers:#?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_worker_whose_job_outlasts_the_grace_exits_and_the_job_runs_again_elsewhere()
-> anyhow::Result<()> {
    let mut stack = Stack::start_with(
        &[("STUB_LATENCY_MS", "2000")],
        &[("SHUTDOWN_GRACE_SECS", "1"), ("JOB_LEASE_SECS", "1")],
    )
    .await?;
    let (id, _) = stack.enqueue(r#"{"city": "Bergen"}"#, &[]).await?;
    let victim = stack.worker_running(&id).await?;
    let started = Instant::now();
    let status = stack
        .workers
        .remove(victim)
        .stop(Duration::from_secs(10))
        .await?;
    assert!(status.success(), "the worker exited {status}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the grace is 1 s; stopping took {took:?}"
    );
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    Ok(())
}

/// Whether consumer `name` belongs to the process `pid`
/// (`{host}-{pid}-{random}`).
fn of_pid(name: &str, pid: &str) -> bool {
    name.split('-').rev().nth(1) == Some(pid)
}

#[tokio::test]
async fn workers_killed_again_and_again_are_reaped_from_the_group() -> anyhow::Result<()> {
    let mut stack =
        Stack::start_with(&[("STUB_LATENCY_MS", "400")], &[("JOB_LEASE_SECS", "1")]).await?;
    let mut killed = Vec::new();
    let mut held_jobs = 0;
    for round in 0..3 {
        let i = stack.add_worker().await?;
        let pid = stack.workers[i].pid().to_string();
        // It heart-beats into the live set at once...
        let deadline = Instant::now() + WAIT;
        while !stack.live_set().await?.iter().any(|c| of_pid(c, &pid)) {
            if Instant::now() > deadline {
                bail!("worker {pid} never heart-beat");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ...and joins the group with the first job it takes: slow jobs
        // spread over the three workers.
        let jobs: Vec<_> = (0..12)
            .map(|j| format!(r#"{{"city": "Kill {round} {j}"}}"#))
            .collect();
        for body in &jobs {
            stack.enqueue(body, &[]).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if stack
                .group_consumers()
                .await?
                .iter()
                .any(|c| of_pid(c, &pid))
            {
                held_jobs += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()?;
        assert!(status.success());
        killed.push(pid);
    }
    assert!(held_jobs > 0, "no killed worker ever held a job");
    // Silent for three leases, and holding nothing once their jobs were
    // reclaimed: the live workers' housekeeping deletes them.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut left = stack.group_consumers().await?;
        left.extend(stack.live_set().await?);
        left.retain(|c| killed.iter().any(|pid| of_pid(c, pid)));
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("dead consumers are still known: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_job_longer_than_its_lease_is_renewed_and_runs_once() -> anyhow::Result<()> {
    // Two weather calls of 1.2 s each: the job holds its lease of 1 s for
    // more than two leases, with a second worker ready to take it over.
    let stack =
        Stack::start_with(&[("STUB_LATENCY_MS", "1200")], &[("JOB_LEASE_SECS", "1")]).await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Reykjavik"}"#, &[]).await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    let zipkin = stack.flush().await?;
    let consumers = consumer_spans(&zipkin.spans(), &trace);
    assert_eq!(consumers.len(), 1, "{consumers:#?}");
    let took_us = consumers[0]["duration"].as_u64().context("duration")?;
    assert!(
        took_us > 2_000_000,
        "the job ran {took_us} µs, not past its lease"
    );
    Ok(())
}

#[tokio::test]
async fn a_hung_job_times_out_and_is_retried_by_the_policy() -> anyhow::Result<()> {
    let stack =
        Stack::start_with(&[("STUB_LATENCY_MS", "3000")], &[("JOB_TIMEOUT_SECS", "1")]).await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Lagos"}"#, &[]).await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(
        done["attempts"], 3,
        "the api's budget, JOB_MAX_ATTEMPTS: {done}"
    );
    let zipkin = stack.flush().await?;
    let consumers = consumer_spans(&zipkin.spans(), &trace);
    assert_eq!(consumers.len(), 3, "{consumers:#?}");
    for span in &consumers {
        assert_eq!(span["tags"]["error.type"], "timeout", "{span}");
    }
    Ok(())
}

#[tokio::test]
async fn jobs_survive_a_redis_restart_longer_than_the_lease_and_none_runs_twice()
-> anyhow::Result<()> {
    let mut stack = Stack::launch(Options {
        stub_env: &[("STUB_LATENCY_MS", "300")],
        worker_env: &[("JOB_LEASE_SECS", "1")],
        persistent_redis: true,
        ..Options::default()
    })
    .await?;
    let jobs = post_many(&stack, 30).await?;
    stack.worker_running(&jobs[0].0).await?;
    // Down for three leases while jobs run.
    stack.restart_redis(Duration::from_secs(3)).await?;
    let mut ran_twice = Vec::new();
    for (id, _) in &jobs {
        let done = stack.wait_done(id).await?;
        assert_eq!(done["status"], "succeeded", "{done}");
        if done["attempts"] != 1 {
            ran_twice.push(done);
        }
    }
    println!(
        "{} of {} jobs ran twice across the restart",
        ran_twice.len(),
        jobs.len()
    );
    assert!(ran_twice.is_empty(), "jobs run twice: {ran_twice:#?}");
    Ok(())
}

#[tokio::test]
async fn the_whole_system_runs_over_redis_with_tls_and_a_password() -> anyhow::Result<()> {
    let stack = Stack::launch(Options {
        tls_redis: true,
        ..Options::default()
    })
    .await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Helsinki"}"#, &[]).await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Queue and cache both went over it: the whole trace is there.
    stack.job_trace(&trace, 2).await?;
    Ok(())
}

//! Faults, with real processes on loopback: a worker killed in the middle
//! of a job, and workers whose clock is off.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use e2e::{Stack, WAIT, skewed_clock_env, sum};

#[tokio::test]
async fn a_job_whose_worker_is_killed_mid_job_succeeds_as_a_linked_attempt_of_its_trace()
-> anyhow::Result<()> {
    // Slow weather answers keep the job running long enough to kill its
    // worker; a short lease hands it over soon after.
    let mut stack =
        Stack::start_with(&[("STUB_LATENCY_MS", "1500")], &[("JOB_LEASE_SECS", "1")]).await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Bergen"}"#, &[]).await?;

    // The worker running it: consumer names are `{host}-{pid}-{random}`.
    let deadline = Instant::now() + WAIT;
    let worker = loop {
        let doc = stack.job(&id).await?;
        if doc["status"] == "running"
            && let Some(w) = doc["worker"].as_str()
        {
            break w.to_owned();
        }
        if Instant::now() > deadline {
            bail!("job {id} never ran: {doc}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim = stack
        .workers
        .iter()
        .position(|w| worker.split('-').rev().nth(1) == Some(w.pid().to_string().as_str()))
        .with_context(|| format!("no worker process is {worker}"))?;
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
    // NoLiveWorkers alert reads counts them.
    for url in &stack.worker_urls {
        let page = stack.scrape(url).await?;
        assert_eq!(sum(&page, "jobs_live_workers", &[]), 2.0, "{url}: {page}");
    }
    Ok(())
}

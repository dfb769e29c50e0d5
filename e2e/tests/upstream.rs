//! Protecting the weather service: the circuit breaker, single flight,
//! the shared rate limit, and a 429's Retry-After.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::{Options, Stack, WAIT, sum};
use serde_json::{Value, json};

/// Calls the workers made to the weather service, all together.
async fn upstream_calls(stack: &Stack) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for url in &stack.worker_urls {
        let page = stack.scrape(url).await?;
        total += sum(&page, "http_client_request_duration_seconds_count", &[]);
    }
    Ok(total)
}

/// `metric` on every worker's page.
async fn per_worker(stack: &Stack, metric: &str) -> anyhow::Result<Vec<f64>> {
    let mut values = Vec::new();
    for url in &stack.worker_urls {
        values.push(sum(&stack.scrape(url).await?, metric, &[]));
    }
    Ok(values)
}

async fn set_failures(stack: &Stack, failures: Value) -> anyhow::Result<()> {
    let stub = stack.stub_url.clone();
    let res = stack
        .http
        .put(format!("{stub}stub/failures"))
        .json(&failures)
        .send()
        .await?;
    anyhow::ensure!(res.status() == 200, "the stub answered {}", res.status());
    Ok(())
}

fn has_annotation(spans: &[Value], text: &str) -> bool {
    spans.iter().any(|s| {
        s["annotations"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["value"].as_str().unwrap_or_default().contains(text))
        })
    })
}

/// Waits (up to `limit`) until every job in `ids` has finished; answers
/// their status documents.
async fn wait_all_done(
    stack: &Stack,
    ids: &[String],
    limit: Duration,
) -> anyhow::Result<Vec<Value>> {
    let mut docs = Vec::new();
    for id in ids {
        let doc = testkit::wait_for_job(
            id,
            "finished",
            limit,
            || stack.job(id),
            |doc| doc["status"] == "succeeded" || doc["status"] == "failed",
        )
        .await?;
        docs.push(doc);
    }
    Ok(docs)
}

#[tokio::test]
async fn a_service_failing_half_its_calls_fails_almost_no_job() -> anyhow::Result<()> {
    let stack = Stack::launch(Options {
        stub_env: &[("STUB_FAIL_RATE", "0.5")],
        api_env: &[("JOB_MAX_ATTEMPTS", "4")],
        ..Options::default()
    })
    .await?;
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(
            stack
                .enqueue(&format!(r#"{{"city": "Flaky {i}"}}"#), &[])
                .await?
                .0,
        );
    }
    let docs = wait_all_done(&stack, &ids, Duration::from_secs(120)).await?;
    let succeeded = docs.iter().filter(|d| d["status"] == "succeeded").count();
    eprintln!("{succeeded} of 100 jobs succeeded");
    assert!(
        succeeded >= 90,
        "only {succeeded} of 100 jobs succeeded: {:?}",
        docs.iter()
            .filter(|d| d["status"] != "succeeded")
            .map(|d| d["error"].clone())
            .collect::<Vec<_>>()
    );
    let zipkin = stack.flush().await?;
    assert!(
        zipkin
            .spans()
            .iter()
            .any(|s| s["kind"] == "CLIENT" && s["tags"]["http.request.resend_count"] == "1"),
        "failed calls were sent again, and their spans say so"
    );
    Ok(())
}

#[tokio::test]
async fn a_service_down_for_40_s_fails_no_job_and_refusals_use_no_attempt() -> anyhow::Result<()> {
    let stack = Stack::launch(Options {
        stub_env: &[("STUB_FAIL_RATE", "1")],
        api_env: &[("JOB_MAX_ATTEMPTS", "4")],
        ..Options::default()
    })
    .await?;
    let down_since = Instant::now();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            stack
                .enqueue(&format!(r#"{{"city": "Outage {i}"}}"#), &[])
                .await?
                .0,
        );
    }
    let deadline = Instant::now() + WAIT;
    while per_worker(&stack, "weather_circuit_state").await? != [1.0, 1.0] {
        if Instant::now() > deadline {
            bail!("the breakers never both opened");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Open: no call reaches the service during the cool-down.
    let before = upstream_calls(&stack).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        upstream_calls(&stack).await?,
        before,
        "calls went out while open"
    );
    if let Some(rest) = Duration::from_secs(40).checked_sub(down_since.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    set_failures(
        &stack,
        json!({ "fail_rate": 0.0, "status": 503, "retry_after_secs": 0 }),
    )
    .await?;
    let docs = wait_all_done(&stack, &ids, Duration::from_secs(60)).await?;
    for doc in &docs {
        assert_eq!(doc["status"], "succeeded", "{doc}");
    }
    assert!(
        docs.iter().any(|d| d["deferrals"].as_u64() > Some(0)),
        "jobs were deferred while the breaker was open: {docs:?}"
    );
    // A breaker closes on a successful probe: a worker that ran no job
    // since it opened has not probed yet, so keep jobs coming until both
    // have.
    let deadline = Instant::now() + WAIT;
    let mut more = 0;
    while per_worker(&stack, "weather_circuit_state").await? != [0.0, 0.0] {
        if Instant::now() > deadline {
            bail!("the breakers never closed");
        }
        more += 1;
        let (id, _) = stack
            .enqueue(&format!(r#"{{"city": "Recovered {more}"}}"#), &[])
            .await?;
        stack.wait_done(&id).await?;
    }
    // Every attempt a job used is one whose calls failed: its CONSUMER
    // spans that ended in error, and the last, which succeeded. The runs
    // the breaker refused are there too, as deferrals, and used none.
    let zipkin = stack.flush().await?;
    let spans = zipkin.spans();
    let mut deferred_runs = 0;
    for doc in &docs {
        let id = doc["id"].as_str().context("id")?;
        let runs: Vec<&Value> = spans
            .iter()
            .filter(|s| s["kind"] == "CONSUMER" && s["tags"]["job.id"] == id)
            .collect();
        let failed = runs
            .iter()
            .filter(|s| s["tags"]["otel.status_code"] == "ERROR")
            .count();
        let deferred = runs
            .iter()
            .filter(|s| s["tags"].get("job.deferred_ms").is_some())
            .count();
        deferred_runs += deferred;
        assert_eq!(
            doc["attempts"].as_u64(),
            Some(failed as u64 + 1),
            "{id}: attempts are the failed runs and the last; {deferred} deferred runs used none"
        );
        assert_eq!(doc["deferrals"].as_u64(), Some(deferred as u64), "{doc}");
    }
    assert!(deferred_runs > 0, "some runs were deferred");
    assert!(has_annotation(&spans, "circuit opened"));
    assert!(has_annotation(&spans, "circuit closed"));
    assert!(has_annotation(
        &spans,
        "deferred: the job could not run now"
    ));
    Ok(())
}

#[tokio::test]
async fn concurrent_jobs_for_one_place_make_one_upstream_fetch() -> anyhow::Result<()> {
    let stack = Stack::start_with(&[("STUB_LATENCY_MS", "400")], &[]).await?;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(stack.enqueue(r#"{"city": "Samecity"}"#, &[]).await?.0);
    }
    for id in &ids {
        assert_eq!(stack.wait_done(id).await?["status"], "succeeded");
    }
    assert_eq!(
        upstream_calls(&stack).await?,
        2.0,
        "one geocode, one forecast"
    );
    let waits: f64 = per_worker(&stack, "weather_single_flight_waits_total")
        .await?
        .iter()
        .sum();
    assert!(waits >= 1.0, "jobs waited for the one fetch: {waits}");
    let zipkin = stack.flush().await?;
    assert!(has_annotation(
        &zipkin.spans(),
        "waited for a concurrent fetch"
    ));
    Ok(())
}

#[tokio::test]
async fn the_shared_rate_limit_spaces_the_calls_of_every_worker() -> anyhow::Result<()> {
    let stack = Stack::start_with(&[], &[("WEATHER_RATE_LIMIT", "2")]).await?;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            stack
                .enqueue(&format!(r#"{{"city": "Limit {i}"}}"#), &[])
                .await?
                .0,
        );
    }
    for id in &ids {
        assert_eq!(stack.wait_done(id).await?["status"], "succeeded");
    }
    let limited: f64 = per_worker(&stack, "weather_rate_limited_total")
        .await?
        .iter()
        .sum();
    assert!(limited >= 1.0, "calls waited: {limited}");
    let zipkin = stack.flush().await?;
    let spans = zipkin.spans();
    let mut starts: Vec<u64> = spans
        .iter()
        .filter(|s| s["kind"] == "CLIENT" && s["tags"]["peer.service"] == "weather-service")
        .filter_map(|s| s["timestamp"].as_u64())
        .collect();
    starts.sort_unstable();
    assert_eq!(starts.len(), 10, "two calls per job");
    // Ten calls at two a second fill five one-second windows: more than
    // three seconds from the first to the last (the first window may be
    // nearly over). Unlimited, they take milliseconds.
    let spread = starts[9] - starts[0];
    assert!(spread >= 3_000_000, "ten calls within {spread} µs");
    assert!(has_annotation(&spans, "rate limited"));
    Ok(())
}

#[tokio::test]
async fn a_rate_limit_that_cannot_be_read_keeps_the_gate_shut() -> anyhow::Result<()> {
    // Refused runs are deferrals, not attempts, for at most 2 s of them.
    let stack = Stack::launch(Options {
        worker_env: &[("WEATHER_RATE_LIMIT", "2"), ("JOB_MAX_DEFER_SECS", "2")],
        console: true,
        ..Options::default()
    })
    .await?;
    // The limit's key holds a value of the wrong type: its script fails.
    let mut conn = stack.redis_connection().await?;
    let _: () = redis::cmd("SET")
        .arg("jobs:weather:ratelimit")
        .arg("not a hash")
        .query_async(&mut conn)
        .await?;
    let (id, _) = stack.enqueue(r#"{"city": "Gatekeep"}"#, &[]).await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error_type"], "rate_limit_unavailable", "{done}");
    assert_eq!(
        done["attempts"], done["max_attempts"],
        "every attempt: {done}"
    );
    assert_eq!(
        done["deferrals"], 2,
        "deferred (1 s each) up to 2 s first: {done}"
    );
    assert!(
        done["error"]
            .as_str()
            .unwrap_or_default()
            .contains("counted as an attempt"),
        "{done}"
    );
    // The job's console page shows the deferrals and why.
    let page = stack
        .http
        .get(format!("{}/jobs/{id}", stack.console_url()?))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        page.contains("2 times, 2000 ms in all; not attempts")
            && page.contains("the shared rate limit is unavailable"),
        "{page}"
    );
    // And the queue's page counts them.
    let page = stack
        .http
        .get(format!("{}/queues", stack.console_url()?))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        page.contains("1 job enqueued,") && page.contains(" 2 runs deferred (not attempts)"),
        "{page}"
    );
    assert_eq!(
        upstream_calls(&stack).await?,
        0.0,
        "the service was never called"
    );
    Ok(())
}

/// A stack whose weather service answers every call `429` with
/// `Retry-After: {retry_after}`; the job posted to it, once it is scheduled
/// for its retry: its id, trace id, status document, and the wait until
/// the retry in milliseconds.
async fn rate_limited_job(
    retry_after: &str,
) -> anyhow::Result<(Stack, String, String, Value, u128)> {
    let stack = Stack::start_with(
        &[
            ("STUB_FAIL_RATE", "1"),
            ("STUB_FAIL_STATUS", "429"),
            ("STUB_RETRY_AFTER_SECS", retry_after),
        ],
        &[],
    )
    .await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Patient"}"#, &[]).await?;
    let doc = stack
        .wait_job(&id, "scheduled for a retry", |doc| {
            doc["status"] == "scheduled" && doc["attempts"] == 1
        })
        .await?;
    let ms = |f: &str| -> anyhow::Result<u128> {
        let t = humantime::parse_rfc3339(doc[f].as_str().context("time")?)?;
        Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_millis())
    };
    let wait = ms("run_at")? - ms("started_at")?;
    Ok((stack, id, trace, doc, wait))
}

#[tokio::test]
async fn a_429s_retry_after_sets_when_the_job_runs_again() -> anyhow::Result<()> {
    let (stack, id, _, doc, wait) = rate_limited_job("2").await?;
    assert!(
        wait >= 1_900,
        "retried after {wait} ms, not the 2 s asked: {doc}"
    );
    set_failures(
        &stack,
        json!({ "fail_rate": 0.0, "status": 503, "retry_after_secs": 0 }),
    )
    .await?;
    assert_eq!(stack.wait_done(&id).await?["status"], "succeeded");
    Ok(())
}

#[tokio::test]
async fn a_retry_after_past_an_hour_is_cut_to_an_hour_and_the_span_says_so() -> anyhow::Result<()> {
    // Ten days asked.
    let (stack, _, trace, doc, wait) = rate_limited_job("864000").await?;
    assert!(
        (3_590_000..=3_610_000).contains(&wait),
        "retried after {wait} ms, not an hour (ten days were asked): {doc}"
    );
    let said = stack
        .zipkin
        .wait_for(WAIT, "the job span's retry event", |spans| {
            spans
                .iter()
                .filter(|s| s["traceId"] == trace.as_str())
                .flat_map(|s| s["annotations"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a["value"].as_str().map(str::to_owned))
                .find(|v| v.contains("retry after"))
        })
        .await?;
    assert!(
        said.contains(r#""retry_after.capped":true"#)
            && said.contains(r#""retry_after.used_s":"3600""#),
        "the job's span says the wait was capped: {said:?}"
    );
    Ok(())
}

/// A weather service that answers every geocoding call with `answer`.
async fn hostile_service(
    answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/v1/search",
        axum::routing::get(move || {
            let answer = answer.clone();
            async move { answer() }
        }),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, server))
}

#[tokio::test]
async fn an_oversized_answer_fails_the_job_and_a_redirect_is_not_followed() -> anyhow::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;

    // Two megabytes of JSON, past the 1 MiB the worker reads.
    let big = format!(r#"{{"results": [], "pad": "{}"}}"#, "x".repeat(2 << 20));
    let (huge, huge_server) = hostile_service(move || {
        ([(header::CONTENT_TYPE, "application/json")], big.clone()).into_response()
    })
    .await?;
    let stack = Stack::launch(Options {
        worker_env: &[("GEOCODING_BASE_URL", &huge)],
        ..Options::default()
    })
    .await?;
    let (id, _) = stack.enqueue(r#"{"city": "Oslo"}"#, &[]).await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempts"], 1, "not retried: {done}");
    assert!(
        done["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than 1048576 bytes")),
        "{done}"
    );
    huge_server.abort();

    // A redirect, to the stub itself: not followed.
    let (moved, moved_server) = {
        let to = format!("{}v1/search?name=Oslo", stack.stub_url);
        hostile_service(move || {
            (StatusCode::FOUND, [(header::LOCATION, to.clone())]).into_response()
        })
        .await?
    };
    let stack = Stack::launch(Options {
        worker_env: &[("GEOCODING_BASE_URL", &moved)],
        ..Options::default()
    })
    .await?;
    let (id, _) = stack.enqueue(r#"{"city": "Oslo"}"#, &[]).await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"]
            .as_str()
            .is_some_and(|e| e.contains("302") && e.contains("not followed")),
        "{done}"
    );
    moved_server.abort();
    Ok(())
}

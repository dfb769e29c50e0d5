//! What a producer can ask of a job, seen in the trace: a delay, its own
//! trace mode, a cancel, an idempotent repeat.

use anyhow::{Context, bail};
use e2e::{Stack, WAIT, tag};
use serde_json::Value;

/// The PRODUCER and CONSUMER spans of job `id`, wherever they are.
async fn producer_and_consumer(stack: &Stack, id: &str) -> anyhow::Result<(Value, Value)> {
    stack
        .zipkin
        .wait_for(WAIT, &format!("the spans of job {id}"), |spans| {
            let of = |kind: &str| {
                spans
                    .iter()
                    .find(|s| s["kind"] == kind && tag(s, "messaging.message.id") == id)
                    .cloned()
            };
            Some((of("PRODUCER")?, of("CONSUMER")?))
        })
        .await
}

#[tokio::test]
async fn a_delayed_job_is_scheduled_then_runs_and_its_trace_shows_the_wait() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (status, accepted) = stack
        .post(r#"{"city": "Tallinn", "delay_secs": 1.5}"#, &[])
        .await?;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "scheduled");
    let id = accepted["id"].as_str().context("id")?;
    let doc = stack.job(id).await?;
    assert_eq!(doc["status"], "scheduled", "{doc}");
    assert!(doc["run_at"].is_string(), "{doc}");
    let done = stack.wait_done(id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");

    let (producer, consumer) = producer_and_consumer(&stack, id).await?;
    assert_eq!(tag(&producer, "job.delay_ms"), "1500", "{producer}");
    let wait: u64 = tag(&consumer, "job.queue_wait_ms").parse()?;
    assert!(wait >= 1500, "the consumer waited {wait} ms");
    let gap_us = consumer["timestamp"].as_u64().context("ts")?
        - producer["timestamp"].as_u64().context("ts")?;
    assert!(
        gap_us >= 1_500_000,
        "the work started {gap_us} µs after the push"
    );
    assert_eq!(consumer["traceId"], producer["traceId"], "one trace");
    Ok(())
}

#[tokio::test]
async fn a_job_can_ask_for_a_trace_of_its_own_linked_to_the_request() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (_, linked) = stack
        .post(r#"{"city": "Riga", "trace": "link"}"#, &[])
        .await?;
    let (_, parented) = stack.post(r#"{"city": "Vilnius"}"#, &[]).await?;
    let (linked, parented) = (
        linked["id"].as_str().context("id")?,
        parented["id"].as_str().context("id")?,
    );
    stack.wait_done(linked).await?;
    stack.wait_done(parented).await?;

    let (producer, consumer) = producer_and_consumer(&stack, linked).await?;
    assert_eq!(tag(&consumer, "job.trace_mode"), "link");
    assert_ne!(
        consumer["traceId"], producer["traceId"],
        "a trace of its own"
    );
    assert!(consumer.get("parentId").is_none(), "a root: {consumer}");
    assert_eq!(
        tag(&consumer, "otel.link.0"),
        format!(
            "{}-{}",
            producer["traceId"].as_str().unwrap_or_default(),
            producer["id"].as_str().unwrap_or_default()
        ),
        "linked to the request's PRODUCER span"
    );

    let (producer, consumer) = producer_and_consumer(&stack, parented).await?;
    assert_eq!(
        tag(&consumer, "job.trace_mode"),
        "parent",
        "the worker's default"
    );
    assert_eq!(consumer["traceId"], producer["traceId"]);
    assert_eq!(consumer["parentId"], producer["id"]);
    Ok(())
}

#[tokio::test]
async fn a_cancelled_job_never_runs_and_a_running_one_cannot_be_cancelled() -> anyhow::Result<()> {
    let stack = Stack::start_with(&[("STUB_LATENCY_MS", "800")], &[]).await?;
    // Two jobs due at the same time; one is cancelled. Once the other has
    // run, the cancelled one had its chance.
    let (_, delayed) = stack
        .post(r#"{"city": "Minsk", "delay_secs": 1}"#, &[])
        .await?;
    let (_, sibling) = stack
        .post(r#"{"city": "Brest", "delay_secs": 1}"#, &[])
        .await?;
    let delayed = delayed["id"].as_str().context("id")?.to_owned();
    let sibling = sibling["id"].as_str().context("id")?.to_owned();
    let res = stack
        .http
        .delete(format!("{}/v1/jobs/{delayed}", stack.api_url))
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await?["status"], "cancelled");

    // A slow job: cancelling it while it runs is a conflict.
    let (running, _) = stack.enqueue(r#"{"city": "Kyiv"}"#, &[]).await?;
    stack.worker_running(&running).await?;
    let res = stack
        .http
        .delete(format!("{}/v1/jobs/{running}", stack.api_url))
        .send()
        .await?;
    assert_eq!(res.status(), 409);
    assert_eq!(stack.wait_done(&running).await?["status"], "succeeded");
    assert_eq!(stack.wait_done(&sibling).await?["status"], "succeeded");
    let doc = stack.job(&delayed).await?;
    assert_eq!(doc["status"], "cancelled", "{doc}");
    assert_eq!(doc["attempts"], 0, "{doc}");
    let zipkin = stack.flush().await?;
    let ran = zipkin
        .spans()
        .into_iter()
        .filter(|s| s["kind"] == "CONSUMER" && tag(s, "messaging.message.id") == delayed)
        .count();
    if ran > 0 {
        bail!("the cancelled job ran {ran} time(s)");
    }
    Ok(())
}

#[tokio::test]
async fn an_idempotent_repeat_is_marked_on_its_producer_span() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let key = [("Idempotency-Key", "e2e-repeat-1")];
    let (first, a) = stack.post(r#"{"city": "Bern"}"#, &key).await?;
    let (again, b) = stack.post(r#"{"city": "Bern"}"#, &key).await?;
    assert_eq!((first, again), (202, 200), "{a} {b}");
    assert_eq!(a["id"], b["id"]);
    let repeat_trace = b["trace_id"].as_str().context("trace id")?.to_owned();
    let producer = stack
        .zipkin
        .wait_for(WAIT, "the repeat's PRODUCER span", |spans| {
            spans
                .iter()
                .find(|s| s["kind"] == "PRODUCER" && s["traceId"] == repeat_trace.as_str())
                .cloned()
        })
        .await?;
    assert_eq!(tag(&producer, "job.repeat"), "true", "{producer}");
    assert!(
        producer["tags"].get("error").is_none(),
        "a repeat is no error"
    );
    Ok(())
}

/// Posts a batch of `cities`; answers its id and the job ids.
async fn post_batch(
    stack: &Stack,
    cities: &[&str],
    trace: Option<&str>,
) -> anyhow::Result<(String, Vec<String>)> {
    let jobs: Vec<Value> = cities
        .iter()
        .map(|c| serde_json::json!({ "city": c }))
        .collect();
    let mut body = serde_json::json!({ "jobs": jobs });
    if let Some(mode) = trace {
        body["trace"] = mode.into();
    }
    let res = stack
        .http
        .post(format!("{}/v1/jobs/batch", stack.api_url))
        .json(&body)
        .send()
        .await?;
    let status = res.status();
    let answer: Value = res.json().await?;
    if status != 202 {
        bail!("the batch was answered {status}: {answer}");
    }
    let batch = answer["batch_id"].as_str().context("batch_id")?.to_owned();
    let ids = answer["results"]
        .as_array()
        .context("results")?
        .iter()
        .map(|r| r["id"].as_str().map(str::to_owned).context("an id per job"))
        .collect::<anyhow::Result<_>>()?;
    Ok((batch, ids))
}

#[tokio::test]
async fn a_batch_fans_out_in_one_producer_span_in_link_and_in_parent_mode() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    for (mode, cities) in [
        (None, ["Porto", "Faro", "Braga"]),
        (Some("parent"), ["Gent", "Brugge", "Leuven"]),
    ] {
        let (batch, ids) = post_batch(&stack, &cities, mode).await?;
        for id in &ids {
            assert_eq!(stack.wait_done(id).await?["status"], "succeeded");
        }
        let (producer, consumers) = stack
            .zipkin
            .wait_for(WAIT, "the batch's spans", |spans| {
                let consumers: Vec<Value> = ids
                    .iter()
                    .filter_map(|id| {
                        spans
                            .iter()
                            .find(|s| {
                                s["kind"] == "CONSUMER" && tag(s, "messaging.message.id") == id
                            })
                            .cloned()
                    })
                    .collect();
                let link = tag(consumers.first()?, "otel.link.0").to_owned();
                let producer = spans
                    .iter()
                    .find(|s| {
                        s["kind"] == "PRODUCER"
                            && format!(
                                "{}-{}",
                                s["traceId"].as_str().unwrap_or_default(),
                                s["id"].as_str().unwrap_or_default()
                            ) == link
                    })?
                    .clone();
                (consumers.len() == ids.len()).then_some((producer, consumers))
            })
            .await?;
        assert_eq!(
            tag(&producer, "messaging.batch.message_count"),
            "3",
            "{producer}"
        );
        assert_eq!(tag(&producer, "job.batch_id"), batch, "{producer}");
        let producer_ref = format!(
            "{}-{}",
            producer["traceId"].as_str().unwrap_or_default(),
            producer["id"].as_str().unwrap_or_default()
        );
        for consumer in &consumers {
            assert_eq!(tag(consumer, "otel.link.0"), producer_ref, "{consumer}");
            match mode {
                None => {
                    assert_eq!(tag(consumer, "job.trace_mode"), "link");
                    assert_ne!(consumer["traceId"], producer["traceId"], "a trace per job");
                    assert!(consumer.get("parentId").is_none(), "{consumer}");
                }
                Some(_) => {
                    assert_eq!(tag(consumer, "job.trace_mode"), "parent");
                    assert_eq!(consumer["traceId"], producer["traceId"]);
                    assert_eq!(consumer["parentId"], producer["id"]);
                }
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_redriven_job_runs_again_linked_to_its_failed_attempt_and_lists_follow()
-> anyhow::Result<()> {
    let stack = Stack::start().await?;
    // Unknown places fail at once (error.type unknown_place), no retry.
    let mut failed = Vec::new();
    for place in ["Nowhere One", "Nowhere Two", "Nowhere Three"] {
        let (id, _) = stack
            .enqueue(&format!(r#"{{"city": "{place}"}}"#), &[])
            .await?;
        let done = stack.wait_done(&id).await?;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["error_type"], "unknown_place", "{done}");
        failed.push(id);
    }
    let (ok, _) = stack.enqueue(r#"{"city": "Turku"}"#, &[]).await?;
    stack.wait_done(&ok).await?;

    // The failed list, newest first, two per page.
    let list = |query: String| {
        let http = stack.http.clone();
        let url = format!("{}/v1/jobs?{query}", stack.api_url);
        async move {
            let res = http.get(url).send().await?;
            anyhow::ensure!(res.status() == 200, "list answered {}", res.status());
            Ok::<Value, anyhow::Error>(res.json().await?)
        }
    };
    let first = list("status=failed&limit=2".into()).await?;
    let cursor = first["next_cursor"]
        .as_str()
        .context("a next page")?
        .to_owned();
    let second = list(format!("status=failed&limit=2&cursor={cursor}")).await?;
    let ids: Vec<&str> = first["jobs"]
        .as_array()
        .into_iter()
        .chain(second["jobs"].as_array())
        .flatten()
        .filter_map(|j| j["id"].as_str())
        .collect();
    let newest_first: Vec<&str> = failed.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first, "every failed job once, newest first");
    assert!(second["next_cursor"].is_null(), "{second}");
    let succeeded = list("status=succeeded".into()).await?;
    assert_eq!(succeeded["jobs"][0]["id"], ok.as_str());

    // One re-drive: the next attempt, linked to the failed one.
    let retried = stack
        .http
        .post(format!("{}/v1/jobs/{}/retry", stack.api_url, failed[0]))
        .send()
        .await?;
    assert_eq!(retried.status(), 202);
    let done = stack
        .wait_job(&failed[0], "re-driven and finished", |doc| {
            (doc["status"] == "succeeded" || doc["status"] == "failed") && doc["attempts"] == 2
        })
        .await?;
    assert_eq!(
        done["status"], "failed",
        "an unknown place fails again: {done}"
    );
    let attempts = stack
        .zipkin
        .wait_for(WAIT, "both attempts' spans", |spans| {
            let of = |n: &str| {
                spans
                    .iter()
                    .find(|s| {
                        s["kind"] == "CONSUMER"
                            && tag(s, "messaging.message.id") == failed[0]
                            && tag(s, "job.attempt") == n
                    })
                    .cloned()
            };
            Some((of("1")?, of("2")?))
        })
        .await?;
    let (first_attempt, second_attempt) = attempts;
    let links: Vec<&str> = (0..3)
        .map(|i| tag(&second_attempt, &format!("otel.link.{i}")))
        .collect();
    let to_first = format!(
        "{}-{}",
        first_attempt["traceId"].as_str().unwrap_or_default(),
        first_attempt["id"].as_str().unwrap_or_default()
    );
    assert!(
        links.contains(&to_first.as_str()),
        "{links:?} lack {to_first}"
    );
    let again = stack
        .http
        .post(format!("{}/v1/jobs/{ok}/retry", stack.api_url))
        .send()
        .await?;
    assert_eq!(again.status(), 409, "a succeeded job is not re-driven");

    // Bulk: by an error type nothing has, then by the one they have.
    let bulk = |body: Value| {
        let http = stack.http.clone();
        let url = format!("{}/v1/jobs/retry", stack.api_url);
        async move {
            let res = http.post(url).json(&body).send().await?;
            anyhow::ensure!(res.status() == 202, "bulk answered {}", res.status());
            Ok::<Value, anyhow::Error>(res.json().await?)
        }
    };
    let none = bulk(serde_json::json!({ "error_type": "timeout" })).await?;
    assert_eq!(none["redriven"], 0, "{none}");
    let all = bulk(serde_json::json!({ "error_type": "unknown_place" })).await?;
    assert_eq!(all["redriven"], 3, "{all}");
    for id in &failed {
        stack
            .wait_job(id, "re-driven and failed again", |doc| {
                doc["status"] == "failed" && doc["attempts"].as_u64() >= Some(2)
            })
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn fifty_concurrent_posts_with_one_key_make_one_job_through_the_real_api()
-> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let posts = (0..50).map(|_| {
        let http = stack.http.clone();
        let url = format!("{}/v1/jobs", stack.api_url);
        tokio::spawn(async move {
            let res = http
                .post(url)
                .header("content-type", "application/json")
                .header("Idempotency-Key", "e2e-burst")
                .body(r#"{"city": "Zagreb"}"#)
                .send()
                .await?;
            let status = res.status().as_u16();
            let body: Value = res.json().await?;
            Ok::<(u16, Value), anyhow::Error>((status, body))
        })
    });
    let mut created = 0;
    let mut ids = std::collections::BTreeSet::new();
    for post in posts.collect::<Vec<_>>() {
        let (status, body) = post.await??;
        assert!(status == 202 || status == 200, "{status} {body}");
        created += usize::from(status == 202);
        ids.insert(body["id"].as_str().context("id")?.to_owned());
    }
    assert_eq!(created, 1, "one request made the job");
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids.into_iter().next().context("an id")?;
    assert_eq!(stack.wait_done(&id).await?["status"], "succeeded");
    let zipkin = stack.flush().await?;
    let consumers = zipkin
        .spans()
        .into_iter()
        .filter(|s| s["kind"] == "CONSUMER" && tag(s, "messaging.message.id") == id)
        .count();
    assert_eq!(consumers, 1, "the job ran once");
    Ok(())
}

#[tokio::test]
async fn high_priority_jobs_start_first_and_low_ones_still_get_their_share() -> anyhow::Result<()> {
    // No worker yet: the jobs wait, then one worker runs one at a time.
    let mut stack = Stack::launch(e2e::Options {
        workers: Some(0),
        worker_env: &[("WORKER_CONCURRENCY", "1")],
        ..e2e::Options::default()
    })
    .await?;
    let mut ids: Vec<(String, &str)> = Vec::new();
    // Low first, then normal, then high: arrival order is the reverse of
    // the order the lanes are served in.
    for (n, priority) in ["low"; 6]
        .into_iter()
        .chain(["normal"; 16])
        .chain(["high"; 4])
        .enumerate()
    {
        let body = serde_json::json!({
            "latitude": 10.0 + n as f64,
            "longitude": 20.0,
            "priority": priority,
        });
        let (id, _) = stack.enqueue(&body.to_string(), &[]).await?;
        ids.push((id, priority));
    }
    assert_eq!(stack.job(&ids[25].0).await?["priority"], "high");
    let metrics = stack.scrape(&stack.api_url).await?;
    for (priority, want) in [("high", 4.0), ("normal", 16.0), ("low", 6.0)] {
        let label = format!("job_priority=\"{priority}\"");
        assert_eq!(
            e2e::sum(&metrics, "jobs_waiting", &[&label]),
            want,
            "{priority} jobs waiting"
        );
    }

    stack.add_worker().await?;
    for (id, _) in &ids {
        assert_eq!(stack.wait_done(id).await?["status"], "succeeded");
    }
    // The order the worker started them in, from the CONSUMER spans.
    let consumers = stack
        .zipkin
        .wait_for(WAIT, "every job's CONSUMER span", |spans| {
            let mut found: Vec<(u64, String, String)> = spans
                .iter()
                .filter(|s| s["kind"] == "CONSUMER")
                .map(|s| {
                    (
                        s["timestamp"].as_u64().unwrap_or(0),
                        tag(s, "job.id").to_owned(),
                        tag(s, "job.priority").to_owned(),
                    )
                })
                .collect();
            (found.len() >= ids.len()).then(|| {
                found.sort();
                found
            })
        })
        .await?;
    let lanes: Vec<&str> = consumers.iter().map(|(_, _, p)| p.as_str()).collect();
    for (_, id, priority) in &consumers {
        let asked = ids
            .iter()
            .find(|(i, _)| i == id)
            .context("a job of ours")?
            .1;
        assert_eq!(priority, asked, "job {id}'s CONSUMER span names its lane");
    }
    let last_high = lanes
        .iter()
        .rposition(|p| *p == "high")
        .context("high ran")?;
    let first_normal = lanes
        .iter()
        .position(|p| *p == "normal")
        .context("normal ran")?;
    assert!(last_high < first_normal, "high after normal: {lanes:?}");
    let last_normal = lanes
        .iter()
        .rposition(|p| *p == "normal")
        .context("normal ran")?;
    let early_low = lanes[..last_normal].iter().filter(|p| **p == "low").count();
    assert!(
        early_low >= 2,
        "low jobs waited for every normal one (starved): {lanes:?}"
    );
    let (producer, _) = producer_and_consumer(&stack, &ids[25].0).await?;
    assert_eq!(tag(&producer, "job.priority"), "high", "{producer}");
    Ok(())
}

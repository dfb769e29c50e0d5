//! The whole system on a real Redis Cluster (three masters, a replica
//! each): the api, the workers (cache, single-flight lease, shared rate
//! limit, schedules) and the console all take the nodes' URLs in
//! `REDIS_URL`, and a job leaves the same connected trace as on one server.

use anyhow::Context;
use e2e::{Options, SEARCH_AND_FORECAST, Stack, WAIT, assert_job_tree};
use serde_json::json;

#[tokio::test]
async fn the_system_runs_on_a_redis_cluster_with_one_connected_trace_per_job() -> anyhow::Result<()>
{
    runs_with_one_connected_trace_per_job(true, 1).await
}

#[tokio::test]
async fn the_system_runs_on_a_cluster_with_the_queue_in_three_shards() -> anyhow::Result<()> {
    runs_with_one_connected_trace_per_job(true, 3).await
}

#[tokio::test]
async fn the_system_runs_on_one_server_with_the_queue_in_three_shards() -> anyhow::Result<()> {
    runs_with_one_connected_trace_per_job(false, 3).await
}

/// A job's trace, the cache, idempotency, a batch and the schedules, on a
/// cluster or one server, with the queue in `shards` shards.
async fn runs_with_one_connected_trace_per_job(cluster: bool, shards: u16) -> anyhow::Result<()> {
    let stack = Stack::launch(Options {
        redis_cluster: cluster,
        queue_shards: Some(shards),
        // The shared rate limit and the schedules' lease live in Redis too.
        worker_env: &[
            ("WEATHER_RATE_LIMIT", "50"),
            ("SCHEDULES", "hourly|0 * * * *|Reykjavik"),
        ],
        ..Options::default()
    })
    .await?;

    let caller = "00f067aa0ba902b7";
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (id, trace_id) = stack
        .enqueue(
            r#"{"city": "Berlin"}"#,
            &[("traceparent", &format!("00-{trace}-{caller}-01"))],
        )
        .await?;
    assert_eq!(trace_id, trace);
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["source"], "upstream");
    let spans = stack.job_trace(trace, 2).await?;
    assert_job_tree(&spans, &id, Some(caller), SEARCH_AND_FORECAST);
    if let Some(cluster) = stack.cluster() {
        // The queue's spans name the master of the job's shard, whichever
        // node the seed list starts with.
        let tag = &redis_job_queue::shard_tags("weather", shards)
            [redis_job_queue::shard_of(&id, usize::from(shards))];
        let master = cluster.master_of(redis_job_queue::slot(
            format!("jobs:{{{tag}}}:stream").as_bytes(),
        ))?;
        for kind in ["PRODUCER", "CONSUMER"] {
            let span = spans
                .iter()
                .find(|s| s["kind"] == kind)
                .with_context(|| format!("a {kind} span"))?;
            assert_eq!(
                span["remoteEndpoint"]["port"].as_u64(),
                Some(u64::from(master)),
                "{span}"
            );
        }
    }

    // The cache entry written on one node is found by the next job.
    let (again, _) = stack.enqueue(r#"{"city": "berlin"}"#, &[]).await?;
    let done = stack.wait_done(&again).await?;
    assert_eq!(done["result"]["source"], "cache", "{done}");

    // Idempotency and batches.
    let key = [("idempotency-key", "cluster-key-1")];
    let (first, _) = stack.enqueue(r#"{"city": "Oslo"}"#, &key).await?;
    let (status, repeat) = stack.post(r#"{"city": "Oslo"}"#, &key).await?;
    assert_eq!(status, 200, "{repeat}");
    assert_eq!(
        repeat["id"],
        first.as_str(),
        "a repeat answers the first job"
    );
    let sent: serde_json::Value = stack
        .http
        .post(format!("{}/v1/jobs/batch", stack.api_url))
        .json(&json!({ "jobs": [{ "city": "Tartu" }, { "city": "Narva", "priority": "low" }] }))
        .send()
        .await?
        .json()
        .await?;
    let batch = sent["batch_id"].as_str().context("batch_id")?;
    for result in sent["results"].as_array().context("results")? {
        let id = result["id"].as_str().context("id")?;
        assert_eq!(stack.wait_done(id).await?["status"], "succeeded");
    }
    let listed: serde_json::Value = stack
        .http
        .get(format!("{}/v1/batches/{batch}", stack.api_url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(2), "{listed}");

    // The scheduler's lease and state are kept on the cluster.
    let state = stack.redis_connection().await?;
    testkit::eventually(
        "the schedule's next run recorded",
        WAIT,
        std::time::Duration::from_millis(100),
        || {
            let mut conn = state.clone();
            async move {
                let next: Option<String> = redis::cmd("HGET")
                    .arg("jobs:{weather}:schedules")
                    .arg("hourly:next")
                    .query_async(&mut conn)
                    .await?;
                Ok(next)
            }
        },
    )
    .await?;

    Ok(())
}

#[tokio::test]
async fn the_console_reads_the_queue_its_shards_and_the_schedules_on_a_redis_cluster()
-> anyhow::Result<()> {
    let stack = Stack::launch(Options {
        redis_cluster: true,
        queue_shards: Some(3),
        console: true,
        worker_env: &[("SCHEDULES", "hourly|0 * * * *|Reykjavik")],
        ..Options::default()
    })
    .await?;
    let console = stack.console.as_ref().context("a console")?;
    let (id, trace) = stack.enqueue(r#"{"city": "Berlin"}"#, &[]).await?;
    assert_eq!(stack.wait_done(&id).await?["status"], "succeeded");
    let (failed, _) = stack.enqueue(r#"{"city": "Nowhere Cluster"}"#, &[]).await?;
    assert_eq!(stack.wait_done(&failed).await?["status"], "failed");
    console
        .wait_trace(&trace, WAIT, |spans| e2e::job_trace_complete(spans, 2))
        .await?;

    let page = |path: String| {
        let url = format!("{}{path}", console.url());
        let http = stack.http.clone();
        async move { anyhow::Ok(http.get(url).send().await?.text().await?) }
    };
    let job_page = page(format!("/jobs/{id}")).await?;
    assert!(
        job_page.contains("Berlin") && job_page.contains(&trace),
        "{job_page}"
    );
    let failed_page = page("/failed".into()).await?;
    assert!(failed_page.contains(&failed), "{failed_page}");
    // The Queues page shows each shard on the master that holds it.
    let queues = page("/queues".into()).await?;
    let nodes: std::collections::HashSet<&str> = queues
        .split(r#"<td data-label="Node"><code>"#)
        .skip(1)
        .filter_map(|rest| rest.split('<').next())
        .collect();
    assert_eq!(nodes.len(), 3, "three shards on three masters: {queues}");
    assert!(queues.contains("{weather:1:12}"), "{queues}");
    testkit::eventually(
        "the schedule on the console's Scheduled page",
        WAIT,
        std::time::Duration::from_millis(100),
        || async {
            let html = page("/scheduled".into()).await?;
            Ok(html.contains("hourly").then_some(()))
        },
    )
    .await
}

#[tokio::test]
async fn the_alerts_service_keeps_its_alerts_on_a_redis_cluster() -> anyhow::Result<()> {
    let kafka = testkit::KafkaBroker::start().await?;
    let brokers = kafka.brokers();
    let stack = Stack::launch(Options {
        redis_cluster: true,
        workers: Some(1),
        worker_env: &[("KAFKA_BROKERS", &brokers)],
        ..Options::default()
    })
    .await?;
    // Every event raises a wind alert.
    let (_alerts, alerts_url) = e2e::start_alerts(
        &stack,
        0,
        &brokers,
        &stack.zipkin.endpoint(),
        &[("ALERT_WIND_KMH", "0")],
    )
    .await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Oslo"}"#, &[]).await?;
    assert_eq!(stack.wait_done(&id).await?["status"], "succeeded");
    let alerts = e2e::wait_alerts(&stack.http, &alerts_url, &id, 1, WAIT).await?;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["trace_id"], trace.as_str());
    Ok(())
}

#[tokio::test]
async fn with_replicas_required_a_push_they_did_not_confirm_is_a_503_to_retry_with_the_same_key()
-> anyhow::Result<()> {
    // One server: no replica can confirm.
    let stack = Stack::launch(Options {
        api_env: &[
            ("QUEUE_WAIT_REPLICAS", "1"),
            ("QUEUE_WAIT_TIMEOUT_MS", "50"),
        ],
        ..Options::default()
    })
    .await?;
    let res = stack
        .http
        .post(format!("{}/v1/jobs", stack.api_url))
        .header("idempotency-key", "durable-1")
        .json(&json!({ "city": "Oslo" }))
        .send()
        .await?;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = res.json().await?;
    let detail = problem["detail"].as_str().context("detail")?;
    assert!(
        detail.contains("replicas") && detail.contains("Idempotency-Key"),
        "{problem}"
    );
    Ok(())
}

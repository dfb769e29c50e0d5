//! A job traced across the queue with the `telemetry` crate's parts, as
//! `examples/traced_job.rs` does it, checked through the Zipkin v2 JSON
//! exported: the PRODUCER span's context travels in the job, and the
//! CONSUMER layer resumes it as parent or link, links each retry to the
//! attempt before it, names errors and feeds the messaging metrics.
//!
//! One test: the telemetry pipeline is global to the process.

use std::sync::Arc;
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use clap::Parser;
use redis_job_queue::{JobLease, JobStatus, NewJob, QueueConfig, RedisQueue};
use serde_json::Value;
use telemetry::messaging::{ConsumerTracing, TraceMode, TracedProducer};
use telemetry::metrics::Metrics;
use telemetry::propagation::Propagation;
use testkit::{RedisServer, ZipkinCollector, wait_for_job};
use tracing::Instrument;

const WAIT: Duration = Duration::from_secs(20);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    telemetry: telemetry::TelemetryArgs,
}

/// A failure the consumer layer is taught to name.
#[derive(Debug, thiserror::Error)]
#[error("the flaky service failed")]
struct Flaky;

/// Fails its first attempt with [`Flaky`], then succeeds.
async fn flaky(n: u32, lease: Data<JobLease>) -> Result<u32, BoxDynError> {
    if lease.attempt == 1 {
        return Err(Flaky.into());
    }
    Ok(n * 2)
}

/// Fails odd numbers with an error the layer has no name for.
async fn odd_fails(n: u32) -> Result<u32, BoxDynError> {
    if n % 2 == 1 {
        return Err("odd".into());
    }
    Ok(n)
}

async fn queue(redis: &RedisServer, name: &str) -> anyhow::Result<RedisQueue> {
    let mut cfg = QueueConfig::new(name);
    cfg.block_timeout = Duration::from_millis(200);
    cfg.retry_backoff = Duration::from_millis(50);
    cfg.max_attempts = 2;
    Ok(RedisQueue::connect(&redis.url(), cfg).await?)
}

/// Runs a worker on `queue` with `layer` until every job in `ids` is done.
async fn drain<F, Fut>(
    queue: &RedisQueue,
    layer: ConsumerTracing,
    ids: &[String],
    handler: F,
) -> anyhow::Result<()>
where
    F: Fn(u32, Data<JobLease>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<u32, BoxDynError>> + Send + 'static,
{
    let watched = queue.clone();
    let ids = ids.to_vec();
    let done = async move {
        for id in &ids {
            let read = || async { Ok(watched.status(id).await?) };
            wait_for_job(id, "finished", WAIT, read, |rec| {
                rec.as_ref().is_some_and(|r| r.is_finished())
            })
            .await
            .expect("the job finishes");
        }
        Ok::<(), std::io::Error>(())
    };
    WorkerBuilder::new(format!("{}-worker", queue.config().name))
        .backend(queue.backend::<u32>(4))
        .layer(layer)
        .build(handler)
        .run_until(done)
        .await?;
    Ok(())
}

fn tag<'a>(span: &'a Value, key: &str) -> &'a str {
    span["tags"][key].as_str().unwrap_or_default()
}

fn link(span: &Value) -> String {
    format!(
        "{}-{}",
        span["traceId"].as_str().unwrap_or_default(),
        span["id"].as_str().unwrap_or_default()
    )
}

#[tokio::test]
async fn jobs_resume_their_producers_trace_as_parent_or_link_and_retries_link_back()
-> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let zipkin = ZipkinCollector::start().await?;
    let endpoint = zipkin.endpoint();
    let cli = Cli::parse_from([
        "test",
        "--traces-exporter=zipkin",
        &format!("--zipkin-endpoint={endpoint}"),
        "--bsp-schedule-delay=50",
        "--service-name=traced-queue",
    ]);
    let telemetry = telemetry::init(&cli.telemetry, "traced-queue")?;
    let propagation = Propagation::default();
    let metrics = Arc::new(Metrics::new());

    // Parent mode: one job, failed once (a named error), then retried.
    let parent = queue(&redis, "parent").await?;
    let producer =
        TracedProducer::new(parent.clone(), propagation.clone()).with_metrics(metrics.clone());
    let caller = tracing::info_span!("caller");
    let sent = producer
        .send(NewJob::new(&21u32)?)
        .instrument(caller)
        .await?;
    let tracing_layer = ConsumerTracing::new(&parent, propagation.clone())
        .metrics(metrics.clone())
        .error_type(|e| e.downcast_ref::<Flaky>().map(|_| "flaky".into()));
    drain(
        &parent,
        tracing_layer,
        std::slice::from_ref(&sent.id),
        flaky,
    )
    .await?;
    let record = parent.status(&sent.id).await?.expect("record");
    assert_eq!(record.status, JobStatus::Succeeded);
    assert_eq!(record.result, Some(serde_json::json!(42)));

    // Link mode: a batch of two, the odd one failing with an unnamed error.
    let linked = queue(&redis, "linked").await?;
    let jobs = vec![NewJob::new(&2u32)?, NewJob::new(&3u32)?.max_attempts(1)];
    let ids: Vec<String> = jobs.iter().map(|j| j.id().to_owned()).collect();
    let batch = TracedProducer::new(linked.clone(), propagation.clone())
        .send_batch(jobs)
        .instrument(tracing::info_span!("batch caller"))
        .await?;
    assert_eq!(batch.enqueued, vec![true, true]);
    let tracing_layer = ConsumerTracing::new(&linked, propagation.clone())
        .mode(TraceMode::Link)
        .metrics(metrics.clone());
    drain(&linked, tracing_layer, &ids, |n, _: Data<JobLease>| {
        odd_fails(n)
    })
    .await?;

    // A hung attempt cut short by the queue's timeout says so in its span.
    let mut cfg = QueueConfig::new("hung");
    cfg.block_timeout = Duration::from_millis(200);
    cfg.max_attempts = 1;
    cfg.job_timeout = Some(Duration::from_millis(200));
    let hung = RedisQueue::connect(&redis.url(), cfg).await?;
    let sent_hung = TracedProducer::new(hung.clone(), propagation.clone())
        .send(NewJob::new(&5u32)?)
        .await?;
    let tracing_layer = ConsumerTracing::new(&hung, propagation.clone()).metrics(metrics.clone());
    drain(
        &hung,
        tracing_layer,
        std::slice::from_ref(&sent_hung.id),
        |_: u32, _: Data<JobLease>| async {
            std::future::pending::<()>().await;
            Ok(0)
        },
    )
    .await?;
    telemetry.shutdown().await;

    // Parent mode: caller → PRODUCER → both CONSUMER attempts.
    let trace = zipkin
        .wait_for(WAIT, "the parent-mode trace", |spans| {
            let trace: Vec<Value> = spans
                .iter()
                .filter(|s| s["traceId"].as_str() == sent.trace_id.as_deref())
                .cloned()
                .collect();
            (trace.len() == 4).then_some(trace)
        })
        .await?;
    let find = |kind: &str| -> Vec<&Value> { trace.iter().filter(|s| s["kind"] == kind).collect() };
    let caller = trace
        .iter()
        .find(|s| s["name"] == "caller")
        .expect("caller span");
    let producer_span = find("PRODUCER")[0];
    assert_eq!(producer_span["name"], "send parent");
    assert_eq!(producer_span["parentId"], caller["id"]);
    assert_eq!(tag(producer_span, "messaging.message.id"), sent.id);
    assert_eq!(tag(producer_span, "messaging.system"), "redis");
    assert_eq!(producer_span["remoteEndpoint"]["serviceName"], "redis");
    let mut attempts = find("CONSUMER");
    attempts.sort_by_key(|s| tag(s, "job.attempt").to_owned());
    assert_eq!(attempts.len(), 2);
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["name"], "process parent");
        assert_eq!(
            attempt["parentId"],
            producer_span["id"],
            "attempt {}",
            i + 1
        );
        assert_eq!(tag(attempt, "otel.link.0"), link(producer_span));
        assert_eq!(tag(attempt, "job.attempt"), (i + 1).to_string());
        assert_eq!(tag(attempt, "messaging.message.id"), sent.id);
        assert_eq!(tag(attempt, "messaging.consumer.group.name"), "workers");
        assert!(tag(attempt, "job.queue_wait_ms").parse::<u64>().is_ok());
    }
    assert_eq!(tag(attempts[0], "error.type"), "flaky");
    assert_eq!(tag(attempts[0], "otel.status_code"), "ERROR");
    assert_eq!(
        tag(attempts[1], "otel.link.1"),
        link(attempts[0]),
        "the retry links back"
    );
    assert_eq!(tag(attempts[1], "error.type"), "");

    // Link mode: each job starts its own trace, linked to the batch's span.
    let batch_span = zipkin
        .wait_for(WAIT, "the batch PRODUCER span", |spans| {
            spans
                .iter()
                .find(|s| {
                    s["traceId"].as_str() == batch.trace_id.as_deref() && s["kind"] == "PRODUCER"
                })
                .cloned()
        })
        .await?;
    assert_eq!(tag(&batch_span, "messaging.batch.message_count"), "2");
    assert_eq!(tag(&batch_span, "messaging.message.id"), "");
    for (id, error_type) in ids.iter().zip(["", "_OTHER"]) {
        let consumer = zipkin
            .wait_for(WAIT, &format!("the CONSUMER span of {id}"), |spans| {
                spans
                    .iter()
                    .find(|s| s["kind"] == "CONSUMER" && s["tags"]["job.id"] == id.as_str())
                    .cloned()
            })
            .await?;
        assert_ne!(
            consumer["traceId"], batch_span["traceId"],
            "a trace of its own"
        );
        assert!(consumer.get("parentId").is_none(), "a root: {consumer}");
        assert_eq!(tag(&consumer, "otel.link.0"), link(&batch_span));
        assert_eq!(tag(&consumer, "error.type"), error_type);
    }

    let timed_out = zipkin
        .wait_for(WAIT, "the timed-out CONSUMER span", |spans| {
            spans
                .iter()
                .find(|s| {
                    s["kind"] == "CONSUMER"
                        && s["traceId"].as_str() == sent_hung.trace_id.as_deref()
                })
                .cloned()
        })
        .await?;
    assert_eq!(tag(&timed_out, "error.type"), "timeout");
    assert_eq!(tag(&timed_out, "otel.status_code"), "ERROR");

    // The messaging metrics saw every send and attempt.
    let page = metrics.openmetrics();
    for line in [
        r#"messaging_client_sent_messages_total{messaging_destination_name="parent",outcome="success",error_type=""} 1"#,
        r#"messaging_client_consumed_messages_total{messaging_destination_name="parent",outcome="failure",error_type="flaky"} 1"#,
        r#"messaging_client_consumed_messages_total{messaging_destination_name="parent",outcome="success",error_type=""} 1"#,
        r#"messaging_client_consumed_messages_total{messaging_destination_name="linked",outcome="failure",error_type="_OTHER"} 1"#,
        r#"jobs_queue_wait_duration_seconds_count{messaging_destination_name="linked"} 2"#,
        r#"messaging_client_consumed_messages_total{messaging_destination_name="hung",outcome="failure",error_type="timeout"} 1"#,
    ] {
        assert!(page.contains(line), "{line} missing from\n{page}");
    }
    Ok(())
}

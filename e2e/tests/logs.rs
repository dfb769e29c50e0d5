//! The JSON log lines of a job carry its trace id in every process.

use anyhow::Context;
use e2e::{Options, Stack, job_log_lines};
use serde_json::Value;

#[tokio::test]
async fn the_json_logs_of_a_job_share_its_trace_id_across_api_and_worker() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let trace = "abcdef0123456789abcdef0123456789";
    let (id, _) = stack
        .enqueue(
            r#"{"city": "Lisbon"}"#,
            &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
        )
        .await?;
    stack.wait_done(&id).await?;

    let api_lines = job_log_lines(&stack.api.logs(), &id);
    let queued = api_lines
        .iter()
        .find(|l| l["message"] == "job queued")
        .with_context(|| {
            format!(
                "no 'job queued' line for {id} in the api logs:\n{}",
                stack.api.logs()
            )
        })?;
    assert_eq!(queued["trace_id"], trace);
    assert_eq!(queued["level"], "INFO");
    // The target is the module that logged it, inside the api crate.
    let target = queued["target"].as_str().unwrap_or_default();
    assert!(
        queued["timestamp"].is_string()
            && (target == "api" || target.starts_with("api::"))
            && queued["span_id"].is_string(),
        "{queued}"
    );

    let worker_lines: Vec<Value> = stack
        .workers
        .iter()
        .flat_map(|w| job_log_lines(&w.logs(), &id))
        .collect();
    let done = worker_lines
        .iter()
        .find(|l| l["message"] == "weather job done")
        .context("no 'weather job done' line for the job in the workers' logs")?;
    assert_eq!(
        done["trace_id"], trace,
        "api and worker lines share the trace id"
    );
    assert_ne!(done["span_id"], queued["span_id"]);
    Ok(())
}

#[tokio::test]
async fn with_the_sdk_disabled_jobs_run_and_nothing_is_traced() -> anyhow::Result<()> {
    let off = [("OTEL_SDK_DISABLED", "true")];
    let stack = Stack::launch(Options {
        api_env: &off,
        worker_env: &off,
        workers: Some(1),
        ..Options::default()
    })
    .await?;
    let caller = "00-abcdef0123456789abcdef0123456789-00f067aa0ba902b7-01";
    let (status, answer) = stack
        .post(r#"{"city": "Lisbon"}"#, &[("traceparent", caller)])
        .await?;
    assert_eq!(status, 202, "{answer}");
    assert!(answer["trace_id"].is_null(), "no trace id: {answer}");
    let id = answer["id"].as_str().context("id")?.to_owned();
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        done["trace_id"].is_null(),
        "the job carries no trace: {done}"
    );

    let worker_logs = stack.workers[0].logs();
    let line = job_log_lines(&worker_logs, &id)
        .into_iter()
        .find(|l| l["message"] == "weather job done")
        .with_context(|| format!("no 'weather job done' line for {id}:\n{worker_logs}"))?;
    assert!(line.get("trace_id").is_none(), "{line}");

    // Every process flushes on its way out: api and worker sent nothing.
    let zipkin = stack.flush().await?;
    let ours: Vec<Value> = zipkin
        .spans()
        .into_iter()
        .filter(|s| {
            let service = &s["localEndpoint"]["serviceName"];
            service == "api" || service == "worker"
        })
        .collect();
    assert!(ours.is_empty(), "spans from api or worker: {ours:?}");
    Ok(())
}

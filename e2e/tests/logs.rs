//! The JSON log lines of a job carry its trace id in every process.

use anyhow::Context;
use e2e::{Stack, job_log_lines};
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
    assert!(
        queued["timestamp"].is_string()
            && queued["target"] == "api"
            && queued["span_id"].is_string()
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

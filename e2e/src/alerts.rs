//! The alerts service beside a [`Stack`]: started as a process on the
//! stack's Redis, and read through its HTTP endpoint.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use testkit::{ServiceProcess, free_port, project_binary};

use crate::Stack;

/// Starts the alerts service on `port` (any free one when 0), reading
/// `brokers`, exporting spans to `endpoint`.
pub async fn start_alerts(
    stack: &Stack,
    port: u16,
    brokers: &str,
    endpoint: &str,
    extra: &[(&'static str, &str)],
) -> anyhow::Result<(ServiceProcess, String)> {
    let port = if port == 0 { free_port()? } else { port };
    let url = format!("http://127.0.0.1:{port}");
    let mut env: Vec<(&str, String)> = vec![
        ("ALERTS_LISTEN", format!("127.0.0.1:{port}")),
        ("KAFKA_BROKERS", brokers.to_owned()),
        ("KAFKA_SESSION_TIMEOUT_MS", "6000".into()),
        ("OTEL_TRACES_EXPORTER", "zipkin".into()),
        ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", endpoint.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
        ("LOG_FORMAT", "json".into()),
    ];
    env.extend(stack.redis_env());
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let bin = project_binary("alerts")?;
    let process = ServiceProcess::start(
        "alerts",
        bin.to_str().context("path")?,
        &env,
        &format!("{url}/healthz"),
    )
    .await?;
    Ok((process, url))
}

/// The alerts the service keeps for job `id`, once there are `n` (within
/// `limit`).
pub async fn wait_alerts(
    http: &reqwest::Client,
    alerts: &str,
    id: &str,
    n: usize,
    limit: Duration,
) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + limit;
    loop {
        let page: Value = http
            .get(format!("{alerts}/v1/alerts?limit=1000"))
            .send()
            .await?
            .json()
            .await?;
        let mine: Vec<Value> = page["alerts"]
            .as_array()
            .context("alerts")?
            .iter()
            .filter(|a| a["event_id"] == id)
            .cloned()
            .collect();
        if mine.len() >= n {
            return Ok(mine);
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {n} alerts for job {id} within {limit:?}: {page}",
                mine.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

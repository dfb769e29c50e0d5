//! What the services show besides traces: metrics pages, a real
//! Prometheus scraping them, and JSON log lines.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;
use testkit::{ServiceProcess, free_port};

use crate::Stack;

/// The sum of a metric's samples whose line contains every `filters` part.
pub fn sum(page: &str, metric: &str, filters: &[&str]) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| {
            let value = l.split(" # ").next()?;
            value.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// The JSON log lines of a process that mention `job_id`.
pub fn job_log_lines(logs: &str, job_id: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["job.id"] == job_id)
        .collect()
}

/// Answers a PromQL query's single value, or None while there is none.
pub async fn prom_value(
    http: &reqwest::Client,
    prom: &str,
    query: &str,
) -> anyhow::Result<Option<f64>> {
    let res: Value = http
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await?
        .json()
        .await?;
    let value = res["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok());
    Ok(value)
}

/// A real Prometheus (Debian's `prometheus` package) scraping the api and
/// the workers of a [`Stack`] every second, with exemplar storage on.
pub struct Prometheus {
    _process: ServiceProcess,
    dir: PathBuf,
    url: String,
}

impl Prometheus {
    /// Starts Prometheus scraping `stack`, and waits until it is ready.
    pub async fn scraping(stack: &Stack) -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("e2e-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let target = |url: &str| format!("\"{}\"", url.trim_start_matches("http://"));
        let workers: Vec<String> = stack.worker_urls.iter().map(|u| target(u)).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: api\n    static_configs:\n      - targets: [{}]\n  - job_name: worker\n    static_configs:\n      - targets: [{}]\n",
            target(&stack.api_url),
            workers.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let url = format!("http://127.0.0.1:{port}");
        let process = ServiceProcess::start_with_args(
            "prometheus",
            "prometheus",
            &[
                format!("--config.file={}", config_path.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--enable-feature=exemplar-storage".into(),
            ],
            &[],
            &format!("{url}/-/ready"),
        )
        .await
        .context("prometheus (Debian: apt-get install -y prometheus)")?;
        Ok(Self {
            _process: process,
            dir,
            url,
        })
    }

    /// Its base URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

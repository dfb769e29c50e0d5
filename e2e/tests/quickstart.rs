//! The README's first command, as a new user runs it: `scripts/run` from a
//! clean clone (of the committed tree), with no Zipkin and no Docker, on the
//! binaries this test run built (`RUN_BIN_DIR`). A job
//! posted to the api leaves its whole trace in the console; with
//! `--kafka`, the trace goes on to the alerts service.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use testkit::free_port;

/// `scripts/run` in a process group of its own, stopped (SIGTERM to the
/// group, which it forwards to what it started) when dropped.
struct Run {
    child: Child,
    log: std::path::PathBuf,
}

impl Run {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    let res = http.get(url).send().await.ok()?;
    if !res.status().is_success() {
        return None;
    }
    res.json().await.ok()
}

#[tokio::test]
async fn scripts_run_from_a_clean_clone_keeps_a_jobs_trace_in_the_console() -> anyhow::Result<()> {
    quickstart(false).await
}

#[tokio::test]
async fn scripts_run_with_kafka_carries_the_trace_on_to_the_alerts_service() -> anyhow::Result<()> {
    quickstart(true).await
}

/// Runs `scripts/run` (with `--kafka` when `kafka`) from a clean clone,
/// posts a job and finds its whole trace in the console.
async fn quickstart(kafka: bool) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace")?;
    let clone = std::env::temp_dir().join(format!(
        "e2e-clean-clone-{}{}",
        std::process::id(),
        if kafka { "-kafka" } else { "" }
    ));
    let _ = std::fs::remove_dir_all(&clone);
    let cloned = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(root)
        .arg(&clone)
        .status()
        .context("git clone (Debian: apt-get install -y git)")?;
    assert!(cloned.success(), "git clone failed");

    // The binaries this test run built (the clone's sources are the same
    // commit): a second build of the whole workspace would double the
    // suite's time, and the fresh clone CI runs on builds it anyway.
    let exe = std::env::current_exe()?;
    let bins = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the build's profile directory")?
        .to_path_buf();
    let (api, stub, console, redis) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let workers = format!("{} {}", free_port()?, free_port()?);
    let (kafka_port, alerts) = (free_port()?, free_port()?);
    let log = clone.with_extension("log");
    let out = std::fs::File::create(&log)?;
    let mut command = Command::new("bash");
    command.arg(clone.join("scripts/run"));
    if kafka {
        command.arg("--kafka");
        // The broker this workspace installed (scripts/tansu, once), so the
        // clone does not build its own.
        let tansu = match std::env::var("TANSU_BIN") {
            Ok(bin) => bin,
            Err(_) => {
                let out = Command::new(root.join("scripts/tansu"))
                    .current_dir(root)
                    .output()
                    .context("running scripts/tansu")?;
                anyhow::ensure!(out.status.success(), "scripts/tansu failed");
                String::from_utf8(out.stdout)?.trim().to_owned()
            }
        };
        command.env("TANSU_BIN", tansu);
    }
    let child = command
        .current_dir(&clone)
        .env("RUN_BIN_DIR", &bins)
        .env("API_PORT", api.to_string())
        .env("STUB_PORT", stub.to_string())
        .env("CONSOLE_PORT", console.to_string())
        .env("REDIS_PORT", redis.to_string())
        .env("WORKER_PORTS", &workers)
        .env("KAFKA_PORT", kafka_port.to_string())
        .env("ALERTS_PORT", alerts.to_string())
        .env_remove("OTEL_EXPORTER_ZIPKIN_ENDPOINT")
        .env_remove("REDIS_URL")
        .env_remove("KAFKA_BROKERS")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .context("running scripts/run")?;
    let mut run = Run { child, log };

    // Stop as soon as it fails.
    let http = reqwest::Client::new();
    let api_url = format!("http://127.0.0.1:{api}");
    let console_url = format!("http://127.0.0.1:{console}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = run.child.try_wait()? {
            bail!("scripts/run exited ({status}):\n{}", run.output());
        }
        let ready = get_json(&http, &format!("{api_url}/readyz"))
            .await
            .is_some()
            && get_json(&http, &format!("{console_url}/healthz"))
                .await
                .is_some()
            && run.output().contains("console: http://localhost");
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "scripts/run did not start within 2 minutes:\n{}",
                run.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let printed = run.output();
    let first = printed
        .lines()
        .find(|l| !l.trim().is_empty() && l.trim_start().starts_with("console:"))
        .unwrap_or_default();
    assert!(
        first.contains(&format!("http://localhost:{console}")),
        "it prints the console's URL: {printed}"
    );

    let res: Value = http
        .post(format!("{api_url}/v1/jobs"))
        .header("content-type", "application/json")
        .body(r#"{"city": "Reykjavik"}"#)
        .send()
        .await?
        .json()
        .await?;
    let (id, trace) = (
        res["id"].as_str().context("a job id")?.to_owned(),
        res["trace_id"].as_str().context("a trace id")?.to_owned(),
    );
    // With Kafka: the event's PRODUCER span, the alerts' CONSUMER span and
    // its Redis call.
    let want = if kafka { 12 } else { 9 };
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let job = get_json(&http, &format!("{api_url}/v1/jobs/{id}")).await;
        let spans = get_json(&http, &format!("{console_url}/api/v2/trace/{trace}")).await;
        if let (Some(job), Some(Value::Array(spans))) = (job, spans)
            && job["status"] == "succeeded"
            && spans.len() == want
        {
            break spans;
        }
        if Instant::now() > deadline {
            bail!(
                "job {id} and its trace not complete in the console:\n{}",
                run.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The console keeps them on disk, in the clone.
    let data = clone.join(".data/console");
    anyhow::ensure!(
        std::fs::read_dir(&data).map(|d| d.count()).unwrap_or(0) > 0,
        "the console keeps no traces in {}:\n{}",
        data.display(),
        run.output()
    );
    let mut services: Vec<&str> = spans
        .iter()
        .filter_map(|s| s["localEndpoint"]["serviceName"].as_str())
        .collect();
    services.sort();
    services.dedup();
    if kafka {
        assert_eq!(services, ["alerts", "api", "weather-stub", "worker"]);
        let page = get_json(&http, &format!("http://127.0.0.1:{alerts}/v1/alerts")).await;
        assert!(
            page.is_some_and(|p| p["alerts"].is_array()),
            "the alerts service answers"
        );
    } else {
        assert_eq!(services, ["api", "weather-stub", "worker"]);
    }
    let log = run.log.clone();
    drop(run);
    let _ = std::fs::remove_dir_all(&clone);
    let _ = std::fs::remove_file(log);
    Ok(())
}

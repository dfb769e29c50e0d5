//! A Redis that stops answering, its connections left open (a frozen
//! server: SIGSTOP), under jobs that are running: nothing hangs while it
//! is frozen, and once it answers again every job succeeds, each once.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::Stack;

/// How long Redis stays frozen: under the jobs' lease (30 s), so no job
/// may run twice.
const FROZEN: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_redis_frozen_for_20_s_under_running_jobs_hangs_nothing_and_every_job_runs_once()
-> anyhow::Result<()> {
    // Each job takes about 300 ms at the stub: many run when Redis freezes.
    let mut stack = Stack::start_with(&[("STUB_LATENCY_MS", "300")], &[]).await?;
    let mut ids = Vec::new();
    for n in 0..100 {
        let (id, _) = stack
            .enqueue(&format!(r#"{{"city": "Frozen {n}"}}"#), &[])
            .await?;
        ids.push(id);
    }
    // Wait for some to run, then freeze Redis.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = stack.job(&ids[0]).await?;
        if job["status"] != "queued" {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no job started: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = stack.redis_pid()?.to_string();
    anyhow::ensure!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()?
            .success()
    );
    let frozen_at = Instant::now();
    let thaw = || Command::new("kill").args(["-CONT", &pid]).status();

    // Nothing hangs: the api answers a new job within its limits (a 503,
    // not a request that never ends), and the workers' health answers.
    let asked = Instant::now();
    let res = stack
        .http
        .post(format!("{}/v1/jobs", stack.api_url))
        .header("content-type", "application/json")
        .body(r#"{"city": "Frozen late"}"#)
        .timeout(Duration::from_secs(19))
        .send()
        .await;
    let answered = asked.elapsed();
    println!("the api answered in {answered:?}, Redis frozen");
    let status = res.as_ref().map(|r| r.status().as_u16());
    if !matches!(status, Ok(503)) || answered > Duration::from_secs(10) {
        thaw()?;
        anyhow::bail!("the api, Redis frozen: {status:?} after {answered:?}");
    }
    for url in &stack.worker_urls {
        let health = stack
            .http
            .get(format!("{url}/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if health.is_err() {
            thaw()?;
            anyhow::bail!("a worker's /healthz hangs while Redis is frozen: {health:?}");
        }
    }
    tokio::time::sleep(FROZEN.saturating_sub(frozen_at.elapsed())).await;
    anyhow::ensure!(thaw()?.success());

    // Thawed: every job succeeds, each in one attempt.
    let thawed = Instant::now();
    for id in &ids {
        let done = stack
            .wait_job(id, "succeeded", |doc| {
                doc["status"] == "succeeded" || doc["status"] == "failed"
            })
            .await
            .with_context(|| format!("job {id} after the freeze"))?;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["attempts"], 1, "ran once: {done}");
    }
    println!("every job done {:?} after the thaw", thawed.elapsed());
    Ok(())
}

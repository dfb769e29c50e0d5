//! Redis set up to lose jobs is caught: a `maxmemory-policy` that evicts
//! keys stops the api and the workers at start (or, allowed, shows in
//! their metrics), and one set later is logged as an error by the running
//! services; a Redis full under `noeviction` makes the api answer 503 with
//! `Retry-After` while every job it accepted runs.

use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::{Stack, WAIT};
use testkit::{RedisServer, ServiceProcess, free_port, project_binary};

/// Starts `bin` with `env` and waits until it is healthy: answers the
/// process, or why it did not get there (its output included).
async fn run_briefly(
    bin: &str,
    env: &[(&str, String)],
    health: &str,
) -> anyhow::Result<Result<ServiceProcess, String>> {
    let path = project_binary(bin)?;
    match ServiceProcess::start(bin, path.to_str().context("path")?, env, health).await {
        Ok(process) => Ok(Ok(process)),
        Err(e) => Ok(Err(format!("{e:#}"))),
    }
}

#[tokio::test]
async fn a_redis_that_evicts_keys_stops_the_api_and_the_workers_unless_allowed()
-> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut conn = redis.client()?.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut conn)
        .await?;
    let api_port = free_port()?;
    let worker_port = free_port()?;
    let api_env = |allow: &str| {
        vec![
            ("REDIS_URL", redis.url()),
            ("API_LISTEN", format!("127.0.0.1:{api_port}")),
            ("OTEL_TRACES_EXPORTER", "none".to_owned()),
            ("REDIS_ALLOW_EVICTION", allow.to_owned()),
        ]
    };
    let worker_env = |allow: &str| {
        vec![
            ("REDIS_URL", redis.url()),
            ("WORKER_LISTEN", format!("127.0.0.1:{worker_port}")),
            ("OTEL_TRACES_EXPORTER", "none".to_owned()),
            ("REDIS_ALLOW_EVICTION", allow.to_owned()),
        ]
    };
    let api_health = format!("http://127.0.0.1:{api_port}/healthz");
    let worker_health = format!("http://127.0.0.1:{worker_port}/healthz");
    for (bin, env, health) in [
        ("api", api_env("false"), &api_health),
        ("worker", worker_env("false"), &worker_health),
    ] {
        let refused = run_briefly(bin, &env, health)
            .await?
            .err()
            .with_context(|| format!("{bin} started on an evicting Redis"))?;
        for says in [
            "maxmemory-policy allkeys-lru",
            "noeviction",
            "REDIS_ALLOW_EVICTION",
        ] {
            assert!(refused.contains(says), "{bin}: {refused}");
        }
    }
    // Allowed, it runs, warns, and its metrics say so.
    let api = run_briefly("api", &api_env("true"), &api_health)
        .await?
        .map_err(anyhow::Error::msg)?;
    let worker = run_briefly("worker", &worker_env("true"), &worker_health)
        .await?
        .map_err(anyhow::Error::msg)?;
    for (process, base) in [
        (&api, format!("http://127.0.0.1:{api_port}")),
        (&worker, format!("http://127.0.0.1:{worker_port}")),
    ] {
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await?
            .text()
            .await?;
        assert!(
            metrics
                .contains(r#"jobs_redis_evicting_nodes{messaging_destination_name="weather"} 1"#),
            "{metrics}"
        );
        assert!(process.logs().contains("evicts keys"), "{}", process.logs());
    }
    // Set right, the metric follows at the next scrape.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async(&mut conn)
        .await?;
    let metrics = reqwest::get(format!("http://127.0.0.1:{api_port}/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(r#"jobs_redis_evicting_nodes{messaging_destination_name="weather"} 0"#),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_policy_that_evicts_set_while_the_services_run_is_logged_as_an_error()
-> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut conn = stack.redis_connection().await?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("volatile-lru")
        .query_async(&mut conn)
        .await?;
    // The watch reads the policy every 5 s.
    let deadline = Instant::now() + WAIT;
    let says = "maxmemory-policy now evicts keys";
    loop {
        let logs = [
            stack.api.logs(),
            stack.workers[0].logs(),
            stack.workers[1].logs(),
        ];
        if logs
            .iter()
            .all(|l| l.contains(says) && l.contains("volatile-lru"))
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every service logged the change: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = stack.scrape(&stack.worker_urls[0]).await?;
    assert!(
        page.contains(r#"jobs_redis_evicting_nodes{messaging_destination_name="weather"} 1"#),
        "{page}"
    );
    Ok(())
}

#[tokio::test]
async fn a_full_redis_under_noeviction_gets_503s_with_retry_after_and_loses_no_accepted_job()
-> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut conn = stack.redis_connection().await?;
    // Full: the memory Redis uses now, and a little more.
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .context("used_memory")?
        .trim()
        .parse()?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + 256 * 1024)
        .query_async(&mut conn)
        .await?;
    let mut accepted = Vec::new();
    let mut refused = None;
    let deadline = Instant::now() + WAIT;
    while refused.is_none() {
        let res = stack
            .http
            .post(format!("{}/v1/jobs", stack.api_url))
            .header("content-type", "application/json")
            .body(format!(r#"{{"city": "Oslo {}"}}"#, accepted.len()))
            .send()
            .await?;
        let status = res.status().as_u16();
        match status {
            202 => {
                let body: serde_json::Value = res.json().await?;
                accepted.push(body["id"].as_str().context("an id")?.to_owned());
            }
            503 => {
                let retry = res.headers().get("retry-after").cloned();
                let ct = res.headers().get("content-type").cloned();
                let body = res.text().await?;
                refused = Some((retry, ct, body));
            }
            other => anyhow::bail!("{other}: {}", res.text().await?),
        }
        anyhow::ensure!(Instant::now() < deadline, "Redis never filled up");
    }
    let (retry, ct, body) = refused.context("a refusal")?;
    assert_eq!(
        retry.as_ref().and_then(|v| v.to_str().ok()),
        Some("1"),
        "{body}"
    );
    assert_eq!(
        ct.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    assert!(body.contains("full"), "{body}");
    assert!(!accepted.is_empty());
    // Room again: it takes jobs, and every job it accepted runs.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut conn)
        .await?;
    let (status, _) = stack.post(r#"{"city": "Bergen"}"#, &[]).await?;
    assert_eq!(status, 202);
    for id in &accepted {
        let done = stack.wait_done(id).await?;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    Ok(())
}

//! Enqueue through the api: `POST /v1/jobs` from a fixed number of
//! connections, each sending one request at a time, for a fixed time, with
//! tracing off and on. No worker runs, so the queue only grows: this
//! measures the api and Redis alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use testkit::{RedisServer, ServiceProcess, free_port};

use crate::collector::Collector;
use crate::measure::cpu_secs_of;
use crate::systems::beside_me;

/// Settings of the api phase.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Concurrent connections, each sending one request at a time.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// How long each measurement lasts, seconds (after a one-second
    /// warm-up).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Rounds, tracing off and on in each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where `api.md` and `api.json` go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// One short round: checks the phase runs, measures nothing.
    #[arg(long)]
    quick: bool,
}

/// One measurement.
#[derive(Debug, Clone, serde::Serialize)]
struct ApiRun {
    tracing: bool,
    round: usize,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU of the api per request, ms.
    api_cpu_ms: f64,
    /// CPU of redis-server per request, ms.
    redis_cpu_ms: f64,
    /// Answers other than 202.
    errors: u64,
}

pub async fn run(mut args: ApiArgs) -> anyhow::Result<()> {
    if args.quick {
        args.secs = 1;
        args.rounds = 1;
    }
    let collector = Collector::start().await?;
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for tracing in [false, true] {
            let run = one(&args, round, tracing, &collector).await?;
            eprintln!(
                "round {round} api tracing {:>3}: {:>8.0} POST/s, p50 {:.2} ms, p99 {:.2} ms, \
                 api {:.3} ms/request, redis {:.3} ms/request, {} errors",
                if tracing { "on" } else { "off" },
                run.requests_per_sec,
                run.p50_ms,
                run.p99_ms,
                run.api_cpu_ms,
                run.redis_cpu_ms,
                run.errors
            );
            runs.push(run);
        }
    }
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("api.json"),
        serde_json::to_string_pretty(&runs)?,
    )?;
    let md = markdown(&runs, args.connections, args.quick);
    std::fs::write(args.out.join("api.md"), &md)?;
    println!("{md}");
    Ok(())
}

async fn one(
    args: &ApiArgs,
    round: usize,
    tracing: bool,
    collector: &Collector,
) -> anyhow::Result<ApiRun> {
    // A fresh Redis each time: the queue grows by every request.
    let redis = RedisServer::start().await?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut env = vec![
        ("REDIS_URL", redis.url()),
        ("API_LISTEN", format!("127.0.0.1:{port}")),
        ("RUST_LOG", "warn".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
        // Every request is admitted: this measures the api, not its shedding.
        ("API_MAX_IN_FLIGHT", "100000".into()),
    ];
    if tracing {
        env.push(("OTEL_TRACES_EXPORTER", "zipkin".into()));
        env.push(("OTEL_EXPORTER_ZIPKIN_ENDPOINT", collector.endpoint()));
    } else {
        env.push(("OTEL_TRACES_EXPORTER", "none".into()));
    }
    let api = ServiceProcess::start(
        "api",
        beside_me("api")?.to_str().context("the api's path")?,
        &env,
        &format!("{url}/readyz"),
    )
    .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let body: Arc<str> = r#"{"latitude": 52.52, "longitude": 13.41}"#.into();
    // Warm-up: connections open, caches fill.
    load(&http, &url, &body, args.connections, Duration::from_secs(1)).await;
    let clk = crate::measure::clock_ticks();
    let (cpu0, rcpu0) = (cpu_secs_of(api.pid(), clk), cpu_secs_of(redis.pid(), clk));
    let started = Instant::now();
    let (mut latencies, errors) = load(
        &http,
        &url,
        &body,
        args.connections,
        Duration::from_secs(args.secs),
    )
    .await;
    let took = started.elapsed().as_secs_f64();
    let (cpu1, rcpu1) = (cpu_secs_of(api.pid(), clk), cpu_secs_of(redis.pid(), clk));
    let n = latencies.len().max(1) as f64;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(ApiRun {
        tracing,
        round,
        requests_per_sec: n / took,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        api_cpu_ms: (cpu1 - cpu0) * 1000.0 / n,
        redis_cpu_ms: (rcpu1 - rcpu0) * 1000.0 / n,
        errors,
    })
}

/// `connections` loops posting jobs for `how_long`; answers the latency of
/// each accepted request (ms) and the count of other answers.
async fn load(
    http: &reqwest::Client,
    url: &str,
    body: &Arc<str>,
    connections: usize,
    how_long: Duration,
) -> (Vec<f64>, u64) {
    let until = Instant::now() + how_long;
    let loops = (0..connections).map(|_| {
        let (http, url, body) = (http.clone(), format!("{url}/v1/jobs"), body.clone());
        tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < until {
                let t = Instant::now();
                let res = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        })
    });
    let mut all = Vec::new();
    let mut errors = 0;
    for r in futures::future::join_all(loops).await.into_iter().flatten() {
        all.extend(r.0);
        errors += r.1;
    }
    (all, errors)
}

fn markdown(runs: &[ApiRun], connections: usize, quick: bool) -> String {
    use std::fmt::Write as _;
    let median = |tracing: bool, f: fn(&ApiRun) -> f64| {
        let mut v: Vec<f64> = runs
            .iter()
            .filter(|r| r.tracing == tracing)
            .map(f)
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut md = String::new();
    if quick {
        md.push_str("**Quick run**: it checks the phase runs; the figures mean nothing.\n\n");
    }
    let _ = writeln!(
        md,
        "`POST /v1/jobs` from {connections} connections, one request at a time each; medians of {} round(s).\n",
        runs.len() / 2
    );
    md.push_str("| tracing | POST/s | p50 ms | p99 ms | api CPU ms/request | Redis CPU ms/request |\n|---|---:|---:|---:|---:|---:|\n");
    for tracing in [false, true] {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.2} | {:.2} | {:.3} | {:.3} |",
            if tracing { "on" } else { "off" },
            median(tracing, |r| r.requests_per_sec),
            median(tracing, |r| r.p50_ms),
            median(tracing, |r| r.p99_ms),
            median(tracing, |r| r.api_cpu_ms),
            median(tracing, |r| r.redis_cpu_ms),
        );
    }
    let (rate, p99) = (
        median(true, |r| r.requests_per_sec),
        median(true, |r| r.p99_ms),
    );
    let _ = writeln!(
        md,
        "\nTarget (tracing on): at least 30,000 POST/s with p99 under 5 ms: {:.0} POST/s, p99 {:.2} ms: {}.",
        rate,
        p99,
        if rate >= 30_000.0 && p99 < 5.0 {
            "met"
        } else {
            "not met"
        }
    );
    md
}

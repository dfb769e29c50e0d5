//! Enqueue through the api: `POST /v1/jobs` from a fixed number of
//! connections, each sending one request at a time, for a fixed time, with
//! tracing off and on. Without `--with-worker` no worker runs, so the queue
//! only grows: this measures the api and Redis alone. With it, a worker
//! runs the jobs as they come (end to end), and each job's latency, push
//! to finish on Redis's clock, is read back from the queue.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use redis_job_queue::{JobStatus, QueueConfig};
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
    /// End to end: a worker (concurrency 256) and the weather stub run the
    /// jobs while they are posted.
    #[arg(long)]
    with_worker: bool,
}

impl ApiArgs {
    /// `secs` seconds from 32 connections, no worker.
    pub(crate) fn enqueue_only(secs: u64) -> Self {
        Self {
            connections: 32,
            secs,
            rounds: 1,
            out: PathBuf::new(),
            quick: false,
            with_worker: false,
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ApiRun {
    tracing: bool,
    round: usize,
    pub(crate) requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU of the api per request, ms.
    pub(crate) api_cpu_ms: f64,
    /// CPU of redis-server per request, ms.
    redis_cpu_ms: f64,
    /// Answers other than 202.
    errors: u64,
    /// End to end: jobs finished per second, from the first POST to the
    /// last job done.
    jobs_per_sec: Option<f64>,
    /// End to end: push to finish, ms (Redis's clock).
    job_p50_ms: Option<f64>,
    job_p99_ms: Option<f64>,
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
            let run = one(&args, round, tracing, &[], &collector).await?;
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

/// One measurement; `extra` settings go to the api (and worker) after the
/// tracing ones.
pub(crate) async fn one(
    args: &ApiArgs,
    round: usize,
    tracing: bool,
    extra: &[(&'static str, String)],
    collector: &Collector,
) -> anyhow::Result<ApiRun> {
    // A fresh Redis each time: the queue grows by every request.
    let redis = RedisServer::start().await?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut common = vec![
        ("REDIS_URL", redis.url()),
        ("RUST_LOG", "warn".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
    ];
    if tracing {
        common.push(("OTEL_TRACES_EXPORTER", "zipkin".into()));
        common.push(("OTEL_EXPORTER_ZIPKIN_ENDPOINT", collector.endpoint()));
    } else {
        // Off means off: no span is built.
        common.push(("OTEL_SDK_DISABLED", "true".into()));
    }
    common.extend(extra.iter().cloned());
    let mut env = common.clone();
    env.push(("API_LISTEN", format!("127.0.0.1:{port}")));
    // Every request is admitted: this measures the api, not its shedding.
    env.push(("API_MAX_IN_FLIGHT", "100000".into()));
    let api = ServiceProcess::start(
        "api",
        beside_me("api")?.to_str().context("the api's path")?,
        &env,
        &format!("{url}/readyz"),
    )
    .await?;
    let _worker = match args.with_worker {
        true => Some(start_worker(&common).await?),
        false => None,
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    // Warm-up: connections open.
    load(&http, &url, &next, args.connections, Duration::from_secs(1)).await;
    let queue =
        redis_job_queue::RedisQueue::connect(&redis.url(), QueueConfig::new("weather")).await?;
    let done_before = queue.stats().await?.succeeded_total;
    let clk = crate::measure::clock_ticks();
    let (cpu0, rcpu0) = (cpu_secs_of(api.pid(), clk), cpu_secs_of(redis.pid(), clk));
    let started = Instant::now();
    let (mut latencies, errors) = load(
        &http,
        &url,
        &next,
        args.connections,
        Duration::from_secs(args.secs),
    )
    .await;
    let took = started.elapsed().as_secs_f64();
    let end_to_end = match args.with_worker {
        true => Some(drained(&queue, started, done_before).await?),
        false => None,
    };
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
        jobs_per_sec: end_to_end.map(|e| e.0),
        job_p50_ms: end_to_end.map(|e| e.1),
        job_p99_ms: end_to_end.map(|e| e.2),
    })
}

/// The weather stub and a worker, exporting as the api does.
async fn start_worker(
    common: &[(&'static str, String)],
) -> anyhow::Result<(ServiceProcess, ServiceProcess)> {
    let stub_port = free_port()?;
    let stub_url = format!("http://127.0.0.1:{stub_port}/");
    let stub = ServiceProcess::start(
        "weather-stub",
        beside_me("weather-stub")?.to_str().context("path")?,
        &[
            ("STUB_LISTEN", format!("127.0.0.1:{stub_port}")),
            ("OTEL_SDK_DISABLED", "true".into()),
        ],
        &format!("{stub_url}healthz"),
    )
    .await?;
    let port = free_port()?;
    let mut env = common.to_vec();
    env.extend([
        ("WORKER_LISTEN", format!("127.0.0.1:{port}")),
        ("WORKER_CONCURRENCY", "256".into()),
        ("GEOCODING_BASE_URL", stub_url.clone()),
        ("WEATHER_BASE_URL", stub_url),
    ]);
    let worker = ServiceProcess::start(
        "worker",
        beside_me("worker")?.to_str().context("path")?,
        &env,
        &format!("http://127.0.0.1:{port}/healthz"),
    )
    .await?;
    Ok((stub, worker))
}

/// Waits until the queue is empty (at most a minute); answers jobs
/// finished per second since `started` and the p50 and p99 of the
/// latest jobs' push-to-finish times, ms.
async fn drained(
    queue: &redis_job_queue::RedisQueue,
    started: Instant,
    done_before: u64,
) -> anyhow::Result<(f64, f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = queue.stats().await?;
        if s.waiting + s.in_flight + s.delayed == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the queue did not drain: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let done = queue.stats().await?.succeeded_total - done_before;
    // The latest 20,000 jobs at most.
    let mut waits = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let page = queue
            .list(JobStatus::Succeeded, cursor.as_deref(), 1000)
            .await?;
        waits.extend(
            page.jobs
                .iter()
                .filter_map(|j| Some(j.finished_at_ms?.saturating_sub(j.enqueued_at_ms) as f64)),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    waits.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        waits
            .get(((waits.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok((done as f64 / took, pct(0.5), pct(0.99)))
}

/// `connections` loops posting jobs for `how_long`, each job a place of
/// its own (numbered from `next`); answers the latency of each accepted
/// request (ms) and the count of other answers.
async fn load(
    http: &reqwest::Client,
    url: &str,
    next: &Arc<AtomicUsize>,
    connections: usize,
    how_long: Duration,
) -> (Vec<f64>, u64) {
    let until = Instant::now() + how_long;
    let loops = (0..connections).map(|_| {
        let (http, url, next) = (http.clone(), format!("{url}/v1/jobs"), next.clone());
        tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < until {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    r#"{{"latitude": {}, "longitude": {}}}"#,
                    (n % 10_000) as f64 / 100.0 - 50.0,
                    (n / 10_000) as f64 / 100.0 - 170.0
                );
                let t = Instant::now();
                let res = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
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
    let e2e = runs.iter().any(|r| r.jobs_per_sec.is_some());
    md.push_str(
        "| tracing | POST/s | p50 ms | p99 ms | api CPU ms/request | Redis CPU ms/request |",
    );
    md.push_str(if e2e {
        " jobs done/s | job p50 ms | job p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    } else {
        "\n|---|---:|---:|---:|---:|---:|\n"
    });
    for tracing in [false, true] {
        let _ = write!(
            md,
            "| {} | {:.0} | {:.2} | {:.2} | {:.3} | {:.3} |",
            if tracing { "on" } else { "off" },
            median(tracing, |r| r.requests_per_sec),
            median(tracing, |r| r.p50_ms),
            median(tracing, |r| r.p99_ms),
            median(tracing, |r| r.api_cpu_ms),
            median(tracing, |r| r.redis_cpu_ms),
        );
        if e2e {
            let _ = write!(
                md,
                " {:.0} | {:.1} | {:.1} |",
                median(tracing, |r| r.jobs_per_sec.unwrap_or(f64::NAN)),
                median(tracing, |r| r.job_p50_ms.unwrap_or(f64::NAN)),
                median(tracing, |r| r.job_p99_ms.unwrap_or(f64::NAN)),
            );
        }
        md.push('\n');
    }
    if e2e {
        let (off, on) = (
            median(false, |r| r.jobs_per_sec.unwrap_or(f64::NAN)),
            median(true, |r| r.jobs_per_sec.unwrap_or(f64::NAN)),
        );
        let _ = writeln!(
            md,
            "\nEnd to end, tracing costs {:.0}% of the jobs done per second.",
            (1.0 - on / off) * 100.0
        );
    } else {
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
    }
    md
}

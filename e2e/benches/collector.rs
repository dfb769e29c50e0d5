//! Does a trace collector that is down, or that accepts spans and never
//! answers, slow the jobs? One worker process drains a pre-filled queue of
//! fully sampled jobs (every job: a cache GET, two weather calls to the
//! stub, a cache SET, each a span) while its spans go to:
//!
//! - `up`: a collector that takes them (the test suite's stand-in);
//! - `down`: a port nobody listens on (connections refused);
//! - `silent`: a listener that accepts connections and never answers.
//!
//! Throughput is measured between 10% and 90% of the drain (worker start
//! and the tail left out), rounds interleaved, medians reported with the
//! spans the worker counted as dropped.
//!
//! ```sh
//! cargo build --release --bins
//! cargo bench -p e2e --bench collector              # 3 rounds of 4,000 jobs
//! cargo bench -p e2e --bench collector -- --quick   # 1 round of 400 (a check, not a measure)
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use redis_job_queue::{NewJob, QueueConfig, RedisQueue};
use serde_json::json;
use testkit::{RedisServer, ServiceProcess, ZipkinCollector, free_port, project_binary};

/// Where the worker's spans go.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Collector {
    Up,
    Down,
    Silent,
}

impl Collector {
    const ALL: [Self; 3] = [Self::Up, Self::Down, Self::Silent];

    fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down (refused)",
            Self::Silent => "silent (never answers)",
        }
    }
}

struct Endpoints {
    up: String,
    down: String,
    silent: String,
}

/// One drain: jobs per second, and spans dropped (queue full, export
/// failed) by the worker.
struct Drain {
    jobs_per_sec: f64,
    queue_full: f64,
    export_failed: f64,
}

struct Settings {
    jobs: usize,
    rounds: usize,
    concurrency: usize,
}

fn settings() -> anyhow::Result<Settings> {
    let mut s = Settings {
        jobs: 4_000,
        rounds: 3,
        concurrency: 64,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> anyhow::Result<usize> {
            args.next()
                .with_context(|| format!("{name} needs a number"))?
                .parse()
                .with_context(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--quick" => {
                s.jobs = 400;
                s.rounds = 1;
            }
            "--jobs" => s.jobs = number("--jobs")?,
            "--rounds" => s.rounds = number("--rounds")?,
            "--concurrency" => s.concurrency = number("--concurrency")?,
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => bail!(
                "unknown argument {other:?} (use --quick, --jobs N, --rounds N, --concurrency N)"
            ),
        }
    }
    Ok(s)
}

fn sum_metric(page: &str, name: &str, filter: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn drain(
    s: &Settings,
    redis: &RedisServer,
    stub_url: &str,
    endpoint: &str,
) -> anyhow::Result<Drain> {
    let mut conn = redis.client()?.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    let queue = RedisQueue::connect(&redis.url(), QueueConfig::new("weather")).await?;
    let jobs: Vec<NewJob> = (0..s.jobs)
        .map(|i| {
            let trace = format!("{:032x}", 0x5eed_0000_0000_u128 + i as u128);
            NewJob::new(&json!({ "place": { "city": format!("Bench {i}") }, "units": "metric" }))
                .map(|job| {
                    job.with_metadata("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
                })
        })
        .collect::<Result<_, _>>()?;
    queue.push_batch(jobs).await?;

    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let worker = ServiceProcess::start(
        "worker",
        project_binary("worker")?.to_str().context("path")?,
        &[
            ("REDIS_URL", redis.url()),
            ("WORKER_LISTEN", format!("127.0.0.1:{port}")),
            ("WORKER_CONCURRENCY", s.concurrency.to_string()),
            ("GEOCODING_BASE_URL", stub_url.to_owned()),
            ("WEATHER_BASE_URL", stub_url.to_owned()),
            ("OTEL_TRACES_EXPORTER", "zipkin".into()),
            ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", endpoint.to_owned()),
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "warn".into()),
        ],
        &format!("{url}/healthz"),
    )
    .await?;
    let total = s.jobs as u64;
    let (from, to) = (total / 10, total * 9 / 10);
    let (mut t_from, mut t_to) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while t_to.is_none() {
        let done = queue.stats().await?.succeeded_total;
        if t_from.is_none() && done >= from {
            t_from = Some(Instant::now());
        }
        if done >= to {
            t_to = Some(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the drain did not finish: {done} of {total} jobs");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t_to
        .zip(t_from)
        .map(|(b, a)| b.duration_since(a))
        .unwrap_or_default();
    let page = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    drop(worker);
    Ok(Drain {
        jobs_per_sec: (to - from) as f64 / took.as_secs_f64().max(1e-9),
        queue_full: sum_metric(&page, "otel_spans_dropped_total", "queue_full"),
        export_failed: sum_metric(&page, "otel_spans_dropped_total", "export_failed"),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let s = settings()?;
    let redis = RedisServer::start().await?;
    let stub_port = free_port()?;
    let stub_url = format!("http://127.0.0.1:{stub_port}/");
    let _stub = ServiceProcess::start(
        "weather-stub",
        project_binary("weather-stub")?.to_str().context("path")?,
        &[
            ("STUB_LISTEN", format!("127.0.0.1:{stub_port}")),
            ("OTEL_TRACES_EXPORTER", "none".into()),
            ("RUST_LOG", "warn".into()),
        ],
        &format!("{stub_url}healthz"),
    )
    .await?;
    let collector = ZipkinCollector::start().await?;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let silent_addr = silent.local_addr()?;
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let endpoints = Endpoints {
        up: collector.endpoint(),
        down: format!("http://127.0.0.1:{}/api/v2/spans", free_port()?),
        silent: format!("http://{silent_addr}/api/v2/spans"),
    };

    let mut results: Vec<(Collector, Vec<Drain>)> =
        Collector::ALL.iter().map(|c| (*c, Vec::new())).collect();
    for round in 0..s.rounds {
        for (c, drains) in &mut results {
            eprintln!("round {}/{}: collector {}", round + 1, s.rounds, c.name());
            let endpoint = match c {
                Collector::Up => &endpoints.up,
                Collector::Down => &endpoints.down,
                Collector::Silent => &endpoints.silent,
            };
            drains.push(drain(&s, &redis, &stub_url, endpoint).await?);
        }
    }

    println!(
        "{} round(s), medians; {} jobs per drain, one worker at concurrency {}, \
         every job sampled (5 spans).\n",
        s.rounds, s.jobs, s.concurrency
    );
    println!("| collector | drain jobs/s | vs up | spans dropped: queue full | export failed |");
    println!("|---|---:|---:|---:|---:|");
    let up = median(results[0].1.iter().map(|d| d.jobs_per_sec).collect());
    for (c, drains) in &results {
        let rate = median(drains.iter().map(|d| d.jobs_per_sec).collect());
        println!(
            "| {} | {:.0} | {:.2} | {:.0} | {:.0} |",
            c.name(),
            rate,
            rate / up.max(1e-9),
            median(drains.iter().map(|d| d.queue_full).collect()),
            median(drains.iter().map(|d| d.export_failed).collect()),
        );
    }
    Ok(())
}

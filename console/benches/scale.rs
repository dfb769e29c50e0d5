//! The console at scale: a million finished jobs in Redis and a million
//! spans in its store on disk, then the pages an operator opens, timed
//! through the real console process.
//!
//! ```sh
//! cargo bench -p console --bench scale                # 1,000,000 jobs and spans
//! cargo bench -p console --bench scale -- --quick     # small, to check it runs
//! ```
//!
//! The jobs go through the real queue: pushed in batches (a tenth of them
//! for places that do not exist, so they fail; priorities and batches
//! mixed in), then run to the end by workers of the queue's own apalis
//! backend with a handler that does nothing else. Each job's metadata
//! points at its trace, ten spans shaped like a real job's, posted to the
//! console (`CONSOLE_DATA_DIR` set) from two clients. Then each page is
//! asked `--requests` times, one at a time, and the console is killed and
//! started again to time the reopening of its store.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apalis_core::error::BoxDynError;
use apalis_core::worker::builder::WorkerBuilder;
use clap::Parser;
use redis_job_queue::{NewJob, Priority, QueueConfig, RedisQueue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use testkit::{Console, RedisServer};

/// Benchmark the console's pages at scale.
#[derive(Debug, Parser)]
struct Args {
    /// Finished jobs in Redis.
    #[arg(long, default_value_t = 1_000_000)]
    jobs: u64,
    /// Spans in the store (ten a job, for the first tenth of the jobs).
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    /// Requests timed per page.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Small, fast settings to check the benchmark still runs.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench` to every benchmark; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

const CITIES: &[&str] = &[
    "Oslo", "Bergen", "Berlin", "Lisbon", "Tromsø", "Madrid", "Paris", "Rome", "Vienna", "Prague",
];
const SPANS_PER_TRACE: u64 = 10;

/// A job as the weather jobs are: a place.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    place: Value,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The trace id of job `n`.
fn trace_id(n: u64) -> String {
    format!("{:016x}{:016x}", 0x5ca1_e000_u64, n + 1)
}

/// Job `n`: its place (a tenth nowhere), priority and batch.
fn job(n: u64) -> anyhow::Result<NewJob> {
    let place = if n % 10 == 9 {
        json!({ "city": format!("Nowhere {n}") })
    } else if n % 10 == 8 {
        json!({ "latitude": 59.9 + (n % 7) as f64 / 10.0, "longitude": 10.7 })
    } else {
        json!({ "city": CITIES[(n % CITIES.len() as u64) as usize] })
    };
    let mut job = NewJob::new(&Job { place })?
        .with_metadata("traceparent", format!("00-{}-{:016x}-01", trace_id(n), 2))
        .with_priority(match n % 20 {
            0 => Priority::High,
            1 => Priority::Low,
            _ => Priority::Normal,
        });
    if n % 100 < 10 {
        job = job.in_batch(format!("batch-{}", n / 100));
    }
    Ok(job)
}

/// Job `n`'s trace: ten spans over the api, the worker, Redis and the
/// weather service, as the services export them.
fn trace(n: u64, t0: u64) -> Vec<Value> {
    let trace = trace_id(n);
    let id = |i: u64| format!("{:016x}", i + 1);
    let span = |i: u64, parent: Option<u64>, service: &str, name: &str, kind: &str, tags: Value| {
        let mut s = json!({
            "traceId": trace, "id": id(i), "name": name, "kind": kind,
            "timestamp": t0 + i * 100, "duration": 900 - i * 50,
            "localEndpoint": { "serviceName": service },
            "tags": tags,
        });
        if let Some(p) = parent {
            s["parentId"] = id(p).into();
        }
        s
    };
    let job = json!({ "messaging.destination.name": "weather", "messaging.system": "redis",
                      "job.id": format!("job-{n}") });
    let mut spans = vec![
        span(
            0,
            None,
            "api",
            "post /v1/jobs",
            "SERVER",
            json!({ "http.route": "/v1/jobs" }),
        ),
        span(1, Some(0), "api", "send weather", "PRODUCER", job.clone()),
        span(2, Some(1), "worker", "process weather", "CONSUMER", job),
    ];
    for i in 3..SPANS_PER_TRACE {
        let (service, name, kind) = match i % 3 {
            0 => ("worker", "get", "CLIENT"),
            1 => ("weather-stub", "get /v1/forecast", "SERVER"),
            _ => ("worker", "set", "CLIENT"),
        };
        spans.push(span(
            i,
            Some(2),
            service,
            name,
            kind,
            json!({ "db.system.name": "redis" }),
        ));
    }
    spans
}

fn quantile(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Asks `path` `n` times, one at a time; answers p50 and p99 (ms).
async fn time_page(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    path: impl Fn(usize) -> String,
) -> anyhow::Result<(f64, f64)> {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let url = format!("{base}{}", path(i));
        let t = Instant::now();
        let res = http.get(&url).send().await?;
        let status = res.status();
        let body = res.text().await?;
        took.push(t.elapsed());
        anyhow::ensure!(status.is_success(), "{url}: {status}: {body}");
    }
    Ok((quantile(&mut took, 0.5), quantile(&mut took, 0.99)))
}

/// Pushes jobs `0..n` and runs them all to the end.
async fn fill_jobs(queue: &RedisQueue, n: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut next = 0;
    while next < n {
        let end = (next + 1_000).min(n);
        let jobs = (next..end).map(job).collect::<anyhow::Result<Vec<_>>>()?;
        queue.push_batch(jobs).await?;
        next = end;
    }
    async fn handle(job: Job) -> Result<(), BoxDynError> {
        match job.place["city"].as_str() {
            Some(c) if c.starts_with("Nowhere") => Err("no such place".into()),
            _ => Ok(()),
        }
    }
    let worker = WorkerBuilder::new("scale-bench")
        .backend(queue.backend::<Job>(512))
        .build(handle);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
        Ok::<(), std::io::Error>(())
    }));
    loop {
        let s = queue.stats().await?;
        if s.succeeded_total + s.failed_total >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    let _ = running.await;
    Ok(started.elapsed())
}

/// Posts the traces of jobs `0..traces` from two clients; answers how
/// long it took.
async fn fill_spans(console: &Console, traces: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let t0 = now_us() - 600_000_000;
    let mut clients = Vec::new();
    for c in 0..2u64 {
        let endpoint = console.endpoint();
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = c * 100;
            while n < traces {
                let end = (n + 100).min(traces);
                let spans: Vec<Value> = (n..end).flat_map(|t| trace(t, t0 + t * 1_000)).collect();
                let res = http
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&spans)?)
                    .send()
                    .await?;
                anyhow::ensure!(res.status() == 202, "posting spans: {}", res.status());
                n += 200;
            }
            anyhow::Ok(())
        }));
    }
    for c in clients {
        c.await??;
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.jobs = 2_000;
        args.spans = 2_000;
        args.requests = 10;
    }
    let redis = RedisServer::start().await?;
    let mut cfg = QueueConfig::new("weather");
    cfg.max_attempts = 1;
    cfg.retention = Duration::from_secs(86_400);
    let queue = RedisQueue::connect(&redis.url(), cfg).await?;
    let fill = fill_jobs(&queue, args.jobs).await?;
    println!(
        "{} jobs pushed and run in {:.1} s",
        args.jobs,
        fill.as_secs_f64()
    );

    let mut console = Console::start_on_disk(
        env!("CARGO_BIN_EXE_console"),
        &[
            ("REDIS_URL", redis.url()),
            ("CONSOLE_MAX_SPANS", (args.spans * 2).to_string()),
            ("CONSOLE_MAX_BYTES", (2u64 << 30).to_string()),
            ("CONSOLE_DISK_BYTES", (4u64 << 30).to_string()),
        ],
    )
    .await?;
    let base = console.url().to_owned();
    let traces = args.spans / SPANS_PER_TRACE;
    let ingest = fill_spans(&console, traces).await?;
    let stored = console.metric("console_spans_stored").await?;
    anyhow::ensure!(
        stored as u64 == traces * SPANS_PER_TRACE,
        "{stored} spans stored"
    );
    let rate = stored / ingest.as_secs_f64();

    let http = reqwest::Client::new();
    let n = args.requests;
    let jobs = args.jobs;
    // Ids of jobs whose trace is in the store, to open their pages.
    let ids: Vec<String> = queue
        .search(
            &redis_job_queue::JobQuery {
                order: redis_job_queue::Order::Asc,
                ..Default::default()
            },
            None,
            n.min(1000),
        )
        .await?
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect();
    anyhow::ensure!(!ids.is_empty(), "no job found");
    let mut rows = Vec::new();
    rows.push((
        "Queues page",
        time_page(&http, &base, n, |_| "/queues".into()).await?,
    ));
    rows.push((
        "job search: succeeded jobs in Ber…, newest 50",
        time_page(&http, &base, n, |i| {
            [
                "/jobs?place=ber&status=succeeded",
                "/jobs?status=failed&order=asc",
                "/jobs?priority=high",
            ][i % 3]
                .into()
        })
        .await?,
    ));
    rows.push((
        "job search: a rare match (one batch of 10 jobs)",
        time_page(&http, &base, n, |i| {
            format!(
                "/jobs?batch_id=batch-{}",
                (i as u64 * 7919) % (jobs / 100).max(1)
            )
        })
        .await?,
    ));
    rows.push((
        "job page (its trace drawn)",
        time_page(&http, &base, n, |i| format!("/jobs/{}", ids[i % ids.len()])).await?,
    ));
    rows.push((
        "trace search: service and tag, newest 20",
        time_page(&http, &base, n, |i| {
            format!(
                "/traces?service={}&tags=messaging.destination.name%3Dweather&lookback=24h",
                ["worker", "api"][i % 2]
            )
        })
        .await?,
    ));
    let dir_bytes = console.metric("console_data_dir_bytes").await?;
    // A bulk action counts its jobs first: every page of a rare search,
    // through every job.
    let t = Instant::now();
    let rare = queue
        .count(&redis_job_queue::JobQuery {
            batch: Some("batch-7".into()),
            ..Default::default()
        })
        .await?;
    let count_took = t.elapsed();
    anyhow::ensure!(rare == 10.min(jobs), "{rare} jobs in batch-7");

    let t = Instant::now();
    console.kill_and_restart().await?;
    let reopen = t.elapsed();
    let back = console.metric("console_spans_stored").await?;
    anyhow::ensure!(back == stored, "{back} spans read back of {stored}");

    println!(
        "\n{jobs} finished jobs in Redis, {stored} spans in the store on disk; {n} requests a page, one at a time\n"
    );
    println!("| measure | p50 | p99 | target |");
    println!("|---|---:|---:|---:|");
    for (name, (p50, p99)) in &rows {
        println!("| {name} (ms) | {p50:.1} | {p99:.1} | p99 < 200 |");
    }
    println!(
        "| counting a rare search through every job (one batch of 10), as a bulk action does first (s) | {:.2} | | |",
        count_took.as_secs_f64()
    );
    println!("| store ingest over HTTP, two clients (spans/s) | {rate:.0} | | ≥ 50,000 |");
    println!(
        "| bytes on disk per span (the data directory) | {:.0} | | |",
        dir_bytes / stored.max(1.0)
    );
    println!(
        "| reopen after SIGKILL, until healthy (s) | {:.2} | | < 5 |",
        reopen.as_secs_f64()
    );
    Ok(())
}

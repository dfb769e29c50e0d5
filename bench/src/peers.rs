//! The Rust sides the benchmark runs as processes of their own: this
//! project's producer (the library's `TracedProducer`), and apalis-redis's
//! producer and worker. The BullMQ and Celery peers are in `bench/peers/`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use apalis::layers::tracing::{DefaultMakeSpan, TraceLayer};
use apalis::prelude::WorkerBuilderExt;
use apalis_core::backend::TaskSink;
use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use redis_job_queue::{NewJob, QueueConfig};
use serde::{Deserialize, Serialize};
use telemetry::TelemetryArgs;
use telemetry::messaging::TracedProducer;
use weather_jobs::{Place, Units, WeatherJob};

/// What every producer reads from its environment.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// `ours` or `apalis`.
    #[arg(long)]
    system: String,
    #[arg(long, env = "BENCH_REDIS_URL")]
    redis_url: String,
    #[arg(long, env = "BENCH_JOBS")]
    jobs: usize,
    /// Concurrent producers, each pushing one job at a time.
    #[arg(long, env = "BENCH_PRODUCERS", default_value_t = 32)]
    producers: usize,
    /// Job `i` asks for place `offset + i` (see [`coordinates`]).
    #[arg(long, env = "BENCH_OFFSET", default_value_t = 0)]
    offset: usize,
    /// Jobs per second, each sent when due (job `i` at `i / rate` s after
    /// the start, whatever came before it); 0: as fast as possible.
    #[arg(long, env = "BENCH_RATE", default_value_t = 0.0)]
    rate: f64,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// The apalis-redis job: coordinates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Coordinates {
    latitude: f64,
    longitude: f64,
}

/// Place `n`: a point of its own on a 0.01° grid (caches key places to
/// two decimals), so every job misses the cache and calls the forecast.
/// The peers compute the same (`bench/peers/*/`).
fn coordinates(n: usize) -> Coordinates {
    Coordinates {
        latitude: (n % 10_000) as f64 / 100.0 - 50.0,
        longitude: (n / 10_000) as f64 / 100.0 - 170.0,
    }
}

/// Waits until job `i` is due at `rate` jobs per second from `start`.
async fn due(start: Instant, i: usize, rate: f64) {
    if rate > 0.0 {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
    }
}

/// Now, in ms since the epoch.
fn epoch_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Runs `args.producers` loops sharing the job numbers below `args.jobs`;
/// each pushes job `i` (place `offset + i`), when due, with `push`. At a
/// fixed rate, answers when each job was sent (ms since the epoch, in job
/// order): timers wake late or early by up to a millisecond, so latency
/// counts from the send, not from the due time.
async fn push_all<C>(
    args: &ProduceArgs,
    start: Instant,
    client: C,
    push: for<'a> fn(&'a mut C, usize) -> futures::future::BoxFuture<'a, anyhow::Result<()>>,
) -> anyhow::Result<Vec<f64>>
where
    C: Clone + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let (jobs, offset, rate) = (args.jobs, args.offset, args.rate);
    let loops = (0..args.producers).map(|_| {
        let (mut client, next) = (client.clone(), next.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    return Ok::<_, anyhow::Error>(sent);
                }
                due(start, i, rate).await;
                if rate > 0.0 {
                    sent.push((i, epoch_ms()));
                }
                push(&mut client, offset + i).await?;
            }
        })
    });
    let mut sent = if rate > 0.0 {
        vec![0.0; jobs]
    } else {
        Vec::new()
    };
    for r in futures::future::join_all(loops).await {
        for (i, at) in r?? {
            sent[i] = at;
        }
    }
    Ok(sent)
}

/// Pushes `jobs` jobs from `producers` concurrent loops, then prints
/// `{"jobs": n, "ms": elapsed, "t0_ms": the start, ms since the epoch,
/// "sent_ms": each job's send, at a fixed rate (else empty)}`.
pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let guard = telemetry::init(&args.telemetry, "bench-producer")?;
    let start;
    let t0;
    let sent;
    match args.system.as_str() {
        "ours" => {
            // The shards and replicas the run asks for, as the api reads them.
            let mut cfg = QueueConfig::new("weather");
            let setting = |name: &str| std::env::var(name).ok();
            cfg.shards = setting("QUEUE_SHARDS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            cfg.wait_replicas = setting("QUEUE_WAIT_REPLICAS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let queue = redis_job_queue::connect_with_retry(&args.redis_url, cfg).await?;
            let producer = TracedProducer::new(queue, guard.propagation().clone());
            (start, t0) = (Instant::now(), epoch_ms());
            sent = push_all(&args, start, producer, |producer, n| {
                Box::pin(async move {
                    let c = coordinates(n);
                    let job = WeatherJob {
                        place: Place::Coordinates {
                            latitude: c.latitude,
                            longitude: c.longitude,
                        },
                        units: Units::Metric,
                    };
                    producer.send(NewJob::new(&job)?).await?;
                    Ok(())
                })
            })
            .await?;
        }
        "apalis" => {
            let conn = apalis_redis::connect(args.redis_url.as_str()).await?;
            (start, t0) = (Instant::now(), epoch_ms());
            sent = push_all(&args, start, apalis_storage(conn, 50), |storage, n| {
                Box::pin(async move {
                    storage
                        .push(coordinates(n))
                        .await
                        .map_err(|e| anyhow::anyhow!("apalis-redis push: {e}"))
                })
            })
            .await?;
        }
        other => anyhow::bail!("no Rust producer for {other:?}"),
    }
    let (jobs, ms) = (args.jobs, start.elapsed().as_secs_f64() * 1000.0);
    println!(
        "{}",
        serde_json::json!({ "jobs": jobs, "ms": ms, "t0_ms": t0, "sent_ms": sent })
    );
    guard.shutdown().await;
    Ok(())
}

fn apalis_storage(
    conn: apalis_redis::ConnectionManager,
    batch: usize,
) -> apalis_redis::RedisStorage<Coordinates> {
    let cfg = apalis_redis::Config::default()
        .queue("weather")
        .batch_size(batch);
    apalis_redis::RedisStorage::new(conn).with_config(cfg)
}

/// The apalis-redis worker's settings.
#[derive(Debug, clap::Args)]
pub struct ApalisWorkerArgs {
    #[arg(long, env = "BENCH_REDIS_URL")]
    redis_url: String,
    #[arg(long, env = "BENCH_CACHE_URL")]
    cache_url: String,
    #[arg(long, env = "BENCH_STUB_URL")]
    stub_url: String,
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 50)]
    concurrency: usize,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[derive(Clone)]
struct Deps {
    cache: redis::aio::ConnectionManager,
    http: reqwest::Client,
    stub: String,
}

/// The same job as ours: a cache GET, the forecast call, a cache SET EX.
async fn weather(job: Coordinates, deps: Data<Deps>) -> Result<(), BoxDynError> {
    let key = format!(
        "bench:weather:{:.2},{:.2}:metric",
        job.latitude, job.longitude
    );
    let mut cache = deps.cache.clone();
    let hit: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut cache).await?;
    if hit.is_some() {
        return Ok(());
    }
    let url = format!(
        "{}v1/forecast?latitude={}&longitude={}&current=temperature_2m,wind_speed_10m,\
         wind_direction_10m,weather_code&temperature_unit=celsius&wind_speed_unit=kmh",
        deps.stub, job.latitude, job.longitude
    );
    let answer: serde_json::Value = deps
        .http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let result = serde_json::json!({
        "latitude": job.latitude,
        "longitude": job.longitude,
        "current": answer["current"],
    });
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(result.to_string())
        .arg("EX")
        .arg(600)
        .query_async(&mut cache)
        .await?;
    Ok(())
}

/// Runs the apalis-redis worker until SIGTERM, its job spans (apalis's
/// `TraceLayer`) exported as our services export theirs.
pub async fn apalis_worker(args: ApalisWorkerArgs) -> anyhow::Result<()> {
    let guard = telemetry::init(&args.telemetry, "apalis-worker")?;
    let conn = apalis_redis::connect(args.redis_url.as_str()).await?;
    let cache = redis::aio::ConnectionManager::new(
        redis::Client::open(args.cache_url.as_str()).context("cache URL")?,
    )
    .await?;
    let deps = Deps {
        cache,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        stub: args.stub_url,
    };
    let worker = WorkerBuilder::new(format!("bench-apalis-{}", std::process::id()))
        .backend(apalis_storage(conn, args.concurrency))
        // apalis's job spans are DEBUG by default: INFO, so they are kept.
        .layer(TraceLayer::new().make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO)))
        .concurrency(args.concurrency)
        .data(deps)
        .build(weather);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    worker
        .run_until(async move {
            term.recv().await;
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("apalis worker: {e}"))?;
    guard.shutdown().await;
    Ok(())
}

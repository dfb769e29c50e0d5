//! Queue benchmark: this project's Redis queue against apalis-redis 1.0, in
//! one run, on one `redis-server`, with an empty handler.
//!
//! Measures, per backend and round (rounds alternate between backends so
//! both see the same machine noise):
//! - enqueue jobs/s: single pushes from concurrent producers, and one bulk push;
//! - drain jobs/s: a worker emptying a pre-filled backlog;
//! - pickup latency: push time to handler start, at a steady rate, after
//!   the worker sat idle for a second;
//! - Redis memory: before, after the drain, and after the retention.
//!
//! Prints the medians as a Markdown table. Run it with
//! `cargo bench -p redis-job-queue --bench queue -- --help`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use apalis_core::backend::TaskSink;
use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use clap::Parser;
use redis_job_queue::{NewJob, QueueConfig, RedisQueue};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

/// Benchmark this project's Redis queue against apalis-redis 1.0.
#[derive(Debug, Parser)]
struct Args {
    /// Redis to use (it is flushed between runs!). Default: start a private
    /// `redis-server` on a free loopback port.
    #[arg(long, env = "BENCH_REDIS_URL")]
    redis_url: Option<String>,
    /// Rounds per backend; the table shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Jobs pushed in the enqueue measurements.
    #[arg(long, default_value_t = 20_000)]
    enqueue_jobs: usize,
    /// Concurrent producers for single pushes.
    #[arg(long, default_value_t = 32)]
    producers: usize,
    /// Backlog drained. Keep it under ~8,000: past that apalis-redis 1.0's
    /// fetch script fails ("too many results to unpack").
    #[arg(long, default_value_t = 5_000)]
    drain_jobs: usize,
    /// Worker concurrency (and fetch batch size) for both backends.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Push rate of the pickup-latency measurement, jobs/s.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Length of the pickup-latency measurement.
    #[arg(long, default_value_t = 5)]
    pickup_secs: u64,
    /// Retention given to this project's queue for the memory measurement.
    #[arg(long, default_value_t = 2)]
    retention_secs: u64,
    /// Run only one side (`ours` or `apalis`), to profile it alone.
    #[arg(long, value_parser = ["ours", "apalis"])]
    only: Option<String>,
    /// Small, fast settings to check the benchmark still runs.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench` to every benchmark; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BenchJob {
    /// Push time, µs since the Unix epoch.
    sent_us: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Counts handled jobs, records pickup latencies, and wakes the waiter
/// when the expected number has been reached.
#[derive(Clone, Default)]
struct Probe {
    handled: Arc<AtomicU64>,
    expected: Arc<AtomicU64>,
    done: Arc<Notify>,
    latencies_us: Arc<Mutex<Vec<u64>>>,
}

impl Probe {
    fn expect(&self, n: u64) {
        self.handled.store(0, Ordering::SeqCst);
        self.expected.store(n, Ordering::SeqCst);
        if let Ok(mut l) = self.latencies_us.lock() {
            l.clear();
        }
    }

    fn hit(&self, job: &BenchJob) {
        let lat = now_us().saturating_sub(job.sent_us);
        if let Ok(mut l) = self.latencies_us.lock() {
            l.push(lat);
        }
        if self.handled.fetch_add(1, Ordering::SeqCst) + 1 == self.expected.load(Ordering::SeqCst) {
            self.done.notify_one();
        }
    }

    async fn wait(&self, limit: Duration) -> anyhow::Result<()> {
        let notified = self.done.notified();
        if self.handled.load(Ordering::SeqCst) >= self.expected.load(Ordering::SeqCst) {
            return Ok(());
        }
        tokio::time::timeout(limit, notified)
            .await
            .with_context(|| {
                format!(
                    "only {} of {} jobs handled within {limit:?}",
                    self.handled.load(Ordering::SeqCst),
                    self.expected.load(Ordering::SeqCst)
                )
            })
    }

    fn latencies(&self) -> Vec<u64> {
        self.latencies_us
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }
}

async fn handler(job: BenchJob, probe: Data<Probe>) -> Result<(), BoxDynError> {
    probe.hit(&job);
    Ok(())
}

/// One round's figures for one backend.
#[derive(Debug, Clone, Default)]
struct Round {
    enqueue_single: f64,
    enqueue_bulk: f64,
    drain: f64,
    pickup_p50_ms: f64,
    pickup_p99_ms: f64,
    mem_baseline: i64,
    mem_after_drain: i64,
    mem_after_retention: i64,
    data_after_drain: KeySpace,
    data_after_retention: KeySpace,
}

/// What the keys in Redis hold.
#[derive(Debug, Clone, Copy, Default)]
struct KeySpace {
    keys: u64,
    bytes: u64,
}

/// A backend under test.
trait Contender {
    fn name(&self) -> &'static str;
    async fn push_one(&self, queue: &str, job: BenchJob) -> anyhow::Result<()>;
    async fn push_bulk(&self, queue: &str, jobs: Vec<BenchJob>) -> anyhow::Result<()>;
    /// Starts a worker on `queue`.
    async fn start_worker(&self, queue: &str, probe: Probe) -> anyhow::Result<RunningWorker>;
}

struct Ours {
    url: String,
    concurrency: usize,
    retention: Duration,
}

impl Ours {
    async fn queue(&self, name: &str) -> anyhow::Result<RedisQueue> {
        let mut cfg = QueueConfig::new(name);
        cfg.retention = self.retention;
        Ok(RedisQueue::connect(&self.url, cfg).await?)
    }
}

impl Contender for Ours {
    fn name(&self) -> &'static str {
        "this project"
    }

    async fn push_one(&self, queue: &str, job: BenchJob) -> anyhow::Result<()> {
        // A handle per call would reconnect each time: share one per queue.
        shared_queue(self, queue)
            .await?
            .push(NewJob::new(&job)?)
            .await?;
        Ok(())
    }

    async fn push_bulk(&self, queue: &str, jobs: Vec<BenchJob>) -> anyhow::Result<()> {
        let q = shared_queue(self, queue).await?;
        let jobs = jobs
            .iter()
            .map(NewJob::new)
            .collect::<Result<Vec<_>, _>>()?;
        q.push_batch(jobs).await?;
        Ok(())
    }

    async fn start_worker(&self, queue: &str, probe: Probe) -> anyhow::Result<RunningWorker> {
        let q = self.queue(queue).await?;
        let worker = WorkerBuilder::new(format!("bench-{}", uuid::Uuid::new_v4().simple()))
            .backend(q.backend::<BenchJob>(self.concurrency))
            .data(probe)
            .build(handler);
        Ok(RunningWorker::spawn(|rx| worker.run_until(until(rx))))
    }
}

/// Queue handles, one per queue name, shared by all producers.
static QUEUES: Mutex<Vec<(String, RedisQueue)>> = Mutex::new(Vec::new());

async fn shared_queue(ours: &Ours, name: &str) -> anyhow::Result<RedisQueue> {
    if let Some(q) = QUEUES
        .lock()
        .ok()
        .and_then(|qs| qs.iter().find(|(n, _)| n == name).map(|(_, q)| q.clone()))
    {
        return Ok(q);
    }
    let q = ours.queue(name).await?;
    if let Ok(mut qs) = QUEUES.lock() {
        qs.push((name.to_owned(), q.clone()));
    }
    Ok(q)
}

struct ApalisRedis {
    conn: apalis_redis::ConnectionManager,
    concurrency: usize,
}

impl ApalisRedis {
    fn storage(&self, queue: &str) -> apalis_redis::RedisStorage<BenchJob> {
        let cfg = apalis_redis::Config::default()
            .queue(queue)
            .batch_size(self.concurrency);
        apalis_redis::RedisStorage::new(self.conn.clone()).with_config(cfg)
    }
}

impl Contender for ApalisRedis {
    fn name(&self) -> &'static str {
        "apalis-redis 1.0"
    }

    async fn push_one(&self, queue: &str, job: BenchJob) -> anyhow::Result<()> {
        self.storage(queue).push(job).await?;
        Ok(())
    }

    async fn push_bulk(&self, queue: &str, jobs: Vec<BenchJob>) -> anyhow::Result<()> {
        self.storage(queue).push_bulk(jobs).await?;
        Ok(())
    }

    async fn start_worker(&self, queue: &str, probe: Probe) -> anyhow::Result<RunningWorker> {
        let worker = WorkerBuilder::new(format!("bench-{}", uuid::Uuid::new_v4().simple()))
            .backend(self.storage(queue))
            .data(probe)
            .build(handler);
        Ok(RunningWorker::spawn(|rx| worker.run_until(until(rx))))
    }
}

/// A worker running in the background.
struct RunningWorker {
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl RunningWorker {
    fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = Result<(), apalis_core::error::WorkerError>> + Send + 'static,
    {
        let (stop, rx) = oneshot::channel();
        let fut = run(rx);
        let handle = tokio::spawn(async move {
            if let Err(e) = fut.await {
                eprintln!("worker ended with an error: {e}");
            }
        });
        Self { stop, handle }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .is_err()
        {
            eprintln!("worker did not stop within 10 s");
        }
    }
}

async fn until(rx: oneshot::Receiver<()>) -> Result<(), std::io::Error> {
    let _ = rx.await;
    Ok(())
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory has no used_memory")
}

/// Counts every key and adds up their `MEMORY USAGE` (exact, not sampled).
async fn key_space(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<KeySpace> {
    let mut cursor = 0u64;
    let mut d = KeySpace::default();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(conn).await?;
        d.keys += keys.len() as u64;
        d.bytes += sizes.into_iter().flatten().sum::<u64>();
        if next == 0 {
            return Ok(d);
        }
        cursor = next;
    }
}

async fn flush(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<()> {
    let _: () = redis::cmd("FLUSHALL").query_async(conn).await?;
    Ok(())
}

fn jobs(n: usize) -> Vec<BenchJob> {
    (0..n).map(|_| BenchJob { sent_us: now_us() }).collect()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

async fn run_round<C: Contender>(
    c: &C,
    args: &Args,
    conn: &mut redis::aio::MultiplexedConnection,
    round: usize,
) -> anyhow::Result<Round> {
    let mut r = Round::default();
    let tag = format!("r{round}");

    // Enqueue: single pushes from concurrent producers.
    flush(conn).await?;
    let queue = format!("enqueue-single-{tag}");
    c.push_one(&queue, BenchJob { sent_us: 0 }).await?; // connect and load scripts
    let per = args.enqueue_jobs / args.producers.max(1);
    let start = Instant::now();
    let producers = (0..args.producers).map(|_| async {
        for _ in 0..per {
            c.push_one(&queue, BenchJob { sent_us: now_us() }).await?;
        }
        anyhow::Ok(())
    });
    futures::future::try_join_all(producers).await?;
    r.enqueue_single = (per * args.producers) as f64 / start.elapsed().as_secs_f64();

    // Enqueue: one bulk push.
    flush(conn).await?;
    let queue = format!("enqueue-bulk-{tag}");
    c.push_one(&queue, BenchJob { sent_us: 0 }).await?;
    let batch = jobs(args.enqueue_jobs);
    let start = Instant::now();
    c.push_bulk(&queue, batch).await?;
    r.enqueue_bulk = args.enqueue_jobs as f64 / start.elapsed().as_secs_f64();

    // Drain a backlog, and watch memory around it.
    flush(conn).await?;
    let queue = format!("drain-{tag}");
    r.mem_baseline = used_memory(conn).await?;
    c.push_bulk(&queue, jobs(args.drain_jobs)).await?;
    let probe = Probe::default();
    probe.expect(args.drain_jobs as u64);
    let start = Instant::now();
    let stop = c.start_worker(&queue, probe.clone()).await?;
    probe.wait(Duration::from_secs(120)).await?;
    r.drain = args.drain_jobs as f64 / start.elapsed().as_secs_f64();
    r.mem_after_drain = used_memory(conn).await?;
    r.data_after_drain = key_space(conn).await?;
    stop.stop().await;
    // Expired keys go within a second or two of their TTL (active expiry).
    tokio::time::sleep(Duration::from_secs(args.retention_secs + 2)).await;
    r.mem_after_retention = used_memory(conn).await?;
    r.data_after_retention = key_space(conn).await?;

    // Pickup latency at a steady rate, after an idle second.
    flush(conn).await?;
    let queue = format!("pickup-{tag}");
    let total = args.rate * args.pickup_secs;
    let probe = Probe::default();
    probe.expect(total);
    let stop = c.start_worker(&queue, probe.clone()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / args.rate.max(1)));
    for _ in 0..total {
        tick.tick().await;
        c.push_one(&queue, BenchJob { sent_us: now_us() }).await?;
    }
    probe.wait(Duration::from_secs(90)).await?;
    stop.stop().await;
    let mut lat = probe.latencies();
    lat.sort_unstable();
    r.pickup_p50_ms = percentile(&lat, 0.50);
    r.pickup_p99_ms = percentile(&lat, 0.99);
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(r)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn summarize(rounds: &[Round], f: impl Fn(&Round) -> f64) -> f64 {
    median(rounds.iter().map(f).collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.rounds = 1;
        args.enqueue_jobs = 2_000;
        args.drain_jobs = 1_000;
        args.pickup_secs = 1;
        args.retention_secs = 1;
    }
    let _server;
    let url = match &args.redis_url {
        Some(url) => url.clone(),
        None => {
            let server = testkit::RedisServer::start().await?;
            let url = server.url();
            _server = server;
            url
        }
    };
    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let version: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    let version = version
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();

    let ours = Ours {
        url: url.clone(),
        concurrency: args.concurrency,
        retention: Duration::from_secs(args.retention_secs),
    };
    let theirs = ApalisRedis {
        conn: apalis_redis::connect(url.as_str()).await?,
        concurrency: args.concurrency,
    };

    let mut our_rounds = Vec::new();
    let mut their_rounds = Vec::new();
    for round in 0..args.rounds {
        if args.only.as_deref() != Some("apalis") {
            eprintln!("round {}/{}: {}", round + 1, args.rounds, ours.name());
            our_rounds.push(run_round(&ours, &args, &mut conn, round).await?);
        }
        if args.only.as_deref() != Some("ours") {
            eprintln!("round {}/{}: {}", round + 1, args.rounds, theirs.name());
            their_rounds.push(run_round(&theirs, &args, &mut conn, round).await?);
        }
    }

    println!(
        "Redis {version}, {} round(s), medians; concurrency {}, {} producers, \
         {} jobs enqueued, {} drained, pickup at {} jobs/s for {} s.\n",
        args.rounds,
        args.concurrency,
        args.producers,
        args.enqueue_jobs,
        args.drain_jobs,
        args.rate,
        args.pickup_secs
    );
    println!("| measure | {} | {} | ratio |", ours.name(), theirs.name());
    println!("|---|---:|---:|---:|");
    type Row = (&'static str, fn(&Round) -> f64, bool);
    let rows: [Row; 5] = [
        (
            "enqueue, single pushes (jobs/s)",
            |r| r.enqueue_single,
            true,
        ),
        ("enqueue, bulk push (jobs/s)", |r| r.enqueue_bulk, true),
        ("drain (jobs/s)", |r| r.drain, true),
        ("pickup p50 (ms)", |r| r.pickup_p50_ms, false),
        ("pickup p99 (ms)", |r| r.pickup_p99_ms, false),
    ];
    for (label, f, higher_is_better) in rows {
        let (a, b) = (summarize(&our_rounds, f), summarize(&their_rounds, f));
        let ratio = if higher_is_better { a / b } else { b / a };
        println!("| {label} | {a:.1} | {b:.1} | {ratio:.1}× |");
    }
    type MemRow = (&'static str, fn(&Round) -> f64);
    let mem: [MemRow; 6] = [
        ("keys in Redis after drain", |r| {
            r.data_after_drain.keys as f64
        }),
        ("keys in Redis after retention", |r| {
            r.data_after_retention.keys as f64
        }),
        ("data in Redis after drain (KiB)", |r| {
            r.data_after_drain.bytes as f64 / 1024.0
        }),
        ("data in Redis after retention (KiB)", |r| {
            r.data_after_retention.bytes as f64 / 1024.0
        }),
        ("used_memory after drain (KiB over baseline)", |r| {
            (r.mem_after_drain - r.mem_baseline) as f64 / 1024.0
        }),
        ("used_memory after retention (KiB over baseline)", |r| {
            (r.mem_after_retention - r.mem_baseline) as f64 / 1024.0
        }),
    ];
    for (label, f) in mem {
        let (a, b) = (summarize(&our_rounds, f), summarize(&their_rounds, f));
        println!("| {label} | {a:.1} | {b:.1} | |");
    }
    println!(
        "\nratio: how many times better this project is (higher jobs/s, lower ms). \
         data: the keys' own MEMORY USAGE; used_memory also counts Redis's \
         connections, script cache and allocator, which do not grow with jobs run."
    );
    Ok(())
}

//! One run: a system's producer fills the queue (enqueue, measured), then
//! its worker drains it (measured between 10% and 90% of the jobs, so
//! start-up and the tail are left out). Jobs are counted as the weather
//! stub answers their forecast calls, the same way for every system, at no
//! cost to Redis. CPU is read from `/proc` for the worker (with its child
//! processes) and for `redis-server`.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use testkit::{RedisServer, ServiceProcess, free_port};

use crate::collector::Collector;
use crate::report;
use crate::results::Run;
use crate::systems::{Setup, System};
use crate::target::Target;

/// apalis-redis 1.0 fails to fetch with more jobs waiting than about this
/// ("too many results to unpack"), so its runs are this long at most.
const APALIS_MAX_JOBS: usize = 7_500;

/// Settings of a benchmark run.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Jobs per run.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Rounds, interleaved (every system, tracing off and on, per round);
    /// the tables show medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Systems to run, comma-separated: ours, bullmq, celery, apalis.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ours,bullmq,celery,apalis"
    )]
    systems: Vec<String>,
    /// Concurrent producers in the enqueue phase, each pushing one job at a
    /// time.
    #[arg(long, default_value_t = 32)]
    producers: usize,
    /// Where the results go (`results.json`, `results.md`).
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// One round of 300 jobs: checks the benchmark runs, measures nothing.
    #[arg(long)]
    quick: bool,
    /// Every worker's concurrency (Celery: pool processes) instead of each
    /// system's own (ours 256, BullMQ 100, apalis 400, Celery 4): for
    /// sweeps.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Runs the workers on these CPUs only (`taskset -c`, e.g. `0` or
    /// `0,1`), to see how a worker scales with cores.
    #[arg(long)]
    worker_cpus: Option<String>,
    /// Tracing settings to run: `off`, `on`, or both (the default).
    #[arg(long, value_delimiter = ',', default_value = "off,on")]
    tracing: Vec<String>,
    /// Worker processes draining the queue together, comma-separated for
    /// several runs (e.g. `1,2,4`); each runs at the system's concurrency.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    workers: Vec<usize>,
}

pub async fn run(mut args: RunArgs) -> anyhow::Result<()> {
    if args.quick {
        args.jobs = 300;
        args.rounds = 1;
    }
    if args.workers.contains(&0) {
        bail!("--workers counts worker processes: 1 or more");
    }
    let systems = System::installed(&args.systems)?;
    let rig = Rig::start().await?;
    let mut runs = Vec::new();
    let mut offset = 0;
    for round in 1..=args.rounds {
        for &system in &systems {
            for (tracing, workers) in [false, true]
                .into_iter()
                .flat_map(|t| args.workers.iter().map(move |&w| (t, w)))
            {
                if !crate::systems::asked(&args.tracing, tracing) {
                    continue;
                }
                let setup = Setup {
                    redis_url: rig.redis.url(),
                    stub_url: rig.stub_url.clone(),
                    zipkin: tracing.then(|| rig.collector.endpoint()),
                    jobs: match system {
                        // Its fetch script fails with more waiting.
                        System::Apalis => args.jobs.min(APALIS_MAX_JOBS),
                        _ => args.jobs,
                    },
                    producers: args.producers,
                    offset,
                    concurrency: args.concurrency,
                    worker_cpus: args.worker_cpus.clone(),
                    workers,
                    extra_env: Vec::new(),
                };
                offset += args.jobs;
                let run = rig.one(system, round, &setup).await.with_context(|| {
                    format!(
                        "{} with tracing {}, round {round}",
                        system.key(),
                        if tracing { "on" } else { "off" }
                    )
                })?;
                eprintln!(
                    "round {round} {:>6} x{workers} tracing {:>3}: enqueue {:>8.0}/s, drain {:>8.0}/s, \
                     worker {:.3} ms/job, redis {:.3} ms/job, {:.1} MiB, {:.2} spans/job",
                    system.key(),
                    if tracing { "on" } else { "off" },
                    run.enqueue_per_sec,
                    run.drain_per_sec,
                    run.worker_cpu_ms,
                    run.redis_cpu_ms,
                    run.worker_rss_mib,
                    run.spans_per_job
                );
                runs.push(run);
            }
        }
    }
    drop(rig);
    report::write(&args.out, &runs, args.quick)?;
    eprintln!(
        "wrote results.json, results.md and results.png in {}",
        args.out.display()
    );
    Ok(())
}

/// What every run shares: Redis, the weather stub and the span listener.
pub(crate) struct Rig {
    pub redis: RedisServer,
    stub: ServiceProcess,
    pub stub_url: String,
    pub collector: Collector,
    pub http: reqwest::Client,
}

impl Rig {
    pub async fn start() -> anyhow::Result<Self> {
        let redis = RedisServer::start().await?;
        let stub_port = free_port()?;
        let stub_url = format!("http://127.0.0.1:{stub_port}/");
        let stub = ServiceProcess::start(
            "weather-stub",
            crate::systems::beside_me("weather-stub")?
                .to_str()
                .context("the stub's path")?,
            &[
                ("STUB_LISTEN", format!("127.0.0.1:{stub_port}")),
                ("OTEL_SDK_DISABLED", "true".into()),
                ("RUST_LOG", "warn".into()),
            ],
            &format!("{stub_url}healthz"),
        )
        .await?;
        Ok(Self {
            redis,
            stub,
            stub_url,
            collector: Collector::start().await?,
            http: reqwest::Client::new(),
        })
    }

    /// One system, one tracing setting: enqueue, then drain.
    pub async fn one(&self, system: System, round: usize, setup: &Setup) -> anyhow::Result<Run> {
        self.one_on(Target::Server(&self.redis), system, round, setup)
            .await
    }

    /// [`Self::one`] on `redis` (the rig's own server, or a cluster).
    pub async fn one_on(
        &self,
        redis: Target<'_>,
        system: System,
        round: usize,
        setup: &Setup,
    ) -> anyhow::Result<Run> {
        drain(
            system,
            round,
            setup,
            (redis, self.stub.pid()),
            &self.collector,
            &self.http,
        )
        .await
    }
}

/// One system, one tracing setting: enqueue, then drain.
async fn drain(
    system: System,
    round: usize,
    setup: &Setup,
    (redis, stub_pid): (Target<'_>, u32),
    collector: &Collector,
    http: &reqwest::Client,
) -> anyhow::Result<Run> {
    let mut conns = redis.masters().await?;
    for conn in &mut conns {
        let _: () = redis::cmd("FLUSHALL").query_async(conn).await?;
    }
    collector.reset();
    let n = setup.jobs;

    // Enqueue: the system's own producer, one job at a time from many.
    let enqueue_ms = produce(system, setup)?;

    // Drain: the worker empties the queue.
    let calls_before = forecasts(http, &setup.stub_url).await?;
    redis.reset_stats().await?;
    let log = std::env::temp_dir().join(format!(
        "bench-{}-{}-{}.log",
        std::process::id(),
        system.key(),
        setup.offset
    ));
    let mut workers = Workers::start(system, setup, &log)?;
    let clk = clock_ticks();
    let (mut t1, mut t2) = (None, None);
    let (mut cpu1, mut cpu2, mut rcpu1, mut rcpu2, mut rss) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut scpu1, mut scpu2) = (0.0, 0.0);
    let mut last_progress = (0, Instant::now());
    loop {
        let done = forecasts(http, &setup.stub_url).await? - calls_before;
        let now = Instant::now();
        if t1.is_none() && done as f64 >= 0.1 * n as f64 {
            let pids = workers.tree();
            t1 = Some((now, done));
            cpu1 = cpu_secs(&pids, clk);
            rcpu1 = cpu_secs(&redis.pids(), clk);
            scpu1 = cpu_secs(&[stub_pid], clk);
        }
        if t2.is_none() && done as f64 >= 0.9 * n as f64 {
            let pids = workers.tree();
            t2 = Some((now, done));
            cpu2 = cpu_secs(&pids, clk);
            rcpu2 = cpu_secs(&redis.pids(), clk);
            scpu2 = cpu_secs(&[stub_pid], clk);
            rss = rss_mib(&pids);
        }
        if done >= n as u64 {
            break;
        }
        if done > last_progress.0 {
            last_progress = (done, now);
        } else if now - last_progress.1 > Duration::from_secs(60) {
            bail!(
                "the drain stopped at {done} of {n} jobs\n--- worker output ---\n{}",
                workers.logs()
            );
        }
        if !workers.running() {
            bail!("a worker exited\n--- the output ---\n{}", workers.logs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut calls = 0;
    for conn in &mut conns {
        calls += commands(conn).await?;
    }
    let redis_calls = calls as f64 / n as f64;
    workers.stop(Duration::from_secs(15)).await;
    // Every span the processes flushed on their way out.
    let (spans, traces) = settle(collector).await;
    let ((a, da), (b, db)) = (t1.context("10% mark")?, t2.context("90% mark")?);
    let jobs_between = (db - da).max(1) as f64;
    Ok(Run {
        system,
        tracing: setup.zipkin.is_some(),
        round,
        concurrency: setup.concurrency.unwrap_or(system.concurrency()),
        workers: setup.workers,
        jobs: n,
        enqueue_per_sec: n as f64 / (enqueue_ms / 1000.0),
        drain_per_sec: jobs_between / (b - a).as_secs_f64().max(1e-6),
        worker_cpu_ms: (cpu2 - cpu1) * 1000.0 / jobs_between,
        redis_cpu_ms: (rcpu2 - rcpu1) * 1000.0 / jobs_between,
        stub_cpu_ms: (scpu2 - scpu1) * 1000.0 / jobs_between,
        redis_calls,
        worker_rss_mib: rss,
        spans_per_job: spans as f64 / n as f64,
        traces_per_job: traces as f64 / n as f64,
    })
}

/// Runs the producer; answers how long it took to push, in ms.
fn produce(system: System, setup: &Setup) -> anyhow::Result<f64> {
    produce_report(system, setup)?["ms"].as_f64().context("ms")
}

/// Runs the producer; answers what it printed: `{"jobs", "ms", "t0_ms"}`.
pub(crate) fn produce_report(system: System, setup: &Setup) -> anyhow::Result<serde_json::Value> {
    let mut cmd = system.producer(setup)?;
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "the producer failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = BufReader::new(stdout.as_bytes())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("the producer printed no result: {stdout}"))?;
    Ok(serde_json::from_str(&line)?)
}

/// Commands Redis ran since the last `CONFIG RESETSTAT`, less the ones the
/// benchmark itself sent (`INFO`, `CONFIG`).
async fn commands(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    Ok(info
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter(|l| !l.starts_with("info:") && !l.starts_with("config|"))
        .filter_map(|l| {
            let calls = l.split("calls=").nth(1)?.split(',').next()?;
            calls.parse::<u64>().ok()
        })
        .sum())
}

/// Forecast calls the stub has answered.
pub(crate) async fn forecasts(http: &reqwest::Client, stub: &str) -> anyhow::Result<u64> {
    let v: serde_json::Value = http
        .get(format!("{stub}stub/calls"))
        .send()
        .await?
        .json()
        .await?;
    v["forecast"].as_u64().context("forecast count")
}

/// Waits until no span has arrived for a second (at most 20 s); answers
/// the spans and traces received.
async fn settle(collector: &Collector) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = collector.counts();
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = collector.counts();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    last
}

/// The worker processes of a run, draining the queue together.
pub(crate) struct Workers(Vec<Spawned>);

impl Workers {
    pub(crate) fn start(
        system: System,
        setup: &Setup,
        log: &std::path::Path,
    ) -> anyhow::Result<Self> {
        (0..setup.workers)
            .map(|i| {
                let log = log.with_extension(format!("{i}.log"));
                Spawned::start(system.worker(setup, free_port()?)?, &log)
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    pub(crate) fn running(&mut self) -> bool {
        self.0.iter_mut().all(Spawned::running)
    }

    pub(crate) fn logs(&self) -> String {
        self.0
            .iter()
            .map(Spawned::logs)
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Every worker process and its descendants.
    fn tree(&self) -> Vec<u32> {
        self.0.iter().flat_map(Spawned::tree).collect()
    }

    pub(crate) async fn stop(self, limit: Duration) {
        futures::future::join_all(self.0.into_iter().map(|w| w.stop(limit))).await;
    }
}

/// A worker process with its output in a log file.
struct Spawned {
    child: Child,
    log: PathBuf,
}

impl Spawned {
    fn start(mut cmd: std::process::Command, log: &std::path::Path) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log)?;
        let child = cmd
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Self {
            child,
            log: log.to_owned(),
        })
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The worker's pid and its descendants' (Celery's pool processes).
    fn tree(&self) -> Vec<u32> {
        descendants(self.child.id())
    }

    /// SIGTERM (so it flushes its spans), then SIGKILL after `limit`.
    async fn stop(mut self, limit: Duration) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("the worker did not stop within {limit:?}; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `pid` and every process below it.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                parents.entry(ppid).or_default().push(child);
            }
        }
    }
    let mut out = vec![pid];
    let mut seen = HashSet::from([pid]);
    let mut i = 0;
    while i < out.len() {
        for &c in parents.get(&out[i]).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(c) {
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

/// The fields of `/proc/{pid}/stat` after the command name: state, ppid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// User and system CPU of `pids`, in seconds.
fn cpu_secs(pids: &[u32], clock_ticks: f64) -> f64 {
    pids.iter()
        .filter_map(|&p| {
            let f = stat_fields(p)?;
            // utime and stime are fields 14 and 15; state is field 3.
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / clock_ticks)
        })
        .sum()
}

/// User and system CPU of one process, in seconds.
pub fn cpu_secs_of(pid: u32, clock_ticks: f64) -> f64 {
    cpu_secs(&[pid], clock_ticks)
}

/// Resident memory of `pids`, MiB.
fn rss_mib(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|&p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let kb: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kb / 1024.0)
        })
        .sum()
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

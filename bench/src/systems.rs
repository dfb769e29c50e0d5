//! The four systems: how each one's producer and worker start, and how
//! the peers are installed on first use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A system under test.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Ours,
    Bullmq,
    Celery,
    Apalis,
}

/// Where everything runs, for one run.
#[derive(Debug, Clone)]
pub struct Setup {
    pub redis_url: String,
    pub stub_url: String,
    /// The span listener, when tracing is on.
    pub zipkin: Option<String>,
    pub jobs: usize,
    pub producers: usize,
    /// Job numbers start here, so every run's places are new to the cache.
    pub offset: usize,
    /// The worker's concurrency (Celery: processes), else the system's
    /// default ([`System::concurrency`]).
    pub concurrency: Option<usize>,
    /// CPUs the worker may run on (`taskset -c`), else all.
    pub worker_cpus: Option<String>,
    /// Worker processes, each at the concurrency.
    pub workers: usize,
    /// Settings given to every process after the tracing ones.
    pub extra_env: Vec<(&'static str, String)>,
}

impl System {
    pub const ALL: [Self; 4] = [Self::Ours, Self::Bullmq, Self::Celery, Self::Apalis];

    /// The systems named (`ours`, `bullmq`, ...), each installed.
    pub fn installed(names: &[String]) -> anyhow::Result<Vec<Self>> {
        let systems: Vec<Self> = names
            .iter()
            .map(|s| Self::parse(s).with_context(|| format!("unknown system {s:?}")))
            .collect::<anyhow::Result<_>>()?;
        for s in &systems {
            s.ensure_installed()?;
        }
        Ok(systems)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.key() == s)
    }

    pub fn key(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Bullmq => "bullmq",
            Self::Celery => "celery",
            Self::Apalis => "apalis",
        }
    }

    /// The worker's concurrency unless asked for another (Celery: pool
    /// processes): each system's best drain with tracing on in a sweep
    /// (docs/benchmark.md, "Concurrency, swept"), ours kept under 30 MiB.
    pub fn concurrency(self) -> usize {
        match self {
            Self::Ours => 256,
            Self::Bullmq => 100,
            Self::Apalis => 400,
            Self::Celery => 4,
        }
    }

    /// How the tables name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "traced-jobs",
            Self::Bullmq => "BullMQ 6.7 + bullmq-otel",
            Self::Celery => "Celery 5.7 + OpenTelemetry",
            Self::Apalis => "apalis-redis 1.0",
        }
    }

    /// The name with the concurrency it ran at, and the worker processes
    /// when more than one.
    pub fn label(self, concurrency: usize, workers: usize) -> String {
        let label = match self {
            Self::Ours => format!(
                "{}, 1 worker process, concurrency {concurrency}",
                self.name()
            ),
            Self::Celery => format!("{}, {concurrency} processes", self.name()),
            _ => format!("{}, concurrency {concurrency}", self.name()),
        };
        match (self, workers) {
            (_, 1) => label,
            (Self::Ours, n) => label.replace("1 worker process", &format!("{n} worker processes")),
            (_, n) => format!("{label}, {n} workers"),
        }
    }

    /// Installs the peer if it is not yet (npm packages, a Python venv).
    pub fn ensure_installed(self) -> anyhow::Result<()> {
        match self {
            Self::Ours | Self::Apalis => Ok(()),
            Self::Bullmq => {
                let dir = peer_dir("bullmq");
                if dir.join("node_modules/.package-lock.json").exists() {
                    return Ok(());
                }
                need("npm", "the BullMQ peer", "nodejs npm")?;
                eprintln!("installing the BullMQ peer (npm ci)...");
                run(Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&dir))
            }
            Self::Celery => {
                let dir = peer_dir("celery");
                let marker = dir.join(".venv/installed");
                if marker.exists() {
                    return Ok(());
                }
                need("python3", "the Celery peer", "python3 python3-venv")?;
                eprintln!("installing the Celery peer (a venv and pip)...");
                run(Command::new("python3")
                    .args(["-m", "venv", ".venv"])
                    .current_dir(&dir))
                .context("making a venv (on Debian: apt-get install -y python3-venv)")?;
                run(Command::new(".venv/bin/pip")
                    .args(["install", "-q", "-r", "requirements.txt"])
                    .current_dir(&dir))?;
                std::fs::write(marker, "")?;
                Ok(())
            }
        }
    }

    /// The producer: pushes `setup.jobs` jobs and prints
    /// `{"jobs": n, "ms": elapsed}`.
    pub fn producer(self, setup: &Setup) -> anyhow::Result<Command> {
        let mut cmd = match self {
            Self::Ours | Self::Apalis => {
                let mut cmd = Command::new(std::env::current_exe()?);
                cmd.args(["produce", "--system", self.key()]);
                cmd
            }
            Self::Bullmq => node("producer.mjs"),
            Self::Celery => {
                let mut cmd = Command::new(".venv/bin/python");
                cmd.arg("producer.py").current_dir(peer_dir("celery"));
                cmd
            }
        };
        common_env(&mut cmd, setup, "producer");
        Ok(cmd)
    }

    /// The worker, at the concurrency the setup asks for, on the CPUs it
    /// names.
    pub fn worker(self, setup: &Setup, listen_port: u16) -> anyhow::Result<Command> {
        let concurrency = setup.concurrency.unwrap_or(self.concurrency()).to_string();
        let mut cmd = match self {
            Self::Ours => {
                let mut cmd = Command::new(beside_me("worker")?);
                cmd.env("REDIS_URL", &setup.redis_url)
                    .env("GEOCODING_BASE_URL", &setup.stub_url)
                    .env("WEATHER_BASE_URL", &setup.stub_url)
                    .env("WORKER_CONCURRENCY", &concurrency)
                    .env("WORKER_LISTEN", format!("127.0.0.1:{listen_port}"));
                cmd
            }
            Self::Apalis => {
                let mut cmd = Command::new(std::env::current_exe()?);
                cmd.arg("apalis-worker")
                    .env("BENCH_CONCURRENCY", &concurrency);
                cmd
            }
            Self::Bullmq => {
                let mut cmd = node("worker.mjs");
                cmd.env("BENCH_CONCURRENCY", &concurrency);
                cmd
            }
            Self::Celery => {
                let mut cmd = Command::new(".venv/bin/celery");
                cmd.args([
                    "-A",
                    "tasks",
                    "worker",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    &concurrency,
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                ])
                .current_dir(peer_dir("celery"));
                cmd
            }
        };
        common_env(&mut cmd, setup, "worker");
        Ok(match &setup.worker_cpus {
            Some(cpus) => pinned(cmd, cpus),
            None => cmd,
        })
    }
}

/// `cmd` run under `taskset -c cpus`, with its environment and directory.
fn pinned(cmd: Command, cpus: &str) -> Command {
    let mut pinned = Command::new("taskset");
    pinned
        .arg("-c")
        .arg(cpus)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => pinned.env(k, v),
            None => pinned.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        pinned.current_dir(dir);
    }
    pinned.stdin(Stdio::null());
    pinned
}

/// What every process of a run is told.
fn common_env(cmd: &mut Command, setup: &Setup, role: &str) {
    cmd.env("BENCH_REDIS_URL", &setup.redis_url)
        .env("BENCH_CACHE_URL", &setup.redis_url)
        .env("BENCH_STUB_URL", &setup.stub_url)
        .env("BENCH_JOBS", setup.jobs.to_string())
        .env("BENCH_PRODUCERS", setup.producers.to_string())
        .env("BENCH_OFFSET", setup.offset.to_string())
        .env("RUST_LOG", "warn")
        .env("OTEL_SERVICE_NAME", format!("bench-{role}"))
        // Every exporter batches on the same schedule.
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdin(Stdio::null());
    match &setup.zipkin {
        Some(url) => {
            cmd.env("BENCH_ZIPKIN_URL", url)
                .env("OTEL_TRACES_EXPORTER", "zipkin")
                .env("OTEL_EXPORTER_ZIPKIN_ENDPOINT", url);
        }
        None => {
            // Off means off: our services and the apalis peer build no
            // span (the SDKs of the other peers read it too).
            cmd.env("BENCH_ZIPKIN_URL", "")
                .env("OTEL_SDK_DISABLED", "true");
        }
    }
    cmd.envs(setup.extra_env.iter().map(|(k, v)| (k, v)));
}

fn node(script: &str) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(script).current_dir(peer_dir("bullmq"));
    cmd
}

/// Whether the `--tracing` settings asked for (`off`, `on`) include `on`.
pub fn asked(settings: &[String], on: bool) -> bool {
    settings.iter().any(|t| t == if on { "on" } else { "off" })
}

/// `bench/peers/{name}`.
pub fn peer_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name)
}

/// One of the workspace's binaries, built beside this one.
pub fn beside_me(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.parent().context("the benchmark's directory")?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the binaries first (cargo build --release --bins, \
             or without --release for a debug run)",
            path.display()
        );
    }
    Ok(path)
}

fn need(tool: &str, what: &str, packages: &str) -> anyhow::Result<()> {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        bail!("{tool} is needed for {what}: on Debian, apt-get install -y {packages}");
    }
    Ok(())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

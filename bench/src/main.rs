//! The project's benchmark: this system against BullMQ (with bullmq-otel),
//! Celery (with its OpenTelemetry instrumentation) and apalis-redis, each
//! doing the same job (a cache GET, the forecast call to the weather stub,
//! a cache SET EX) with tracing off and on (every span exported as Zipkin
//! v2 JSON to a local listener).
//!
//! ```sh
//! cargo build --release --bins
//! cargo run --release -p bench -- run            # 3 interleaved rounds of 20,000 jobs
//! cargo run --release -p bench -- run --quick    # 1 round of 300 (a check, not a measure)
//! cargo run --release -p bench -- api            # POST /v1/jobs from 32 connections
//! cargo run --release -p bench -- latency        # at 200 jobs/s, and after 30 s idle
//! cargo run --release -p bench -- overhead       # tracing's cost by span source
//! cargo run --release -p bench -- cluster        # one server against a Redis Cluster
//! ```
//!
//! It writes `bench-results/results.json`, `results.md` and `results.png`
//! (see `--out`); `bench report results.json` draws them again. The peers live in `bench/peers/` and are installed on first
//! use (`npm ci`, a Python venv), which needs `node`, `npm` and
//! `python3-venv`.

mod api;
mod chart;
mod cluster;
mod collector;
mod latency;
mod measure;
mod overhead;
mod peers;
mod report;
mod results;
mod systems;
mod target;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "The project's benchmark against BullMQ, Celery and apalis-redis")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the benchmark and writes its results.
    Run(measure::RunArgs),
    /// Enqueue through the api: POST/s and latency at fixed connections.
    Api(api::ApiArgs),
    /// Latency at a fixed rate, and after idle.
    Latency(latency::LatencyArgs),
    /// Where tracing's cost goes, by span source and export.
    Overhead(overhead::OverheadArgs),
    /// One server against a 3-master Redis Cluster, with 1 and 3 shards.
    Cluster(cluster::ClusterArgs),
    /// Writes the table and the chart again from a `results.json`.
    Report {
        /// The `results.json` a run wrote.
        results: std::path::PathBuf,
        /// Where the table and the chart go (default: beside it).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// (Used by `run`.) Pushes jobs as a producer of `system` does.
    #[command(hide = true)]
    Produce(peers::ProduceArgs),
    /// (Used by `run`.) The apalis-redis worker.
    #[command(hide = true)]
    ApalisWorker(peers::ApalisWorkerArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => measure::run(args).await,
        Command::Api(args) => api::run(args).await,
        Command::Overhead(args) => overhead::run(args).await,
        Command::Cluster(args) => cluster::run(args).await,
        Command::Latency(args) => latency::run(args).await,
        Command::Report { results, out } => report::rewrite(&results, out.as_deref()),
        Command::Produce(args) => peers::produce(args).await,
        Command::ApalisWorker(args) => peers::apalis_worker(args).await,
    }
}

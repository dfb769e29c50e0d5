//! One node against a Redis Cluster: our worker drains with tracing on,
//! on one redis-server, on a 3-master cluster (a replica each) with the
//! queue in one shard, and with it in three; then with every push waiting
//! for a replica (`QUEUE_WAIT_REPLICAS=1`). Rounds are interleaved; the
//! table gives medians, Redis CPU summed over every node.
//!
//! On a machine of few cores the cluster's six processes share them with
//! the worker, so this measures cost per job, not the throughput N
//! machines would give: the scaling model in docs/cluster.md is built
//! from it.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use testkit::RedisCluster;

use crate::measure::Rig;
use crate::results::{Run, spread};
use crate::systems::{Setup, System};
use crate::target::Target;

/// Settings of the comparison.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Jobs per drain.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Rounds, interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where `cluster.md` and `cluster.json` go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// One round of 300 jobs: a check, not a measure.
    #[arg(long)]
    quick: bool,
}

/// One way of running.
struct Variant {
    name: &'static str,
    cluster: bool,
    shards: u16,
    wait_replicas: u32,
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "one server",
        cluster: false,
        shards: 1,
        wait_replicas: 0,
    },
    Variant {
        name: "cluster of 3 masters, 1 shard",
        cluster: true,
        shards: 1,
        wait_replicas: 0,
    },
    Variant {
        name: "cluster of 3 masters, 3 shards",
        cluster: true,
        shards: 3,
        wait_replicas: 0,
    },
    Variant {
        name: "3 shards, QUEUE_WAIT_REPLICAS=1",
        cluster: true,
        shards: 3,
        wait_replicas: 1,
    },
];

pub async fn run(mut args: ClusterArgs) -> anyhow::Result<()> {
    if args.quick {
        args.jobs = 300;
        args.rounds = 1;
    }
    let rig = Rig::start().await?;
    let cluster = RedisCluster::start(3, 1)
        .await
        .context("starting a Redis Cluster (redis-server and redis-cli)")?;
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); VARIANTS.len()];
    let mut offset = 0;
    for round in 1..=args.rounds {
        for (i, v) in VARIANTS.iter().enumerate() {
            let target = match v.cluster {
                true => Target::Cluster(&cluster),
                false => Target::Server(&rig.redis),
            };
            let setup = Setup {
                redis_url: target.url(),
                stub_url: rig.stub_url.clone(),
                zipkin: Some(rig.collector.endpoint()),
                jobs: args.jobs,
                producers: 32,
                offset,
                concurrency: None,
                worker_cpus: None,
                workers: 1,
                extra_env: vec![
                    ("QUEUE_SHARDS", v.shards.to_string()),
                    ("QUEUE_WAIT_REPLICAS", v.wait_replicas.to_string()),
                ],
            };
            offset += args.jobs;
            let run = rig
                .one_on(target, System::Ours, round, &setup)
                .await
                .with_context(|| v.name)?;
            eprintln!(
                "round {round} {:<34} enqueue {:>7.0}/s, drain {:>7.0}/s, worker {:.4} ms/job, redis {:.4} ms/job, {:.1} commands/job",
                v.name,
                run.enqueue_per_sec,
                run.drain_per_sec,
                run.worker_cpu_ms,
                run.redis_cpu_ms,
                run.redis_calls
            );
            runs[i].push(run);
        }
    }
    let table = table(&runs, args.jobs, args.rounds);
    println!("{table}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("cluster.md"), &table)?;
    let json: Vec<serde_json::Value> = VARIANTS
        .iter()
        .zip(&runs)
        .map(|(v, runs)| serde_json::json!({ "variant": v.name, "runs": runs }))
        .collect();
    std::fs::write(
        args.out.join("cluster.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}

/// The Markdown table of medians (ranges in brackets).
fn table(runs: &[Vec<Run>], jobs: usize, rounds: usize) -> String {
    let mut out = format!(
        "Medians of {rounds} interleaved round(s) of {jobs} jobs, tracing on; in brackets, the range.\n\n\
         | run | enqueue jobs/s | drain jobs/s | worker CPU ms/job | Redis CPU ms/job (all nodes) | Redis commands/job |\n\
         |---|---:|---:|---:|---:|---:|\n"
    );
    for (v, runs) in VARIANTS.iter().zip(runs) {
        // The median, with the range when there are several rounds.
        let col = |f: fn(&Run) -> f64, decimals: usize| {
            let s = spread(&runs.iter().map(f).collect::<Vec<_>>());
            match runs.len() {
                1 => format!("{:.decimals$}", s.median),
                _ => format!(
                    "{:.decimals$} [{:.decimals$}–{:.decimals$}]",
                    s.median, s.min, s.max
                ),
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            v.name,
            col(|r| r.enqueue_per_sec, 0),
            col(|r| r.drain_per_sec, 0),
            col(|r| r.worker_cpu_ms, 3),
            col(|r| r.redis_cpu_ms, 3),
            col(|r| r.redis_calls, 1),
        );
    }
    out
}

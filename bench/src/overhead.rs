//! Where tracing's cost goes: our worker's drain and the api's POSTs run
//! with the span sources left out one at a time (`TRACE_FILTER`), with
//! spans built and not exported (`OTEL_TRACES_EXPORTER=none`), and with
//! tracing off (`OTEL_SDK_DISABLED`). Rounds are interleaved; the tables
//! give medians, and each source's cost is the difference between two
//! variants' CPU per job. One more drain publishes each job's
//! `weather.updated` event to a Kafka-compatible broker (`tansu`, started
//! here): what publishing costs the worker, and the broker, per job.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;

use crate::api::ApiArgs;
use crate::measure::{Rig, clock_ticks, cpu_secs_of};
use crate::results::spread;
use crate::systems::{Setup, System};

/// Settings of the breakdown.
#[derive(Debug, clap::Args)]
pub struct OverheadArgs {
    /// Jobs per drain.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Seconds of POSTs per api run (after a second of warm-up).
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Rounds, interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where `overhead.md` and `overhead.json` go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// One round of 300 jobs and 1 s of POSTs: a check, not a measure.
    #[arg(long)]
    quick: bool,
}

/// One way of running, and what the worker or api is told.
struct Variant {
    name: &'static str,
    /// Spans exported to the listener (else the settings below decide).
    exported: bool,
    env: &'static [(&'static str, &'static str)],
    /// Publishing each job's event to Kafka.
    kafka: bool,
}

/// Tracing off: nothing built.
const OFF: Variant = Variant {
    name: "off (OTEL_SDK_DISABLED)",
    exported: false,
    env: &[],
    kafka: false,
};

/// Every span built, none exported.
const BUILT: Variant = Variant {
    name: "spans built, not exported",
    exported: false,
    env: &[
        ("OTEL_SDK_DISABLED", "false"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ],
    kafka: false,
};

/// Every span built and exported.
const ON: Variant = Variant {
    name: "on: every span exported",
    exported: true,
    env: &[],
    kafka: false,
};

/// [`ON`], each job also publishing its event to Kafka.
const KAFKA: Variant = Variant {
    name: "on, and each job's event sent to Kafka",
    exported: true,
    env: &[],
    kafka: true,
};

/// Exported, less the spans `filter` leaves out.
const fn without(name: &'static str, filter: &'static [(&'static str, &'static str)]) -> Variant {
    Variant {
        name,
        exported: true,
        env: filter,
        kafka: false,
    }
}

/// The worker's variants, drained in this order.
const WORKER: &[Variant] = &[
    OFF,
    BUILT,
    without(
        "CONSUMER span only",
        &[(
            "TRACE_FILTER",
            "info,worker::cache=off,telemetry::http_client=off",
        )],
    ),
    without(
        "without the Redis cache spans",
        &[("TRACE_FILTER", "info,worker::cache=off")],
    ),
    without(
        "without the HTTP CLIENT spans",
        &[("TRACE_FILTER", "info,telemetry::http_client=off")],
    ),
    ON,
    KAFKA,
];

/// The api's variants.
const API: &[Variant] = &[
    OFF,
    BUILT,
    without(
        "without the SERVER span",
        &[("TRACE_FILTER", "info,telemetry::http_server=off")],
    ),
    without(
        "without the PRODUCER span",
        &[("TRACE_FILTER", "info,telemetry::messaging::producer=off")],
    ),
    ON,
];

fn env(v: &Variant) -> Vec<(&'static str, String)> {
    v.env.iter().map(|(k, x)| (*k, (*x).to_owned())).collect()
}

/// Per variant, over the rounds: (rate, CPU ms per job or request).
type Samples = Vec<Vec<(f64, f64)>>;

pub async fn run(mut args: OverheadArgs) -> anyhow::Result<()> {
    if args.quick {
        args.jobs = 300;
        args.secs = 1;
        args.rounds = 1;
    }
    let rig = Rig::start().await?;
    let kafka = testkit::KafkaBroker::start_direct()
        .await
        .context("the Kafka drain needs the tansu broker (scripts/tansu installs it)")?;
    // No alerts service here to make it.
    kafka.create_topic("weather.updated", 3)?;
    let ticks = clock_ticks();
    let mut broker: Vec<f64> = Vec::new();
    let mut worker: Samples = vec![Vec::new(); WORKER.len()];
    let mut api: Samples = vec![Vec::new(); API.len()];
    let mut offset = 0;
    for round in 1..=args.rounds {
        for (i, v) in WORKER.iter().enumerate() {
            let mut setup = Setup {
                redis_url: rig.redis.url(),
                stub_url: rig.stub_url.clone(),
                zipkin: v.exported.then(|| rig.collector.endpoint()),
                jobs: args.jobs,
                producers: 32,
                offset,
                concurrency: None,
                worker_cpus: None,
                workers: 1,
                extra_env: env(v),
            };
            if v.kafka {
                setup.extra_env.push(("KAFKA_BROKERS", kafka.brokers()));
            }
            offset += args.jobs;
            let broker_before = cpu_secs_of(kafka.pid(), ticks);
            let run = rig
                .one(System::Ours, round, &setup)
                .await
                .with_context(|| format!("worker, {}", v.name))?;
            if v.kafka {
                let secs = cpu_secs_of(kafka.pid(), ticks) - broker_before;
                broker.push(secs * 1000.0 / args.jobs as f64);
            }
            eprintln!(
                "round {round} worker, {:<32} drain {:>8.0}/s, worker {:.4} ms/job, {:.2} spans/job",
                v.name, run.drain_per_sec, run.worker_cpu_ms, run.spans_per_job
            );
            worker[i].push((run.drain_per_sec, run.worker_cpu_ms));
        }
        for (i, v) in API.iter().enumerate() {
            let run = crate::api::one(
                &ApiArgs::enqueue_only(args.secs),
                round,
                v.exported,
                &env(v),
                &rig.collector,
            )
            .await
            .with_context(|| format!("api, {}", v.name))?;
            eprintln!(
                "round {round} api, {:<32} {:>8.0} POST/s, api {:.4} ms/request",
                v.name, run.requests_per_sec, run.api_cpu_ms
            );
            api[i].push((run.requests_per_sec, run.api_cpu_ms));
        }
    }
    let broker = spread(&broker).median;
    let md = markdown(&worker, &api, broker, args.rounds, args.quick);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("overhead.md"), &md)?;
    std::fs::write(
        args.out.join("overhead.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "worker": WORKER.iter().zip(&worker).map(|(v, s)| (v.name, s)).collect::<Vec<_>>(),
            "api": API.iter().zip(&api).map(|(v, s)| (v.name, s)).collect::<Vec<_>>(),
            "kafka_broker_cpu_ms_per_job": broker,
        }))?,
    )?;
    println!("{md}");
    Ok(())
}

/// Medians per variant: (rate, CPU).
fn medians(samples: &Samples) -> Vec<(f64, f64)> {
    samples
        .iter()
        .map(|s| {
            (
                spread(&s.iter().map(|x| x.0).collect::<Vec<_>>()).median,
                spread(&s.iter().map(|x| x.1).collect::<Vec<_>>()).median,
            )
        })
        .collect()
}

fn markdown(worker: &Samples, api: &Samples, broker_ms: f64, rounds: usize, quick: bool) -> String {
    let mut md = String::new();
    if quick {
        md.push_str("**Quick run**: it checks the breakdown runs; the figures mean nothing.\n\n");
    }
    let w = medians(worker);
    let a = medians(api);
    let _ = writeln!(
        md,
        "Medians of {rounds} interleaved round(s). The worker drains 1 process at \
         concurrency 256; the api takes POSTs from 32 connections.\n"
    );
    md.push_str("| worker | drain jobs/s | worker CPU ms/job | vs off |\n|---|---:|---:|---:|\n");
    for (v, (rate, cpu)) in WORKER.iter().zip(&w) {
        let _ = writeln!(
            md,
            "| {} | {rate:.0} | {cpu:.4} | {:+.4} |",
            v.name,
            cpu - w[0].1
        );
    }
    md.push_str("\n| api | POST/s | api CPU ms/request | vs off |\n|---|---:|---:|---:|\n");
    for (v, (rate, cpu)) in API.iter().zip(&a) {
        let _ = writeln!(
            md,
            "| {} | {rate:.0} | {cpu:.4} | {:+.4} |",
            v.name,
            cpu - a[0].1
        );
    }
    // Each source: the difference between the variants with and without it.
    let (w_on, a_on) = (w[5].1, a[4].1);
    let rows = [
        ("worker: building spans, exporting none", w[1].1 - w[0].1),
        (
            "worker: the CONSUMER span, built and exported",
            w[2].1 - w[0].1,
        ),
        ("worker: the Redis cache spans (GET, SET)", w_on - w[3].1),
        ("worker: the HTTP CLIENT span (forecast)", w_on - w[4].1),
        ("worker: exporting every span", w_on - w[1].1),
        ("api: building spans, exporting none", a[1].1 - a[0].1),
        ("api: the SERVER span", a_on - a[2].1),
        ("api: the PRODUCER span", a_on - a[3].1),
        ("api: exporting every span", a_on - a[1].1),
    ];
    md.push_str(
        "\n| source | CPU ms per job (or request) | share of tracing's cost |\n|---|---:|---:|\n",
    );
    for (what, ms) in rows {
        let total = if what.starts_with("api") {
            a_on - a[0].1
        } else {
            w_on - w[0].1
        };
        let _ = writeln!(md, "| {what} | {ms:.4} | {:.0}% |", ms / total * 100.0);
    }
    let _ = writeln!(
        md,
        "\n| publishing each job's event to Kafka | CPU ms per job |\n|---|---:|\n\
         | worker: the PRODUCER span, the record and its delivery | {:.4} |\n\
         | the broker (tansu) | {broker_ms:.4} |",
        w[6].1 - w_on
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_costs_the_difference_between_two_variants() {
        let one = |cpu: &[f64]| -> Samples { cpu.iter().map(|c| vec![(1000.0, *c)]).collect() };
        let worker = one(&[0.040, 0.055, 0.050, 0.065, 0.068, 0.070, 0.082]);
        let api = one(&[0.030, 0.035, 0.036, 0.037, 0.039]);
        let md = markdown(&worker, &api, 0.02, 1, false);
        assert!(
            md.contains("| worker: the Redis cache spans (GET, SET) | 0.0050 | 17% |"),
            "{md}"
        );
        assert!(
            md.contains("| worker: exporting every span | 0.0150 | 50% |"),
            "{md}"
        );
        assert!(
            md.contains("| api: the SERVER span | 0.0030 | 33% |"),
            "{md}"
        );
        assert!(
            md.contains("| on: every span exported | 1000 | 0.0700 | +0.0300 |"),
            "{md}"
        );
        assert!(
            md.contains("| worker: the PRODUCER span, the record and its delivery | 0.0120 |"),
            "{md}"
        );
        assert!(md.contains("| the broker (tansu) | 0.0200 |"), "{md}");
    }
}

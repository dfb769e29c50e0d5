//! Latency at a fixed rate, and after idle, for every system: its producer
//! sends job `i` when due (`i / rate` seconds after its start, whatever
//! came before: an open loop, so a slow system cannot slow the load), and
//! a job's latency runs from its send (the producer notes the time just
//! before it pushes: timers wake up to a millisecond off the due time, so
//! the due time itself would count each runtime's timer error) to the stub
//! receiving its forecast call (`GET /stub/forecasts`): the push, pick-up,
//! the cache GET and the call itself, the same for every system. Then the worker sits idle, and a few
//! jobs come one a second: how soon an idle worker notices.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::measure::{Rig, Workers, forecasts, produce_report};
use crate::systems::{Setup, System};

/// Settings of the latency phase.
#[derive(Debug, clap::Args)]
pub struct LatencyArgs {
    /// Jobs per second in the fixed-rate phase.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds of the fixed-rate phase.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Seconds the worker sits idle before the last jobs.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Jobs after the idle time, one a second.
    #[arg(long, default_value_t = 5)]
    after_idle: usize,
    /// Systems to run, comma-separated: ours, bullmq, celery, apalis.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ours,bullmq,celery,apalis"
    )]
    systems: Vec<String>,
    /// Tracing settings to run: `off`, `on`, or both.
    #[arg(long, value_delimiter = ',', default_value = "on")]
    tracing: Vec<String>,
    /// Where `latency.md` and `latency.json` go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// 2 s at 100 jobs/s, 2 s idle, 2 jobs: a check, not a measure.
    #[arg(long)]
    quick: bool,
}

/// What one system measured.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    system: System,
    tracing: bool,
    rate: f64,
    jobs: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    idle_secs: u64,
    /// Each job's latency after the idle time, in order.
    after_idle_ms: Vec<f64>,
}

pub async fn run(mut args: LatencyArgs) -> anyhow::Result<()> {
    if args.quick {
        (args.rate, args.secs, args.idle_secs, args.after_idle) = (100.0, 2, 2, 2);
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be above 0");
    }
    let systems = System::installed(&args.systems)?;
    let rig = Rig::start().await?;
    let mut results = Vec::new();
    let mut offset = 0;
    for &system in &systems {
        for tracing in [false, true] {
            if !crate::systems::asked(&args.tracing, tracing) {
                continue;
            }
            let l = one(&rig, system, tracing, &args, &mut offset)
                .await
                .with_context(|| format!("{} latency", system.key()))?;
            eprintln!(
                "{:>6} tracing {:>3}: at {:.0}/s p50 {:.1} ms, p99 {:.1} ms; after {} s idle {:?} ms",
                system.key(),
                if tracing { "on" } else { "off" },
                l.rate,
                l.p50_ms,
                l.p99_ms,
                l.idle_secs,
                l.after_idle_ms
                    .iter()
                    .map(|x| x.round())
                    .collect::<Vec<_>>()
            );
            results.push(l);
        }
    }
    let md = markdown(&results, args.quick);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("latency.md"), &md)?;
    std::fs::write(
        args.out.join("latency.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    println!("{md}");
    Ok(())
}

async fn one(
    rig: &Rig,
    system: System,
    tracing: bool,
    args: &LatencyArgs,
    offset: &mut usize,
) -> anyhow::Result<Latency> {
    let mut setup = Setup {
        redis_url: rig.redis.url(),
        stub_url: rig.stub_url.clone(),
        zipkin: tracing.then(|| rig.collector.endpoint()),
        jobs: 20,
        producers: 4,
        offset: *offset,
        concurrency: None,
        worker_cpus: None,
        workers: 1,
        extra_env: Vec::new(),
    };
    let log = std::env::temp_dir().join(format!(
        "bench-latency-{}-{}.log",
        std::process::id(),
        system.key()
    ));
    let mut workers = Workers::start(system, &setup, &log)?;
    let ran = async {
        // Warm-up: the worker is up and its connections are open.
        send(rig, system, &setup, &mut workers, Duration::from_secs(60)).await?;

        let n = (args.rate * args.secs as f64).round().max(1.0) as usize;
        setup.offset += setup.jobs;
        setup.jobs = n;
        setup.producers = 32;
        setup.extra_env = vec![("BENCH_RATE", args.rate.to_string())];
        let mut fixed = send(rig, system, &setup, &mut workers, Duration::from_secs(60)).await?;
        fixed.sort_by(f64::total_cmp);

        tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
        setup.offset += setup.jobs;
        setup.jobs = args.after_idle;
        setup.producers = 1;
        setup.extra_env = vec![("BENCH_RATE", "1".into())];
        let after_idle = send(rig, system, &setup, &mut workers, Duration::from_secs(90)).await?;
        *offset = setup.offset + setup.jobs;
        let pct = |p: f64| fixed[((fixed.len() - 1) as f64 * p).round() as usize];
        Ok::<_, anyhow::Error>(Latency {
            system,
            tracing,
            rate: args.rate,
            jobs: n,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
            idle_secs: args.idle_secs,
            after_idle_ms: after_idle,
        })
    }
    .await;
    workers.stop(Duration::from_secs(15)).await;
    ran
}

/// Sends `setup.jobs` jobs with the system's producer and waits (up to
/// `limit`) for every forecast call; answers each job's latency, ms, in
/// job order.
async fn send(
    rig: &Rig,
    system: System,
    setup: &Setup,
    workers: &mut Workers,
    limit: Duration,
) -> anyhow::Result<Vec<f64>> {
    let before = forecasts(&rig.http, &rig.stub_url).await?;
    let rate: f64 = setup
        .extra_env
        .iter()
        .find(|(k, _)| *k == "BENCH_RATE")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0);
    // The producer blocks until it has sent every job: at a fixed rate,
    // for seconds; the workers run meanwhile, in their own processes.
    let report = {
        let (system, setup) = (system, setup.clone());
        tokio::task::spawn_blocking(move || produce_report(system, &setup)).await??
    };
    let t0_ms = report["t0_ms"].as_f64().context("the producer's t0_ms")?;
    let sent: Vec<f64> = report["sent_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    if rate > 0.0 && sent.len() != setup.jobs {
        bail!(
            "the producer gave {} send times for {} jobs",
            sent.len(),
            setup.jobs
        );
    }
    let deadline = Instant::now() + limit;
    while forecasts(&rig.http, &rig.stub_url).await? < before + setup.jobs as u64 {
        if Instant::now() > deadline {
            bail!(
                "{} of {} forecasts within {limit:?}\n--- worker output ---\n{}",
                forecasts(&rig.http, &rig.stub_url).await? - before,
                setup.jobs,
                workers.logs()
            );
        }
        if !workers.running() {
            bail!("a worker exited\n--- the output ---\n{}", workers.logs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals: Vec<serde_json::Value> = rig
        .http
        .get(format!("{}stub/forecasts", rig.stub_url))
        .send()
        .await?
        .json()
        .await?;
    let mut latency = vec![f64::NAN; setup.jobs];
    for a in arrivals {
        let (Some(lat), Some(lon), Some(at_us)) = (
            a["latitude"].as_f64(),
            a["longitude"].as_f64(),
            a["at_us"].as_f64(),
        ) else {
            continue;
        };
        let Some(i) = place_number(lat, lon).and_then(|n| n.checked_sub(setup.offset)) else {
            continue;
        };
        if let Some(slot) = latency.get_mut(i) {
            // From the job's send; without a rate, all were due at once.
            let sent_ms = sent.get(i).copied().unwrap_or(t0_ms);
            if slot.is_nan() {
                *slot = at_us / 1000.0 - sent_ms;
            }
        }
    }
    if let Some(i) = latency.iter().position(|x| x.is_nan()) {
        bail!("no forecast call for job {i} of {}", setup.jobs);
    }
    Ok(latency)
}

/// The job number of a place (the inverse of the producers' grid).
fn place_number(latitude: f64, longitude: f64) -> Option<usize> {
    let a = ((latitude + 50.0) * 100.0).round();
    let b = ((longitude + 170.0) * 100.0).round();
    ((0.0..10_000.0).contains(&a) && b >= 0.0).then(|| a as usize + 10_000 * b as usize)
}

fn markdown(results: &[Latency], quick: bool) -> String {
    let mut md = String::new();
    if quick {
        md.push_str("**Quick run**: it checks the phase runs; the figures mean nothing.\n\n");
    }
    md.push_str(
        "| system | tracing | fixed rate | p50 ms | p99 ms | max ms | after idle | each job, ms |\n\
         |---|---|---:|---:|---:|---:|---:|---|\n",
    );
    for l in results {
        let each: Vec<String> = l.after_idle_ms.iter().map(|x| format!("{x:.1}")).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} jobs/s × {} | {:.1} | {:.1} | {:.1} | {} s | {} |",
            l.system.name(),
            if l.tracing { "on" } else { "off" },
            l.rate,
            l.jobs,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            l.idle_secs,
            each.join(", ")
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_map_back_to_their_job_numbers() {
        for n in [0usize, 1, 9_999, 10_000, 123_456, 3_000_017] {
            let lat = (n % 10_000) as f64 / 100.0 - 50.0;
            let lon = (n / 10_000) as f64 / 100.0 - 170.0;
            assert_eq!(place_number(lat, lon), Some(n), "{n}");
        }
        assert_eq!(place_number(-60.0, 0.0), None);
    }
}

//! The trace store under hostile load, through the real console process:
//! a million small spans, then the largest spans a batch may carry, then
//! one trace of 30,000 spans. Meanwhile `/healthz` and
//! `/api/v2/dependencies` are asked every 100 ms and timed, and the
//! process's resident memory is sampled, to report against
//! `CONSOLE_MAX_BYTES`.
//!
//! ```sh
//! cargo bench -p console --bench hostile               # the full run
//! cargo bench -p console --bench hostile -- --quick    # small, to check it runs
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::{Value, json};
use testkit::Console;

/// Benchmark the trace store under hostile load.
#[derive(Debug, Parser)]
struct Args {
    /// `CONSOLE_MAX_BYTES` of the console under test (its default).
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    max_bytes: u64,
    /// Small spans of the first phase.
    #[arg(long, default_value_t = 1_000_000)]
    small_spans: u64,
    /// Batches of the largest spans (about 16 MiB each) of the second.
    #[arg(long, default_value_t = 24)]
    large_batches: u64,
    /// Spans of the one trace of the third.
    #[arg(long, default_value_t = 30_000)]
    trace_spans: u64,
    /// Small, fast settings to check the benchmark still runs.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench` to every benchmark; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Spans a batch of the first and third phases carries.
const BATCH: u64 = 1_000;
/// The console's largest batch body (`MAX_BATCH_BYTES`), less room for the
/// JSON around the tags.
const LARGE_BODY: usize = 16 * 1024 * 1024 - 64 * 1024;
/// A tag value the store keeps whole (its cut is at 16 KiB).
const LARGE_VALUE: usize = 16 * 1024 - 64;

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Batch `b` of small spans: ten spans a trace, a tag of their own.
fn small_batch(b: u64) -> Vec<u8> {
    let t0 = now_us();
    let spans: Vec<Value> = (0..BATCH)
        .map(|i| {
            let n = b * BATCH + i;
            json!({
                "traceId": format!("{:032x}", (1u128 << 100) | u128::from(n / 10 + 1)),
                "id": format!("{:016x}", n + 1),
                "name": "op",
                "kind": if i % 10 == 0 { "SERVER" } else { "CLIENT" },
                "timestamp": t0 + i,
                "duration": 10,
                "localEndpoint": { "serviceName": "svc", "ipv4": "127.0.0.1" },
                "remoteEndpoint": { "serviceName": "peer" },
                "tags": { "n": n.to_string() },
            })
        })
        .collect();
    serde_json::to_vec(&spans).unwrap_or_default()
}

/// Batch `b` of the largest spans: one span, its tags filling the body,
/// every value its own.
fn large_batch(b: u64) -> Vec<u8> {
    let tags: serde_json::Map<String, Value> = (0..LARGE_BODY / (LARGE_VALUE + 16))
        .map(|i| {
            let head = format!("{b}-{i}-");
            let value = format!("{head}{}", "v".repeat(LARGE_VALUE - head.len()));
            (format!("t{i}"), Value::String(value))
        })
        .collect();
    let span = json!({
        "traceId": format!("{:032x}", (2u128 << 100) | u128::from(b + 1)),
        "id": "0000000000000001",
        "name": "large",
        "timestamp": now_us(),
        "duration": 10,
        "localEndpoint": { "serviceName": "hostile" },
        "tags": tags,
    });
    serde_json::to_vec(&[span]).unwrap_or_default()
}

/// The deep trace's id.
const DEEP: &str = "33333333333333333333333333333333";

/// Batch `b` of the deep trace: each span the child of the one before,
/// a SERVER span at the top and a CLIENT span every hundred.
fn deep_batch(b: u64, total: u64) -> Vec<u8> {
    let t0 = now_us();
    let spans: Vec<Value> = (b * BATCH..((b + 1) * BATCH).min(total))
        .map(|n| {
            let mut s = json!({
                "traceId": DEEP,
                "id": format!("{:016x}", n + 1),
                "name": "step",
                "timestamp": t0 + n,
                "duration": 10,
                "localEndpoint": { "serviceName": format!("svc{}", n % 3) },
            });
            if n > 0 {
                s["parentId"] = format!("{n:016x}").into();
            }
            if n == 0 {
                s["kind"] = "SERVER".into();
            } else if n % 100 == 0 {
                s["kind"] = "CLIENT".into();
                s["remoteEndpoint"] = json!({ "serviceName": "redis" });
            }
            s
        })
        .collect();
    serde_json::to_vec(&spans).unwrap_or_default()
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// What the probes saw during one phase.
#[derive(Default)]
struct Seen {
    healthz: Vec<Duration>,
    dependencies: Vec<Duration>,
}

fn quantile(v: &mut [Duration], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// Asks `/healthz` and `/api/v2/dependencies` every 100 ms and samples the
/// resident memory every 20 ms, until `stop`.
async fn probe(
    url: String,
    pid: u32,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
) -> anyhow::Result<Seen> {
    let http = reqwest::Client::new();
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let ok = http.get(format!("{url}/healthz")).send().await?.status();
        anyhow::ensure!(ok.is_success(), "/healthz answered {ok}");
        seen.healthz.push(t.elapsed());
        let t = Instant::now();
        let deps = http
            .get(format!(
                "{url}/api/v2/dependencies?endTs={}&lookback=86400000",
                now_us() / 1000 + 60_000
            ))
            .send()
            .await?
            .status();
        anyhow::ensure!(deps.is_success(), "/dependencies answered {deps}");
        seen.dependencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sampler.await?;
    Ok(seen)
}

/// Posts `batches` (made by `make`) from two tasks at once.
async fn post_all(
    url: &str,
    batches: u64,
    make: impl Fn(u64) -> Vec<u8> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let make = Arc::new(make);
    let next = Arc::new(AtomicU64::new(0));
    let mut posters = Vec::new();
    for _ in 0..2 {
        let (make, next, url) = (make.clone(), next.clone(), url.to_owned());
        posters.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return anyhow::Ok(());
                }
                let body = tokio::task::spawn_blocking({
                    let make = make.clone();
                    move || make(b)
                })
                .await?;
                let status = http
                    .post(format!("{url}/api/v2/spans"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?
                    .status();
                anyhow::ensure!(status.as_u16() == 202, "batch {b}: {status}");
            }
        }));
    }
    for p in posters {
        p.await??;
    }
    Ok(())
}

struct Row {
    phase: &'static str,
    spans: u64,
    secs: f64,
    peak_rss: u64,
    store_bytes: f64,
    seen: Seen,
}

async fn store_bytes(url: &str) -> anyhow::Result<f64> {
    let page = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    page.lines()
        .find(|l| l.starts_with("console_store_bytes "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .context("console_store_bytes")
}

/// Runs one phase with the probes on.
async fn phase(
    console: &mut Console,
    phase: &'static str,
    spans: u64,
    batches: u64,
    make: impl Fn(u64) -> Vec<u8> + Send + Sync + 'static,
) -> anyhow::Result<Row> {
    let url = console.url().to_owned();
    let pid = console.process().pid();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss(pid)));
    let probes = tokio::spawn(probe(url.clone(), pid, stop.clone(), peak.clone()));
    let start = Instant::now();
    let posted = post_all(&url, batches, make).await;
    let secs = start.elapsed().as_secs_f64();
    // One more round of probes with the phase's data in.
    tokio::time::sleep(Duration::from_millis(250)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = probes.await??;
    posted?;
    Ok(Row {
        phase,
        spans,
        secs,
        peak_rss: peak.load(Ordering::Relaxed),
        store_bytes: store_bytes(&url).await?,
        seen,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.max_bytes = 8 * 1024 * 1024;
        args.small_spans = 20_000;
        args.large_batches = 2;
        args.trace_spans = 3_000;
    }
    let bin = env!("CARGO_BIN_EXE_console");
    let mut console = Console::start(
        bin,
        &[
            ("CONSOLE_MAX_BYTES", args.max_bytes.to_string()),
            ("CONSOLE_MAX_SPANS", "10000000".into()),
        ],
    )
    .await?;
    let idle = rss(console.process().pid());
    let mut rows = Vec::new();
    rows.push(
        phase(
            &mut console,
            "small spans",
            args.small_spans,
            args.small_spans.div_ceil(BATCH),
            small_batch,
        )
        .await?,
    );
    let per_large = (LARGE_BODY / (LARGE_VALUE + 16)) as u64;
    rows.push(
        phase(
            &mut console,
            "largest spans (16 MiB each)",
            args.large_batches,
            args.large_batches,
            large_batch,
        )
        .await?,
    );
    let total = args.trace_spans;
    rows.push(
        phase(
            &mut console,
            "one deep trace",
            total,
            total.div_ceil(BATCH),
            move |b| deep_batch(b, total),
        )
        .await?,
    );
    // The deep trace: whole, and the service graph over it.
    let http = reqwest::Client::new();
    let t = Instant::now();
    let trace: Vec<Value> = http
        .get(format!("{}/api/v2/trace/{DEEP}", console.url()))
        .send()
        .await?
        .json()
        .await?;
    let trace_ms = t.elapsed().as_secs_f64() * 1000.0;

    let mib = |b: f64| b / 1_048_576.0;
    println!(
        "\nThe trace store under hostile load: CONSOLE_MAX_BYTES = {:.0} MiB, \
         resident memory idle {:.1} MiB ({per_large} tags of {LARGE_VALUE} bytes a large span)\n",
        mib(args.max_bytes as f64),
        mib(idle as f64)
    );
    println!(
        "| phase | spans | posted in (s) | peak RSS (MiB) | RSS / max bytes | store bytes after (MiB) | /healthz p50 / max (ms) | /dependencies p50 / max (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for mut r in rows {
        let (h50, hmax) = (
            quantile(&mut r.seen.healthz, 0.5),
            quantile(&mut r.seen.healthz, 1.0),
        );
        let (d50, dmax) = (
            quantile(&mut r.seen.dependencies, 0.5),
            quantile(&mut r.seen.dependencies, 1.0),
        );
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.1} | {h50:.2} / {hmax:.1} | {d50:.1} / {dmax:.1} |",
            r.phase,
            r.spans,
            r.secs,
            mib(r.peak_rss as f64),
            r.peak_rss as f64 / args.max_bytes as f64,
            mib(r.store_bytes),
        );
    }
    println!(
        "\nThe deep trace came back with {} spans in {trace_ms:.0} ms.",
        trace.len()
    );
    anyhow::ensure!(
        trace.len() as u64 == total,
        "the deep trace lost spans: {} of {total}",
        trace.len()
    );
    Ok(())
}

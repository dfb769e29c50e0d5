//! Trace-store benchmark: ingest rate, trace lookup latency with the store
//! full, and memory at the cap, on traces shaped like a job's (ten spans,
//! three services, tags as our services write them).
//!
//! ```sh
//! cargo bench -p console --bench store                # 500,000 spans
//! cargo bench -p console --bench store -- --disk --max-spans 1000000
//! cargo bench -p console --bench store -- --quick     # small, to check it runs
//! ```
//!
//! With `--disk`, the store keeps its spans on disk too (as with
//! `CONSOLE_DATA_DIR`, in a temporary directory): the ingest rate then
//! includes the writes, and the table adds the bytes on disk per span and
//! the time to read a full store back, as a restart does.
//!
//! Ingest goes through the same path as `POST /api/v2/spans` minus HTTP:
//! JSON batches of 500 spans parsed and stored (encoding the batches is
//! not timed). RSS is the process's resident memory with the store full,
//! less before, per stored span.

use std::time::{Duration, Instant};

use clap::Parser;
use console::Store;
use console::store::model::{SpanIn, TraceId};
use console::store::{DiskOptions, TraceQuery};
use serde_json::{Value, json};

/// Benchmark the embedded trace store.
#[derive(Debug, Parser)]
struct Args {
    /// Spans the store keeps (and the benchmark stores).
    #[arg(long, default_value_t = 500_000)]
    max_spans: usize,
    /// Trace lookups timed with the store full.
    #[arg(long, default_value_t = 20_000)]
    lookups: usize,
    /// Trace searches timed with the store full.
    #[arg(long, default_value_t = 200)]
    searches: usize,
    /// Keep the spans on disk too, and measure reading them back.
    #[arg(long)]
    disk: bool,
    /// Small, fast settings to check the benchmark still runs.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench` to every benchmark; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

const SPANS_PER_TRACE: usize = 10;
const BATCH: usize = 500;
/// Rounds of ingest past the cap.
const CHURN_ROUNDS: u64 = 4;

/// The trace id of job `n`.
fn trace_id(n: u64) -> String {
    format!(
        "{:032x}",
        (0x4bf9_2f35_77b3_4da6_u128 << 64) | (u128::from(n) + 1)
    )
}

/// The spans of job `n`'s trace, as our services export them.
fn job_trace(n: u64) -> Vec<Value> {
    let trace = trace_id(n);
    let id = |i: u64| format!("{:016x}", n * 16 + i + 1);
    let t0 = 1_764_000_000_000_000 + n * 1_000;
    let job = format!("01a2{n:028x}");
    let code = |module: &str, line: u32| {
        json!({ "code.file.path": format!("{module}.rs"), "code.module.name": module,
                "code.line.number": line.to_string(), "otel.scope.name": "worker" })
    };
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
    let merge = |a: Value, b: Value| {
        let mut a = a;
        if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
            a.extend(b.clone());
        }
        a
    };
    let city = ["berlin", "oslo", "lima", "quito", "cairo"][(n % 5) as usize];
    vec![
        span(
            0,
            None,
            "api",
            "post /v1/jobs",
            "SERVER",
            merge(
                code("telemetry::http_server", 93),
                json!({ "http.request.method": "POST", "http.route": "/v1/jobs", "url.path": "/v1/jobs",
                    "url.scheme": "http", "http.response.status_code": "202" }),
            ),
        ),
        span(
            1,
            Some(0),
            "api",
            "send weather",
            "PRODUCER",
            merge(
                code("telemetry::messaging::producer", 124),
                json!({ "messaging.system": "redis", "messaging.operation.name": "send",
                    "messaging.operation.type": "send", "messaging.destination.name": "weather",
                    "messaging.message.id": job, "server.address": "127.0.0.1", "server.port": "6379" }),
            ),
        ),
        span(
            2,
            Some(1),
            "worker",
            "process weather",
            "CONSUMER",
            merge(
                code("telemetry::messaging::consumer", 224),
                json!({ "messaging.system": "redis", "messaging.operation.name": "process",
                    "messaging.operation.type": "process", "messaging.destination.name": "weather",
                    "messaging.consumer.group.name": "workers", "messaging.message.id": job,
                    "job.id": job, "job.attempt": "1", "job.queue_wait_ms": (n % 7).to_string(),
                    "otel.link.0": format!("{trace}-{}", id(1)),
                    "server.address": "127.0.0.1", "server.port": "6379" }),
            ),
        ),
        span(
            3,
            Some(2),
            "worker",
            "get",
            "CLIENT",
            merge(
                code("worker::cache", 50),
                json!({ "db.system.name": "redis", "db.operation.name": "GET", "db.query.text": "GET ?",
                    "server.address": "127.0.0.1", "server.port": "6379", "weather.cache.hit": "false" }),
            ),
        ),
        span(
            4,
            Some(2),
            "worker",
            "get",
            "CLIENT",
            merge(
                code("telemetry::http_client", 110),
                json!({ "http.request.method": "GET", "http.response.status_code": "200",
                    "peer.service": "weather-service", "server.address": "127.0.0.1", "server.port": "8090",
                    "url.full": format!("http://127.0.0.1:8090/v1/search?name={city}&count=1&language=en&format=json") }),
            ),
        ),
        span(
            5,
            Some(4),
            "weather-stub",
            "get /v1/search",
            "SERVER",
            merge(
                code("telemetry::http_server", 93),
                json!({ "http.request.method": "GET", "http.route": "/v1/search", "url.path": "/v1/search",
                    "url.scheme": "http", "http.response.status_code": "200" }),
            ),
        ),
        span(
            6,
            Some(2),
            "worker",
            "get",
            "CLIENT",
            merge(
                code("telemetry::http_client", 110),
                json!({ "http.request.method": "GET", "http.response.status_code": "200",
                    "peer.service": "weather-service", "server.address": "127.0.0.1", "server.port": "8090",
                    "url.full": format!("http://127.0.0.1:8090/v1/forecast?latitude=5{}.1&longitude=1{}.4&current=temperature_2m", n % 10, n % 9) }),
            ),
        ),
        span(
            7,
            Some(6),
            "weather-stub",
            "get /v1/forecast",
            "SERVER",
            merge(
                code("telemetry::http_server", 93),
                json!({ "http.request.method": "GET", "http.route": "/v1/forecast", "url.path": "/v1/forecast",
                    "url.scheme": "http", "http.response.status_code": "200" }),
            ),
        ),
        span(
            8,
            Some(2),
            "worker",
            "set",
            "CLIENT",
            merge(
                code("worker::cache", 73),
                json!({ "db.system.name": "redis", "db.operation.name": "SET", "db.query.text": "SET ? ? EX ?",
                    "server.address": "127.0.0.1", "server.port": "6379" }),
            ),
        ),
        span(
            9,
            Some(0),
            "api",
            "job queued",
            "SERVER",
            json!({ "job.id": job }),
        ),
    ]
}

/// The process's resident memory, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// MiB of RSS over `before`.
fn after_rss(before: u64) -> f64 {
    rss_kib().saturating_sub(before) as f64 / 1024.0
}

/// Feeds traces to the store in JSON batches, timing only what the store
/// does with them (parse and store); one body buffer serves every batch.
#[derive(Debug, Default)]
struct Feeder {
    spans: usize,
    evicted: usize,
    bytes: usize,
    took: Duration,
}

impl Feeder {
    fn feed(
        &mut self,
        store: &Store,
        body: &mut Vec<u8>,
        traces: std::ops::Range<u64>,
    ) -> anyhow::Result<()> {
        let ids: Vec<u64> = traces.collect();
        for chunk in ids.chunks(BATCH / SPANS_PER_TRACE) {
            let spans: Vec<Value> = chunk.iter().flat_map(|n| job_trace(*n)).collect();
            body.clear();
            serde_json::to_writer(&mut *body, &spans)?;
            self.bytes += body.len();
            let started = Instant::now();
            let parsed: Vec<SpanIn<'_>> = serde_json::from_slice(body)?;
            let done = store.ingest(parsed)?;
            self.took += started.elapsed();
            self.spans += done.spans;
            self.evicted += done.evicted_spans;
        }
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.max_spans = 20_000;
        args.lookups = 2_000;
        args.searches = 20;
    }
    let traces = (args.max_spans / SPANS_PER_TRACE) as u64;
    let keys = ["messaging.destination.name".to_owned()];
    // The memory cap out of the way: the span count is what is measured.
    let new_store = || Store::new(args.max_spans, &keys).with_max_bytes(usize::MAX);
    let dir = std::env::temp_dir().join(format!("console-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let disk = DiskOptions {
        dir: dir.clone(),
        max_bytes: u64::MAX,
        retention: Duration::from_secs(3650 * 86_400),
    };
    let mut store = new_store();
    if args.disk {
        store = store.with_disk(&disk)?.0;
    }
    let mut body = Vec::new();
    // Warm up: one batch, so the baseline holds the buffers every batch reuses.
    let warm = (BATCH / SPANS_PER_TRACE) as u64;
    Feeder::default().feed(&store, &mut body, 0..warm)?;
    let before = rss_kib();
    let mut fill = Feeder::default();
    fill.feed(&store, &mut body, warm..traces)?;
    let stats = store.stats();
    let after = rss_kib();

    let mut latencies = Vec::with_capacity(args.lookups);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..args.lookups {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let n = rng % traces;
        let id = TraceId::parse(&trace_id(n)).ok_or_else(|| anyhow::anyhow!("bad trace id"))?;
        let t = Instant::now();
        let spans = store.trace(id).map(|s| serde_json::to_vec(&s));
        latencies.push(t.elapsed());
        anyhow::ensure!(spans.is_some(), "trace {n} missing");
    }
    latencies.sort();

    // Searches as the console's Traces page makes them: a service and a
    // tag, the newest 10, over a window holding every trace.
    let mut searches = Vec::with_capacity(args.searches);
    for i in 0..args.searches {
        let q = TraceQuery::new(
            Some(["worker", "api", "redis"][i % 3]),
            None,
            Some("messaging.destination.name=weather"),
            None,
            None,
            Some(2_000_000_000_000),
            Some(2_000_000_000_000),
            Some(10),
            0,
            u64::MAX,
        )?;
        let t = Instant::now();
        let found = store.traces(&q);
        let _ = serde_json::to_vec(&found)?;
        searches.push(t.elapsed());
    }
    searches.sort();

    // Read back from disk, as a restart does.
    let mut disk_rows = Vec::new();
    if args.disk {
        let dir_bytes = store.sync().unwrap_or(0);
        drop(store);
        let t = Instant::now();
        let (reopened, found) = new_store().with_disk(&disk)?;
        let took = t.elapsed();
        anyhow::ensure!(
            found.spans == stats.spans,
            "{} spans read back of {}",
            found.spans,
            stats.spans
        );
        store = reopened;
        let dir_after = store.sync().unwrap_or(0);
        disk_rows.push(format!(
            "| bytes on disk per span (data directory / spans: after ingest, after reopening) | {:.0}, {:.0} | |",
            dir_bytes as f64 / stats.spans.max(1) as f64,
            dir_after as f64 / stats.spans.max(1) as f64
        ));
        disk_rows.push(format!(
            "| reopen: {} spans read back (s) | {:.2} | < 5 |",
            found.spans,
            took.as_secs_f64()
        ));
    }

    // Past the cap: every new trace evicts an old one, and memory stays
    // bounded. Rounds of a fifth of the store each; RSS after each round.
    let extra = traces / 5;
    let mut churn = Feeder::default();
    let mut rss_rounds = Vec::new();
    for round in 0..CHURN_ROUNDS {
        let first = traces + round * extra;
        churn.feed(&store, &mut body, first..first + extra)?;
        rss_rounds.push(after_rss(before));
    }

    let rss_per_span = (after.saturating_sub(before) * 1024) as f64 / stats.spans.max(1) as f64;
    println!(
        "{} spans in {} traces, {} distinct strings; {:.1} MiB of JSON ingested\n",
        stats.spans,
        stats.traces,
        stats.strings,
        fill.bytes as f64 / 1_048_576.0
    );
    println!("| measure | value | target |");
    println!("|---|---:|---:|");
    println!(
        "| ingest (spans/s, JSON parse + store{}) | {:.0} | {} |",
        if args.disk { " + disk" } else { "" },
        fill.spans as f64 / fill.took.as_secs_f64(),
        if args.disk { "≥ 50000" } else { "≥ 100000" }
    );
    for row in &disk_rows {
        println!("{row}");
    }
    println!(
        "| /trace/{{id}} lookup p50 (ms, store full) | {:.3} | |",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3
    );
    println!(
        "| /trace/{{id}} lookup p99 (ms, store full) | {:.3} | < 5 |",
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "| trace search p50 / p99 (ms: service and tag, newest 10) | {:.1} / {:.1} | p99 < 200 |",
        percentile(&searches, 0.5).as_secs_f64() * 1e3,
        percentile(&searches, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "| RSS at the cap (MiB) | {:.1} | |",
        after.saturating_sub(before) as f64 / 1024.0
    );
    println!("| RSS per stored span (bytes) | {rss_per_span:.0} | < 1024 |");
    println!(
        "| ingest at the cap, evicting (spans/s) | {:.0} | |",
        churn.spans as f64 / churn.took.as_secs_f64()
    );
    let rounds: Vec<String> = rss_rounds.iter().map(|r| format!("{r:.1}")).collect();
    println!(
        "| RSS after each of {CHURN_ROUNDS} rounds of {} more spans, {} evicted in all (MiB) | {} | flat |",
        churn.spans / CHURN_ROUNDS as usize,
        churn.evicted,
        rounds.join(", ")
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

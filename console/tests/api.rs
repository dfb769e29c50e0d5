//! The console as a process: known traces posted over HTTP come back by
//! id and by every `/traces` filter, the service graph follows Zipkin's
//! linking rules, the oldest traces go first at the cap, and bad input
//! is refused with problems and stores nothing.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use testkit::Console;

const A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const B: &str = "a3ce929d0e0e47364bf92f3577b34da6";
/// A 64-bit trace id.
const C: &str = "00f067aa0ba902b7";
const D: &str = "11112222333344445555666677778888";

/// Where the console under test keeps its spans: every test runs against
/// both stores (see `on_both_stores!` below).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// In memory only.
    Memory,
    /// On disk too (`CONSOLE_DATA_DIR`).
    Disk,
}

async fn console(kept: Kept, env: &[(&str, String)]) -> anyhow::Result<Console> {
    let bin = env!("CARGO_BIN_EXE_console");
    match kept {
        Kept::Memory => Console::start(bin, env).await,
        Kept::Disk => Console::start_on_disk(bin, env).await,
    }
}

/// On disk, SIGKILLs the console and starts it again, so that what the
/// test checks next is what it read back; in memory, nothing.
async fn reopen(console: &mut Console, kept: Kept) -> anyhow::Result<()> {
    if kept == Kept::Disk {
        console.kill_and_restart().await?;
    }
    Ok(())
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A span of `trace`: `id` and `parent` are small numbers; it starts `at`
/// µs after a minute ago.
#[allow(clippy::too_many_arguments)]
fn span(
    trace: &str,
    id: u64,
    parent: Option<u64>,
    service: &str,
    name: &str,
    kind: Option<&str>,
    at: u64,
    duration: u64,
) -> Value {
    let mut s = json!({
        "traceId": trace,
        "id": format!("{id:016x}"),
        "name": name,
        "timestamp": now_us() - 60_000_000 + at,
        "duration": duration,
        "localEndpoint": { "serviceName": service, "ipv4": "127.0.0.1" },
    });
    if let Some(p) = parent {
        s["parentId"] = format!("{p:016x}").into();
    }
    if let Some(k) = kind {
        s["kind"] = k.into();
    }
    s
}

fn with(mut span: Value, key: &str, value: Value) -> Value {
    span[key] = value;
    span
}

fn redis() -> Value {
    json!({ "serviceName": "redis", "ipv4": "127.0.0.1", "port": 6379 })
}

/// Trace A: a job that went well, as our services export it.
fn job_trace() -> Value {
    json!([
        span(A, 1, None, "api", "POST /v1/jobs", Some("SERVER"), 0, 5_000),
        with(
            span(
                A,
                2,
                Some(1),
                "api",
                "send weather",
                Some("PRODUCER"),
                100,
                900
            ),
            "remoteEndpoint",
            redis()
        ),
        with(
            with(
                span(
                    A,
                    3,
                    Some(2),
                    "Worker",
                    "process weather",
                    Some("CONSUMER"),
                    2_000,
                    3_000
                ),
                "remoteEndpoint",
                redis()
            ),
            "tags",
            json!({ "messaging.destination.name": "weather", "job.attempt": "1" })
        ),
        with(
            span(A, 4, Some(3), "worker", "GET", Some("CLIENT"), 2_100, 300),
            "remoteEndpoint",
            redis()
        ),
        with(
            span(A, 5, Some(3), "worker", "GET", Some("CLIENT"), 2_500, 1_000),
            "remoteEndpoint",
            json!({ "serviceName": "weather-service", "port": 8090 })
        ),
        with(
            span(
                A,
                6,
                Some(5),
                "weather-stub",
                "GET /v1/search",
                Some("SERVER"),
                2_600,
                700
            ),
            "tags",
            json!({ "http.route": "/v1/search" })
        ),
        with(
            span(A, 7, Some(3), "worker", "SET", Some("CLIENT"), 4_600, 200),
            "remoteEndpoint",
            redis()
        ),
    ])
}

/// Trace B (50 s ago): a job that failed (slow, in error); trace C (40 s
/// ago): a 64-bit local trace with an annotation; trace D (30 s ago): a
/// message sent with no broker named.
fn other_traces() -> Value {
    json!([
        with(
            span(
                B,
                1,
                None,
                "api",
                "send weather",
                Some("PRODUCER"),
                10_000_000,
                500
            ),
            "remoteEndpoint",
            redis()
        ),
        with(
            with(
                span(
                    B,
                    2,
                    Some(1),
                    "worker",
                    "process weather",
                    Some("CONSUMER"),
                    10_001_000,
                    200_000
                ),
                "remoteEndpoint",
                redis()
            ),
            "tags",
            json!({ "error": "true", "error.type": "unknown_place", "messaging.destination.name": "weather" })
        ),
        with(
            span(C, 1, None, "billing", "invoice", None, 20_000_000, 50),
            "annotations",
            json!([{ "timestamp": now_us() - 40_000_000, "value": "retried" }])
        ),
        span(
            D,
            1,
            None,
            "mailer",
            "send mail",
            Some("PRODUCER"),
            30_000_000,
            10
        ),
    ])
}

fn gzip(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body)?;
    Ok(enc.finish()?)
}

/// A console holding traces A to D (the second batch sent gzipped); on
/// disk, killed and read back since.
async fn loaded(kept: Kept) -> anyhow::Result<Console> {
    let mut console = console(kept, &[]).await?;
    assert_eq!(console.post_spans(&job_trace()).await?, 202);
    let res = reqwest::Client::new()
        .post(console.endpoint())
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(&serde_json::to_vec(&other_traces())?)?)
        .send()
        .await?;
    assert_eq!(res.status(), 202, "gzip is accepted");
    reopen(&mut console, kept).await?;
    Ok(console)
}

fn trace_ids(traces: &Value) -> Vec<String> {
    traces
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t[0]["traceId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn posted_traces_come_back_by_id_normalised_as_zipkin_does(kept: Kept) -> anyhow::Result<()> {
    let console = loaded(kept).await?;
    let trace = console.get_ok(&format!("/api/v2/trace/{A}")).await?;
    let spans = trace.as_array().expect("a list");
    assert_eq!(spans.len(), 7);
    assert_eq!(spans[0]["name"], "post /v1/jobs", "names are lower-cased");
    assert!(spans[0].get("parentId").is_none());
    assert_eq!(spans[2]["localEndpoint"]["serviceName"], "worker");
    assert_eq!(spans[2]["parentId"], "0000000000000002");
    assert_eq!(spans[2]["tags"]["job.attempt"], "1");
    assert_eq!(spans[2]["remoteEndpoint"], redis());
    let times: Vec<u64> = spans
        .iter()
        .filter_map(|s| s["timestamp"].as_u64())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "by time: {times:?}");

    let upper = console
        .get_ok(&format!("/api/v2/trace/{}", A.to_uppercase()))
        .await?;
    assert_eq!(upper, trace, "ids are read in any case");
    let c = console.get_ok(&format!("/api/v2/trace/{C}")).await?;
    assert_eq!(c[0]["traceId"], C);
    assert_eq!(c[0]["annotations"][0]["value"], "retried");
    let padded = console
        .get_ok(&format!("/api/v2/trace/0000000000000000{C}"))
        .await?;
    assert_eq!(padded, c, "zero high bits are padding");
    let (status, problem) = console.get(&format!("/api/v2/trace/{D}00")).await?;
    assert_eq!(status, 400, "{problem}");
    let (status, problem) = console
        .get("/api/v2/trace/99999999999999999999999999999999")
        .await?;
    assert_eq!(status, 404);
    assert_eq!(problem["status"], 404);

    let many = console
        .get_ok(&format!(
            "/api/v2/traceMany?traceIds={A},{C},{}",
            "1".repeat(32)
        ))
        .await?;
    assert_eq!(trace_ids(&many), vec![A.to_owned(), C.to_owned()]);
    let (status, _) = console
        .get(&format!("/api/v2/traceMany?traceIds={A},{A}"))
        .await?;
    assert_eq!(status, 400, "one trace twice is a bad request");

    assert_eq!(
        console.get_ok("/api/v2/services").await?,
        json!(["api", "billing", "mailer", "weather-stub", "worker"])
    );
    assert_eq!(
        console.get_ok("/api/v2/spans?serviceName=Worker").await?,
        json!(["get", "process weather", "set"])
    );
    let (status, _) = console.get("/api/v2/spans").await?;
    assert_eq!(status, 400, "serviceName is required");
    assert_eq!(
        console.get_ok("/api/v2/autocompleteKeys").await?,
        json!(["messaging.destination.name", "http.route", "error.type"])
    );
    assert_eq!(
        console
            .get_ok("/api/v2/autocompleteValues?key=error.type")
            .await?,
        json!(["unknown_place"])
    );
    assert_eq!(
        console
            .get_ok("/api/v2/autocompleteValues?key=job.attempt")
            .await?,
        json!([]),
        "not a configured key"
    );
    Ok(())
}

async fn traces_are_found_by_every_filter(kept: Kept) -> anyhow::Result<()> {
    let console = loaded(kept).await?;
    let find = |query: &str| {
        let console = &console;
        let query = query.to_owned();
        async move {
            let found = console.get_ok(&format!("/api/v2/traces?{query}")).await?;
            let mut ids = trace_ids(&found);
            ids.sort();
            anyhow::Ok(ids)
        }
    };
    let ids = |list: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(find("").await?, ids(&[A, B, C, D]));
    assert_eq!(find("serviceName=weather-stub").await?, ids(&[A]));
    assert_eq!(find("serviceName=WORKER").await?, ids(&[A, B]));
    assert_eq!(find("serviceName=nobody").await?, ids(&[]));
    assert_eq!(
        find("serviceName=worker&spanName=process%20weather").await?,
        ids(&[A, B])
    );
    assert_eq!(find("serviceName=api&spanName=get").await?, ids(&[]));
    assert_eq!(
        find("annotationQuery=error.type%3Dunknown_place").await?,
        ids(&[B])
    );
    assert_eq!(find("annotationQuery=retried").await?, ids(&[C]));
    assert_eq!(find("annotationQuery=error").await?, ids(&[B]), "a tag key");
    assert_eq!(
        find("annotationQuery=error.type%3Dunknown_place%20and%20retried").await?,
        ids(&[])
    );
    assert_eq!(
        find("serviceName=api&annotationQuery=error").await?,
        ids(&[]),
        "the error is the worker's"
    );
    assert_eq!(find("minDuration=100000").await?, ids(&[B]));
    assert_eq!(
        find("minDuration=1000&maxDuration=5000").await?,
        ids(&[A]),
        "spans of 1 to 5 ms"
    );
    assert_eq!(
        find("minDuration=100000&maxDuration=150000").await?,
        ids(&[])
    );
    let now_ms = now_us() / 1000;
    assert_eq!(
        find(&format!("endTs={}", now_ms - 120_000)).await?,
        ids(&[]),
        "all later"
    );
    assert_eq!(
        find(&format!("endTs={now_ms}&lookback=1000")).await?,
        ids(&[]),
        "all earlier"
    );
    assert_eq!(
        find(&format!("endTs={}&lookback=30000", now_ms - 35_000)).await?,
        ids(&[A, B, C]),
        "D was sent 30 s ago, the others 40 to 60 s ago"
    );
    let newest = console.get_ok("/api/v2/traces?limit=1").await?;
    assert_eq!(trace_ids(&newest), vec![D.to_owned()]);

    for bad in [
        "limit=0",
        "limit=many",
        "minDuration=-5",
        "maxDuration=10",
        "minDuration=10&maxDuration=5",
        "endTs=0",
        "lookback=0",
    ] {
        let (status, problem) = console.get(&format!("/api/v2/traces?{bad}")).await?;
        assert_eq!(status, 400, "{bad}: {problem}");
        assert!(problem["detail"].is_string(), "{bad}: {problem}");
    }
    Ok(())
}

async fn dependencies_draw_the_job_pipeline_by_zipkins_rules(kept: Kept) -> anyhow::Result<()> {
    let console = loaded(kept).await?;
    let now_ms = now_us() / 1000;
    let links = console
        .get_ok(&format!("/api/v2/dependencies?endTs={now_ms}"))
        .await?;
    assert_eq!(
        links,
        json!([
            { "parent": "api", "child": "redis", "callCount": 2 },
            { "parent": "redis", "child": "worker", "callCount": 2, "errorCount": 1 },
            { "parent": "worker", "child": "redis", "callCount": 2 },
            { "parent": "worker", "child": "weather-stub", "callCount": 1 },
        ]),
        "the client call the stub answered counts once, as the stub's; \
         a message with no broker and a local span link nothing"
    );
    let early = console
        .get_ok(&format!(
            "/api/v2/dependencies?endTs={}&lookback=10000",
            now_ms - 45_000
        ))
        .await?;
    assert_eq!(
        early,
        json!([
            { "parent": "api", "child": "redis", "callCount": 1 },
            { "parent": "redis", "child": "worker", "callCount": 1, "errorCount": 1 },
        ]),
        "only trace B is in that window"
    );
    for bad in [
        "",
        "?endTs=0",
        "?endTs=soon",
        &format!("?endTs={now_ms}&lookback=-1"),
    ] {
        let (status, _) = console.get(&format!("/api/v2/dependencies{bad}")).await?;
        assert_eq!(status, 400, "{bad}");
    }
    Ok(())
}

/// The value of an unlabelled metric on a `/metrics` page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn the_oldest_traces_are_evicted_at_the_cap(kept: Kept) -> anyhow::Result<()> {
    let mut console = console(kept, &[("CONSOLE_MAX_SPANS", "25".into())]).await?;
    let traces: Vec<String> = (1..=5u64).map(|n| format!("{n:032x}")).collect();
    for (n, trace) in traces.iter().enumerate() {
        let spans: Vec<Value> = (1..=10u64)
            .map(|i| {
                span(
                    trace,
                    i,
                    (i > 1).then_some(1),
                    "svc",
                    "op",
                    None,
                    n as u64 * 1_000 + i,
                    10,
                )
            })
            .collect();
        assert_eq!(console.post_spans(&json!(spans)).await?, 202);
    }
    for (i, trace) in traces.iter().enumerate() {
        let (status, _) = console.get(&format!("/api/v2/trace/{trace}")).await?;
        let want = if i < 3 { 404 } else { 200 };
        assert_eq!(status, want, "trace {} of 5", i + 1);
    }
    let page = reqwest::get(format!("{}/metrics", console.url()))
        .await?
        .text()
        .await?;
    assert_eq!(
        metric(&page, "console_traces_evicted_total"),
        Some(3.0),
        "{page}"
    );
    assert_eq!(metric(&page, "console_spans_evicted_total"), Some(30.0));
    assert_eq!(metric(&page, "console_spans_received_total"), Some(50.0));
    assert_eq!(metric(&page, "console_spans_stored"), Some(20.0));
    assert_eq!(metric(&page, "console_traces_stored"), Some(2.0));
    // Read back, the store holds the same two traces.
    reopen(&mut console, kept).await?;
    for (i, trace) in traces.iter().enumerate() {
        let (status, _) = console.get(&format!("/api/v2/trace/{trace}")).await?;
        assert_eq!(status, if i < 3 { 404 } else { 200 }, "trace {}", i + 1);
    }
    let page = reqwest::get(format!("{}/metrics", console.url()))
        .await?
        .text()
        .await?;
    assert_eq!(metric(&page, "console_spans_stored"), Some(20.0), "{page}");
    Ok(())
}

async fn the_store_keeps_within_its_bytes_and_cuts_what_is_too_long(
    kept: Kept,
) -> anyhow::Result<()> {
    let max = 1_048_576;
    let mut console = console(kept, &[("CONSOLE_MAX_BYTES", max.to_string())]).await?;
    // 40 batches of ten traces, each span carrying 8 KiB of its own.
    for batch in 0..40u64 {
        let spans: Vec<Value> = (0..10u64)
            .map(|n| {
                let trace = format!("{:032x}", batch * 10 + n + 1);
                let blob = format!("{trace}{}", "x".repeat(8192));
                with(
                    span(&trace, 1, None, "svc", "op", None, n, 10),
                    "tags",
                    json!({ "blob": blob }),
                )
            })
            .collect();
        assert_eq!(console.post_spans(&json!(spans)).await?, 202);
    }
    let page = reqwest::get(format!("{}/metrics", console.url()))
        .await?
        .text()
        .await?;
    let bytes = metric(&page, "console_store_bytes").unwrap_or_default();
    assert!(bytes > 0.0 && bytes <= max as f64, "{page}");
    assert!(
        metric(&page, "console_traces_evicted_total").unwrap_or_default() > 250.0,
        "{page}"
    );
    // A value past 16 KiB comes back cut, and the span says so.
    let long = with(
        span(D, 1, None, "svc", "op", None, 0, 10),
        "tags",
        json!({ "sql": "y".repeat(100_000) }),
    );
    assert_eq!(console.post_spans(&json!([long])).await?, 202);
    reopen(&mut console, kept).await?;
    let trace = console.get_ok(&format!("/api/v2/trace/{D}")).await?;
    let sql = trace[0]["tags"]["sql"].as_str().unwrap_or_default();
    assert!(
        sql.len() <= 16 * 1024 && sql.ends_with('…'),
        "{} bytes",
        sql.len()
    );
    assert_eq!(trace[0]["tags"]["console.truncated"], "1");
    // traceMany takes at most 100 ids.
    let ids: Vec<String> = (1..=101u64).map(|n| format!("{n:032x}")).collect();
    let (status, problem) = console
        .get(&format!("/api/v2/traceMany?traceIds={}", ids.join(",")))
        .await?;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 100"),
        "{problem}"
    );
    Ok(())
}

/// A console page: its status and its HTML.
async fn page(console: &Console, path: &str) -> anyhow::Result<(u16, String)> {
    let res = reqwest::get(format!("{}{path}", console.url())).await?;
    Ok((res.status().as_u16(), res.text().await?))
}

async fn the_trace_search_page_finds_traces_and_opens_their_waterfall(
    kept: Kept,
) -> anyhow::Result<()> {
    let console = loaded(kept).await?;
    let link = |id: &str| format!("href=\"/traces/{id}\"");
    // Everything of the last hour, newest first, with what each holds.
    let (status, all) = page(&console, "/traces").await?;
    assert_eq!(status, 200, "{all}");
    for id in [A, B, C, D] {
        assert!(all.contains(&link(id)), "{id} listed: {all}");
    }
    assert!(all.contains("4 traces, newest first"), "{all}");
    // By service, by tag, by duration.
    let (_, worker) = page(&console, "/traces?service=worker").await?;
    assert!(
        worker.contains(&link(A)) && worker.contains(&link(B)),
        "{worker}"
    );
    assert!(
        !worker.contains(&link(C)) && !worker.contains(&link(D)),
        "{worker}"
    );
    let (_, failed) = page(&console, "/traces?tags=error.type%3Dunknown_place").await?;
    assert!(
        failed.contains(&link(B)) && !failed.contains(&link(A)),
        "{failed}"
    );
    assert!(failed.contains("api: send weather"), "its root: {failed}");
    assert!(
        failed.contains("<span class=\"err\">1</span>"),
        "one span in error: {failed}"
    );
    let (_, long) = page(&console, "/traces?min_ms=100").await?;
    assert!(
        long.contains(&link(B)) && !long.contains(&link(D)),
        "{long}"
    );
    let (_, none) = page(&console, "/traces?service=nobody").await?;
    assert!(none.contains("No trace matches"), "{none}");
    // The form keeps what was asked.
    assert!(worker.contains("value=\"worker\""), "{worker}");
    // A trace opens on its waterfall.
    let (status, waterfall) = page(&console, &format!("/traces/{A}")).await?;
    assert_eq!(status, 200);
    assert!(
        waterfall.contains("Spans on one time axis") && waterfall.contains("worker"),
        "{waterfall}"
    );
    // Bad fields and unknown traces say so.
    let (status, bad) = page(&console, "/traces?min_ms=soon").await?;
    assert_eq!(status, 400);
    assert!(bad.contains("shortest duration"), "{bad}");
    assert_eq!(page(&console, "/traces/zz").await?.0, 404);
    assert_eq!(
        page(&console, &format!("/traces/{}", "9".repeat(32)))
            .await?
            .0,
        404
    );
    Ok(())
}

async fn bad_input_is_refused_with_problems_and_stores_nothing(kept: Kept) -> anyhow::Result<()> {
    let mut console = console(kept, &[]).await?;
    let http = reqwest::Client::new();
    let post = |ct: &'static str, encoding: Option<&'static str>, body: Vec<u8>| {
        let mut req = http
            .post(console.endpoint())
            .header("content-type", ct)
            .body(body);
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        async move {
            let res = req.send().await?;
            let status = res.status().as_u16();
            let ct = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            anyhow::Ok((status, ct, res.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    let good = span(A, 1, None, "api", "ok", None, 0, 1);
    let json = "application/json";
    /// Content type, encoding, body, the status expected, what it mentions.
    type Case = (
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (json, None, b"[{".to_vec(), 400, "JSON list"),
        (
            json,
            None,
            br#"{"traceId": "1"}"#.to_vec(),
            400,
            "JSON list",
        ),
        (json, None, br#"[{"id": "1"}]"#.to_vec(), 400, "traceId"),
        (
            json,
            None,
            serde_json::to_vec(&json!([good, with(good.clone(), "traceId", json!("xyz"))]))?,
            400,
            "span 1: traceId",
        ),
        (
            json,
            None,
            serde_json::to_vec(&json!([with(good.clone(), "id", json!("0"))]))?,
            400,
            "id",
        ),
        (
            json,
            None,
            serde_json::to_vec(&json!([with(good.clone(), "tags", json!({ "n": 1 }))]))?,
            400,
            "string",
        ),
        (
            "application/x-protobuf",
            None,
            vec![1, 2, 3],
            415,
            "protobuf",
        ),
        ("text/plain", None, b"[]".to_vec(), 415, "application/json"),
        (json, Some("br"), b"[]".to_vec(), 415, "gzip"),
        (json, Some("gzip"), b"not gzip at all".to_vec(), 400, "read"),
        (
            json,
            None,
            format!("[{}]", " ".repeat(17 * 1024 * 1024)).into_bytes(),
            413,
            "larger",
        ),
    ];
    for (ct, encoding, body, status, mentions) in cases {
        let (got, content_type, problem) = post(ct, encoding, body).await?;
        assert_eq!(got, status, "{ct} {encoding:?}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(mentions),
            "{detail:?} should mention {mentions:?}"
        );
    }
    let (status, problem) = console.get("/api/v1/spans").await?;
    assert_eq!((status, problem["status"].clone()), (404, json!(404)));
    reopen(&mut console, kept).await?;
    assert_eq!(
        console.get_ok("/api/v2/services").await?,
        json!([]),
        "nothing was stored"
    );
    assert!(console.process().is_running());
    assert_eq!(
        console.post_spans(&json!([good])).await?,
        202,
        "and it still works"
    );
    Ok(())
}

#[test]
fn every_setting_of_the_console_is_in_the_settings_reference() -> anyhow::Result<()> {
    testkit::settings::assert_documented(
        std::path::Path::new(env!("CARGO_BIN_EXE_console")),
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
    )
}

/// Each test above, against the memory store and against the disk store
/// (killed and read back before its answers are checked).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Kept::Memory).await
                }
            )*
        }
        mod disk {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Kept::Disk).await
                }
            )*
        }
    };
}

on_both_stores!(
    posted_traces_come_back_by_id_normalised_as_zipkin_does,
    traces_are_found_by_every_filter,
    dependencies_draw_the_job_pipeline_by_zipkins_rules,
    the_oldest_traces_are_evicted_at_the_cap,
    the_store_keeps_within_its_bytes_and_cuts_what_is_too_long,
    the_trace_search_page_finds_traces_and_opens_their_waterfall,
    bad_input_is_refused_with_problems_and_stores_nothing,
);

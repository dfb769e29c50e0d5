//! The whole system as processes (Redis, the weather stub, the api and two
//! workers), checked through the Zipkin v2 JSON they export: every job is
//! one connected trace, api → queue → worker → weather service → cache.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use testkit::{RedisServer, ServiceProcess, ZipkinCollector, free_port, project_binary};

const WAIT: Duration = Duration::from_secs(20);

struct Stack {
    zipkin: ZipkinCollector,
    api: ServiceProcess,
    workers: Vec<ServiceProcess>,
    worker_urls: Vec<String>,
    stub: ServiceProcess,
    api_url: String,
    http: reqwest::Client,
    _redis: RedisServer,
}

impl Stack {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[], &[]).await
    }

    /// Starts the stack with extra settings for the stub and the workers.
    async fn start_with(
        stub_env: &[(&'static str, &str)],
        worker_env: &[(&'static str, &str)],
    ) -> anyhow::Result<Self> {
        let owned = |env: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
            env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
        };
        let redis = RedisServer::start().await?;
        let zipkin = ZipkinCollector::start().await?;
        let common = |mut extra: Vec<(&'static str, String)>| {
            extra.extend([
                ("REDIS_URL", redis.url()),
                ("OTEL_TRACES_EXPORTER", "zipkin".into()),
                ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", zipkin.endpoint()),
                ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
                ("LOG_FORMAT", "json".into()),
                ("RUST_LOG", "info".into()),
            ]);
            extra
        };
        let stub_port = free_port()?;
        let stub_url = format!("http://127.0.0.1:{stub_port}/");
        let stub = ServiceProcess::start(
            "weather-stub",
            project_binary("weather-stub")?.to_str().context("path")?,
            &common(
                [
                    vec![("STUB_LISTEN", format!("127.0.0.1:{stub_port}"))],
                    owned(stub_env),
                ]
                .concat(),
            ),
            &format!("{stub_url}healthz"),
        )
        .await?;
        let api_port = free_port()?;
        let api_url = format!("http://127.0.0.1:{api_port}");
        let api = ServiceProcess::start(
            "api",
            project_binary("api")?.to_str().context("path")?,
            &common(vec![("API_LISTEN", format!("127.0.0.1:{api_port}"))]),
            &format!("{api_url}/readyz"),
        )
        .await?;
        let mut workers = Vec::new();
        let mut worker_urls = Vec::new();
        for _ in 0..2 {
            let port = free_port()?;
            worker_urls.push(format!("http://127.0.0.1:{port}"));
            workers.push(
                ServiceProcess::start(
                    "worker",
                    project_binary("worker")?.to_str().context("path")?,
                    &common(
                        [
                            vec![
                                ("WORKER_LISTEN", format!("127.0.0.1:{port}")),
                                ("GEOCODING_BASE_URL", stub_url.clone()),
                                ("WEATHER_BASE_URL", stub_url.clone()),
                                ("JOB_RETRY_BACKOFF_MS", "100".into()),
                            ],
                            owned(worker_env),
                        ]
                        .concat(),
                    ),
                    &format!("http://127.0.0.1:{port}/healthz"),
                )
                .await?,
            );
        }
        Ok(Self {
            zipkin,
            api,
            workers,
            worker_urls,
            stub,
            api_url,
            http: reqwest::Client::new(),
            _redis: redis,
        })
    }

    /// Posts a job; answers the status and body.
    async fn post(&self, body: &str, headers: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}/v1/jobs", self.api_url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Enqueues a job that must be accepted; answers its id and trace id.
    async fn enqueue(
        &self,
        body: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(String, String)> {
        let (status, answer) = self.post(body, headers).await?;
        if status != 202 {
            bail!("job {body} was answered {status}: {answer}");
        }
        let field = |f: &str| answer[f].as_str().map(str::to_owned).context(f.to_owned());
        Ok((field("id")?, field("trace_id")?))
    }

    /// Waits until the job has finished; answers its status document.
    async fn wait_done(&self, id: &str) -> anyhow::Result<Value> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let doc: Value = self
                .http
                .get(format!("{}/v1/jobs/{id}", self.api_url))
                .send()
                .await?
                .json()
                .await?;
            if doc["status"] == "succeeded" || doc["status"] == "failed" {
                return Ok(doc);
            }
            if std::time::Instant::now() > deadline {
                bail!("job {id} not finished within {WAIT:?}: {doc}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the collector holds a span of each of these traces.
    async fn assert_traces_received(&self, trace_ids: &[String]) -> anyhow::Result<()> {
        for trace_id in trace_ids {
            self.zipkin
                .wait_for(
                    WAIT,
                    &format!("a span of exemplar trace {trace_id}"),
                    |spans| {
                        spans
                            .iter()
                            .find(|s| s["traceId"] == trace_id.as_str())
                            .cloned()
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// A `/metrics` page, as Prometheus asks for it (OpenMetrics).
    async fn scrape(&self, base: &str) -> anyhow::Result<String> {
        let res = self
            .http
            .get(format!("{base}/metrics"))
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            )
            .send()
            .await?;
        let ct = res.headers()["content-type"].to_str()?.to_owned();
        if !ct.starts_with("application/openmetrics-text") {
            bail!("{base}/metrics answered {ct}");
        }
        Ok(res.text().await?)
    }

    /// Waits until the trace holds every span a job leaves; answers them.
    async fn job_trace(&self, trace_id: &str, upstream_calls: usize) -> anyhow::Result<Vec<Value>> {
        let want_redis = if upstream_calls > 0 { 2 } else { 1 };
        self.zipkin
            .wait_for(WAIT, &format!("complete trace {trace_id}"), |spans| {
                let trace: Vec<Value> = spans
                    .iter()
                    .filter(|s| s["traceId"] == trace_id)
                    .cloned()
                    .collect();
                let count = |service: &str, kind: &str| {
                    trace
                        .iter()
                        .filter(|s| {
                            s["localEndpoint"]["serviceName"] == service && s["kind"] == kind
                        })
                        .count()
                };
                let complete = count("api", "SERVER") >= 1
                    && count("api", "PRODUCER") == 1
                    && count("worker", "CONSUMER") == 1
                    && count("worker", "CLIENT") == want_redis + upstream_calls
                    && count("weather-stub", "SERVER") == upstream_calls;
                complete.then_some(trace)
            })
            .await
    }
}

fn one<'a>(spans: &'a [Value], what: &str, pick: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {what}, found {}: {spans:#?}",
        found.len()
    );
    found[0]
}

fn service(s: &Value) -> &str {
    s["localEndpoint"]["serviceName"]
        .as_str()
        .unwrap_or_default()
}

/// Checks the tree of one job's trace (see TRACING-SPEC): the api SERVER
/// span under the caller's span, PRODUCER under it, the worker's CONSUMER
/// under the PRODUCER (and linked to it), Redis and HTTP CLIENT spans under
/// the CONSUMER, each HTTP call continued by a stub SERVER span.
fn assert_job_tree(spans: &[Value], job_id: &str, caller: Option<&str>, upstream: &[&str]) {
    for s in spans {
        assert!(!service(s).is_empty(), "span without a service name: {s}");
    }
    let server = one(spans, "api SERVER span", |s| {
        service(s) == "api" && s["kind"] == "SERVER" && s["name"] == "POST /v1/jobs"
    });
    match caller {
        Some(caller) => assert_eq!(server["parentId"], caller, "api span continues the caller"),
        None => assert!(server.get("parentId").is_none(), "a new root: {server}"),
    }
    assert_eq!(server["tags"]["http.response.status_code"], "202");
    assert_eq!(server["tags"]["http.route"], "/v1/jobs");

    let producer = one(spans, "PRODUCER span", |s| s["kind"] == "PRODUCER");
    assert_eq!(producer["name"], "send weather");
    assert_eq!(service(producer), "api");
    assert_eq!(producer["parentId"], server["id"]);
    assert_eq!(producer["tags"]["messaging.destination.name"], "weather");
    assert_eq!(producer["tags"]["messaging.message.id"], job_id);
    assert_eq!(producer["remoteEndpoint"]["serviceName"], "redis");

    let consumer = one(spans, "CONSUMER span", |s| s["kind"] == "CONSUMER");
    assert_eq!(consumer["name"], "process weather");
    assert_eq!(service(consumer), "worker");
    assert_eq!(
        consumer["parentId"], producer["id"],
        "worker resumes the producer's span"
    );
    assert_eq!(
        consumer["tags"]["otel.link.0"],
        format!(
            "{}-{}",
            producer["traceId"].as_str().unwrap_or_default(),
            producer["id"].as_str().unwrap_or_default()
        ),
        "and links to it"
    );
    assert_eq!(consumer["tags"]["messaging.message.id"], job_id);
    assert_eq!(consumer["tags"]["job.attempt"], "1");
    assert!(consumer["tags"]["job.queue_wait_ms"].is_string());

    let cache_get = one(spans, "cache GET span", |s| {
        s["kind"] == "CLIENT" && s["name"] == "GET" && s["tags"]["db.system.name"] == "redis"
    });
    assert_eq!(cache_get["parentId"], consumer["id"]);
    assert_eq!(cache_get["remoteEndpoint"]["serviceName"], "redis");
    assert_eq!(cache_get["tags"]["db.query.text"], "GET ?");
    let hit = if upstream.is_empty() { "true" } else { "false" };
    assert_eq!(cache_get["tags"]["weather.cache.hit"], hit);

    let http_calls: Vec<&Value> = spans
        .iter()
        .filter(|s| s["kind"] == "CLIENT" && s["tags"]["http.request.method"] == "GET")
        .collect();
    assert_eq!(
        http_calls.len(),
        upstream.len(),
        "weather-service calls: {http_calls:#?}"
    );
    let stub_spans: Vec<&Value> = spans
        .iter()
        .filter(|s| service(s) == "weather-stub")
        .collect();
    for route in upstream {
        let stub = one(spans, route, |s| {
            service(s) == "weather-stub" && s["name"] == *route
        });
        let client = one(spans, "the call the stub answered", |s| {
            s["id"] == stub["parentId"]
        });
        assert_eq!(client["kind"], "CLIENT");
        assert_eq!(client["parentId"], consumer["id"]);
        assert_eq!(client["remoteEndpoint"]["serviceName"], "weather-service");
        assert_eq!(client["tags"]["http.response.status_code"], "200");
    }
    assert_eq!(stub_spans.len(), upstream.len());
    if !upstream.is_empty() {
        let set = one(spans, "cache SET span", |s| s["name"] == "SET");
        assert_eq!(set["parentId"], consumer["id"]);
        assert_eq!(set["tags"]["db.system.name"], "redis");
    }
}

const SEARCH_AND_FORECAST: &[&str] = &["GET /v1/search", "GET /v1/forecast"];

#[tokio::test]
async fn every_propagation_format_gives_one_connected_trace_across_the_queue() -> anyhow::Result<()>
{
    let stack = Stack::start().await?;
    let caller = "00f067aa0ba902b7";
    /// City, the trace id the caller sends, and the headers carrying it.
    type Case = (&'static str, &'static str, Vec<(&'static str, String)>);
    let cases: [Case; 3] = [
        (
            "Berlin",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            vec![(
                "traceparent",
                format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{caller}-01"),
            )],
        ),
        (
            "Oslo",
            "a3ce929d0e0e47364bf92f3577b34da6",
            vec![("b3", format!("a3ce929d0e0e47364bf92f3577b34da6-{caller}-1"))],
        ),
        (
            "Lima",
            "0e0e4736a3ce929d4bf92f3577b34da6",
            vec![
                ("X-B3-TraceId", "0e0e4736a3ce929d4bf92f3577b34da6".into()),
                ("X-B3-SpanId", caller.into()),
                ("X-B3-Sampled", "1".into()),
            ],
        ),
    ];
    for (city, trace, headers) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (id, trace_id) = stack
            .enqueue(&json!({ "city": city }).to_string(), &headers)
            .await?;
        assert_eq!(&trace_id, trace, "the api answers the caller's trace id");
        let done = stack.wait_done(&id).await?;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["result"]["source"], "upstream");
        assert_eq!(done["result"]["place"], *city);
        assert_eq!(done["trace_id"], *trace);
        let spans = stack.job_trace(trace, 2).await?;
        assert_job_tree(&spans, &id, Some(caller), SEARCH_AND_FORECAST);
    }

    // The same place again: a cache hit, and no weather-service spans.
    let again = "11112222333344445555666677778888";
    let (id, _) = stack
        .enqueue(
            r#"{"city": "berlin "}"#,
            &[("traceparent", &format!("00-{again}-{caller}-01"))],
        )
        .await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["result"]["source"], "cache", "{done}");
    let spans = stack.job_trace(again, 0).await?;
    assert_job_tree(&spans, &id, Some(caller), &[]);
    Ok(())
}

#[tokio::test]
async fn requests_without_or_with_malformed_trace_headers_still_cross_the_queue()
-> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Quito"}"#, &[]).await?;
    assert_eq!(trace.len(), 32);
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    let spans = stack.job_trace(&trace, 2).await?;
    assert_job_tree(&spans, &id, None, SEARCH_AND_FORECAST);

    let malformed = [
        (
            "00-xyz-00f067aa0ba902b7-01",
            r#"{"latitude": -33.9, "longitude": 18.4}"#,
        ),
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            r#"{"latitude": 64.1, "longitude": -21.9}"#,
        ),
    ];
    for (bad, place) in malformed {
        let (id, trace) = stack.enqueue(place, &[("traceparent", bad)]).await?;
        assert_ne!(trace, "00000000000000000000000000000000");
        stack.wait_done(&id).await?;
        let spans = stack.job_trace(&trace, 1).await?;
        assert_job_tree(&spans, &id, None, &["GET /v1/forecast"]);
    }
    Ok(())
}

#[tokio::test]
async fn a_job_from_an_unsampled_request_is_not_traced_in_the_worker() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let unsampled = "99998888777766665555444433332222";
    let (id, trace) = stack
        .enqueue(
            r#"{"city": "Cairo"}"#,
            &[(
                "traceparent",
                &format!("00-{unsampled}-00f067aa0ba902b7-00"),
            )],
        )
        .await?;
    assert_eq!(trace, unsampled, "the trace id is kept, sampled or not");
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    // A sampled job afterwards proves export works; by the time its spans
    // arrive, any from the unsampled job would have too.
    let (id, sampled) = stack.enqueue(r#"{"city": "Dakar"}"#, &[]).await?;
    stack.wait_done(&id).await?;
    stack.job_trace(&sampled, 2).await?;
    assert!(
        stack.zipkin.trace(unsampled).is_empty(),
        "spans of an unsampled trace were exported: {:#?}",
        stack.zipkin.trace(unsampled)
    );
    Ok(())
}

#[tokio::test]
async fn unknown_places_fail_at_once_and_bad_input_harms_nothing() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Nowhere Special"}"#, &[]).await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempts"], 1, "an unknown place is not retried");
    assert!(
        done["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown place"),
        "{done}"
    );
    let consumer = stack
        .zipkin
        .wait_for(WAIT, "failed CONSUMER span", |spans| {
            spans
                .iter()
                .find(|s| s["traceId"] == trace.as_str() && s["kind"] == "CONSUMER")
                .cloned()
        })
        .await?;
    assert_eq!(consumer["tags"]["otel.status_code"], "ERROR");
    assert_eq!(consumer["tags"]["error.type"], "unknown_place");

    for (body, status) in [
        ("{", 400),
        ("[]", 422),
        (r#"{"city": ""}"#, 422),
        (r#"{"latitude": 91, "longitude": 0}"#, 422),
        (r#"{"city": "Oslo", "units": "kelvin"}"#, 422),
    ] {
        let (got, problem) = stack.post(body, &[]).await?;
        assert_eq!(got, status, "{body}: {problem}");
        assert_eq!(problem["status"], status);
    }
    let huge = format!(r#"{{"city": "{}"}}"#, "x".repeat(100_000));
    assert_eq!(stack.post(&huge, &[]).await?.0, 413);
    let res = stack
        .http
        .get(format!("{}/v1/jobs/not-a-job", stack.api_url))
        .send()
        .await?;
    assert_eq!(res.status(), 404);

    assert!(stack.api.is_running(), "the api survived");
    assert!(stack.stub.is_running(), "the stub survived");
    for w in &mut stack.workers {
        assert!(w.is_running(), "every worker survived");
    }
    // And it still works.
    let (id, _) = stack
        .enqueue(r#"{"city": "Accra", "units": "imperial"}"#, &[])
        .await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["result"]["temperature_unit"], "°F", "{done}");
    Ok(())
}

#[tokio::test]
async fn each_retry_is_its_own_span_linked_to_the_attempt_before() -> anyhow::Result<()> {
    let stack = Stack::start_with(&[("STUB_FAIL_RATE", "1")], &[("JOB_MAX_ATTEMPTS", "3")]).await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Paris"}"#, &[]).await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempts"], 3);
    assert!(
        done["error"].as_str().unwrap_or_default().contains("503"),
        "{done}"
    );

    let attempts = stack
        .zipkin
        .wait_for(WAIT, "three CONSUMER spans", |spans| {
            let mut c: Vec<Value> = spans
                .iter()
                .filter(|s| s["traceId"] == trace.as_str() && s["kind"] == "CONSUMER")
                .cloned()
                .collect();
            c.sort_by_key(|s| {
                s["tags"]["job.attempt"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            });
            (c.len() == 3).then_some(c)
        })
        .await?;
    let producer = stack
        .zipkin
        .trace(&trace)
        .into_iter()
        .find(|s| s["kind"] == "PRODUCER")
        .context("producer span")?;
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["tags"]["job.attempt"], (i + 1).to_string());
        assert_eq!(
            attempt["parentId"], producer["id"],
            "every attempt hangs under the producer"
        );
        assert_eq!(attempt["tags"]["otel.status_code"], "ERROR");
        assert_eq!(attempt["tags"]["error.type"], "503");
        match i {
            0 => assert!(attempt["tags"].get("otel.link.1").is_none(), "{attempt}"),
            _ => assert_eq!(
                attempt["tags"]["otel.link.1"],
                format!(
                    "{trace}-{}",
                    attempts[i - 1]["id"].as_str().unwrap_or_default()
                ),
                "attempt {} links to attempt {i}",
                i + 1
            ),
        }
    }
    Ok(())
}

/// The sum of a metric's samples whose line contains every `filters` part.
fn sum(page: &str, metric: &str, filters: &[&str]) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| {
            let value = l.split(" # ").next()?;
            value.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

#[tokio::test]
async fn metrics_add_up_and_their_exemplars_lead_to_real_traces() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    // Riga first, finished before it is asked again: one cache hit.
    for city in ["Riga", "Tallinn", "Vilnius", "Riga", "Nowhere"] {
        let (id, _) = stack
            .enqueue(&json!({ "city": city }).to_string(), &[])
            .await?;
        stack.wait_done(&id).await?;
    }
    let api = stack.scrape(&stack.api_url).await?;
    assert_eq!(
        sum(
            &api,
            "messaging_client_sent_messages_total",
            &[r#"outcome="success""#]
        ),
        5.0,
        "{api}"
    );
    assert_eq!(
        sum(
            &api,
            "http_server_request_duration_seconds_count",
            &[r#"http_route="/v1/jobs""#, "202"]
        ),
        5.0
    );
    assert!(
        api.contains(r#"jobs_queue_depth{messaging_destination_name="weather"} 0"#),
        "{api}"
    );
    assert!(
        api.contains(r#"jobs_live_workers{messaging_destination_name="weather"} 2"#),
        "{api}"
    );
    assert!(
        api.contains(r#"jobs_failed{messaging_destination_name="weather"} 1"#),
        "{api}"
    );

    let mut pages = Vec::new();
    for url in &stack.worker_urls {
        pages.push(stack.scrape(url).await?);
    }
    let total =
        |metric: &str, filters: &[&str]| pages.iter().map(|p| sum(p, metric, filters)).sum::<f64>();
    assert_eq!(
        total(
            "messaging_client_consumed_messages_total",
            &[r#"outcome="success""#]
        ),
        4.0
    );
    assert_eq!(
        total(
            "messaging_client_consumed_messages_total",
            &[r#"error_type="unknown_place""#]
        ),
        1.0
    );
    assert_eq!(total("messaging_process_duration_seconds_count", &[]), 5.0);
    assert_eq!(total("jobs_queue_wait_duration_seconds_count", &[]), 5.0);
    assert_eq!(
        total("weather_cache_requests_total", &[r#"result="hit""#]),
        1.0,
        "Riga twice"
    );
    assert_eq!(
        total("weather_cache_requests_total", &[r#"result="miss""#]),
        4.0
    );
    assert!(
        total(
            "http_client_request_duration_seconds_count",
            &[r#"outcome="success""#]
        ) >= 6.0
    );

    // Every exemplar names a trace the collector received.
    let exemplars: Vec<String> = pages
        .iter()
        .chain([&api])
        .flat_map(|p| p.lines())
        .filter_map(|l| l.split(r#"# {trace_id=""#).nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    assert!(exemplars.len() >= 5, "too few exemplars: {exemplars:?}");
    stack.assert_traces_received(&exemplars).await?;
    Ok(())
}

/// The JSON log lines of a process that mention `job_id`.
fn job_log_lines(logs: &str, job_id: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["job.id"] == job_id)
        .collect()
}

#[tokio::test]
async fn the_json_logs_of_a_job_share_its_trace_id_across_api_and_worker() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let trace = "abcdef0123456789abcdef0123456789";
    let (id, _) = stack
        .enqueue(
            r#"{"city": "Lisbon"}"#,
            &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
        )
        .await?;
    stack.wait_done(&id).await?;

    let api_lines = job_log_lines(&stack.api.logs(), &id);
    let queued = api_lines
        .iter()
        .find(|l| l["message"] == "job queued")
        .with_context(|| {
            format!(
                "no 'job queued' line for {id} in the api logs:\n{}",
                stack.api.logs()
            )
        })?;
    assert_eq!(queued["trace_id"], trace);
    assert_eq!(queued["level"], "INFO");
    assert!(
        queued["timestamp"].is_string()
            && queued["target"] == "api"
            && queued["span_id"].is_string()
    );

    let worker_lines: Vec<Value> = stack
        .workers
        .iter()
        .flat_map(|w| job_log_lines(&w.logs(), &id))
        .collect();
    let done = worker_lines
        .iter()
        .find(|l| l["message"] == "weather job done")
        .context("no 'weather job done' line for the job in the workers' logs")?;
    assert_eq!(
        done["trace_id"], trace,
        "api and worker lines share the trace id"
    );
    assert_ne!(done["span_id"], queued["span_id"]);
    Ok(())
}

/// Answers a PromQL query's single value, or None while there is none.
async fn prom_value(
    http: &reqwest::Client,
    prom: &str,
    query: &str,
) -> anyhow::Result<Option<f64>> {
    let res: Value = http
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await?
        .json()
        .await?;
    let value = res["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok());
    Ok(value)
}

#[tokio::test]
async fn prometheus_scrapes_counters_histograms_and_exemplars_that_lead_to_traces()
-> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("e2e-prometheus-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let target = |url: &str| format!("\"{}\"", url.trim_start_matches("http://"));
    let workers: Vec<String> = stack.worker_urls.iter().map(|u| target(u)).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: api\n    static_configs:\n      - targets: [{}]\n  - job_name: worker\n    static_configs:\n      - targets: [{}]\n",
        target(&stack.api_url),
        workers.join(", ")
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config)?;
    let prom = format!("http://127.0.0.1:{port}");
    let prometheus = ServiceProcess::start_with_args(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--enable-feature=exemplar-storage".into(),
        ],
        &[],
        &format!("{prom}/-/ready"),
    )
    .await
    .context("prometheus (Debian: apt-get install -y prometheus)")?;

    let cities = ["Bern", "Sofia", "Minsk", "Bern", "Nowhere"];
    for city in cities {
        let (id, _) = stack
            .enqueue(&json!({ "city": city }).to_string(), &[])
            .await?;
        stack.wait_done(&id).await?;
    }
    let jobs = cities.len() as f64;
    let queries = [
        ("sum(messaging_client_sent_messages_total)", jobs),
        ("sum(messaging_client_consumed_messages_total)", jobs),
        (
            r#"sum(messaging_client_consumed_messages_total{outcome="failure", error_type="unknown_place"})"#,
            1.0,
        ),
        ("sum(messaging_process_duration_seconds_count)", jobs),
        ("sum(jobs_queue_wait_duration_seconds_count)", jobs),
        (r#"sum(weather_cache_requests_total{result="hit"})"#, 1.0),
        (
            r#"max(jobs_live_workers{messaging_destination_name="weather"})"#,
            2.0,
        ),
    ];
    let deadline = std::time::Instant::now() + WAIT;
    for (query, want) in queries {
        loop {
            let got = prom_value(&stack.http, &prom, query).await?;
            if got == Some(want) {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!("Prometheus answers {got:?} to {query}, not {want}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Exemplars, through Prometheus's own API.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut trace_ids: Vec<String> = Vec::new();
    for query in [
        "messaging_process_duration_seconds_bucket",
        "http_server_request_duration_seconds_bucket",
    ] {
        let res: Value = stack
            .http
            .get(format!("{prom}/api/v1/query_exemplars"))
            .query(&[
                ("query", query),
                ("start", &(now - 300).to_string()),
                ("end", &(now + 60).to_string()),
            ])
            .send()
            .await?
            .json()
            .await?;
        let found: Vec<String> = res["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_owned))
            .collect();
        assert!(!found.is_empty(), "no exemplars for {query}: {res}");
        trace_ids.extend(found);
    }
    stack.assert_traces_received(&trace_ids).await?;
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

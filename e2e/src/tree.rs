//! The tree one job's trace must form (docs/tracing.md, "What a trace looks
//! like").

use serde_json::Value;

/// A span's tag `key`, empty when it has none.
pub fn tag<'a>(span: &'a Value, key: &str) -> &'a str {
    span["tags"][key].as_str().unwrap_or_default()
}

/// The one span of `spans` that `pick` picks; fails unless exactly one.
pub fn one<'a>(spans: &'a [Value], what: &str, pick: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {what}, found {}: {spans:#?}",
        found.len()
    );
    found[0]
}

/// The service a span belongs to.
pub fn service(s: &Value) -> &str {
    s["localEndpoint"]["serviceName"]
        .as_str()
        .unwrap_or_default()
}

/// Checks the tree of one job's trace (docs/tracing.md): the api SERVER
/// span under the caller's span, PRODUCER under it, the worker's CONSUMER
/// under the PRODUCER (and linked to it), Redis and HTTP CLIENT spans under
/// the CONSUMER, each HTTP call continued by a stub SERVER span.
pub fn assert_job_tree(spans: &[Value], job_id: &str, caller: Option<&str>, upstream: &[&str]) {
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
    assert_eq!(
        consumer["remoteEndpoint"]["serviceName"], "redis",
        "the broker, for Zipkin's redis → worker link"
    );
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

/// The weather-service calls of a job for a place name.
pub const SEARCH_AND_FORECAST: &[&str] = &["GET /v1/search", "GET /v1/forecast"];

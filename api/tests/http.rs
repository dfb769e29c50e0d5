//! The api's routes against a real Redis (the app is driven in-process).

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use redis_job_queue::RedisQueue;
use serde_json::Value;
use telemetry::propagation::Propagation;
use testkit::RedisServer;
use tower::ServiceExt;
use weather_jobs::settings::QueueArgs;

struct TestApi {
    redis: RedisServer,
    queue: RedisQueue,
    app: Router,
}

/// Spans get trace ids as in the binaries (which always install the
/// OpenTelemetry layer), here without exporting them.
fn install_tracing() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("api-tests"));
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
    });
}

async fn spawn_api() -> TestApi {
    spawn_api_with(api::ApiKeys::default()).await
}

async fn spawn_api_with(keys: api::ApiKeys) -> TestApi {
    use clap::Parser;
    install_tracing();
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        queue: QueueArgs,
    }
    let redis = RedisServer::start().await.expect("redis-server");
    let args = Args::parse_from(["test", "--redis-url", &redis.url()]);
    let queue = args.queue.connect().await.expect("queue");
    let state = api::AppState::new(queue.clone(), Propagation::default()).with_api_keys(keys);
    let app = api::app(state);
    TestApi { redis, queue, app }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    headers: HeaderMap,
    body: Value,
}

impl TestApi {
    async fn send(&self, req: Request<Body>) -> Answer {
        let res = self.app.clone().oneshot(req).await.expect("answer");
        let status = res.status();
        let header = |name| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(header::CONTENT_TYPE).unwrap_or_default();
        let location = header(header::LOCATION);
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            content_type,
            location,
            headers,
            body,
        }
    }

    async fn post_raw(&self, content_type: Option<&str>, body: impl Into<Body>) -> Answer {
        let mut req = Request::post("/v1/jobs");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        self.send(req.body(body.into()).expect("request")).await
    }

    async fn post(&self, body: &str) -> Answer {
        self.post_raw(Some("application/json"), body.to_owned())
            .await
    }

    /// Posts `body` as JSON with extra headers (credentials).
    async fn post_with(&self, body: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::post("/v1/jobs").header(header::CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::from(body.to_owned())).expect("request"))
            .await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).expect("request"))
            .await
    }

    async fn enqueued(&self) -> u64 {
        self.queue.stats().await.expect("stats").enqueued_total
    }
}

fn assert_problem(a: &Answer, status: StatusCode, mentions: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.content_type, "application/problem+json");
    assert_eq!(a.body["status"], status.as_u16());
    assert!(a.body["title"].is_string());
    let detail = a.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(mentions),
        "detail {detail:?} should mention {mentions:?}"
    );
}

#[tokio::test]
async fn a_valid_job_is_accepted_and_readable() {
    let api = spawn_api().await;
    let a = api.post(r#"{"city": "Berlin"}"#).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let id = a.body["id"].as_str().expect("id").to_owned();
    assert_eq!(a.body["status"], "queued");
    let trace_id = a.body["trace_id"].as_str().expect("trace id");
    assert_eq!(trace_id.len(), 32);
    assert!(trace_id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        a.location.as_deref(),
        Some(format!("/v1/jobs/{id}").as_str())
    );

    let s = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.body["status"], "queued");
    assert_eq!(s.body["attempts"], 0);
    assert_eq!(
        s.body["trace_id"], trace_id,
        "the job carries the request's trace"
    );
    assert_eq!(s.body["job"]["place"]["city"], "Berlin");
    assert!(s.body.get("result").is_none());
    assert_eq!(api.enqueued().await, 1);

    let c = api
        .post(r#"{"latitude": 52.52, "longitude": 13.41, "units": "imperial"}"#)
        .await;
    assert_eq!(c.status, StatusCode::ACCEPTED, "{}", c.body);
    assert_eq!(api.enqueued().await, 2);
}

#[tokio::test]
async fn bad_jobs_are_refused_with_problems_and_nothing_is_enqueued() {
    let api = spawn_api().await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: Vec<(&str, StatusCode, &str)> = vec![
        ("{", StatusCode::BAD_REQUEST, "not valid JSON"),
        ("", StatusCode::BAD_REQUEST, "not valid JSON"),
        (
            "{\"city\": \"Berlin\"} trailing",
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        ("[]", unprocessable, "JSON object"),
        ("null", unprocessable, "JSON object"),
        ("{}", unprocessable, "missing place"),
        (r#"{"city": ""}"#, unprocessable, "empty"),
        (r#"{"city": 42}"#, unprocessable, "must be a string"),
        (r#"{"city": null}"#, unprocessable, "missing place"),
        (
            r#"{"latitude": 100, "longitude": 0}"#,
            unprocessable,
            "between -90 and 90",
        ),
        (
            r#"{"latitude": 0, "longitude": 1e400}"#,
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            r#"{"latitude": "north", "longitude": 0}"#,
            unprocessable,
            "must be a number",
        ),
        (r#"{"latitude": 1}"#, unprocessable, "longitude"),
        (
            r#"{"city": "Oslo", "units": "kelvin"}"#,
            unprocessable,
            "imperial",
        ),
        (
            r#"{"city": "Oslo", "extra": true}"#,
            unprocessable,
            "unknown field",
        ),
    ];
    for (body, status, mentions) in cases {
        let a = api.post(body).await;
        assert_problem(&a, status, mentions);
    }
    let a = api.post_raw(None, r#"{"city": "Berlin"}"#).await;
    assert_problem(&a, StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type");
    let a = api
        .post_raw(Some("text/plain"), r#"{"city": "Berlin"}"#)
        .await;
    assert_problem(&a, StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json");
    let huge = format!(r#"{{"city": "{}"}}"#, "x".repeat(70 * 1024));
    let a = api.post(&huge).await;
    assert_problem(&a, StatusCode::PAYLOAD_TOO_LARGE, "65536 bytes");
    assert_eq!(api.enqueued().await, 0, "no bad job may be enqueued");
}

#[tokio::test]
async fn unknown_jobs_routes_and_methods_are_4xx() {
    let api = spawn_api().await;
    for id in [
        "0190b1a2-0000-7000-8000-000000000000",
        "no-such-job",
        "..%2F..%2Fetc",
        "%00",
    ] {
        let a = api.get(&format!("/v1/jobs/{id}")).await;
        assert_problem(&a, StatusCode::NOT_FOUND, "no job with id");
    }
    let a = api.get(&format!("/v1/jobs/{}", "a".repeat(300))).await;
    assert_problem(&a, StatusCode::NOT_FOUND, "no job");
    let a = api.get("/v2/everything").await;
    assert_problem(&a, StatusCode::NOT_FOUND, "no such endpoint");
    let a = api
        .send(
            Request::delete("/v1/jobs")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_problem(&a, StatusCode::METHOD_NOT_ALLOWED, "Allow header");
    let res = api
        .app
        .clone()
        .oneshot(
            Request::put("/v1/jobs/x")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()[header::ALLOW], "GET,HEAD,DELETE");
    let a = api.get("/v1/jobs/%FF").await;
    assert_problem(&a, StatusCode::NOT_FOUND, "no job");
    assert_eq!(api.enqueued().await, 0);
}

#[tokio::test]
async fn health_and_readiness_follow_redis() {
    let api = spawn_api().await;
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(api.get("/readyz").await.status, StatusCode::OK);
    let TestApi { redis, queue, app } = api;
    drop(redis);
    let api = TestApi {
        redis: RedisServer::start().await.expect("another redis"),
        queue,
        app,
    };
    let a = api.get("/readyz").await;
    assert_problem(&a, StatusCode::SERVICE_UNAVAILABLE, "Redis");
    assert_eq!(
        api.get("/healthz").await.status,
        StatusCode::OK,
        "alive, just not ready"
    );
    let a = api.post(r#"{"city": "Berlin"}"#).await;
    assert_problem(&a, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let detail = a.body["detail"].as_str().unwrap_or_default().to_owned();
    assert!(
        !detail.contains("redis:") && !detail.to_lowercase().contains("connection"),
        "Redis's own error text stays in the logs: {detail:?}"
    );
    let a = api.get("/readyz").await;
    let detail = a.body["detail"].as_str().unwrap_or_default().to_owned();
    assert!(!detail.contains("redis:"), "{detail:?}");
}

fn assert_refused(a: &Answer, mentions: &str, secret: &str) {
    assert_problem(a, StatusCode::UNAUTHORIZED, mentions);
    assert_eq!(
        a.headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert!(
        !a.body.to_string().contains(secret),
        "a refusal never echoes the key sent: {}",
        a.body
    );
}

#[tokio::test]
async fn with_api_keys_only_key_holders_enqueue_and_anyone_reads() {
    let keys = api::ApiKeys::new(["key-alpha-7f3a9c", "key-beta-51d2e8"]).expect("keys");
    let api = spawn_api_with(keys).await;
    let job = r#"{"city": "Berlin"}"#;

    let a = api.post(job).await;
    assert_refused(&a, "needs an API key", "key-alpha");
    for wrong in [
        &[("authorization", "Bearer guessed-key-0042")][..],
        &[("x-api-key", "guessed-key-0042")],
        &[("authorization", "Bearer key-alpha-7f3a9")],
        &[("authorization", "Basic guessed-key-0042")],
        &[("x-api-key", "key-beta-51d2e8x")],
    ] {
        let a = api.post_with(job, wrong).await;
        assert_refused(&a, "not valid", "guessed-key-0042");
    }
    let a = api
        .post_with("not json", &[("x-api-key", "guessed-key-0042")])
        .await;
    assert_refused(&a, "not valid", "guessed-key-0042");
    assert_eq!(api.enqueued().await, 0, "nothing refused is enqueued");

    let a = api
        .post_with(job, &[("authorization", "Bearer key-alpha-7f3a9c")])
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let b = api
        .post_with(job, &[("x-api-key", "key-beta-51d2e8")])
        .await;
    assert_eq!(b.status, StatusCode::ACCEPTED, "{}", b.body);
    let c = api
        .post_with(
            job,
            &[
                ("authorization", "Bearer guessed-key-0042"),
                ("x-api-key", "key-beta-51d2e8"),
            ],
        )
        .await;
    assert_eq!(
        c.status,
        StatusCode::ACCEPTED,
        "either header may hold the key"
    );
    assert_eq!(api.enqueued().await, 3);

    let id = a.body["id"].as_str().expect("id");
    let s = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(s.status, StatusCode::OK, "reads need no key: {}", s.body);
    assert_eq!(api.get("/readyz").await.status, StatusCode::OK);

    let delete = |key: Option<&str>| {
        let mut req = Request::delete("/v1/jobs");
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        req.body(Body::empty()).expect("request")
    };
    let a = api.send(delete(None)).await;
    assert_refused(&a, "needs an API key", "key-alpha");
    let a = api.send(delete(Some("key-alpha-7f3a9c"))).await;
    assert_problem(&a, StatusCode::METHOD_NOT_ALLOWED, "Allow header");
}

#[tokio::test]
async fn without_api_keys_anyone_enqueues() {
    let api = spawn_api().await;
    let a = api
        .post_with(
            r#"{"city": "Oslo"}"#,
            &[("authorization", "Bearer anything")],
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    assert_eq!(
        api.post(r#"{"city": "Oslo"}"#).await.status,
        StatusCode::ACCEPTED
    );
}

/// The operations the api serves, as `METHOD /path` (OpenAPI templates).
const OPERATIONS: &[&str] = &[
    "POST /v1/jobs",
    "GET /v1/jobs",
    "POST /v1/jobs/batch",
    "POST /v1/jobs/retry",
    "POST /v1/jobs/{id}/retry",
    "GET /v1/jobs/count",
    "POST /v1/jobs/bulk",
    "GET /v1/jobs/bulk/{id}",
    "POST /v1/jobs/bulk/{id}/stop",
    "GET /v1/jobs/{id}",
    "DELETE /v1/jobs/{id}",
    "GET /v1/batches/{id}",
    "GET /v1/queues/{name}",
    "POST /v1/queues/{name}/pause",
    "POST /v1/queues/{name}/resume",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /docs",
];

/// `value`, or what its `$ref` points at in `doc`.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or(&Value::Null),
        None => value,
    }
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_describes_every_route() {
    let api = spawn_api().await;
    let a = api.get("/openapi.json").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type, "application/json");
    let doc = a.body;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "OpenAPI {version:?}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    let mut listed = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            listed.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    listed.sort();
    let mut want: Vec<String> = OPERATIONS.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(listed, want, "every route, and nothing else");

    // Each described operation is really routed (a 404 here would be the
    // "no such endpoint" fallback, a 405 a wrong method).
    for op in OPERATIONS {
        let (method, path) = op.split_once(' ').expect("METHOD /path");
        let uri = path
            .replace("{id}", "no-such-job")
            .replace("{name}", "no-such-queue");
        let req = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .expect("request");
        let a = api.send(req).await;
        let detail = a.body["detail"].as_str().unwrap_or_default();
        assert!(
            a.status != StatusCode::METHOD_NOT_ALLOWED && !detail.contains("no such endpoint"),
            "{op} is described but not routed: {} {}",
            a.status,
            a.body
        );
    }

    // Every error answer is a problem, with the Problem schema.
    let problem = &doc["components"]["schemas"]["Problem"];
    let mut required: Vec<&str> = problem["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["detail", "status", "title", "type"]);
    let mut errors = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            for (status, response) in op["responses"].as_object().expect("responses") {
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                errors.insert(status.clone());
                let response = resolve(&doc, response);
                let content = response["content"].as_object().expect("content");
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    ["application/problem+json"],
                    "{method} {path} {status}"
                );
                assert_eq!(
                    content["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem"
                );
            }
        }
    }
    assert_eq!(
        errors.into_iter().collect::<Vec<_>>(),
        [
            "400", "401", "404", "409", "413", "415", "422", "500", "503"
        ]
    );
    let responses = &doc["components"]["responses"];
    assert_eq!(
        responses["MethodNotAllowed"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem",
        "405s happen on any path, so they are described once"
    );

    // Writes need a key; the key schemes are described.
    let post = &doc["paths"]["/v1/jobs"]["post"];
    assert_eq!(
        post["security"],
        serde_json::json!([{ "bearer": [] }, { "api_key": [] }])
    );
    assert!(post["responses"]["401"].is_object());
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    assert!(
        doc["paths"]["/v1/jobs/{id}"]["get"]["security"].is_null(),
        "reads need no key"
    );
}

#[tokio::test]
async fn the_docs_page_loads_nothing_from_elsewhere() {
    let api = spawn_api().await;
    let res = api
        .app
        .clone()
        .oneshot(Request::get("/docs").body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    assert_eq!(res.status(), StatusCode::OK);
    let headers = res.headers().clone();
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|ct| ct.starts_with("text/html"))
    );
    let csp = headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("CSP");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let html = String::from_utf8(bytes.to_vec()).expect("UTF-8");

    assert!(
        html.contains(r#""openapi":"3.1.0""#),
        "the document is embedded"
    );
    let lower = html.to_lowercase();
    for tag in ["<script", "<link", "<img", "<iframe"] {
        for (at, _) in lower.match_indices(tag) {
            let end = lower[at..].find('>').map_or(lower.len(), |e| at + e);
            let opening = &lower[at..end];
            assert!(
                !opening.contains("src=") && !opening.contains("href="),
                "the page loads {opening:?}"
            );
        }
    }
    // Outside the embedded document (whose texts may name sites), the page
    // names no address and imports nothing.
    let spec_start = lower
        .find(r#"<script type="application/json" id="spec">"#)
        .expect("the embedded document");
    let spec_end = spec_start + lower[spec_start..].find("</script>").expect("its end");
    let page = format!("{}{}", &lower[..spec_start], &lower[spec_end..]);
    for remote in [
        "http://", "https://", "url(", "@import", "import(", "fetch(",
    ] {
        assert!(!page.contains(remote), "the page mentions {remote:?}");
    }
}

impl TestApi {
    async fn delete(&self, uri: &str) -> Answer {
        self.send(Request::delete(uri).body(Body::empty()).expect("request"))
            .await
    }
}

#[tokio::test]
async fn a_delayed_job_is_scheduled_and_delays_past_the_limit_are_refused() {
    let api = spawn_api().await;
    let a = api.post(r#"{"city": "Oslo", "delay_secs": 60}"#).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    assert_eq!(a.body["status"], "scheduled");
    let id = a.body["id"].as_str().expect("id");
    let s = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(s.body["status"], "scheduled", "{}", s.body);
    let run_at = s.body["run_at"].as_str().expect("run_at");
    let enqueued = s.body["enqueued_at"].as_str().expect("enqueued_at");
    let secs = |t: &str| {
        humantime::parse_rfc3339(t)
            .expect("rfc3339")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
    };
    let waits = secs(run_at) - secs(enqueued);
    assert!(
        (59.9..=60.1).contains(&waits),
        "runs {waits} s after the push"
    );
    assert_eq!(api.queue.stats().await.expect("stats").delayed, 1);

    let at = api
        .post(r#"{"city": "Oslo", "run_at": "2000-01-01T00:00:00Z"}"#)
        .await;
    assert_eq!(at.status, StatusCode::ACCEPTED, "{}", at.body);
    assert_eq!(at.body["status"], "queued", "a past time runs now");

    for (body, mentions) in [
        (
            r#"{"city": "Oslo", "delay_secs": 2592001}"#,
            "at most 2592000",
        ),
        (
            r#"{"city": "Oslo", "delay_secs": 1e300}"#,
            "at most 2592000",
        ),
        (
            r#"{"city": "Oslo", "run_at": "3000-01-01T00:00:00Z"}"#,
            "at most",
        ),
        (r#"{"city": "Oslo", "run_at": "soon"}"#, "RFC 3339"),
        (
            r#"{"city": "Oslo", "trace": "both"}"#,
            "\"parent\" or \"link\"",
        ),
    ] {
        assert_problem(
            &api.post(body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            mentions,
        );
    }
    assert_eq!(api.enqueued().await, 2);
}

#[tokio::test]
async fn an_idempotency_key_makes_one_job_and_refuses_another_body() {
    let api = spawn_api().await;
    let key = [("Idempotency-Key", "order-7f3a")];
    let first = api.post_with(r#"{"city": "Lima"}"#, &key).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(first.body["repeat"], false);
    let again = api.post_with(r#"{"city": "Lima"}"#, &key).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["repeat"], true);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(again.body["status"], "queued");
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(again.location, first.location);

    let other = api.post_with(r#"{"city": "Cusco"}"#, &key).await;
    assert_problem(
        &other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "different request body",
    );
    let bad = api
        .post_with(r#"{"city": "Lima"}"#, &[("Idempotency-Key", "two words")])
        .await;
    assert_problem(&bad, StatusCode::BAD_REQUEST, "Idempotency-Key");
    // Without a key, the same body is a new job.
    let fresh = api.post(r#"{"city": "Lima"}"#).await;
    assert_eq!(fresh.status, StatusCode::ACCEPTED);
    assert_ne!(fresh.body["id"], first.body["id"]);
    assert_eq!(api.enqueued().await, 2);
}

#[tokio::test]
async fn fifty_concurrent_posts_with_one_key_make_one_job() {
    let api = spawn_api().await;
    // All in flight at once: they meet in the same group-committed push.
    let posts =
        (0..50).map(|_| api.post_with(r#"{"city": "Quito"}"#, &[("Idempotency-Key", "burst-1")]));
    let answers = futures::future::join_all(posts).await;
    let mut ids = std::collections::BTreeSet::new();
    let mut created = 0;
    for a in answers {
        assert!(
            a.status == StatusCode::ACCEPTED || a.status == StatusCode::OK,
            "{} {}",
            a.status,
            a.body
        );
        created += usize::from(a.status == StatusCode::ACCEPTED);
        ids.insert(a.body["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(created, 1, "exactly one request made the job");
    assert_eq!(ids.len(), 1, "every answer names it: {ids:?}");
    assert_eq!(api.enqueued().await, 1);
}

#[tokio::test]
async fn scheduled_and_queued_jobs_cancel_and_finished_ones_conflict() {
    let api = spawn_api().await;
    for body in [
        r#"{"city": "Rome", "delay_secs": 600}"#,
        r#"{"city": "Rome"}"#,
    ] {
        let a = api.post(body).await;
        let id = a.body["id"].as_str().expect("id").to_owned();
        let c = api.delete(&format!("/v1/jobs/{id}")).await;
        assert_eq!(c.status, StatusCode::OK, "{}", c.body);
        assert_eq!(c.body["status"], "cancelled");
        assert!(c.body["finished_at"].is_string());
        let again = api.delete(&format!("/v1/jobs/{id}")).await;
        assert_problem(&again, StatusCode::CONFLICT, "is cancelled");
    }
    assert_eq!(api.queue.stats().await.expect("stats").delayed, 0);
    assert_problem(
        &api.delete("/v1/jobs/no-such-job").await,
        StatusCode::NOT_FOUND,
        "no job",
    );
    assert_problem(
        &api.delete("/v1/jobs/%FF").await,
        StatusCode::NOT_FOUND,
        "no job",
    );
}

impl TestApi {
    async fn post_to(&self, uri: &str, body: &str) -> Answer {
        self.send(
            Request::post(uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_owned()))
                .expect("request"),
        )
        .await
    }
}

#[tokio::test]
async fn a_batch_enqueues_its_valid_jobs_and_says_why_the_others_were_refused() {
    let api = spawn_api().await;
    let a = api
        .post_to(
            "/v1/jobs/batch",
            r#"{"jobs": [{"city": "Oslo"}, {"city": ""}, {"city": "Bergen", "delay_secs": 60, "trace": "parent"}]}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    assert_eq!(
        (a.body["accepted"].as_u64(), a.body["refused"].as_u64()),
        (Some(2), Some(1))
    );
    let results = a.body["results"].as_array().expect("results");
    assert_eq!(results[0]["status"], "queued");
    assert!(results[1]["id"].is_null());
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("empty"),
        "{}",
        results[1]
    );
    assert_eq!(results[2]["status"], "scheduled");
    assert_eq!(a.body["trace_id"].as_str().map(str::len), Some(32));
    assert_eq!(api.enqueued().await, 2);

    // The batch reads back together: its jobs in order, counted by status.
    let batch_id = a.body["batch_id"].as_str().expect("batch_id");
    let batch = api.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(batch.status, StatusCode::OK, "{}", batch.body);
    let ids: Vec<&str> = batch.body["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [&results[0]["id"], &results[2]["id"]].map(|v| v.as_str().expect("id"))
    );
    assert_eq!(batch.body["counts"]["queued"], 1, "{}", batch.body);
    assert_eq!(batch.body["counts"]["scheduled"], 1, "{}", batch.body);
    assert_eq!(batch.body["jobs"][0]["batch_id"], batch_id);
    let job = api.get(&format!("/v1/jobs/{}", ids[1])).await;
    assert_eq!(job.body["batch_id"], batch_id, "{}", job.body);
    assert_eq!(job.body["priority"], "normal", "{}", job.body);
    for unknown in [
        "/v1/batches/0190a0a0-0000-7000-8000-000000000000",
        "/v1/batches/not%20an%20id",
    ] {
        assert_problem(&api.get(unknown).await, StatusCode::NOT_FOUND, "no batch");
    }

    // Each job's trace mode: link by default (fan-out), or its own.
    let mode = |i: usize| {
        let id = results[i]["id"].as_str().expect("id").to_owned();
        let queue = api.queue.clone();
        async move {
            let rec = queue.status(&id).await.expect("status").expect("record");
            rec.metadata.get("job.trace_mode").cloned()
        }
    };
    assert_eq!(mode(0).await.as_deref(), Some("link"));
    assert_eq!(mode(2).await.as_deref(), Some("parent"));

    for (body, mentions) in [
        (
            r#"{"jobs": [{"city": ""}]}"#,
            "no job of the batch is valid",
        ),
        (r#"{"jobs": []}"#, "1 to 1000 jobs"),
        (r#"[{"city": "Oslo"}]"#, "JSON object"),
    ] {
        assert_problem(
            &api.post_to("/v1/jobs/batch", body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            mentions,
        );
    }
    let many = format!(
        r#"{{"jobs": [{}]}}"#,
        vec![r#"{"city":"A"}"#; 1001].join(",")
    );
    assert_problem(
        &api.post_to("/v1/jobs/batch", &many).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not 1001",
    );
    assert_eq!(api.enqueued().await, 2);
}

#[tokio::test]
async fn listings_page_with_cursors_and_any_cursor_of_the_right_shape_is_answered() {
    let api = spawn_api().await;
    for city in ["Oslo", "Bergen", "Tromsø"] {
        let body = format!(r#"{{"city": "{city}"}}"#);
        assert_eq!(api.post(&body).await.status, StatusCode::ACCEPTED);
    }
    let first = api.get("/v1/jobs?status=queued&limit=2").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["jobs"].as_array().map(Vec::len), Some(2));
    let next = first.body["next_cursor"].as_str().expect("a next page");
    let rest = api
        .get(&format!("/v1/jobs?status=queued&limit=2&cursor={next}"))
        .await;
    assert_eq!(
        rest.body["jobs"].as_array().map(Vec::len),
        Some(1),
        "{}",
        rest.body
    );
    assert_eq!(rest.body["jobs"][0]["job"]["place"]["city"], "Tromsø");
    // Past every id (a number too large for one): an empty last page.
    for cursor in ["99999999999999999999:1", "1:99999999999999999999.high"] {
        let page = api
            .get(&format!("/v1/jobs?status=queued&cursor={cursor}"))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{cursor}: {}", page.body);
        assert!(page.body["next_cursor"].is_null(), "{}", page.body);
    }
    assert_problem(
        &api.get("/v1/jobs?status=queued&cursor=nonsense").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "cursor",
    );
}

#[tokio::test]
async fn a_delay_under_a_millisecond_is_none_and_the_answer_says_queued() {
    let api = spawn_api().await;
    let a = api.post(r#"{"city": "Oslo", "delay_secs": 0.0004}"#).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let id = a.body["id"].as_str().expect("id");
    let s = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(s.body["status"], "queued", "{}", s.body);
    assert_eq!(a.body["status"], s.body["status"], "the answer says so too");
}

/// The redis connection of the test's queue, for what a test does by hand.
async fn redis_keys(api: &TestApi, pattern: &str) -> Vec<String> {
    let mut conn = api.queue.connection();
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .expect("KEYS")
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_the_api_key_that_sent_it() {
    let keys = api::ApiKeys::new(["key-alpha-7f3a9c", "key-beta-51d2e8"]).expect("keys");
    let api = spawn_api_with(keys).await;
    let job = r#"{"city": "Berlin"}"#;
    let as_caller = |key: &'static str| [("x-api-key", key), ("Idempotency-Key", "order-1")];
    let a = api.post_with(job, &as_caller("key-alpha-7f3a9c")).await;
    let b = api.post_with(job, &as_caller("key-beta-51d2e8")).await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert_ne!(a.body["id"], b.body["id"], "two callers, two jobs");
    let again = api.post_with(job, &as_caller("key-alpha-7f3a9c")).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["id"], a.body["id"]);
    assert_eq!(api.enqueued().await, 2);
    let stored = redis_keys(&api, "*:idem:*").await;
    assert!(
        stored
            .iter()
            .all(|k| !k.contains("key-alpha") && !k.contains("key-beta")),
        "no api key is stored: {stored:?}"
    );
}

#[tokio::test]
async fn a_repeat_after_its_key_or_its_jobs_record_expired_says_what_is_known() {
    let api = spawn_api().await;
    let key = [("Idempotency-Key", "order-9")];
    let first = api.post_with(r#"{"city": "Lima"}"#, &key).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let id = first.body["id"].as_str().expect("id").to_owned();
    let mut conn = api.queue.connection();

    // The key's record expires (its 24 hours) while the job is kept.
    let idem = redis_keys(&api, "*:idem:*").await;
    assert_eq!(idem.len(), 1, "{idem:?}");
    let _: i64 = redis::cmd("DEL")
        .arg(&idem[0])
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let again = api.post_with(r#"{"city": "Lima"}"#, &key).await;
    assert_eq!(again.status, StatusCode::OK, "not a 500: {}", again.body);
    assert_eq!(
        (again.body["id"].as_str(), again.body["repeat"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    assert_eq!(again.body["status"], "queued");

    // The job's record expires (the retention) while the key is kept: its
    // outcome is not known, and the answer does not make one up.
    let key = [("Idempotency-Key", "order-10")];
    let first = api.post_with(r#"{"city": "Lima"}"#, &key).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let id = first.body["id"].as_str().expect("id").to_owned();
    let record = redis_keys(&api, &format!("*:job:{id}")).await;
    assert_eq!(record.len(), 1, "{record:?}");
    let _: i64 = redis::cmd("DEL")
        .arg(&record[0])
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let later = api.post_with(r#"{"city": "Lima"}"#, &key).await;
    assert_eq!(later.status, StatusCode::OK, "{}", later.body);
    assert_eq!(later.body["status"], "expired", "{}", later.body);
    assert_eq!(later.body["id"].as_str(), Some(id.as_str()));
    assert_eq!(api.enqueued().await, 2, "one job per key");
}

#[tokio::test]
async fn a_crafted_listing_cursor_is_a_4xx_or_a_page_never_a_5xx() {
    let api = spawn_api().await;
    for city in ["Oslo", "Bergen"] {
        let body = format!(r#"{{"city": "{city}"}}"#);
        assert_eq!(api.post(&body).await.status, StatusCode::ACCEPTED);
    }
    let cursors = [
        "1:a",
        "0:0",
        "1:",
        ":1",
        "-1:x",
        "1e5:x",
        "99999999999999999999:zz",
        "1:x@0",
        "1:x@7",
        "1:x@-1",
        "0:0@99999999999999999999",
        "1:1.high@0",
        "1:1.nope",
        "18446744073709551615:18446744073709551615",
        "1:%00",
        "1:inf",
        "nan:1",
        "1:-",
        "1:(",
        "1:[",
    ];
    for status in ["scheduled", "queued", "running", "succeeded", "failed"] {
        for cursor in cursors {
            let encoded: String = form_urlencoded_byte(cursor);
            let a = api
                .get(&format!("/v1/jobs?status={status}&cursor={encoded}"))
                .await;
            assert!(
                a.status == StatusCode::OK || a.status.is_client_error(),
                "{status} {cursor:?}: {} {}",
                a.status,
                a.body
            );
        }
    }
}

/// `s` percent-encoded for a query string.
fn form_urlencoded_byte(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn with_reads_closed_a_read_needs_a_key_and_probes_do_not() {
    let keys = api::ApiKeys::new(["key-alpha-7f3a9c"])
        .expect("keys")
        .for_reads();
    let api = spawn_api_with(keys).await;
    let a = api
        .post_with(r#"{"city": "Oslo"}"#, &[("x-api-key", "key-alpha-7f3a9c")])
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let id = a.body["id"].as_str().expect("id");
    for path in [
        format!("/v1/jobs/{id}"),
        "/v1/jobs?status=queued".to_owned(),
    ] {
        assert_eq!(
            api.get(&path).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        let req = Request::get(path.as_str())
            .header("x-api-key", "key-alpha-7f3a9c")
            .body(Body::empty())
            .expect("request");
        assert_eq!(api.send(req).await.status, StatusCode::OK, "{path}");
    }
    for open in ["/readyz", "/openapi.json"] {
        assert_eq!(api.get(open).await.status, StatusCode::OK, "{open}");
    }
}

#[tokio::test]
async fn the_queue_pauses_and_resumes_with_a_key_and_says_so() {
    let api = spawn_api_with(api::ApiKeys::new(["sk-ops-5e1f0a2b7c"]).expect("keys")).await;
    let state = api.get("/v1/queues/weather").await;
    assert_eq!(state.status, StatusCode::OK, "{}", state.body);
    assert_eq!(state.body["paused"], false);
    assert!(state.body.get("paused_at").is_none());

    // A write: refused without a key.
    let refused = api.post_to("/v1/queues/weather/pause", "").await;
    assert_problem(&refused, StatusCode::UNAUTHORIZED, "key");
    assert!(api.queue.paused_since().await.expect("state").is_none());

    let with_key = |uri: &str| {
        Request::post(uri)
            .header(header::AUTHORIZATION, "Bearer sk-ops-5e1f0a2b7c")
            .body(Body::empty())
            .expect("request")
    };
    let paused = api.send(with_key("/v1/queues/weather/pause")).await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.body);
    assert_eq!(paused.body["paused"], true);
    let at = paused.body["paused_at"]
        .as_str()
        .expect("paused_at")
        .to_owned();
    assert!(api.queue.stats().await.expect("stats").paused);
    // Pausing again keeps the first time; the state reads the same.
    let again = api.send(with_key("/v1/queues/weather/pause")).await;
    assert_eq!(again.body["paused_at"], at.as_str());
    assert_eq!(
        api.get("/v1/queues/weather").await.body["paused_at"],
        at.as_str()
    );
    // Jobs are still taken while paused: they wait.
    let job = api
        .post_with(r#"{"city": "Oslo"}"#, &[("x-api-key", "sk-ops-5e1f0a2b7c")])
        .await;
    assert_eq!(job.status, StatusCode::ACCEPTED, "{}", job.body);
    assert_eq!(job.body["status"], "queued");

    let resumed = api.send(with_key("/v1/queues/weather/resume")).await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
    assert_eq!(resumed.body["paused"], false);
    assert!(!api.queue.stats().await.expect("stats").paused);

    // Another queue's name is not this api's.
    assert_problem(
        &api.send(with_key("/v1/queues/other/pause")).await,
        StatusCode::NOT_FOUND,
        "no queue named",
    );
}

/// The ids of every page of search `query` (its `cursor` added as pages
/// go), in order.
async fn searched(api: &TestApi, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let page = api.get(&format!("/v1/jobs?{query}&cursor={cursor}")).await;
        assert_eq!(page.status, StatusCode::OK, "{query}: {}", page.body);
        for job in page.body["jobs"].as_array().expect("jobs") {
            ids.push(job["id"].as_str().expect("an id").to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = form_urlencoded_byte(next),
            None => return ids,
        }
    }
    panic!("{query}: the search did not end");
}

#[tokio::test]
async fn a_search_finds_jobs_by_place_box_priority_status_and_time_and_pages_both_ways() {
    let api = spawn_api().await;
    let mut ids = Vec::new();
    for body in [
        r#"{"city": "Oslo", "priority": "high"}"#,
        r#"{"city": "Bergen"}"#,
        r#"{"city": "berlin", "priority": "low"}"#,
        r#"{"latitude": 59.91, "longitude": 10.75}"#,
        r#"{"city": "Bergamo", "delay_secs": 3600}"#,
    ] {
        let a = api.post(body).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{body}: {}", a.body);
        ids.push(a.body["id"].as_str().expect("an id").to_owned());
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(searched(&api, "order=desc&limit=2").await, newest_first);
    assert_eq!(searched(&api, "order=asc&limit=1").await, ids);
    assert_eq!(
        searched(&api, "place=BER").await,
        [ids[4].clone(), ids[2].clone(), ids[1].clone()],
        "Bergamo, berlin, Bergen"
    );
    assert_eq!(
        searched(&api, "place=berl&priority=low").await,
        [ids[2].clone()]
    );
    assert_eq!(searched(&api, "bbox=10,59,11,60").await, [ids[3].clone()]);
    assert_eq!(searched(&api, "priority=high").await, [ids[0].clone()]);
    assert_eq!(
        searched(&api, "status=scheduled&place=b").await,
        [ids[4].clone()]
    );
    assert!(
        searched(&api, "queued_before=2000-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    assert_eq!(
        searched(&api, "queued_after=2000-01-01T00:00:00Z")
            .await
            .len(),
        5
    );
    // Cancelled, a job is found as such.
    assert_eq!(
        api.delete(&format!("/v1/jobs/{}", ids[4])).await.status,
        StatusCode::OK
    );
    assert_eq!(searched(&api, "status=cancelled").await, [ids[4].clone()]);
    let job = api.get("/v1/jobs?status=cancelled").await;
    assert_eq!(job.body["jobs"][0]["status"], "cancelled", "{}", job.body);
    // Bad filters are problems that name them.
    for (query, mentions) in [
        ("bbox=1,2,3", "bbox"),
        ("bbox=0,1,2,3,4", "bbox"),
        ("queued_after=yesterday", "RFC 3339"),
        ("priority=urgent", "priority"),
        ("order=sideways", "order"),
        ("place=", "place"),
        ("cursor=nonsense&order=asc", "cursor"),
    ] {
        let a = api.get(&format!("/v1/jobs?{query}")).await;
        assert!(
            a.status.is_client_error(),
            "{query}: {} {}",
            a.status,
            a.body
        );
        assert_problem(&a, a.status, mentions);
    }
    // Crafted cursors: a page or a 4xx, never a 5xx.
    for cursor in [
        "000000000000000:",
        "000000000000000:(",
        "000000000000000:[",
        "999999999999999:zz",
        "000000000000001:%00",
        "000000000000001:-",
        "000000000000001:+",
    ] {
        for order in ["asc", "desc"] {
            let a = api
                .get(&format!(
                    "/v1/jobs?order={order}&cursor={}",
                    form_urlencoded_byte(cursor)
                ))
                .await;
            assert!(
                a.status == StatusCode::OK || a.status.is_client_error(),
                "{order} {cursor:?}: {} {}",
                a.status,
                a.body
            );
        }
    }
}

/// Follows bulk action `id` until it ends; answers its last view.
async fn bulk_ended(api: &TestApi, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let a = api.get(&format!("/v1/jobs/bulk/{id}")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        if ["done", "stopped", "failed"].contains(&a.body["state"].as_str().unwrap_or_default()) {
            return a.body;
        }
        assert!(std::time::Instant::now() < deadline, "{}", a.body);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_bulk_action_counts_first_then_cancels_or_deletes_what_matches_and_says_how_far_it_got() {
    let api = spawn_api().await;
    let mut later = Vec::new();
    for n in 0..250 {
        let a = api
            .post(&format!(r#"{{"city": "Bergen {n}", "delay_secs": 3600}}"#))
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
        later.push(a.body["id"].as_str().expect("an id").to_owned());
    }
    let now = api.post(r#"{"city": "Oslo"}"#).await;
    let oslo = now.body["id"].as_str().expect("an id").to_owned();
    let count = api
        .get("/v1/jobs/count?place=bergen&status=scheduled")
        .await;
    assert_eq!(count.status, StatusCode::OK, "{}", count.body);
    assert_eq!(count.body["count"], 250);

    // Cancel every scheduled job in Bergen: 250, in three pages.
    let started = api
        .post_to(
            "/v1/jobs/bulk",
            r#"{"action": "cancel", "filter": {"place": "bergen", "status": "scheduled"}}"#,
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    assert_eq!(started.body["total"], 250);
    let id = started.body["id"].as_str().expect("an id").to_owned();
    let ended = bulk_ended(&api, &id).await;
    assert_eq!(ended["state"], "done", "{ended}");
    assert_eq!(
        (ended["done"].as_u64(), ended["skipped"].as_u64()),
        (Some(250), Some(0))
    );
    assert_eq!(ended["filter"]["place"], "bergen");
    for id in [&later[0], &later[249]] {
        assert_eq!(
            api.get(&format!("/v1/jobs/{id}")).await.body["status"],
            "cancelled"
        );
    }
    assert_eq!(
        api.get(&format!("/v1/jobs/{oslo}")).await.body["status"],
        "queued"
    );

    // Delete every job: the cancelled ones go, the queued one is skipped.
    let started = api
        .post_to("/v1/jobs/bulk", r#"{"action": "delete"}"#)
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let ended = bulk_ended(&api, started.body["id"].as_str().expect("an id")).await;
    assert_eq!(
        (ended["done"].as_u64(), ended["skipped"].as_u64()),
        (Some(250), Some(1)),
        "{ended}"
    );
    assert_eq!(
        api.get(&format!("/v1/jobs/{}", later[7])).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.get("/v1/jobs/count").await.body["count"], 1);

    // Stopping an ended action leaves it as it was; unknown ones are 404.
    let stopped = api.post_to(&format!("/v1/jobs/bulk/{id}/stop"), "").await;
    assert_eq!(stopped.status, StatusCode::OK, "{}", stopped.body);
    assert_eq!(stopped.body["state"], "done");
    assert_eq!(
        api.get("/v1/jobs/bulk/01a2188b-6694-72f0-bd1f-e8b9cceed78c")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    for (body, mentions) in [
        (r#"{"action": "explode"}"#, "action"),
        (
            r#"{"action": "cancel", "filter": {"colour": "red"}}"#,
            "colour",
        ),
        (r#"{"action": "cancel", "filter": {"bbox": "1,2"}}"#, "bbox"),
    ] {
        let a = api.post_to("/v1/jobs/bulk", body).await;
        assert!(a.status.is_client_error(), "{body}: {}", a.body);
        assert_problem(&a, a.status, mentions);
    }
}

#[tokio::test]
async fn a_running_bulk_action_stops_after_its_page_when_asked() {
    let api = spawn_api().await;
    for n in 0..2_000 {
        let a = api
            .post(&format!(r#"{{"city": "Tromsø {n}", "delay_secs": 3600}}"#))
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED);
    }
    let started = api
        .post_to("/v1/jobs/bulk", r#"{"action": "cancel"}"#)
        .await;
    let id = started.body["id"].as_str().expect("an id").to_owned();
    let stop = api.post_to(&format!("/v1/jobs/bulk/{id}/stop"), "").await;
    assert_eq!(stop.status, StatusCode::OK, "{}", stop.body);
    let ended = bulk_ended(&api, &id).await;
    // The stop came before the twenty pages of a hundred were through.
    assert_eq!(ended["state"], "stopped", "{ended}");
    let done = ended["done"].as_u64().unwrap_or(0);
    assert!(done < 2_000, "{ended}");
    assert_eq!(
        api.get("/v1/jobs/count?status=cancelled").await.body["count"].as_u64(),
        Some(done),
        "what it says it did is what it did"
    );
}

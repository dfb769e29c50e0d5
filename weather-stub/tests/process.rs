//! The stub as a real process: its exported spans continue the caller's
//! trace, and it stops cleanly on SIGTERM.

use std::time::Duration;

use testkit::{ServiceProcess, ZipkinCollector};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

/// Starts the stub exporting to `zipkin`; `env` adds or overrides settings.
async fn start_stub(
    zipkin: &ZipkinCollector,
    env: &[(&str, &str)],
) -> anyhow::Result<(ServiceProcess, String)> {
    let port = testkit::free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let mut settings = vec![
        ("STUB_LISTEN", format!("127.0.0.1:{port}")),
        ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", zipkin.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
        ("RUST_LOG", "warn".into()),
    ];
    for (k, v) in env {
        settings.retain(|(name, _)| name != k);
        settings.push((k, (*v).to_owned()));
    }
    let stub = ServiceProcess::start(
        "weather-stub",
        env!("CARGO_BIN_EXE_weather-stub"),
        &settings,
        &format!("{base}/healthz"),
    )
    .await?;
    Ok((stub, base))
}

#[tokio::test]
async fn server_spans_continue_the_callers_trace_and_name_the_service() -> anyhow::Result<()> {
    let zipkin = ZipkinCollector::start().await?;
    let (stub, base) = start_stub(&zipkin, &[]).await?;
    let client = reqwest::Client::new();

    let res = client
        .get(format!("{base}/v1/search?name=Berlin&count=1"))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let res = client
        .get(format!(
            "{base}/v1/forecast?latitude=1&longitude=2&current=temperature_2m"
        ))
        .header("traceparent", "00-not-a-trace-01")
        .send()
        .await?;
    assert_eq!(
        res.status(),
        200,
        "malformed trace headers never fail a request"
    );

    let search = zipkin
        .wait_for(Duration::from_secs(10), "search SERVER span", |spans| {
            spans
                .iter()
                .find(|s| s["name"] == "GET /v1/search")
                .cloned()
        })
        .await?;
    assert_eq!(search["traceId"], TRACE);
    assert_eq!(search["parentId"], CALLER);
    assert_eq!(search["kind"], "SERVER");
    assert_eq!(search["localEndpoint"]["serviceName"], "weather-stub");
    assert_eq!(search["tags"]["http.request.method"], "GET");
    assert_eq!(search["tags"]["http.route"], "/v1/search");
    assert_eq!(search["tags"]["http.response.status_code"], "200");

    let forecast = zipkin
        .wait_for(Duration::from_secs(10), "forecast SERVER span", |spans| {
            spans
                .iter()
                .find(|s| s["name"] == "GET /v1/forecast")
                .cloned()
        })
        .await?;
    assert!(
        forecast.get("parentId").is_none(),
        "a new root trace: {forecast}"
    );
    assert_ne!(forecast["traceId"], TRACE);

    let status = stub.stop(Duration::from_secs(10)).await?;
    assert!(status.success(), "stub exited with {status}");
    Ok(())
}

#[tokio::test]
async fn b3_callers_and_5xx_errors_show_in_the_trace() -> anyhow::Result<()> {
    let zipkin = ZipkinCollector::start().await?;
    let (stub, base) = start_stub(
        &zipkin,
        &[
            ("STUB_FAIL_RATE", "1"),
            ("OTEL_SERVICE_NAME", "open-meteo-stub"),
            ("RUST_LOG", "error"),
        ],
    )
    .await?;
    let res = reqwest::Client::new()
        .get(format!("{base}/v1/search?name=Oslo"))
        .header("b3", format!("{TRACE}-{CALLER}-1"))
        .send()
        .await?;
    assert_eq!(res.status(), 503);
    let span = zipkin
        .wait_for(Duration::from_secs(10), "failed search span", |spans| {
            spans
                .iter()
                .find(|s| s["name"] == "GET /v1/search")
                .cloned()
        })
        .await?;
    assert_eq!(
        (&span["traceId"], &span["parentId"]),
        (&TRACE.into(), &CALLER.into())
    );
    assert_eq!(span["localEndpoint"]["serviceName"], "open-meteo-stub");
    assert_eq!(span["tags"]["http.response.status_code"], "503");
    assert_eq!(span["tags"]["otel.status_code"], "ERROR");
    stub.stop(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test]
async fn spans_still_buffered_are_flushed_on_sigterm() -> anyhow::Result<()> {
    let zipkin = ZipkinCollector::start().await?;
    // Nothing is exported on schedule during this test...
    let (stub, base) = start_stub(&zipkin, &[("OTEL_BSP_SCHEDULE_DELAY", "600000")]).await?;
    let res = reqwest::get(format!("{base}/v1/search?name=Kyiv")).await?;
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(zipkin.spans().is_empty(), "exported before shutdown");
    // ...so the span can only arrive through the flush on shutdown.
    let status = stub.stop(Duration::from_secs(10)).await?;
    assert!(status.success());
    assert!(
        zipkin.spans().iter().any(|s| s["name"] == "GET /v1/search"),
        "the buffered span was not flushed: {:?}",
        zipkin.spans()
    );
    Ok(())
}

#[tokio::test]
async fn otlp_export_posts_protobuf_to_the_collector_endpoint() -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<(String, String, usize)>>>;
    // An OTLP/HTTP receiver stand-in: records path, content type and size.
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Seen>,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    if let Ok(mut s) = seen.lock() {
                        s.push(("/v1/traces".into(), ct, body.len()));
                    }
                    axum::http::StatusCode::OK
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let collector = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let zipkin = ZipkinCollector::start().await?;
    let (stub, base) = start_stub(
        &zipkin,
        &[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
        ],
    )
    .await?;
    assert_eq!(
        reqwest::get(format!("{base}/v1/search?name=Oslo"))
            .await?
            .status(),
        200
    );
    stub.stop(Duration::from_secs(10)).await?;
    server.abort();

    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(!seen.is_empty(), "nothing reached the OTLP endpoint");
    for (path, ct, len) in &seen {
        assert_eq!(path, "/v1/traces");
        assert_eq!(ct, "application/x-protobuf");
        assert!(*len > 0);
    }
    assert!(
        zipkin.spans().is_empty(),
        "with otlp, nothing goes to Zipkin directly"
    );
    Ok(())
}

#[tokio::test]
async fn health_checks_leave_no_spans() -> anyhow::Result<()> {
    let zipkin = ZipkinCollector::start().await?;
    // Starting waits on /healthz already; ask a few more times.
    let (_stub, base) = start_stub(&zipkin, &[]).await?;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let res = client
            .get(format!("{base}/healthz"))
            .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
            .send()
            .await?;
        assert_eq!(res.status(), 200);
    }
    // Once a later request's span has arrived, any health check's would have.
    client
        .get(format!("{base}/v1/search?name=Oslo"))
        .send()
        .await?;
    zipkin
        .wait_for(Duration::from_secs(10), "search SERVER span", |spans| {
            spans
                .iter()
                .find(|s| s["name"] == "GET /v1/search")
                .cloned()
        })
        .await?;
    let health: Vec<_> = zipkin
        .spans()
        .into_iter()
        .filter(|s| s["tags"]["url.path"] == "/healthz" || s["traceId"] == TRACE)
        .collect();
    assert!(health.is_empty(), "health checks were traced: {health:#?}");
    Ok(())
}

#[test]
fn every_setting_of_the_weather_stub_is_in_the_settings_reference() -> anyhow::Result<()> {
    testkit::settings::assert_documented(
        std::path::Path::new(env!("CARGO_BIN_EXE_weather-stub")),
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
    )
}

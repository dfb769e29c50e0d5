//! The api against its own OpenAPI document: schemathesis (from PyPI)
//! loads `/openapi.json` from a live api and calls every operation with
//! generated input, the API key sent; every answer must be one the
//! document describes. Twice, side by side: with Redis up (no 5xx at all),
//! and with Redis killed (queue operations answer their documented 503 problem,
//! never a 500). `tests/conformance/schemathesis.toml` holds the checks.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use testkit::{RedisServer, ServiceProcess, free_port};

/// The key the api is given and schemathesis sends.
const KEY: &str = "conformance-key-5c1e9a";

/// Every operation but `GET /openapi.json`: schemathesis leaves out the
/// operation it loaded the document from.
const OPERATIONS_TESTED: &str = "Tested: 19";

/// Runs schemathesis against `api_url`; answers its report, or fails with
/// it. `extra` are further `run` arguments.
async fn schemathesis(api_url: &str, extra: &[&str]) -> anyhow::Result<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let schema = format!("{api_url}/openapi.json");
    let key = format!("Authorization: Bearer {KEY}");
    let mut args = vec![schema.as_str(), "--header", key.as_str()];
    args.extend_from_slice(extra);
    let report = testkit::schemathesis::run(&dir, &args, &[]).await?;
    if !report.contains(OPERATIONS_TESTED) {
        bail!("not every operation was tested:\n{report}");
    }
    Ok(report)
}

/// Waits until `GET /readyz` answers `status`.
async fn wait_ready_status(api_url: &str, status: u16) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = http.get(format!("{api_url}/readyz")).send().await?;
        if res.status().as_u16() == status {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("/readyz still answers {} after 20 s", res.status());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The api binary on a free port, on `redis`, with the key; answers it and
/// its URL once ready.
async fn start_api(redis: &RedisServer) -> anyhow::Result<(ServiceProcess, String)> {
    let port = free_port()?;
    let api_url = format!("http://127.0.0.1:{port}");
    let api = ServiceProcess::start(
        "api",
        env!("CARGO_BIN_EXE_api"),
        &[
            ("API_LISTEN", format!("127.0.0.1:{port}")),
            ("REDIS_URL", redis.url()),
            ("API_KEYS", KEY.into()),
            ("OTEL_TRACES_EXPORTER", "none".into()),
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info".into()),
        ],
        &format!("{api_url}/readyz"),
    )
    .await?;
    Ok((api, api_url))
}

/// No request failed inside the api.
fn assert_no_error_logged(api: &ServiceProcess) {
    let logs = api.logs();
    assert!(
        !logs.contains(r#""level":"ERROR""#),
        "no request failed inside the api:\n{logs}"
    );
}

// The two runs are two tests, so they run side by side.

#[tokio::test]
async fn the_api_conforms_to_its_openapi_document_with_redis_up() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (api, api_url) = start_api(&redis).await?;
    schemathesis(&api_url, &[]).await.context("with Redis up")?;
    assert_no_error_logged(&api);
    Ok(())
}

#[tokio::test]
async fn the_api_conforms_to_its_openapi_document_with_redis_down() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (api, api_url) = start_api(&redis).await?;
    // Killed by its PID (the handle's drop).
    drop(redis);
    wait_ready_status(&api_url, 503).await?;
    schemathesis(&api_url, &["--exclude-checks", "not_a_server_error"])
        .await
        .context("with Redis down")?;
    assert_no_error_logged(&api);
    Ok(())
}

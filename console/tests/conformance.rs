//! The console against Zipkin's own OpenAPI file (`zipkin2-api.yaml`):
//! schemathesis (from PyPI) calls every operation with generated input on
//! a live console holding spans, with a user who logs in by HTTP Basic;
//! no answer may be a 5xx, and every answer must match the file's schemas. `tests/conformance/schemathesis.toml`
//! holds the settings and the one documented exception.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::json;
use testkit::Console;

/// Zipkin's OpenAPI file, kept in the repository beside its licence
/// (`tests/conformance/zipkin2-api.yaml`, Apache-2.0, from
/// <https://zipkin.io/zipkin-api/zipkin2-api.yaml>), so the test needs
/// nothing outside the clone.
fn spec() -> anyhow::Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/zipkin2-api.yaml");
    if !path.exists() {
        bail!("Zipkin's OpenAPI file is missing from {}", path.display());
    }
    Ok(path)
}

#[tokio::test]
async fn the_console_conforms_to_zipkins_openapi_file() -> anyhow::Result<()> {
    use base64::Engine;
    let spec = spec()?;
    // With a user: the reads need the login (sent as HTTP Basic), the
    // services' span posts none.
    let users = format!(
        "zipkin:viewer:{}",
        testkit::console::password_hash(
            Path::new(env!("CARGO_BIN_EXE_console")),
            "zipkin's secret"
        )?
    );
    let console =
        Console::start(env!("CARGO_BIN_EXE_console"), &[("CONSOLE_USERS", users)]).await?;
    let basic = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode("zipkin:zipkin's secret")
    );
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let spans = json!([
        {
            "traceId": trace, "id": "0000000000000001", "name": "post /v1/jobs", "kind": "SERVER",
            "timestamp": now_ms * 1000 - 5_000, "duration": 4_000,
            "localEndpoint": { "serviceName": "api", "ipv4": "127.0.0.1", "port": 8080 },
            "tags": { "http.route": "/v1/jobs", "error.type": "none" },
            "annotations": [{ "timestamp": now_ms * 1000 - 4_000, "value": "job queued" }]
        },
        {
            "traceId": trace, "id": "0000000000000002", "parentId": "0000000000000001",
            "name": "send weather", "kind": "PRODUCER", "timestamp": now_ms * 1000 - 4_500,
            "duration": 300, "localEndpoint": { "serviceName": "api" },
            "remoteEndpoint": { "serviceName": "redis", "ipv6": "::1", "port": 6379 }
        },
        {
            "traceId": "00f067aa0ba902b7", "id": "0000000000000003", "name": "invoice",
            "timestamp": now_ms * 1000 - 3_000, "duration": 10, "debug": true, "shared": true,
            "localEndpoint": { "serviceName": "billing" }
        }
    ]);
    assert_eq!(console.post_spans(&spans).await?, 202);

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let url = format!("{}/api/v2", console.url());
    let spec_arg = spec.to_str().context("spec path")?;
    let trace_ids = format!("{trace},00f067aa0ba902b7");
    let end_ts = now_ms.to_string();
    let report = testkit::schemathesis::run(
        &dir,
        &[spec_arg, "--url", &url, "--header", &basic],
        &[
            ("CONSOLE_TRACE_ID", trace),
            ("CONSOLE_TRACE_IDS", &trace_ids),
            ("CONSOLE_END_TS", &end_ts),
        ],
    )
    .await?;
    assert!(
        report.contains("Tested: 9"),
        "every operation of the file must be tested:\n{report}"
    );
    Ok(())
}

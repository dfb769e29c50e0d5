//! The services export to the console, the embedded trace store, as they
//! would to Zipkin: a job's whole trace and the service map, redis →
//! worker included, come back through its Zipkin API.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use e2e::{Stack, WAIT, one, service};
use serde_json::json;
use testkit::project_binary;

#[tokio::test]
async fn a_jobs_trace_and_the_service_map_come_back_from_the_console() -> anyhow::Result<()> {
    let bin = project_binary("console")?;
    let stack = Stack::start_with_console().await?;
    let console = stack.console.as_ref().context("a console")?;
    let (id, trace) = stack.enqueue(r#"{"city": "Oslo"}"#, &[]).await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");

    let spans = console
        .wait_trace(&trace, WAIT, |spans| spans.len() == 9)
        .await?;
    let mut services: Vec<&str> = spans.iter().map(service).collect();
    services.sort();
    services.dedup();
    assert_eq!(services, ["api", "weather-stub", "worker"]);
    // The tree the services sent (Zipkin lower-cases span names).
    let named = |name: &str| one(&spans, name, |s| s["name"] == name);
    let (server, producer, consumer) = (
        named("post /v1/jobs"),
        named("send weather"),
        named("process weather"),
    );
    assert!(server.get("parentId").is_none(), "a root: {server}");
    assert_eq!(producer["parentId"], server["id"]);
    assert_eq!(consumer["parentId"], producer["id"]);
    assert_eq!(consumer["tags"]["messaging.message.id"], id.as_str());
    for route in ["get /v1/search", "get /v1/forecast"] {
        let stub = named(route);
        let client = one(&spans, "the call the stub answered", |s| {
            s["id"] == stub["parentId"]
        });
        assert_eq!(client["parentId"], consumer["id"], "{route}");
        assert_eq!(service(client), "worker");
    }

    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let links = console
        .get_ok(&format!("/api/v2/dependencies?endTs={now_ms}"))
        .await?;
    assert_eq!(
        links,
        json!([
            { "parent": "api", "child": "redis", "callCount": 1 },
            { "parent": "redis", "child": "worker", "callCount": 1 },
            { "parent": "worker", "child": "redis", "callCount": 2 },
            { "parent": "worker", "child": "weather-stub", "callCount": 2 },
        ]),
        "api → redis → worker → weather-stub, and the cache"
    );

    // The same trace in the terminal, found from the job's id.
    let out = std::process::Command::new(&bin)
        .args([
            "trace",
            &id,
            "--from",
            console.url(),
            "--api-url",
            &stack.api_url,
        ])
        .output()?;
    let tree = String::from_utf8(out.stdout)?;
    assert!(
        out.status.success(),
        "{tree}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{tree}");
    let lines: Vec<&str> = tree.lines().collect();
    assert!(
        lines[0].starts_with(&format!("trace {trace}: 9 spans, 3 services,")),
        "{tree}"
    );
    assert!(
        lines[1].starts_with("api  post /v1/jobs  SERVER  "),
        "{tree}"
    );
    assert!(
        lines[2].starts_with("└─ api  send weather  PRODUCER → redis  "),
        "{tree}"
    );
    assert!(
        lines[3].starts_with("   └─ worker  process weather  CONSUMER → redis  ")
            && lines[3].contains("(waited "),
        "{tree}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("│  └─ weather-stub  get /v1/search  SERVER")),
        "{tree}"
    );
    Ok(())
}

//! The console's pages as a process, where the rest of the system is not
//! there (no Redis, no api): every page still answers, with a notice or a
//! problem, never a 5xx of its own making. And a console reading its
//! traces from another (as from a Zipkin): the browser's spans and the
//! service map go through that one.

use serde_json::{Value, json};
use testkit::{Console, free_port};

async fn console(env: &[(&str, String)]) -> anyhow::Result<Console> {
    // Nothing listens on these: Redis and the api are down.
    let mut settings = vec![
        ("REDIS_URL", format!("redis://127.0.0.1:{}/", free_port()?)),
        ("API_URL", format!("http://127.0.0.1:{}", free_port()?)),
    ];
    settings.extend(env.iter().map(|(k, v)| (*k, v.clone())));
    Console::start(env!("CARGO_BIN_EXE_console"), &settings).await
}

async fn get(url: &str) -> anyhow::Result<(u16, String, String)> {
    let res = reqwest::get(url).await?;
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, ct, res.text().await?))
}

async fn post(url: &str, body: &str) -> anyhow::Result<(u16, Value)> {
    let res = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

/// A browser's span and the call it made, with a link api → redis.
fn browser_trace() -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    json!([
        { "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "id": "0000000000000001", "kind": "CLIENT",
          "name": "submit job", "timestamp": now - 10_000, "duration": 5_000,
          "localEndpoint": { "serviceName": "browser" }, "remoteEndpoint": { "serviceName": "api" } },
        { "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "id": "0000000000000002", "parentId": "0000000000000001",
          "kind": "PRODUCER", "name": "send weather", "timestamp": now - 9_000, "duration": 1_000,
          "localEndpoint": { "serviceName": "api" }, "remoteEndpoint": { "serviceName": "redis" } }
    ])
}

#[tokio::test]
async fn every_page_answers_while_redis_and_the_api_are_down() -> anyhow::Result<()> {
    let mut console = console(&[]).await?;
    let url = console.url().to_owned();

    let (status, ct, page) = get(&format!("{url}/")).await?;
    assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));
    for label in [r#"<label for="places">"#, r#"<label for="units">"#] {
        assert!(page.contains(label), "every control has a label: {page}");
    }
    assert!(page.contains(r#"aria-current="page""#));
    for page in [
        "/queues",
        "/workers",
        "/failed",
        "/jobs",
        "/jobs/01a2188b-6694-72f0-bd1f-e8b9cceed78c",
    ] {
        let (status, _, body) = get(&format!("{url}{page}")).await?;
        assert_eq!(status, 503, "{page}: {body}");
        assert!(body.contains("not reachable yet"), "{page}: {body}");
    }
    let (status, problem) = post(&format!("{url}/ui/jobs"), r#"{"city": "Oslo"}"#).await?;
    assert_eq!(status, 502, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("could not be reached")
    );

    let (status, problem) = post(&format!("{url}/ui/spans"), "[{").await?;
    assert_eq!(status, 400, "{problem}");
    let (status, _) = post(&format!("{url}/ui/spans"), &browser_trace().to_string()).await?;
    assert_eq!(status, 202);
    let trace = console
        .get_ok("/api/v2/trace/4bf92f3577b34da6a3ce929d0e0e4736")
        .await?;
    assert_eq!(trace[0]["localEndpoint"]["serviceName"], "browser");

    let (status, _, map) = get(&format!("{url}/map")).await?;
    assert_eq!(status, 200);
    assert!(map.contains("api calls redis (1 call)"), "{map}");
    let (status, _, _) = get(&format!("{url}/ui/fragment/nothing")).await?;
    assert_eq!(status, 404);
    let (status, ct, css) = get(&format!("{url}/static/app.css")).await?;
    assert_eq!((status, ct.as_str()), (200, "text/css; charset=utf-8"));
    assert!(css.contains("@media (max-width: 640px)"), "phone layout");
    let (status, ct, js) = get(&format!("{url}/static/app.js")).await?;
    assert_eq!(
        (status, ct.as_str()),
        (200, "text/javascript; charset=utf-8")
    );
    assert!(js.contains("traceparent"));
    assert!(console.process().is_running());
    Ok(())
}

#[tokio::test]
async fn a_console_reading_from_a_zipkin_sends_and_reads_through_it() -> anyhow::Result<()> {
    let zipkin = console(&[]).await?;
    let reader = console(&[("CONSOLE_ZIPKIN_URL", zipkin.url().to_owned())]).await?;

    let (status, _) = post(
        &format!("{}/ui/spans", reader.url()),
        &browser_trace().to_string(),
    )
    .await?;
    assert_eq!(status, 202);
    let trace = zipkin
        .get_ok("/api/v2/trace/4bf92f3577b34da6a3ce929d0e0e4736")
        .await?;
    assert_eq!(
        trace.as_array().map(Vec::len),
        Some(2),
        "stored by the Zipkin"
    );
    let (status, _) = reader.get("/api/v2/services").await?;
    assert_eq!(status, 404, "the reader serves no trace API of its own");
    let (_, _, map) = get(&format!("{}/map", reader.url())).await?;
    assert!(map.contains("api calls redis (1 call)"), "{map}");
    Ok(())
}

#[tokio::test]
async fn a_console_passes_what_it_stores_on_to_a_zipkin_and_keeps_it_when_that_zipkin_is_down()
-> anyhow::Result<()> {
    let zipkin = testkit::ZipkinCollector::start().await?;
    let passing = console(&[("CONSOLE_FORWARD_URL", zipkin.endpoint())]).await?;
    assert_eq!(passing.post_spans(&browser_trace()).await?, 202);
    let got = zipkin
        .wait_for(
            std::time::Duration::from_secs(10),
            "the spans passed on",
            |spans| (spans.len() == 2).then(|| spans.to_vec()),
        )
        .await?;
    assert_eq!(got[0]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let (status, _) = passing
        .get("/api/v2/trace/4bf92f3577b34da6a3ce929d0e0e4736")
        .await?;
    assert_eq!(status, 200, "and keeps them");

    // A Zipkin that is down: the console stores the batch all the same and
    // counts the failed post.
    let down = format!("http://127.0.0.1:{}/api/v2/spans", testkit::free_port()?);
    let lonely = console(&[("CONSOLE_FORWARD_URL", down)]).await?;
    assert_eq!(lonely.post_spans(&browser_trace()).await?, 202);
    assert_eq!(
        lonely
            .get("/api/v2/trace/4bf92f3577b34da6a3ce929d0e0e4736")
            .await?
            .0,
        200
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metrics = reqwest::get(format!("{}/metrics", lonely.url()))
            .await?
            .text()
            .await?;
        if metrics
            .lines()
            .any(|l| l == "console_forward_failed_total 1")
        {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

//! The metrics the services serve add up, and their exemplars lead to
//! traces the collector received; a real Prometheus scrapes them.

use std::time::Duration;

use anyhow::bail;
use e2e::{Prometheus, Stack, WAIT, prom_value, sum};
use serde_json::{Value, json};

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
    // The api reads the live workers from Redis at each scrape, and a
    // worker's first heartbeat comes from a task of its own, in no order
    // with the jobs above: wait for it, then check the rest on that page.
    let live = r#"jobs_live_workers{messaging_destination_name="weather"} 2"#;
    let api = testkit::eventually(
        "the api's page counting both workers live",
        WAIT,
        Duration::from_millis(100),
        || async {
            let page = stack.scrape(&stack.api_url).await?;
            if !page.contains(live) {
                bail!("{live:?} not on the page: {page}");
            }
            Ok(Some(page))
        },
    )
    .await?;
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

#[tokio::test]
async fn prometheus_scrapes_counters_histograms_and_exemplars_that_lead_to_traces()
-> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let prometheus = Prometheus::scraping(&stack).await?;
    let prom = prometheus.url().to_owned();

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
    Ok(())
}

//! The trace goes on through Kafka: a weather job's event, published by the
//! worker, reaches the alerts service in the same trace, against a real
//! Kafka-compatible broker (`tansu`) started by the test.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use e2e::{Options, Stack, WAIT, one, service, start_alerts, sum, wait_alerts};
use serde_json::{Value, json};
use testkit::{KafkaBroker, free_port};

/// Waits until `metric` (with `filters`) on `base`'s `/metrics` reaches
/// `at_least`; answers its value.
async fn wait_metric(
    stack: &Stack,
    base: &str,
    metric: &str,
    filters: &[&str],
    at_least: f64,
    limit: Duration,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + limit;
    loop {
        let value = sum(&stack.scrape(base).await?, metric, filters);
        if value >= at_least {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{metric}{filters:?} on {base} is {value}, not {at_least}, after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_jobs_trace_goes_on_through_kafka_to_the_alert() -> anyhow::Result<()> {
    let kafka = KafkaBroker::start().await?;
    let brokers = kafka.brokers();
    let alerts_port = free_port()?;
    let stack = Stack::launch(Options {
        console: true,
        console_env: &[("ALERTS_URL", &format!("http://127.0.0.1:{alerts_port}"))],
        workers: Some(1),
        worker_env: &[("KAFKA_BROKERS", &brokers)],
        ..Options::default()
    })
    .await?;
    let console = stack.console.as_ref().context("a console")?;
    // Every event raises a wind alert.
    let (_alerts, alerts_url) = start_alerts(
        &stack,
        alerts_port,
        &brokers,
        &console.endpoint(),
        &[("ALERT_WIND_KMH", "0")],
    )
    .await?;

    let (caller, trace) = ("00f067aa0ba902b7", "4bf92f3577b34da6a3ce929d0e0e4738");
    let (id, _) = stack
        .enqueue(
            r#"{"city": "Oslo"}"#,
            &[("traceparent", &format!("00-{trace}-{caller}-01"))],
        )
        .await?;
    let done = stack.wait_done(&id).await?;
    assert_eq!(done["status"], "succeeded", "{done}");

    let alerts = wait_alerts(&stack.http, &alerts_url, &id, 1, WAIT).await?;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert = &alerts[0];
    assert_eq!(alert["kind"], "wind");
    assert_eq!(alert["place"], "Oslo");
    assert_eq!(alert["key"], "city:oslo");
    assert_eq!(alert["trace_id"], trace, "the alert names the job's trace");
    for bad in ["limit=0", "limit=1001", "limit=ten", "limit=1&limit=2"] {
        let res = stack
            .http
            .get(format!("{alerts_url}/v1/alerts?{bad}"))
            .send()
            .await?;
        assert_eq!(res.status(), 400, "{bad}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{bad}"
        );
    }
    // The console's alerts page links it to the job and its trace.
    let page = stack
        .http
        .get(format!("{}/alerts", console.url()))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        page.contains(&format!("href=\"/jobs/{id}#trace-h\"")) && page.contains(">wind<"),
        "{page}"
    );

    // One trace from the POST to the alert: api 2, worker 5, stub 2,
    // Kafka PRODUCER 1, alerts CONSUMER and its Redis call 2.
    let spans = console
        .wait_trace(trace, WAIT, |spans| spans.len() >= 12)
        .await?;
    assert_eq!(spans.len(), 12, "{spans:#?}");
    let ids: Vec<&Value> = spans.iter().map(|s| &s["id"]).collect();
    for s in &spans {
        assert_eq!(s["traceId"], trace);
        match s.get("parentId") {
            Some(parent) if parent == caller => assert_eq!(s["name"], "post /v1/jobs"),
            Some(parent) => assert!(ids.contains(&parent), "a parent outside the trace: {s}"),
            None => panic!("a second root: {s}"),
        }
    }
    let named = |name: &str| one(&spans, name, |s| s["name"] == name);
    let job = named("process weather");
    let send = named("send weather.updated");
    let process = named("process weather.updated");
    let store = one(&spans, "the alerts' Redis call", |s| {
        service(s) == "alerts" && s["kind"] == "CLIENT"
    });

    assert_eq!(
        (service(send), send["kind"].as_str()),
        ("worker", Some("PRODUCER"))
    );
    assert_eq!(send["parentId"], job["id"], "published from the job's span");
    let tags = &send["tags"];
    assert_eq!(tags["messaging.system"], "kafka");
    assert_eq!(tags["messaging.operation.type"], "send");
    assert_eq!(tags["messaging.destination.name"], "weather.updated");
    assert_eq!(tags["messaging.kafka.message.key"], "city:oslo");
    assert_eq!(tags["messaging.message.id"], id.as_str());
    let partition = tags["messaging.destination.partition.id"]
        .as_str()
        .context("the partition")?;
    let offset = tags["messaging.kafka.offset"]
        .as_str()
        .context("the offset")?;
    assert!(
        partition.parse::<u32>().is_ok() && offset.parse::<u64>().is_ok(),
        "{send}"
    );
    assert_eq!(send["remoteEndpoint"]["serviceName"], "kafka");
    assert_eq!(send["remoteEndpoint"]["ipv4"], "127.0.0.1");
    assert_eq!(send["remoteEndpoint"]["port"], kafka.port());

    assert_eq!(
        (service(process), process["kind"].as_str()),
        ("alerts", Some("CONSUMER"))
    );
    assert_eq!(
        process["parentId"], send["id"],
        "the alerts resume the PRODUCER span"
    );
    assert_eq!(
        process["tags"]["otel.link.0"],
        format!("{trace}-{}", send["id"].as_str().unwrap_or_default()),
        "and link to it"
    );
    let tags = &process["tags"];
    assert_eq!(tags["messaging.system"], "kafka");
    assert_eq!(tags["messaging.operation.type"], "process");
    assert_eq!(tags["messaging.destination.name"], "weather.updated");
    assert_eq!(tags["messaging.consumer.group.name"], "alerts");
    assert_eq!(tags["messaging.destination.partition.id"], partition);
    assert_eq!(tags["messaging.kafka.offset"], offset);
    assert_eq!(tags["messaging.kafka.message.key"], "city:oslo");
    assert_eq!(tags["messaging.message.id"], id.as_str());
    assert_eq!(tags["alerts.raised"], "1");
    assert_eq!(tags["alerts.duplicate"], "false");
    assert_eq!(process["remoteEndpoint"]["serviceName"], "kafka");
    assert_eq!(store["parentId"], process["id"]);
    assert_eq!(store["tags"]["db.system.name"], "redis");

    // The service map: worker → kafka → alerts.
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let links = console
        .get_ok(&format!("/api/v2/dependencies?endTs={now_ms}"))
        .await?;
    let links = links.as_array().context("links")?;
    for (parent, child) in [
        ("worker", "kafka"),
        ("kafka", "alerts"),
        ("alerts", "redis"),
    ] {
        assert!(
            links
                .iter()
                .any(|l| l["parent"] == parent && l["child"] == child && l["callCount"] == 1),
            "no {parent} → {child} link in {links:#?}"
        );
    }
    assert_eq!(
        wait_metric(
            &stack,
            &alerts_url,
            "alerts_raised_total",
            &["kind=\"wind\""],
            1.0,
            WAIT
        )
        .await?,
        1.0
    );
    Ok(())
}

/// Waits until the alerts service has taken `n` events as new; answers
/// its `alerts_events_total` by result.
async fn wait_new_events(
    stack: &Stack,
    alerts_url: &str,
    n: f64,
    limit: Duration,
) -> anyhow::Result<(f64, f64)> {
    wait_metric(
        stack,
        alerts_url,
        "alerts_events_total",
        &["result=\"new\""],
        n,
        limit,
    )
    .await?;
    let page = stack.scrape(alerts_url).await?;
    Ok((
        sum(&page, "alerts_events_total", &["result=\"new\""]),
        sum(&page, "alerts_events_total", &["result=\"duplicate\""]),
    ))
}

/// How long Kafka is away: far past the delivery timeout.
const OUTAGE: Duration = Duration::from_secs(180);

#[tokio::test]
async fn kafka_away_for_3_minutes_loses_no_event_and_repeats_none() -> anyhow::Result<()> {
    let mut kafka = KafkaBroker::start().await?;
    let brokers = kafka.brokers();
    let stack = Stack::launch(Options {
        worker_env: &[
            ("KAFKA_BROKERS", &brokers),
            // Far shorter than the outage: the relay's sends time out
            // again and again, and the events wait in the outbox.
            ("KAFKA_DELIVERY_TIMEOUT_MS", "4000"),
        ],
        ..Options::default()
    })
    .await?;
    let (alerts, alerts_url) = start_alerts(
        &stack,
        0,
        &brokers,
        &stack.zipkin.endpoint(),
        // One alert per event (wind), so the list holds them all.
        &[
            ("ALERT_WIND_KMH", "0"),
            ("ALERT_HEAT_C", "1000"),
            ("ALERT_FROST_C", "-1000"),
        ],
    )
    .await?;
    let (id, _) = stack.enqueue(r#"{"city": "Lima"}"#, &[]).await?;
    stack.wait_done(&id).await?;
    wait_alerts(&stack.http, &alerts_url, &id, 1, WAIT).await?;

    // Kafka goes away; 500 jobs go on and succeed at once.
    kafka.stop();
    let away = Instant::now();
    let mut ids = Vec::new();
    for i in 0..500 {
        let (id, _) = stack
            .enqueue(&json!({ "city": format!("Outage {i}") }).to_string(), &[])
            .await?;
        ids.push(id);
    }
    for id in &ids {
        assert_eq!(stack.wait_done(id).await?["status"], "succeeded");
    }
    assert!(
        away.elapsed() < Duration::from_secs(60),
        "jobs waited for Kafka: {:?}",
        away.elapsed()
    );
    let worker = stack.worker_urls[0].clone();
    wait_metric(&stack, &worker, "kafka_outbox_events", &[], 500.0, WAIT).await?;
    tokio::time::sleep(OUTAGE.saturating_sub(away.elapsed())).await;
    let page = stack.scrape(&worker).await?;
    assert_eq!(sum(&page, "kafka_outbox_events", &[]), 500.0, "all kept");
    assert!(
        sum(&page, "kafka_outbox_oldest_age_seconds", &[]) >= OUTAGE.as_secs_f64() - 10.0,
        "the oldest has waited the whole outage: {page}"
    );
    assert_eq!(sum(&page, "kafka_outbox_dropped", &[]), 0.0);

    // Back, with its data: all 500 arrive, each taken as new once.
    kafka.restart().await?;
    let back = wait_new_events(&stack, &alerts_url, 501.0, Duration::from_secs(90)).await;
    let (new, _) = match back {
        Ok(counts) => counts,
        Err(e) => bail!(
            "{e}\n--- worker 0 ---\n{}\n{}\n--- alerts ---\n{}\n{}",
            stack.workers[0].logs(),
            stack.scrape(&worker).await?,
            alerts.logs(),
            stack.scrape(&alerts_url).await?
        ),
    };
    assert_eq!(new, 501.0, "the first event and the 500 kept");
    wait_metric(&stack, &worker, "kafka_outbox_events", &[], 0.0, WAIT).await?;
    let page = stack.scrape(&alerts_url).await?;
    let alerts: Value = stack
        .http
        .get(format!("{alerts_url}/v1/alerts?limit=1000"))
        .send()
        .await?
        .json()
        .await?;
    let mut seen = std::collections::HashMap::new();
    for a in alerts["alerts"].as_array().context("alerts")? {
        *seen
            .entry((a["event_id"].to_string(), a["kind"].to_string()))
            .or_insert(0) += 1;
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "an alert was raised twice: {page}"
    );
    for id in &ids {
        assert!(
            seen.keys().any(|(e, _)| e.trim_matches('"') == id),
            "no alert for job {id}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_relay_killed_with_events_unsent_loses_none() -> anyhow::Result<()> {
    let mut kafka = KafkaBroker::start().await?;
    let brokers = kafka.brokers();
    // Three queue shards, and rounds of 10 events: the relay merges the
    // shards' outboxes, a round at a time.
    let mut stack = Stack::launch(Options {
        worker_env: &[
            ("KAFKA_BROKERS", &brokers),
            ("KAFKA_DELIVERY_TIMEOUT_MS", "4000"),
            ("KAFKA_RELAY_BATCH", "10"),
        ],
        queue_shards: Some(3),
        ..Options::default()
    })
    .await?;
    let (_alerts, alerts_url) = start_alerts(
        &stack,
        0,
        &brokers,
        &stack.zipkin.endpoint(),
        &[("ALERT_WIND_KMH", "0")],
    )
    .await?;
    // Kafka is slow (away): the jobs succeed, their events wait.
    kafka.stop();
    let mut ids = Vec::new();
    for i in 0..50 {
        let (id, _) = stack
            .enqueue(&json!({ "city": format!("Crash {i}") }).to_string(), &[])
            .await?;
        ids.push(id);
    }
    for id in &ids {
        assert_eq!(stack.wait_done(id).await?["status"], "succeeded");
    }
    // SIGKILL the worker whose relay holds the events.
    let deadline = Instant::now() + WAIT;
    let relay = loop {
        let mut holder = None;
        for (i, url) in stack.worker_urls.iter().enumerate() {
            if sum(&stack.scrape(url).await?, "kafka_outbox_relay", &[]) == 1.0 {
                holder = Some(i);
            }
        }
        if let Some(i) = holder {
            break i;
        }
        if Instant::now() > deadline {
            bail!("no relay took the lease");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stack.workers[relay].kill()?;
    kafka.restart().await?;
    // The other worker's relay takes over once the lease lapses.
    let (new, _) = wait_new_events(&stack, &alerts_url, 50.0, Duration::from_secs(60)).await?;
    assert_eq!(new, 50.0, "every event, once");
    let other = stack.worker_urls[1 - relay].clone();
    wait_metric(&stack, &other, "kafka_outbox_relay", &[], 1.0, WAIT).await?;
    Ok(())
}

#[tokio::test]
async fn an_event_delivered_again_after_a_crash_counts_once() -> anyhow::Result<()> {
    let kafka = KafkaBroker::start().await?;
    let brokers = kafka.brokers();
    // Redis over TLS, with a password: the alerts service trusts its CA
    // (REDIS_CA_CERT), as the api and the worker do.
    let stack = Stack::launch(Options {
        workers: Some(1),
        worker_env: &[("KAFKA_BROKERS", &brokers)],
        tls_redis: true,
        ..Options::default()
    })
    .await?;
    // Offsets are committed rarely: the crash comes before the commit.
    let settings = [
        ("ALERT_WIND_KMH", "0"),
        ("KAFKA_COMMIT_INTERVAL_MS", "600000"),
    ];
    let (alerts, alerts_url) =
        start_alerts(&stack, 0, &brokers, &stack.zipkin.endpoint(), &settings).await?;
    let (id, trace) = stack.enqueue(r#"{"city": "Oslo"}"#, &[]).await?;
    stack.wait_done(&id).await?;
    wait_alerts(&stack.http, &alerts_url, &id, 1, WAIT).await?;
    let deliveries = |n: usize| {
        let trace = trace.clone();
        move |spans: &[Value]| {
            let mine: Vec<Value> = spans
                .iter()
                .filter(|s| {
                    s["traceId"] == trace.as_str() && s["name"] == "process weather.updated"
                })
                .cloned()
                .collect();
            (mine.len() == n).then_some(mine)
        }
    };
    stack
        .zipkin
        .wait_for(WAIT, "the first delivery", deliveries(1))
        .await?;
    // Killed (SIGKILL), its offset never committed.
    drop(alerts);

    let (_alerts, alerts_url) =
        start_alerts(&stack, 0, &brokers, &stack.zipkin.endpoint(), &settings).await?;
    // Once the group hands it the partitions, the event comes again.
    wait_metric(
        &stack,
        &alerts_url,
        "alerts_events_total",
        &["result=\"duplicate\""],
        1.0,
        Duration::from_secs(40),
    )
    .await?;
    let alerts = wait_alerts(&stack.http, &alerts_url, &id, 1, WAIT).await?;
    assert_eq!(alerts.len(), 1, "stored once: {alerts:#?}");
    let page = stack.scrape(&alerts_url).await?;
    assert_eq!(
        sum(&page, "alerts_raised_total", &[]),
        0.0,
        "raised by the first run only"
    );
    assert_eq!(sum(&page, "alerts_events_total", &["result=\"new\""]), 0.0);

    // Both deliveries are in the job's trace; the second says so.
    let spans = stack
        .zipkin
        .wait_for(WAIT, "both deliveries", deliveries(2))
        .await?;
    let mut duplicate: Vec<&str> = spans
        .iter()
        .map(|s| s["tags"]["alerts.duplicate"].as_str().unwrap_or_default())
        .collect();
    duplicate.sort_unstable();
    assert_eq!(duplicate, ["false", "true"]);
    Ok(())
}

#[tokio::test]
async fn a_permanent_redis_error_is_counted_and_logged_and_the_events_after_it_flow()
-> anyhow::Result<()> {
    let kafka = KafkaBroker::start().await?;
    let brokers = kafka.brokers();
    let stack = Stack::launch(Options {
        workers: Some(1),
        worker_env: &[("KAFKA_BROKERS", &brokers)],
        ..Options::default()
    })
    .await?;
    let (alerts, alerts_url) = start_alerts(
        &stack,
        0,
        &brokers,
        &stack.zipkin.endpoint(),
        &[("ALERT_WIND_KMH", "0")],
    )
    .await?;
    // The alerts list is not a list: every write is refused (WRONGTYPE),
    // which waiting does not mend.
    let mut conn = stack.redis_connection().await?;
    let _: () = redis::cmd("SET")
        .arg("{alerts}:recent")
        .arg("not a list")
        .query_async(&mut conn)
        .await?;
    for city in ["Quito", "Dakar"] {
        let (id, _) = stack
            .enqueue(&json!({ "city": city }).to_string(), &[])
            .await?;
        stack.wait_done(&id).await?;
    }
    let failed = wait_metric(
        &stack,
        &alerts_url,
        "alerts_events_total",
        &["result=\"store_failed\""],
        2.0,
        WAIT,
    )
    .await
    .with_context(|| format!("--- alerts ---\n{}", alerts.logs()))?;
    assert_eq!(failed, 2.0, "each event given up once");
    let logs = alerts.logs();
    assert!(
        logs.contains("given up") && logs.contains("WRONGTYPE"),
        "the refusal is logged: {logs}"
    );

    // Mended, the next event is stored: nothing was left stuck.
    let _: () = redis::cmd("DEL")
        .arg("{alerts}:recent")
        .query_async(&mut conn)
        .await?;
    let (id, _) = stack.enqueue(r#"{"city": "Berlin"}"#, &[]).await?;
    stack.wait_done(&id).await?;
    wait_alerts(&stack.http, &alerts_url, &id, 1, WAIT).await?;
    Ok(())
}

#[tokio::test]
async fn the_alerts_service_rides_out_its_topic_deleted_recreated_and_lost() -> anyhow::Result<()> {
    let mut kafka = KafkaBroker::start().await?;
    let brokers = kafka.brokers();
    let stack = Stack::launch(Options {
        workers: Some(1),
        worker_env: &[
            ("KAFKA_BROKERS", &brokers),
            ("KAFKA_DELIVERY_TIMEOUT_MS", "4000"),
        ],
        ..Options::default()
    })
    .await?;
    let (mut alerts, alerts_url) = start_alerts(
        &stack,
        0,
        &brokers,
        &stack.zipkin.endpoint(),
        &[("ALERT_WIND_KMH", "0")],
    )
    .await?;
    let alert_after = async |what: &str, city: &str, alerts: &mut testkit::ServiceProcess| {
        let (id, _) = stack
            .enqueue(&json!({ "city": city }).to_string(), &[])
            .await?;
        stack.wait_done(&id).await?;
        let got = wait_alerts(&stack.http, &alerts_url, &id, 1, Duration::from_secs(60)).await;
        anyhow::ensure!(
            alerts.is_running(),
            "the alerts service died after {what}:\n{}",
            alerts.logs()
        );
        got.with_context(|| format!("after {what}:\n{}", alerts.logs()))?;
        anyhow::Ok(())
    };
    alert_after("its start", "Lima", &mut alerts).await?;

    // Deleted: the service sees it gone, creates it again, and reads it
    // from its beginning.
    kafka.delete_topic("weather.updated")?;
    wait_metric(
        &stack,
        &alerts_url,
        "alerts_topic_lost_total",
        &[],
        1.0,
        WAIT,
    )
    .await?;
    alert_after(
        "the topic was deleted and created again",
        "Quito",
        &mut alerts,
    )
    .await?;

    // The broker comes back without its data (topics, group offsets).
    kafka.restart_empty().await?;
    wait_metric(
        &stack,
        &alerts_url,
        "alerts_topic_lost_total",
        &[],
        2.0,
        WAIT,
    )
    .await?;
    alert_after("the broker lost its data", "Cairo", &mut alerts).await?;
    Ok(())
}

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
    let mut stack = Stack::start_with_console().await?;
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

    // Killed and started again, the console answers the same from its
    // disk: the trace, the service map and the job page's waterfall.
    let page = |console: String| {
        let id = id.clone();
        async move {
            let html = reqwest::get(format!("{console}/jobs/{id}"))
                .await?
                .text()
                .await?;
            anyhow::Ok(waterfall(&html))
        }
    };
    let before = page(console.url().to_owned()).await?;
    assert_eq!(before.len(), 2 * 9, "a row and a bar a span: {before:?}");
    let dependencies = format!("/api/v2/dependencies?endTs={now_ms}");
    let console = stack.console.as_mut().context("a console")?;
    console.kill_and_restart().await?;
    assert_eq!(
        console.get_ok(&format!("/api/v2/trace/{trace}")).await?,
        json!(spans)
    );
    assert_eq!(console.get_ok(&dependencies).await?, links);
    assert_eq!(page(console.url().to_owned()).await?, before);
    Ok(())
}

/// The span rows and bars of a job page's waterfall, as drawn.
fn waterfall(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for marker in ["<li class=\"span\"", "<span class=\"bar"] {
        let mut rest = html;
        while let Some(at) = rest.find(marker) {
            let tag = &rest[at..];
            let end = tag.find('>').unwrap_or(tag.len());
            out.push(tag[..end].to_owned());
            rest = &tag[end..];
        }
    }
    out
}

#[tokio::test]
async fn the_console_cancels_and_retries_jobs_and_shows_what_waits_and_the_schedules()
-> anyhow::Result<()> {
    let stack = e2e::Stack::launch(e2e::Options {
        console: true,
        worker_env: &[("SCHEDULES", "nightly|0 3 * * *|Reykjavik")],
        ..e2e::Options::default()
    })
    .await?;
    let console = stack.console_url()?;
    // The console's buttons are form posts answered with a redirect.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = |path: &str| {
        let (http, url) = (http.clone(), format!("{console}{path}"));
        async move { Ok::<String, anyhow::Error>(http.get(url).send().await?.text().await?) }
    };

    let (_, delayed) = stack
        .post(r#"{"city": "Lisbon", "delay_secs": 600}"#, &[])
        .await?;
    let delayed = delayed["id"].as_str().context("id")?.to_owned();
    let (failed, _) = stack.enqueue(r#"{"city": "Nowhere Console"}"#, &[]).await?;
    assert_eq!(stack.wait_done(&failed).await?["status"], "failed");

    // What waits: the delayed job with its run time, and the schedule
    // (once the scheduler has seen it) with its next run.
    let deadline = std::time::Instant::now() + WAIT;
    let scheduled = loop {
        let html = page("/scheduled").await?;
        if html.contains("nightly") {
            break html;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no schedule shown: {html}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(scheduled.contains(&delayed), "{scheduled}");
    assert!(scheduled.contains("0 3 * * *") && scheduled.contains("Reykjavik"));
    assert!(scheduled.contains(&format!("/ui/jobs/{delayed}/cancel")));

    let res = http
        .post(format!("{console}/ui/jobs/{delayed}/cancel"))
        .send()
        .await?;
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"],
        format!("/jobs/{delayed}").as_str()
    );
    assert_eq!(stack.job(&delayed).await?["status"], "cancelled");
    let again = http
        .post(format!("{console}/ui/jobs/{delayed}/cancel"))
        .send()
        .await?;
    assert_eq!(again.status(), 409, "the api's refusal is shown");

    let failed_page = page("/failed").await?;
    assert!(failed_page.contains("unknown_place"), "{failed_page}");
    assert!(failed_page.contains(&format!("/ui/jobs/{failed}/retry")));
    let res = http
        .post(format!("{console}/ui/retry"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("error_type=unknown_place")
        .send()
        .await?;
    assert_eq!(res.status(), 303);
    stack
        .wait_job(&failed, "re-driven", |doc| doc["attempts"] == 2)
        .await?;
    // Its page lists both attempts, each with its wait and outcome.
    let trace_page = format!("/ui/jobs/{failed}/trace");
    testkit::eventually(
        "both attempts on the failed job's page",
        WAIT,
        std::time::Duration::from_millis(100),
        || async {
            let html = page(&trace_page).await?;
            let rows = html.matches("data-label=\"Attempt\"").count();
            Ok((rows == 2 && html.matches("unknown_place").count() >= 2).then_some(()))
        },
    )
    .await?;

    // A batch's jobs, shown together, in the order they were sent.
    let sent: serde_json::Value = stack
        .http
        .post(format!("{}/v1/jobs/batch", stack.api_url))
        .json(&json!({ "jobs": [
            { "city": "Tartu" },
            { "city": "Narva", "delay_secs": 600 },
            { "latitude": 58.4, "longitude": 24.5, "priority": "high" },
        ] }))
        .send()
        .await?
        .json()
        .await?;
    let batch = sent["batch_id"].as_str().context("batch_id")?;
    let ids: Vec<&str> = sent["results"]
        .as_array()
        .context("results")?
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3, "{sent}");
    stack.wait_done(ids[0]).await?;
    stack.wait_done(ids[2]).await?;
    let html = page(&format!("/batches/{batch}")).await?;
    let at = |id: &str| {
        html.find(&format!("/jobs/{id}\""))
            .with_context(|| format!("{id} not shown: {html}"))
    };
    assert!(
        at(ids[0])? < at(ids[1])? && at(ids[1])? < at(ids[2])?,
        "in order: {html}"
    );
    for shown in [
        "Tartu",
        "Narva",
        "58.4, 24.5",
        "3 jobs",
        "2 succeeded",
        "1 scheduled",
        "high",
    ] {
        assert!(
            html.contains(shown),
            "{shown:?} not on the batch page: {html}"
        );
    }
    // A batch's jobs run in traces of their own (link mode): a job's
    // waterfall shows its own trace beside the request's. The two traces'
    // spans arrive from different processes, so wait for all of them.
    let trace_page = format!("/ui/jobs/{}/trace", ids[0]);
    testkit::eventually(
        "the job's own trace and the request's on its page",
        WAIT,
        std::time::Duration::from_millis(100),
        || async {
            let html = page(&trace_page).await?;
            match ["process weather", "send weather", "Traces "]
                .into_iter()
                .find(|shown| !html.contains(shown))
            {
                Some(missing) => anyhow::bail!("{missing:?} not shown: {html}"),
                None => Ok(Some(())),
            }
        },
    )
    .await?;
    let job_page = page(&format!("/jobs/{}", ids[1])).await?;
    assert!(
        job_page.contains(&format!("href=\"/batches/{batch}\"")),
        "the job page links to its batch: {job_page}"
    );
    let missing = http
        .get(format!("{console}/batches/no-such-batch"))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);

    // Pause from the Queues page: a job sent meanwhile waits, the worker
    // free; resumed, it runs.
    let queues = page("/queues").await?;
    assert!(queues.contains("/ui/queues/weather/pause"), "{queues}");
    let res = http
        .post(format!("{console}/ui/queues/weather/pause"))
        .send()
        .await?;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/queues");
    let queues = page("/queues").await?;
    assert!(
        queues.contains("queue-paused") && queues.contains("/ui/queues/weather/resume"),
        "{queues}"
    );
    let (_, sent) = stack.post(r#"{"city": "Berlin"}"#, &[]).await?;
    let waiting = sent["id"].as_str().context("id")?.to_owned();
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        assert_eq!(
            stack.job(&waiting).await?["status"],
            "queued",
            "started while paused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let res = http
        .post(format!("{console}/ui/queues/weather/resume"))
        .send()
        .await?;
    assert_eq!(res.status(), 303);
    assert_eq!(stack.wait_done(&waiting).await?["status"], "succeeded");
    Ok(())
}

#[tokio::test]
async fn the_console_passes_its_api_key_on_so_it_can_submit_to_a_guarded_api() -> anyhow::Result<()>
{
    let stack = e2e::Stack::launch(e2e::Options {
        console: true,
        api_env: &[("API_KEYS", "console-key-1,other-key")],
        console_env: &[("CONSOLE_API_KEY", "console-key-1")],
        ..e2e::Options::default()
    })
    .await?;
    let console = stack.console_url()?;
    // Straight to the api without a key: refused.
    let (status, _) = stack.post(r#"{"city": "Oslo"}"#, &[]).await?;
    assert_eq!(status, 401);
    // Through the console: its key goes with it.
    let res = stack
        .http
        .post(format!("{console}/ui/jobs"))
        .header("content-type", "application/json")
        .body(r#"{"city": "Oslo"}"#)
        .send()
        .await?;
    assert_eq!(res.status(), 202);
    let id = res.json::<serde_json::Value>().await?["id"]
        .as_str()
        .context("id")?
        .to_owned();
    assert_eq!(stack.wait_done(&id).await?["status"], "succeeded");
    // The key is nowhere in the pages the browser gets.
    for path in ["/", &format!("/jobs/{id}"), "/static/app.js"] {
        let page = stack
            .http
            .get(format!("{console}{path}"))
            .send()
            .await?
            .text()
            .await?;
        assert!(!page.contains("console-key-1"), "{path} shows the key");
    }
    Ok(())
}

#[tokio::test]
async fn the_jobs_page_searches_by_place_status_and_box_and_keeps_the_search_in_its_url()
-> anyhow::Result<()> {
    let stack = Stack::start_with_console().await?;
    let console = stack.console_url()?;
    let (oslo, _) = stack.enqueue(r#"{"city": "Oslo"}"#, &[]).await?;
    let (bergen, _) = stack
        .enqueue(r#"{"city": "Bergen", "delay_secs": 3600}"#, &[])
        .await?;
    let (coords, _) = stack
        .enqueue(r#"{"latitude": 59.91, "longitude": 10.75}"#, &[])
        .await?;
    stack.wait_done(&oslo).await?;
    let page = |query: &str| {
        let url = format!("{console}/jobs?{query}");
        async move {
            let res = reqwest::get(&url).await?;
            anyhow::Ok((res.status().as_u16(), res.text().await?))
        }
    };
    let (status, html) = page("place=OS").await?;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&oslo) && !html.contains(&bergen), "{html}");
    assert!(
        html.contains(r#"value="OS""#),
        "the filter bar keeps the search"
    );
    let (_, html) = page("status=scheduled").await?;
    assert!(html.contains(&bergen) && !html.contains(&oslo), "{html}");
    assert!(
        html.contains(r#"<option value="scheduled" selected>"#),
        "{html}"
    );
    let (_, html) = page("bbox=10,59,11,60").await?;
    assert!(html.contains(&coords) && !html.contains(&oslo), "{html}");
    let (_, html) = page("order=asc").await?;
    let (first, last) = (html.find(&oslo), html.find(&coords));
    assert!(first < last, "oldest first");
    let (status, html) = page("bbox=1,2").await?;
    assert_eq!(status, 400);
    assert!(html.contains("four numbers"), "{html}");
    Ok(())
}

#[tokio::test]
async fn a_bulk_retry_from_the_jobs_page_is_counted_confirmed_followed_and_traced()
-> anyhow::Result<()> {
    let stack = Stack::start_with_console().await?;
    let console = stack.console_url()?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut failed = Vec::new();
    for n in 0..3 {
        let (id, _) = stack
            .enqueue(&format!(r#"{{"city": "Nowhere Bulk {n}"}}"#), &[])
            .await?;
        failed.push(id);
    }
    let (oslo, _) = stack.enqueue(r#"{"city": "Oslo"}"#, &[]).await?;
    for id in &failed {
        assert_eq!(stack.wait_done(id).await?["status"], "failed");
    }
    assert_eq!(stack.wait_done(&oslo).await?["status"], "succeeded");

    // The Jobs page offers the action; the count comes first.
    let jobs = http
        .get(format!("{console}/jobs?status=failed&place=nowhere"))
        .send()
        .await?
        .text()
        .await?;
    assert!(jobs.contains(r#"action="/jobs/bulk""#), "{jobs}");
    let review = http
        .get(format!(
            "{console}/jobs/bulk?status=failed&place=nowhere&action=retry"
        ))
        .send()
        .await?
        .text()
        .await?;
    assert!(review.contains("3 jobs match this search now"), "{review}");
    assert!(review.contains("Retry 3 jobs"), "{review}");

    // Confirmed, it runs and its page follows it to the end.
    let res = http
        .post(format!("{console}/ui/bulk"))
        .form(&[
            ("action", "retry"),
            ("status", "failed"),
            ("place", "nowhere"),
        ])
        .send()
        .await?;
    assert_eq!(res.status(), 303, "{}", res.text().await?);
    let location = res.headers()["location"].to_str()?.to_owned();
    assert!(location.starts_with("/bulk/"), "{location}");
    let deadline = std::time::Instant::now() + WAIT;
    let done = loop {
        let html = http
            .get(format!("{console}{location}"))
            .send()
            .await?
            .text()
            .await?;
        if html.contains(r#"<dd id="bulk-state">done</dd>"#) {
            break html;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "{html}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(done.contains("3 of 3: 3 done, 0 skipped"), "{done}");
    // Each ran again (and failed again: the place is still nowhere).
    for id in &failed {
        let deadline = std::time::Instant::now() + WAIT;
        while stack.job(id).await?["attempts"] != 2 {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{id} did not run again"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    // Its trace: the action, and a page span linked to each job's trace.
    let trace = done
        .split("/traces/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("a trace link")?
        .to_owned();
    let c = stack.console.as_ref().context("a console")?;
    let spans = c
        .wait_trace(&trace, WAIT, |spans| {
            spans.iter().any(|s| s["name"] == "bulk retry page")
        })
        .await?;
    let page_span = one(&spans, "the page span", |s| s["name"] == "bulk retry page");
    let links: Vec<&str> = page_span["tags"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("otel.link."))
        .filter_map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(links.len(), 3, "{page_span}");
    for id in &failed {
        let job_trace = stack.job(id).await?["trace_id"]
            .as_str()
            .context("a trace id")?
            .to_owned();
        assert!(
            links.iter().any(|l| l.starts_with(&job_trace)),
            "{id}: {links:?}"
        );
    }
    assert!(spans.iter().any(|s| s["name"] == "bulk retry"));
    Ok(())
}

//! The console in a real browser: headless Chromium from Debian, driven
//! over WebDriver (chromedriver). A place is submitted with the keyboard
//! alone, the job is seen to succeed live, and its page shows the trace as
//! a waterfall starting at the browser's own span, with spans of the api,
//! the worker and the weather stub. Screenshots are saved under the target
//! directory (`screenshots/`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::{Stack, WAIT};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use testkit::{ServiceProcess, free_port};

/// chromedriver on a free port (Debian: `apt-get install -y chromium
/// chromium-driver`).
async fn chromedriver() -> anyhow::Result<(ServiceProcess, String)> {
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let driver = ServiceProcess::start_with_args(
        "chromedriver",
        "chromedriver",
        &[format!("--port={port}")],
        &[],
        &format!("{url}/status"),
    )
    .await
    .context("chromedriver (Debian: apt-get install -y chromium chromium-driver)")?;
    Ok((driver, url))
}

async fn browser(driver: &str, profile: &std::path::Path) -> anyhow::Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    Ok(ClientBuilder::rustls()?
        .capabilities(caps)
        .connect(driver)
        .await?)
}

/// Where screenshots go: `<target dir>/screenshots/`.
fn screenshots() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(|deps| deps.parent())
        .and_then(|profile| profile.parent())
        .context("locating the target directory")?;
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Waits until `found` answers something.
async fn until<T, F, Fut>(what: &str, mut found: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = found().await? {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("no {what} within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_place_submitted_in_the_console_succeeds_and_its_trace_starts_in_the_browser()
-> anyhow::Result<()> {
    let stack = Stack::start_with_console().await?;
    let console = stack.console.as_ref().context("a console")?;
    // Two jobs that fail, for the bulk retry.
    for n in 0..2 {
        let (id, _) = stack
            .enqueue(&format!(r#"{{"city": "Nowhere Browser {n}"}}"#), &[])
            .await?;
        assert_eq!(stack.wait_done(&id).await?["status"], "failed");
    }
    let (_driver, driver_url) = chromedriver().await?;
    let profile = std::env::temp_dir().join(format!("e2e-chromium-{}", std::process::id()));
    let client = browser(&driver_url, &profile).await?;
    let shots = screenshots()?;
    let result = drive(&client, console.url(), &shots).await;
    let _ = client.close().await;
    let _ = std::fs::remove_dir_all(&profile);
    result
}

async fn drive(client: &Client, console: &str, shots: &std::path::Path) -> anyhow::Result<()> {
    client.goto(console).await?;
    // The keyboard alone: type the place, Tab to the units, Tab to the
    // priority, Tab to the button, Enter.
    let places = client.find(Locator::Css("#places")).await?;
    places.clear().await?;
    places.click().await?;
    places.send_keys("Oslo").await?;
    let tab = char::from(Key::Tab).to_string();
    let enter = char::from(Key::Enter).to_string();
    let active = client.active_element().await?;
    active.send_keys(&tab).await?;
    let units = client.active_element().await?;
    assert_eq!(
        units.attr("id").await?.as_deref(),
        Some("units"),
        "Tab reaches the units"
    );
    units.send_keys(&tab).await?;
    let priority = client.active_element().await?;
    assert_eq!(
        priority.attr("id").await?.as_deref(),
        Some("priority"),
        "Tab reaches the priority"
    );
    priority.send_keys(&tab).await?;
    let button = client.active_element().await?;
    assert_eq!(button.text().await?, "Submit", "then the button");
    button.send_keys(&enter).await?;

    let status = until("a succeeded job in the list", || async {
        let cells = client
            .find_all(Locator::Css("#jobs tbody td[data-label=Status]"))
            .await?;
        for c in cells {
            let text = c.text().await?;
            if text == "succeeded" {
                return Ok(Some(text));
            }
            if text.starts_with("refused") || text.starts_with("not sent") || text == "failed" {
                bail!("the job did not go through: {text}");
            }
        }
        Ok(None)
    })
    .await?;
    assert_eq!(status, "succeeded");
    std::fs::write(shots.join("console-submit.png"), client.screenshot().await?)?;

    let job = client
        .find(Locator::Css("#jobs tbody td[data-label=Job] a"))
        .await?;
    job.click().await?;
    // The trace fills in as spans arrive: the browser's, the api's, the
    // worker's and the stub's.
    let services = until("a complete waterfall", || async {
        let legend = client.find_all(Locator::Css(".legend li")).await?;
        let mut names = Vec::new();
        for li in legend {
            names.push(li.text().await?);
        }
        let rows = client
            .find_all(Locator::Css(".waterfall > li"))
            .await?
            .len();
        Ok((rows >= 10 && names.len() == 4).then_some(names))
    })
    .await?;
    assert_eq!(services, ["api", "browser", "weather-stub", "worker"]);
    let first = client
        .find(Locator::Css(".waterfall > li:first-child .name"))
        .await?
        .text()
        .await?;
    assert!(
        first.starts_with("browser submit job"),
        "the waterfall starts at the click: {first}"
    );
    let status = client.find(Locator::Css("#status")).await?.text().await?;
    assert_eq!(status, "succeeded");

    // A span opens on its tags: the CONSUMER span names its queue.
    let consumer = client
        .find(Locator::XPath(
            "//li[contains(@class,'span')][.//span[contains(@class,'kind-consumer')]]",
        ))
        .await?;
    consumer
        .find(Locator::Css("summary"))
        .await?
        .click()
        .await?;
    let details = consumer
        .find(Locator::Css(".details"))
        .await?
        .text()
        .await?;
    assert!(details.contains("messaging.destination.name"), "{details}");
    assert!(details.contains("weather"), "{details}");
    let png = client.screenshot().await?;
    let path = shots.join("console-job.png");
    std::fs::write(&path, png)?;
    println!("screenshot: {}", path.display());

    // Dark mode: the header's toggle goes auto, dark, light; the choice
    // holds from page to page.
    let background = || async {
        let v = client
            .execute(
                "return getComputedStyle(document.documentElement).backgroundColor",
                vec![],
            )
            .await?;
        anyhow::Ok(v.as_str().unwrap_or_default().to_owned())
    };
    let light = background().await?;
    assert_eq!(
        light, "rgb(255, 255, 255)",
        "the system's theme (light) first"
    );
    let toggle = client.find(Locator::Id("theme")).await?;
    assert_eq!(toggle.text().await?, "Theme: auto");
    toggle.click().await?;
    assert_eq!(toggle.text().await?, "Theme: dark");
    assert_eq!(background().await?, "rgb(13, 17, 23)");
    std::fs::write(
        shots.join("console-job-dark.png"),
        client.screenshot().await?,
    )?;
    client.goto(&format!("{console}/map")).await?;
    assert_eq!(background().await?, "rgb(13, 17, 23)", "remembered");
    std::fs::write(
        shots.join("console-map-dark.png"),
        client.screenshot().await?,
    )?;
    let toggle = client.find(Locator::Id("theme")).await?;
    toggle.click().await?;
    assert_eq!(toggle.text().await?, "Theme: light");
    assert_eq!(background().await?, light);
    toggle.click().await?;
    assert_eq!(toggle.text().await?, "Theme: auto");

    for (page, heading) in [
        ("/queues", "Queues"),
        ("/workers", "Workers"),
        ("/failed", "Failed jobs"),
        ("/map", "Service map"),
    ] {
        client.goto(&format!("{console}{page}")).await?;
        let h1 = client.find(Locator::Css("h1")).await?.text().await?;
        assert_eq!(h1, heading);
    }
    let edges = client.find(Locator::Css("ul.edges")).await?.text().await?;
    assert!(edges.contains("redis calls worker"), "{edges}");
    std::fs::write(shots.join("console-map.png"), client.screenshot().await?)?;

    // Pause and resume from the Queues page.
    client.goto(&format!("{console}/queues")).await?;
    client
        .find(Locator::XPath(
            "//button[normalize-space()='Pause the queue']",
        ))
        .await?
        .click()
        .await?;
    let notice = until("the paused notice", || async {
        Ok(client
            .find_all(Locator::Id("queue-paused"))
            .await?
            .into_iter()
            .next())
    })
    .await?;
    assert!(notice.text().await?.starts_with("Paused"));
    std::fs::write(shots.join("console-paused.png"), client.screenshot().await?)?;
    client
        .find(Locator::XPath(
            "//button[normalize-space()='Resume the queue']",
        ))
        .await?
        .click()
        .await?;
    until("the queue running again", || async {
        let pause = client
            .find_all(Locator::XPath(
                "//button[normalize-space()='Pause the queue']",
            ))
            .await?;
        let paused = client.find_all(Locator::Id("queue-paused")).await?;
        Ok((!pause.is_empty() && paused.is_empty()).then_some(()))
    })
    .await?;

    // Job search: the city's first letters and a status, typed and
    // chosen; the search is in the URL, and a row opens on its job.
    client.goto(&format!("{console}/jobs")).await?;
    let place = client.find(Locator::Css("input[name=place]")).await?;
    place.send_keys("os").await?;
    client
        .find(Locator::Css("select[name=status] option[value=succeeded]"))
        .await?
        .click()
        .await?;
    place.send_keys(&Key::Enter.to_string()).await?;
    let found = until("jobs found", || async {
        let rows = client.find_all(Locator::Css("table.jobs tbody tr")).await?;
        Ok((!rows.is_empty()).then_some(rows.len()))
    })
    .await?;
    assert!(found >= 1);
    let url = client.current_url().await?;
    assert!(
        url.as_str().contains("place=os") && url.as_str().contains("status=succeeded"),
        "the search is in the URL: {url}"
    );
    let cell = client
        .find(Locator::Css(
            "table.jobs tbody tr:first-child td[data-label=Place]",
        ))
        .await?
        .text()
        .await?;
    assert_eq!(cell, "Oslo");
    std::fs::write(shots.join("console-jobs.png"), client.screenshot().await?)?;
    client
        .find(Locator::Css("table.jobs tbody tr:first-child a"))
        .await?
        .click()
        .await?;
    until("the job's page", || async {
        let read = async { client.find(Locator::Css("h1")).await?.text().await };
        Ok(read
            .await
            .is_ok_and(|h1| h1.starts_with("Job "))
            .then_some(()))
    })
    .await?;

    // A bulk retry of the failed jobs found: counted, confirmed, followed.
    client
        .goto(&format!("{console}/jobs?status=failed&place=nowhere"))
        .await?;
    client
        .find(Locator::Css(
            "form.bulk select[name=action] option[value=retry]",
        ))
        .await?
        .click()
        .await?;
    client
        .find(Locator::Css("form.bulk button"))
        .await?
        .click()
        .await?;
    // Until the next page is in: a heading read as the page changes may
    // be gone (stale) by the time its text is asked for.
    until("the count to confirm", || async {
        let read = async { client.find(Locator::Css("h1")).await?.text().await };
        Ok(read
            .await
            .is_ok_and(|h1| h1 == "Retry 2 jobs?")
            .then_some(()))
    })
    .await?;
    client
        .find(Locator::Css("main form.action button"))
        .await?
        .click()
        .await?;
    // The page refreshes its live part, so an element read may have been
    // replaced meanwhile (stale): read again on the next turn.
    let progress = until("the bulk retry done", || async {
        let read = async {
            let state = client.find(Locator::Id("bulk-state")).await?.text().await?;
            let progress = client
                .find(Locator::Id("bulk-progress"))
                .await?
                .text()
                .await?;
            anyhow::Ok((state, progress))
        };
        Ok(match read.await {
            Ok((state, progress)) if state == "done" => Some(progress),
            _ => None,
        })
    })
    .await?;
    assert_eq!(progress, "2 of 2: 2 done, 0 skipped");
    std::fs::write(shots.join("console-bulk.png"), client.screenshot().await?)?;

    // Trace search: the worker's traces, filled in with the keyboard;
    // the first opens on its waterfall.
    client.goto(&format!("{console}/traces")).await?;
    let service = client.find(Locator::Css("input[name=service]")).await?;
    service.send_keys("worker").await?;
    service.send_keys(&Key::Enter.to_string()).await?;
    let found = until("traces found", || async {
        let rows = client.find_all(Locator::Css("#traces tbody tr")).await?;
        Ok((!rows.is_empty()).then_some(rows.len()))
    })
    .await?;
    assert!(found >= 1);
    assert!(
        client
            .current_url()
            .await?
            .as_str()
            .contains("service=worker"),
        "the search is in the URL"
    );
    std::fs::write(shots.join("console-traces.png"), client.screenshot().await?)?;
    client
        .find(Locator::Css("#traces tbody tr:first-child a"))
        .await?
        .click()
        .await?;
    let h1 = client.find(Locator::Css("h1")).await?.text().await?;
    assert!(h1.starts_with("Trace "), "{h1}");
    assert!(
        !client
            .find_all(Locator::Css(".waterfall > li"))
            .await?
            .is_empty()
    );
    Ok(())
}

/// Logs in on the login page the browser was sent to.
async fn log_in(client: &Client, user: &str, password: &str) -> anyhow::Result<()> {
    let url = client.current_url().await?;
    anyhow::ensure!(url.path() == "/login", "not on the login page: {url}");
    client
        .find(Locator::Css("#user"))
        .await?
        .send_keys(user)
        .await?;
    client
        .find(Locator::Css("#password"))
        .await?
        .send_keys(password)
        .await?;
    client
        .find(Locator::Css("form.login button"))
        .await?
        .click()
        .await?;
    until("the page after the login", || async {
        Ok((client.current_url().await?.path() != "/login").then_some(()))
    })
    .await
}

/// The texts of the page's action buttons.
async fn action_buttons(client: &Client) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for b in client
        .find_all(Locator::Css("main form.action button"))
        .await?
    {
        out.push(b.text().await?);
    }
    Ok(out)
}

#[tokio::test]
async fn a_viewer_sees_no_buttons_an_operator_cancels_and_a_form_from_another_port_is_refused()
-> anyhow::Result<()> {
    let users = e2e::users::viewer_and_operator()?;
    let stack = e2e::Stack::launch(e2e::Options {
        console: true,
        console_env: &[("CONSOLE_USERS", &users)],
        ..e2e::Options::default()
    })
    .await?;
    let console = stack.console_url()?;
    let later = r#"{"city": "Oslo", "delay_secs": 3600}"#;
    let (job, _) = stack.enqueue(later, &[]).await?;
    let (target, _) = stack.enqueue(later, &[]).await?;

    // A page on another loopback port whose form posts to the console.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let attacker = format!("http://{}", listener.local_addr()?);
    let page = format!(
        r#"<!doctype html><form id="f" method="post" action="{console}/ui/jobs/{target}/cancel"></form><script>document.getElementById("f").submit()</script>"#
    );
    let site = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(page) }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, site).await });

    let (_driver, driver_url) = chromedriver().await?;
    let profile = std::env::temp_dir().join(format!("e2e-chromium-roles-{}", std::process::id()));
    let client = browser(&driver_url, &profile).await?;
    let shots = screenshots()?;
    let result = roles(&client, &stack, &console, &job, &target, &attacker, &shots).await;
    let _ = client.close().await;
    let _ = std::fs::remove_dir_all(&profile);
    server.abort();
    result
}

async fn roles(
    client: &Client,
    stack: &e2e::Stack,
    console: &str,
    job: &str,
    target: &str,
    attacker: &str,
    shots: &std::path::Path,
) -> anyhow::Result<()> {
    // A viewer: the job's page, with no buttons.
    client.goto(&format!("{console}/jobs/{job}")).await?;
    log_in(client, "ann", "ann's secret").await?;
    assert_eq!(client.current_url().await?.path(), format!("/jobs/{job}"));
    let status = client.find(Locator::Css("#status")).await?.text().await?;
    assert_eq!(status, "scheduled");
    assert_eq!(action_buttons(client).await?, Vec::<String>::new());
    std::fs::write(shots.join("console-viewer.png"), client.screenshot().await?)?;
    client
        .find(Locator::Css("header form button"))
        .await?
        .click()
        .await?;
    until("the login page after logging out", || async {
        Ok((client.current_url().await?.path() == "/login").then_some(()))
    })
    .await?;

    // An operator cancels it.
    client.goto(&format!("{console}/jobs/{job}")).await?;
    log_in(client, "otto", "otto's secret").await?;
    assert_eq!(action_buttons(client).await?, ["Cancel this job"]);
    client
        .find(Locator::Css("main form.action button"))
        .await?
        .click()
        .await?;
    stack
        .wait_job(job, "cancelled", |doc| doc["status"] == "cancelled")
        .await?;

    // Still logged in as the operator, the browser opens a page on another
    // port whose form posts to the console by itself: refused.
    client.goto(attacker).await?;
    let refused = until("the console's answer to the forged form", || async {
        let url = client.current_url().await?;
        if !url.as_str().starts_with(console) {
            return Ok(None);
        }
        let body = client.find(Locator::Css("body")).await?.text().await?;
        Ok(Some(body))
    })
    .await?;
    assert!(refused.contains("may not change anything"), "{refused}");
    assert_eq!(stack.job(target).await?["status"], "scheduled");
    Ok(())
}

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
    Ok(())
}

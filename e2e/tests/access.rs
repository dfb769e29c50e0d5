//! Who may use the console, against the real binary: users and roles
//! (HTTP Basic and the login page's session), cross-site requests, the
//! CSRF token, slowed failed logins, the refusal to serve beyond loopback
//! without users, the `Host` check, and the capped event streams.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::{Options, Stack};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use testkit::{ServiceProcess, free_port, project_binary};

/// A stack whose console has the two users.
async fn stack_with_users() -> anyhow::Result<Stack> {
    let users = e2e::users::viewer_and_operator()?;
    Stack::launch(Options {
        console: true,
        console_env: &[("CONSOLE_USERS", &users)],
        ..Options::default()
    })
    .await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// The value of the session cookie a login set.
fn session_cookie(headers: &HeaderMap) -> anyhow::Result<String> {
    let set = headers
        .get(SET_COOKIE)
        .context("a Set-Cookie")?
        .to_str()?
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    Ok(set.split(';').next().context("a cookie")?.to_owned())
}

/// The page's CSRF token (`<meta name="csrf-token" content="...">`).
fn csrf_of(page: &str) -> anyhow::Result<String> {
    let at = page
        .find(r#"name="csrf-token" content=""#)
        .context("a csrf-token meta")?;
    let rest = &page[at + r#"name="csrf-token" content=""#.len()..];
    Ok(rest[..rest.find('"').context("its end")?].to_owned())
}

async fn login(
    http: &reqwest::Client,
    console: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<reqwest::Response> {
    Ok(http
        .post(format!("{console}/login"))
        .form(&[("user", user), ("password", password), ("next", "/queues")])
        .send()
        .await?)
}

#[tokio::test]
async fn a_viewer_reads_every_page_and_trace_but_may_not_act() -> anyhow::Result<()> {
    let stack = stack_with_users().await?;
    let console = stack.console_url()?;
    let http = client();
    let (id, trace) = stack.enqueue(r#"{"city": "Oslo"}"#, &[]).await?;
    stack.wait_done(&id).await?;

    // Nobody: a script gets 401 with a Basic challenge, a browser the
    // login page.
    let res = http
        .get(format!("{console}/api/v2/services"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()?
            .starts_with("Basic realm=\"console\"")
    );
    let res = http
        .get(format!("{console}/jobs/{id}"))
        .header("accept", "text/html")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers()[LOCATION].to_str()?,
        format!("/login?next=%2Fjobs%2F{id}")
    );

    // The viewer reads pages and traces...
    for path in [
        format!("/jobs/{id}"),
        "/queues".to_owned(),
        "/failed".to_owned(),
        format!("/api/v2/trace/{trace}"),
        "/api/v2/services".to_owned(),
    ] {
        let res = http
            .get(format!("{console}{path}"))
            .basic_auth("ann", Some("ann's secret"))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let page = http
        .get(format!("{console}/"))
        .basic_auth("ann", Some("ann's secret"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        !page.contains(r#"<form id="submit""#),
        "no submit form for a viewer"
    );
    // ...and may not act.
    let res = http
        .post(format!("{console}/ui/jobs"))
        .basic_auth("ann", Some("ann's secret"))
        .header("content-type", "application/json")
        .body(r#"{"city": "Oslo"}"#)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.headers()["content-type"].to_str()?,
        "application/problem+json"
    );
    // An operator may (no browser, no session: no CSRF token needed).
    let res = http
        .post(format!("{console}/ui/jobs"))
        .basic_auth("otto", Some("otto's secret"))
        .header("content-type", "application/json")
        .body(r#"{"city": "Oslo"}"#)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "{}", res.text().await?);

    // Services still post their spans with no login; health and metrics
    // stay open.
    let res = http
        .post(format!("{console}/api/v2/spans"))
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    for open in ["/healthz", "/metrics", "/login"] {
        let res = http.get(format!("{console}{open}")).send().await?;
        assert_eq!(res.status(), StatusCode::OK, "{open}");
    }
    Ok(())
}

#[tokio::test]
async fn an_operator_logs_in_acts_with_the_pages_csrf_token_and_logs_out() -> anyhow::Result<()> {
    let stack = stack_with_users().await?;
    let console = stack.console_url()?;
    let http = client();

    let res = login(&http, &console, "otto", "otto's secret").await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION].to_str()?, "/queues");
    let cookie = session_cookie(res.headers())?;
    let page = http
        .get(format!("{console}/"))
        .header("cookie", &cookie)
        .send()
        .await?
        .text()
        .await?;
    assert!(page.contains("otto (operator)"), "who is logged in");
    let csrf = csrf_of(&page)?;

    // A post with the session but no token is refused; with it, it goes.
    let post = |token: Option<&str>| {
        let mut req = http
            .post(format!("{console}/ui/jobs"))
            .header("cookie", &cookie)
            .header("content-type", "application/json")
            .body(r#"{"city": "Oslo", "delay_secs": 3600}"#);
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        req.send()
    };
    assert_eq!(post(None).await?.status(), StatusCode::FORBIDDEN);
    assert_eq!(post(Some("forged")).await?.status(), StatusCode::FORBIDDEN);
    let res = post(Some(&csrf)).await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id = res.json::<serde_json::Value>().await?["id"]
        .as_str()
        .context("an id")?
        .to_owned();

    // The job page's cancel button is a form with the token in it.
    let job_page = http
        .get(format!("{console}/jobs/{id}"))
        .header("cookie", &cookie)
        .send()
        .await?
        .text()
        .await?;
    assert!(
        job_page.contains(&format!(r#"name="csrf" value="{csrf}""#)),
        "the form carries the token"
    );
    let cancel = |token: &str| {
        http.post(format!("{console}/ui/jobs/{id}/cancel"))
            .header("cookie", &cookie)
            .form(&[("csrf", token)])
            .send()
    };
    assert_eq!(cancel("forged").await?.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        stack.job(&id).await?["status"],
        "scheduled",
        "a refused post changed nothing"
    );
    assert_eq!(cancel(&csrf).await?.status(), StatusCode::SEE_OTHER);
    assert_eq!(stack.job(&id).await?["status"], "cancelled");

    // Logout ends the session: the cookie no longer works.
    let res = http
        .post(format!("{console}/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(res.headers()[SET_COOKIE].to_str()?.contains("Max-Age=0"));
    let res = http
        .get(format!("{console}/queues"))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn repeated_failed_logins_are_slowed_counted_and_logged_without_the_password()
-> anyhow::Result<()> {
    let mut stack = stack_with_users().await?;
    let console = stack.console_url()?;
    let http = client();
    for _ in 0..2 {
        let res = login(&http, &console, "otto", "guess-1234").await?;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = http
        .get(format!("{console}/queues"))
        .basic_auth("otto", Some("guess-5678"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "Basic counts too");
    // Three failures in a row: now even the right password waits.
    let res = login(&http, &console, "otto", "otto's secret").await?;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let after: u64 = res.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=300).contains(&after), "Retry-After: {after}");

    let metrics = http
        .get(format!("{console}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("console_login_failures_total 3"),
        "{metrics}"
    );
    let logs = stack
        .console
        .as_mut()
        .context("a console")?
        .process()
        .logs();
    assert!(logs.contains("login failed"), "{logs}");
    assert!(!logs.contains("guess-1234") && !logs.contains("guess-5678"));
    Ok(())
}

#[tokio::test]
async fn a_cross_site_request_is_refused_whatever_its_credentials() -> anyhow::Result<()> {
    let stack = stack_with_users().await?;
    let console = stack.console_url()?;
    let host = console.trim_start_matches("http://").to_owned();
    let http = client();
    let post = |headers: Vec<(&'static str, String)>| {
        let mut req = http
            .post(format!("{console}/ui/retry"))
            .basic_auth("otto", Some("otto's secret"))
            .form(&[("error_type", "none")]);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let other_port = format!("http://127.0.0.1:{}", free_port()?);
    for refused in [
        vec![("sec-fetch-site", "cross-site".to_owned())],
        vec![("sec-fetch-site", "same-site".to_owned())],
        vec![("origin", other_port.clone())],
        vec![("origin", "null".to_owned())],
    ] {
        let res = post(refused.clone()).await?;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{refused:?}");
    }
    let own = vec![
        ("origin", format!("http://{host}")),
        ("sec-fetch-site", "same-origin".to_owned()),
    ];
    assert_eq!(post(own).await?.status(), StatusCode::SEE_OTHER);

    // A browser's post of spans from another site is refused too.
    let res = http
        .post(format!("{console}/api/v2/spans"))
        .header("content-type", "application/json")
        .header("origin", other_port)
        .body("[]")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    Ok(())
}

#[tokio::test]
async fn without_users_the_console_serves_loopback_only_and_its_own_host_names()
-> anyhow::Result<()> {
    let bin = project_binary("console")?;
    let port = free_port()?;
    let out = Command::new(&bin)
        .env("CONSOLE_LISTEN", format!("0.0.0.0:{port}"))
        .env_remove("CONSOLE_USERS")
        .env_remove("CONSOLE_AUTH")
        .env("OTEL_TRACES_EXPORTER", "none")
        .env("REDIS_URL", "redis://127.0.0.1:1/")
        .output()?;
    assert!(!out.status.success(), "it must refuse to start");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("CONSOLE_USERS"), "{said}");
    assert!(said.contains("CONSOLE_AUTH=off"), "{said}");

    // Told so, it serves every address, and warns.
    let open = ServiceProcess::start(
        "console",
        bin.to_str().context("path")?,
        &[
            ("CONSOLE_LISTEN", format!("0.0.0.0:{port}")),
            ("CONSOLE_AUTH", "off".to_owned()),
            ("CONSOLE_ALLOWED_HOSTS", "console".to_owned()),
            ("OTEL_TRACES_EXPORTER", "none".to_owned()),
            ("REDIS_URL", "redis://127.0.0.1:1/".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ],
        &format!("http://127.0.0.1:{port}/healthz"),
    )
    .await?;
    let logs = open.logs();
    assert!(logs.contains("CONSOLE_AUTH=off"), "{logs}");

    // A name it does not answer to (DNS rebinding) is refused.
    let http = client();
    let get = |host: &str| {
        http.get(format!("http://127.0.0.1:{port}/api/v2/services"))
            .header("host", host.to_owned())
            .send()
    };
    assert_eq!(
        get("evil.example:9411").await?.status(),
        StatusCode::MISDIRECTED_REQUEST
    );
    for ok in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "console:9411".to_owned(),
    ] {
        assert_eq!(get(&ok).await?.status(), StatusCode::OK, "{ok}");
    }
    Ok(())
}

#[tokio::test]
async fn a_job_stream_refuses_what_is_not_a_job_at_once_and_open_streams_are_capped()
-> anyhow::Result<()> {
    let stack = Stack::launch(Options {
        console: true,
        console_env: &[("CONSOLE_MAX_STREAMS", "2")],
        ..Options::default()
    })
    .await?;
    let console = stack.console_url()?;
    let http = client();
    let started = Instant::now();
    for bad in ["not..a..job", "0123456789abcdef0123456789abcdef"] {
        let res = http
            .get(format!("{console}/ui/jobs/{bad}/events"))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{bad}");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "at once");

    let (id, _) = stack
        .enqueue(r#"{"city": "Oslo", "delay_secs": 3600}"#, &[])
        .await?;
    let url = format!("{console}/ui/jobs/{id}/events");
    let open = [http.get(&url).send().await?, http.get(&url).send().await?];
    for res in &open {
        assert_eq!(res.status(), StatusCode::OK);
    }
    let third = http.get(&url).send().await?;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(open);
    // Closed streams free their places.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = http.get(&url).send().await?;
        if res.status() == StatusCode::OK {
            break;
        }
        if Instant::now() > deadline {
            bail!("a closed stream's place was never freed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

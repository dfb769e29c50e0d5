//! The api binary as a process, on a loopback port, against its own
//! `redis-server`, exporting spans to a Zipkin collector stand-in: what a
//! caller and an operator see from outside.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use testkit::{RedisServer, ServiceProcess, ZipkinCollector, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long anything may take to show.
const WAIT: Duration = Duration::from_secs(20);

struct ServedApi {
    _redis: RedisServer,
    zipkin: ZipkinCollector,
    process: ServiceProcess,
    url: String,
    http: reqwest::Client,
}

impl ServedApi {
    /// Starts the api with `env` on top of a test's defaults (JSON logs at
    /// every level, spans exported within 50 ms).
    async fn start(env: &[(&'static str, &str)]) -> anyhow::Result<Self> {
        let redis = RedisServer::start().await?;
        let zipkin = ZipkinCollector::start().await?;
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut vars = vec![
            ("API_LISTEN", format!("127.0.0.1:{port}")),
            ("REDIS_URL", redis.url()),
            ("OTEL_TRACES_EXPORTER", "zipkin".into()),
            ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", zipkin.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "trace".into()),
        ];
        vars.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let process = ServiceProcess::start(
            "api",
            env!("CARGO_BIN_EXE_api"),
            &vars,
            &format!("{url}/readyz"),
        )
        .await?;
        Ok(Self {
            _redis: redis,
            zipkin,
            process,
            url,
            http: reqwest::Client::new(),
        })
    }

    /// Posts a job with `headers`; answers the response.
    async fn post(
        &self,
        body: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .post(format!("{}/v1/jobs", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Ok(req.send().await?)
    }
}

/// A `POST /v1/jobs` whose client sent the head and half the body, then
/// went quiet: the api is handling it (it holds a place in flight) until
/// the rest arrives.
struct HalfSentJob(TcpStream);

impl HalfSentJob {
    const BODY: &str = r#"{"city": "Oslo"}"#;

    async fn start(api: &ServedApi) -> anyhow::Result<Self> {
        let addr = api.url.trim_start_matches("http://");
        let mut conn = TcpStream::connect(addr).await?;
        let head = format!(
            "POST /v1/jobs HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            Self::BODY.len()
        );
        conn.write_all(head.as_bytes()).await?;
        conn.write_all(&Self::BODY.as_bytes()[..5]).await?;
        conn.flush().await?;
        Ok(Self(conn))
    }

    /// The status line of the api's answer, without sending the rest.
    async fn answer(mut self) -> anyhow::Result<String> {
        let mut answer = String::new();
        tokio::time::timeout(WAIT, self.0.read_to_string(&mut answer)).await??;
        Ok(answer.lines().next().unwrap_or_default().to_owned())
    }
}

/// A job the api pushes and then waits on: the api runs with
/// `QUEUE_WAIT_REPLICAS=1` on a server without replicas, so each push
/// waits `QUEUE_WAIT_TIMEOUT_MS` for a replica that never confirms (on a
/// connection of its own: the other commands go on), holding its place in
/// flight all that time, and then answers 503.
struct HeldJob(tokio::task::JoinHandle<reqwest::Result<u16>>);

impl HeldJob {
    /// How long the api waits for the replica that is not there.
    const HOLD_MS: &str = "4000";

    fn start(api: &ServedApi) -> Self {
        let request = api
            .http
            .post(format!("{}/v1/jobs", api.url))
            .header("content-type", "application/json")
            .body(r#"{"city": "Oslo"}"#);
        Self(tokio::spawn(async move {
            Ok(request.send().await?.status().as_u16())
        }))
    }

    fn answered(&self) -> bool {
        self.0.is_finished()
    }

    async fn finish(self) -> anyhow::Result<u16> {
        Ok(self.0.await??)
    }
}

/// The SERVER spans received with `status` as their HTTP status.
fn answered(spans: &[Value], status: &str) -> usize {
    spans
        .iter()
        .filter(|s| s["kind"] == "SERVER" && s["tags"]["http.response.status_code"] == status)
        .count()
}

#[tokio::test]
async fn api_keys_never_reach_the_logs_or_the_spans() -> anyhow::Result<()> {
    let (alpha, beta, guess) = (
        "sk-alpha-4f9d2a7be1c3",
        "sk-beta-90ce6d15aa27",
        "sk-guess-7e21b04c9f58",
    );
    let keys = format!("{alpha},{beta}");
    let api = ServedApi::start(&[("API_KEYS", &keys)]).await?;
    let job = r#"{"city": "Lisbon"}"#;

    let bearer = format!("Bearer {alpha}");
    let a = api.post(job, &[("authorization", &bearer)]).await?;
    assert_eq!(a.status(), 202);
    let id = a.json::<Value>().await?["id"]
        .as_str()
        .context("id")?
        .to_owned();
    let b = api.post(job, &[("x-api-key", beta)]).await?;
    assert_eq!(b.status(), 202);
    let wrong = format!("Bearer {guess}");
    let c = api.post(job, &[("authorization", &wrong)]).await?;
    assert_eq!(c.status(), 401);
    let refusal = c.text().await?;
    assert!(!refusal.contains(guess), "{refusal}");
    let read = api
        .http
        .get(format!("{}/v1/jobs/{id}", api.url))
        .header("authorization", &bearer)
        .header("x-api-key", beta)
        .send()
        .await?;
    assert_eq!(read.status(), 200);

    let ServedApi {
        process, zipkin, ..
    } = api;
    let logs = process.logs();
    process.stop(Duration::from_secs(10)).await?;
    let spans = zipkin
        .wait_for(WAIT, "the SERVER spans of the four requests", |spans| {
            (answered(spans, "202") == 2
                && answered(spans, "401") == 1
                && answered(spans, "200") >= 1)
                .then(|| spans.to_vec())
        })
        .await?;

    assert!(
        logs.contains("job queued") && logs.contains("refused a request without a valid API key"),
        "the logs were captured:\n{logs}"
    );
    let exported = serde_json::to_string(&spans)?;
    for secret in [alpha, beta, guess] {
        assert!(
            !logs.contains(secret),
            "{secret} is in the api's logs:\n{logs}"
        );
        assert!(
            !exported.contains(secret),
            "{secret} is in the exported spans:\n{exported}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn requests_past_the_in_flight_limit_are_shed_with_503_and_retry_after() -> anyhow::Result<()>
{
    let api = ServedApi::start(&[
        ("API_MAX_IN_FLIGHT", "1"),
        ("QUEUE_WAIT_REPLICAS", "1"),
        ("QUEUE_WAIT_TIMEOUT_MS", HeldJob::HOLD_MS),
    ])
    .await?;
    let mut held = HeldJob::start(&api);

    // Once the held request has its place, anything else limited is shed.
    // (`!` is no job id, so the probe never waits on Redis.) On a busy
    // machine a probe can reach the api before the held request does and
    // take the one place, and the held request is shed instead: then it is
    // sent again.
    let deadline = Instant::now() + WAIT;
    loop {
        let probe = api
            .http
            .get(format!("{}/v1/jobs/!", api.url))
            .send()
            .await?;
        match probe.status().as_u16() {
            503 => break,
            404 if Instant::now() < deadline => {
                if held.answered() {
                    held = HeldJob::start(&api);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => {
                anyhow::bail!("a probe was answered {other}, not 503, while a request was held")
            }
        }
    }

    let shed = api.post(r#"{"city": "Berlin"}"#, &[]).await?;
    assert_eq!(shed.status(), 503);
    let header = |name: &str| {
        shed.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let problem: Value = shed.json().await?;
    assert_eq!(problem["status"], 503);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("try again")),
        "{problem}"
    );

    let health = api.http.get(format!("{}/healthz", api.url)).send().await?;
    assert_eq!(health.status(), 200, "the health check is never shed");
    let ready = api.http.get(format!("{}/readyz", api.url)).send().await?;
    assert_eq!(ready.status(), 200, "nor is the readiness probe");
    let metrics = api.http.get(format!("{}/metrics", api.url)).send().await?;
    assert_eq!(metrics.status(), 200, "the scrape is never shed");
    let page = metrics.text().await?;
    let shed_total = page
        .lines()
        .find_map(|l| l.strip_prefix("http_server_requests_shed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no shed counter in\n{page}"))?;
    assert!(
        shed_total >= 2.0,
        "the probe and the POST were shed: {shed_total}"
    );

    assert_eq!(held.finish().await?, 503, "no replica confirmed it");
    let after = api
        .http
        .get(format!("{}/v1/jobs/!", api.url))
        .send()
        .await?;
    assert_eq!(after.status(), 404, "the place is free again");
    Ok(())
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_hold_no_place_in_flight() -> anyhow::Result<()> {
    let api = ServedApi::start(&[
        ("API_MAX_IN_FLIGHT", "1"),
        ("API_REQUEST_TIMEOUT_SECS", "1"),
    ])
    .await?;
    // A body that stops half way holds no place: the one place serves
    // others meanwhile.
    let half = HalfSentJob::start(&api).await?;
    for city in ["Berlin", "Bergen", "Bern"] {
        let sent = api.post(&format!(r#"{{"city": "{city}"}}"#), &[]).await?;
        assert_eq!(sent.status(), 202, "{city}");
    }
    // Once its second is up, it is answered 408.
    assert_eq!(half.answer().await?, "HTTP/1.1 408 Request Timeout");
    // A head that stops half way: the connection is closed.
    let addr = api.url.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(format!("POST /v1/jobs HTTP/1.1\r\nhost: {addr}\r\n").as_bytes())
        .await?;
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut rest))
        .await
        .context("the connection of a half-sent head was never closed")??;
    // And the api goes on.
    assert_eq!(api.post(r#"{"city": "Oslo"}"#, &[]).await?.status(), 202);
    Ok(())
}

#[test]
fn every_setting_of_the_api_is_in_the_settings_reference() -> anyhow::Result<()> {
    testkit::settings::assert_documented(
        std::path::Path::new(env!("CARGO_BIN_EXE_api")),
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
    )
}

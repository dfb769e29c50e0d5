//! The api binary as a process, on a loopback port, against its own
//! `redis-server`, exporting spans to a Zipkin collector stand-in: what a
//! caller and an operator see from outside.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use testkit::{RedisServer, ServiceProcess, ZipkinCollector, free_port};

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

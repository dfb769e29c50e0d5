//! The project's `console` (the embedded Zipkin-compatible trace store) as
//! a process, with typed helpers for its API.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{ServiceProcess, free_port};

/// A running console, killed when dropped.
#[derive(Debug)]
pub struct Console {
    process: ServiceProcess,
    url: String,
    http: reqwest::Client,
    bin: String,
    settings: Vec<(String, String)>,
    data: Option<DataDir>,
}

/// A console's `CONSOLE_DATA_DIR`, removed when dropped.
#[derive(Debug)]
struct DataDir(std::path::PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Console {
    /// Starts the console binary `bin` on a free loopback port with `env`
    /// added, and waits until it is healthy.
    pub async fn start(bin: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_with(bin, env, None).await
    }

    /// [`Self::start`], keeping its spans on disk (`CONSOLE_DATA_DIR`) in
    /// a temporary directory of its own, removed when dropped.
    pub async fn start_on_disk(bin: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("testkit-console-data-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self::start_with(bin, env, Some(DataDir(dir))).await
    }

    async fn start_with(
        bin: &str,
        env: &[(&str, String)],
        data: Option<DataDir>,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut settings: Vec<(&str, String)> = vec![
            ("CONSOLE_LISTEN", format!("127.0.0.1:{port}")),
            ("OTEL_TRACES_EXPORTER", "none".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        if let Some(dir) = &data {
            settings.push(("CONSOLE_DATA_DIR", dir.0.display().to_string()));
        }
        settings.extend(env.iter().map(|(k, v)| (*k, v.clone())));
        let process =
            ServiceProcess::start("console", bin, &settings, &format!("{url}/healthz")).await?;
        Ok(Self {
            process,
            url,
            http: reqwest::Client::new(),
            bin: bin.to_owned(),
            settings: settings
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            data,
        })
    }

    /// Its data directory, when it keeps spans on disk.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data.as_ref().map(|d| d.0.as_path())
    }

    /// Kills the console (SIGKILL: nothing flushed) and starts it again,
    /// on the same port with the same settings and data directory; waits
    /// until it is healthy (its store read back).
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.process.kill()?;
        let settings: Vec<(&str, String)> = self
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        self.process = ServiceProcess::start(
            "console",
            &self.bin,
            &settings,
            &format!("{}/healthz", self.url),
        )
        .await?;
        Ok(())
    }

    /// Its base URL (`http://127.0.0.1:{port}`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The endpoint to give `OTEL_EXPORTER_ZIPKIN_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("{}/api/v2/spans", self.url)
    }

    /// The process.
    pub fn process(&mut self) -> &mut ServiceProcess {
        &mut self.process
    }

    /// Posts `spans` (a JSON list); answers the status.
    pub async fn post_spans(&self, spans: &Value) -> anyhow::Result<u16> {
        let res = self
            .http
            .post(self.endpoint())
            .header("content-type", "application/json")
            .body(serde_json::to_vec(spans)?)
            .send()
            .await?;
        Ok(res.status().as_u16())
    }

    /// `GET {path}` (from the base URL); answers the status and JSON body
    /// (`Null` when the body is not JSON).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let res = self.http.get(format!("{}{path}", self.url)).send().await?;
        let status = res.status().as_u16();
        Ok((status, res.json().await.unwrap_or(Value::Null)))
    }

    /// `GET {path}`, which must answer 200; answers the JSON body.
    pub async fn get_ok(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.get(path).await?;
        if status != 200 {
            bail!("GET {path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// The value of the unlabelled metric `name` on its `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let page = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await?
            .text()
            .await?;
        page.lines()
            .find(|l| l.split(' ').next() == Some(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .with_context(|| format!("{name} is not on /metrics:\n{page}"))
    }

    /// Waits until trace `id` holds spans that `complete` accepts;
    /// answers them.
    pub async fn wait_trace(
        &self,
        id: &str,
        limit: Duration,
        complete: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + limit;
        loop {
            let (status, body) = self.get(&format!("/api/v2/trace/{id}")).await?;
            if status == 200 {
                let spans = body.as_array().context("a trace is a list")?.clone();
                if complete(&spans) {
                    return Ok(spans);
                }
            }
            if Instant::now() > deadline {
                bail!("trace {id} not complete within {limit:?}; last answer {status}: {body}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// `{bin} hash-password` (the console binary) with `password` on stdin:
/// the PHC string to put in `CONSOLE_USERS`.
pub fn password_hash(bin: &std::path::Path, password: &str) -> anyhow::Result<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(password.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "console hash-password failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

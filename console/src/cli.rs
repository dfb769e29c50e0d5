//! `console trace ID`: a trace as an indented tree in the terminal, read
//! from this console or from any Zipkin.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::store::model::{Span, TraceId};

/// What to print, and where from.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// A trace id (16 or 32 hex digits), or a job id, whose trace id the
    /// api is asked for.
    pub id: String,
    /// The console (or any Zipkin) to read the trace from.
    #[arg(long, env = "CONSOLE_URL", default_value = "http://localhost:9411")]
    pub from: String,
    /// The api, to find a job's trace.
    #[arg(long, env = "API_URL", default_value = "http://localhost:8080")]
    pub api_url: String,
}

/// The tree of the trace `args` names.
pub async fn trace_tree(args: &TraceArgs) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let trace = match TraceId::parse(&args.id) {
        Some(id) => id.to_string(),
        None => {
            let url = format!("{}/v1/jobs/{}", args.api_url.trim_end_matches('/'), args.id);
            let res = http
                .get(&url)
                .send()
                .await
                .with_context(|| format!("asking the api at {url}"))?;
            if !res.status().is_success() {
                bail!(
                    "{} is not a trace id, and the api answered {} for it as a job",
                    args.id,
                    res.status()
                );
            }
            let job: serde_json::Value = res.json().await.context("reading the job")?;
            job["trace_id"]
                .as_str()
                .with_context(|| format!("job {} has no trace id", args.id))?
                .to_owned()
        }
    };
    let url = format!("{}/api/v2/trace/{trace}", args.from.trim_end_matches('/'));
    let res = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("reading {url}"))?;
    if res.status() == reqwest::StatusCode::NOT_FOUND {
        bail!(
            "trace {trace} is not at {} (yet: services send their spans every \
             OTEL_BSP_SCHEDULE_DELAY ms, 5 s by default)",
            args.from
        );
    }
    if !res.status().is_success() {
        bail!("{url} answered {}", res.status());
    }
    let spans: Vec<Span> = res.json().await.context("reading the trace")?;
    Ok(crate::tree::render(&spans))
}

/// `console hash-password`: the argon2id hash (a PHC string) of the
/// password on stdin (its first line), for `CONSOLE_USERS`.
pub fn hash_password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password on stdin: `echo -n 'a long passphrase' | console hash-password`");
    }
    Ok(crate::auth::hash_password(password)?)
}

//! The whole system as processes, for one test.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use testkit::{
    Console, RedisCluster, RedisServer, ServiceProcess, ZipkinCollector, free_port, project_binary,
};

/// How long a job, a trace or a metric may take to appear.
pub const WAIT: Duration = Duration::from_secs(20);

/// Redis, the weather stub, the api and two workers, as processes, with
/// a Zipkin collector stand-in receiving their spans.
pub struct Stack {
    /// Receives every span the services export.
    pub zipkin: ZipkinCollector,
    /// The api process.
    pub api: ServiceProcess,
    /// The worker processes.
    pub workers: Vec<ServiceProcess>,
    /// Base URLs of the workers' `/healthz` and `/metrics`.
    pub worker_urls: Vec<String>,
    /// The weather stub process.
    pub stub: ServiceProcess,
    /// Base URL of the weather stub (with a trailing `/`).
    pub stub_url: String,
    /// Base URL of the api.
    pub api_url: String,
    /// A client for the tests' requests.
    pub http: reqwest::Client,
    /// The console, when the stack was started with one: the services
    /// export their spans to it instead of the collector stand-in.
    pub console: Option<Console>,
    redis: StackRedis,
    setup: WorkerSetup,
}

/// The stack's Redis: one server, or a cluster.
#[derive(Debug)]
enum StackRedis {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl StackRedis {
    fn url(&self) -> String {
        match self {
            Self::Server(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    fn server(&mut self) -> anyhow::Result<&mut RedisServer> {
        match self {
            Self::Server(server) => Ok(server),
            Self::Cluster(_) => bail!("the stack runs on a Redis Cluster, not one server"),
        }
    }

    /// The services' settings: `REDIS_URL`, and `REDIS_CA_CERT` for TLS.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("REDIS_URL", self.url())];
        if let Self::Server(server) = self
            && server.is_tls()
        {
            env.push(("REDIS_CA_CERT", server.ca_path().display().to_string()));
        }
        env
    }

    /// A connection as the services make one (to a server or a cluster).
    async fn connect(&self) -> anyhow::Result<redis_job_queue::RedisConnection> {
        let ca = match self {
            Self::Server(server) if server.is_tls() => Some(server.ca_pem().as_bytes().to_vec()),
            _ => None,
        };
        let target = redis_job_queue::RedisTarget::discover(&self.url(), ca.as_deref()).await?;
        Ok(target.connect().await?)
    }
}

/// Settings a test gives the stack's processes, beside the defaults.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options<'a> {
    /// Extra environment of the weather stub.
    pub stub_env: &'a [(&'static str, &'a str)],
    /// Extra environment of the api.
    pub api_env: &'a [(&'static str, &'a str)],
    /// Extra environment of each worker.
    pub worker_env: &'a [(&'static str, &'a str)],
    /// A console stores the spans (in place of the collector stand-in)
    /// and reads the stack's queue and api.
    pub console: bool,
    /// Extra environment of the console.
    pub console_env: &'a [(&'static str, &'a str)],
    /// Redis keeps its data in an append-only file across
    /// [`Stack::restart_redis`].
    pub persistent_redis: bool,
    /// Redis speaks only TLS and wants a password; the services get a
    /// `rediss://` URL and the CA (`REDIS_CA_CERT`).
    pub tls_redis: bool,
    /// Redis is a Redis Cluster of three masters with a replica each; the
    /// services get every node's URL, comma-separated.
    pub redis_cluster: bool,
    /// `QUEUE_SHARDS` of the api, the workers and the console (1 unless
    /// given).
    pub queue_shards: Option<u16>,
    /// Workers started with the stack (2 unless given); more can be
    /// added with [`Stack::add_worker`].
    pub workers: Option<usize>,
}

/// What starting another worker needs.
#[derive(Debug, Clone)]
struct WorkerSetup {
    env: Vec<(&'static str, String)>,
}

fn owned(env: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Stack {
    /// Starts the stack with the default settings.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[], &[]).await
    }

    /// Starts the stack with extra settings for the stub and the workers.
    pub async fn start_with(
        stub_env: &[(&'static str, &str)],
        worker_env: &[(&'static str, &str)],
    ) -> anyhow::Result<Self> {
        Self::launch(Options {
            stub_env,
            worker_env,
            ..Options::default()
        })
        .await
    }

    /// Starts the stack with extra settings for the api.
    pub async fn start_with_api(api_env: &[(&'static str, &str)]) -> anyhow::Result<Self> {
        Self::launch(Options {
            api_env,
            ..Options::default()
        })
        .await
    }

    /// Starts the stack with a console: it stores the services' spans (in
    /// place of the collector stand-in) and reads the stack's queue and api.
    pub async fn start_with_console() -> anyhow::Result<Self> {
        Self::launch(Options {
            console: true,
            ..Options::default()
        })
        .await
    }

    /// Starts the stack as `options` say.
    pub async fn launch(options: Options<'_>) -> anyhow::Result<Self> {
        let redis = match (
            options.redis_cluster,
            options.persistent_redis,
            options.tls_redis,
        ) {
            (true, _, _) => StackRedis::Cluster(RedisCluster::start(3, 1).await?),
            (false, _, true) => StackRedis::Server(RedisServer::start_tls("stack-password").await?),
            (false, true, false) => StackRedis::Server(RedisServer::start_persistent().await?),
            (false, false, false) => StackRedis::Server(RedisServer::start().await?),
        };
        let mut redis_env = redis.env();
        if let Some(shards) = options.queue_shards {
            redis_env.push(("QUEUE_SHARDS", shards.to_string()));
        }
        let zipkin = ZipkinCollector::start().await?;
        let api_port = free_port()?;
        let api_url = format!("http://127.0.0.1:{api_port}");
        // The console keeps its spans on disk, as scripts/run starts it.
        let console = match options.console {
            true => Some(
                Console::start_on_disk(
                    project_binary("console")?.to_str().context("path")?,
                    &[
                        redis_env.clone(),
                        vec![("API_URL", api_url.clone())],
                        owned(options.console_env),
                    ]
                    .concat(),
                )
                .await?,
            ),
            false => None,
        };
        let endpoint = console
            .as_ref()
            .map_or_else(|| zipkin.endpoint(), Console::endpoint);
        let common = |mut extra: Vec<(&'static str, String)>| {
            extra.extend(redis_env.iter().cloned());
            extra.extend([
                ("OTEL_TRACES_EXPORTER", "zipkin".into()),
                ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", endpoint.clone()),
                ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
                ("LOG_FORMAT", "json".into()),
                ("RUST_LOG", "info".into()),
            ]);
            extra
        };
        let stub_port = free_port()?;
        let stub_url = format!("http://127.0.0.1:{stub_port}/");
        let stub = ServiceProcess::start(
            "weather-stub",
            project_binary("weather-stub")?.to_str().context("path")?,
            &common(
                [
                    vec![("STUB_LISTEN", format!("127.0.0.1:{stub_port}"))],
                    owned(options.stub_env),
                ]
                .concat(),
            ),
            &format!("{stub_url}healthz"),
        )
        .await?;
        let api = ServiceProcess::start(
            "api",
            project_binary("api")?.to_str().context("path")?,
            &common(
                [
                    vec![("API_LISTEN", format!("127.0.0.1:{api_port}"))],
                    owned(options.api_env),
                ]
                .concat(),
            ),
            &format!("{api_url}/readyz"),
        )
        .await?;
        let setup = WorkerSetup {
            env: common(
                [
                    vec![
                        ("GEOCODING_BASE_URL", stub_url.clone()),
                        ("WEATHER_BASE_URL", stub_url.clone()),
                        ("JOB_RETRY_BACKOFF_MS", "100".into()),
                    ],
                    owned(options.worker_env),
                ]
                .concat(),
            ),
        };
        let mut stack = Self {
            zipkin,
            api,
            workers: Vec::new(),
            worker_urls: Vec::new(),
            stub,
            stub_url: stub_url.clone(),
            api_url,
            http: reqwest::Client::new(),
            console,
            redis,
            setup,
        };
        for _ in 0..options.workers.unwrap_or(2) {
            stack.add_worker().await?;
        }
        Ok(stack)
    }

    /// Starts one more worker with the stack's settings; answers its index
    /// in [`Self::workers`].
    pub async fn add_worker(&mut self) -> anyhow::Result<usize> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut env = self.setup.env.clone();
        env.push(("WORKER_LISTEN", format!("127.0.0.1:{port}")));
        let worker = ServiceProcess::start(
            "worker",
            project_binary("worker")?.to_str().context("path")?,
            &env,
            &format!("{url}/healthz"),
        )
        .await?;
        self.workers.push(worker);
        self.worker_urls.push(url);
        Ok(self.workers.len() - 1)
    }

    /// Waits until job `id` runs; answers the index (in [`Self::workers`])
    /// of the worker running it. Consumer names are
    /// `{host}-{pid}-{random}`.
    pub async fn worker_running(&self, id: &str) -> anyhow::Result<usize> {
        let doc = self
            .wait_job(id, "running on a worker", |doc| {
                doc["status"] == "running" && doc["worker"].is_string()
            })
            .await?;
        let name = doc["worker"].as_str().unwrap_or_default();
        let pid = name.split('-').rev().nth(1).unwrap_or_default();
        self.workers
            .iter()
            .position(|w| w.pid().to_string() == pid)
            .with_context(|| format!("no worker process is {name}"))
    }

    /// The consumers the queue's group holds, by name (a consumer joins
    /// with the first entry it is handed).
    pub async fn group_consumers(&self) -> anyhow::Result<Vec<String>> {
        let mut conn = self.redis.connect().await?;
        let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg("jobs:{weather}:stream")
            .arg("workers")
            .query_async(&mut conn)
            .await?;
        Ok(reply.consumers.into_iter().map(|c| c.name).collect())
    }

    /// The consumers in the queue's live set (heart-beating, or not yet
    /// reaped), by name.
    pub async fn live_set(&self) -> anyhow::Result<Vec<String>> {
        let mut conn = self.redis.connect().await?;
        Ok(redis::cmd("ZRANGE")
            .arg("jobs:{weather}:consumers")
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?)
    }

    /// The PID of the stack's `redis-server` (one server only), for a test
    /// that freezes it (SIGSTOP) and thaws it (SIGCONT).
    pub fn redis_pid(&mut self) -> anyhow::Result<u32> {
        Ok(self.redis.server()?.pid())
    }

    /// Stops Redis (SIGTERM), keeps it down for `outage`, and starts it
    /// again on the same port (with its data when it is persistent).
    pub async fn restart_redis(&mut self, outage: Duration) -> anyhow::Result<()> {
        self.redis.server()?.stop().await?;
        tokio::time::sleep(outage).await;
        self.redis.server()?.restart().await
    }

    /// Stops every service (SIGTERM: each flushes the spans it still
    /// buffers), and answers the collector holding all they exported.
    pub async fn flush(self) -> anyhow::Result<ZipkinCollector> {
        let limit = Duration::from_secs(10);
        for worker in self.workers {
            worker.stop(limit).await?;
        }
        self.api.stop(limit).await?;
        self.stub.stop(limit).await?;
        Ok(self.zipkin)
    }

    /// The console's base URL, when the stack has one.
    pub fn console_url(&self) -> anyhow::Result<String> {
        Ok(self.console.as_ref().context("a console")?.url().to_owned())
    }

    /// The stack's Redis Cluster, when it runs on one.
    pub fn cluster(&self) -> Option<&RedisCluster> {
        match &self.redis {
            StackRedis::Cluster(cluster) => Some(cluster),
            StackRedis::Server(_) => None,
        }
    }

    /// The URL of the stack's Redis.
    pub fn redis_url(&self) -> String {
        self.redis.url()
    }

    /// The stack's Redis settings, as its services get them (`REDIS_URL`,
    /// and `REDIS_CA_CERT` for a TLS Redis).
    pub fn redis_env(&self) -> Vec<(&'static str, String)> {
        self.redis.env()
    }

    /// A connection to the stack's Redis (a server or a cluster), as the
    /// services make one.
    pub async fn redis_connection(&self) -> anyhow::Result<redis_job_queue::RedisConnection> {
        self.redis.connect().await
    }

    /// Posts a job; answers the status and body.
    pub async fn post(&self, body: &str, headers: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}/v1/jobs", self.api_url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Enqueues a job that must be accepted; answers its id and trace id.
    pub async fn enqueue(
        &self,
        body: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(String, String)> {
        let (status, answer) = self.post(body, headers).await?;
        if status != 202 {
            bail!("job {body} was answered {status}: {answer}");
        }
        let field = |f: &str| answer[f].as_str().map(str::to_owned).context(f.to_owned());
        Ok((field("id")?, field("trace_id")?))
    }

    /// The job's status document, as the api answers it.
    pub async fn job(&self, id: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/v1/jobs/{id}", self.api_url))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Waits until the job has finished; answers its status document.
    pub async fn wait_done(&self, id: &str) -> anyhow::Result<Value> {
        self.wait_job(id, "finished", |doc| {
            doc["status"] == "succeeded" || doc["status"] == "failed"
        })
        .await
    }

    /// Waits (up to [`WAIT`]) until the job's status document shows what
    /// `reached` looks for (`want`, in words, for the failure); answers
    /// that document.
    pub async fn wait_job(
        &self,
        id: &str,
        want: &str,
        reached: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        testkit::wait_for_job(id, want, WAIT, || self.job(id), reached).await
    }

    /// Waits until the collector holds a span of each of these traces.
    pub async fn assert_traces_received(&self, trace_ids: &[String]) -> anyhow::Result<()> {
        for trace_id in trace_ids {
            self.zipkin
                .wait_for(
                    WAIT,
                    &format!("a span of exemplar trace {trace_id}"),
                    |spans| {
                        spans
                            .iter()
                            .find(|s| s["traceId"] == trace_id.as_str())
                            .cloned()
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// A `/metrics` page, as Prometheus asks for it (OpenMetrics).
    pub async fn scrape(&self, base: &str) -> anyhow::Result<String> {
        let res = self
            .http
            .get(format!("{base}/metrics"))
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            )
            .send()
            .await?;
        let ct = res.headers()["content-type"].to_str()?.to_owned();
        if !ct.starts_with("application/openmetrics-text") {
            bail!("{base}/metrics answered {ct}");
        }
        Ok(res.text().await?)
    }

    /// Waits until the trace holds every span a job leaves; answers them.
    pub async fn job_trace(
        &self,
        trace_id: &str,
        upstream_calls: usize,
    ) -> anyhow::Result<Vec<Value>> {
        self.zipkin
            .wait_for(WAIT, &format!("complete trace {trace_id}"), |spans| {
                let trace: Vec<Value> = spans
                    .iter()
                    .filter(|s| s["traceId"] == trace_id)
                    .cloned()
                    .collect();
                job_trace_complete(&trace, upstream_calls).then_some(trace)
            })
            .await
    }
}

/// Whether `trace` holds every span a job leaves, with `upstream_calls`
/// calls to the weather service: the api's SERVER and PRODUCER spans, the
/// worker's CONSUMER span, its Redis and HTTP CLIENT spans, and the stub's
/// SERVER spans.
pub fn job_trace_complete(trace: &[Value], upstream_calls: usize) -> bool {
    let want_redis = if upstream_calls > 0 { 2 } else { 1 };
    let count = |service: &str, kind: &str| {
        trace
            .iter()
            .filter(|s| s["localEndpoint"]["serviceName"] == service && s["kind"] == kind)
            .count()
    };
    count("api", "SERVER") >= 1
        && count("api", "PRODUCER") == 1
        && count("worker", "CONSUMER") == 1
        && count("worker", "CLIENT") == want_redis + upstream_calls
        && count("weather-stub", "SERVER") == upstream_calls
}

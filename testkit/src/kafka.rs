//! A Kafka-compatible broker for one test: `tansu`, a single process
//! keeping its topics in memory, behind a TCP proxy of the test's own on a
//! free loopback port (the address the broker advertises), so a test can
//! take the broker away from its clients and give it back with its data,
//! as a restarted Kafka keeps its log.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::free_port;

/// How to install the broker, for the error a missing one gives.
pub const INSTALL_TANSU: &str = "cargo install tansu --version 0.6.0 --locked \
     --no-default-features --features dynostore";

/// A `tansu` broker started for one test, killed (by its PID) when
/// dropped, and the proxy its clients reach it through.
#[derive(Debug)]
pub struct KafkaBroker {
    child: Child,
    /// Where clients connect (the proxy).
    port: u16,
    /// Where the broker itself listens.
    inner_port: u16,
    dir: PathBuf,
    bin: String,
    proxy: Option<tokio::task::JoinHandle<()>>,
}

impl KafkaBroker {
    /// Starts `tansu` (from `PATH`, or `TANSU_BIN`) and its proxy, and waits
    /// until the broker takes connections through it.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_as(true).await
    }

    /// Starts `tansu` without the proxy, its clients connecting to it
    /// directly (for benchmarks: the proxy would cost CPU). It cannot be
    /// [stopped](Self::stop) for its clients.
    pub async fn start_direct() -> anyhow::Result<Self> {
        Self::start_as(false).await
    }

    async fn start_as(proxied: bool) -> anyhow::Result<Self> {
        let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".into());
        let inner_port = free_port()?;
        let port = if proxied { free_port()? } else { inner_port };
        // It reads a `.env` file from where it starts: an empty directory.
        let dir = std::env::temp_dir().join(format!("testkit-tansu-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = spawn(&bin, &dir, inner_port, port)?;
        let mut broker = Self {
            child,
            port,
            inner_port,
            dir,
            bin,
            proxy: None,
        };
        broker.wait_up().await?;
        if proxied {
            broker.restart().await?;
        }
        Ok(broker)
    }

    /// `127.0.0.1:{port}`, for `KAFKA_BROKERS`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port clients use.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Takes the broker away from its clients, as if it stopped: every
    /// connection is closed and new ones are refused. Its data stays.
    pub fn stop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            proxy.abort();
        }
    }

    /// Gives the broker back to its clients (after [`Self::stop`]).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.port == self.inner_port {
            bail!("a broker started without its proxy cannot be stopped or restarted");
        }
        self.stop();
        // The port was just released: binding it again may take a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() > deadline => {
                    return Err(e).context("binding the broker's port again");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let inner = self.inner_port;
        self.proxy = Some(tokio::spawn(async move {
            // Dropped with the task: aborting it closes every connection.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    if let Ok(mut broker) = TcpStream::connect(("127.0.0.1", inner)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
            }
        }));
        Ok(())
    }

    /// Kills the broker (SIGKILL, by its PID) and starts it again on the
    /// same port with nothing: every topic and record is gone, as when a
    /// Kafka broker comes back without its disk. Its clients stay
    /// connected through the proxy (if it runs) to the new broker.
    pub async fn restart_empty(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The port was just released: the new broker may take a moment
        // to bind it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = spawn(&self.bin, &self.dir, self.inner_port, self.port)?;
            match self.wait_up().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits until the broker takes connections on its own port.
    async fn wait_up(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.inner_port))
            .await
            .is_err()
        {
            if let Some(status) = self.child.try_wait()? {
                bail!("tansu exited early ({status}):\n{}", self.logs());
            }
            if Instant::now() > deadline {
                bail!("tansu took no connection within 20 s:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Deletes `topic` and its records.
    pub fn delete_topic(&self, topic: &str) -> anyhow::Result<()> {
        let out = Command::new(&self.bin)
            .args(["topic", "delete", topic])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.inner_port)])
            .current_dir(&self.dir)
            .output()
            .context("running tansu topic delete")?;
        if !out.status.success() {
            bail!(
                "tansu topic delete {topic} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Creates `topic` with `partitions` partitions (the broker makes no
    /// topic by itself).
    pub fn create_topic(&self, topic: &str, partitions: u32) -> anyhow::Result<()> {
        let out = Command::new(&self.bin)
            .args(["topic", "create", topic])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.inner_port)])
            .args(["--partitions", &partitions.to_string()])
            .current_dir(&self.dir)
            .output()
            .context("running tansu topic create")?;
        if !out.status.success() {
            bail!(
                "tansu topic create {topic} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// What the broker printed.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `tansu` listening on `inner_port`, advertising `port`, keeping
/// its topics in memory; its output goes to `broker.log` in `dir` (kept
/// across restarts).
fn spawn(bin: &str, dir: &std::path::Path, inner_port: u16, port: u16) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("broker.log"))?;
    let child = Command::new(bin)
        .args(["broker", "--cluster-id", "testkit"])
        .args(["--listener-url", &format!("tcp://127.0.0.1:{inner_port}")])
        .args([
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{port}"),
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn();
    match child {
        Ok(child) => Ok(child),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "`{bin}` was not found: install the tansu broker ({INSTALL_TANSU}) or set \
             TANSU_BIN to its path"
        ),
        Err(e) => Err(e).context("starting tansu"),
    }
}

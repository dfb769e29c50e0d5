//! A Kafka-compatible broker for one test: `tansu`, a single process
//! keeping its topics in memory, on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::free_port;

/// How to install the broker, for the error a missing one gives.
pub const INSTALL_TANSU: &str = "cargo install tansu --version 0.6.0 --locked \
     --no-default-features --features dynostore";

/// A `tansu` broker started for one test, killed (by its PID) when
/// dropped. It keeps topics and offsets in memory: a restart loses them.
#[derive(Debug)]
pub struct KafkaBroker {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    bin: String,
}

impl KafkaBroker {
    /// Starts `tansu` (from `PATH`, or `TANSU_BIN`) and waits until it
    /// takes connections.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".into());
        let port = free_port()?;
        // It reads a `.env` file from where it starts: an empty directory.
        let dir = std::env::temp_dir().join(format!("testkit-tansu-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut broker = Self {
            child: None,
            port,
            dir,
            bin,
        };
        broker.restart().await?;
        Ok(broker)
    }

    /// `127.0.0.1:{port}`, for `KAFKA_BROKERS`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the broker (again, after [`Self::stop`]) on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.join("broker.log"))?;
        let child = Command::new(&self.bin)
            .args(["broker", "--cluster-id", "testkit"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "`{}` was not found: install the tansu broker ({INSTALL_TANSU}) or set \
                 TANSU_BIN to its path",
                self.bin
            ),
            Err(e) => return Err(e).context("starting tansu"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("tansu exited early ({status}):\n{}", self.logs());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("tansu took no connection within 20 s:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> anyhow::Result<()> {
        let out = Command::new(&self.bin)
            .args(["topic", "create", topic])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
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

    /// Kills the broker (as a crash would) and waits until it is gone.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
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
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

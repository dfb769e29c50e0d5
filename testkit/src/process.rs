//! The project's binaries run as real processes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A service process, killed (by its PID) when dropped. Its standard
/// output and error go to a log file of its own ([`Self::logs`]).
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    child: Child,
    log: std::path::PathBuf,
}

impl ServiceProcess {
    /// Starts `bin` with `env` added to the environment, and waits until
    /// `health_url` answers 200.
    pub async fn start(
        name: &str,
        bin: &str,
        env: &[(&str, String)],
        health_url: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with_args(name, bin, &[], env, health_url).await
    }

    /// [`Self::start`], with command-line arguments.
    pub async fn start_with_args(
        name: &str,
        bin: &str,
        args: &[String],
        env: &[(&str, String)],
        health_url: &str,
    ) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log =
            std::env::temp_dir().join(format!("testkit-{}-{name}-{n}.log", std::process::id()));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{bin} was not found: install it (see scripts/test for how)")
            }
            Err(e) => return Err(e).with_context(|| format!("starting {name} ({bin})")),
        };
        let mut process = Self {
            name: name.to_owned(),
            child,
            log,
        };
        if let Err(e) = process
            .wait_healthy(health_url, Duration::from_secs(20))
            .await
        {
            bail!("{e}\n--- {} output ---\n{}", process.name, process.logs());
        }
        Ok(process)
    }

    /// Everything the process has written so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_healthy(&mut self, url: &str, limit: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited before it was healthy ({status})", self.name);
            }
            if let Ok(res) = client.get(url).send().await
                && res.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} was not healthy at {url} within {limit:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (SIGKILL, by its PID: no chance to flush
    /// anything) and waits for it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks the process to stop (SIGTERM) and waits for it, so it flushes
    /// its spans; kills it after `limit`. Waits without blocking the
    /// runtime, which may be serving what the process sends on its way out.
    pub async fn stop(mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("{} did not stop within {limit:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The path of one of the workspace's binaries, built beside the running
/// test (`target/<profile>/<name>`).
pub fn project_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("locating the target directory")?;
    let bin = dir.join(name);
    if !bin.exists() {
        bail!(
            "{} is not built: run `cargo build --workspace --bins` first (`cargo test --workspace` and scripts/test build it)",
            bin.display()
        );
    }
    Ok(bin)
}

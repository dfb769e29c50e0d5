//! Real servers for the project's tests and benchmarks: `redis-server`, a
//! Kafka-compatible broker (`tansu`), a Zipkin collector stand-in, and the project's own binaries (the console
//! among them) as processes.
//!
//! Every server listens on a free loopback port and lives in a temporary
//! directory of its own, so tests run in parallel and leave nothing behind.
//! The process is killed (by its PID) when the handle is dropped.
//!
//! Beside the servers, what tests share: waiting with a deadline
//! ([`eventually`], and [`wait_for_job`] for a job's status) and running
//! schemathesis against an OpenAPI document ([`schemathesis::run`]), and
//! checking the settings reference against a binary's `--help`
//! ([`settings::undocumented_settings`]).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod cluster;
pub mod console;
pub mod kafka;
pub mod process;
pub mod schemathesis;
pub mod settings;
pub mod wait;
pub mod zipkin;

pub use cluster::RedisCluster;
pub use console::Console;
pub use kafka::KafkaBroker;
pub use process::{ServiceProcess, project_binary};
pub use wait::{eventually, wait_for_job};
pub use zipkin::ZipkinCollector;

/// A free TCP port on 127.0.0.1 (the OS picks it; it is released at once
/// for the server to take).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// A `redis-server` started for one test.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// Whether it keeps its data in an append-only file across restarts.
    persistent: bool,
    /// TLS only, with a password, when set.
    tls: Option<TlsServer>,
}

/// A TLS `redis-server`'s certificates (made for the test by a CA of its
/// own) and password.
#[derive(Debug, Clone)]
struct TlsServer {
    ca_pem: String,
    password: String,
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`, or `REDIS_SERVER_BIN`) with
    /// persistence off, and waits until it answers `PING`.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_as(false, None).await
    }

    /// [`Self::start`] with the append-only file on (fsync at every
    /// write), so [`Self::restart`] brings its data back.
    pub async fn start_persistent() -> anyhow::Result<Self> {
        Self::start_as(true, None).await
    }

    /// A server that speaks only TLS (a certificate for 127.0.0.1 signed
    /// by a CA made for it, [`Self::ca_pem`]) and requires `password`.
    /// Its [`Self::url`] is `rediss://:{password}@127.0.0.1:{port}/`.
    pub async fn start_tls(password: &str) -> anyhow::Result<Self> {
        Self::start_as(
            false,
            Some(TlsServer {
                ca_pem: String::new(),
                password: password.to_owned(),
            }),
        )
        .await
    }

    async fn start_as(persistent: bool, tls: Option<TlsServer>) -> anyhow::Result<Self> {
        let mut last_err = None;
        // A port picked free can be taken before the server binds it: retry.
        for _ in 0..5 {
            let port = free_port()?;
            let dir =
                std::env::temp_dir().join(format!("testkit-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let tls = match &tls {
                Some(t) => Some(TlsServer {
                    ca_pem: write_certificates(&dir)?,
                    password: t.password.clone(),
                }),
                None => None,
            };
            let child = Self::spawn(port, &dir, persistent, tls.as_ref())?;
            let mut server = Self {
                child,
                port,
                dir,
                persistent,
                tls,
            };
            match server.wait_ready(Duration::from_secs(10)).await {
                Ok(()) => return Ok(server),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    fn spawn(
        port: u16,
        dir: &std::path::Path,
        persistent: bool,
        tls: Option<&TlsServer>,
    ) -> anyhow::Result<Child> {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let mut cmd = Command::new(&bin);
        match tls {
            Some(t) => {
                let file = |name: &str| dir.join(name).display().to_string();
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--tls-cert-file", &file("server.pem")])
                    .args(["--tls-key-file", &file("server.key")])
                    .args(["--tls-ca-cert-file", &file("ca.pem")])
                    .args(["--tls-auth-clients", "no"])
                    .args(["--requirepass", &t.password])
            }
            None => cmd.args(["--port", &port.to_string()]),
        };
        cmd.args(["--bind", "127.0.0.1"]).args(["--save", ""]);
        match persistent {
            true => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
            false => cmd.args(["--appendonly", "no"]),
        };
        match cmd
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => Ok(child),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "`{bin}` was not found: install Redis (Debian: `apt-get install -y redis-server`) \
                 or set REDIS_SERVER_BIN to its path"
            ),
            Err(e) => Err(e).context("starting redis-server"),
        }
    }

    /// Stops the server as an operator would (SIGTERM: it writes what it
    /// must and exits), and waits until it has exited.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("could not signal redis-server {}", self.child.id());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("redis-server did not exit within 10 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Starts the server again on the same port and directory (with its
    /// data when it is persistent), after [`Self::stop`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.child = Self::spawn(self.port, &self.dir, self.persistent, self.tls.as_ref())?;
        self.wait_ready(Duration::from_secs(10)).await
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let client = self.client()?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("redis-server exited early ({status})");
            }
            // The server answering must be this one, not another test's
            // that took the port first (this one then fails to bind).
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let info: redis::RedisResult<String> = redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut conn)
                    .await;
                let pid = format!("process_id:{}", self.child.id());
                if info.is_ok_and(|i| i.lines().any(|l| l.trim() == pid)) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it speaks only TLS ([`Self::start_tls`]).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `redis://127.0.0.1:{port}/`, or for a TLS server
    /// `rediss://:{password}@127.0.0.1:{port}/`.
    pub fn url(&self) -> String {
        match &self.tls {
            Some(t) => format!("rediss://:{}@127.0.0.1:{}/", t.password, self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// A client of the server (trusting its CA when it speaks TLS).
    pub fn client(&self) -> anyhow::Result<redis::Client> {
        Ok(match &self.tls {
            Some(t) => {
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                redis::Client::build_with_tls(
                    self.url(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(t.ca_pem.clone().into_bytes()),
                    },
                )?
            }
            None => redis::Client::open(self.url())?,
        })
    }

    /// The PEM certificate of the CA that signed a TLS server's
    /// certificate (empty for a plain server).
    pub fn ca_pem(&self) -> &str {
        self.tls.as_ref().map_or("", |t| t.ca_pem.as_str())
    }

    /// Where [`Self::ca_pem`] is written, for settings that take a path.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Makes a CA and a server certificate for 127.0.0.1 and localhost it
/// signed, writes `ca.pem`, `server.pem` and `server.key` into `dir`, and
/// answers the CA's PEM.
fn write_certificates(dir: &std::path::Path) -> anyhow::Result<String> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "testkit redis CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&server_key, &issuer)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(dir.join("server.pem"), server.pem())?;
    std::fs::write(dir.join("server.key"), server_key.serialize_pem())?;
    Ok(ca_cert.pem())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! A real Redis Cluster for one test: `redis-server --cluster-enabled yes`
//! nodes on free loopback ports, joined by `redis-cli --cluster create`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a silent master takes to be declared failed and replaced by
/// its replica (`cluster-node-timeout`): short, so failover tests are.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(2000);

/// One node of a [`RedisCluster`].
#[derive(Debug)]
struct Node {
    port: u16,
    child: Child,
}

/// A Redis Cluster of `masters` masters with `replicas` replicas each, all
/// on 127.0.0.1. The nodes are killed (by PID) when it is dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

/// A port for a node: free, below 55535, with its cluster bus port (the
/// port + 10000) free too.
fn node_port() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
        let port = listener.local_addr()?.port();
        if port < 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair (port and port + 10000) below 55535")
}

impl RedisCluster {
    /// Starts the nodes, joins them into a cluster (the slots split evenly
    /// over the masters, in order) and waits until every node reports the
    /// cluster ok and every replica has synced.
    pub async fn start(masters: usize, replicas: usize) -> anyhow::Result<Self> {
        let count = masters * (1 + replicas);
        let dir = std::env::temp_dir().join(format!(
            "testkit-cluster-{}-{}",
            std::process::id(),
            node_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..count {
            let node = cluster.start_node().await?;
            cluster.nodes.push(node);
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("running redis-cli (Debian: apt-get install -y redis-tools)")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait_healthy(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// A node on a free port pair. Another test may take the port between
    /// the check and the node's bind (or its bus port's): a node that exits
    /// at once is started again on other ports.
    async fn start_node(&self) -> anyhow::Result<Node> {
        let mut last = None;
        for _ in 0..5 {
            let port = node_port()?;
            let mut node = Node {
                port,
                child: self.spawn(port)?,
            };
            match wait_ping(&mut node, Duration::from_secs(10)).await {
                Ok(()) => return Ok(node),
                Err(e) => {
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no node started")))
    }

    fn spawn(&self, port: u16) -> anyhow::Result<Child> {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let timeout = NODE_TIMEOUT.as_millis().to_string();
        Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", &timeout])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting `{bin}`: install Redis (Debian: `apt-get install -y redis-server`) \
                     or set REDIS_SERVER_BIN to its path"
                )
            })
    }

    /// The seed list the services take in `REDIS_URL`: every node.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `redis-cli -p {port} {args}`'s output, against one node.
    pub fn cli(&self, port: u16, args: &[&str]) -> anyhow::Result<String> {
        cli(port, args)
    }

    /// The nodes' process ids (of those still running and not).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.child.id()).collect()
    }

    /// The ports of the masters now.
    pub fn masters(&self) -> anyhow::Result<Vec<u16>> {
        Ok(self
            .topology()?
            .into_iter()
            .filter(|(_, (role, _))| role == "master")
            .map(|(port, _)| port)
            .collect())
    }

    /// The nodes' ports, in the order they were started.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `CLUSTER NODES` as one node sees it: per port, the node's role
    /// (`master` or `slave`) and its slot ranges (`0-5460`).
    pub fn topology(&self) -> anyhow::Result<BTreeMap<u16, (String, Vec<String>)>> {
        let live = self
            .nodes
            .iter()
            .find(|n| cli(n.port, &["PING"]).is_ok_and(|p| p.trim() == "PONG"))
            .context("no node answers")?;
        let text = cli(live.port, &["CLUSTER", "NODES"])?;
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || f[2].contains("fail") {
                continue;
            }
            let port: u16 = f[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .context("a node's address")?;
            let role = if f[2].contains("master") {
                "master"
            } else {
                "slave"
            };
            out.insert(
                port,
                (
                    role.to_owned(),
                    f[8..].iter().map(|s| (*s).to_owned()).collect(),
                ),
            );
        }
        Ok(out)
    }

    /// The port of the master that holds `slot` now.
    pub fn master_of(&self, slot: u16) -> anyhow::Result<u16> {
        for (port, (role, ranges)) in self.topology()? {
            let holds = ranges.iter().any(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
            });
            if role == "master" && holds {
                return Ok(port);
            }
        }
        bail!("no master holds slot {slot}")
    }

    /// Kills the node on `port` at once (SIGKILL: no goodbye to its
    /// peers, as a crashed machine), and waits until it has exited.
    pub async fn kill(&mut self, port: u16) -> anyhow::Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .with_context(|| format!("no node on port {port}"))?;
        node.child.kill()?;
        node.child.wait()?;
        Ok(())
    }

    /// Waits until every live replica has caught up with what its master
    /// had written when this was called (their replication offsets).
    pub async fn wait_replicated(&mut self, limit: Duration) -> anyhow::Result<()> {
        let field = |text: &str, name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
        };
        let mut targets = Vec::new();
        for node in &mut self.nodes {
            if node.child.try_wait()?.is_some() {
                continue;
            }
            let info = cli(node.port, &["INFO", "replication"])?;
            if info.contains("role:slave") {
                let master = field(&info, "master_port").context("master_port")?;
                let master = cli(u16::try_from(master)?, &["INFO", "replication"])?;
                let offset = field(&master, "master_repl_offset").context("master_repl_offset")?;
                targets.push((node.port, offset));
            }
        }
        for (replica, offset) in targets {
            crate::eventually(
                &format!("replica {replica} at offset {offset}"),
                limit,
                Duration::from_millis(20),
                || async move {
                    let info = cli(replica, &["INFO", "replication"])?;
                    Ok(field(&info, "slave_repl_offset")
                        .filter(|o| *o >= offset)
                        .map(drop))
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Waits until every running node says `cluster_state:ok` and sees
    /// all 16,384 slots served.
    pub async fn wait_healthy(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let mut last = String::new();
            let mut ok = true;
            for node in &mut self.nodes {
                if node.child.try_wait()?.is_some() {
                    continue;
                }
                let info = cli(node.port, &["CLUSTER", "INFO"]).unwrap_or_default();
                if !(info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")) {
                    ok = false;
                    last = format!("node {}: {info}", node.port);
                }
                let replication = cli(node.port, &["INFO", "replication"]).unwrap_or_default();
                if replication.contains("role:slave")
                    && !replication.contains("master_link_status:up")
                {
                    ok = false;
                    last = format!("replica {} not in sync: {replication}", node.port);
                }
            }
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the cluster is not healthy within {limit:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p {port} {args}`'s output.
pub(crate) fn cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running redis-cli (Debian: apt-get install -y redis-tools)")?;
    if !out.status.success() {
        bail!("redis-cli: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn wait_ping(node: &mut Node, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = node.child.try_wait()? {
            bail!("redis-server on port {} exited early ({status})", node.port);
        }
        // The server answering must be this node, not another test's that
        // took the port first (this one then fails to bind and exits).
        let pid = node.child.id().to_string();
        if cli(node.port, &["INFO", "server"]).is_ok_and(|info| {
            info.lines()
                .any(|l| l.trim() == format!("process_id:{pid}"))
        }) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "redis-server on port {} did not answer within {limit:?}",
                node.port
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

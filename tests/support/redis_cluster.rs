//! A real three-master Redis Cluster on loopback, started for one test and killed when dropped.
//!
//! Each node is a `redis-server --cluster-enabled yes` child process on a free port (and a free
//! cluster-bus port, given explicitly so an ephemeral port + 10000 never overflows), with its
//! `nodes.conf` in a fresh temporary directory and no persistence. `redis-cli --cluster create
//! … --cluster-replicas 0 --cluster-yes` splits the 16384 slots over the three masters; the
//! harness then waits until every node reports `cluster_state:ok` and agrees on three masters.
//!
//! `redis-server` and `redis-cli` come from Debian's `redis-server` / `redis-tools` packages;
//! `cargo xtask test` installs them when missing. A test that needs a cluster fails (never
//! skips) when they are not there.
//!
//! Self-contained (tokio and std only), so the origin crate's own tests include it too
//! (`#[path = "../../tests/support/redis_cluster.rs"]`).
//!
//! ```ignore
//! let cluster = support::redis_cluster::RedisCluster::start().await;
//! let url = cluster.url(); // "redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
//! ```

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// How many masters the cluster has (the issue's "three-master Redis Cluster").
pub const MASTERS: usize = 3;

/// How long starting the cluster may take before the test fails.
const START_WITHIN: Duration = Duration::from_secs(30);

/// One node: its client port and its process (killed on drop).
struct Node {
    port: u16,
    child: Child,
}

/// A running three-master cluster. Dropping it kills the nodes and removes their directory.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts three masters, creates the cluster and waits for `cluster_state:ok` on every
    /// node. Retries once with new ports when a port was taken between choosing and binding.
    pub async fn start() -> RedisCluster {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start().await {
                Ok(cluster) => return cluster,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start a Redis Cluster: {last_error}");
    }

    async fn try_start() -> Result<RedisCluster, String> {
        for tool in ["redis-server", "redis-cli"] {
            if !on_path(tool) {
                return Err(format!(
                    "`{tool}` is not installed (Debian: redis-server, redis-tools; \
                     `cargo xtask test` installs them)"
                ));
            }
        }
        let dir = std::env::temp_dir().join(unique_dir_name());
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
        };
        let ports = free_ports(2 * MASTERS)?;
        for i in 0..MASTERS {
            let (port, bus) = (ports[2 * i], ports[2 * i + 1]);
            let node_dir = cluster.dir.join(format!("node-{port}"));
            std::fs::create_dir_all(&node_dir).map_err(|e| format!("mkdir: {e}"))?;
            let log = std::fs::File::create(node_dir.join("redis.log"))
                .map_err(|e| format!("log file: {e}"))?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--cluster-port", &bus.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "5000"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--daemonize", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| format!("log file: {e}"))?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run redis-server: {e}"))?;
            cluster.nodes.push(Node { port, child });
        }
        // Every node accepts connections before the cluster is created.
        for node in &cluster.nodes {
            let port = node.port;
            wait_until(START_WITHIN, || async move {
                cli(port, &["ping"])
                    .await
                    .is_ok_and(|out| out.trim() == "PONG")
            })
            .await
            .map_err(|()| format!("redis-server on port {port} never answered PING"))?;
        }
        let addrs: Vec<String> = cluster.addrs();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run redis-cli --cluster create: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // Every node sees the whole cluster as healthy (all slots served, three masters).
        for node in &cluster.nodes {
            let port = node.port;
            wait_until(START_WITHIN, || async move {
                let ok = cli(port, &["cluster", "info"])
                    .await
                    .is_ok_and(|info| info.contains("cluster_state:ok"));
                let masters = cli(port, &["cluster", "nodes"]).await.map(|nodes| {
                    nodes
                        .lines()
                        .filter(|l| l.contains("master") && !l.contains("fail"))
                        .count()
                });
                ok && masters == Ok(MASTERS)
            })
            .await
            .map_err(|()| format!("node {port} never reported cluster_state:ok"))?;
        }
        Ok(cluster)
    }

    /// The nodes' `host:port` addresses (the seed list).
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// The nodes' client ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The nodes as plain `redis://127.0.0.1:P` URLs (one per node).
    pub fn node_urls(&self) -> Vec<String> {
        self.addrs()
            .iter()
            .map(|a| format!("redis://{a}"))
            .collect()
    }

    /// The whole cluster as one store URL: `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…`.
    pub fn url(&self) -> String {
        format!("redis+cluster://{}", self.addrs().join(","))
    }

    /// Runs `redis-cli -c -p PORT ARGS…` against the first node (following redirects) and
    /// returns its output, for tests that inspect raw keys.
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        cli(self.nodes[0].port, &all)
            .await
            .unwrap_or_else(|e| panic!("redis-cli {args:?}: {e}"))
    }

    /// Every key on every master matching `pattern` (`KEYS` per node: a cluster's `KEYS`
    /// answers only for the node asked).
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for node in &self.nodes {
            let out = cli(node.port, &["--scan", "--pattern", pattern])
                .await
                .unwrap_or_else(|e| panic!("redis-cli --scan on {}: {e}", node.port));
            keys.extend(out.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        }
        keys
    }

    /// How many keys matching `pattern` each master holds (in [`Self::ports`] order).
    pub async fn key_counts(&self, pattern: &str) -> Vec<usize> {
        let mut counts = Vec::new();
        for node in &self.nodes {
            let out = cli(node.port, &["--scan", "--pattern", pattern])
                .await
                .unwrap_or_else(|e| panic!("redis-cli --scan on {}: {e}", node.port));
            counts.push(out.lines().filter(|l| !l.is_empty()).count());
        }
        counts
    }

    /// Deletes every key matching `pattern` on every master, synchronously (for a test playing
    /// "Redis lost its data" from non-async code).
    pub fn wipe(&self, pattern: &str) {
        for node in &self.nodes {
            let port = node.port.to_string();
            let Ok(out) = std::process::Command::new("redis-cli")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "--scan",
                    "--pattern",
                    pattern,
                ])
                .output()
            else {
                continue;
            };
            for key in String::from_utf8_lossy(&out.stdout).lines() {
                if !key.is_empty() {
                    let _ = std::process::Command::new("redis-cli")
                        .args(["-h", "127.0.0.1", "-p", &port, "del", key])
                        .output();
                }
            }
        }
    }

    /// Kills one master with SIGKILL (port given), for tests of a node's loss.
    pub async fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            let _ = node.child.kill().await;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p PORT ARGS…`; its stdout, or why it failed.
async fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && !stdout.starts_with("Could not connect") {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `n` distinct ports that were free a moment ago (bound together on port 0, then released).
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bind: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("local_addr: {e}"))
}

/// Polls `cond` every 50 ms until it holds; `Err(())` after `within`.
async fn wait_until<F, Fut>(within: Duration, mut cond: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        if tokio::time::Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A directory name no other cluster (or earlier run) uses.
fn unique_dir_name() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("ssepush-redis-cluster-{}-{nanos}-{n}", std::process::id())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

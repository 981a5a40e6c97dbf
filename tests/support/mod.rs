//! The integration-test harness: real servers on ephemeral loopback ports, real Redis.
//!
//! Every test file does `mod support;` and builds what it needs:
//! [`TestOrigin::start`] runs exactly the production `server::run` on port 0;
//! [`redis_url`] and [`namespace`] give each test its own keys on the shared Redis (tests that
//! need Redis fail, never skip, when it is not there).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use ssepush::client::{Item, OriginClient, Subscription};
use ssepush_origin::settings::Settings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The Redis the tests use: `SSEPUSH_TEST_REDIS` or the local default.
pub fn redis_url() -> String {
    std::env::var("SSEPUSH_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A namespace no other test (or earlier run) uses.
pub fn namespace(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t-{test}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Settings for a test origin on the memory store.
pub fn memory_settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        retry_ms: 100,
        shutdown_grace_secs: 5,
        ..Settings::default()
    }
}

/// Settings for a test origin on Redis, in its own namespace.
pub fn redis_settings(namespace: &str) -> Settings {
    Settings {
        store: redis_url(),
        namespace: namespace.to_owned(),
        ..memory_settings()
    }
}

/// A running origin.
pub struct TestOrigin {
    pub addr: SocketAddr,
    pub url: String,
    pub client: OriginClient,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestOrigin {
    pub async fn start(settings: Settings) -> TestOrigin {
        Self::start_on("127.0.0.1:0".parse().unwrap(), settings).await
    }

    /// Starts on a given address (to restart an origin where clients expect it).
    pub async fn start_on(addr: SocketAddr, settings: Settings) -> TestOrigin {
        let listener = bind_retrying(addr).await;
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            ssepush_origin::server::run(listener, settings, stop.cancelled_owned())
                .await
                .expect("origin failed");
        });
        let url = format!("http://{addr}");
        TestOrigin {
            addr,
            client: OriginClient::new(&url),
            url,
            shutdown,
            task,
        }
    }

    /// Drains and waits for the server to stop.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("origin did not stop within 10 s")
            .expect("origin task panicked");
    }
}

async fn bind_retrying(addr: SocketAddr) -> tokio::net::TcpListener {
    // A just-closed port can take a moment to be free again.
    for _ in 0..50 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind {addr}");
}

/// Reads `n` items from a fresh (non-resuming) SSE connection, failing after `within`.
pub async fn take_items(
    client: &OriginClient,
    sub: &Subscription,
    n: usize,
    within: Duration,
) -> Vec<Item> {
    let conn = client
        .connect(sub, sub.last_event_id)
        .await
        .expect("sse connect");
    let mut conn = std::pin::pin!(conn);
    let mut out = Vec::new();
    tokio::time::timeout(within, async {
        while out.len() < n {
            match conn.next().await {
                Some(Ok(ssepush::client::Frame::Item(item))) => out.push(item),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("sse error: {e}"),
                None => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("got {} of {n} items in {within:?}: {out:?}", out.len()));
    out
}

/// Polls `cond` every 20 ms until it holds, failing after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a counter or gauge from an origin's `/metrics`.
pub async fn metric(url: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v.trim().parse::<f64>().unwrap_or(0.0))
        .sum()
}

/// A running simulated push gateway (`ssepush::gateway`) with its credentials written to a
/// fresh temporary directory, as `ssepush gateway --credentials-dir` does.
pub struct TestGateway {
    pub url: String,
    /// The credentials directory (`apns.json`, `AuthKey_*.p8`, `fcm-service-account.json`,
    /// `gateway.json`).
    pub dir: std::path::PathBuf,
    pub client: ssepush::gateway::client::GatewayClient,
    pub creds: ssepush::gateway::Credentials,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_with(ssepush::gateway::GatewayConfig::default()).await
    }

    /// Starts with `config`; its `credentials_dir` is replaced by a fresh temporary one.
    pub async fn start_with(mut config: ssepush::gateway::GatewayConfig) -> TestGateway {
        let dir = std::env::temp_dir().join(namespace("gateway"));
        config.credentials_dir = Some(dir.clone());
        let listener = bind_retrying("127.0.0.1:0".parse().unwrap()).await;
        // RSA key generation is CPU work: off the test's runtime threads.
        let gateway =
            tokio::task::spawn_blocking(move || ssepush::gateway::Gateway::new(listener, config))
                .await
                .unwrap()
                .expect("gateway credentials");
        let url = gateway.base_url().to_owned();
        let creds = gateway.credentials().clone();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(gateway.serve(stop.cancelled_owned()));
        TestGateway {
            client: ssepush::gateway::client::GatewayClient::new(&url),
            url,
            dir,
            creds,
            shutdown,
            task,
        }
    }

    /// Stops the gateway and removes its credentials directory.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("gateway did not stop within 10 s")
            .expect("gateway task panicked");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

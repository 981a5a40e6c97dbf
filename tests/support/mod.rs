//! The integration-test harness: builders over the product's one in-process stack
//! (`ssepush::device::stack`), real Redis, and small helpers. Every test binary
//! (`tests/system`, `tests/browser`, `tests/serial`) includes it as `mod support;`.
//!
//! * [`TestOrigin`], [`TestGateway`] and `proxy::TestProxy` are the stack's
//!   `OriginServer`, `GatewayServer` and `ProxyServer` (the production `run` functions on port
//!   0) with the harness's habits: stopping one that fails, panics or hangs fails the test.
//! * [`redis_url`] and [`namespace`] give each test its own keys on the shared Redis (tests
//!   that need Redis fail, never skip, when it is not there).
//! * Fakes stand only for what is outside the product: `raw` (misbehaving HTTP servers) and
//!   `proxy::Recorder` (a push service that records what it is sent).
#![allow(dead_code)]

pub mod binary;
pub mod browser;
pub mod fleet;
pub mod logs;
pub mod proxy;
pub mod raw;
pub mod redis_cluster;
pub mod tls;
pub mod webhooks;

use std::net::SocketAddr;
use std::ops::Deref;
use std::time::Duration;

use futures::StreamExt;
use ssepush::client::origin::{ClientError, Frame, Item, OriginClient, Subscription};
use ssepush::device::stack::{GatewayServer, OriginServer, unique_name};
use ssepush::gateway::GatewayConfig;
use ssepush_origin::settings::Settings;

/// An HTTP client with the product's TLS (`ssepush::client::http`): cheap to build (reqwest's
/// default client loads the system's CA bundle each time, ~50 ms in a debug build) and never
/// dependent on a process-wide crypto provider being installed first.
pub fn http() -> reqwest::Client {
    ssepush::client::http::client()
}

/// [`http`]'s builder, for a client with its own timeouts or protocol versions.
pub fn http_builder() -> reqwest::ClientBuilder {
    ssepush::client::http::builder()
}

/// `GET url` with a fresh [`http`] client (what `reqwest::get` does, without its cost).
pub async fn get<U: reqwest::IntoUrl>(url: U) -> reqwest::Result<reqwest::Response> {
    http().get(url).send().await
}

/// The Redis the tests use: `SSEPUSH_TEST_REDIS` or the local default.
pub fn redis_url() -> String {
    std::env::var("SSEPUSH_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A namespace no other test (or earlier run) uses.
pub fn namespace(test: &str) -> String {
    unique_name(&format!("t-{test}"))
}

/// Settings for a test origin on the memory store, on an ephemeral loopback port.
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

/// A running origin: `addr`, `url` and `client` come from the stack's `OriginServer`.
pub struct TestOrigin(OriginServer);

impl Deref for TestOrigin {
    type Target = OriginServer;
    fn deref(&self) -> &OriginServer {
        &self.0
    }
}

impl TestOrigin {
    /// Starts on `settings.listen`.
    pub async fn start(settings: Settings) -> TestOrigin {
        TestOrigin(OriginServer::start(settings).await.expect("origin start"))
    }

    /// Starts on a given address (to restart an origin where clients expect it).
    pub async fn start_on(addr: SocketAddr, settings: Settings) -> TestOrigin {
        Self::start(Settings {
            listen: addr,
            ..settings
        })
        .await
    }

    /// Drains and waits for the server to stop; fails the test if it failed or hung.
    pub async fn stop(self) {
        self.0.stop().await.expect("origin stop");
    }
}

/// A running simulated push gateway with its credentials written to a fresh temporary
/// directory, as `ssepush gateway --credentials-dir` does: `url`, `client`, `credentials`,
/// `dir` come from the stack's `GatewayServer`.
pub struct TestGateway(GatewayServer);

impl Deref for TestGateway {
    type Target = GatewayServer;
    fn deref(&self) -> &GatewayServer {
        &self.0
    }
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_with(GatewayConfig::default()).await
    }

    /// Starts with `config` (a quick shutdown unless it says otherwise).
    pub async fn start_with(config: GatewayConfig) -> TestGateway {
        let config = GatewayConfig {
            shutdown_grace: Duration::from_secs(2),
            ..config
        };
        let gw = GatewayServer::start("127.0.0.1:0".parse().unwrap(), config)
            .await
            .expect("gateway start");
        TestGateway(gw)
    }

    /// Stops the gateway and removes its credentials directory.
    pub async fn stop(self) {
        self.0.stop().await.expect("gateway stop");
    }
}

/// An open SSE connection's frames.
pub type Frames = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Frame, ClientError>> + Send>>;

/// Opens a (non-resuming) SSE connection from `sub.last_event_id` and returns once the origin
/// answered 200. The origin registers a subscription before it answers, so this is the signal
/// that anything published from now on reaches the stream.
pub async fn subscribed(client: &OriginClient, sub: &Subscription) -> Frames {
    Box::pin(
        client
            .connect(sub, sub.last_event_id)
            .await
            .expect("sse connect"),
    )
}

/// Reads `n` items (events and resets) from an open connection, failing after `within`.
pub async fn read_items(conn: &mut Frames, n: usize, within: Duration) -> Vec<Item> {
    let mut out = Vec::new();
    tokio::time::timeout(within, async {
        while out.len() < n {
            match conn.next().await {
                Some(Ok(Frame::Item(item))) => out.push(item),
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

/// Reads `n` items from a fresh (non-resuming) SSE connection, failing after `within`.
pub async fn take_items(
    client: &OriginClient,
    sub: &Subscription,
    n: usize,
    within: Duration,
) -> Vec<Item> {
    read_items(&mut subscribed(client, sub).await, n, within).await
}

/// Lets `window` pass, to observe that something does **not** happen within it (no second
/// wake past the coalescing window, no retry after a stop, no delivery to a deleted webhook).
/// A negative needs a window; never use this to wait *for* something — await its signal.
pub async fn nothing_happens_for(window: Duration) {
    tokio::time::sleep(window).await;
}

/// Checks `cond` every 20 ms until it holds, failing after `within`: for state a server only
/// shows when asked (a status document, a record), never instead of a signal the test can
/// await.
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

/// The sum of a counter or gauge (all its label sets) in a server's own `/metrics`.
///
/// The origin and the proxy render the process-wide recorder, so a test that asserts on
/// their metrics belongs to the `serial` test binary and holds [`exclusive`] while it runs;
/// the gateway's metrics are its own.
pub async fn metric(url: &str, name: &str) -> f64 {
    let text = crate::support::get(format!("{url}/metrics"))
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

/// Held by every test of the `serial` binary for its whole run: no other test runs in the
/// process meanwhile, so what a test reads of process-wide state — the origin's and the
/// proxy's `/metrics` (one recorder per process), the process's own sockets — is its own
/// servers' doing.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

//! The product in one process, on loopback ports: the one place that starts an origin, a
//! simulated gateway or a proxy in-process. `ssepush demo`, `ssepush demo --web` and the tests
//! all start their servers here; each is the production `run` function (or, for the gateway,
//! [`Gateway::new`] then [`Gateway::serve`], which is what `gateway::run` does), only wired
//! together.
//!
//! * [`OriginServer`], [`GatewayServer`], [`ProxyServer`] — one server each, started on the
//!   address its settings name (port 0: an ephemeral one) and stopped within its grace period.
//! * [`Stack`] — all three: an origin on the memory store, the gateway, and the proxy with its
//!   real APNs / FCM / Web Push providers pointed at the gateway ([`StackOptions`] for the
//!   knobs the demo and the failure tests turn).
//! * [`provider_settings`] — the proxy's `[apns]`, `[fcm]` and `[webpush]` sections from a
//!   gateway's credentials directory (`ssepush proxy --gateway-credentials DIR` uses it too).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ssepush_origin::settings::Settings as OriginSettings;
use ssepush_proxy::push::Providers;
use ssepush_proxy::settings::{
    ApnsSettings, FcmSettings, Settings as ProxySettings, WebPushSettings,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::origin::OriginClient;
use crate::gateway::client::GatewayClient;
use crate::gateway::credentials::{APNS_FILE, ApnsInfo, GATEWAY_FILE, GatewayInfo};
use crate::gateway::{Credentials, Gateway, GatewayConfig};

/// The VAPID key file the proxy makes (and reuses) next to the gateway's credentials.
pub const VAPID_FILE: &str = "proxy-vapid.pem";

/// How long [`OriginServer::stop`] and the others wait for a server to finish draining.
pub const STOP_WITHIN: Duration = Duration::from_secs(10);

/// A server task and the token that stops it; dropping it stops the server too.
struct Server {
    name: &'static str,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Server {
    fn spawn<F>(name: &'static str, run: impl FnOnce(CancellationToken) -> F) -> Server
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let task = Some(tokio::spawn(run(stop.clone())));
        Server { name, stop, task }
    }

    /// Cancels the server and waits for it; an error if it failed, panicked or did not stop
    /// within [`STOP_WITHIN`].
    async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(STOP_WITHIN, task).await {
            Err(_) => anyhow::bail!("the {} did not stop within {STOP_WITHIN:?}", self.name),
            Ok(Err(e)) => anyhow::bail!("the {} task failed: {e}", self.name),
            Ok(Ok(r)) => r.with_context(|| format!("the {} failed", self.name)),
        }
    }
}

/// Binds `addr`; a port that was just closed (a restart on the same address) can take a
/// moment to be free again, so that is retried for a few seconds.
async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
        }
    }
}

/// A running origin.
pub struct OriginServer {
    pub addr: SocketAddr,
    /// `http://addr`.
    pub url: String,
    /// A client for it.
    pub client: OriginClient,
    server: Server,
}

impl OriginServer {
    /// Runs `ssepush_origin::server::run` on `settings.listen`.
    pub async fn start(settings: OriginSettings) -> anyhow::Result<OriginServer> {
        // Before any await: the caller may build reqwest clients as soon as this returns, and
        // reqwest has no crypto provider of its own (see ssepush_origin::service::tls).
        ssepush_origin::service::tls::install_default_provider();
        let listener = bind(settings.listen).await?;
        let addr = listener.local_addr()?;
        let server = Server::spawn("origin", move |stop| async move {
            ssepush_origin::server::run(listener, settings, stop.cancelled_owned()).await?;
            Ok(())
        });
        let url = format!("http://{addr}");
        Ok(OriginServer {
            addr,
            client: OriginClient::new(&url),
            url,
            server,
        })
    }

    /// Drains it (streams end with `retry:`) and waits until it has stopped.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.stop().await
    }
}

/// A running simulated gateway, with its credentials written to a directory as
/// `ssepush gateway --credentials-dir` writes them.
pub struct GatewayServer {
    pub addr: SocketAddr,
    /// `http://addr`, or `https://addr` with TLS.
    pub url: String,
    /// Its control API.
    pub client: GatewayClient,
    /// What it checks signatures against (what a proxy loads from [`GatewayServer::dir`]).
    pub credentials: Credentials,
    /// The credentials directory (`apns.json`, `AuthKey_*.p8`, `fcm-service-account.json`,
    /// `gateway.json`, and `gateway-cert.pem` with TLS).
    pub dir: PathBuf,
    /// The PEM of its self-signed certificate, with TLS.
    pub tls_certificate: Option<String>,
    /// The directory was made here (and is removed with the server).
    temporary_dir: bool,
    server: Option<Server>,
}

impl GatewayServer {
    /// Makes the credentials (RSA key generation runs off the async workers) and serves on
    /// `listen`. Without `config.credentials_dir`, a fresh temporary directory is used and
    /// removed when the server is stopped or dropped.
    pub async fn start(listen: SocketAddr, mut config: GatewayConfig) -> anyhow::Result<Self> {
        // Before any await: the caller may build reqwest clients as soon as this returns, and
        // reqwest has no crypto provider of its own (see ssepush_origin::service::tls).
        ssepush_origin::service::tls::install_default_provider();
        let temporary_dir = config.credentials_dir.is_none();
        let dir = config
            .credentials_dir
            .get_or_insert_with(|| std::env::temp_dir().join(unique_name("ssepush-gateway")))
            .clone();
        let listener = bind(listen).await?;
        let addr = listener.local_addr()?;
        let gateway = tokio::task::spawn_blocking(move || Gateway::new(listener, config))
            .await
            .context("gateway setup task")??;
        let url = gateway.base_url().to_owned();
        let credentials = gateway.credentials().clone();
        let tls_certificate = gateway.tls_certificate().map(str::to_owned);
        let server = Server::spawn("gateway", move |stop| async move {
            gateway.serve(stop.cancelled_owned()).await;
            Ok(())
        });
        Ok(GatewayServer {
            addr,
            client: GatewayClient::new(&url),
            url,
            credentials,
            dir,
            tls_certificate,
            temporary_dir,
            server: Some(server),
        })
    }

    /// Fills the proxy's `[apns]`, `[fcm]` and `[webpush]` with this gateway's credentials
    /// (the VAPID key is made next to them), as `ssepush proxy --gateway-credentials` does.
    pub fn configure_proxy(&self, settings: &mut ProxySettings) -> anyhow::Result<()> {
        let (apns, fcm, webpush) = provider_settings(&self.dir)?;
        settings.apns = Some(apns);
        settings.fcm = Some(fcm);
        settings.webpush = Some(webpush);
        Ok(())
    }

    /// Stops it (open device streams end); a temporary credentials directory is removed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        match self.server.take() {
            Some(server) => server.stop().await,
            None => Ok(()),
        }
    }
}

impl Drop for GatewayServer {
    fn drop(&mut self) {
        // Dropping the server stops it; the keys it made here go with it.
        self.server.take();
        if self.temporary_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A running proxy.
pub struct ProxyServer {
    pub addr: SocketAddr,
    /// `http://addr`.
    pub url: String,
    /// The VAPID application server key browsers subscribe with, when Web Push is configured.
    pub vapid_public_key: Option<String>,
    server: Server,
}

impl ProxyServer {
    /// Runs `ssepush_proxy::server::run` on `settings.listen` with `providers`.
    pub async fn start(settings: ProxySettings, providers: Providers) -> anyhow::Result<Self> {
        // Before any await: the caller may build reqwest clients as soon as this returns, and
        // reqwest has no crypto provider of its own (see ssepush_origin::service::tls).
        ssepush_origin::service::tls::install_default_provider();
        settings.validate()?;
        let listener = bind(settings.listen).await?;
        let addr = listener.local_addr()?;
        let vapid_public_key = providers.vapid_public_key.clone();
        let server = Server::spawn("proxy", move |stop| async move {
            ssepush_proxy::server::run(listener, settings, providers, stop.cancelled_owned())
                .await?;
            Ok(())
        });
        Ok(ProxyServer {
            addr,
            url: format!("http://{addr}"),
            vapid_public_key,
            server,
        })
    }

    /// The same with the providers its settings describe (`[apns]`, `[fcm]`, `[webpush]`), as
    /// `ssepush proxy` builds them.
    pub async fn start_configured(settings: ProxySettings) -> anyhow::Result<Self> {
        let providers = ssepush_proxy::server::providers_from_settings(&settings)
            .context("building the push providers from [apns], [fcm], [webpush]")?;
        Self::start(settings, providers).await
    }

    /// Drains it and waits until it has stopped.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.stop().await
    }
}

/// Knobs for the whole [`Stack`] (the failure tests shrink retention and buffers).
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// The origin's `retention.max_events` (per channel).
    pub retention_max_events: Option<u64>,
    /// The proxy's `buffer_events` (per handoff).
    pub buffer_events: Option<usize>,
    /// `cors_allow_origins` of the origin and the proxy (the web demo's page origin).
    pub cors_allow_origins: Vec<String>,
}

impl StackOptions {
    /// The origin's settings: memory store, port 0, a short `retry:` and grace.
    pub fn origin_settings(&self) -> OriginSettings {
        let mut origin = OriginSettings {
            listen: loopback(),
            retry_ms: 500,
            shutdown_grace_secs: 2,
            cors_allow_origins: self.cors_allow_origins.clone(),
            ..Default::default()
        };
        if let Some(n) = self.retention_max_events {
            origin.retention.max_events = n;
        }
        origin
    }

    /// The proxy's settings for an origin at `origin_url`: port 0, quick reconnects and retries
    /// (the providers are filled in by [`GatewayServer::configure_proxy`]).
    pub fn proxy_settings(&self, origin_url: &str) -> ProxySettings {
        let mut proxy = ProxySettings {
            listen: loopback(),
            allowed_origins: vec![origin_url.to_owned()],
            shutdown_grace_secs: 2,
            cors_allow_origins: self.cors_allow_origins.clone(),
            ..Default::default()
        };
        proxy.upstream.reconnect_ms = 200;
        proxy.upstream.backoff_base_ms = 100;
        proxy.upstream.backoff_max_ms = 2000;
        proxy.wake.retry_base_ms = 100;
        if let Some(n) = self.buffer_events {
            proxy.buffer_events = n;
        }
        proxy
    }
}

/// A running origin + gateway + proxy.
pub struct Stack {
    pub origin: OriginServer,
    pub gateway: GatewayServer,
    pub proxy: ProxyServer,
}

impl Stack {
    /// Starts the three, the proxy last (it needs the others' addresses and credentials).
    pub async fn start(opts: StackOptions) -> anyhow::Result<Stack> {
        let origin = OriginServer::start(opts.origin_settings()).await?;
        let gateway = GatewayServer::start(
            loopback(),
            GatewayConfig {
                shutdown_grace: Duration::from_secs(2),
                ..GatewayConfig::default()
            },
        )
        .await?;
        let mut settings = opts.proxy_settings(&origin.url);
        gateway.configure_proxy(&mut settings)?;
        let proxy = ProxyServer::start_configured(settings).await?;
        Ok(Stack {
            origin,
            gateway,
            proxy,
        })
    }

    /// The proxy's VAPID public key (base64url, uncompressed P-256): the
    /// `applicationServerKey` browsers subscribe with.
    pub fn vapid_public_key(&self) -> anyhow::Result<String> {
        self.proxy
            .vapid_public_key
            .clone()
            .context("the proxy has no Web Push provider")
    }

    /// Stops the proxy, the gateway and the origin (each within its grace period) and removes
    /// the credentials; the first failure is returned, after all three were stopped.
    pub async fn stop(self) -> anyhow::Result<()> {
        let proxy = self.proxy.stop().await;
        let gateway = self.gateway.stop().await;
        let origin = self.origin.stop().await;
        proxy.and(gateway).and(origin)
    }
}

/// The proxy's provider sections for the gateway that wrote `dir`. The simulated set-up makes
/// its own VAPID key beside the gateway's credentials ([`VAPID_FILE`]) the first time, on
/// purpose: the proxy itself never generates one.
pub fn provider_settings(
    dir: &Path,
) -> anyhow::Result<(ApnsSettings, FcmSettings, WebPushSettings)> {
    fn read<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }
    let apns: ApnsInfo = read(&dir.join(APNS_FILE))?;
    let info: GatewayInfo = read(&dir.join(GATEWAY_FILE))?;
    let ca = info.ca_cert_file.map(|f| dir.join(f));
    let apns = ApnsSettings {
        key_path: dir.join(apns.key_file),
        key_id: apns.key_id,
        team_id: apns.team_id,
        topic: apns.topic,
        endpoint: Some(apns.endpoint),
        ca_cert_path: ca.clone(),
        ..ApnsSettings::default()
    };
    let fcm = FcmSettings {
        service_account_path: dir.join(info.service_account_file),
        base_url: Some(info.url),
        ca_cert_path: ca.clone(),
        ..FcmSettings::default()
    };
    let vapid = dir.join(VAPID_FILE);
    if !vapid.exists() {
        // A concurrent start may win the race to create it; loading it is what counts, and
        // the proxy reports that.
        let _ = ssepush_proxy::push::webpush::VapidKey::generate(&vapid);
    }
    let webpush = WebPushSettings {
        vapid_key_path: vapid,
        subject: "mailto:testers@example.com".into(),
        ca_cert_path: ca,
        ..WebPushSettings::default()
    };
    Ok((apns, fcm, webpush))
}

/// `127.0.0.1:0`.
fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `prefix-<pid>-<nanos>-<n>`: a name no other server of this or an earlier run uses.
pub fn unique_name(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

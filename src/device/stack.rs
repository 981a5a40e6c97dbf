//! The whole product in one process, on ephemeral loopback ports: origin (memory store), the
//! simulated gateway, and the proxy with its real APNs / FCM / Web Push providers pointed at
//! the gateway. `ssepush demo` and the tests run the fleet against it; the servers are the
//! production `run` functions, only wired together here.
//!
//! Also [`provider_settings`]: the proxy's `[apns]`, `[fcm]` and `[webpush]` sections from a
//! gateway's credentials directory (`ssepush proxy --gateway-credentials DIR` uses it too).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use ssepush_proxy::settings::{ApnsSettings, FcmSettings, WebPushSettings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::gateway::client::GatewayClient;
use crate::gateway::credentials::{APNS_FILE, GATEWAY_FILE};
use crate::gateway::{Gateway, GatewayConfig};

/// The VAPID key file the proxy makes (and reuses) next to the gateway's credentials.
pub const VAPID_FILE: &str = "proxy-vapid.pem";

/// The proxy's provider sections for the gateway that wrote `dir`.
pub fn provider_settings(
    dir: &Path,
) -> anyhow::Result<(ApnsSettings, FcmSettings, WebPushSettings)> {
    let read = |name: &str| -> anyhow::Result<Value> {
        let path = dir.join(name);
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    };
    let apns = read(APNS_FILE)?;
    let info = read(GATEWAY_FILE)?;
    let field = |v: &Value, k: &str| -> anyhow::Result<String> {
        v[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("{k} missing in the gateway's credentials"))
    };
    let ca = info["caCertFile"].as_str().map(|f| dir.join(f));
    let apns = ApnsSettings {
        key_path: dir.join(field(&apns, "keyFile")?),
        key_id: field(&apns, "keyId")?,
        team_id: field(&apns, "teamId")?,
        topic: field(&apns, "topic")?,
        endpoint: Some(field(&apns, "endpoint")?),
        ca_cert_path: ca.clone(),
        ..ApnsSettings::default()
    };
    let fcm = FcmSettings {
        service_account_path: dir.join(field(&info, "serviceAccountFile")?),
        base_url: Some(field(&info, "url")?),
        ca_cert_path: ca.clone(),
        ..FcmSettings::default()
    };
    let webpush = WebPushSettings {
        vapid_key_path: dir.join(VAPID_FILE),
        subject: "mailto:testers@example.com".into(),
        ca_cert_path: ca,
        ..WebPushSettings::default()
    };
    Ok((apns, fcm, webpush))
}

/// Knobs for the in-process stack (the failure tests shrink retention and buffers).
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// The origin's `retention.max_events` (per channel).
    pub retention_max_events: Option<u64>,
    /// The proxy's `buffer_events` (per handoff).
    pub buffer_events: Option<usize>,
    /// `cors_allow_origins` of the origin and the proxy (the web demo's page origin).
    pub cors_allow_origins: Vec<String>,
}

/// A running origin + gateway + proxy.
pub struct Stack {
    pub origin_url: String,
    pub proxy_url: String,
    pub gateway_url: String,
    pub gateway: GatewayClient,
    dir: PathBuf,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Stack {
    pub async fn start(opts: StackOptions) -> anyhow::Result<Stack> {
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let dir = std::env::temp_dir().join(format!(
            "ssepush-stack-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));

        // Origin on the memory store.
        let mut origin = ssepush_origin::settings::Settings {
            listen: "127.0.0.1:0".parse()?,
            retry_ms: 500,
            shutdown_grace_secs: 2,
            ..Default::default()
        };
        if let Some(n) = opts.retention_max_events {
            origin.retention.max_events = n;
        }
        origin.cors_allow_origins = opts.cors_allow_origins.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let origin_url = format!("http://{}", listener.local_addr()?);
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) =
                ssepush_origin::server::run(listener, origin, stop.cancelled_owned()).await
            {
                tracing::error!(error = %e, "origin failed");
            }
        }));

        // Gateway: credentials generated off the async workers (RSA).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let config = GatewayConfig {
            credentials_dir: Some(dir.clone()),
            shutdown_grace: Duration::from_secs(2),
            ..GatewayConfig::default()
        };
        let gw = tokio::task::spawn_blocking(move || Gateway::new(listener, config))
            .await
            .context("gateway setup task")??;
        let gateway_url = gw.base_url().to_owned();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(gw.serve(stop.cancelled_owned())));
        let gateway = GatewayClient::new(&gateway_url);
        gateway.wait_ready(Duration::from_secs(10)).await?;

        // Proxy with the real providers, pointed at the gateway.
        let (apns, fcm, webpush) = provider_settings(&dir)?;
        let mut proxy = ssepush_proxy::settings::Settings {
            listen: "127.0.0.1:0".parse()?,
            allowed_origins: vec![origin_url.clone()],
            shutdown_grace_secs: 2,
            apns: Some(apns),
            fcm: Some(fcm),
            webpush: Some(webpush),
            cors_allow_origins: opts.cors_allow_origins.clone(),
            ..Default::default()
        };
        proxy.upstream.reconnect_ms = 200;
        proxy.upstream.backoff_base_ms = 100;
        proxy.upstream.backoff_max_ms = 2000;
        proxy.wake.retry_base_ms = 100;
        if let Some(n) = opts.buffer_events {
            proxy.buffer_events = n;
        }
        proxy.validate()?;
        let providers = ssepush_proxy::server::providers_from_settings(&proxy)
            .context("building the push providers")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let proxy_url = format!("http://{}", listener.local_addr()?);
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) =
                ssepush_proxy::server::run(listener, proxy, providers, stop.cancelled_owned()).await
            {
                tracing::error!(error = %e, "proxy failed");
            }
        }));
        Ok(Stack {
            origin_url,
            proxy_url,
            gateway_url,
            gateway,
            dir,
            shutdown,
            tasks,
        })
    }

    /// The proxy's VAPID public key (base64url, uncompressed P-256): the
    /// `applicationServerKey` browsers subscribe with.
    pub fn vapid_public_key(&self) -> anyhow::Result<String> {
        let key = ssepush_proxy::push::webpush::VapidKey::load_or_generate(
            &self.dir.join(VAPID_FILE),
            false,
        )
        .context("reading the proxy's VAPID key")?;
        Ok(key.public_key().to_owned())
    }

    /// Stops the servers (each within its grace period) and removes the credentials.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

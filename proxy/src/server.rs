//! The proxy server: [`run`] is exactly what `ssepush proxy` executes and what the tests drive
//! on port 0. Push providers come in as a [`Providers`] value so tests can inject a recording
//! fake; [`providers_from_settings`] builds the real ones from `[apns]`, `[fcm]`, `[webpush]`.
//!
//! [`Node`] is what every handler and driver shares: settings, the allow list, the upstream
//! watchers, the providers with their provider-wide rate limits, the store, and the live
//! handoffs this node owns.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::handoff::OriginAllowList;
use crate::live::{LiveHandoff, now_ms};
use crate::push::PushProvider;
use crate::settings::Settings;
use crate::store::{HandoffStore, MemoryStore};
use crate::upstream::{Connector, Upstreams};
use crate::wake::TokenBucket;

pub use crate::push::Providers;

/// The same provider for every platform (tests, the demo).
pub fn providers_all(p: Arc<dyn PushProvider>) -> Providers {
    Providers {
        apns: Some(p.clone()),
        fcm: Some(p.clone()),
        webpush: Some(p),
        vapid_public_key: None,
    }
}

/// Builds the real providers from the settings' `[apns]`, `[fcm]` and `[webpush]` sections.
pub fn providers_from_settings(settings: &Settings) -> Result<Providers, crate::push::PushError> {
    Providers::from_settings(
        settings.apns.as_ref(),
        settings.fcm.as_ref(),
        settings.webpush.as_ref(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid settings: {0}")]
    Settings(#[from] ssepush_origin::service::config::ConfigError),
    #[error("cannot build the upstream HTTP client: {0}")]
    Http(String),
}

/// What every handler and driver shares.
pub struct Node {
    pub settings: Arc<Settings>,
    pub allow: Arc<OriginAllowList>,
    pub upstreams: Arc<Upstreams>,
    pub providers: Providers,
    buckets: HashMap<&'static str, Mutex<TokenBucket>>,
    pub store: Arc<dyn HandoffStore>,
    pub live: RwLock<HashMap<String, Arc<LiveHandoff>>>,
    pub auth: crate::api::HandoffAuth,
    pub shutdown: CancellationToken,
}

impl Node {
    /// Writes the handoff's record through to the store.
    pub async fn persist(&self, h: &LiveHandoff) {
        if let Err(e) = self.store.put(h.record()).await {
            tracing::warn!(error = %e, "could not persist handoff");
        }
    }

    /// Waits for a token of the platform's provider-wide bucket.
    pub async fn rate_limit(&self, platform: &'static str) {
        let Some(bucket) = self.buckets.get(platform) else {
            return;
        };
        loop {
            let wait = match bucket.lock().unwrap().try_take(Instant::now()) {
                Ok(()) => return,
                Err(wait) => wait,
            };
            metrics::counter!("ssepush_proxy_wakes_rate_limited_total", "provider" => platform)
                .increment(1);
            tokio::time::sleep(wait).await;
        }
    }

    pub fn get_live(&self, id: &str) -> Option<Arc<LiveHandoff>> {
        self.live.read().unwrap().get(id).cloned()
    }
}

/// Builds the node: validates the settings, the allow list, the HTTP client.
pub fn node(
    settings: Settings,
    providers: Providers,
    bound: std::net::SocketAddr,
    shutdown: CancellationToken,
) -> Result<Arc<Node>, ServerError> {
    settings.validate()?;
    let allow = Arc::new(
        OriginAllowList::parse(&settings.allowed_origins, bound)
            .map_err(ssepush_origin::service::config::ConfigError::Invalid)?,
    );
    let connector = Connector::new(allow.clone(), settings.upstream.clone())
        .map_err(|e| ServerError::Http(e.to_string()))?;
    let upstreams = Upstreams::new(connector, settings.buffer_events, shutdown.clone());
    let now = Instant::now();
    let buckets = ["apns", "fcm", "webpush"]
        .into_iter()
        .map(|p| {
            let b = TokenBucket::new(
                settings.wake.provider_rate_per_sec,
                settings.wake.provider_burst,
                now,
            );
            (p, Mutex::new(b))
        })
        .collect();
    let auth = crate::api::HandoffAuth::new(&settings.auth, bound)
        .map_err(ssepush_origin::service::config::ConfigError::Invalid)?;
    Ok(Arc::new(Node {
        store: Arc::new(MemoryStore::new(settings.max_handoffs)),
        settings: Arc::new(settings),
        allow,
        upstreams,
        providers,
        buckets,
        live: RwLock::new(HashMap::new()),
        auth,
        shutdown,
    }))
}

/// Serves the proxy on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    providers: Providers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    ssepush_origin::service::ops::metrics_handle();
    let bound = listener.local_addr().unwrap_or(settings.listen);
    let token = CancellationToken::new();
    let node = node(settings, providers, bound, token.clone())?;
    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            token.cancel();
        });
    }
    if node.allow_is_dev() {
        tracing::warn!("allowed_origins is empty: only loopback origins may be watched");
    }
    if node.providers.apns.is_none()
        && node.providers.fcm.is_none()
        && node.providers.webpush.is_none()
    {
        tracing::warn!(
            "no push provider is configured ([apns], [fcm], [webpush]): every handoff is refused"
        );
    }
    tracing::info!(addr = %bound, providers = ?node.providers, "proxy listening");
    let sweeper = tokio::spawn(sweep(node.clone()));
    let max_conns = node.settings.max_connections;
    let grace = node.settings.shutdown_grace();
    ssepush_origin::service::listener::serve(
        listener,
        crate::api::router(node.clone()),
        max_conns,
        token.clone(),
        grace,
    )
    .await;
    token.cancel();
    let _ = sweeper.await;
    tracing::info!("proxy stopped");
    Ok(())
}

impl Node {
    fn allow_is_dev(&self) -> bool {
        self.settings.allowed_origins.is_empty()
    }
}

/// Expires handoffs past their ttl (their drivers do it too; this catches any that cannot run)
/// and forgets finished ones after `keep_finished_secs`.
async fn sweep(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let live: Vec<Arc<LiveHandoff>> = node.live.read().unwrap().values().cloned().collect();
        for h in &live {
            if h.expire_if_due(now) {
                node.upstreams.leave(&h.spec.stream, &h.id);
                node.persist(h).await;
            }
        }
        let cutoff = now_ms().saturating_sub(node.settings.keep_finished_secs * 1000);
        if let Ok(ids) = node.store.finished_before(cutoff).await {
            for id in ids {
                let _ = node.store.remove(&id).await;
                node.live.write().unwrap().remove(&id);
            }
        }
    }
}

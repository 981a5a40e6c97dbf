//! The [`Node`]: what every handler and driver of this proxy shares — settings, the allow list,
//! the upstream watchers, the providers with their provider-wide rate limits, the handoff
//! store, handoff auth, and the live handoffs this node owns — and [`Node::teardown`], the one
//! way a handoff that ended leaves its watcher and is written to the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::allow::OriginAllowList;
use crate::auth::HandoffAuth;
use crate::connector::Connector;
use crate::live::LiveHandoff;
use crate::push::Providers;
use crate::settings::Settings;
use crate::store::{HandoffStore, MemoryStore};
use crate::upstream::Upstreams;
use crate::wake::TokenBucket;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid settings: {0}")]
    Settings(#[from] ssepush_origin::service::config::ConfigError),
    #[error("cannot build the upstream HTTP client: {0}")]
    Http(String),
    #[error("cannot listen on admin_listen {0}: {1}")]
    Admin(std::net::SocketAddr, std::io::Error),
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
    pub auth: HandoffAuth,
    pub shutdown: CancellationToken,
}

impl Node {
    /// Builds the node: validates the settings, the allow list, the HTTP client. `bound` is the
    /// address the server listens on (the loopback rules depend on it).
    pub fn new(
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
        let auth = HandoffAuth::new(&settings.auth, bound)
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

    /// Writes the handoff's record through to the store.
    pub async fn persist(&self, h: &LiveHandoff) {
        if let Err(e) = self.store.put(h.record()).await {
            tracing::warn!(error = %e, "could not persist handoff");
        }
    }

    /// The end of a handoff that reached a terminal state (handed back, expired, failed): it
    /// leaves its watcher (the connection closes with its last handoff) and its final record is
    /// written. Idempotent. Its status stays readable until the sweeper forgets it after
    /// `keep_finished_secs`.
    pub async fn teardown(&self, h: &LiveHandoff) {
        self.upstreams.leave(&h.spec.stream, &h.id);
        self.persist(h).await;
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

    /// A live handoff of this node by id.
    pub fn get_live(&self, id: &str) -> Option<Arc<LiveHandoff>> {
        self.live.read().unwrap().get(id).cloned()
    }

    /// Every live handoff of this node.
    pub fn all_live(&self) -> Vec<Arc<LiveHandoff>> {
        self.live.read().unwrap().values().cloned().collect()
    }
}

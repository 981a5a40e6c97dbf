//! The [`Node`]: what every handler and the scheduler of this proxy share — settings, the allow
//! list, the upstream watchers, the providers with their provider-wide rate limits, the handoff
//! store, handoff auth, the live handoffs this node owns and their schedule, and its place in
//! the fleet (its id, its lease) — and [`Node::teardown`], the one way a handoff that ended
//! leaves its watcher and is written to the store, and [`Node::drop_local`], the one way a
//! handoff this node no longer owns leaves it.
//!
//! **What is written when.** On a shared store every change that matters is written through
//! (a node taking a handoff over needs it). A single node's `memory` store dies with the
//! process and nobody else reads it: a live handoff's record *is* the live handoff, so only its
//! final record is written, when it ends (for the sweeper, which forgets it after
//! `keep_finished_secs`) — the store does not hold a second copy of every sleeping handoff.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::allow::OriginAllowList;
use crate::auth::HandoffAuth;
use crate::connector::Connector;
use crate::live::{Handoffs, LiveHandoff};
use crate::push::Providers;
use crate::settings::Settings;
use crate::store::{Fence, HandoffRecord, HandoffStore, StoreError};
use crate::upstream::Upstreams;
use crate::wake::TokenBucket;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid settings: {0}")]
    Settings(#[from] ssepush_origin::service::config::ConfigError),
    #[error("cannot build the upstream HTTP client: {0}")]
    Http(String),
    #[error("cannot open the handoff store: {0}")]
    Store(String),
    #[error("cannot listen on admin_listen {0}: {1}")]
    Admin(std::net::SocketAddr, std::io::Error),
}

/// What every handler and the scheduler share.
pub struct Node {
    pub settings: Arc<Settings>,
    pub allow: Arc<OriginAllowList>,
    pub upstreams: Arc<Upstreams>,
    pub providers: Providers,
    /// Where Web Push wakes may go (`[push]`), checked when a handoff is created.
    pub push_policy: crate::push::EndpointPolicy,
    buckets: HashMap<&'static str, Mutex<TokenBucket>>,
    pub store: Arc<dyn HandoffStore>,
    /// The live handoffs, found by id: a set of pointers (issue 11: 8 bytes an entry).
    live: RwLock<HashSet<ById>>,
    /// How many of [`live`](Self::live) had ended (expired, failed) at the sweeper's last pass:
    /// they stay readable until forgotten but hold no place of `max_handoffs`.
    ended: AtomicUsize,
    /// When each live handoff is next due ([`crate::scheduler`]).
    pub handoffs: Arc<Handoffs>,
    /// One copy of each stream's spec for all its handoffs.
    pub streams: crate::handoff::SharedStreams,
    pub auth: HandoffAuth,
    pub shutdown: CancellationToken,
    /// This node's id in the fleet (a new one after a lost lease).
    node_id: RwLock<Arc<str>>,
    /// The fence of the handoffs it creates (its id, epoch 1), shared by all of them.
    creation_fence: RwLock<Arc<Fence>>,
    /// Where peers forward API calls for this node's handoffs.
    pub advertise_url: String,
    /// Until when this node's lease surely holds (renewal start + ttl − a margin); `None` for a
    /// single node. Past it, the node sends no wake: its handoffs may be someone else's.
    lease_until: Mutex<Option<Instant>>,
    /// Whether the store is shared with other nodes.
    pub shared: bool,
    /// The client API calls are forwarded with to a handoff's owner.
    pub peers: reqwest::Client,
}

impl Node {
    /// Builds the node: validates the settings, the allow list, the HTTP client. `bound` is the
    /// address the server listens on (the loopback rules depend on it).
    pub fn new(
        settings: Settings,
        providers: Providers,
        bound: std::net::SocketAddr,
        shutdown: CancellationToken,
        store: Arc<dyn HandoffStore>,
    ) -> Result<Arc<Node>, ServerError> {
        settings.validate()?;
        let allow = Arc::new(
            OriginAllowList::parse(&settings.allowed_origins, bound)
                .map_err(ssepush_origin::service::config::ConfigError::Invalid)?,
        );
        let connector = Connector::new(
            allow.clone(),
            settings.upstream.clone(),
            settings.tls.extra_ca_path.as_deref(),
        )
        .map_err(ServerError::Http)?;
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
        let mut push_policy = settings.push_endpoint_policy();
        if settings.push.allow_private_endpoints.is_none() && !bound.ip().is_loopback() {
            push_policy.allow_private = false;
        }
        let auth = HandoffAuth::new(&settings.auth, bound)
            .map_err(ssepush_origin::service::config::ConfigError::Invalid)?;
        let advertise_url = if settings.fleet.advertise_url.is_empty() {
            format!("http://{bound}")
        } else {
            settings
                .fleet
                .advertise_url
                .trim_end_matches('/')
                .to_owned()
        };
        let node_id = if settings.fleet.node_id.is_empty() {
            new_node_id()
        } else {
            settings.fleet.node_id.clone()
        };
        // Node-to-node calls use the product's TLS too (a peer may advertise an https:// URL).
        let peers =
            ssepush_origin::service::tls::reqwest_builder(settings.tls.extra_ca_path.as_deref())
                .map_err(|e| ServerError::Http(e.to_string()))?
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| ServerError::Http(e.to_string()))?;
        Ok(Arc::new(Node {
            shared: settings.store != "memory",
            store,
            creation_fence: RwLock::new(Arc::new(Fence {
                node: node_id.as_str().into(),
                epoch: 1,
            })),
            node_id: RwLock::new(node_id.into()),
            advertise_url,
            lease_until: Mutex::new(None),
            peers,
            settings: Arc::new(settings),
            allow,
            upstreams,
            providers,
            push_policy,
            buckets,
            live: RwLock::new(HashSet::new()),
            ended: AtomicUsize::new(0),
            handoffs: Handoffs::new(Instant::now()),
            streams: Default::default(),
            auth,
            shutdown,
        }))
    }

    /// This node's id in the fleet.
    pub fn node_id(&self) -> Arc<str> {
        self.node_id.read().unwrap().clone()
    }

    /// After a lost lease: this node rejoins as a new member.
    pub fn new_identity(&self) -> Arc<str> {
        let id: Arc<str> = new_node_id().into();
        *self.node_id.write().unwrap() = id.clone();
        *self.creation_fence.write().unwrap() = Arc::new(Fence {
            node: id.clone(),
            epoch: 1,
        });
        id
    }

    /// The fence a handoff created here now gets: this node's id, epoch 1.
    pub fn creation_fence(&self) -> Arc<Fence> {
        self.creation_fence.read().unwrap().clone()
    }

    /// The lease was renewed at `renewed_at` (when the renewal was sent) for `ttl`.
    pub fn lease_renewed(&self, renewed_at: Instant, ttl: Duration) {
        // A margin for Redis's and this node's clocks running at slightly different rates.
        let margin = ttl / 10;
        *self.lease_until.lock().unwrap() = Some(renewed_at + ttl - margin);
    }

    /// Whether this node may act (send a wake): always on a single node; in a fleet, while its
    /// lease surely holds.
    pub fn lease_ok(&self) -> bool {
        !self.shared
            || self
                .lease_until
                .lock()
                .unwrap()
                .is_some_and(|u| Instant::now() < u)
    }

    /// The record to write for `h` now, if any (see the module docs): on a shared store, when
    /// its durable part changed since the last write; on a single node, its final one.
    pub fn to_persist(&self, h: &LiveHandoff) -> Option<HandoffRecord> {
        if h.is_released() || (!self.shared && !h.state().is_terminal()) {
            return None;
        }
        h.record_to_persist(false)
    }

    /// Writes the handoff's record through to the store, under its fence, when
    /// [`to_persist`](Self::to_persist) says so. A handoff that moved to another node is
    /// dropped here.
    pub async fn persist(&self, h: &LiveHandoff) {
        if let Some(rec) = self.to_persist(h) {
            self.write(h, rec).await;
        }
    }

    /// Writes `rec`, the record of `h` (see [`persist`](Self::persist)); whether the store
    /// now holds it.
    pub async fn write(&self, h: &LiveHandoff, rec: HandoffRecord) -> bool {
        if h.is_released() {
            return false;
        }
        let result = if self.shared {
            self.store.put(rec, &h.fence).await
        } else {
            // The first write of a single node's handoff is its final record.
            match self.store.insert(rec.clone(), &h.fence.node).await {
                Err(StoreError::Exists(_)) => self.store.put(rec, &h.fence).await,
                other => other.map(drop),
            }
        };
        match result {
            Ok(()) => true,
            Err(StoreError::Fenced(_)) => {
                tracing::warn!(parent: &h.span(), "handoff moved to another node; dropping it here");
                self.drop_local(h);
                false
            }
            Err(StoreError::Replaced(_)) => {
                // Ends it; the scheduler tears it down (and writes the final record). The
                // record was written all the same.
                if !h.state().is_terminal() {
                    tracing::info!(parent: &h.span(), "replaced by a newer handoff for its push target");
                    h.replaced();
                }
                true
            }
            Err(e) => {
                h.persist_failed();
                tracing::warn!(parent: &h.span(), error = %e, "could not persist handoff");
                false
            }
        }
    }

    /// The handoff is no longer this node's (released, or taken by another node): it leaves
    /// its watcher and this node's map, the scheduler forgets it, and nothing is written for it
    /// again.
    /// Idempotent: a late write of an old copy (this node may own the handoff again, as a new
    /// live handoff under the same id) never touches the new one.
    pub fn drop_local(&self, h: &LiveHandoff) {
        if !h.release_locally() {
            return;
        }
        if self.remove_if_current(h) {
            self.upstreams.leave(&h.spec.stream, &h.id);
        }
    }

    /// Takes `h` out of the live map if the entry under its id is `h` itself (not a newer live
    /// handoff of the same id); whether it did.
    fn remove_if_current(&self, h: &LiveHandoff) -> bool {
        let mut live = self.live.write().unwrap();
        let current = live
            .get(&*h.id)
            .is_some_and(|current| std::ptr::eq(Arc::as_ptr(&current.0), h));
        if current {
            live.remove(&*h.id);
        }
        current
    }

    /// The end of a handoff that reached a terminal state (handed back, expired, failed): it
    /// leaves its watcher (the connection closes after its last handoff, once
    /// `upstream.idle_linger_secs` is over) and its final record is written. Once: later calls
    /// do nothing. Its status stays readable until the sweeper forgets it after
    /// `keep_finished_secs`.
    pub async fn teardown(&self, h: &LiveHandoff) {
        if h.is_released() || !h.begin_teardown() {
            return;
        }
        self.upstreams.leave(&h.spec.stream, &h.id);
        let stored = match self.to_persist(h) {
            Some(rec) => self.write(h, rec).await,
            // Nothing new to write: the store holds its final record already.
            None => true,
        };
        // A handed-back handoff is done with this node: once the store holds its final record
        // (which answers its status and a repeated hand-back), it leaves the live map, so it no
        // longer counts towards `max_handoffs` — at churn rates the map would otherwise fill
        // with ended handoffs for `keep_finished_secs`. Expired and failed ones stay until the
        // sweeper forgets them: a phone may still check in and read what they buffered.
        if stored && h.state() == crate::handoff::State::Closed {
            self.remove_if_current(h);
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

    /// A live handoff of this node by id.
    pub fn get_live(&self, id: &str) -> Option<Arc<LiveHandoff>> {
        self.live.read().unwrap().get(id).map(|h| h.0.clone())
    }

    /// A handoff becomes live on this node (replacing an old copy under its id).
    pub fn add_live(&self, h: Arc<LiveHandoff>) {
        self.live.write().unwrap().replace(ById(h));
    }

    /// Forgets a live handoff (the sweeper, once it has ended long enough).
    pub fn forget_live(&self, id: &str) {
        self.live.write().unwrap().remove(id);
    }

    /// The handoffs that hold a place of `max_handoffs`: the live ones that have not ended.
    /// Ended ones still in the map are counted by the sweeper once a second, so this may
    /// trail by what ended or was forgotten within that second.
    pub fn unfinished_count(&self) -> usize {
        self.live_count()
            .saturating_sub(self.ended.load(Ordering::Relaxed))
    }

    /// Records how many handoffs in the live map have ended (the sweeper's pass).
    pub fn set_ended_count(&self, n: usize) {
        self.ended.store(n, Ordering::Relaxed);
    }

    /// How many handoffs this node holds in its live map (expired and failed ones until they
    /// are forgotten, too; handed-back ones leave at once).
    pub fn live_count(&self) -> usize {
        self.live.read().unwrap().len()
    }

    /// Every live handoff of this node.
    pub fn all_live(&self) -> Vec<Arc<LiveHandoff>> {
        self.live
            .read()
            .unwrap()
            .iter()
            .map(|h| h.0.clone())
            .collect()
    }
}

/// A live handoff in [`Node`]'s set, equal and hashed by its id (so found by `&str`).
struct ById(Arc<LiveHandoff>);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl std::hash::Hash for ById {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes: the set is searched by `&str` (`Borrow`).
        str::hash(&self.0.id, state)
    }
}

impl std::borrow::Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

/// A fresh node id: `n_` and 64 random bits, hex.
fn new_node_id() -> String {
    format!("n_{}", &crate::token::new_id()[2..18])
}

//! The handoff store: durable records of handoffs and who owns each, behind one trait
//! ([`HandoffStore`]), with two backends chosen by the `store` URL ([`open`]): [`MemoryStore`]
//! (`memory`, one node) and [`redis::RedisStore`] (`redis://…`, a fleet).
//!
//! A [`HandoffRecord`] is everything another node needs to take a handoff over: the stream (URL
//! and headers — sealed with AES-256-GCM in a shared store, [`sealed`]), the token's hash, the
//! push target, the wake preferences, the state, the device's cursor, the newest id seen and
//! the wake state (an outstanding wake, the budget's recent wakes). The node that owns a
//! handoff keeps its hot state (buffer, wake timers) in memory ([`crate::live`]) and writes the
//! record through on every change that matters: creation, check-in, wake accepted, state change.
//! The buffer is not stored: a node that takes a handoff over re-reads the stream from the
//! stored device cursor (the origin is the log; the buffer is its cache), so nothing the phone
//! has not acknowledged is lost.
//!
//! **Ownership and fencing.** Every handoff has an owner (a node id, or none while it is free
//! for the taking) and an **epoch** that grows by one each time it changes hands. A node acts
//! for a handoff only under the [`Fence`] (node, epoch) it got when it created or claimed it:
//! every record write ([`HandoffStore::put`]) and every wake ([`HandoffStore::fence`], checked
//! right before the push is sent) is refused with [`StoreError::Fenced`] once the handoff has
//! moved on — atomically, in the same Redis script as the write. Nodes hold **leases** that
//! they renew ([`HandoffStore::heartbeat`]); a lease that ran out can never be renewed (the node
//! must rejoin as a new member), so the handoffs of a node whose lease expired are claimed by
//! the others ([`HandoffStore::claim_dead`]) exactly once each. A draining or over-full node
//! [`release`](HandoffStore::release)s handoffs, which the others
//! [`claim_free`](HandoffStore::claim_free).

pub mod redis;
pub mod sealed;
pub mod targets;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use ssepush_origin::EventId;

pub use crate::protocol::LastWake;
use crate::protocol::{HandoffState, PushTarget, WakeMode};
pub use sealed::Sealer;

/// A handoff at rest.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoffRecord {
    pub id: String,
    /// SHA-256 of the device's token, hex. The token itself is never stored.
    pub token_sha256: String,
    pub stream_url: String,
    pub stream_headers: Vec<(String, String)>,
    pub push: PushTarget,
    pub wake_filter: Option<String>,
    pub coalesce_ms: u64,
    pub max_per_hour: u32,
    pub mode: WakeMode,
    pub state: HandoffState,
    pub failed_reason: Option<String>,
    pub cursor: Option<EventId>,
    pub newest_id: Option<EventId>,
    pub pending: u64,
    pub wakes_sent: u64,
    pub last_wake: Option<LastWake>,
    pub last_error: Option<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// When it reached a terminal state (for the sweeper).
    pub finished_at_ms: Option<u64>,
    /// A wake was accepted and the phone has not checked in since: no other wake until it does
    /// (kept across a takeover, so a new owner does not wake the phone twice).
    #[serde(default)]
    pub wake_outstanding: bool,
    /// Unix ms of the wakes accepted within the last hour (the hourly budget, across owners).
    #[serde(default)]
    pub wake_times_ms: Vec<u64>,
}

impl std::fmt::Debug for HandoffRecord {
    // Headers are upstream credentials and the push target holds device tokens: neither prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffRecord")
            .field("id", &self.id)
            .field("stream_url", &"***")
            .field("stream_headers", &self.stream_headers.len())
            .field("push", &self.push.platform())
            .field("state", &self.state)
            .field("cursor", &self.cursor)
            .field("newest_id", &self.newest_id)
            .field("wakes_sent", &self.wakes_sent)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("handoff {0} already exists")]
    Exists(String),
    #[error("this node holds its maximum of {0} handoffs")]
    Full(usize),
    /// The handoff changed hands: the caller no longer owns it and must stop acting for it.
    #[error("handoff {0} is no longer this node's (fenced)")]
    Fenced(String),
    /// A newer handoff for the same push target replaced it: it must end, without a wake.
    /// (A write that answers this was still made.)
    #[error("handoff {0} was replaced by a newer one for its push target")]
    Replaced(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether retrying later may help (503) or the request itself conflicts.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Full(_) | StoreError::Unavailable(_))
    }
}

/// The right to act for one handoff: its owner and the epoch it was taken at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub node: Arc<str>,
    pub epoch: u64,
}

/// A stored handoff with its ownership.
#[derive(Debug, Clone)]
pub struct Owned {
    pub rec: HandoffRecord,
    /// The owning node; `None` while released and not yet claimed.
    pub owner: Option<String>,
    pub epoch: u64,
}

impl Owned {
    /// The fence of a handoff just created or claimed by `node`.
    pub fn fence(&self) -> Option<Fence> {
        self.owner.as_deref().map(|n| Fence {
            node: n.into(),
            epoch: self.epoch,
        })
    }
}

/// One member of the fleet as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLease {
    pub node: String,
    /// Where peers forward API calls for its handoffs.
    pub addr: String,
    /// Milliseconds until its lease runs out; negative once it has (the node is dead and its
    /// handoffs are being claimed).
    pub expires_in_ms: i64,
    /// Handoffs it owns (including ones that ended and wait for the sweeper).
    pub holds: u64,
}

/// The fleet: its members and the handoffs released for the taking.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetView {
    pub nodes: Vec<NodeLease>,
    pub free: u64,
}

/// Durable handoff records and their ownership. Every method is one round of store
/// operations; none holds a lock across calls.
#[async_trait]
pub trait HandoffStore: Send + Sync + 'static {
    /// Stores a new record owned by `node` at epoch 1; fails when the id exists or the store is
    /// full.
    async fn insert(&self, rec: HandoffRecord, node: &str) -> Result<Fence, StoreError>;
    /// Replaces a record (the owner's write-through), if `fence` still holds.
    async fn put(&self, rec: HandoffRecord, fence: &Fence) -> Result<(), StoreError>;
    /// Checks that `fence` still holds (right before a wake is sent).
    async fn fence(&self, id: &str, fence: &Fence) -> Result<(), StoreError>;
    async fn get(&self, id: &str) -> Result<Option<Owned>, StoreError>;
    async fn remove(&self, id: &str) -> Result<(), StoreError>;
    /// Ids of records finished before `cutoff_ms` (for the sweeper), at most 1,000 at a time.
    async fn finished_before(&self, cutoff_ms: u64) -> Result<Vec<String>, StoreError>;
    async fn count(&self) -> Result<usize, StoreError>;
    /// Renews `node`'s lease for `ttl` (`join`: or takes a new one) and publishes its `addr`.
    /// `Ok(false)`: the lease had run out — the node's handoffs may already be someone else's;
    /// it must drop them all and rejoin under a new id.
    async fn heartbeat(
        &self,
        node: &str,
        addr: &str,
        ttl: Duration,
        join: bool,
    ) -> Result<bool, StoreError>;
    /// Ends `node`'s membership at once (after it released its handoffs).
    async fn leave(&self, node: &str) -> Result<(), StoreError>;
    async fn fleet(&self) -> Result<FleetView, StoreError>;
    /// Ids owned by `node`.
    async fn owned(&self, node: &str) -> Result<Vec<String>, StoreError>;
    /// Writes the final record and gives the handoff up for another node to claim, if `fence`
    /// still holds.
    async fn release(&self, rec: HandoffRecord, fence: &Fence) -> Result<(), StoreError>;
    /// Claims up to `max` released handoffs for `node`.
    async fn claim_free(&self, node: &str, max: usize) -> Result<Vec<Owned>, StoreError>;
    /// Claims up to `max` handoffs of `dead`, whose lease has run out, for `node`; once none is
    /// left the dead node is forgotten (`max` 0: only that).
    async fn claim_dead(
        &self,
        dead: &str,
        node: &str,
        max: usize,
    ) -> Result<Vec<Owned>, StoreError>;
    /// Records handoff `id` as the newest for push target `target` (a digest, never the
    /// token) and marks the older ones beyond the newest `cap` replaced (their writes and
    /// fences then answer [`StoreError::Replaced`]); returns those, oldest first.
    async fn claim_target(
        &self,
        target: &str,
        id: &str,
        cap: usize,
    ) -> Result<Vec<String>, StoreError>;
}

/// The digest a push target is known by in the store (platform and token or endpoint,
/// SHA-256, hex): budgets and replacement are per target, and no token is stored in a key.
pub fn target_digest(target: &PushTarget) -> String {
    use sha2::{Digest, Sha256};
    let who = match target {
        PushTarget::Apns { token, .. } => format!("apns\0{token}"),
        PushTarget::Fcm { token } => format!("fcm\0{token}"),
        PushTarget::Webpush { subscription } => format!("webpush\0{}", subscription.endpoint),
    };
    crate::token::hex(&Sha256::digest(who.as_bytes()))
}

/// Opens the store a URL names: `memory` (this node alone, at most `max_handoffs` records),
/// `redis://…` / `rediss://…` or `redis+cluster://host:port,…` (a fleet's shared store under
/// `namespace`, credentials sealed with `encryption_keys`, the first encrypting, all decrypting).
/// Errors: no usable key for a shared store, or Redis unreachable.
pub async fn open(
    url: &str,
    namespace: &str,
    encryption_keys: &[String],
    max_handoffs: usize,
) -> Result<Arc<dyn HandoffStore>, StoreError> {
    if url == "memory" {
        return Ok(Arc::new(MemoryStore::new(max_handoffs)));
    }
    let sealer = Sealer::from_settings(encryption_keys).map_err(StoreError::Unavailable)?;
    let store = redis::RedisStore::connect(url, namespace, sealer).await?;
    Ok(Arc::new(store))
}

struct MemEntry {
    rec: HandoffRecord,
    owner: Option<String>,
    epoch: u64,
    replaced: bool,
}

#[derive(Default)]
struct MemInner {
    records: HashMap<String, MemEntry>,
    /// node → (addr, lease end)
    nodes: HashMap<String, (String, Instant)>,
    free: HashSet<String>,
    /// push target → its handoffs, oldest first
    targets: targets::Targets,
    /// The finished records by (finished at, id): the sweeper's range, and which to forget
    /// first when finished records reach the bound.
    finished: BTreeSet<(u64, String)>,
}

impl MemInner {
    /// Keeps [`finished`](Self::finished) in step with a record whose finish time went from
    /// `old` to `new`.
    fn refile(&mut self, id: &str, old: Option<u64>, new: Option<u64>) {
        if old == new {
            return;
        }
        if let Some(at) = old {
            self.finished.remove(&(at, id.to_owned()));
        }
        if let Some(at) = new {
            self.finished.insert((at, id.to_owned()));
        }
    }

    fn forget(&mut self, id: &str) {
        if let Some(e) = self.records.remove(id)
            && let Some(at) = e.rec.finished_at_ms
        {
            self.finished.remove(&(at, id.to_owned()));
        }
        self.free.remove(id);
        self.targets.remove(id);
    }
}

/// The single-node store (ownership and leases work as on Redis, within one process).
///
/// It holds at most `max` unfinished records (more is [`StoreError::Full`]) and at most `max`
/// finished ones: a finished record is kept only so its status stays readable until the
/// sweeper forgets it, so when a new one would pass the bound the one finished longest ago is
/// forgotten first, and churn never fills the store.
pub struct MemoryStore {
    max: usize,
    inner: Mutex<MemInner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max", &self.max)
            .finish()
    }
}

impl MemoryStore {
    pub fn new(max: usize) -> Self {
        MemoryStore {
            max,
            inner: Mutex::new(MemInner::default()),
        }
    }

    fn check(e: &MemEntry, fence: &Fence) -> bool {
        e.owner.as_deref() == Some(&*fence.node) && e.epoch == fence.epoch
    }

    fn replaced(e: &MemEntry) -> Result<(), StoreError> {
        if e.replaced {
            return Err(StoreError::Replaced(e.rec.id.clone()));
        }
        Ok(())
    }

    fn claim(inner: &mut MemInner, from: Option<&str>, node: &str, max: usize) -> Vec<Owned> {
        let ids: Vec<String> = match from {
            None => inner.free.iter().take(max).cloned().collect(),
            Some(dead) => inner
                .records
                .iter()
                .filter(|(_, e)| e.owner.as_deref() == Some(dead) && e.rec.finished_at_ms.is_none())
                .map(|(id, _)| id.clone())
                .take(max)
                .collect(),
        };
        let mut out = Vec::new();
        for id in ids {
            inner.free.remove(&id);
            if let Some(e) = inner.records.get_mut(&id) {
                e.owner = Some(node.to_owned());
                e.epoch += 1;
                out.push(Owned {
                    rec: e.rec.clone(),
                    owner: e.owner.clone(),
                    epoch: e.epoch,
                });
            }
        }
        out
    }
}

#[async_trait]
impl HandoffStore for MemoryStore {
    async fn insert(&self, rec: HandoffRecord, node: &str) -> Result<Fence, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        if inner.records.contains_key(&rec.id) {
            return Err(StoreError::Exists(rec.id));
        }
        let finished_at = rec.finished_at_ms;
        match finished_at {
            None if inner.records.len() - inner.finished.len() >= self.max => {
                return Err(StoreError::Full(self.max));
            }
            None => {}
            Some(_) => {
                while inner.finished.len() >= self.max.max(1) {
                    let Some((_, oldest)) = inner.finished.pop_first() else {
                        break;
                    };
                    inner.forget(&oldest);
                }
            }
        }
        let id = rec.id.clone();
        inner.refile(&id, None, finished_at);
        inner.records.insert(
            rec.id.clone(),
            MemEntry {
                rec,
                owner: Some(node.to_owned()),
                epoch: 1,
                replaced: false,
            },
        );
        Ok(Fence {
            node: node.into(),
            epoch: 1,
        })
    }

    async fn put(&self, rec: HandoffRecord, fence: &Fence) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let (id, new) = (rec.id.clone(), rec.finished_at_ms);
        let (old, result) = match inner.records.get_mut(&rec.id) {
            Some(e) if Self::check(e, fence) => {
                let old = e.rec.finished_at_ms;
                e.rec = rec;
                (old, Self::replaced(e))
            }
            _ => return Err(StoreError::Fenced(rec.id)),
        };
        inner.refile(&id, old, new);
        result
    }

    async fn fence(&self, id: &str, fence: &Fence) -> Result<(), StoreError> {
        let inner = self.inner.lock().unwrap();
        match inner.records.get(id) {
            Some(e) if Self::check(e, fence) => Self::replaced(e),
            _ => Err(StoreError::Fenced(id.to_owned())),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Owned>, StoreError> {
        Ok(self.inner.lock().unwrap().records.get(id).map(|e| Owned {
            rec: e.rec.clone(),
            owner: e.owner.clone(),
            epoch: e.epoch,
        }))
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.inner.lock().unwrap().forget(id);
        Ok(())
    }

    async fn finished_before(&self, cutoff_ms: u64) -> Result<Vec<String>, StoreError> {
        Ok(self
            .inner
            .lock()
            .unwrap()
            .finished
            .range(..(cutoff_ms, String::new()))
            .map(|(_, id)| id.clone())
            .take(1000)
            .collect())
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.inner.lock().unwrap().records.len())
    }

    async fn heartbeat(
        &self,
        node: &str,
        addr: &str,
        ttl: Duration,
        join: bool,
    ) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        let held = inner.nodes.get(node).is_some_and(|(_, until)| *until > now);
        if !held && !join {
            return Ok(false);
        }
        inner
            .nodes
            .insert(node.to_owned(), (addr.to_owned(), now + ttl));
        Ok(true)
    }

    async fn leave(&self, node: &str) -> Result<(), StoreError> {
        self.inner.lock().unwrap().nodes.remove(node);
        Ok(())
    }

    async fn fleet(&self) -> Result<FleetView, StoreError> {
        let inner = self.inner.lock().unwrap();
        let now = Instant::now();
        let mut nodes: Vec<NodeLease> = inner
            .nodes
            .iter()
            .map(|(node, (addr, until))| NodeLease {
                node: node.clone(),
                addr: addr.clone(),
                expires_in_ms: if *until >= now {
                    until.duration_since(now).as_millis() as i64
                } else {
                    -(now.duration_since(*until).as_millis() as i64)
                },
                holds: inner
                    .records
                    .values()
                    .filter(|e| e.owner.as_deref() == Some(node))
                    .count() as u64,
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(FleetView {
            nodes,
            free: inner.free.len() as u64,
        })
    }

    async fn owned(&self, node: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .inner
            .lock()
            .unwrap()
            .records
            .values()
            .filter(|e| e.owner.as_deref() == Some(node))
            .map(|e| e.rec.id.clone())
            .collect())
    }

    async fn release(&self, rec: HandoffRecord, fence: &Fence) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let (id, new) = (rec.id.clone(), rec.finished_at_ms);
        let old = match inner.records.get_mut(&id) {
            Some(e) if Self::check(e, fence) => {
                let old = e.rec.finished_at_ms;
                e.rec = rec;
                e.owner = None;
                e.epoch += 1;
                old
            }
            _ => return Err(StoreError::Fenced(id)),
        };
        inner.refile(&id, old, new);
        inner.free.insert(id);
        Ok(())
    }

    async fn claim_free(&self, node: &str, max: usize) -> Result<Vec<Owned>, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        Ok(Self::claim(&mut inner, None, node, max))
    }

    async fn claim_dead(
        &self,
        dead: &str,
        node: &str,
        max: usize,
    ) -> Result<Vec<Owned>, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        if inner.nodes.get(dead).is_some_and(|(_, until)| *until > now) {
            return Ok(Vec::new());
        }
        let out = Self::claim(&mut inner, Some(dead), node, max);
        let holds_more = inner
            .records
            .values()
            .any(|e| e.owner.as_deref() == Some(dead) && e.rec.finished_at_ms.is_none());
        if !holds_more {
            inner.nodes.remove(dead);
        }
        Ok(out)
    }

    async fn claim_target(
        &self,
        target: &str,
        id: &str,
        cap: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let evicted = inner.targets.claim(target, id, cap);
        for old in &evicted {
            if let Some(e) = inner.records.get_mut(old) {
                e.replaced = true;
            }
        }
        Ok(evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(id: &str) -> HandoffRecord {
        HandoffRecord {
            id: id.into(),
            token_sha256: "00".repeat(32),
            stream_url: "http://127.0.0.1:8080/v1/sse?channel=a&token=url-secret".into(),
            stream_headers: vec![("authorization".into(), "Bearer header-secret".into())],
            push: PushTarget::Fcm {
                token: "fcm-device-secret".into(),
            },
            wake_filter: None,
            coalesce_ms: 0,
            max_per_hour: 3,
            mode: WakeMode::Background,
            state: HandoffState::Watching,
            failed_reason: None,
            cursor: None,
            newest_id: None,
            pending: 0,
            wakes_sent: 0,
            last_wake: None,
            last_error: None,
            created_at_ms: 1,
            expires_at_ms: 2,
            finished_at_ms: None,
            wake_outstanding: false,
            wake_times_ms: Vec::new(),
        }
    }

    #[tokio::test]
    async fn memory_store_is_bounded_and_sweepable() {
        let s = MemoryStore::new(2);
        let fence = s.insert(record("a"), "n1").await.unwrap();
        assert!(matches!(
            s.insert(record("a"), "n1").await,
            Err(StoreError::Exists(_))
        ));
        s.insert(record("b"), "n1").await.unwrap();
        let full = s.insert(record("c"), "n1").await.unwrap_err();
        assert!(full.is_retryable());
        let mut done = record("a");
        done.finished_at_ms = Some(10);
        s.put(done, &fence).await.unwrap();
        assert_eq!(s.finished_before(11).await.unwrap(), vec!["a".to_string()]);
        assert!(s.finished_before(10).await.unwrap().is_empty());
        s.remove("a").await.unwrap();
        assert_eq!(s.count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn finished_records_never_fill_the_memory_store() {
        // A single node writes a handoff's record when it ends: churn past `max` must not make
        // the store refuse later ones (it did: every finished record counted towards `max`).
        let s = MemoryStore::new(3);
        for i in 0..10u64 {
            let mut done = record(&format!("h{i}"));
            done.finished_at_ms = Some(100 + i);
            s.insert(done, "n1").await.unwrap();
        }
        // The three finished last are kept; the older ones were forgotten first.
        assert_eq!(s.count().await.unwrap(), 3);
        assert!(s.get("h6").await.unwrap().is_none());
        assert_eq!(s.get("h9").await.unwrap().unwrap().rec.id, "h9");
        assert_eq!(
            s.finished_before(109).await.unwrap(),
            vec!["h7".to_string(), "h8".to_string()]
        );
        // Unfinished records have their own bound.
        for id in ["a", "b", "c"] {
            s.insert(record(id), "n1").await.unwrap();
        }
        assert!(matches!(
            s.insert(record("d"), "n1").await,
            Err(StoreError::Full(3))
        ));
        s.remove("h9").await.unwrap();
        assert_eq!(s.finished_before(u64::MAX).await.unwrap().len(), 2);
    }

    #[test]
    fn debug_hides_credentials_and_tokens() {
        let text = format!("{:?}", record("a"));
        for secret in ["url-secret", "header-secret", "fcm-device-secret"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}

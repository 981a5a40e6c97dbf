//! The handoff store: durable records of handoffs, behind a trait.
//!
//! A [`HandoffRecord`] is everything another node needs to take a handoff over: the stream (URL
//! and headers — to be encrypted at rest with AES-256-GCM in the Redis store), the token's hash,
//! the push target, the wake preferences, the state, the device's cursor, the newest id seen and
//! the wake counters. The node that owns a handoff keeps its hot state (buffer, wake timers) in
//! memory ([`crate::live`]) and writes a record through on every change that matters: creation,
//! check-in, wake accepted, state change. The memory store is the single-node default; the Redis
//! store (fleet issue) implements the same trait with one hash per handoff
//! (`ssepush:{<id>}:rec`), a capped stream per buffer (`ssepush:{<id>}:buf`, `XADD MAXLEN`) and
//! a lease key, all under one hash tag so a handoff's keys live in one cluster slot.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use ssepush_origin::EventId;

pub use crate::protocol::LastWake;
use crate::protocol::{HandoffState, PushTarget, WakeMode};

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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("handoff {0} already exists")]
    Exists(String),
    #[error("this node holds its maximum of {0} handoffs")]
    Full(usize),
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether retrying later may help (503) or the request itself conflicts.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Full(_) | StoreError::Unavailable(_))
    }
}

#[async_trait]
pub trait HandoffStore: Send + Sync + 'static {
    /// Stores a new record; fails when the id exists or the store is full.
    async fn insert(&self, rec: HandoffRecord) -> Result<(), StoreError>;
    /// Replaces a record (write-through of the owner's state).
    async fn put(&self, rec: HandoffRecord) -> Result<(), StoreError>;
    async fn get(&self, id: &str) -> Result<Option<HandoffRecord>, StoreError>;
    async fn remove(&self, id: &str) -> Result<(), StoreError>;
    /// Ids of records finished before `cutoff_ms` (for the sweeper).
    async fn finished_before(&self, cutoff_ms: u64) -> Result<Vec<String>, StoreError>;
    async fn count(&self) -> Result<usize, StoreError>;
}

/// The single-node store.
#[derive(Debug)]
pub struct MemoryStore {
    max: usize,
    records: Mutex<HashMap<String, HandoffRecord>>,
}

impl MemoryStore {
    pub fn new(max: usize) -> Self {
        MemoryStore {
            max,
            records: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl HandoffStore for MemoryStore {
    async fn insert(&self, rec: HandoffRecord) -> Result<(), StoreError> {
        let mut records = self.records.lock().unwrap();
        if records.contains_key(&rec.id) {
            return Err(StoreError::Exists(rec.id));
        }
        if records.len() >= self.max {
            return Err(StoreError::Full(self.max));
        }
        records.insert(rec.id.clone(), rec);
        Ok(())
    }

    async fn put(&self, rec: HandoffRecord) -> Result<(), StoreError> {
        self.records.lock().unwrap().insert(rec.id.clone(), rec);
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<HandoffRecord>, StoreError> {
        Ok(self.records.lock().unwrap().get(id).cloned())
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.records.lock().unwrap().remove(id);
        Ok(())
    }

    async fn finished_before(&self, cutoff_ms: u64) -> Result<Vec<String>, StoreError> {
        Ok(self
            .records
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.finished_at_ms.is_some_and(|f| f < cutoff_ms))
            .map(|r| r.id.clone())
            .collect())
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.records.lock().unwrap().len())
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
        }
    }

    #[tokio::test]
    async fn memory_store_is_bounded_and_sweepable() {
        let s = MemoryStore::new(2);
        s.insert(record("a")).await.unwrap();
        assert!(matches!(
            s.insert(record("a")).await,
            Err(StoreError::Exists(_))
        ));
        s.insert(record("b")).await.unwrap();
        let full = s.insert(record("c")).await.unwrap_err();
        assert!(full.is_retryable());
        let mut done = record("a");
        done.finished_at_ms = Some(10);
        s.put(done).await.unwrap();
        assert_eq!(s.finished_before(11).await.unwrap(), vec!["a".to_string()]);
        assert!(s.finished_before(10).await.unwrap().is_empty());
        s.remove("a").await.unwrap();
        assert_eq!(s.count().await.unwrap(), 1);
    }

    #[test]
    fn debug_hides_credentials_and_tokens() {
        let text = format!("{:?}", record("a"));
        for secret in ["url-secret", "header-secret", "fcm-device-secret"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}

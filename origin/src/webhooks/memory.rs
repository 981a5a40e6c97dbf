//! The in-memory webhook store: one process, nothing to install, gone on restart (like the
//! in-memory event log it goes with). One mutex, never held across an `.await`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::Record;
use super::store::{Insert, Put, Versioned, WebhookStore};
use crate::store::LogError;

#[derive(Default)]
struct Inner {
    records: HashMap<String, Versioned>,
    leases: HashMap<String, (String, Instant)>,
}

#[derive(Default)]
pub struct MemoryWebhooks {
    inner: Mutex<Inner>,
}

impl MemoryWebhooks {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn holds(&self, id: &str, node: &str) -> bool {
        self.leases
            .get(id)
            .is_some_and(|(n, until)| n == node && *until > Instant::now())
    }
}

#[async_trait]
impl WebhookStore for MemoryWebhooks {
    async fn insert(&self, record: &Record, max: usize) -> Result<Insert, LogError> {
        let mut inner = self.lock();
        if inner.records.len() >= max {
            return Ok(Insert::Full);
        }
        inner.records.insert(
            record.hook.id.clone(),
            Versioned {
                record: record.clone(),
                rev: 1,
            },
        );
        Ok(Insert::Done)
    }

    async fn get(&self, id: &str) -> Result<Option<Versioned>, LogError> {
        Ok(self.lock().records.get(id).cloned())
    }

    async fn list(&self) -> Result<Vec<Versioned>, LogError> {
        Ok(self.lock().records.values().cloned().collect())
    }

    async fn put(&self, record: &Record, rev: u64, holder: Option<&str>) -> Result<Put, LogError> {
        let mut inner = self.lock();
        let id = record.hook.id.as_str();
        let current = match inner.records.get(id) {
            None => return Ok(Put::Gone),
            Some(v) => v.rev,
        };
        if current != rev {
            return Ok(Put::Conflict);
        }
        if let Some(node) = holder
            && !inner.holds(id, node)
        {
            return Ok(Put::NotHolder);
        }
        inner.records.insert(
            id.to_owned(),
            Versioned {
                record: record.clone(),
                rev: rev + 1,
            },
        );
        Ok(Put::Done(rev + 1))
    }

    async fn delete(&self, id: &str) -> Result<bool, LogError> {
        let mut inner = self.lock();
        inner.leases.remove(id);
        Ok(inner.records.remove(id).is_some())
    }

    async fn lease(&self, id: &str, node: &str, ttl: Duration) -> Result<bool, LogError> {
        let mut inner = self.lock();
        let now = Instant::now();
        let free = inner
            .leases
            .get(id)
            .is_none_or(|(n, until)| n == node || *until <= now);
        if free {
            inner
                .leases
                .insert(id.to_owned(), (node.to_owned(), now + ttl));
        }
        Ok(free)
    }

    async fn release(&self, id: &str, node: &str) -> Result<(), LogError> {
        let mut inner = self.lock();
        if inner.leases.get(id).is_some_and(|(n, _)| n == node) {
            inner.leases.remove(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventId;
    use crate::webhooks::{DeliveryState, Secret, Webhook};

    fn record(id: &str) -> Record {
        Record {
            hook: Webhook {
                id: id.into(),
                url: "http://127.0.0.1:1/".into(),
                channels: vec!["a".into()],
                filter: None,
                secret: Secret::generate(),
                created_at: 0,
                version: 1,
            },
            state: DeliveryState::new(EventId::ZERO),
        }
    }

    #[tokio::test]
    async fn writes_are_guarded_by_revision_and_lease() {
        let s = MemoryWebhooks::default();
        assert_eq!(s.insert(&record("w1"), 1).await.unwrap(), Insert::Done);
        assert_eq!(s.insert(&record("w2"), 1).await.unwrap(), Insert::Full);
        let v = s.get("w1").await.unwrap().unwrap();
        assert_eq!(
            s.put(&v.record, v.rev, Some("n1")).await.unwrap(),
            Put::NotHolder
        );
        assert!(s.lease("w1", "n1", Duration::from_secs(5)).await.unwrap());
        assert!(!s.lease("w1", "n2", Duration::from_secs(5)).await.unwrap());
        assert_eq!(
            s.put(&v.record, v.rev, Some("n1")).await.unwrap(),
            Put::Done(2)
        );
        assert_eq!(s.put(&v.record, v.rev, None).await.unwrap(), Put::Conflict);
        s.release("w1", "n1").await.unwrap();
        assert!(s.lease("w1", "n2", Duration::from_secs(5)).await.unwrap());
        assert!(s.delete("w1").await.unwrap());
        assert_eq!(s.put(&v.record, 2, None).await.unwrap(), Put::Gone);
    }

    #[tokio::test]
    async fn an_expired_lease_can_be_taken_over() {
        let s = MemoryWebhooks::default();
        assert!(s.lease("w", "n1", Duration::from_millis(1)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(s.lease("w", "n2", Duration::from_secs(5)).await.unwrap());
    }
}

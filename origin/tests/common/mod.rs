//! What the store tests share: the Redis they use, a namespace per test, small builders.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ssepush_origin::store::redis::RedisLog;
use ssepush_origin::store::{Limits, Retention};
use ssepush_origin::{EventId, NewEvent, PatternSet};

pub fn redis_url() -> String {
    std::env::var("SSEPUSH_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A namespace no other test (or earlier run) uses; its keys are deleted on drop.
pub struct Namespace(pub String);

impl Namespace {
    pub fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Namespace(format!(
            "test-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    pub async fn open(&self, retention: Retention) -> RedisLog {
        self.open_at(&redis_url(), retention).await
    }

    pub async fn open_at(&self, url: &str, retention: Retention) -> RedisLog {
        RedisLog::connect(url, &self.0, retention)
            .await
            .unwrap_or_else(|e| {
                panic!("these tests need Redis at {url} (set SSEPUSH_TEST_REDIS): {e}")
            })
    }

    /// Deletes every key of the namespace: what a Redis that lost its data looks like.
    pub fn wipe(&self) {
        let Ok(mut conn) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) else {
            return;
        };
        let pattern = format!("ssepush:{{{}}}:*", self.0);
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
            else {
                return;
            };
            if !keys.is_empty() {
                let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut conn);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Synchronous on purpose: it must also run while a failed test unwinds.
        self.wipe();
    }
}

pub fn new(ch: &str, n: i64) -> NewEvent {
    NewEvent::new(ch, None, serde_json::json!(n)).unwrap()
}

pub fn pats(p: &[&str]) -> PatternSet {
    PatternSet::parse_all(p.iter().copied()).unwrap()
}

pub fn keep(max_events: u64, max_age: Option<Duration>) -> Retention {
    Retention {
        default: Limits {
            max_events,
            max_age,
            max_bytes: u64::MAX,
        },
        overrides: vec![],
        max_total_bytes: u64::MAX,
    }
}

pub fn ids(events: &[ssepush_origin::event::SharedEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

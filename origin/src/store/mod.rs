//! The event log: the one ordered history every delivery pattern reads.
//!
//! [`EventLog`] is the boundary; backends are picked by URL with [`open`]:
//! `memory` (the default, one process) and `redis://…` (Redis Streams, durable, several origin
//! nodes). Both keep the same contract:
//!
//! * `append` assigns ids from one counter per origin, so ids are totally ordered across channels
//!   and a batch is stored in order;
//! * retention is per channel, by count and by age; when retention drops an event, the channel
//!   remembers the newest id it dropped, which is how a stale cursor is detected
//!   ([`ReadResult::reset`]);
//! * `tail` is the global feed in id order, which the server's hub fans out to live subscribers.

pub mod memory;
#[cfg(feature = "server")]
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::channel::{Pattern, PatternSet};
use crate::event::{EventId, NewEvent, SharedEvent};

/// Errors at the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store returned corrupt data: {0}")]
    Corrupt(String),
    #[error("unsupported store URL {0:?}: use 'memory' or 'redis://host:port[/db]'")]
    BadUrl(String),
}

/// How long a channel keeps its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events kept per channel.
    pub max_events: u64,
    /// Oldest event kept, by publish time; `None` keeps events regardless of age.
    pub max_age: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events: 10_000,
            max_age: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

/// Per-channel retention: a default plus overrides by pattern (first match wins).
#[derive(Debug, Clone, Default)]
pub struct Retention {
    pub default: Limits,
    pub overrides: Vec<(Pattern, Limits)>,
}

impl Retention {
    pub fn for_channel(&self, channel: &str) -> Limits {
        self.overrides
            .iter()
            .find(|(p, _)| p.matches(channel))
            .map_or(self.default, |(_, l)| *l)
    }
}

/// What a history read found.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// Events after the cursor, in id order, at most `limit`.
    pub events: Vec<SharedEvent>,
    /// Set when a matching channel dropped an event newer than the cursor: the client missed
    /// data and must resync. Holds the oldest id still retained in those channels, if any.
    pub reset: Option<Reset>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    pub oldest: Option<EventId>,
}

/// The ordered, retained history of every channel of one origin.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Stores a batch in order and returns the stored events with their ids.
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<SharedEvent>, LogError>;

    /// Events on channels matching `patterns` with `after < id <= upto`, in id order.
    async fn read(
        &self,
        patterns: &PatternSet,
        after: EventId,
        upto: EventId,
        limit: usize,
    ) -> Result<ReadResult, LogError>;

    /// The newest `n` events of one channel, newest last.
    async fn latest(&self, channel: &str, n: usize) -> Result<Vec<SharedEvent>, LogError>;

    /// The newest id assigned so far on any channel (`EventId::ZERO` before the first).
    async fn last_id(&self) -> Result<EventId, LogError>;

    /// Every event after `after`, across all channels, in id order; waits up to `wait` for one.
    /// `Ok(None)` means the feed no longer holds `after` (the caller fell too far behind).
    async fn tail(
        &self,
        after: EventId,
        limit: usize,
        wait: Duration,
    ) -> Result<Option<Vec<SharedEvent>>, LogError>;

    /// Drops events older than their channel's age limit. Called periodically.
    async fn trim_expired(&self) -> Result<(), LogError>;

    /// Readiness probe.
    async fn ping(&self) -> Result<(), LogError>;
}

/// Opens the backend a store URL names: `memory` (or `memory://`) or `redis://…`.
#[cfg(feature = "server")]
pub async fn open(
    url: &str,
    namespace: &str,
    retention: Retention,
) -> Result<std::sync::Arc<dyn EventLog>, LogError> {
    if url == "memory" || url.starts_with("memory://") {
        Ok(std::sync::Arc::new(memory::MemoryLog::new(retention)))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(std::sync::Arc::new(
            redis::RedisLog::connect(url, namespace, retention).await?,
        ))
    } else {
        Err(LogError::BadUrl(url.to_owned()))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

//! The event log: the one ordered history every delivery pattern reads.
//!
//! [`EventLog`] is the boundary; the backends beside this file are `memory` (the default, one
//! process) and `redis` (Redis Streams, durable, several origin nodes), picked by the origin's
//! store URL in `stores::open`. Both keep the same contract:
//!
//! * `append` assigns ids from one counter per origin, so ids are totally ordered across channels
//!   and a batch is stored in order;
//! * the log has an **epoch**, carried by every id it hands out ([`EventId::epoch`]). It changes
//!   when the log's history is lost: a memory log's epoch is new with every process, a Redis
//!   log's epoch is a key next to its data, so a Redis that came back empty has none and the
//!   next operation of any origin on the namespace makes a new one. An operation given an id of
//!   another epoch fails with [`LogError::EpochChanged`] (`tail` answers "lost my place"), so a
//!   reader never mixes two histories; [`resume_point`] (in `resume.rs`) is the rule that turns a client's cursor
//!   into a place to read from, or a reset;
//! * retention is per channel, by count and by age; when retention drops an event, the channel
//!   remembers the newest id it dropped, which is how a stale cursor is detected ([`EventLog::gap`]);
//! * `read` returns history in id order with bounded work per call: a wildcard read walks the
//!   log's global id order instead of every channel, and may stop early ([`ReadResult::next`]);
//! * `tail` is the global feed in id order, which the server's hub fans out to live subscribers;
//! * `append_once` stores a batch together with a publisher's idempotency key and its answer,
//!   atomically, so a retried request gets the first answer instead of a second copy.

pub mod memory;
#[cfg(feature = "server")]
pub mod redis;
pub mod resume;

pub use resume::{Resume, resume_point};

use std::time::Duration;

use async_trait::async_trait;

use crate::channel::{Pattern, PatternSet};
use crate::event::{EventId, NewEvent, SharedEvent};

/// Errors at the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A write whose outcome is not known: it timed out or the connection broke after it was
    /// sent, so it may or may not have been applied. Not a "retry later": a blind retry can
    /// store it twice (an idempotency key makes the retry safe).
    #[error("store write outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The store refused a write for want of space (its byte budget, or Redis' `maxmemory`);
    /// the message is for the client (what is full, which setting).
    #[error("store full: {0}")]
    Full(String),
    /// An event larger than its channel's byte budget: nothing was stored.
    #[error("event too large: {0}")]
    TooLarge(String),
    #[error("store returned corrupt data: {0}")]
    Corrupt(String),
    #[error("unsupported store URL {0:?}: use 'memory' or 'redis://host:port[/db]'")]
    BadUrl(String),
    /// The log's history was lost since the caller read `expected` (its epoch is now `current`):
    /// whatever the caller was reading belongs to a history that no longer exists.
    #[error("the event log's history was lost: epoch {expected:08x} is now {current:08x}")]
    EpochChanged { expected: u32, current: u32 },
}

/// How long a channel keeps its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events kept per channel.
    pub max_events: u64,
    /// Oldest event kept, by publish time; `None` keeps events regardless of age.
    pub max_age: Option<Duration>,
    /// Most bytes of events kept per channel ([`event_bytes`]); older events go first. An
    /// event larger than this is refused ([`LogError::TooLarge`]). The memory log keeps it; on
    /// Redis only the per-event refusal applies (Redis' `maxmemory` bounds the rest).
    pub max_bytes: u64,
}

/// Default per-channel byte budget: 16 MiB.
pub const DEFAULT_CHANNEL_BYTES: u64 = 16 << 20;
/// Default byte budget of a whole memory log: 256 MiB.
pub const DEFAULT_TOTAL_BYTES: u64 = 256 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events: 10_000,
            max_age: Some(Duration::from_secs(24 * 3600)),
            max_bytes: DEFAULT_CHANNEL_BYTES,
        }
    }
}

/// Per-channel retention: a default plus overrides by pattern (first match wins), and a byte
/// budget for the whole log.
#[derive(Debug, Clone)]
pub struct Retention {
    pub default: Limits,
    pub overrides: Vec<(Pattern, Limits)>,
    /// Most bytes of events the memory log keeps across all channels (and, separately, in its
    /// live feed); past it the oldest events of any channel go first, reported like any other
    /// retention drop. A batch larger than this is refused ([`LogError::Full`]).
    pub max_total_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            default: Limits::default(),
            overrides: Vec::new(),
            max_total_bytes: DEFAULT_TOTAL_BYTES,
        }
    }
}

/// What an event counts against byte budgets: its data as compact JSON, its channel and type,
/// and a fixed 64 bytes for its id, time and bookkeeping. Counted without allocating.
pub fn event_bytes(channel: &str, kind: &str, data: &serde_json::Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing a `Value` to an infallible writer cannot fail.
    let _ = serde_json::to_writer(&mut n, data);
    n.0 + channel.len() as u64 + kind.len() as u64 + 64
}

/// Checks a batch against the byte budgets before anything is stored: an event over its
/// channel's budget is [`LogError::TooLarge`], a batch over the total is [`LogError::Full`].
///
/// # Errors
/// As above, with a message naming the channel and the budget.
pub fn check_budgets(retention: &Retention, events: &[NewEvent]) -> Result<Vec<u64>, LogError> {
    let mut total = 0u64;
    let mut sizes = Vec::with_capacity(events.len());
    for e in events {
        let size = event_bytes(e.channel.as_str(), &e.kind, &e.data);
        let limit = retention.for_channel(e.channel.as_str()).max_bytes;
        if size > limit {
            return Err(LogError::TooLarge(format!(
                "an event of {size} bytes on channel {:?} is larger than the channel's byte \
                 budget of {limit} bytes (retention.max_channel_bytes)",
                e.channel.as_str()
            )));
        }
        total = total.saturating_add(size);
        sizes.push(size);
    }
    if total > retention.max_total_bytes {
        return Err(LogError::Full(format!(
            "a batch of {total} bytes is larger than the log's byte budget of {} bytes \
             (retention.max_total_bytes)",
            retention.max_total_bytes
        )));
    }
    Ok(sizes)
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
    /// The read is complete through this id: every matching event in `(after, next]` that the
    /// log holds is in `events`. The next read starts here. It equals `upto` once the read
    /// reached it; before that a store may stop early (after `limit` events, or after a bounded
    /// amount of work), but always past `after`.
    pub next: EventId,
}

/// Retention dropped events after a cursor (see [`EventLog::gap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    /// The oldest id still retained on the channels that lost events, if they hold any.
    pub oldest: Option<EventId>,
}

/// A publisher's idempotency key for one batch ([`EventLog::append_once`]).
#[derive(Debug, Clone, Copy)]
pub struct Once<'a> {
    /// The key, as the publisher sent it (`Idempotency-Key`).
    pub key: &'a str,
    /// What identifies the request the key came with (a digest of its body), so a different
    /// request under the same key can be told apart.
    pub fingerprint: &'a str,
    /// How long the key and its answer are kept.
    pub ttl: Duration,
    /// `answer[i]` is true where event `i` of the batch belongs in the answer (the client's own
    /// events, not the static-filter copies appended with them).
    pub answer: &'a [bool],
}

/// What [`EventLog::append_once`] did.
#[derive(Debug, Clone)]
pub enum Appended {
    /// The batch was stored (every event of it, in order).
    Stored(Vec<SharedEvent>),
    /// The key was seen before: nothing was stored; this is the first request's fingerprint and
    /// the ids of its answer.
    Replayed {
        fingerprint: String,
        ids: Vec<EventId>,
    },
}

/// The ordered, retained history of every channel of one origin.
///
/// Ids given to a log may name its epoch or none (`EventId::new`, taken as the current epoch);
/// an id of another epoch fails with [`LogError::EpochChanged`].
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Stores a batch in order and returns the stored events with their ids.
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<SharedEvent>, LogError>;

    /// [`append`](Self::append) under an idempotency key: when `once.key` is held, nothing is
    /// stored and the held answer comes back; otherwise the batch is stored and the key kept
    /// with its answer for `once.ttl`, in the same atomic step.
    async fn append_once(
        &self,
        events: Vec<NewEvent>,
        once: Once<'_>,
    ) -> Result<Appended, LogError>;

    /// Events on channels matching `patterns` with `after < id <= upto`, in id order, at most
    /// `limit`; see [`ReadResult::next`] for where the next read starts. The work done per call
    /// is bounded (the memory log holds its lock for at most a few thousand entries), so a wide
    /// replay never stalls publishers.
    async fn read(
        &self,
        patterns: &PatternSet,
        after: EventId,
        upto: EventId,
        limit: usize,
    ) -> Result<ReadResult, LogError>;

    /// Whether retention dropped an event newer than `after` from a channel matching
    /// `patterns`; if so, the oldest id those channels still hold. Call it *after* reading the
    /// history it vouches for: an event dropped in between then shows as a reset, never as a
    /// silent hole.
    async fn gap(&self, patterns: &PatternSet, after: EventId) -> Result<Option<Reset>, LogError>;

    /// The newest `n` events of one channel, newest last.
    async fn latest(&self, channel: &str, n: usize) -> Result<Vec<SharedEvent>, LogError>;

    /// The log's head: the newest id assigned so far on any channel, in the current epoch
    /// (`0-0.<epoch>` before the first event of the epoch).
    async fn last_id(&self) -> Result<EventId, LogError>;

    /// Every event after `after`, across all channels, in id order; waits up to `wait` for one.
    /// `Ok(None)` means the feed no longer holds `after` (the caller fell too far behind, or
    /// `after` belongs to another epoch).
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

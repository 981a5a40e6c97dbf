//! Events and their ids.
//!
//! An [`EventId`] is `<ms>-<seq>.<epoch>`: the publish time in Unix milliseconds, a sequence
//! number within that millisecond (the same shape as a Redis Streams id), and the **epoch** of the
//! log that issued it, eight hex digits. Ids are assigned by the event log from one counter per
//! origin, so within an epoch they are **totally ordered across all channels**; that is what lets
//! a single `Last-Event-ID` resume a multi-channel subscription exactly. The epoch names the
//! log's history: it changes when that history is lost (a memory store's restart, a Redis that
//! came back empty), so a cursor says which history it points into and the origin can tell a
//! cursor it can vouch for from one it cannot (see [`crate::store::resume_point`]).
//! Clients must treat ids as opaque strings.
//!
//! `0-0` (no epoch) is the one id a client may write itself: "from the start of whatever history
//! the log holds now".

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::channel::{Channel, ChannelError};

/// Event types starting with this prefix are the origin's own control events.
pub const RESERVED_TYPE_PREFIX: &str = "ssepush.";
/// The type of an event when the publisher gives none (the SSE default).
pub const DEFAULT_TYPE: &str = "message";
/// Sent before any history when the origin cannot vouch for a resume cursor (see
/// [`ResetCause`]).
pub const RESET_TYPE: &str = "ssepush.reset";
/// Longest event type accepted, in bytes.
pub const MAX_TYPE_LEN: usize = 128;

/// An event id: a position in one epoch of the log.
///
/// Ordering compares `ms`, then `seq`, then `epoch`: within one epoch that is the log's order;
/// across epochs it is only by time, which no code relies on for correctness (a cursor from
/// another epoch is answered with a reset, never compared). 24 bytes, `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
    /// The epoch of the log that issued the id; `0` when the id names none (`0-0`, or an id
    /// written without one).
    pub epoch: u32,
}

impl EventId {
    /// `0-0` with no epoch: "from the start".
    pub const ZERO: EventId = EventId {
        ms: 0,
        seq: 0,
        epoch: 0,
    };

    /// An id with no epoch.
    pub const fn new(ms: u64, seq: u64) -> Self {
        EventId { ms, seq, epoch: 0 }
    }

    /// The same position in `epoch`.
    pub const fn in_epoch(self, epoch: u32) -> Self {
        EventId {
            ms: self.ms,
            seq: self.seq,
            epoch,
        }
    }

    /// `0-0.<epoch>`: the start of an epoch, the head of a log that holds nothing yet.
    pub const fn epoch_start(epoch: u32) -> Self {
        EventId {
            ms: 0,
            seq: 0,
            epoch,
        }
    }

    /// True for `0-0` in any epoch (or none).
    pub const fn is_start(self) -> bool {
        self.ms == 0 && self.seq == 0
    }

    /// The smallest id greater than `self` in the same epoch (used for exclusive range starts).
    pub fn next(self) -> EventId {
        match self.seq.checked_add(1) {
            Some(seq) => EventId { seq, ..self },
            None => EventId {
                ms: self.ms.saturating_add(1),
                seq: 0,
                epoch: self.epoch,
            },
        }
    }

    /// The `<ms>-<seq>` part, without the epoch (a Redis Streams id).
    pub fn position(self) -> Position {
        Position(self.ms, self.seq)
    }
}

/// The `<ms>-<seq>` part of an id, displayed without the epoch and ordered like it; see
/// [`EventId::position`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position(u64, u64);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A fresh epoch: random, never `0`.
///
/// Taken from the standard library's per-process random hash keys (seeded by the OS), so the
/// protocol layer needs no random-number crate.
pub fn new_epoch() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let bits = h.finish();
        let epoch = (bits ^ (bits >> 32)) as u32;
        if epoch != 0 {
            return epoch;
        }
    }
}

/// Parses an epoch as ids and stores write it: 1 to 8 hex digits, not zero.
pub fn parse_epoch(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok().filter(|e| *e != 0)
}

/// Why the origin answered a resume with `ssepush.reset` instead of the events after the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetCause {
    /// Retention dropped events after the cursor: history continues with what is still held.
    Retention,
    /// The cursor names another epoch (or none): the history it pointed into was lost. History
    /// continues from the start of the current epoch.
    Epoch,
    /// The cursor is newer than the log's head in the same epoch: the log lost its newest
    /// events (e.g. a failover to a replica that lagged). The stream continues from the head.
    Ahead,
}

impl ResetCause {
    /// The wire name (`cause` in every transport's reset).
    pub fn as_str(self) -> &'static str {
        match self {
            ResetCause::Retention => "retention",
            ResetCause::Epoch => "epoch",
            ResetCause::Ahead => "ahead",
        }
    }

    /// A sentence for humans (`reason` in the SSE reset).
    pub fn reason(self) -> &'static str {
        match self {
            ResetCause::Retention => "cursor older than retention; resync from a snapshot",
            ResetCause::Epoch => {
                "cursor from another epoch of the log (its history was lost); resync from a snapshot"
            }
            ResetCause::Ahead => {
                "cursor newer than the log's head (its newest events were lost); resync from a snapshot"
            }
        }
    }
}

impl fmt::Display for ResetCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `Last-Event-ID` or cursor that is not an id this origin could have issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an event id (expected <ms>-<seq>.<epoch>, as returned by this origin, or 0-0)"
)]
pub struct BadEventId(pub String);

impl FromStr for EventId {
    type Err = BadEventId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadEventId(s.chars().take(64).collect());
        let (position, epoch) = match s.split_once('.') {
            Some((p, e)) => (p, parse_epoch(e).ok_or_else(bad)?),
            None => (s, 0),
        };
        let (ms, seq) = position.split_once('-').ok_or_else(bad)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(EventId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
            epoch,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch == 0 {
            write!(f, "{}-{}", self.ms, self.seq)
        } else {
            write!(f, "{}-{}.{:08x}", self.ms, self.seq, self.epoch)
        }
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A stored event, as every transport sends it.
#[cfg_attr(feature = "service", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `<ms>-<seq>.<epoch>`, opaque to clients: resume with it as `Last-Event-ID`.
    #[cfg_attr(
        feature = "service",
        schema(value_type = String, example = "1795546555192-0.5f3e9a21")
    )]
    pub id: EventId,
    pub channel: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: serde_json::Value,
    /// Publish time, Unix milliseconds (the id's first half).
    pub time: u64,
}

impl Event {
    pub fn is_control(&self) -> bool {
        self.kind.starts_with(RESERVED_TYPE_PREFIX)
    }
}

/// Shared, immutable event: stored once, referenced by every queue it sits in.
pub type SharedEvent = Arc<Event>;

/// What a publisher sends, before the log gives it an id.
#[cfg_attr(feature = "service", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub channel: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

/// A validated event waiting for its id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub channel: Channel,
    pub kind: String,
    pub data: serde_json::Value,
}

/// Why a publish request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("event type {0:?} is reserved: types starting with 'ssepush.' are control events")]
    ReservedType(String),
    #[error("event type must be 1 to {MAX_TYPE_LEN} bytes with no line breaks")]
    BadType,
}

impl NewEvent {
    pub fn new(
        channel: &str,
        kind: Option<&str>,
        data: serde_json::Value,
    ) -> Result<Self, PublishError> {
        let channel = Channel::parse(channel)?;
        let kind = kind.unwrap_or(DEFAULT_TYPE);
        if kind.is_empty() || kind.len() > MAX_TYPE_LEN || kind.contains(['\r', '\n']) {
            return Err(PublishError::BadType);
        }
        if kind.starts_with(RESERVED_TYPE_PREFIX) {
            return Err(PublishError::ReservedType(kind.to_owned()));
        }
        Ok(NewEvent {
            channel,
            kind: kind.to_owned(),
            data,
        })
    }

    pub fn from_request(req: PublishRequest) -> Result<Self, PublishError> {
        Self::new(&req.channel, req.kind.as_deref(), req.data)
    }

    /// Builds the stored event once the log has assigned `id`.
    pub fn into_event(self, id: EventId) -> Event {
        Event {
            id,
            channel: self.channel.to_string(),
            kind: self.kind,
            data: self.data,
            time: id.ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_by_time_then_sequence() {
        let a: EventId = "5-9".parse().unwrap();
        let b: EventId = "6-0".parse().unwrap();
        let c: EventId = "6-1".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(c.to_string(), "6-1");
        assert_eq!(a.next(), EventId::new(5, 10));
        assert_eq!(EventId::new(1, u64::MAX).next(), EventId::new(2, 0));
        assert_eq!(
            EventId::new(1, u64::MAX).in_epoch(7).next(),
            EventId::new(2, 0).in_epoch(7)
        );
    }

    #[test]
    fn ids_carry_their_epoch_in_text() {
        let id = EventId::new(1700000000000, 3).in_epoch(0x9f3c_2a1b);
        assert_eq!(id.to_string(), "1700000000000-3.9f3c2a1b");
        assert_eq!(id.position().to_string(), "1700000000000-3");
        assert_eq!("1700000000000-3.9f3c2a1b".parse::<EventId>(), Ok(id));
        assert_eq!(
            "1-2.A".parse::<EventId>(),
            Ok(EventId::new(1, 2).in_epoch(10))
        );
        assert_eq!(EventId::epoch_start(5).to_string(), "0-0.00000005");
        assert_eq!("0-0".parse::<EventId>(), Ok(EventId::ZERO));
        assert!(EventId::epoch_start(5).is_start() && !id.is_start());
        // Within an epoch the order is the log's; the epoch only breaks ties.
        assert!(EventId::new(5, 0).in_epoch(9) < EventId::new(5, 1).in_epoch(1));
        let e = new_epoch();
        assert_ne!(e, 0);
        assert_eq!(parse_epoch(&format!("{e:08x}")), Some(e));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "5",
            "-1",
            "1-",
            "a-1",
            "1-2-3",
            "1 -2",
            "+1-2",
            "999999999999999999999-1",
            "1-2.",
            "1-2.0",
            "1-2.00000000",
            "1-2.123456789",
            "1-2.xyz",
            "1-2.ab.cd",
            ".ab",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ids_round_trip_through_json() {
        let id = EventId::new(1700000000000, 3);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"1700000000000-3\"");
        assert_eq!(serde_json::from_str::<EventId>(&json).unwrap(), id);
    }

    #[test]
    fn publish_validation() {
        assert!(NewEvent::new("chat.a", None, serde_json::json!(1)).is_ok());
        assert_eq!(
            NewEvent::new("chat.a", Some("ssepush.reset"), serde_json::Value::Null),
            Err(PublishError::ReservedType("ssepush.reset".into()))
        );
        assert_eq!(
            NewEvent::new("chat.a", Some("a\nb"), serde_json::Value::Null),
            Err(PublishError::BadType)
        );
        assert!(matches!(
            NewEvent::new("chat.*", None, serde_json::Value::Null),
            Err(PublishError::Channel(_))
        ));
    }
}

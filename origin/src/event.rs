//! Events and their ids.
//!
//! An [`EventId`] is `<ms>-<seq>`: the publish time in Unix milliseconds and a sequence number
//! within that millisecond, the same shape as a Redis Streams id. Ids are assigned by the event
//! log from one counter per origin, so they are **totally ordered across all channels**; that is
//! what lets a single `Last-Event-ID` resume a multi-channel subscription exactly. Clients must
//! treat them as opaque strings.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::channel::{Channel, ChannelError};

/// Event types starting with this prefix are the origin's own control events.
pub const RESERVED_TYPE_PREFIX: &str = "ssepush.";
/// The type of an event when the publisher gives none (the SSE default).
pub const DEFAULT_TYPE: &str = "message";
/// Sent before any history when a resume cursor is older than what is retained.
pub const RESET_TYPE: &str = "ssepush.reset";
/// Longest event type accepted, in bytes.
pub const MAX_TYPE_LEN: usize = 128;

/// A totally ordered event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };

    pub fn new(ms: u64, seq: u64) -> Self {
        EventId { ms, seq }
    }

    /// The smallest id greater than `self` (used for exclusive range starts).
    pub fn next(self) -> EventId {
        match self.seq.checked_add(1) {
            Some(seq) => EventId { ms: self.ms, seq },
            None => EventId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

/// A `Last-Event-ID` or cursor that is not an id this origin could have issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an event id (expected <ms>-<seq>, as returned by this origin)")]
pub struct BadEventId(pub String);

impl FromStr for EventId {
    type Err = BadEventId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadEventId(s.chars().take(64).collect());
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(EventId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub channel: String,
    #[serde(rename = "type", default)]
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

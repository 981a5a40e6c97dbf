//! `GET /v1/handoffs/{id}/events`: a woken phone's check-in. It answers the events the proxy
//! buffered after the phone's position, and first a **gap marker** when the buffer cannot vouch
//! that it holds every one of them.
//!
//! As JSON it is a [`CatchUp`]; as SSE (`Accept: text/event-stream`) it is `retry: 1000`, then
//! the gap as an `ssepush.reset` event whose data is the [`Gap`] (without an `id:`, so the
//! client's last event ID stays put), then each event as the origin frames it.

use serde::{Deserialize, Serialize};
use ssepush_origin::EventId;
use ssepush_origin::event::SharedEvent;

/// The JSON answer.
///
/// ```json
/// {"gap": null, "events": [{"id": "…", "channel": "chat.a", "type": "message", "data": {}, "time": 1}],
///  "cursor": "…"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CatchUp {
    /// Present when events between the phone's position and the first event here may be
    /// missing: the phone resumes at the origin with its own cursor instead.
    pub gap: Option<Gap>,
    /// The buffered events after the position, in id order, as the origin sent them.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<super::schema::Event>))]
    pub events: Vec<SharedEvent>,
    /// The device's cursor after this check-in (the newest id served or acknowledged).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub cursor: Option<EventId>,
}

/// Who cannot vouch for completeness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum GapSource {
    /// The proxy's buffer overflowed, skipped an oversized event, or was acknowledged past the
    /// position.
    Proxy,
    /// The origin answered the proxy's watch with `ssepush.reset`.
    Origin,
}

impl GapSource {
    /// The human-readable `reason` a gap from this source carries.
    pub fn reason(self) -> &'static str {
        match self {
            GapSource::Proxy => {
                "the proxy's buffer no longer holds every event after requestedId; resume from the origin with your cursor"
            }
            GapSource::Origin => "the origin no longer held the cursor; resync from a snapshot",
        }
    }
}

/// The gap marker: the same data in the JSON `gap` and in the SSE `ssepush.reset` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Gap {
    /// For people: what happened and what to do ([`GapSource::reason`]).
    pub reason: String,
    pub source: GapSource,
    /// The position the check-in asked from.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub requested_id: Option<EventId>,
    /// Events up to this id may be missing (a proxy gap; `null` for the origin's).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub through_id: Option<EventId>,
    /// The oldest event the buffer (or, for an origin gap, the origin) still holds.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub oldest_id: Option<EventId>,
}

impl Gap {
    /// A gap from `source`, with that source's reason.
    pub fn new(
        source: GapSource,
        requested_id: Option<EventId>,
        through_id: Option<EventId>,
        oldest_id: Option<EventId>,
    ) -> Gap {
        Gap {
            reason: source.reason().to_owned(),
            source,
            requested_id,
            through_id,
            oldest_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use ssepush_origin::Event;

    use super::*;

    #[test]
    fn the_json_catch_up_and_its_gap() {
        let c = CatchUp {
            gap: Some(Gap::new(
                GapSource::Proxy,
                Some(EventId::new(1, 0)),
                Some(EventId::new(1, 2)),
                Some(EventId::new(1, 3)),
            )),
            events: vec![Arc::new(Event {
                id: EventId::new(1, 3),
                channel: "a".into(),
                kind: "message".into(),
                data: json!({"x": 1}),
                time: 1,
            })],
            cursor: Some(EventId::new(1, 3)),
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({
                "gap": {"reason": GapSource::Proxy.reason(), "source": "proxy",
                        "requestedId": "1-0", "throughId": "1-2", "oldestId": "1-3"},
                "events": [{"id": "1-3", "channel": "a", "type": "message", "data": {"x": 1}, "time": 1}],
                "cursor": "1-3",
            })
        );
        assert_eq!(serde_json::from_value::<CatchUp>(v).unwrap(), c);
        let origin = Gap::new(GapSource::Origin, None, None, None);
        assert_eq!(
            serde_json::to_value(&origin).unwrap(),
            json!({"reason": GapSource::Origin.reason(), "source": "origin",
                   "requestedId": null, "throughId": null, "oldestId": null})
        );
    }
}

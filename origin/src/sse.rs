//! The Server-Sent Events wire format (WHATWG HTML §9.2): encoding here; reading in
//! [`parse`] (the WHATWG parser every reader in the product uses) and [`frames`] (what an
//! ssepush stream's items mean).
//!
//! Every event is encoded **once** into [`bytes::Bytes`] and the same buffer is shared by all
//! subscribers that receive it. A frame carries the id in `id:`, the type in `event:`, and in
//! `data:` the envelope `{"channel", "data", "time"}`, because a subscription to `chat.*` must tell
//! which room an event came from. The envelope is compact JSON, which never contains a raw line
//! break, so it is always a single `data:` line. [`decode_event`] is the inverse, for clients.

pub mod frames;
pub mod parse;

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::{Event, EventId, RESET_TYPE, ResetCause};

/// Encodes one event as an SSE frame: `id:`, `event:`, `data:` and the blank line.
pub fn encode_event(event: &Event) -> Bytes {
    let envelope = Envelope {
        channel: std::borrow::Cow::Borrowed(&event.channel),
        data: std::borrow::Cow::Borrowed(&event.data),
        time: event.time,
    };
    let data = serde_json::to_vec(&envelope).unwrap_or_else(|_| b"null".to_vec());
    encode_frame(Some(&event.id.to_string()), &event.kind, &data)
}

/// The `data:` payload of an event frame.
#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope<'a> {
    channel: std::borrow::Cow<'a, str>,
    data: std::borrow::Cow<'a, serde_json::Value>,
    time: u64,
}

/// A frame that is not an event of this origin's shape.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Id(#[from] crate::event::BadEventId),
    #[error("event data is not an ssepush envelope: {0}")]
    Envelope(#[from] serde_json::Error),
}

/// Rebuilds an [`Event`] from the fields of a received SSE frame (`id`, `event`, `data`).
pub fn decode_event(id: &str, kind: &str, data: &str) -> Result<Event, DecodeError> {
    let envelope: Envelope<'static> = serde_json::from_str(data)?;
    Ok(Event {
        id: id.parse()?,
        channel: envelope.channel.into_owned(),
        kind: if kind.is_empty() {
            "message".to_owned()
        } else {
            kind.to_owned()
        },
        data: envelope.data.into_owned(),
        time: envelope.time,
    })
}

/// Encodes a frame with an optional id, a type and a payload that may span lines.
pub fn encode_frame(id: Option<&str>, kind: &str, data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + kind.len() + 48);
    if let Some(id) = id {
        buf.put_slice(b"id: ");
        buf.put_slice(id.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_slice(b"event: ");
    buf.put_slice(kind.as_bytes());
    buf.put_u8(b'\n');
    // A payload line break would end the field: split it into one `data:` line per line.
    for line in data.split(|b| *b == b'\n') {
        buf.put_slice(b"data: ");
        buf.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The reset control event: the origin cannot vouch for the cursor the client gave (`cause`:
/// `retention`, `epoch` or `ahead`, see [`ResetCause`]). It carries no `id:` so the client's
/// `Last-Event-ID` is left where it was; when the stream continues from somewhere else, an
/// [`encode_id`] block follows it.
pub fn encode_reset(requested: EventId, oldest: Option<EventId>, cause: ResetCause) -> Bytes {
    let data = serde_json::json!({
        "reason": cause.reason(),
        "cause": cause.as_str(),
        "requestedId": requested,
        "oldestId": oldest,
    });
    encode_frame(None, RESET_TYPE, data.to_string().as_bytes())
}

/// The error control event (`event: ssepush.error`, no `id:`): the origin ends the stream for
/// this reason, e.g. `{"code":"filter_budget","message":"…"}` when the subscription's filter
/// went over its evaluation budget. Reconnecting with the same request meets the same end.
pub fn encode_error(code: &str, message: &str) -> Bytes {
    let data = serde_json::json!({ "code": code, "message": message });
    encode_frame(None, ERROR_TYPE, data.to_string().as_bytes())
}

/// The type of the [`encode_error`] control event.
pub const ERROR_TYPE: &str = "ssepush.error";

/// An id-only block (`id: <id>` and a blank line). WHATWG HTML §9.2.6: it sets the client's
/// last event ID without firing an event, so a stream can hand the client a cursor (the log's
/// head when it opens, the new position after a reset) before any event exists.
pub fn encode_id(id: EventId) -> Bytes {
    Bytes::from(format!("id: {id}\n\n"))
}

/// `retry:` tells the client how long to wait before it reconnects.
pub fn encode_retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// A comment line; clients ignore it, proxies and load balancers see traffic.
pub fn encode_comment(text: &str) -> Bytes {
    Bytes::from(format!(": {}\n\n", text.replace(['\r', '\n'], " ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frame_has_id_type_and_one_data_line() {
        let ev = Event {
            id: EventId::new(10, 2),
            channel: "chat.a".into(),
            kind: "message".into(),
            data: serde_json::json!({"text": "two\nlines"}),
            time: 10,
        };
        assert_eq!(
            &encode_event(&ev)[..],
            &b"id: 10-2\nevent: message\ndata: {\"channel\":\"chat.a\",\"data\":{\"text\":\"two\\nlines\"},\"time\":10}\n\n"[..]
        );
        let data = r#"{"channel":"chat.a","data":{"text":"two\nlines"},"time":10}"#;
        assert_eq!(decode_event("10-2", "message", data).unwrap(), ev);
        assert!(decode_event("x", "message", data).is_err());
        assert!(decode_event("1-1", "message", "{}").is_err());
    }

    #[test]
    fn multi_line_payloads_become_several_data_lines() {
        assert_eq!(
            &encode_frame(None, "x", b"a\r\nb\nc")[..],
            b"event: x\ndata: a\ndata: b\ndata: c\n\n"
        );
    }

    #[test]
    fn reset_has_no_id_and_names_the_oldest_id_and_the_cause() {
        let f = encode_reset(
            EventId::new(1, 0),
            Some(EventId::new(5, 0)),
            ResetCause::Retention,
        );
        let s = std::str::from_utf8(&f).unwrap();
        assert!(s.starts_with("event: ssepush.reset\ndata: {"), "{s}");
        assert!(s.contains("\"oldestId\":\"5-0\""), "{s}");
        assert!(s.contains("\"cause\":\"retention\""), "{s}");
        assert!(!s.contains("\nid:"));
        let f = encode_reset(EventId::new(1, 0).in_epoch(3), None, ResetCause::Epoch);
        let s = std::str::from_utf8(&f).unwrap();
        assert!(s.contains("\"cause\":\"epoch\""), "{s}");
        assert!(s.contains("\"requestedId\":\"1-0.00000003\""), "{s}");
    }

    #[test]
    fn an_id_block_has_no_data() {
        assert_eq!(
            &encode_id(EventId::new(7, 1).in_epoch(0xab))[..],
            b"id: 7-1.000000ab\n\n"
        );
    }

    #[test]
    fn comments_cannot_inject_fields() {
        assert_eq!(&encode_comment("a\ndata: x")[..], b": a data: x\n\n");
        assert_eq!(&encode_retry(2500)[..], b"retry: 2500\n\n");
    }
}

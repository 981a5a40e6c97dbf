//! What an ssepush origin's SSE stream means, for the programs that read it: the generic
//! [`Parsed`] items of the [parser](super::parse) turned into [`Frame`]s — events (the envelope
//! decoded), the origin's `ssepush.reset`, `retry:` hints, cursor moves of id-only blocks, and
//! oversized blocks the parser skipped.
//!
//! Ids are parsed only through [`EventId`]'s `FromStr`; nothing here knows their shape.

use std::time::Duration;

use futures::{Stream, StreamExt};

use super::parse::{Parsed, parse_stream};
use crate::event::{Event, EventId, RESET_TYPE};

/// One meaningful unit of an origin stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// An event, with the id of its block.
    Event(Event),
    /// The origin's `ssepush.reset`: the cursor was older than what it holds; `oldest` is the
    /// oldest id it still has (when it said).
    Reset { oldest: Option<EventId> },
    /// `retry:`: how long to wait before reconnecting after a clean end.
    Retry(Duration),
    /// An id-only block: the stream's last event ID is now this (WHATWG), without an event —
    /// e.g. the origin's head when a stream opens. `None`: the server cleared it (an empty
    /// `id:`), so a reconnect sends no `Last-Event-ID`. Every reader keeps it as its cursor.
    LastEventId(Option<EventId>),
    /// A block larger than the reader's limit was skipped; `id` is its own id when it had a
    /// readable one (resume past it), `None` when nobody can resume past it.
    Oversized { id: Option<EventId> },
    /// A message that is not an ssepush event (not an envelope, or not an ssepush id): what was
    /// wrong, for the reader to count or report.
    Undecodable(String),
}

/// The meaning of one parsed item.
pub fn decode(parsed: Parsed) -> Frame {
    match parsed {
        Parsed::Retry(d) => Frame::Retry(d),
        Parsed::LastEventId(id) if id.is_empty() => Frame::LastEventId(None),
        Parsed::LastEventId(id) => match id.parse() {
            Ok(id) => Frame::LastEventId(Some(id)),
            Err(e) => Frame::Undecodable(format!("id-only block: {e}")),
        },
        // An id that is not ours cannot be resumed past either.
        Parsed::Oversized { id } => Frame::Oversized {
            id: id.and_then(|id| id.parse().ok()),
        },
        Parsed::Message(m) if m.event == RESET_TYPE => {
            let v: serde_json::Value = serde_json::from_str(&m.data).unwrap_or_default();
            Frame::Reset {
                oldest: v["oldestId"].as_str().and_then(|s| s.parse().ok()),
            }
        }
        Parsed::Message(m) => match super::decode_event(&m.last_event_id, &m.event, &m.data) {
            Ok(e) => Frame::Event(e),
            Err(e) => Frame::Undecodable(e.to_string()),
        },
    }
}

/// An origin's SSE body → frames, with at most `max_event_bytes` held of any one line or event.
/// Generic over the byte stream so tests can feed it plain values; a transport error is yielded
/// once and ends the stream.
pub fn frames<S, B, E>(bytes: S, max_event_bytes: usize) -> impl Stream<Item = Result<Frame, E>>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
{
    parse_stream(bytes, max_event_bytes).map(|r| r.map(decode))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn decode_all(raw: &[u8]) -> Vec<Frame> {
        // Split in awkward places (the BOM itself too): chunking must not matter.
        let mut chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(raw[..1].to_vec())];
        chunks.extend(raw[1..].chunks(7).map(|c| Ok(c.to_vec())));
        frames(futures::stream::iter(chunks), 1 << 20)
            .map(|r| r.unwrap())
            .collect()
            .await
    }

    #[tokio::test]
    async fn events_resets_retries_cursors_and_strangers() {
        let (a, b, c) = (EventId::new(5, 1), EventId::new(6, 0), EventId::new(7, 0));
        let raw = format!(
            "\u{feff}retry: 250\n\nid: {a}\n\nid: {a}\nevent: message\ndata: {{\"channel\":\"a\",\"data\":1,\"time\":5}}\n\n\
             event: ssepush.reset\ndata: {{\"oldestId\":\"{b}\"}}\n\n: keep-alive\n\n\
             id: {c}\ndata: not json\n\nid: x\n\nid\n\n"
        );
        let out = decode_all(raw.as_bytes()).await;
        assert_eq!(out[0], Frame::Retry(Duration::from_millis(250)));
        assert_eq!(out[1], Frame::LastEventId(Some(a)));
        match &out[2] {
            Frame::Event(e) => {
                assert_eq!(e.id, a);
                assert_eq!(e.channel, "a");
                assert_eq!(e.kind, "message");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[3], Frame::Reset { oldest: Some(b) });
        assert!(matches!(out[4], Frame::Undecodable(_)), "{:?}", out[4]);
        assert!(matches!(out[5], Frame::Undecodable(_)), "{:?}", out[5]);
        assert_eq!(out[6], Frame::LastEventId(None));
        assert_eq!(out.len(), 7);
    }

    #[tokio::test]
    async fn oversized_events_keep_an_ssepush_id_only() {
        let big = "x".repeat(200);
        let id = EventId::new(9, 9);
        let raw = format!("id: {id}\ndata: {big}\n\nid: other\ndata: {big}\n\n");
        let out: Vec<Frame> = frames(
            futures::stream::iter([Ok::<_, std::io::Error>(raw.into_bytes())]),
            100,
        )
        .map(|r| r.unwrap())
        .collect()
        .await;
        assert_eq!(
            out,
            vec![
                Frame::Oversized { id: Some(id) },
                Frame::Oversized { id: None }
            ]
        );
    }
}

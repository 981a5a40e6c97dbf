//! The Server-Sent Events parser: WHATWG HTML §9.2.6 "Interpreting an event stream", as plain
//! code over bytes, for every reader in the product (the proxy's upstream watcher, the origin
//! client, the device toolkit, the gateway client).
//!
//! What the algorithm says, and this parser does:
//!
//! * the stream is UTF-8 (invalid bytes become U+FFFD) and **one leading BOM is stripped**, even
//!   when it arrives split across chunks;
//! * a line ends at **CR, LF or CRLF**. A line is handled the moment its CR or LF arrives — a CR
//!   at the end of a chunk does not wait for the next chunk — and an LF that follows such a CR in
//!   the next chunk is not counted as a second line end;
//! * `data:` lines accumulate (joined with LF), `event:` sets the type, `id:` sets the last event
//!   ID unless its value contains NUL, `retry:` with only ASCII digits sets the reconnection time,
//!   `:` starts a comment, anything else is ignored, and a blank line dispatches the block;
//! * a block without data fires no message. When it carried an `id:`, the EventSource's last
//!   event ID still moves ("id-only block"): that is surfaced as [`Parsed::LastEventId`], so a
//!   reader's cursor moves without an event. `retry:` is surfaced as [`Parsed::Retry`] whatever
//!   block it comes in;
//! * at the end of the stream an unfinished block is discarded.
//!
//! Beyond the spec, memory is **bounded**: a line or a block's data larger than the parser's
//! limit is never held. The block is skipped whole and reported as [`Parsed::Oversized`], with the
//! block's own id when it could be read, so the caller can resume past it and tell someone.
//!
//! [`parse_stream`] runs the parser over any byte stream (reqwest's `bytes_stream()`, a test's
//! vector of chunks).

use std::time::Duration;

use futures::{Stream, StreamExt};

/// The UTF-8 byte order mark, stripped once from the start of a stream.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The smallest limit [`Parser::new`] accepts (smaller values are raised to it): room for any
/// field name and a short value.
pub const MIN_MAX_EVENT_BYTES: usize = 64;

/// A dispatched message (WHATWG: "dispatch the event" with a non-empty data buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The event type: the block's `event:` value, or `message` when it had none (or an empty one).
    pub event: String,
    /// The data buffer without its final LF: the block's `data:` values joined with LF.
    pub data: String,
    /// The last event ID string at dispatch: the block's own `id:`, or the newest one before it
    /// (empty when the stream has set none).
    pub last_event_id: String,
}

/// What the parser found, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A message event.
    Message(Message),
    /// A `retry:` field (ASCII digits only): the server's reconnection time. Surfaced as soon as
    /// the line is read, whether or not its block carries data. Values beyond `u64` milliseconds
    /// saturate; callers cap it.
    Retry(Duration),
    /// A block that carried an `id:` (without NUL) but no data ended: the last event ID is now
    /// this string (empty: the server cleared it, reconnect without `Last-Event-ID`). No message
    /// fires, but the reader's cursor moves.
    LastEventId(String),
    /// A block whose data, `event:` or `id:` line exceeded the limit was skipped whole; nothing of
    /// it was kept. `id` is the block's own `id:` when it had a readable one (the position just
    /// past the skipped event); `None` when it had no id or its `id:` line was itself too long —
    /// then nobody can resume past it.
    Oversized { id: Option<String> },
}

/// Which over-long line is being discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LongLine {
    /// A comment or an unknown field: ignored, as it would have been anyway.
    Ignored,
    /// `data:` or `event:`: the block cannot be delivered.
    Field,
    /// `id:`: the block cannot be delivered and its position is unknown.
    Id,
}

/// What the current block has seen so far.
#[derive(Debug, Default, Clone, Copy)]
struct Block {
    /// An `id:` field (without NUL) was processed.
    id_seen: bool,
    /// The block went over the limit; its data is no longer kept.
    oversized: bool,
    /// An `id:` line of the block was too long to read.
    id_unreadable: bool,
}

/// The incremental parser. Feed it chunks as they arrive; it keeps at most one line and one
/// block's data, each bounded by the limit.
#[derive(Debug)]
pub struct Parser {
    max: usize,
    /// `Some(n)`: the stream's first `n` bytes matched the BOM so far and are held until it is
    /// decided; `None`: decided.
    bom_matched: Option<usize>,
    /// The previous byte was a CR: an LF right after it ends nothing.
    after_cr: bool,
    line: Vec<u8>,
    /// The current line went over the limit and is being discarded.
    long_line: Option<LongLine>,
    data: String,
    event: String,
    last_event_id: String,
    block: Block,
}

/// Lines kept beyond this capacity are freed after use rather than kept for the next line.
const KEEP_LINE_CAPACITY: usize = 64 * 1024;

impl Parser {
    /// A parser that holds at most `max_event_bytes` of one line and of one block's data (at
    /// least [`MIN_MAX_EVENT_BYTES`]).
    pub fn new(max_event_bytes: usize) -> Parser {
        Parser {
            max: max_event_bytes.max(MIN_MAX_EVENT_BYTES),
            bom_matched: Some(0),
            after_cr: false,
            line: Vec::new(),
            long_line: None,
            data: String::new(),
            event: String::new(),
            last_event_id: String::new(),
            block: Block::default(),
        }
    }

    /// The limit in bytes.
    pub fn max_event_bytes(&self) -> usize {
        self.max
    }

    /// The last event ID string so far (WHATWG's "last event ID buffer").
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Feeds the next bytes of the stream; what they complete is appended to `out`, in order.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut impl Extend<Parsed>) {
        while let Some(matched) = self.bom_matched {
            let Some(&b) = chunk.first() else {
                return;
            };
            if b == BOM[matched] {
                chunk = &chunk[1..];
                self.bom_matched = (matched + 1 < BOM.len()).then_some(matched + 1);
            } else {
                // Not a BOM after all: the bytes held so far are ordinary text.
                self.bom_matched = None;
                self.scan(&BOM[..matched], out);
            }
        }
        self.scan(chunk, out);
    }

    /// Splits bytes into lines.
    fn scan(&mut self, mut bytes: &[u8], out: &mut impl Extend<Parsed>) {
        while !bytes.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if bytes[0] == b'\n' {
                    // The LF of a CRLF whose CR already ended the line.
                    bytes = &bytes[1..];
                    continue;
                }
            }
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.append(bytes);
                    return;
                }
                Some(i) => {
                    self.append(&bytes[..i]);
                    self.after_cr = bytes[i] == b'\r';
                    self.end_line(out);
                    bytes = &bytes[i + 1..];
                }
            }
        }
    }

    /// Adds bytes to the current line, or starts discarding it once it is too long.
    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.long_line.is_some() {
            return;
        }
        if self.line.len() + bytes.len() <= self.max {
            self.line.extend_from_slice(bytes);
            return;
        }
        // Over the limit: what matters is which field it is, known from the line's start.
        let head: Vec<u8> = self.line.iter().chain(bytes).take(6).copied().collect();
        self.long_line = Some(
            if head.starts_with(b"data:") || head.starts_with(b"event:") {
                LongLine::Field
            } else if head.starts_with(b"id:") {
                LongLine::Id
            } else {
                LongLine::Ignored
            },
        );
        self.line = Vec::new();
    }

    fn end_line(&mut self, out: &mut impl Extend<Parsed>) {
        if let Some(long) = self.long_line.take() {
            match long {
                LongLine::Ignored => {}
                LongLine::Field => self.oversize(),
                LongLine::Id => {
                    self.oversize();
                    self.block.id_unreadable = true;
                }
            }
            return;
        }
        let line = std::mem::take(&mut self.line);
        self.process(&line, out);
        self.line = line;
        self.line.clear();
        if self.line.capacity() > KEEP_LINE_CAPACITY {
            self.line = Vec::new();
        }
    }

    /// The block went over the limit: drop what it holds.
    fn oversize(&mut self) {
        self.block.oversized = true;
        self.data = String::new();
    }

    /// One complete line (WHATWG: "process the field").
    fn process(&mut self, line: &[u8], out: &mut impl Extend<Parsed>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.block.oversized {
                    return;
                }
                let value = String::from_utf8_lossy(value);
                if self.data.len() + value.len() + 1 > self.max {
                    self.oversize();
                    return;
                }
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            // An id with NUL is ignored (WHATWG), so no cursor can be set to one.
            b"id" if !value.contains(&0) => {
                self.last_event_id = String::from_utf8_lossy(value).into_owned();
                self.block.id_seen = true;
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let ms = value.iter().fold(0u64, |ms, d| {
                    ms.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                out.extend([Parsed::Retry(Duration::from_millis(ms))]);
            }
            _ => {}
        }
    }

    /// A blank line (WHATWG: "dispatch the event").
    fn dispatch(&mut self, out: &mut impl Extend<Parsed>) {
        let block = std::mem::take(&mut self.block);
        let event = std::mem::take(&mut self.event);
        if block.oversized {
            self.data.clear();
            let id = (block.id_seen && !block.id_unreadable).then(|| self.last_event_id.clone());
            out.extend([Parsed::Oversized { id }]);
            return;
        }
        if self.data.is_empty() {
            if block.id_seen {
                out.extend([Parsed::LastEventId(self.last_event_id.clone())]);
            }
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        out.extend([Parsed::Message(Message {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            last_event_id: self.last_event_id.clone(),
        })]);
    }
}

/// Runs a [`Parser`] over a byte stream: yields what it parses, in order, then ends with the
/// stream. A transport error is yielded once and ends it (an unfinished block is discarded, as
/// at any end of stream).
pub fn parse_stream<S, B, E>(
    bytes: S,
    max_event_bytes: usize,
) -> impl Stream<Item = Result<Parsed, E>>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
{
    let state = (
        Box::pin(bytes),
        Parser::new(max_event_bytes),
        std::collections::VecDeque::<Parsed>::new(),
        false,
    );
    futures::stream::unfold(
        state,
        |(mut bytes, mut parser, mut ready, mut done)| async move {
            loop {
                if let Some(p) = ready.pop_front() {
                    return Some((Ok(p), (bytes, parser, ready, done)));
                }
                if done {
                    return None;
                }
                match bytes.next().await {
                    None => done = true,
                    Some(Err(e)) => {
                        done = true;
                        return Some((Err(e), (bytes, parser, ready, done)));
                    }
                    Some(Ok(chunk)) => parser.feed(chunk.as_ref(), &mut ready),
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(event: &str, data: &str, id: &str) -> Parsed {
        Parsed::Message(Message {
            event: event.into(),
            data: data.into(),
            last_event_id: id.into(),
        })
    }

    fn parse_chunks(chunks: &[&[u8]], max: usize) -> Vec<Parsed> {
        let mut p = Parser::new(max);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out);
        }
        out
    }

    fn parse(raw: &[u8]) -> Vec<Parsed> {
        parse_chunks(&[raw], 1 << 20)
    }

    /// Every way of cutting `raw` in two and in three, and one byte at a time, parses exactly
    /// like the whole.
    fn assert_split_invariant(raw: &[u8], expected: &[Parsed]) {
        assert_eq!(
            parse(raw),
            expected,
            "whole: {:?}",
            String::from_utf8_lossy(raw)
        );
        for i in 0..=raw.len() {
            let got = parse_chunks(&[&raw[..i], &raw[i..]], 1 << 20);
            assert_eq!(
                got,
                expected,
                "split at {i} of {:?}",
                String::from_utf8_lossy(raw)
            );
            for j in i..=raw.len() {
                let got = parse_chunks(&[&raw[..i], &raw[i..j], &raw[j..]], 1 << 20);
                assert_eq!(got, expected, "split at {i} and {j}");
            }
        }
        let bytes: Vec<&[u8]> = raw.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes, 1 << 20), expected, "byte at a time");
        // Empty chunks between bytes change nothing either (a CR before one still owns its LF).
        let mut with_empties: Vec<&[u8]> = Vec::new();
        for b in raw.chunks(1) {
            with_empties.push(b);
            with_empties.push(b"");
        }
        assert_eq!(
            parse_chunks(&with_empties, 1 << 20),
            expected,
            "with empty chunks"
        );
    }

    /// The same stream with every line ending the spec allows, with and without a BOM.
    fn sample(eol: &str, bom: bool) -> Vec<u8> {
        let body = [
            "retry: 2500",
            "",
            ": a comment",
            "id: 1",
            "event: greeting",
            "data: hello",
            "data:  two spaces",
            "",
            "id: 2",
            "",
            "data",
            "id",
            "",
            "id: 3",
            "retry: 10",
            "data: last",
            "",
        ]
        .join(eol);
        let mut raw = Vec::new();
        if bom {
            raw.extend_from_slice(BOM);
        }
        raw.extend_from_slice(body.as_bytes());
        raw.extend_from_slice(eol.as_bytes());
        raw
    }

    fn sample_parsed() -> Vec<Parsed> {
        vec![
            Parsed::Retry(Duration::from_millis(2500)),
            msg("greeting", "hello\n two spaces", "1"),
            Parsed::LastEventId("2".into()),
            // `data` alone is an empty data line; `id` alone clears the last event id.
            msg("message", "", ""),
            Parsed::Retry(Duration::from_millis(10)),
            msg("message", "last", "3"),
        ]
    }

    #[test]
    fn every_chunk_split_of_every_line_ending_with_and_without_a_bom_parses_the_same() {
        for eol in ["\n", "\r", "\r\n"] {
            for bom in [false, true] {
                assert_split_invariant(&sample(eol, bom), &sample_parsed());
            }
        }
        // Mixed endings in one stream.
        let mixed = b"id: 1\rdata: a\r\ndata: b\n\r\nid: 2\r\r";
        assert_split_invariant(
            mixed,
            &[msg("message", "a\nb", "1"), Parsed::LastEventId("2".into())],
        );
    }

    #[test]
    fn a_cr_at_a_chunk_end_dispatches_at_once_and_owns_a_following_lf() {
        let mut p = Parser::new(1024);
        let mut out = Vec::new();
        p.feed(b"id: 7\rdata: x\r\r", &mut out);
        // The event is complete at the second CR: nothing more needs to arrive.
        assert_eq!(out, vec![msg("message", "x", "7")]);
        out.clear();
        // The LF completes the CRLF of the last CR; it is not another (blank) line, so the two
        // data lines that follow stay one event.
        p.feed(b"\ndata: a\r", &mut out);
        p.feed(b"\ndata: b\r", &mut out);
        assert!(out.is_empty(), "{out:?}");
        p.feed(b"\n\r", &mut out);
        assert_eq!(out, vec![msg("message", "a\nb", "7")]);
    }

    #[test]
    fn only_one_leading_bom_is_stripped() {
        let mut two = BOM.to_vec();
        two.extend_from_slice(BOM);
        two.extend_from_slice(b"data: x\n\n");
        // The second BOM is part of the first line's field name: an unknown field, ignored.
        assert_eq!(parse(&two), vec![]);
        // A BOM-like prefix that is not a BOM is kept as text.
        assert_eq!(
            parse(b"\xEF\xBBdata: x\n\ndata: y\n\n"),
            vec![msg("message", "y", "")]
        );
        // A BOM later in the stream is data.
        assert_eq!(
            parse("data: \u{feff}x\n\n".as_bytes()),
            vec![msg("message", "\u{feff}x", "")]
        );
        // A stream that is only a partial BOM, then ends, yields nothing.
        assert_eq!(parse(b"\xEF\xBB"), vec![]);
    }

    #[test]
    fn id_only_blocks_move_the_cursor_without_a_message() {
        assert_eq!(
            parse(b"id: 5-0\n\nevent: x\nid: 6-0\n\n"),
            vec![
                Parsed::LastEventId("5-0".into()),
                Parsed::LastEventId("6-0".into())
            ]
        );
        // The id is kept for the messages after it.
        assert_eq!(
            parse(b"id: 5-0\n\ndata: a\n\n"),
            vec![
                Parsed::LastEventId("5-0".into()),
                msg("message", "a", "5-0")
            ]
        );
        // A blank line alone, a comment block or a retry block does not move it.
        assert_eq!(
            parse(b"\n\n: hi\n\nretry: 5\n\n"),
            vec![Parsed::Retry(Duration::from_millis(5))]
        );
    }

    #[test]
    fn ids_with_nul_are_ignored() {
        assert_eq!(
            parse(b"id: 1\n\nid: a\0b\ndata: x\n\nid: c\0\n\n"),
            vec![Parsed::LastEventId("1".into()), msg("message", "x", "1")]
        );
    }

    #[test]
    fn retry_takes_only_ascii_digits() {
        assert_eq!(
            parse(b"retry: 10\nretry: 1.5\nretry: -1\nretry: 12a\nretry:\nretry: 99999999999999999999999\n\n"),
            vec![
                Parsed::Retry(Duration::from_millis(10)),
                Parsed::Retry(Duration::from_millis(u64::MAX))
            ]
        );
    }

    #[test]
    fn fields_follow_the_spec() {
        assert_eq!(
            parse(b"data:no space\ndata:  two\nevent:\nunknown: x\ndata\n\n"),
            vec![msg("message", "no space\n two\n", "")]
        );
        // A block without data fires nothing, whatever else it had.
        assert_eq!(parse(b"event: e\n\n"), vec![]);
        // An unfinished block at the end of the stream is discarded.
        assert_eq!(parse(b"data: x\n"), vec![]);
        // Invalid UTF-8 becomes U+FFFD.
        assert_eq!(
            parse(b"data: \xFF\n\n"),
            vec![msg("message", "\u{fffd}", "")]
        );
    }

    #[test]
    fn oversized_blocks_are_skipped_and_reported_with_their_id() {
        let max = 100;
        let big = "x".repeat(150);
        // A data line longer than the limit, its id before it.
        let raw = format!("id: 1\ndata: {big}\n\ndata: small\n\n");
        let expected = vec![
            Parsed::Oversized {
                id: Some("1".into()),
            },
            msg("message", "small", "1"),
        ];
        for split in 0..raw.len() {
            let got = parse_chunks(&[&raw.as_bytes()[..split], &raw.as_bytes()[split..]], max);
            assert_eq!(got, expected, "split at {split}");
        }
        // Many short data lines that add up to more than the limit, the id after them.
        let raw = format!("{}id: 2\n\n", "data: 0123456789\n".repeat(20));
        assert_eq!(
            parse_chunks(&[raw.as_bytes()], max),
            vec![Parsed::Oversized {
                id: Some("2".into())
            }]
        );
        // No id of its own: nobody can resume past it.
        let raw = format!("id: 1\n\ndata: {big}\n\n");
        assert_eq!(
            parse_chunks(&[raw.as_bytes()], max),
            vec![
                Parsed::LastEventId("1".into()),
                Parsed::Oversized { id: None }
            ]
        );
        // An id line too long to read.
        let raw = format!("id: {big}\ndata: x\n\n");
        assert_eq!(
            parse_chunks(&[raw.as_bytes()], max),
            vec![Parsed::Oversized { id: None }]
        );
        // A too-long event type makes the block undeliverable too.
        let raw = format!("event: {big}\ndata: x\nid: 3\n\n");
        assert_eq!(
            parse_chunks(&[raw.as_bytes()], max),
            vec![Parsed::Oversized {
                id: Some("3".into())
            }]
        );
        // Long comments and unknown fields are ignored, as they would be anyway.
        let raw = format!(": {big}\nx-{big}\n{big}\ndata: ok\n\n");
        assert_eq!(
            parse_chunks(&[raw.as_bytes()], max),
            vec![msg("message", "ok", "")]
        );
    }

    #[test]
    fn memory_stays_bounded_on_an_endless_line() {
        let mut p = Parser::new(1024);
        let mut out = Vec::new();
        p.feed(b"data: ", &mut out);
        for _ in 0..10_000 {
            p.feed(&[b'x'; 1000], &mut out);
            assert!(p.line.capacity() <= 2048 && p.data.capacity() <= 2048);
        }
        p.feed(b"\nid: 9\n\n", &mut out);
        assert_eq!(
            out,
            vec![Parsed::Oversized {
                id: Some("9".into())
            }]
        );
    }

    #[tokio::test]
    async fn parse_stream_yields_in_order_and_ends_on_a_transport_error() {
        let chunks: Vec<Result<&[u8], String>> = vec![
            Ok(b"\xEF"),
            Ok(b"\xBB\xBFretry: 1\r"),
            Ok(b"\ndata: a\r"),
            Err("reset by peer".into()),
            Ok(b"\ndata: never\n\n"),
        ];
        let got: Vec<Result<Parsed, String>> = parse_stream(futures::stream::iter(chunks), 1024)
            .collect()
            .await;
        assert_eq!(
            got,
            vec![
                Ok(Parsed::Retry(Duration::from_millis(1))),
                Err("reset by peer".into())
            ]
        );
    }
}

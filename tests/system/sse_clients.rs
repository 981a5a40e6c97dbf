//! The product's SSE readers against small misbehaving servers (raw bytes over TCP): the real
//! `ssepush subscribe` binary, the origin client and the device client read with the one WHATWG
//! parser — a BOM, lone-CR line ends split at chunk ends, `retry:`-only blocks, id-only blocks
//! followed by a cut, a 202 that claims to be a stream, a 503 with `Retry-After`, an event over
//! the client's limit.

use std::time::{Duration, Instant};

use crate::support::raw::{RawServer, empty_answer, sse_head};
use futures::StreamExt;
use serde_json::Value;
use ssepush::client::device::DeviceClient;
use ssepush::client::origin::{ClientError, Frame, Item, OriginClient, Subscription};
use ssepush::client::proxy::ProxyClient;
use ssepush_origin::EventId;

/// How long a test waits for a reader's reaction before it fails.
const WITHIN: Duration = Duration::from_secs(10);

/// The `data:` of an ssepush event on `channel` with payload `n`.
fn envelope(channel: &str, n: i64) -> String {
    serde_json::json!({"channel": channel, "data": n, "time": 1}).to_string()
}

/// One event block with line ends `eol`.
fn event(id: EventId, channel: &str, n: i64, eol: &str) -> String {
    format!("id: {id}{eol}data: {}{eol}{eol}", envelope(channel, n))
}

fn sub(channel: &str) -> Subscription {
    Subscription {
        channels: vec![channel.into()],
        ..Subscription::default()
    }
}

/// Reads `stream` in a task of its own (a subscription connects only while it is read), and
/// hands its items over.
fn drive<S>(stream: S) -> impl futures::Stream<Item = S::Item> + Unpin
where
    S: futures::Stream + Send + 'static,
    S::Item: Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(item) = stream.next().await {
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn next<S: futures::Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(WITHIN, s.next())
        .await
        .expect("the reader gave nothing in time")
        .expect("the stream ended")
}

#[tokio::test]
async fn ssepush_subscribe_reads_a_stream_that_starts_with_a_bom() {
    let mut server = RawServer::start().await;
    let run = tokio::spawn(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ssepush"))
            .args(["subscribe", "--origin", &server.url, "-c", "bom.a"])
            .args(["--count", "1"])
            .kill_on_drop(true)
            .output(),
    );
    let mut conn = server.next().await;
    conn.send_sse_head().await;
    let id = EventId::new(1_700_000_000_000, 3);
    // The BOM itself split across two writes, and a first line that would be lost with it.
    conn.send(b"\xEF\xBB").await;
    conn.send(b"\xBF").await;
    conn.send(event(id, "bom.a", 7, "\n")).await;
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("ssepush subscribe did not finish")
        .unwrap()
        .expect("cannot run ssepush");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_str(stdout.trim()).expect("one JSON event");
    assert_eq!(printed["id"], id.to_string());
    assert_eq!(printed["data"], 7);
}

#[tokio::test]
async fn lone_cr_line_ends_dispatch_at_the_chunk_end_and_a_split_crlf_counts_once() {
    let mut server = RawServer::start().await;
    let client = OriginClient::new(&server.url);
    let subscription = sub("cr.a");
    let (conn, mut raw) = tokio::join!(client.connect(&subscription, None), async {
        let mut c = server.next().await;
        c.send_sse_head().await;
        c
    });
    let mut conn = Box::pin(conn.unwrap());
    let (a, b) = (EventId::new(10, 0), EventId::new(11, 0));
    // A complete event ended by CRs, and nothing after it: it must come out now.
    raw.send(event(a, "cr.a", 1, "\r")).await;
    match next(&mut conn).await.unwrap() {
        Frame::Item(Item::Event(e)) => assert_eq!((e.id, e.data), (a, 1.into())),
        other => panic!("{other:?}"),
    }
    // CRLFs cut between CR and LF: each LF belongs to the CR before it. Counted twice, the
    // envelope split over two `data:` lines would be cut in half by a blank line.
    raw.send(format!("\nid: {b}\rdata: {{\"channel\":\"cr.a\",\r"))
        .await;
    raw.send("\ndata: \"data\":2,\"time\":1}\r").await;
    raw.send("\n\r").await;
    raw.send("\n").await;
    match next(&mut conn).await.unwrap() {
        Frame::Item(Item::Event(e)) => assert_eq!((e.id, e.data), (b, 2.into())),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn retry_only_blocks_reach_the_client_and_set_its_reconnect_delay() {
    let mut server = RawServer::start().await;
    let client = OriginClient::new(&server.url);
    let subscription = sub("r.a");
    let (conn, mut raw) = tokio::join!(client.connect(&subscription, None), async {
        let mut c = server.next().await;
        c.send_sse_head().await;
        c
    });
    let mut conn = Box::pin(conn.unwrap());
    raw.send("retry: 1234\n\n").await;
    assert_eq!(
        next(&mut conn).await.unwrap(),
        Frame::Retry(Duration::from_millis(1234))
    );
    drop(conn);
    raw.cut().await;

    // The resuming subscription waits what the server said (2.5 s, not its own 1 s default)
    // before reconnecting.
    let stream = client.subscribe(sub("r.a"));
    let mut stream = Box::pin(stream);
    let reader = tokio::spawn(async move { next(&mut stream).await.map(|_| ()) });
    let mut first = server.next().await;
    first.send_sse_head().await;
    first.send("retry: 2500\n\n").await;
    let cut_at = Instant::now();
    first.cut().await;
    let mut second = server.next().await;
    let waited = second.request.at - cut_at;
    assert!(
        waited >= Duration::from_millis(2500),
        "reconnected {waited:?} after `retry: 2500`"
    );
    second.send_sse_head().await;
    second.send(event(EventId::new(1, 0), "r.a", 1, "\n")).await;
    reader.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_id_only_block_then_a_cut_resumes_from_that_id() {
    let mut server = RawServer::start().await;
    let client = OriginClient::new(&server.url);
    let (head, next_id) = (
        EventId::new(1_700_000_000_000, 4),
        EventId::new(1_700_000_000_001, 0),
    );

    // The origin client's subscription.
    let mut stream = Box::pin(client.subscribe(sub("quiet.a")));
    let reader = tokio::spawn(async move { next(&mut stream).await });
    let mut first = server.next().await;
    assert_eq!(first.request.header("last-event-id"), None);
    first.send_sse_head().await;
    // The stream's cursor from its first byte: the head, as an id-only block. Then the
    // connection is cut before any event.
    first.send(format!("retry: 10\n\nid: {head}\n\n")).await;
    first.cut().await;
    let mut second = server.next().await;
    assert_eq!(
        second.request.header("last-event-id"),
        Some(head.to_string().as_str()),
        "the reconnect must resume from the id-only block's id"
    );
    second.send_sse_head().await;
    second.send(event(next_id, "quiet.a", 1, "\n")).await;
    match reader.await.unwrap().unwrap() {
        Item::Event(e) => assert_eq!(e.id, next_id),
        other => panic!("{other:?}"),
    }
    second.cut().await;

    // The device client: the same block moves its position, and its next connection (or
    // handoff) starts there.
    let mut device = DeviceClient::new(
        OriginClient::new(&server.url),
        ProxyClient::new("http://127.0.0.1:1"),
        sub("quiet.a"),
    );
    let (conn, raw) = tokio::join!(device.connect(), async {
        let mut c = server.next().await;
        assert_eq!(c.request.header("last-event-id"), None);
        c.send_sse_head().await;
        c.send(format!("id: {head}\n\n")).await;
        c
    });
    let mut conn = Box::pin(conn.unwrap());
    match next(&mut conn).await.unwrap() {
        Frame::LastEventId(id) => device.set_last_event_id(id),
        other => panic!("{other:?}"),
    }
    raw.cut().await;
    assert!(
        tokio::time::timeout(WITHIN, conn.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(device.last_event_id(), Some(head));
    let (_conn, _again) = tokio::join!(device.connect(), async {
        let mut again = server.next().await;
        assert_eq!(
            again.request.header("last-event-id"),
            Some(head.to_string().as_str())
        );
        again.send_sse_head().await;
        again
    });
}

#[tokio::test]
async fn a_202_with_text_event_stream_is_not_a_stream() {
    let mut server = RawServer::start().await;
    let client = OriginClient::new(&server.url);
    let mut stream = Box::pin(client.subscribe(sub("s.a")));
    let reader = tokio::spawn(async move {
        let first = next(&mut stream).await;
        // The subscription ends: the SSE spec fails the connection, no reconnect.
        let after = tokio::time::timeout(WITHIN, stream.next()).await.unwrap();
        (first, after.is_none())
    });
    let mut conn = server.next().await;
    conn.send(sse_head(202, &[])).await;
    conn.send(event(EventId::new(1, 0), "s.a", 1, "\n")).await;
    conn.cut().await;
    let (first, ended) = reader.await.unwrap();
    match first {
        Err(ClientError::Status { status: 202, .. }) => {}
        other => panic!("a 202 was read as {other:?}"),
    }
    assert!(ended, "the subscription went on after a 202");
}

#[tokio::test]
async fn a_503_with_retry_after_is_waited_out() {
    let mut server = RawServer::start().await;
    let client = OriginClient::new(&server.url);
    let mut stream = Box::pin(client.subscribe(sub("busy.a")));
    let reader = tokio::spawn(async move { next(&mut stream).await });
    let mut first = server.next().await;
    let answered = Instant::now();
    first.send(empty_answer(503, &[("retry-after", "3")])).await;
    first.cut().await;
    let mut second = server.next().await;
    let waited = second.request.at - answered;
    assert!(
        waited >= Duration::from_secs(3),
        "retried {waited:?} after a 503 with Retry-After: 3"
    );
    second.send_sse_head().await;
    second
        .send(event(EventId::new(1, 0), "busy.a", 1, "\n"))
        .await;
    assert!(matches!(reader.await.unwrap(), Ok(Item::Event(_))));
}

#[tokio::test]
async fn an_event_over_the_limit_is_reported_skipped_and_never_read_again() {
    let mut server = RawServer::start().await;
    let client = OriginClient::new(&server.url).with_max_event_bytes(4096);
    let mut items = drive(client.subscribe(sub("big.a")));
    let (big, small, later) = (
        EventId::new(20, 0),
        EventId::new(21, 0),
        EventId::new(22, 0),
    );
    let mut conn = server.next().await;
    conn.send_sse_head().await;
    conn.send(format!(
        "retry: 10\n\nid: {big}\ndata: {{\"channel\":\"big.a\",\"data\":\"{}\",\"time\":1}}\n\n",
        "x".repeat(10_000)
    ))
    .await;
    conn.send(event(small, "big.a", 2, "\n")).await;
    match next(&mut items).await {
        Err(ClientError::EventTooLarge { id, limit }) => {
            assert_eq!((id, limit), (Some(big), 4096));
        }
        other => panic!("{other:?}"),
    }
    match next(&mut items).await {
        Ok(Item::Event(e)) => assert_eq!(e.id, small),
        other => panic!("{other:?}"),
    }
    conn.cut().await;
    let mut again = server.next().await;
    assert_eq!(
        again.request.header("last-event-id"),
        Some(small.to_string().as_str())
    );
    again.send_sse_head().await;
    again.send(event(later, "big.a", 3, "\n")).await;
    match next(&mut items).await {
        Ok(Item::Event(e)) => assert_eq!(e.id, later),
        other => panic!("{other:?}"),
    }
}

//! The proxy's watchers spare upstream connections, exactly: a handoff that joins behind its
//! stream's watcher catches up from the watcher's replay ring when the ring holds every event
//! after its cursor (and over a private connection otherwise), and a watcher whose last handoff
//! left lingers for `upstream.idle_linger_secs` so the next handoff joins it. The origin is a
//! raw TCP server, so every upstream connection the proxy opens is counted and the SSE bytes are
//! exactly the test's.

use std::time::Duration;

use crate::support::eventually;
use crate::support::proxy::{Handoff, Recorder, TestProxy, handoff_body, json_ids, proxy_settings};
use crate::support::raw::RawServer;
use serde_json::Value;
use ssepush_origin::EventId;
use ssepush_proxy::settings::Settings;

const WITHIN: Duration = Duration::from_secs(15);

fn id(seq: u64) -> EventId {
    EventId::new(1_700_000_000_000, seq)
}

fn event(seq: u64) -> String {
    format!(
        "id: {}\ndata: {}\n\n",
        id(seq),
        serde_json::json!({"channel": "w.a", "data": seq, "time": 1})
    )
}

fn ids(seqs: &[u64]) -> Vec<String> {
    seqs.iter().map(|s| id(*s).to_string()).collect()
}

async fn start(tune: impl FnOnce(&mut Settings)) -> (RawServer, TestProxy) {
    let server = RawServer::start().await;
    let mut settings = proxy_settings(&[&server.url]);
    tune(&mut settings);
    let proxy = TestProxy::start(settings, Recorder::new()).await;
    (server, proxy)
}

async fn hand_off(proxy: &TestProxy, server: &RawServer, cursor: u64, device: u32) -> Handoff {
    let url = format!("{}/v1/sse?channel=w.a", server.url);
    proxy
        .create(&handoff_body(&url, Some(&id(cursor).to_string()), device))
        .await
}

async fn newest_is(proxy: &TestProxy, h: &Handoff, seq: u64) {
    let want = Value::from(id(seq).to_string());
    eventually(WITHIN, &format!("newestId {seq}"), || async {
        proxy.status(h).await["newestId"] == want
    })
    .await;
}

/// Watchers open on the proxy (`/readyz`; lingering ones included).
async fn watchers(proxy: &TestProxy) -> u64 {
    crate::support::get(format!("{}/readyz", proxy.url))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["watchers"]
        .as_u64()
        .unwrap()
}

/// No new upstream connection for a while.
async fn no_new_connection(server: &mut RawServer) {
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        server.try_next().is_none(),
        "the proxy opened another upstream connection"
    );
}

#[tokio::test]
async fn a_handoff_behind_the_watcher_within_its_ring_catches_up_without_a_connection() {
    let (mut server, proxy) = start(|_| {}).await;
    let a = hand_off(&proxy, &server, 0, 1).await;
    let mut conn = server.next().await;
    assert_eq!(
        conn.request.header("last-event-id"),
        Some(id(0).to_string().as_str())
    );
    conn.send_sse_head().await;
    for seq in 1..=3 {
        conn.send(event(seq)).await;
    }
    newest_is(&proxy, &a, 3).await;

    // A second phone whose cursor is behind the watcher (at 1) joins from the ring.
    let b = hand_off(&proxy, &server, 1, 2).await;
    newest_is(&proxy, &b, 3).await;
    no_new_connection(&mut server).await;
    // Then it is live; exactly the events after its cursor, each once.
    conn.send(event(4)).await;
    newest_is(&proxy, &b, 4).await;
    assert_eq!(json_ids(&proxy.events(&b, None).await), ids(&[2, 3, 4]));
    assert_eq!(json_ids(&proxy.events(&a, None).await), ids(&[1, 2, 3, 4]));
    assert!(server.try_next().is_none(), "a new upstream connection");
    proxy.stop().await;
}

#[tokio::test]
async fn a_cursor_older_than_the_ring_falls_back_to_a_private_reader_and_stays_exact() {
    let (mut server, proxy) = start(|s| s.upstream.replay_events = 2).await;
    let a = hand_off(&proxy, &server, 0, 1).await;
    let mut conn = server.next().await;
    conn.send_sse_head().await;
    for seq in 1..=4 {
        conn.send(event(seq)).await;
    }
    newest_is(&proxy, &a, 4).await;
    // The ring holds 3 and 4: it vouches for cursors at 2 or later only.
    let b = hand_off(&proxy, &server, 2, 2).await;
    newest_is(&proxy, &b, 4).await;
    no_new_connection(&mut server).await;

    let c = hand_off(&proxy, &server, 1, 3).await;
    let mut gap = server.next().await;
    assert_eq!(
        gap.request.header("last-event-id"),
        Some(id(1).to_string().as_str())
    );
    // A live event arrives while the gap is read: held for `c`, then delivered in order.
    conn.send(event(5)).await;
    newest_is(&proxy, &b, 5).await;
    gap.send_sse_head().await;
    for seq in 2..=4 {
        gap.send(event(seq)).await;
    }
    newest_is(&proxy, &c, 5).await;
    assert_eq!(json_ids(&proxy.events(&c, None).await), ids(&[2, 3, 4, 5]));
    assert_eq!(json_ids(&proxy.events(&b, None).await), ids(&[3, 4, 5]));
    proxy.stop().await;
}

#[tokio::test]
async fn after_a_reset_the_ring_no_longer_vouches_for_what_came_before_it() {
    let (mut server, proxy) = start(|_| {}).await;
    let a = hand_off(&proxy, &server, 0, 1).await;
    let mut conn = server.next().await;
    conn.send_sse_head().await;
    conn.send(event(1)).await;
    newest_is(&proxy, &a, 1).await;
    // The connection breaks; the origin lost history and says so on the next one.
    conn.cut().await;
    let mut conn = server.next().await;
    assert_eq!(
        conn.request.header("last-event-id"),
        Some(id(1).to_string().as_str())
    );
    conn.send_sse_head().await;
    conn.send(format!(
        "event: ssepush.reset\ndata: {{\"oldestId\":\"{}\"}}\n\n",
        id(7)
    ))
    .await;
    conn.send(event(7)).await;
    conn.send(event(8)).await;
    newest_is(&proxy, &a, 8).await;

    // At or past the first event after the reset: from the ring.
    let b = hand_off(&proxy, &server, 7, 2).await;
    newest_is(&proxy, &b, 8).await;
    no_new_connection(&mut server).await;
    assert_eq!(json_ids(&proxy.events(&b, None).await), ids(&[8]));
    // Before the reset (though after the watcher's start): its own reader, which hears the
    // reset itself.
    let c = hand_off(&proxy, &server, 1, 3).await;
    let mut gap = server.next().await;
    gap.send_sse_head().await;
    gap.send(format!(
        "event: ssepush.reset\ndata: {{\"oldestId\":\"{}\"}}\n\n",
        id(7)
    ))
    .await;
    gap.send(event(7)).await;
    gap.send(event(8)).await;
    newest_is(&proxy, &c, 8).await;
    let got = proxy.events(&c, None).await;
    assert!(got["gap"].is_object(), "the reset is reported: {got}");
    assert_eq!(json_ids(&got), ids(&[7, 8]));
    proxy.stop().await;
}

#[tokio::test]
async fn a_handoff_within_the_linger_joins_the_watcher_its_predecessor_left() {
    let (mut server, proxy) = start(|s| s.upstream.idle_linger_secs = 1).await;
    let a = hand_off(&proxy, &server, 0, 1).await;
    let mut conn = server.next().await;
    conn.send_sse_head().await;
    conn.send(event(1)).await;
    newest_is(&proxy, &a, 1).await;
    proxy.handback(&a).await;
    // Events go on while it lingers: a phone that slept at 1 catches up from its ring.
    conn.send(event(2)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(watchers(&proxy).await, 1);
    let b = hand_off(&proxy, &server, 1, 2).await;
    conn.send(event(3)).await;
    newest_is(&proxy, &b, 3).await;
    assert_eq!(json_ids(&proxy.events(&b, None).await), ids(&[2, 3]));
    assert!(server.try_next().is_none(), "a new upstream connection");

    // Once the last handoff left and the linger is over, the connection closes; the next
    // handoff opens a new one.
    proxy.handback(&b).await;
    assert!(!conn.closed_within(Duration::from_millis(500)).await);
    assert!(
        conn.closed_within(WITHIN).await,
        "the lingering connection stayed open"
    );
    assert_eq!(watchers(&proxy).await, 0);
    let _c = hand_off(&proxy, &server, 3, 3).await;
    let again = server.next().await;
    assert_eq!(
        again.request.header("last-event-id"),
        Some(id(3).to_string().as_str())
    );
    proxy.stop().await;
}

#[tokio::test]
async fn with_a_linger_of_zero_the_connection_closes_with_its_last_handoff() {
    let (mut server, proxy) = start(|s| s.upstream.idle_linger_secs = 0).await;
    let a = hand_off(&proxy, &server, 0, 1).await;
    let mut conn = server.next().await;
    conn.send_sse_head().await;
    conn.send(event(1)).await;
    newest_is(&proxy, &a, 1).await;
    proxy.handback(&a).await;
    assert!(
        conn.closed_within(Duration::from_secs(5)).await,
        "the connection stayed open"
    );
    assert_eq!(watchers(&proxy).await, 0);
    let _b = hand_off(&proxy, &server, 1, 2).await;
    server.next().await;
    proxy.stop().await;
}

#[tokio::test]
async fn no_more_than_max_idle_watchers_linger() {
    let (mut server, proxy) = start(|s| s.upstream.max_idle_watchers = 1).await;
    let mut handoffs = Vec::new();
    for (device, channel) in [(1, "w.a"), (2, "w.b")] {
        let url = format!("{}/v1/sse?channel={channel}", server.url);
        let h = proxy
            .create(&handoff_body(&url, Some(&id(0).to_string()), device))
            .await;
        let mut conn = server.next().await;
        conn.send_sse_head().await;
        handoffs.push((h, conn));
    }
    assert_eq!(watchers(&proxy).await, 2);
    for (h, _) in &handoffs {
        proxy.handback(h).await;
    }
    // The first lingers; the second closed with its handoff.
    let (_, mut second) = handoffs.pop().unwrap();
    let (_, mut first) = handoffs.pop().unwrap();
    assert!(
        second.closed_within(Duration::from_secs(5)).await,
        "a second watcher lingered"
    );
    assert!(!first.closed_within(Duration::from_millis(300)).await);
    assert_eq!(watchers(&proxy).await, 1);
    proxy.stop().await;
    assert!(
        first.closed_within(Duration::from_secs(5)).await,
        "shutdown left a lingering connection open"
    );
}

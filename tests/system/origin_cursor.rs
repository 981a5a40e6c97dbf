//! A cursor from the first byte, and resets that are never silent, against real origins.
//!
//! The client here is a raw SSE reader that interprets the bytes as WHATWG HTML's event-stream
//! algorithm (and so `EventSource`) does: an `id:` line sets the last-event-ID buffer, and a
//! blank line sets the stream's last event ID from it, even when the block had no `data:` and
//! fires no event. It reconnects with that id as `Last-Event-ID`, like a browser.
//!
//! * a stream cut before any event resumes from the moment it subscribed (memory, Redis, and
//!   across a rolling restart of two origins on one Redis);
//! * a cursor from a lost history (a restarted memory origin, a Redis whose data was deleted or
//!   that restarted without persistence) gets `ssepush.reset` and then the new history, on SSE,
//!   WebSocket and long-poll; so does a cursor newer than the log's head;
//! * the push proxy reports the origin's reset as a gap.

use std::pin::Pin;
use std::time::Duration;

use crate::support::{TestOrigin, memory_settings, namespace, redis_settings, redis_url};
use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use serde_json::{Value, json};
use ssepush_origin::EventId;
use ssepush_origin::settings::Settings;

/// Long enough for anything on a loaded machine; a bound on waits, never a measured speed.
const WITHIN: Duration = Duration::from_secs(15);

/// An event the reader dispatched: its type, data and the last event ID after it.
#[derive(Debug, Clone, PartialEq)]
struct Dispatched {
    kind: String,
    data: String,
    last_event_id: String,
}

/// One SSE connection read the WHATWG way.
struct Sse {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: Vec<u8>,
    data: String,
    kind: String,
    /// The last-event-ID buffer: set by `id:` lines, kept across events.
    id_buffer: String,
    /// The stream's last event ID: set from the buffer at every dispatch.
    last_event_id: String,
}

impl Sse {
    async fn connect(url: &str, last_event_id: &str) -> Sse {
        let mut req = crate::support::http().get(url);
        if !last_event_id.is_empty() {
            req = req.header("last-event-id", last_event_id);
        }
        let resp = req.send().await.expect("sse connect");
        assert_eq!(resp.status(), 200, "{url}");
        Sse {
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            data: String::new(),
            kind: String::new(),
            id_buffer: last_event_id.to_owned(),
            last_event_id: last_event_id.to_owned(),
        }
    }

    /// Processes one line; `Some` when it dispatched an event.
    fn line(&mut self, line: &str) -> Option<Dispatched> {
        if line.is_empty() {
            // Dispatch: the last event ID is set even when no event fires.
            self.last_event_id = self.id_buffer.clone();
            let kind = std::mem::take(&mut self.kind);
            if self.data.is_empty() {
                return None;
            }
            let mut data = std::mem::take(&mut self.data);
            data.pop();
            return Some(Dispatched {
                kind: if kind.is_empty() {
                    "message".into()
                } else {
                    kind
                },
                data,
                last_event_id: self.last_event_id.clone(),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.kind = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id_buffer = value.to_owned(),
            _ => {}
        }
        None
    }

    /// Reads until the next dispatched event; `None` when the stream ends.
    async fn next_event(&mut self) -> Option<Dispatched> {
        loop {
            while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&raw[..raw.len() - 1]);
                let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
                if let Some(d) = self.line(&line) {
                    return Some(d);
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Reads until the stream has handed the client a cursor (an id-only block or an event).
    async fn until_cursor(&mut self) {
        tokio::time::timeout(WITHIN, async {
            while self.last_event_id.is_empty() {
                while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                    let raw: Vec<u8> = self.buf.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&raw[..raw.len() - 1]).into_owned();
                    assert!(
                        self.line(&line).is_none(),
                        "an event before any was published"
                    );
                }
                if !self.last_event_id.is_empty() {
                    break;
                }
                match self.body.next().await {
                    Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                    other => panic!("the stream ended before giving a cursor: {other:?}"),
                }
            }
        })
        .await
        .expect("the stream gave the client no cursor before any event")
    }

    async fn expect_event(&mut self) -> Dispatched {
        tokio::time::timeout(WITHIN, self.next_event())
            .await
            .expect("no event in time")
            .expect("the stream ended")
    }
}

fn sse_url(origin: &TestOrigin, channel: &str) -> String {
    format!("{}/v1/sse?channel={channel}", origin.url)
}

async fn publish(origin: &TestOrigin, channel: &str, n: i64) -> EventId {
    origin
        .client
        .publish_one(channel, None, json!({ "n": n }))
        .await
        .unwrap()
}

fn n_of(d: &Dispatched) -> i64 {
    let v: Value = serde_json::from_str(&d.data).unwrap();
    v["data"]["n"].as_i64().unwrap()
}

fn assert_reset(d: &Dispatched, cause: &str, requested: EventId) -> Value {
    assert_eq!(d.kind, "ssepush.reset", "{d:?}");
    let v: Value = serde_json::from_str(&d.data).unwrap();
    assert_eq!(v["cause"], cause, "{v}");
    assert_eq!(v["requestedId"], requested.to_string(), "{v}");
    v
}

/// Connects fresh, is cut right after the stream opened, misses a publish, reconnects with the
/// id it holds: it gets exactly the event it missed.
async fn quiet_stream_reconnect(settings: Settings) {
    let origin = TestOrigin::start(settings).await;
    // Something older on the channel, which a resume from the subscription must not repeat.
    publish(&origin, "quiet.a", 0).await;
    let mut first = Sse::connect(&sse_url(&origin, "quiet.a"), "").await;
    first.until_cursor().await;
    let cursor = first.last_event_id.clone();
    drop(first);
    let missed = publish(&origin, "quiet.a", 1).await;
    publish(&origin, "quiet.b", 2).await;
    let mut again = Sse::connect(&sse_url(&origin, "quiet.a"), &cursor).await;
    let got = again.expect_event().await;
    assert_eq!(got.kind, "message");
    assert_eq!(n_of(&got), 1, "{got:?}");
    assert_eq!(got.last_event_id, missed.to_string());
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_resumes_from_the_moment_it_subscribed_on_memory() {
    quiet_stream_reconnect(memory_settings()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_resumes_from_the_moment_it_subscribed_on_redis() {
    quiet_stream_reconnect(redis_settings(&namespace("quiet"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_survives_a_rolling_restart_of_two_origins() {
    let settings = redis_settings(&namespace("rolling"));
    let a = TestOrigin::start(settings.clone()).await;
    let b = TestOrigin::start(settings.clone()).await;
    let mut stream = Sse::connect(&sse_url(&a, "quiet.a"), "").await;
    stream.until_cursor().await;
    // A is restarted: its streams end; meanwhile an event goes in through B.
    let a_addr = a.addr;
    a.stop().await;
    assert!(
        tokio::time::timeout(WITHIN, stream.next_event())
            .await
            .expect("the stream did not end on shutdown")
            .is_none()
    );
    let missed = publish(&b, "quiet.a", 1).await;
    // The client reconnects through the load balancer and lands on B.
    let mut again = Sse::connect(&sse_url(&b, "quiet.a"), &stream.last_event_id).await;
    let got = again.expect_event().await;
    assert_eq!((n_of(&got), got.last_event_id), (1, missed.to_string()));
    // And on the restarted A as well.
    let a = TestOrigin::start_on(a_addr, settings).await;
    let mut on_a = Sse::connect(&sse_url(&a, "quiet.a"), &stream.last_event_id).await;
    assert_eq!(n_of(&on_a.expect_event().await), 1);
    a.stop().await;
    b.stop().await;
}

/// Publishes n=1 and n=2, loses the log's history (`lose`), publishes n=3, and resumes from
/// n=1's id on SSE, WebSocket and long-poll: a reset with cause `epoch`, then only n=3.
async fn reset_after_a_lost_history<F, Fut>(settings: Settings, lose: F)
where
    F: FnOnce(TestOrigin) -> Fut,
    Fut: std::future::Future<Output = TestOrigin>,
{
    let origin = TestOrigin::start(settings).await;
    let first = publish(&origin, "lost.a", 1).await;
    publish(&origin, "lost.a", 2).await;
    // A live stream open across the loss: it ends once the origin has noticed (every live
    // subscriber is disconnected so it resumes), which is the signal that the origin knows.
    let mut sentinel = Sse::connect(&sse_url(&origin, "sentinel"), "").await;
    sentinel.until_cursor().await;
    let origin = lose(origin).await;
    let third = publish(&origin, "lost.a", 3).await;
    assert_ne!(third.epoch, first.epoch, "the log's epoch changed");
    assert!(
        tokio::time::timeout(WITHIN, sentinel.next_event())
            .await
            .expect("the live stream was not ended by the loss")
            .is_none()
    );

    // SSE: the reset, then a cursor at the start of the new history, then n=3.
    let mut sse = Sse::connect(&sse_url(&origin, "lost.a"), &first.to_string()).await;
    let reset = sse.expect_event().await;
    let v = assert_reset(&reset, "epoch", first);
    assert_eq!(v["oldestId"], third.to_string());
    let got = sse.expect_event().await;
    assert_eq!((n_of(&got), got.last_event_id), (3, third.to_string()));
    // Resuming from there is ordinary: no second reset, the next event.
    drop(sse);
    let fourth = publish(&origin, "lost.a", 4).await;
    let mut sse = Sse::connect(&sse_url(&origin, "lost.a"), &third.to_string()).await;
    let got = sse.expect_event().await;
    assert_eq!((n_of(&got), got.last_event_id), (4, fourth.to_string()));

    // Long-poll: the reset field, the new history, a cursor in it.
    let body: Value = crate::support::get(format!(
        "{}/v1/poll?channel=lost.a&after={first}&timeout=0",
        origin.url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(body["reset"]["cause"], "epoch", "{body}");
    let ns: Vec<i64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![3, 4], "{body}");
    assert_eq!(body["lastEventId"], fourth.to_string());

    // WebSocket: the `reset` frame names the cursor to continue from, then the events.
    let ws_url = format!("ws://{}/v1/ws", origin.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"type": "subscribe", "id": "s", "channels": ["lost.a"], "lastEventId": first.to_string()})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mut frames = Vec::new();
    tokio::time::timeout(WITHIN, async {
        while frames.len() < 4 {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                    frames.push(serde_json::from_str::<Value>(&t).unwrap())
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("websocket frames");
    assert_eq!(frames[0]["type"], "ok", "{frames:?}");
    assert_eq!(frames[1]["type"], "reset", "{frames:?}");
    assert_eq!(frames[1]["cause"], "epoch");
    assert_eq!(frames[1]["requestedId"], first.to_string());
    assert_eq!(
        frames[1]["lastEventId"],
        EventId::epoch_start(third.epoch).to_string()
    );
    assert_eq!(frames[2]["event"]["id"], third.to_string());
    assert_eq!(frames[3]["event"]["id"], fourth.to_string());
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_before_a_memory_restart_gets_a_reset() {
    reset_after_a_lost_history(memory_settings(), |origin| async move {
        let (addr, settings) = (origin.addr, memory_settings());
        origin.stop().await;
        TestOrigin::start_on(addr, settings).await
    })
    .await;
}

/// Deletes every key of a namespace, as a Redis that lost its data would look.
fn wipe(ns: &str) {
    let mut conn = redis::Client::open(redis_url())
        .and_then(|c| c.get_connection())
        .expect("these tests need Redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("ssepush:{{{ns}}}:*"))
        .query(&mut conn)
        .unwrap();
    assert!(!keys.is_empty(), "the namespace has keys to lose");
    let _: i64 = redis::cmd("DEL").arg(&keys).query(&mut conn).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_before_redis_lost_its_data_gets_a_reset() {
    let ns = namespace("wiped");
    let settings = redis_settings(&ns);
    reset_after_a_lost_history(settings, |origin| async move {
        // The origin keeps running while its Redis loses everything.
        wipe(&ns);
        origin
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_across_a_redis_data_loss_reconnects_into_a_reset() {
    let ns = namespace("live-wiped");
    let origin = TestOrigin::start(redis_settings(&ns)).await;
    let mut stream = Sse::connect(&sse_url(&origin, "lost.>"), "").await;
    stream.until_cursor().await;
    let first = publish(&origin, "lost.a", 1).await;
    assert_eq!(n_of(&stream.expect_event().await), 1);
    wipe(&ns);
    let second = publish(&origin, "lost.a", 2).await;
    // The origin notices the new epoch and ends the stream rather than continue silently.
    let rest = tokio::time::timeout(WITHIN, async {
        let mut seen = Vec::new();
        while let Some(d) = stream.next_event().await {
            seen.push(d);
        }
        seen
    })
    .await
    .expect("the stream did not end after the loss");
    assert!(
        rest.is_empty(),
        "nothing of the new history went out live: {rest:?}"
    );
    assert_eq!(stream.last_event_id, first.to_string());
    let mut again = Sse::connect(&sse_url(&origin, "lost.>"), &stream.last_event_id).await;
    assert_reset(&again.expect_event().await, "epoch", first);
    let got = again.expect_event().await;
    assert_eq!((n_of(&got), got.last_event_id), (2, second.to_string()));
    origin.stop().await;
}

/// A redis-server of our own on a spare port, without persistence, to restart empty.
struct OwnRedis {
    port: u16,
    child: tokio::process::Child,
}

impl OwnRedis {
    async fn start(port: u16) -> OwnRedis {
        let child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("this test runs redis-server (the Redis tests need it installed)");
        let url = format!("redis://127.0.0.1:{port}");
        crate::support::eventually(WITHIN, "redis-server answers", || {
            let url = url.clone();
            async move {
                redis::Client::open(url)
                    .and_then(|c| c.get_connection())
                    .is_ok()
            }
        })
        .await;
        OwnRedis { port, child }
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
        self.child.wait().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_before_a_redis_restart_without_persistence_gets_a_reset() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = OwnRedis::start(port).await;
    let settings = Settings {
        store: format!("redis://127.0.0.1:{}", redis.port),
        ..redis_settings(&namespace("restarted"))
    };
    let restarted = tokio::sync::Mutex::new(None);
    reset_after_a_lost_history(settings, |origin| async {
        redis.stop().await;
        *restarted.lock().await = Some(OwnRedis::start(port).await);
        // The origin reconnects by itself; wait until it can publish again.
        crate::support::eventually(WITHIN, "the origin is back on the new Redis", || {
            let client = origin.client.clone();
            async move { client.publish_one("probe", None, json!(0)).await.is_ok() }
        })
        .await;
        origin
    })
    .await;
    if let Some(redis) = restarted.lock().await.take() {
        redis.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_newer_than_the_head_gets_a_reset_and_continues_from_the_head() {
    let origin = TestOrigin::start(memory_settings()).await;
    let head = publish(&origin, "ahead.a", 1).await;
    let ahead = EventId::new(head.ms + 60_000, 0).in_epoch(head.epoch);
    let mut sse = Sse::connect(&sse_url(&origin, "ahead.a"), &ahead.to_string()).await;
    let reset = sse.expect_event().await;
    assert_reset(&reset, "ahead", ahead);
    assert_eq!(
        reset.last_event_id,
        ahead.to_string(),
        "the reset carries no id"
    );
    let next = publish(&origin, "ahead.a", 2).await;
    let got = sse.expect_event().await;
    assert_eq!((n_of(&got), got.last_event_id), (2, next.to_string()));
    // Between the two, the stream moved the client's cursor to the head.
    drop(sse);
    let body: Value = crate::support::get(format!(
        "{}/v1/poll?channel=ahead.a&after={ahead}&timeout=0",
        origin.url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(body["reset"]["cause"], "ahead", "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 0, "{body}");
    assert_eq!(body["lastEventId"], next.to_string());
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_reports_the_origins_epoch_reset_as_a_gap() {
    let settings = memory_settings();
    let origin = TestOrigin::start(settings.clone()).await;
    let first = publish(&origin, "phone.a", 1).await;
    let addr = origin.addr;
    origin.stop().await;
    let origin = TestOrigin::start_on(addr, settings).await;
    let third = publish(&origin, "phone.a", 3).await;
    let recorder = crate::support::proxy::Recorder::new();
    let proxy = crate::support::proxy::TestProxy::start(
        crate::support::proxy::proxy_settings(&[&origin.url]),
        recorder,
    )
    .await;
    let h = proxy
        .create(&crate::support::proxy::handoff_body(
            &sse_url(&origin, "phone.a"),
            Some(&first.to_string()),
            1,
        ))
        .await;
    crate::support::eventually(WITHIN, "the proxy buffered the new history", || async {
        proxy.events(&h, Some(&first.to_string())).await["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    })
    .await;
    let got = proxy.events(&h, Some(&first.to_string())).await;
    assert_eq!(got["gap"]["source"], "origin", "{got}");
    assert_eq!(
        crate::support::proxy::json_ids(&got),
        vec![third.to_string()]
    );
    proxy.stop().await;
    origin.stop().await;
}

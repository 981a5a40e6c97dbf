//! `GET /v1/ws` from the outside, with a real WebSocket client (tokio-tungstenite) against a real
//! origin on memory and on Redis: several subscriptions per socket with exact resume, a filter
//! changed mid-stream, error frames that leave the socket open, publishing when allowed and
//! refused when not, slow consumers and shutdown closing the socket with the right code.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::TestOrigin;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use ssepush_origin::EventId;
use ssepush_origin::settings::Settings;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(10);

struct Ws {
    s: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    async fn open(origin: &TestOrigin) -> Ws {
        Self::open_with(origin, None).await
    }

    async fn open_with(origin: &TestOrigin, bearer: Option<&str>) -> Ws {
        let mut req = format!("ws://{}/v1/ws", origin.addr)
            .into_client_request()
            .unwrap();
        if let Some(token) = bearer {
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (s, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket connect");
        assert_eq!(resp.status(), 101);
        Ws { s }
    }

    async fn send(&mut self, v: Value) {
        self.s
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    async fn send_raw(&mut self, m: Message) {
        self.s.send(m).await.unwrap();
    }

    /// The next JSON frame (pings and pongs skipped); panics on close or after `WAIT`.
    async fn next(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(WAIT, self.s.next())
                .await
                .expect("no frame within 10 s")
                .expect("socket ended")
                .expect("socket error");
            match m {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next frame, which must be of this type.
    async fn expect(&mut self, kind: &str) -> Value {
        let v = self.next().await;
        assert_eq!(v["type"], kind, "{v}");
        v
    }

    /// Reads until the server closes; returns the close code (None when the socket just ended).
    async fn close_code(&mut self) -> Option<u16> {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.s.next().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await
        .expect("the server did not close the socket within 10 s")
    }
}

/// Frames read so far, by kind: events per subscription, and everything else in order.
#[derive(Default)]
struct Seen {
    events: HashMap<String, Vec<Value>>,
    other: Vec<Value>,
}

impl Seen {
    fn ns(&self, sub: &str) -> Vec<i64> {
        self.events
            .get(sub)
            .map(|v| v.iter().map(|e| e["data"]["n"].as_i64().unwrap()).collect())
            .unwrap_or_default()
    }

    fn ids(&self, sub: &str) -> Vec<EventId> {
        self.events
            .get(sub)
            .map(|v| {
                v.iter()
                    .map(|e| e["id"].as_str().unwrap().parse().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn oks(&self) -> usize {
        self.other.iter().filter(|v| v["type"] == "ok").count()
    }
}

/// Reads frames into `seen` until `done` holds.
async fn read_until(ws: &mut Ws, seen: &mut Seen, what: &str, done: impl Fn(&Seen) -> bool) {
    tokio::time::timeout(WAIT * 2, async {
        while !done(seen) {
            let v = ws.next().await;
            if v["type"] == "event" {
                let sub = v["sub"].as_str().unwrap().to_owned();
                seen.events.entry(sub).or_default().push(v["event"].clone());
            } else {
                seen.other.push(v);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// A ping/pong round trip, then whatever arrived meanwhile: frames already queued come first.
async fn settle(ws: &mut Ws, seen: &mut Seen) {
    ws.send(json!({"type": "ping"})).await;
    let before = seen.other.len();
    read_until(ws, seen, "pong", |s| {
        s.other[before..].iter().any(|v| v["type"] == "pong")
    })
    .await;
}

macro_rules! on_both_stores {
    ($name:ident, $scenario:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                $scenario(crate::support::memory_settings()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                $scenario(crate::support::redis_settings(&crate::support::namespace(
                    stringify!($name),
                )))
                .await;
            }
        }
    };
}

const CHANNELS: [&str; 3] = ["chat.a", "chat.b", "news.x"];

async fn publish_round_robin(
    origin: &TestOrigin,
    range: std::ops::Range<i64>,
) -> Vec<(EventId, &'static str, i64)> {
    let mut out = Vec::new();
    for n in range {
        let ch = CHANNELS[n as usize % 3];
        let id = origin
            .client
            .publish_one(ch, None, json!({ "n": n }))
            .await
            .unwrap();
        out.push((id, ch, n));
    }
    out
}

async fn several_subscriptions_resume_exactly(settings: Settings) {
    let origin = TestOrigin::start(settings).await;
    let history = publish_round_robin(&origin, 0..30).await;
    let mut ws = Ws::open(&origin).await;
    let cursor = history[4].0;
    ws.send(json!({"type": "subscribe", "id": "s1", "channels": ["chat.*"], "lastEventId": cursor.to_string()})).await;
    ws.send(json!({"type": "subscribe", "id": "s2", "channels": ["news.x"], "filter": "data.n >= 10", "lastEventId": "0-0"})).await;
    ws.send(json!({"type": "subscribe", "id": "s3", "channels": ["chat.a"]}))
        .await;
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, "three oks", |s| s.oks() == 3).await;
    // Each `ok` carries the subscription's cursor from its first moment: the one given, the
    // start of the log's epoch for `0-0`, the log's head for a fresh subscription.
    let head = history[29].0;
    let cursors = [cursor, EventId::epoch_start(head.epoch), head];
    for ((ok, sub), at) in seen.other.iter().zip(["s1", "s2", "s3"]).zip(cursors) {
        assert_eq!(
            *ok,
            json!({"type": "ok", "op": "subscribe", "ref": sub, "lastEventId": at.to_string()})
        );
    }
    let live = publish_round_robin(&origin, 30..60).await;
    let all: Vec<_> = history.iter().chain(&live).cloned().collect();
    let expect = |f: &dyn Fn(&(EventId, &str, i64)) -> bool| -> Vec<EventId> {
        all.iter().filter(|e| f(e)).map(|e| e.0).collect()
    };
    let s1 = expect(&|e| e.1.starts_with("chat.") && e.0 > cursor);
    let s2 = expect(&|e| e.1 == "news.x" && e.2 >= 10);
    let s3 = expect(&|e| e.1 == "chat.a" && e.2 >= 30);
    read_until(&mut ws, &mut seen, "all events", |s| {
        s.ids("s1").len() >= s1.len()
            && s.ids("s2").len() >= s2.len()
            && s.ids("s3").len() >= s3.len()
    })
    .await;
    settle(&mut ws, &mut seen).await;
    assert_eq!(
        seen.ids("s1"),
        s1,
        "s1: history after the cursor, then live, each once"
    );
    assert_eq!(
        seen.ids("s2"),
        s2,
        "s2: filtered history from the start, then live"
    );
    assert_eq!(seen.ids("s3"), s3, "s3: live only");
    let one = &seen.events["s3"][0];
    assert_eq!(
        *one,
        json!({"id": live[0].0.to_string(), "channel": "chat.a", "type": "message", "data": {"n": 30}, "time": live[0].0.ms})
    );

    // Drop the socket, miss some events, come back with s1's last id: exactly the rest.
    let last = *seen.ids("s1").last().unwrap();
    drop(ws);
    let missed = publish_round_robin(&origin, 60..75).await;
    let mut ws = Ws::open(&origin).await;
    ws.send(json!({"type": "subscribe", "id": "s1", "channels": ["chat.*"], "lastEventId": last.to_string()})).await;
    let mut seen = Seen::default();
    let want: Vec<EventId> = missed
        .iter()
        .filter(|e| e.1.starts_with("chat."))
        .map(|e| e.0)
        .collect();
    read_until(&mut ws, &mut seen, "resumed events", |s| {
        s.ids("s1").len() >= want.len()
    })
    .await;
    settle(&mut ws, &mut seen).await;
    assert_eq!(seen.ids("s1"), want);
    origin.stop().await;
}
on_both_stores!(
    several_subscriptions_resume_exactly_on,
    several_subscriptions_resume_exactly
);

async fn a_filter_change_applies_from_the_next_event(settings: Settings) {
    let origin = TestOrigin::start(settings).await;
    let mut ws = Ws::open(&origin).await;
    ws.send(
        json!({"type": "subscribe", "id": "s1", "channels": ["m"], "filter": "data.n % 2 == 0"}),
    )
    .await;
    ws.expect("ok").await;
    let mut ids: Vec<EventId> = Vec::new();
    for n in 0..10 {
        ids.push(
            origin
                .client
                .publish_one("m", None, json!({ "n": n }))
                .await
                .unwrap(),
        );
    }
    let mut seen = Seen::default();
    // Everything up to n = 8 has been dispatched once n = 8 arrives.
    read_until(&mut ws, &mut seen, "n = 8", |s| s.ns("s1").contains(&8)).await;
    ws.send(json!({"type": "filter", "id": "s1", "filter": "data.n % 2 == 1"}))
        .await;
    let before = seen.other.len();
    read_until(&mut ws, &mut seen, "filter ok", |s| {
        s.other[before..].iter().any(|v| v["type"] == "ok")
    })
    .await;
    let ok = seen.other.last().unwrap().clone();
    assert_eq!(
        (ok["op"].as_str(), ok["ref"].as_str()),
        (Some("filter"), Some("s1")),
        "{ok}"
    );
    let point: EventId = ok["appliesAfter"].as_str().unwrap().parse().unwrap();
    assert!(
        point >= ids[8],
        "the switch comes after what was already delivered"
    );
    for n in 10..20 {
        ids.push(
            origin
                .client
                .publish_one("m", None, json!({ "n": n }))
                .await
                .unwrap(),
        );
    }
    assert!(
        point < ids[10],
        "the switch comes before what was published after the ok"
    );
    read_until(&mut ws, &mut seen, "n = 19", |s| s.ns("s1").contains(&19)).await;
    // Removing the filter: everything from the next event on.
    ws.send(json!({"type": "filter", "id": "s1", "filter": null}))
        .await;
    let before = seen.other.len();
    read_until(&mut ws, &mut seen, "second ok", |s| {
        s.other[before..].iter().any(|v| v["type"] == "ok")
    })
    .await;
    let point2: EventId = seen.other.last().unwrap()["appliesAfter"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for n in 20..23 {
        ids.push(
            origin
                .client
                .publish_one("m", None, json!({ "n": n }))
                .await
                .unwrap(),
        );
    }
    read_until(&mut ws, &mut seen, "n = 22", |s| s.ns("s1").contains(&22)).await;
    settle(&mut ws, &mut seen).await;
    let expected: Vec<i64> = (0..23i64)
        .filter(|&n| {
            let id = ids[n as usize];
            if id <= point {
                n % 2 == 0
            } else if id <= point2 {
                n % 2 == 1
            } else {
                true
            }
        })
        .collect();
    assert_eq!(
        seen.ns("s1"),
        expected,
        "each event judged by the filter in force, none lost"
    );
    assert!(expected.contains(&11) && expected.contains(&20) && expected.contains(&21));
    origin.stop().await;
}
on_both_stores!(
    filter_change_on,
    a_filter_change_applies_from_the_next_event
);

async fn bad_frames_get_errors_and_the_socket_stays_open(settings: Settings) {
    let origin = TestOrigin::start(Settings {
        ws_max_subscriptions: 2,
        ..settings
    })
    .await;
    let mut ws = Ws::open(&origin).await;
    let mut check = async |msg: Message, code: &str, reference: Option<&str>| {
        ws.send_raw(msg).await;
        let v = ws.expect("error").await;
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        match reference {
            Some(r) => assert_eq!(v["ref"], r, "{v}"),
            None => assert!(v.get("ref").is_none(), "{v}"),
        }
        v
    };
    let text = |v: Value| Message::Text(v.to_string().into());
    check(Message::Text("{".into()), "invalid_json", None).await;
    check(Message::Text("[1,2]".into()), "invalid_message", None).await;
    check(
        Message::Binary(vec![1, 2, 3].into()),
        "unsupported_frame",
        None,
    )
    .await;
    check(
        text(json!({"type": "dance", "id": "d1"})),
        "unknown_type",
        Some("d1"),
    )
    .await;
    check(
        text(json!({"type": "subscribe", "id": "s1", "channels": ["a.>.b"]})),
        "invalid_channel",
        Some("s1"),
    )
    .await;
    check(
        text(json!({"type": "subscribe", "id": "s1", "channels": []})),
        "missing_channel",
        Some("s1"),
    )
    .await;
    check(
        text(json!({"type": "subscribe", "id": "s1", "channels": ["a"], "lastEventId": "soon"})),
        "invalid_event_id",
        Some("s1"),
    )
    .await;
    let v = check(
        text(json!({"type": "subscribe", "id": "s1", "channels": ["a"], "filter": "data.x >"})),
        "invalid_filter",
        Some("s1"),
    )
    .await;
    assert_eq!(v["line"], 1);
    assert!(v["column"].as_u64().unwrap() >= 8, "{v}");
    check(
        text(json!({"type": "unsubscribe", "id": "nope"})),
        "unknown_subscription",
        Some("nope"),
    )
    .await;
    check(
        text(json!({"type": "filter", "id": "nope", "filter": null})),
        "unknown_subscription",
        Some("nope"),
    )
    .await;
    check(
        text(json!({"type": "filter", "id": "nope"})),
        "invalid_message",
        Some("nope"),
    )
    .await;

    // Still open: subscriptions work, up to the limit, ids are unique.
    ws.send(json!({"type": "subscribe", "id": "s1", "channels": ["a"]}))
        .await;
    ws.expect("ok").await;
    ws.send(json!({"type": "subscribe", "id": "s1", "channels": ["b"]}))
        .await;
    assert_eq!(ws.expect("error").await["code"], "duplicate_subscription");
    ws.send(json!({"type": "subscribe", "id": "s2", "channels": ["b"]}))
        .await;
    ws.expect("ok").await;
    ws.send(json!({"type": "subscribe", "id": "s3", "channels": ["c"]}))
        .await;
    assert_eq!(ws.expect("error").await["code"], "too_many_subscriptions");
    let mut seen = Seen::default();
    let id = origin
        .client
        .publish_one("a", None, json!({"n": 1}))
        .await
        .unwrap();
    read_until(&mut ws, &mut seen, "the event", |s| !s.ids("s1").is_empty()).await;
    assert_eq!(seen.ids("s1"), vec![id]);
    // Unsubscribing frees a slot and stops the events.
    ws.send(json!({"type": "unsubscribe", "id": "s1"})).await;
    read_until(&mut ws, &mut seen, "unsubscribe ok", |s| {
        s.other.iter().any(|v| v["op"] == "unsubscribe")
    })
    .await;
    ws.send(json!({"type": "subscribe", "id": "s3", "channels": ["a"]}))
        .await;
    read_until(&mut ws, &mut seen, "s3 ok", |s| {
        s.other.iter().any(|v| v["ref"] == "s3")
    })
    .await;
    let id2 = origin
        .client
        .publish_one("a", None, json!({"n": 2}))
        .await
        .unwrap();
    read_until(&mut ws, &mut seen, "s3 event", |s| !s.ids("s3").is_empty()).await;
    settle(&mut ws, &mut seen).await;
    assert_eq!(
        seen.ids("s1"),
        vec![id],
        "no event after the unsubscribe ok"
    );
    assert_eq!(seen.ids("s3"), vec![id2]);

    // A message over ws_max_message_bytes closes the socket with 1009.
    let mut big = Ws::open(&origin).await;
    let pad = "x".repeat(origin_settings_limit() + 1);
    big.send_raw(Message::Text(
        json!({"type": "ping", "pad": pad}).to_string().into(),
    ))
    .await;
    assert_eq!(big.close_code().await, Some(1009));
    // The first socket is unaffected.
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong").await;
    origin.stop().await;
}

fn origin_settings_limit() -> usize {
    Settings::default().ws_max_message_bytes
}
on_both_stores!(
    bad_frames_on,
    bad_frames_get_errors_and_the_socket_stays_open
);

async fn publishing_is_allowed_only_when_configured(settings: Settings) {
    // Refused by default.
    let origin = TestOrigin::start(settings.clone()).await;
    let mut ws = Ws::open(&origin).await;
    ws.send(json!({"type": "publish", "channel": "p", "data": 1, "ref": "r1"}))
        .await;
    let v = ws.expect("error").await;
    assert_eq!(
        (v["code"].as_str(), v["ref"].as_str()),
        (Some("publish_disabled"), Some("r1")),
        "{v}"
    );
    let latest: Value = crate::support::get(format!("{}/v1/channels/p/latest", origin.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(latest["events"], json!([]), "nothing was stored");
    origin.stop().await;

    // Allowed with ws_publish: acknowledged with the ids, stored through the one ingest path.
    let origin = TestOrigin::start(Settings {
        ws_publish: true,
        ..settings.clone()
    })
    .await;
    let mut ws = Ws::open(&origin).await;
    ws.send(json!({"type": "publish", "channel": "p", "eventType": "greeting", "data": {"x": 1}, "ref": "r1"})).await;
    let ok = ws.expect("ok").await;
    assert_eq!(
        (ok["op"].as_str(), ok["ref"].as_str()),
        (Some("publish"), Some("r1")),
        "{ok}"
    );
    let id: EventId = ok["ids"][0].as_str().unwrap().parse().unwrap();
    ws.send(json!({"type": "publish", "channel": "p.*", "data": 1, "ref": 7}))
        .await;
    let v = ws.expect("error").await;
    assert_eq!(
        (v["code"].as_str(), v["ref"].as_i64()),
        (Some("invalid_channel"), Some(7)),
        "{v}"
    );
    ws.send(json!({"type": "publish", "channel": "streams.fake", "data": 1}))
        .await;
    assert_eq!(ws.expect("error").await["code"], "reserved_channel");
    ws.send(json!({"type": "subscribe", "id": "s1", "channels": ["p"], "lastEventId": "0-0"}))
        .await;
    ws.expect("ok").await;
    let ev = ws.expect("event").await;
    assert_eq!(ev["event"]["id"], id.to_string());
    assert_eq!(ev["event"]["type"], "greeting");
    assert_eq!(ev["event"]["data"], json!({"x": 1}));
    origin.stop().await;

    // With publisher tokens, the upgrade request's credentials decide.
    let mut s = Settings {
        ws_publish: true,
        ..settings
    };
    s.auth.publish_tokens = vec!["ws-test-token-0123456789".into()];
    let origin = TestOrigin::start(s).await;
    let mut anon = Ws::open(&origin).await;
    anon.send(json!({"type": "publish", "channel": "p", "data": 1, "ref": "a"}))
        .await;
    assert_eq!(anon.expect("error").await["code"], "unauthorized");
    let mut wrong = Ws::open_with(&origin, Some("nope")).await;
    wrong
        .send(json!({"type": "publish", "channel": "p", "data": 1}))
        .await;
    assert_eq!(wrong.expect("error").await["code"], "unauthorized");
    let mut authed = Ws::open_with(&origin, Some("ws-test-token-0123456789")).await;
    authed
        .send(json!({"type": "publish", "channel": "p", "data": 1, "ref": "b"}))
        .await;
    assert_eq!(
        authed.expect("ok").await["ids"].as_array().map(Vec::len),
        Some(1)
    );
    origin.stop().await;
}
on_both_stores!(publish_on, publishing_is_allowed_only_when_configured);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_1001() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let mut ws = Ws::open(&origin).await;
    ws.send(json!({"type": "subscribe", "id": "s", "channels": ["a"]}))
        .await;
    ws.expect("ok").await;
    let stop = tokio::spawn(origin.stop());
    assert_eq!(ws.close_code().await, Some(1001));
    stop.await.unwrap();
}

#[tokio::test]
async fn a_plain_get_is_told_to_upgrade() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let resp = crate::support::get(format!("{}/v1/ws", origin.url))
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "websocket_required");
    origin.stop().await;
}

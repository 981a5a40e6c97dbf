//! The SSE endpoint from the outside: wire format, resets, filters and patterns end to end,
//! and the 400s every bad input gets.

use std::time::Duration;

use crate::support::{TestOrigin, take_items};
use futures::StreamExt;
use serde_json::{Value, json};
use ssepush::client::origin::{Item, Subscription};
use ssepush_origin::EventId;
use ssepush_origin::settings::{ChannelRetention, Settings};

fn events(items: &[Item]) -> Vec<&ssepush_origin::Event> {
    items
        .iter()
        .map(|i| match i {
            Item::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn the_wire_format_has_retry_ids_types_and_the_envelope() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let resp = crate::support::get(format!("{}/v1/sse?channel=chat.*", origin.url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let mut body = resp.bytes_stream();
    // `retry:`, then the log's head as an id-only block: an empty memory log's head is the
    // start of its epoch.
    let mut opening = Vec::new();
    while !(opening.starts_with(b"retry: 100\n\nid: ") && opening.ends_with(b"\n\n")) {
        opening.extend_from_slice(&body.next().await.unwrap().unwrap());
        assert!(
            opening.len() < 64,
            "{:?}",
            String::from_utf8_lossy(&opening)
        );
    }
    let opening = String::from_utf8(opening).unwrap();
    let head: EventId = opening["retry: 100\n\nid: ".len()..opening.len() - 2]
        .parse()
        .unwrap();
    assert!(head.is_start() && head.epoch != 0, "{opening:?}");
    let id = origin
        .client
        .publish_one("chat.a", Some("greeting"), json!({"x": 1}))
        .await
        .unwrap();
    let frame = body.next().await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&frame),
        format!(
            "id: {id}\nevent: greeting\ndata: {{\"channel\":\"chat.a\",\"data\":{{\"x\":1}},\"time\":{}}}\n\n",
            id.ms
        )
    );
    assert_eq!(id.epoch, head.epoch);
    origin.stop().await;
}

#[tokio::test]
async fn keep_alive_comments_flow_on_idle_streams() {
    let settings = Settings {
        keep_alive_secs: 1,
        ..crate::support::memory_settings()
    };
    let origin = TestOrigin::start(settings).await;
    let resp = crate::support::get(format!("{}/v1/sse?channel=a", origin.url))
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !seen.contains(": keep-alive\n\n") {
            seen.push_str(&String::from_utf8_lossy(
                &body.next().await.unwrap().unwrap(),
            ));
        }
    })
    .await
    .expect("no keep-alive comment within 5 s");
    origin.stop().await;
}

async fn reset_then_live(settings: Settings) {
    let mut settings = settings;
    settings.retention.channels.push(ChannelRetention {
        pattern: "small".into(),
        max_events: Some(5),
        max_age_secs: None,
        max_bytes: None,
    });
    let origin = TestOrigin::start(settings).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            origin
                .client
                .publish_one("small", None, json!(i))
                .await
                .unwrap(),
        );
    }
    let sub = Subscription {
        channels: vec!["small".into()],
        last_event_id: Some(ids[2]),
        ..Default::default()
    };
    // Subscribed (the origin answered 200): what is published from now on is live to it.
    let mut conn = crate::support::subscribed(&origin.client, &sub).await;
    let reader = tokio::spawn(async move {
        crate::support::read_items(&mut conn, 1 + 5 + 3, Duration::from_secs(10)).await
    });
    for i in 20..23 {
        ids.push(
            origin
                .client
                .publish_one("small", None, json!(i))
                .await
                .unwrap(),
        );
    }
    let items = reader.await.unwrap();
    assert_eq!(
        items[0],
        Item::Reset {
            oldest: Some(ids[15])
        },
        "reset comes first and names the oldest id held"
    );
    let got: Vec<EventId> = events(&items[1..]).iter().map(|e| e.id).collect();
    assert_eq!(
        got,
        ids[15..23].to_vec(),
        "then what is retained, then live events"
    );
    // 23 published, 5 retained: ids[18..] are held and ids[17] was the last dropped. A cursor
    // at ids[17] missed nothing, so it gets no reset.
    let sub = Subscription {
        channels: vec!["small".into()],
        last_event_id: Some(ids[17]),
        ..Default::default()
    };
    let items = take_items(&origin.client, &sub, 5, Duration::from_secs(5)).await;
    let got: Vec<EventId> = events(&items).iter().map(|e| e.id).collect();
    assert_eq!(got, ids[18..23].to_vec());
    origin.stop().await;
}

#[tokio::test]
async fn a_cursor_older_than_retention_gets_a_reset_first_on_memory() {
    reset_then_live(crate::support::memory_settings()).await;
}

#[tokio::test]
async fn a_cursor_older_than_retention_gets_a_reset_first_on_redis() {
    reset_then_live(crate::support::redis_settings(&crate::support::namespace(
        "reset",
    )))
    .await;
}

#[tokio::test]
async fn wildcards_and_filters_select_exactly_the_matching_events() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let sub = Subscription {
        channels: vec!["sensors.*.temp".into(), "alerts.>".into()],
        filter: Some(r#"data.severity >= 3 && data.region in ["eu", "us"]"#.into()),
        last_event_id: Some(EventId::ZERO),
    };
    let cases = [
        (
            "sensors.eu.temp",
            json!({"severity": 3, "region": "eu"}),
            true,
        ),
        (
            "sensors.eu.temp",
            json!({"severity": 2, "region": "eu"}),
            false,
        ),
        (
            "sensors.eu.hum",
            json!({"severity": 5, "region": "eu"}),
            false,
        ),
        (
            "sensors.eu.x.temp",
            json!({"severity": 5, "region": "eu"}),
            false,
        ),
        ("alerts.fire", json!({"severity": 9, "region": "us"}), true),
        (
            "alerts.fire.north",
            json!({"severity": 4, "region": "us"}),
            true,
        ),
        ("alerts", json!({"severity": 9, "region": "us"}), false),
        ("alerts.x", json!({"severity": 9, "region": "asia"}), false),
        (
            "alerts.y",
            json!({"severity": "high", "region": "eu"}),
            false,
        ),
        ("alerts.z", json!("not an object"), false),
    ];
    let mut expected = Vec::new();
    for (ch, data, wanted) in &cases {
        let id = origin
            .client
            .publish_one(ch, None, data.clone())
            .await
            .unwrap();
        if *wanted {
            expected.push(id);
        }
    }
    // One history read covers them; then a live event proves the live path filters too.
    let want = expected.len() + 1;
    let mut conn = crate::support::subscribed(&origin.client, &sub).await;
    let reader = tokio::spawn(async move {
        let items = crate::support::read_items(&mut conn, want, Duration::from_secs(5)).await;
        events(&items).iter().map(|e| e.id).collect::<Vec<_>>()
    });
    origin
        .client
        .publish_one("alerts.nope", None, json!({"severity": 1, "region": "eu"}))
        .await
        .unwrap();
    let live = origin
        .client
        .publish_one(
            "sensors.us.temp",
            None,
            json!({"severity": 7, "region": "us"}),
        )
        .await
        .unwrap();
    let got = reader.await.unwrap();
    expected.push(live);
    assert_eq!(got, expected);
    origin.stop().await;
}

#[tokio::test]
async fn the_last_event_id_header_wins_over_the_query() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let a = origin
        .client
        .publish_one("h", None, json!(1))
        .await
        .unwrap();
    let b = origin
        .client
        .publish_one("h", None, json!(2))
        .await
        .unwrap();
    let resp = crate::support::http()
        .get(format!("{}/v1/sse?channel=h&lastEventId=0-0", origin.url))
        .header("last-event-id", a.to_string())
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains(&format!("id: {b}")) {
        text.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    assert!(!text.contains(&format!("id: {a}\n")), "{text}");
    origin.stop().await;
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body["error"].clone())
}

#[tokio::test]
async fn bad_inputs_get_400s_that_say_what_is_wrong() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let get = |q: &str| crate::support::get(format!("{}/v1/sse?{q}", origin.url));
    let (s, e) = error_of(get("").await.unwrap()).await;
    assert_eq!((s, e["code"].as_str().unwrap()), (400, "missing_channel"));
    let (s, e) = error_of(get("channel=a..b").await.unwrap()).await;
    assert_eq!((s, e["code"].as_str().unwrap()), (400, "invalid_channel"));
    assert!(
        e["message"].as_str().unwrap().contains("empty token"),
        "{e}"
    );
    let (s, e) = error_of(get("channel=a.%3E.b").await.unwrap()).await;
    assert_eq!(s, 400);
    assert!(e["message"].as_str().unwrap().contains("last token"), "{e}");
    let (s, e) = error_of(get("channel=a&filter=data.x%20%3E%3D").await.unwrap()).await;
    assert_eq!((s, e["code"].as_str().unwrap()), (400, "invalid_filter"));
    assert_eq!(e["line"], 1);
    assert!(e["column"].as_u64().unwrap() >= 9, "{e}");
    let (s, e) = error_of(
        get("channel=a&filter=nosuchvar%20%3D%3D%201")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("unknown variable 'nosuchvar'"),
        "{e}"
    );
    let (s, e) = error_of(get("channel=a&lastEventId=yesterday").await.unwrap()).await;
    assert_eq!((s, e["code"].as_str().unwrap()), (400, "invalid_event_id"));

    let post = |body: &'static str| {
        crate::support::http()
            .post(format!("{}/v1/events", origin.url))
            .body(body)
            .send()
    };
    let (s, e) = error_of(post("{not json").await.unwrap()).await;
    assert_eq!((s, e["code"].as_str().unwrap()), (400, "invalid_json"));
    let (s, e) = error_of(post(r#"{"channel":"chat.*","data":1}"#).await.unwrap()).await;
    assert_eq!((s, e["code"].as_str().unwrap()), (400, "invalid_channel"));
    let (s, e) = error_of(
        post(r#"{"channel":"a","type":"ssepush.reset"}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(e["message"].as_str().unwrap().contains("reserved"), "{e}");
    for owned in ["datasets.prefs", "streams.alerts"] {
        let body = format!(r#"{{"channel":"{owned}","data":1}}"#);
        let resp = crate::support::http()
            .post(format!("{}/v1/events", origin.url))
            .body(body)
            .send()
            .await
            .unwrap();
        let (s, e) = error_of(resp).await;
        assert_eq!(
            (s, e["code"].as_str().unwrap()),
            (403, "reserved_channel"),
            "{owned}"
        );
    }
    let (s, _) = error_of(post(r#"[{"channel":"ok"},{"channel":""}]"#).await.unwrap()).await;
    assert_eq!(s, 400);
    let (s, e) = error_of(
        crate::support::http()
            .post(format!("{}/v1/events", origin.url))
            .body(vec![b' '; 2 << 20])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, e["code"].as_str().unwrap()), (413, "body_too_large"));
    // A rejected batch stored nothing: the first, valid half of it is not there either, so the
    // first event on "ok" is the marker published afterwards.
    origin
        .client
        .publish_one("ok", None, json!("marker"))
        .await
        .unwrap();
    let first = take_items(
        &origin.client,
        &Subscription {
            channels: vec!["ok".into()],
            last_event_id: Some(EventId::ZERO),
            ..Default::default()
        },
        1,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(events(&first)[0].data, json!("marker"));
    let resp = crate::support::get(format!("{}/nope", origin.url))
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.0, 404);
    origin.stop().await;
}

/// The accept loop serves `GET /v1/sse` on its lean path (the head read in one piece: the
/// response closes the connection, no chunked framing) and hands anything else — a head that
/// arrives in pieces, another route — to hyper, byte-exact either way.
#[tokio::test]
async fn the_lean_path_and_the_hyper_path_both_serve_sse() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let head = "GET /v1/sse?channel=lean HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n";
    // Reads the response head and whatever body came with it until `want` appears.
    async fn read_until(conn: &mut tokio::net::TcpStream, want: &str) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !String::from_utf8_lossy(&got).contains(want) {
                let n = conn.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        String::from_utf8_lossy(&got).into_owned()
    }
    let mut lean = tokio::net::TcpStream::connect(origin.addr).await.unwrap();
    lean.write_all(head.as_bytes()).await.unwrap();
    let mut split = tokio::net::TcpStream::connect(origin.addr).await.unwrap();
    let (a, b) = head.split_at(20);
    split.write_all(a.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    split.write_all(b.as_bytes()).await.unwrap();
    let lean_head = read_until(&mut lean, "retry: 100").await;
    let split_head = read_until(&mut split, "retry: 100").await;
    for text in [&lean_head, &split_head] {
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("content-type: text/event-stream\r\n"),
            "{text}"
        );
        assert!(text.contains("cache-control: no-cache\r\n"), "{text}");
    }
    assert!(lean_head.contains("connection: close\r\n"), "{lean_head}");
    assert!(
        split_head.contains("transfer-encoding: chunked\r\n"),
        "{split_head}"
    );
    let id = origin
        .client
        .publish_one("lean", None, json!({"n": 1}))
        .await
        .unwrap();
    let want =
        format!("id: {id}\nevent: message\ndata: {{\"channel\":\"lean\",\"data\":{{\"n\":1}}");
    assert!(read_until(&mut lean, &want).await.contains(&want));
    assert!(read_until(&mut split, &want).await.contains(&want));
    // A bad request on the lean path is the same JSON 400, with its length.
    let mut bad = tokio::net::TcpStream::connect(origin.addr).await.unwrap();
    bad.write_all(b"GET /v1/sse HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let text = read_until(&mut bad, "missing_channel").await;
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.contains("content-length: "), "{text}");
    origin.stop().await;
}

/// A reader that stops reading is cut off once its queue fills (a slow consumer), whatever the
/// socket's buffers hold, and the publisher never waits for it.
#[tokio::test]
async fn a_reader_that_stops_reading_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let settings = Settings {
        subscriber_queue: 16,
        ..crate::support::memory_settings()
    };
    let origin = TestOrigin::start(settings).await;
    let mut slow = tokio::net::TcpStream::connect(origin.addr).await.unwrap();
    slow.write_all(b"GET /v1/sse?channel=big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // The stream is open (its head arrived) before anything is published.
    let mut buf = vec![0u8; 1 << 16];
    let n = slow.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    // 400 events of 64 KiB: far more than the loopback socket's buffers and the queue hold.
    let pad = "x".repeat(64 * 1024);
    let published = tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..400 {
            origin
                .client
                .publish_one("big", None, json!({ "pad": pad }))
                .await
                .unwrap();
        }
    })
    .await;
    assert!(published.is_ok(), "a publisher waited for a slow reader");
    // Whatever was buffered, then the end: the origin closed the connection.
    let mut received = n;
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(k) => received += k,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the slow reader was never cut off");
    assert!(
        received < 400 * pad.len(),
        "it was cut off before it got everything ({received} bytes)"
    );
    origin.stop().await;
}

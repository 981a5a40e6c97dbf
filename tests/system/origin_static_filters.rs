//! Static filters (`docs/configuration.md`, `streams`): the operator's named streams, computed at ingest into
//! `streams.<name>`. A subscriber of a stream gets exactly the matching events, in order, live and
//! resumed with `Last-Event-ID`; clients cannot publish into `streams.…`; a bad stream filter
//! stops the origin at startup with the position of the error. On memory and on Redis.

use std::time::Duration;

use crate::support::TestOrigin;
use futures::StreamExt;
use serde_json::{Value, json};
use ssepush::client::origin::{Frame, Item, Subscription};
use ssepush_origin::settings::Settings;
use ssepush_origin::streams::StreamDef;
use ssepush_origin::{Event, EventId};

fn with_streams(mut settings: Settings) -> Settings {
    settings.streams = vec![
        StreamDef {
            name: "alerts-eu".into(),
            channels: vec!["sensors.>".into()],
            filter: Some("data.severity >= 3 && data.region == 'eu'".into()),
        },
        // Same filter source as above on other channels: shares the compiled program.
        StreamDef {
            name: "eu-ops".into(),
            channels: vec!["ops.*".into(), "sensors.eu.*".into()],
            filter: Some("data.severity >= 3 && data.region == 'eu'".into()),
        },
    ];
    settings
}

/// The published mix: (channel, type, data). Some match `alerts-eu`, most don't.
fn mix() -> Vec<(String, &'static str, Value)> {
    let regions = ["eu", "us", "eu", "asia"];
    (0..40)
        .map(|i| {
            let channel = match i % 5 {
                0 => "sensors.eu.temp".to_string(),
                1 => "sensors.us.temp".to_string(),
                2 => "chat.room1".to_string(), // never in a stream, whatever its data
                3 => format!("sensors.x{i}.deep.path"),
                _ => "ops.deploy".to_string(),
            };
            let kind = if i % 2 == 0 { "reading" } else { "message" };
            let data = json!({"n": i, "severity": i % 7, "region": regions[i % 4]});
            (channel, kind, data)
        })
        .collect()
}

fn alerts_eu(channel: &str, data: &Value) -> bool {
    channel.starts_with("sensors.")
        && data["severity"].as_i64().unwrap() >= 3
        && data["region"] == "eu"
}

async fn read_events(
    conn: impl futures::Stream<Item = Result<Frame, ssepush::client::origin::ClientError>>,
    n: usize,
) -> Vec<Event> {
    let mut conn = std::pin::pin!(conn);
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while got.len() < n {
            match conn.next().await {
                Some(Ok(Frame::Item(Item::Event(e)))) => got.push(e),
                Some(Ok(Frame::Item(Item::Reset { .. }))) => panic!("unexpected reset"),
                Some(Ok(Frame::Retry(_) | Frame::LastEventId(_))) => {}
                Some(Err(e)) => panic!("sse error: {e}"),
                None => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("got {} of {n} events: {got:?}", got.len()));
    got
}

async fn scenario(settings: Settings) {
    let origin = TestOrigin::start(with_streams(settings)).await;
    let client = &origin.client;
    let sub = Subscription {
        channels: vec!["streams.alerts-eu".into()],
        ..Default::default()
    };
    let start = client
        .publish_one("chat.start", None, json!(null))
        .await
        .unwrap();
    // A live subscriber, registered before anything is published.
    let live = client.connect(&sub, None).await.unwrap();

    // Publish in batches of 4 and one by one, so derivation inside a batch is covered too.
    let mix = mix();
    let mut published: Vec<(EventId, String, &'static str, Value)> = Vec::new();
    for chunk in mix.chunks(4).take(5) {
        let body: Vec<Value> = chunk
            .iter()
            .map(|(c, k, d)| json!({"channel": c, "type": k, "data": d}))
            .collect();
        let ids = client.publish(&Value::Array(body)).await.unwrap();
        assert_eq!(
            ids.len(),
            chunk.len(),
            "publish returns only the originals' ids"
        );
        for (id, (c, k, d)) in ids.into_iter().zip(chunk) {
            published.push((id, c.clone(), k, d.clone()));
        }
    }
    for (c, k, d) in &mix[20..] {
        let id = client.publish_one(c, Some(k), d.clone()).await.unwrap();
        published.push((id, c.clone(), k, d.clone()));
    }
    let expected: Vec<&(EventId, String, &str, Value)> = published
        .iter()
        .filter(|(_, c, _, d)| alerts_eu(c, d))
        .collect();
    assert!(expected.len() >= 5, "the mix must select something");

    let check = |got: &[Event], want: &[&(EventId, String, &str, Value)]| {
        let got_data: Vec<&Value> = got.iter().map(|e| &e.data).collect();
        let want_data: Vec<&Value> = want.iter().map(|(_, _, _, d)| d).collect();
        assert_eq!(got_data, want_data, "exactly the matching events, in order");
        for (e, (src_id, _, kind, _)) in got.iter().zip(want) {
            assert_eq!(e.channel, "streams.alerts-eu");
            assert_eq!(e.kind, *kind, "the derived event keeps its type");
            // Appended in the same batch, right after the original: before the next original.
            assert!(e.id > *src_id, "derived {} after source {src_id}", e.id);
            let next = published.iter().find(|(id, ..)| id > src_id);
            if let Some((next, ..)) = next {
                assert!(
                    e.id < *next,
                    "derived {} before the next original {next}",
                    e.id
                );
            }
        }
    };

    let got = read_events(live, expected.len()).await;
    check(&got, &expected);

    // History from before everything: the same sequence.
    let from_start = read_events(
        client.connect(&sub, Some(start)).await.unwrap(),
        expected.len(),
    )
    .await;
    assert_eq!(from_start, got);

    // Resume from the middle with Last-Event-ID: exactly the rest, then live events.
    let mid = got.len() / 2;
    let resumed = client.connect(&sub, Some(got[mid - 1].id)).await.unwrap();
    let more = client
        .publish_one(
            "sensors.eu.temp",
            None,
            json!({"severity": 9, "region": "eu", "n": 99}),
        )
        .await
        .unwrap();
    let rest = read_events(resumed, got.len() - mid + 1).await;
    assert_eq!(&rest[..got.len() - mid], &got[mid..]);
    assert_eq!(rest.last().unwrap().data["n"], 99);
    assert!(rest.last().unwrap().id > more);

    // The second stream got its own copies (one event may feed several streams).
    let eu_ops: Vec<&Value> = published
        .iter()
        .filter(|(_, c, _, d)| {
            (c.starts_with("ops.") || c.starts_with("sensors.eu."))
                && d["severity"].as_i64().unwrap() >= 3
                && d["region"] == "eu"
        })
        .map(|(.., d)| d)
        .collect();
    let ops_sub = Subscription {
        channels: vec!["streams.eu-ops".into()],
        ..Default::default()
    };
    let ops = read_events(
        client.connect(&ops_sub, Some(start)).await.unwrap(),
        eu_ops.len(),
    )
    .await;
    assert_eq!(ops.iter().map(|e| &e.data).collect::<Vec<_>>(), eu_ops);

    // The source channels are untouched: a subscriber of `sensors.>` sees no stream events.
    let sensors = published
        .iter()
        .filter(|(_, c, ..)| c.starts_with("sensors."))
        .count();
    let src = read_events(
        client
            .connect(
                &Subscription {
                    channels: vec!["sensors.>".into()],
                    ..Default::default()
                },
                Some(start),
            )
            .await
            .unwrap(),
        sensors,
    )
    .await;
    assert!(src.iter().all(|e| e.channel.starts_with("sensors.")));

    refuses_direct_publish(&origin).await;
    origin.stop().await;
}

async fn refuses_direct_publish(origin: &TestOrigin) {
    let http = crate::support::http();
    let url = format!("{}/v1/events", origin.url);
    for body in [
        json!({"channel": "streams.alerts-eu", "data": {"severity": 9, "region": "eu"}}),
        json!({"channel": "streams.x", "data": 1}),
        // One reserved event refuses the whole batch: nothing of it is stored.
        json!([{"channel": "chat.ok", "data": 1}, {"channel": "streams.x.y", "data": 2}]),
    ] {
        let resp = http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "reserved_channel", "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("reserved"),
            "{err}"
        );
    }
    // The refused batch's good half was not stored either.
    let before = origin
        .client
        .publish_one("chat.ok", None, json!(0))
        .await
        .unwrap();
    let history = crate::support::take_items(
        &origin.client,
        &Subscription {
            channels: vec!["chat.ok".into()],
            last_event_id: Some(
                EventId::new(before.ms.saturating_sub(60_000), 0).in_epoch(before.epoch),
            ),
            ..Default::default()
        },
        1,
        Duration::from_secs(5),
    )
    .await;
    match &history[0] {
        Item::Event(e) => assert_eq!(e.id, before, "only the later event is on chat.ok"),
        other => panic!("{other:?}"),
    }
    // `streams` itself and look-alikes are ordinary channels.
    origin
        .client
        .publish_one("streams", None, json!(1))
        .await
        .unwrap();
    origin
        .client
        .publish_one("streamsx.a", None, json!(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn static_streams_on_memory() {
    scenario(crate::support::memory_settings()).await;
}

#[tokio::test]
async fn static_streams_on_redis() {
    scenario(crate::support::redis_settings(&crate::support::namespace(
        "static-streams",
    )))
    .await;
}

#[tokio::test]
async fn a_bad_stream_filter_is_a_startup_error_with_its_position() {
    let mut settings = crate::support::memory_settings();
    settings.streams = vec![StreamDef {
        name: "broken".into(),
        channels: vec!["a.>".into()],
        filter: Some("data.severity >= ".into()),
    }];
    let err = settings.validate().unwrap_err().to_string();
    assert!(
        err.contains("broken") && err.contains("line 1, column"),
        "{err}"
    );

    // The server refuses to start with it, instead of running without the stream.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = ssepush_origin::server::run(listener, settings, std::future::pending());
    let res = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("run returned");
    assert!(res.is_err());

    let mut bad_name = crate::support::memory_settings();
    bad_name.streams = vec![StreamDef {
        name: "a.b".into(),
        channels: vec!["x".into()],
        filter: None,
    }];
    assert!(bad_name.validate().is_err());
}

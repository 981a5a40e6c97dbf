//! Exact resume: a client that drops and reconnects with `Last-Event-ID` at random points gets
//! exactly the published sequence for its patterns — in order, nothing missing, nothing twice —
//! on the memory store, on Redis, and across an origin restart on Redis.

use std::time::Duration;

use crate::support::TestOrigin;
use futures::StreamExt;
use rand::Rng;
use serde_json::json;
use ssepush::client::origin::{Frame, Item, OriginClient, Subscription};
use ssepush_origin::EventId;
use ssepush_origin::settings::Settings;

const TOTAL: usize = 1000;
const CHANNELS: [&str; 3] = ["chat.a", "chat.b", "news.x"];

/// Reads from one connection until it has `n` events or the stream ends; returns what it got.
async fn read_some(
    client: &OriginClient,
    sub: &Subscription,
    last: Option<EventId>,
    n: usize,
    idle: Duration,
) -> Result<Vec<ssepush_origin::Event>, String> {
    let conn = client.connect(sub, last).await.map_err(|e| e.to_string())?;
    let mut conn = std::pin::pin!(conn);
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(idle, conn.next()).await {
            Ok(Some(Ok(Frame::Item(Item::Event(e))))) => got.push(e),
            Ok(Some(Ok(Frame::Item(Item::Reset { .. })))) => return Err("unexpected reset".into()),
            Ok(Some(Ok(Frame::Retry(_) | Frame::LastEventId(_)))) => {}
            // The connection ended (e.g. a restart): return what we have, the caller resumes.
            Ok(Some(Err(_))) | Ok(None) => break,
            Err(_) => break,
        }
    }
    Ok(got)
}

async fn scenario(settings: Settings, restart: bool) {
    let mut origin = TestOrigin::start(settings.clone()).await;
    let addr = origin.addr;
    let client = OriginClient::new(&origin.url);
    let sub = Subscription {
        channels: vec!["chat.*".into()],
        ..Default::default()
    };

    // The subscriber's first connection exists before anything is published, so from then on
    // every `chat.*` event is owed to it. It resumes from the cursor it was handed.
    let start = client
        .publish_one("chat.a", Some("start"), json!({"n": -1}))
        .await
        .unwrap();

    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut published: Vec<(EventId, String)> = Vec::new();
            let mut i = 0usize;
            while i < TOTAL {
                let size = rand::rng().random_range(1..=10usize).min(TOTAL - i);
                let batch: Vec<_> = (0..size)
                    .map(|k| {
                        let ch = CHANNELS[rand::rng().random_range(0..CHANNELS.len())];
                        json!({"channel": ch, "data": {"n": i + k}})
                    })
                    .collect();
                let channels: Vec<String> = batch
                    .iter()
                    .map(|b| b["channel"].as_str().unwrap().to_owned())
                    .collect();
                // While the origin restarts, publishing fails: retry the same batch.
                let ids = loop {
                    match client.publish(&json!(batch)).await {
                        Ok(ids) => break ids,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
                published.extend(ids.into_iter().zip(channels));
                i += batch.len();
                let pause = rand::rng().random_range(2..15);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            published
        })
    };

    let mut received: Vec<ssepush_origin::Event> = Vec::new();
    let mut cursor = start;
    let mut reconnects = 0;
    let mut restarted = !restart;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let take = rand::rng().random_range(1..60);
        match read_some(&client, &sub, Some(cursor), take, Duration::from_secs(5)).await {
            Ok(got) => {
                if let Some(last) = got.last() {
                    cursor = last.id;
                }
                received.extend(got);
            }
            Err(e) if e.contains("reset") => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        reconnects += 1;
        if !restarted && received.len() > 200 {
            // Restart the origin on the same address and store while the publisher is running.
            origin.stop().await;
            origin = TestOrigin::start_on(addr, settings.clone()).await;
            restarted = true;
        }
        if publisher.is_finished() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "scenario took too long"
        );
    }
    let published = publisher.await.unwrap();
    // Drain what is left after the publisher finished.
    loop {
        let got = read_some(
            &client,
            &sub,
            Some(cursor),
            usize::MAX,
            Duration::from_millis(500),
        )
        .await
        .unwrap_or_default();
        if got.is_empty() {
            break;
        }
        cursor = got.last().unwrap().id;
        received.extend(got);
    }
    let expected: Vec<EventId> = published
        .iter()
        .filter(|(_, ch)| ch.starts_with("chat."))
        .map(|(id, _)| *id)
        .collect();
    let got: Vec<EventId> = received.iter().map(|e| e.id).collect();
    assert!(
        expected.len() > 500,
        "too few chat events: {}",
        expected.len()
    );
    assert!(
        reconnects > 10,
        "the client should have reconnected many times ({reconnects})"
    );
    assert_eq!(
        got.len(),
        expected.len(),
        "received count differs (lost or duplicated events)"
    );
    assert_eq!(
        got, expected,
        "received sequence differs from the published one"
    );
    assert!(received.iter().all(|e| e.channel.starts_with("chat.")));
    assert!(restarted, "the origin should have been restarted mid-way");
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_exact_on_memory() {
    scenario(crate::support::memory_settings(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_exact_on_redis() {
    scenario(
        crate::support::redis_settings(&crate::support::namespace("resume")),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_exact_across_a_restart_on_redis() {
    scenario(
        crate::support::redis_settings(&crate::support::namespace("restart")),
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_continue_after_a_restart_on_redis() {
    let settings = crate::support::redis_settings(&crate::support::namespace("ids"));
    let origin = TestOrigin::start(settings.clone()).await;
    let before = origin
        .client
        .publish_one("a", None, json!(1))
        .await
        .unwrap();
    origin.stop().await;
    let origin = TestOrigin::start(settings).await;
    let after = origin
        .client
        .publish_one("b", None, json!(2))
        .await
        .unwrap();
    assert!(after > before, "{after} should be after {before}");
    let items = crate::support::take_items(
        &origin.client,
        &Subscription {
            channels: vec![">".into()],
            last_event_id: Some(EventId::ZERO),
            ..Default::default()
        },
        2,
        Duration::from_secs(5),
    )
    .await;
    let ids: Vec<_> = items
        .iter()
        .map(|i| match i {
            Item::Event(e) => e.id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![before, after]);
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_origins_on_one_redis_serve_one_stream() {
    let settings = crate::support::redis_settings(&crate::support::namespace("two"));
    let a = TestOrigin::start(settings.clone()).await;
    let b = TestOrigin::start(settings).await;
    let sub = Subscription {
        channels: vec!["x.>".into()],
        ..Default::default()
    };
    // A live subscriber on B sees events published on A and on B, in id order.
    let mut conn = crate::support::subscribed(&b.client, &sub).await;
    let reader = tokio::spawn(async move {
        crate::support::read_items(&mut conn, 40, Duration::from_secs(10)).await
    });
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(a.client.publish_one("x.a", None, json!(i)).await.unwrap());
        ids.push(b.client.publish_one("x.b", None, json!(i)).await.unwrap());
    }
    let got: Vec<EventId> = reader
        .await
        .unwrap()
        .into_iter()
        .map(|i| match i {
            Item::Event(e) => e.id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, ids);
    a.stop().await;
    b.stop().await;
}

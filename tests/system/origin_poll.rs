//! `GET /v1/poll` from the outside, on memory and on Redis: an answer at once when history
//! has events, a wait that a live event ends, an empty answer at the timeout, a cursor that
//! continues across many polls without gap or duplicate while events are being published,
//! resets, shutdown, and 400s for bad parameters.

use std::time::Duration;

use crate::support::TestOrigin;
use rand::Rng;
use serde_json::{Value, json};
use ssepush_origin::EventId;
use ssepush_origin::settings::{ChannelRetention, Settings};

/// One poll; the HTTP client gives up after 60 s so a wait that never ends fails the test.
async fn poll(origin: &TestOrigin, query: &str) -> (u16, Value) {
    let resp = crate::support::http()
        .get(format!("{}/v1/poll?{query}", origin.url))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("poll request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

fn ids(v: &Value) -> Vec<EventId> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

fn cursor(v: &Value) -> EventId {
    v["lastEventId"].as_str().unwrap().parse().unwrap()
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

async fn history_live_and_timeout(settings: Settings) {
    let origin = TestOrigin::start(settings).await;
    let c = &origin.client;
    let a1 = c.publish_one("a.x", None, json!({"n": 1})).await.unwrap();
    let a2 = c
        .publish_one("a.y", Some("t"), json!({"n": 2}))
        .await
        .unwrap();
    let b = c.publish_one("b", None, json!({"n": 3})).await.unwrap();

    // History: answered at once (the 30 s default wait is not used), cursor at the newest id.
    let (status, v) = poll(&origin, &format!("channel=a.*&after={a1}")).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&v), vec![a2]);
    assert_eq!(
        v["events"][0],
        json!({"id": a2.to_string(), "channel": "a.y", "type": "t", "data": {"n": 2}, "time": a2.ms})
    );
    assert_eq!(
        cursor(&v),
        b,
        "the cursor passes the non-matching event on b"
    );
    assert!(v.get("reset").is_none());

    // A filter that rejects everything: the cursor still advances over what was scanned.
    let (_, v) = poll(
        &origin,
        "channel=a.*&after=0-0&filter=data.n%20%3E%2010&timeout=0",
    )
    .await;
    assert_eq!(ids(&v), vec![]);
    assert_eq!(cursor(&v), b);

    // Nothing new: an empty answer at the timeout, the cursor where it was.
    let (status, v) = poll(&origin, &format!("channel=a.*&after={b}&timeout=0.3")).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&v), vec![]);
    assert_eq!(cursor(&v), b);

    // Waiting: a live event ends the wait (published once the poll is likely waiting; if it
    // is not yet, the event is history to it, and the answer is the same).
    let waiter = {
        let url = origin.url.clone();
        tokio::spawn(async move {
            crate::support::http()
                .get(format!("{url}/v1/poll?channel=a.*&after={b}&timeout=30"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live = c.publish_one("a.z", None, json!({"n": 4})).await.unwrap();
    let v = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the wait ended")
        .unwrap();
    assert_eq!(ids(&v), vec![live]);
    assert_eq!(cursor(&v), live);

    // Without a cursor: only events newer than the request. Publish until the wait ends (we
    // cannot see from outside when the poll has registered); it returns one of them.
    let mut waiter = {
        let url = origin.url.clone();
        tokio::spawn(async move {
            crate::support::get(format!("{url}/v1/poll?channel=a.*&timeout=30"))
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let mut sent = Vec::new();
    let v = loop {
        tokio::select! {
            v = &mut waiter => break v.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                sent.push(c.publish_one("a.x", None, json!({"n": 5})).await.unwrap());
                assert!(sent.len() < 100, "the poll never answered");
            }
        }
    };
    let got = ids(&v);
    assert!(
        !got.is_empty() && got.iter().all(|id| sent.contains(id) && *id > live),
        "{v}"
    );
    assert_eq!(cursor(&v), *got.last().unwrap());
    let newest = *sent.last().unwrap();
    let (_, v) = poll(&origin, "channel=a.*&timeout=0").await;
    assert_eq!(ids(&v), vec![]);
    assert!(
        cursor(&v) >= newest,
        "without a cursor the answer's cursor is 'now'"
    );
    origin.stop().await;
}
on_both_stores!(history_live_and_timeout_on, history_live_and_timeout);

async fn many_polls_continue_without_gap_or_duplicate(settings: Settings) {
    let origin = TestOrigin::start(settings).await;
    let start = origin
        .client
        .publish_one("a.start", None, json!({"n": -1}))
        .await
        .unwrap();
    const TOTAL: usize = 400;
    let publisher = {
        let client = origin.client.clone();
        tokio::spawn(async move {
            let mut published: Vec<(EventId, String, i64)> = Vec::new();
            let mut n = 0i64;
            while (n as usize) < TOTAL {
                let size = rand::rng().random_range(1..=8usize).min(TOTAL - n as usize);
                let batch: Vec<Value> = (0..size as i64)
                    .map(|k| {
                        let ch = ["a.x", "a.y", "b"][rand::rng().random_range(0..3)];
                        json!({"channel": ch, "data": {"n": n + k}})
                    })
                    .collect();
                let got = client.publish(&json!(batch)).await.unwrap();
                for (id, item) in got.into_iter().zip(&batch) {
                    published.push((
                        id,
                        item["channel"].as_str().unwrap().to_owned(),
                        item["data"]["n"].as_i64().unwrap(),
                    ));
                }
                n += size as i64;
                let pause = rand::rng().random_range(1..8);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            published
        })
    };
    let mut received: Vec<EventId> = Vec::new();
    let mut after = start;
    let mut polls = 0;
    let filter = "data.n%20%25%205%20!%3D%200"; // data.n % 5 != 0
    loop {
        // Read before polling: an empty answer after the publisher finished means caught up.
        let done = publisher.is_finished();
        let limit = rand::rng().random_range(1..20);
        let (status, v) = poll(
            &origin,
            &format!("channel=a.*&filter={filter}&after={after}&limit={limit}&timeout=0.5"),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert!(v.get("reset").is_none(), "{v}");
        let got = ids(&v);
        assert!(got.len() <= limit);
        let next = cursor(&v);
        assert!(next >= after, "the cursor never goes back");
        if let Some(last) = got.last() {
            assert!(
                next == *last || got.len() < limit,
                "a full answer stops at its last event"
            );
        }
        received.extend(got.iter().copied());
        after = next;
        polls += 1;
        if done && got.is_empty() {
            break;
        }
        assert!(polls < 5000, "too many polls");
    }
    let published = publisher.await.unwrap();
    let expected: Vec<EventId> = published
        .iter()
        .filter(|(_, ch, n)| ch.starts_with("a.") && n % 5 != 0)
        .map(|(id, _, _)| *id)
        .collect();
    assert!(polls > 20, "polled only {polls} times");
    assert_eq!(received.len(), expected.len(), "lost or duplicated events");
    assert_eq!(received, expected);
    origin.stop().await;
}
on_both_stores!(many_polls_on, many_polls_continue_without_gap_or_duplicate);

async fn a_stale_cursor_gets_a_reset_with_the_retained_events(settings: Settings) {
    let mut settings = settings;
    settings.retention.channels.push(ChannelRetention {
        pattern: "small".into(),
        max_events: Some(3),
        max_age_secs: None,
        max_bytes: None,
    });
    let origin = TestOrigin::start(settings).await;
    let mut ids_ = Vec::new();
    for n in 0..8 {
        ids_.push(
            origin
                .client
                .publish_one("small", None, json!({"n": n}))
                .await
                .unwrap(),
        );
    }
    let (status, v) = poll(&origin, &format!("channel=small&after={}", ids_[1])).await;
    assert_eq!(status, 200);
    assert_eq!(v["reset"]["oldestId"], ids_[5].to_string(), "{v}");
    assert_eq!(ids(&v), ids_[5..].to_vec());
    assert_eq!(cursor(&v), ids_[7]);
    origin.stop().await;
}
on_both_stores!(
    reset_on,
    a_stale_cursor_gets_a_reset_with_the_retained_events
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_waiting_poll() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    let waiter = {
        let url = origin.url.clone();
        tokio::spawn(async move {
            crate::support::get(format!("{url}/v1/poll?channel=a&timeout=120")).await
        })
    };
    // Give the request time to reach the server (a poll that has not subscribed yet when the
    // drain starts answers at once, which is fine too).
    tokio::time::sleep(Duration::from_millis(500)).await;
    origin.stop().await;
    let resp = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the poll ended")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["events"], json!([]));
}

#[tokio::test]
async fn bad_parameters_are_400_with_json_errors() {
    let origin = TestOrigin::start(crate::support::memory_settings()).await;
    for (query, code) in [
        ("", "missing_channel"),
        ("channel=a.>.b", "invalid_channel"),
        ("channel=a&after=yesterday", "invalid_event_id"),
        ("channel=a&timeout=-1", "invalid_timeout"),
        ("channel=a&timeout=121", "invalid_timeout"),
        ("channel=a&timeout=later", "invalid_timeout"),
        ("channel=a&limit=0", "invalid_limit"),
        ("channel=a&limit=5000", "invalid_limit"),
        ("channel=a&filter=data.x%20%3E", "invalid_filter"),
    ] {
        let (status, v) = poll(&origin, query).await;
        assert_eq!(status, 400, "{query}: {v}");
        assert_eq!(v["error"]["code"], code, "{query}: {v}");
        if code == "invalid_filter" {
            assert_eq!(v["error"]["line"], 1, "{v}");
            assert!(v["error"]["column"].as_u64().is_some(), "{v}");
        }
    }
    origin.stop().await;
}

//! Several origin nodes on one store (issue 10): two origins on one namespace, on one Redis and
//! on a real three-master Redis Cluster (`redis+cluster://…`). Publishers write concurrently to
//! both; live subscribers on each node see one and the same id order, holding exactly what was
//! published; a client that read part of the stream on one node and resumes on the other with
//! its `Last-Event-ID` gets exactly the rest.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use ssepush::client::origin::{Item, Subscription};
use ssepush_origin::EventId;

use crate::support::redis_cluster::RedisCluster;
use crate::support::{TestOrigin, namespace, read_items, redis_settings, subscribed};

const PER_NODE: usize = 60;
const WITHIN: Duration = Duration::from_secs(20);

fn ids(items: Vec<Item>) -> Vec<EventId> {
    items
        .into_iter()
        .map(|i| match i {
            Item::Event(e) => e.id,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

async fn publish_on_a_resume_on_b(store: String, test: &str) {
    let settings = ssepush_origin::settings::Settings {
        store,
        ..redis_settings(&namespace(test))
    };
    let a = TestOrigin::start(settings.clone()).await;
    let b = TestOrigin::start(settings).await;
    let sub = Subscription {
        channels: vec!["n.>".into()],
        ..Default::default()
    };
    let total = 2 * PER_NODE;

    // Live subscribers on both nodes, registered before anything is published.
    let mut on_a = subscribed(&a.client, &sub).await;
    let mut on_b = subscribed(&b.client, &sub).await;
    let read_a = tokio::spawn(async move { ids(read_items(&mut on_a, total, WITHIN).await) });
    let read_b = tokio::spawn(async move { ids(read_items(&mut on_b, total, WITHIN).await) });

    // Both nodes publish at once: the store alone decides the order.
    let publish = |client: ssepush::client::origin::OriginClient, channel: &'static str| {
        tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..PER_NODE {
                out.push(client.publish_one(channel, None, json!(i)).await.unwrap());
            }
            out
        })
    };
    let pa = publish(a.client.clone(), "n.a");
    let pb = publish(b.client.clone(), "n.b");
    let mut published: BTreeSet<EventId> = pa.await.unwrap().into_iter().collect();
    published.extend(pb.await.unwrap());
    assert_eq!(published.len(), total, "every publish got its own id");

    let seen_a = read_a.await.unwrap();
    let seen_b = read_b.await.unwrap();
    // One order: both nodes deliver the same sequence, strictly increasing, exactly the
    // published events.
    assert_eq!(seen_a, seen_b, "the two nodes disagree on the order");
    assert!(seen_b.windows(2).all(|w| w[0] < w[1]), "ids not increasing");
    assert_eq!(
        seen_b.iter().copied().collect::<BTreeSet<_>>(),
        published,
        "the stream is not exactly what was published"
    );

    // Exact resume across nodes, both ways: read a part on one, the rest on the other.
    for (first, second, cut) in [(&a, &b, 37), (&b, &a, 81)] {
        let from_start = Subscription {
            last_event_id: Some(EventId::ZERO),
            ..sub.clone()
        };
        let mut conn = subscribed(&first.client, &from_start).await;
        let part = ids(read_items(&mut conn, cut, WITHIN).await);
        drop(conn);
        let resumed = Subscription {
            last_event_id: part.last().copied(),
            ..sub.clone()
        };
        let mut conn = subscribed(&second.client, &resumed).await;
        let rest = ids(read_items(&mut conn, total - cut, WITHIN).await);
        let mut whole = part;
        whole.extend(rest);
        assert_eq!(whole, seen_b, "resume after event {cut} on the other node");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_a_resume_on_b_on_one_redis() {
    publish_on_a_resume_on_b(crate::support::redis_url(), "nodes-redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_a_resume_on_b_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    publish_on_a_resume_on_b(cluster.url(), "nodes-cluster").await;
    // The namespace's log keys are all on one master (one hash tag, one slot).
    let counts = cluster.key_counts("ssepush:{t-nodes-cluster*").await;
    assert_eq!(
        counts.iter().filter(|&&n| n > 0).count(),
        1,
        "log keys per master: {counts:?}"
    );
}

/// The origin's other stores on a cluster too: a dataset written on A reads back on B (and its
/// change event reaches B's subscribers), and a webhook registered on A is delivered, signed,
/// by one of the two nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_and_webhooks_work_on_a_redis_cluster() {
    use crate::support::webhooks::{Rx, fast, publish, register, wait_for_ids};
    let cluster = RedisCluster::start().await;
    let settings = fast(ssepush_origin::settings::Settings {
        store: cluster.url(),
        ..redis_settings(&namespace("nodes-cluster-ds"))
    });
    let a = TestOrigin::start(settings.clone()).await;
    let b = TestOrigin::start(settings).await;
    let http = crate::support::http();

    for (key, n) in [("k1", 1), ("k2", 2)] {
        let resp = http
            .put(format!("{}/v1/datasets/prefs/{key}", a.url))
            .json(&json!({"n": n}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    let snapshot: serde_json::Value = http
        .get(format!("{}/v1/datasets/prefs", b.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot["version"], 2, "{snapshot}");
    assert_eq!(snapshot["entries"]["k2"]["value"]["n"], 2, "{snapshot}");

    let rx = Rx::start().await;
    register(&a, &rx, json!({"url": rx.url, "channels": ["orders.>"]})).await;
    let mut want = Vec::new();
    for i in 0..10 {
        let on = if i % 2 == 0 { &a } else { &b };
        want.push(publish(on, "orders.eu", json!({"n": i})).await);
    }
    wait_for_ids(&rx, &want, WITHIN).await;
    a.stop().await;
    b.stop().await;
}

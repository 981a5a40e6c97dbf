//! The handoff store contract: the same checks on the memory store and on Redis (the local
//! Redis, `SSEPUSH_TEST_REDIS`, each run in its own namespace) — records, fencing, leases,
//! takeovers of a dead node, release and claim — and, on Redis, that no secret is in the raw
//! keys.

use std::sync::Arc;
use std::time::Duration;

use ssepush_proxy::protocol::{HandoffState, PushTarget, WakeMode};
use ssepush_proxy::store::redis::RedisStore;
use ssepush_proxy::store::{Fence, HandoffRecord, HandoffStore, MemoryStore, Sealer, StoreError};

fn record(id: &str) -> HandoffRecord {
    HandoffRecord {
        id: id.into(),
        token_sha256: "00".repeat(32),
        stream_url: "http://127.0.0.1:8080/v1/sse?channel=a&token=url-secret-1".into(),
        stream_headers: vec![("authorization".into(), "Bearer header-secret-2".into())],
        push: PushTarget::Fcm {
            token: "fcm-device-secret-3".into(),
        },
        wake_filter: Some("data.x > 1".into()),
        coalesce_ms: 0,
        max_per_hour: 3,
        mode: WakeMode::Background,
        state: HandoffState::Watching,
        failed_reason: None,
        cursor: None,
        newest_id: None,
        pending: 0,
        wakes_sent: 0,
        last_wake: None,
        last_error: None,
        created_at_ms: 1,
        expires_at_ms: u64::MAX / 2,
        finished_at_ms: None,
        wake_outstanding: true,
        wake_times_ms: vec![5, 6],
    }
}

fn redis_url() -> String {
    std::env::var("SSEPUSH_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn namespace(test: &str) -> String {
    format!("t-{test}-{:016x}", rand::random::<u64>())
}

fn sealer() -> Sealer {
    Sealer::from_settings(&["k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into()]).unwrap()
}

async fn redis_store(test: &str) -> Arc<RedisStore> {
    Arc::new(
        RedisStore::connect(&redis_url(), &namespace(test), sealer())
            .await
            .expect("Redis on 127.0.0.1:6379 (cargo xtask test starts it)"),
    )
}

async fn records_and_fencing(s: &dyn HandoffStore) {
    let f1 = s.insert(record("h_a"), "n1").await.unwrap();
    assert_eq!(f1.epoch, 1);
    assert!(matches!(
        s.insert(record("h_a"), "n1").await,
        Err(StoreError::Exists(_))
    ));
    let got = s.get("h_a").await.unwrap().unwrap();
    assert_eq!(got.owner.as_deref(), Some("n1"));
    // The whole record comes back as it went in (sealed secrets included).
    assert_eq!(
        serde_json::to_value(&got.rec).unwrap(),
        serde_json::to_value(record("h_a")).unwrap()
    );
    assert_eq!(got.rec.stream_headers, record("h_a").stream_headers);
    assert_eq!(got.rec.stream_url, record("h_a").stream_url);
    assert!(got.rec.wake_outstanding);
    assert_eq!(got.rec.wake_times_ms, vec![5, 6]);
    s.fence("h_a", &f1).await.unwrap();
    // Another node, or an old epoch, is fenced out of every write and wake.
    let other = Fence {
        node: "n2".into(),
        epoch: 1,
    };
    assert!(matches!(
        s.put(record("h_a"), &other).await,
        Err(StoreError::Fenced(_))
    ));
    assert!(matches!(
        s.fence("h_a", &other).await,
        Err(StoreError::Fenced(_))
    ));
    let mut moved = record("h_a");
    moved.pending = 7;
    s.put(moved, &f1).await.unwrap();
    assert_eq!(s.get("h_a").await.unwrap().unwrap().rec.pending, 7);
    assert!(s.get("h_nosuch").await.unwrap().is_none());
    // Finished records go to the sweeper, only when the write lands: a fenced-out node's
    // final record is neither written nor handed to the sweeper.
    let f2 = s.insert(record("h_b"), "n1").await.unwrap();
    let mut done = record("h_b");
    done.state = HandoffState::Closed;
    done.finished_at_ms = Some(10);
    assert!(matches!(
        s.put(done.clone(), &other).await,
        Err(StoreError::Fenced(_))
    ));
    assert!(s.finished_before(11).await.unwrap().is_empty());
    assert_eq!(
        s.get("h_b").await.unwrap().unwrap().rec.state,
        HandoffState::Watching
    );
    s.put(done, &f2).await.unwrap();
    assert_eq!(
        s.finished_before(11).await.unwrap(),
        vec!["h_b".to_string()]
    );
    assert!(s.finished_before(10).await.unwrap().is_empty());
    assert_eq!(s.count().await.unwrap(), 2);
    s.remove("h_b").await.unwrap();
    assert_eq!(s.count().await.unwrap(), 1);
    assert!(s.get("h_b").await.unwrap().is_none());
    // A push target keeps its newest handoffs: an older one is replaced, its writes still land
    // but answer so, and it may not wake.
    assert!(s.claim_target("t1", "h_a", 1).await.unwrap().is_empty());
    let f3 = s.insert(record("h_c"), "n1").await.unwrap();
    assert_eq!(
        s.claim_target("t1", "h_c", 1).await.unwrap(),
        vec!["h_a".to_string()]
    );
    assert!(matches!(
        s.fence("h_a", &f1).await,
        Err(StoreError::Replaced(_))
    ));
    let mut last = record("h_a");
    last.pending = 9;
    assert!(matches!(
        s.put(last, &f1).await,
        Err(StoreError::Replaced(_))
    ));
    assert_eq!(s.get("h_a").await.unwrap().unwrap().rec.pending, 9);
    s.fence("h_c", &f3).await.unwrap();
    // With room for two, nothing is replaced.
    assert!(s.claim_target("t2", "h_c", 2).await.unwrap().is_empty());
    assert!(s.claim_target("t2", "h_d", 2).await.unwrap().is_empty());
}

async fn leases_takeover_and_release(s: &dyn HandoffStore) {
    let ttl = Duration::from_millis(400);
    assert!(s.heartbeat("n1", "http://n1", ttl, true).await.unwrap());
    assert!(s.heartbeat("n2", "http://n2", ttl, true).await.unwrap());
    let mut fences = Vec::new();
    for i in 0..10 {
        fences.push(s.insert(record(&format!("h_{i}")), "n1").await.unwrap());
    }
    // n1 is alive: nothing of it can be claimed.
    assert!(s.claim_dead("n1", "n2", 100).await.unwrap().is_empty());
    let view = s.fleet().await.unwrap();
    let n1 = view.nodes.iter().find(|n| n.node == "n1").unwrap();
    assert_eq!((n1.holds, n1.addr.as_str()), (10, "http://n1"));
    assert!(n1.expires_in_ms > 0);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(s.heartbeat("n2", "http://n2", ttl, false).await.unwrap());
    }
    // n1's lease ran out: it can never renew it, and n2 takes every handoff, each once.
    assert!(!s.heartbeat("n1", "http://n1", ttl, false).await.unwrap());
    let view = s.fleet().await.unwrap();
    assert!(
        view.nodes
            .iter()
            .find(|n| n.node == "n1")
            .unwrap()
            .expires_in_ms
            < 0
    );
    let first = s.claim_dead("n1", "n2", 4).await.unwrap();
    assert_eq!(first.len(), 4);
    let rest = s.claim_dead("n1", "n2", 100).await.unwrap();
    assert_eq!(rest.len(), 6);
    for o in first.iter().chain(&rest) {
        assert_eq!(o.owner.as_deref(), Some("n2"));
        assert_eq!(o.epoch, 2);
        assert_eq!(o.rec.stream_headers, record("x").stream_headers);
    }
    // The old owner is fenced out of everything; the dead node is forgotten once empty.
    for (i, f) in fences.iter().enumerate() {
        let id = format!("h_{i}");
        assert!(matches!(s.fence(&id, f).await, Err(StoreError::Fenced(_))));
        assert!(matches!(
            s.put(record(&id), f).await,
            Err(StoreError::Fenced(_))
        ));
    }
    assert!(s.claim_dead("n1", "n2", 100).await.unwrap().is_empty());
    let view = s.fleet().await.unwrap();
    assert!(view.nodes.iter().all(|n| n.node != "n1"), "{view:?}");
    assert_eq!(s.owned("n2").await.unwrap().len(), 10);
    // Release: n2 gives three up; n3 claims them at the next epoch.
    let mut released = Vec::new();
    for o in first.iter().take(3) {
        let f = o.fence().unwrap();
        s.release(o.rec.clone(), &f).await.unwrap();
        assert!(matches!(
            s.fence(&o.rec.id, &f).await,
            Err(StoreError::Fenced(_))
        ));
        released.push(o.rec.id.clone());
    }
    assert_eq!(s.fleet().await.unwrap().free, 3);
    assert!(s.heartbeat("n3", "http://n3", ttl, true).await.unwrap());
    let taken = s.claim_free("n3", 100).await.unwrap();
    let mut ids: Vec<String> = taken.iter().map(|o| o.rec.id.clone()).collect();
    ids.sort();
    released.sort();
    assert_eq!(ids, released);
    // The release moved the epoch on, and so did the claim.
    assert!(taken.iter().all(|o| o.epoch == 4));
    assert_eq!(s.fleet().await.unwrap().free, 0);
    assert_eq!(s.owned("n3").await.unwrap().len(), 3);
    assert_eq!(s.owned("n2").await.unwrap().len(), 7);
    s.leave("n3").await.unwrap();
    assert!(
        s.fleet()
            .await
            .unwrap()
            .nodes
            .iter()
            .all(|n| n.node != "n3")
    );
}

#[tokio::test]
async fn memory_store_records_and_fencing() {
    records_and_fencing(&MemoryStore::new(100)).await;
}

#[tokio::test]
async fn memory_store_leases_takeover_and_release() {
    leases_takeover_and_release(&MemoryStore::new(100)).await;
}

#[tokio::test]
async fn redis_store_records_and_fencing() {
    records_and_fencing(&*redis_store("store-records").await).await;
}

#[tokio::test]
async fn redis_store_leases_takeover_and_release() {
    leases_takeover_and_release(&*redis_store("store-leases").await).await;
}

#[tokio::test]
async fn redis_keys_hold_no_plaintext_secret() {
    let ns = namespace("store-sealed");
    let s = RedisStore::connect(&redis_url(), &ns, sealer())
        .await
        .unwrap();
    s.insert(record("h_secret"), "n1").await.unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.len() >= 3, "{keys:?}");
    let mut seen = 0;
    for key in keys {
        // Every field and member, read as text (a DUMP may be compressed).
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let values: Vec<String> = match kind.as_str() {
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "set" => redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            other => panic!("unexpected {other} at {key}"),
        };
        let text = values.join(" ");
        for secret in [
            "url-secret-1",
            "header-secret-2",
            "fcm-device-secret-3",
            "127.0.0.1:8080",
        ] {
            assert!(!text.contains(secret), "{key} holds {secret}");
        }
        seen += 1;
    }
    assert!(seen > 0);
    // Another key cannot open it; the right one can.
    let wrong =
        Sealer::from_settings(&["k1:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=".into()]).unwrap();
    let other = RedisStore::connect(&redis_url(), &ns, wrong).await.unwrap();
    assert!(other.get("h_secret").await.is_err());
    assert!(s.get("h_secret").await.unwrap().is_some());
}

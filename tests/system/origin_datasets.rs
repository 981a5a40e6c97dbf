//! Data sync end to end, on the memory store and on Redis: conditional writes racing, deltas
//! that rebuild a fresh snapshot, 410 for a cursor the changelog no longer covers, the two merge
//! policies, tombstones, the `datasets.<name>` events, and Redis state across a restart.

use std::time::Duration;

use crate::support::{TestOrigin, take_items};
use serde_json::{Value, json};
use ssepush::client::origin::{Item, Subscription};
use ssepush_origin::EventId;
use ssepush_origin::datasets::{Delta, MergePolicy, Snapshot};
use ssepush_origin::settings::Settings;

/// A plain HTTP client for the dataset endpoints.
struct Client {
    http: reqwest::Client,
    base: String,
}

/// Status, JSON body (Null when empty) and ETag of a response.
type Reply = (u16, Value, Option<String>);

impl Client {
    fn new(origin: &TestOrigin) -> Client {
        Client {
            http: crate::support::http(),
            base: origin.url.clone(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("non-JSON body ({e}): {bytes:?}"))
        };
        (status, body, etag)
    }

    async fn put(&self, name: &str, key: &str, value: Value, headers: &[(&str, &str)]) -> Reply {
        let mut req = self
            .http
            .put(format!("{}/v1/datasets/{name}/{key}", self.base))
            .json(&value);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    async fn delete(&self, name: &str, key: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self
            .http
            .delete(format!("{}/v1/datasets/{name}/{key}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    async fn get(&self, name: &str, since: Option<u64>) -> Reply {
        let url = match since {
            Some(v) => format!("{}/v1/datasets/{name}?since={v}", self.base),
            None => format!("{}/v1/datasets/{name}", self.base),
        };
        self.send(self.http.get(url)).await
    }

    async fn snapshot(&self, name: &str) -> Snapshot {
        let (status, body, etag) = self.get(name, None).await;
        assert_eq!(status, 200, "{body}");
        let snap: Snapshot = serde_json::from_value(body).unwrap();
        assert_eq!(etag, Some(format!("\"{}\"", snap.version)));
        snap
    }

    async fn delta(&self, name: &str, since: u64) -> Delta {
        let (status, body, _) = self.get(name, Some(since)).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).unwrap()
    }
}

fn if_match(v: &Value) -> String {
    format!("\"{}\"", v["version"].as_u64().expect("a version"))
}

fn redis(test: &str) -> Settings {
    crate::support::redis_settings(&crate::support::namespace(test))
}

async fn race_delta_and_events(settings: Settings) {
    let origin = TestOrigin::start(settings).await;
    let c = Client::new(&origin);
    let name = "board";

    // Creating needs no precondition, even under `reject`.
    let (status, created, etag) = c.put(name, "doc", json!({"n": 0}), &[]).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created,
        json!({"key": "doc", "version": 1, "value": {"n": 0}})
    );
    assert_eq!(etag.as_deref(), Some("\"1\""));
    c.put(name, "tmp", json!("scratch"), &[]).await;

    // A third client holds this snapshot.
    let old = c.snapshot(name).await;
    assert_eq!(old.version, 2);

    // Two writers race from the same base version: exactly one wins.
    let base = if_match(&created);
    let cond = [("if-match", base.as_str())];
    let (writer_a, writer_b) = (Client::new(&origin), Client::new(&origin));
    let (a, b) = tokio::join!(
        writer_a.put(name, "doc", json!({"by": "A"}), &cond),
        writer_b.put(name, "doc", json!({"by": "B"}), &cond),
    );
    let (won, lost) = match (a.0, b.0) {
        (200, 412) => (a, b),
        (412, 200) => (b, a),
        other => panic!("expected one 200 and one 412, got {other:?}: {a:?} {b:?}"),
    };
    let err = &lost.1["error"];
    assert_eq!(err["code"], "precondition_failed", "{err}");
    // The loser learns what it lost to, so it can merge and retry.
    assert_eq!(err["current"]["value"], won.1["value"], "{err}");
    assert_eq!(err["current"]["version"], won.1["version"], "{err}");
    assert_eq!(won.1["version"], 3);

    // The loser merges and retries against the current version.
    let (status, merged, _) = c
        .put(
            name,
            "doc",
            json!({"by": "A+B"}),
            &[("if-match", &if_match(&err["current"]))],
        )
        .await;
    assert_eq!(status, 200, "{merged}");
    // A delete, a tombstone in the delta.
    let (status, deleted, _) = c.delete(name, "tmp", &[("if-match", "\"2\"")]).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted,
        json!({"key": "tmp", "version": 5, "deleted": true})
    );
    c.put(name, "other", json!([1, 2, 3]), &[]).await;

    // The old snapshot plus the delta is the fresh snapshot.
    let delta = c.delta(name, old.version).await;
    assert_eq!((delta.since, delta.version), (2, 6));
    let tomb = delta
        .changes
        .iter()
        .find(|c| c.key == "tmp")
        .expect("tombstone");
    assert!(tomb.deleted && tomb.value.is_none() && tomb.version == 5);
    assert_eq!(
        delta.changes.len(),
        3,
        "one change per key: {:?}",
        delta.changes
    );
    let mut mirrored = old.clone();
    mirrored.apply(&delta);
    let fresh = c.snapshot(name).await;
    assert_eq!(mirrored, fresh);
    assert_eq!(fresh.entries["doc"].value, json!({"by": "A+B"}));
    assert!(!fresh.entries.contains_key("tmp"));
    // Nothing new since the current version.
    assert!(c.delta(name, fresh.version).await.changes.is_empty());
    // The snapshot's ETag revalidates to 304.
    let resp = c
        .http
        .get(format!("{}/v1/datasets/{name}", c.base))
        .header("if-none-match", format!("\"{}\"", fresh.version))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);

    // Every applied change is an event on datasets.<name>, in version order.
    let sub = Subscription {
        channels: vec![format!("datasets.{name}")],
        last_event_id: Some(EventId::ZERO),
        ..Default::default()
    };
    let items = take_items(&origin.client, &sub, 6, Duration::from_secs(10)).await;
    let seen: Vec<(String, Value)> = items
        .iter()
        .map(|i| match i {
            Item::Event(e) => (e.kind.clone(), e.data.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "dataset.put".into(),
                json!({"key": "doc", "value": {"n": 0}, "version": 1})
            ),
            (
                "dataset.put".into(),
                json!({"key": "tmp", "value": "scratch", "version": 2})
            ),
            (
                "dataset.put".into(),
                json!({"key": "doc", "value": won.1["value"], "version": 3})
            ),
            (
                "dataset.put".into(),
                json!({"key": "doc", "value": {"by": "A+B"}, "version": 4})
            ),
            ("dataset.delete".into(), json!({"key": "tmp", "version": 5})),
            (
                "dataset.put".into(),
                json!({"key": "other", "value": [1, 2, 3], "version": 6})
            ),
        ]
    );
    origin.stop().await;
}

#[tokio::test]
async fn racing_writers_deltas_and_events_memory() {
    race_delta_and_events(crate::support::memory_settings()).await;
}

#[tokio::test]
async fn racing_writers_deltas_and_events_redis() {
    race_delta_and_events(redis("ds-race")).await;
}

async fn too_old_since_is_gone(mut settings: Settings) {
    settings.datasets.changelog_len = 3;
    let origin = TestOrigin::start(settings).await;
    let c = Client::new(&origin);
    for i in 0..5 {
        let (status, body, _) = c.put("small", &format!("k{i}"), json!(i), &[]).await;
        assert_eq!(status, 201, "{body}");
    }
    // The changelog holds versions 3..=5: deltas since 2..=5.
    assert_eq!(c.delta("small", 2).await.changes.len(), 3);
    let (status, body, _) = c.get("small", Some(1)).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "changelog_expired");
    assert_eq!(body["error"]["oldest"], 2);
    assert_eq!(body["error"]["version"], 5);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("snapshot")
    );
    // A cursor from the future (another history) is gone as well.
    assert_eq!(c.get("small", Some(6)).await.0, 410);
    // A dataset never written is empty at version 0.
    let empty = c.snapshot("nothing-yet").await;
    assert_eq!((empty.version, empty.entries.len()), (0, 0));
    assert!(c.delta("nothing-yet", 0).await.changes.is_empty());
    origin.stop().await;
}

#[tokio::test]
async fn too_old_since_is_gone_memory() {
    too_old_since_is_gone(crate::support::memory_settings()).await;
}

#[tokio::test]
async fn too_old_since_is_gone_redis() {
    too_old_since_is_gone(redis("ds-gone")).await;
}

async fn merge_policies_and_preconditions(mut settings: Settings) {
    settings
        .datasets
        .policies
        .insert("presence".into(), MergePolicy::LastWriterWins);
    let origin = TestOrigin::start(settings).await;
    let c = Client::new(&origin);

    // `reject` (the default): overwriting without If-Match is 428, and nothing changes.
    c.put("prefs", "theme", json!("dark"), &[]).await;
    let (status, body, _) = c.put("prefs", "theme", json!("light"), &[]).await;
    assert_eq!(status, 428, "{body}");
    assert_eq!(body["error"]["code"], "precondition_required");
    assert_eq!(
        body["error"]["current"],
        json!({"value": "dark", "version": 1})
    );
    let (status, body, _) = c.delete("prefs", "theme", &[]).await;
    assert_eq!(status, 428, "{body}");
    // If-Match: * means "must exist".
    let (status, body, _) = c
        .put("prefs", "theme", json!("light"), &[("if-match", "*")])
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = c
        .put("prefs", "font", json!("serif"), &[("if-match", "*")])
        .await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["error"]["current"], Value::Null);
    assert_eq!(
        c.snapshot("prefs").await.entries["theme"].value,
        json!("light")
    );

    // If-None-Match: * creates only.
    let (status, body, _) = c
        .put("prefs", "lang", json!("en"), &[("if-none-match", "*")])
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body, _) = c
        .put("prefs", "lang", json!("fr"), &[("if-none-match", "*")])
        .await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["error"]["current"]["value"], "en");

    // `last-writer-wins`: plain writes always apply, the latest wins…
    for who in ["phone", "laptop"] {
        let (status, body, _) = c.put("presence", "alice", json!({"on": who}), &[]).await;
        assert!(status == 200 || status == 201, "{body}");
    }
    assert_eq!(
        c.snapshot("presence").await.entries["alice"].value,
        json!({"on": "laptop"})
    );
    // …but a stale If-Match is still refused.
    let (status, body, _) = c
        .put(
            "presence",
            "alice",
            json!({"on": "watch"}),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["error"]["current"]["version"], 2);
    let (status, body, _) = c.delete("presence", "alice", &[]).await;
    assert_eq!(status, 200, "{body}");
    // Deleting a missing key is 404, under either policy.
    assert_eq!(c.delete("presence", "alice", &[]).await.0, 404);
    assert_eq!(
        c.delete("prefs", "nope", &[("if-match", "\"1\"")]).await.0,
        404
    );
    origin.stop().await;
}

#[tokio::test]
async fn merge_policies_and_preconditions_memory() {
    merge_policies_and_preconditions(crate::support::memory_settings()).await;
}

#[tokio::test]
async fn merge_policies_and_preconditions_redis() {
    merge_policies_and_preconditions(redis("ds-policy")).await;
}

#[tokio::test]
async fn bad_requests_are_json_4xx() {
    let settings = Settings {
        max_body_bytes: 64,
        ..crate::support::memory_settings()
    };
    let origin = TestOrigin::start(settings).await;
    let c = Client::new(&origin);
    let cases: Vec<(Reply, u16, &str)> = vec![
        (
            c.put("bad name", "k", json!(1), &[]).await,
            400,
            "invalid_dataset",
        ),
        (
            c.put("a..b", "k", json!(1), &[]).await,
            400,
            "invalid_dataset",
        ),
        (c.put("d", "k%20k", json!(1), &[]).await, 400, "invalid_key"),
        (
            c.put("d", "k", json!(1), &[("if-match", "1")]).await,
            400,
            "invalid_precondition",
        ),
        (
            c.put("d", "k", json!(1), &[("if-match", "\"1\" \"2\"")])
                .await,
            400,
            "invalid_precondition",
        ),
        (
            c.put("d", "k", json!("x".repeat(100)), &[]).await,
            413,
            "body_too_large",
        ),
        (c.get("d", None).await, 200, ""),
        (
            c.delete("d", "k", &[("if-none-match", "w/\"1\"")]).await,
            400,
            "invalid_precondition",
        ),
    ];
    for (i, ((status, body, _), want, code)) in cases.into_iter().enumerate() {
        assert_eq!(status, want, "case {i}: {body}");
        if !code.is_empty() {
            assert_eq!(body["error"]["code"], code, "case {i}: {body}");
        }
    }
    let resp = c
        .http
        .put(format!("{}/v1/datasets/d/k", c.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    let (status, body, _) = c
        .send(c.http.get(format!("{}/v1/datasets/d?since=-3", c.base)))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_since");
    origin.stop().await;
}

/// Refusals name the dataset as the client wrote it, in a sentence: never a Rust type's debug
/// output such as `DatasetName("prefs")`.
#[tokio::test]
async fn refusals_name_the_dataset_plainly() {
    let mut settings = crate::support::memory_settings();
    settings.datasets.changelog_len = 1;
    settings.datasets.max_keys = 1;
    let origin = TestOrigin::start(settings).await;
    let c = Client::new(&origin);
    assert_eq!(c.put("prefs", "a", json!(1), &[]).await.0, 201);
    assert_eq!(
        c.put("prefs", "a", json!(2), &[("if-match", "\"1\"")])
            .await
            .0,
        200
    );
    let refusals = [
        (c.delete("prefs", "nope", &[]).await, 404),
        (c.put("prefs", "a", json!(3), &[]).await, 428),
        (c.put("prefs", "b", json!(1), &[]).await, 409),
        (c.get("prefs", Some(0)).await, 410),
    ];
    for ((status, body, _), want) in refusals {
        assert_eq!(status, want, "{body}");
        let message = body["error"]["message"].as_str().expect("a message");
        assert!(
            message.starts_with("dataset \"prefs\" "),
            "{want}: {message}"
        );
        assert!(!message.contains("DatasetName"), "{want}: {message}");
    }
    origin.stop().await;
}

#[tokio::test]
async fn redis_datasets_survive_an_origin_restart() {
    let ns = crate::support::namespace("ds-restart");
    let origin = TestOrigin::start(crate::support::redis_settings(&ns)).await;
    let c = Client::new(&origin);
    let (_, first, _) = c.put("notes", "a", json!("one"), &[]).await;
    c.put("notes", "b", json!("two"), &[]).await;
    c.delete("notes", "b", &[("if-match", "\"2\"")]).await;
    let before = c.snapshot("notes").await;
    origin.stop().await;

    let origin = TestOrigin::start(crate::support::redis_settings(&ns)).await;
    let c = Client::new(&origin);
    assert_eq!(c.snapshot("notes").await, before);
    // The changelog survived too, and versions continue where they were.
    let delta = c.delta("notes", 1).await;
    assert_eq!(delta.changes.len(), 1);
    assert!(delta.changes[0].deleted);
    let (status, body, _) = c
        .put(
            "notes",
            "a",
            json!("uno"),
            &[("if-match", &if_match(&first))],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 4);
    origin.stop().await;
}

/// Two origins on one Redis namespace: the per-node write lock cannot serialise them, so only
/// the store's atomic compare-and-set keeps racing writers from both winning.
#[tokio::test]
async fn two_redis_origins_race_and_exactly_one_wins_each_round() {
    let ns = crate::support::namespace("ds-two-nodes");
    let one = TestOrigin::start(crate::support::redis_settings(&ns)).await;
    let two = TestOrigin::start(crate::support::redis_settings(&ns)).await;
    let (a, b) = (Client::new(&one), Client::new(&two));
    let (status, mut current, _) = a.put("counter", "n", json!(0), &[]).await;
    assert_eq!(status, 201, "{current}");
    for round in 1..=20 {
        let tag = if_match(&current);
        let cond = [("if-match", tag.as_str())];
        let (ra, rb) = tokio::join!(
            a.put("counter", "n", json!({"round": round, "by": "one"}), &cond),
            b.put("counter", "n", json!({"round": round, "by": "two"}), &cond),
        );
        current = match (ra.0, rb.0) {
            (200, 412) => {
                assert_eq!(rb.1["error"]["current"]["value"], ra.1["value"]);
                ra.1
            }
            (412, 200) => {
                assert_eq!(ra.1["error"]["current"]["value"], rb.1["value"]);
                rb.1
            }
            other => panic!("round {round}: expected one 200 and one 412, got {other:?}"),
        };
    }
    // Both nodes see the same dataset: the initial put and one win per round.
    assert_eq!(a.snapshot("counter").await, b.snapshot("counter").await);
    assert_eq!(b.snapshot("counter").await.version, 21);
    one.stop().await;
    two.stop().await;
}

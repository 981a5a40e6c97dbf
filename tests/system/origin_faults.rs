//! Origin faults with honest answers (issue 12 §7), against a `redis-server` of the test's own
//! on a spare port (so it can be stopped, hung and restarted without touching anyone else's):
//!
//! * Redis hung (`SIGSTOP`): a publish that timed out answers 504 `outcome_unknown`, never 503
//!   "retry later"; its retry with the same `Idempotency-Key` gets the first answer, so the
//!   event is stored once; the same key with another body is a 422.
//! * Redis down for 10 s under load: publishes keep being answered, at once (503: nothing
//!   stored), the live subscriber resumes, and every acknowledged event arrives exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use ssepush::client::origin::{Item, Subscription};
use ssepush_origin::EventId;
use ssepush_origin::settings::Settings;

use crate::support::TestOrigin;

/// A `redis-server` of this test's own, with `appendfsync always` so an acknowledged write
/// survives a crash.
struct SpareRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl SpareRedis {
    async fn start() -> SpareRedis {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(ssepush::device::stack::unique_name("redis-fault"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = SpareRedis {
            child: None,
            port,
            dir,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        crate::support::eventually(Duration::from_secs(10), "redis-server answers", || async {
            redis::Client::open(self.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .is_ok()
        })
        .await;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success());
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SpareRedis {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process does not die of SIGKILL until it runs again on some kernels.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn settings(redis: &SpareRedis) -> Settings {
    Settings {
        store: redis.url(),
        namespace: crate::support::namespace("faults"),
        ..crate::support::memory_settings()
    }
}

async fn publish(url: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = crate::support::http()
        .post(format!("{url}/v1/events"))
        .json(body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_hung_redis_answers_outcome_unknown_and_a_key_makes_the_retry_safe() {
    let redis = SpareRedis::start().await;
    let origin = TestOrigin::start(settings(&redis)).await;
    let url = origin.url.clone();
    assert_eq!(
        publish(&url, None, &json!({"channel": "f.a", "data": 0}))
            .await
            .0,
        200
    );

    let body = json!({"channel": "f.a", "data": {"n": 1}});
    redis.signal("-STOP");
    let (status, err) = publish(&url, Some("key-1"), &body).await;
    redis.signal("-CONT");
    assert_eq!(status, 504, "{err}");
    assert_eq!(err["error"]["code"], "outcome_unknown");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );

    // The timed-out write did land once Redis ran again; the retry gets its answer.
    let (status, first) = publish(&url, Some("key-1"), &body).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = publish(&url, Some("key-1"), &body).await;
    assert_eq!((status, &again), (200, &first));
    let (status, err) = publish(&url, Some("key-1"), &json!({"channel": "f.a", "data": 2})).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{err}"
    );

    let poll: Value = crate::support::get(format!("{url}/v1/poll?channel=f.a&after=0-0&timeout=0"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: Vec<&Value> = poll["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["n"] == 1)
        .collect();
    assert_eq!(stored.len(), 1, "stored once, whatever the retries: {poll}");
    assert_eq!(stored[0]["id"], first["ids"][0]);
    origin.stop().await;
}

#[tokio::test]
async fn redis_down_for_ten_seconds_under_load_loses_nothing_acknowledged() {
    let mut redis = SpareRedis::start().await;
    let origin = TestOrigin::start(settings(&redis)).await;
    let url = origin.url.clone();

    // A live subscriber from the start of the log, reading until the final marker.
    let sub = origin.client.subscribe(Subscription {
        channels: vec!["load.*".into()],
        last_event_id: Some(EventId::ZERO),
        ..Default::default()
    });
    let reader = tokio::spawn(async move {
        let mut got: Vec<i64> = Vec::new();
        let mut resets = 0;
        let mut sub = std::pin::pin!(sub);
        while let Some(item) = sub.next().await {
            match item {
                Ok(Item::Event(e)) if e.data["final"] == true => break,
                Ok(Item::Event(e)) => got.push(e.data["i"].as_i64().unwrap()),
                Ok(Item::Reset { .. }) => resets += 1,
                Err(_) => {}
            }
        }
        (got, resets)
    });

    // The load: one publish every 20 ms, each answered within the client's bound or counted.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = tokio::spawn({
        let url = url.clone();
        let stop = stop.clone();
        async move {
            let http = crate::support::http_builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut outcomes: BTreeMap<i64, u16> = BTreeMap::new();
            let mut slowest_failure = Duration::ZERO;
            let mut i = 0;
            while !stop.is_cancelled() && i < 5000 {
                let started = std::time::Instant::now();
                let resp = http
                    .post(format!("{url}/v1/events"))
                    .json(&json!({"channel": "load.a", "data": {"i": i}}))
                    .send()
                    .await;
                let code = resp.map_or(0, |r| r.status().as_u16());
                if code != 200 {
                    slowest_failure = slowest_failure.max(started.elapsed());
                }
                outcomes.insert(i, code);
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (outcomes, slowest_failure)
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.kill();
    // The outage is the test's input (ten seconds down), not something it measures.
    tokio::time::sleep(Duration::from_secs(10)).await;
    redis.spawn().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let (outcomes, slowest_failure) = load.await.unwrap();
    crate::support::eventually(
        Duration::from_secs(30),
        "the final marker is stored",
        || async {
            publish(
                &url,
                None,
                &json!({"channel": "load.a", "data": {"final": true}}),
            )
            .await
            .0 == 200
        },
    )
    .await;
    let (got, resets) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the subscriber reached the marker")
        .unwrap();

    let by = |code: u16| -> BTreeSet<i64> {
        outcomes
            .iter()
            .filter(|(_, c)| **c == code)
            .map(|(i, _)| *i)
            .collect()
    };
    let acked = by(200);
    let refused = by(503);
    let unknown = by(504);
    let received: BTreeSet<i64> = got.iter().copied().collect();
    eprintln!(
        "sent {}, acknowledged {}, refused (503) {}, unknown (504) {}, other {}, received {} ({} distinct), resets {resets}, slowest failed publish {slowest_failure:?}",
        outcomes.len(),
        acked.len(),
        refused.len(),
        unknown.len(),
        outcomes.len() - acked.len() - refused.len() - unknown.len(),
        got.len(),
        received.len()
    );
    assert!(!refused.is_empty(), "the outage was felt");
    // Refusals are answered at once, so the closed-loop publisher (one publish, then 20 ms)
    // kept its pace through the ten seconds: hundreds of answers. When each refusal took
    // ~1.1 s of reconnect retries there were at most ten.
    assert!(
        refused.len() >= 50,
        "{} publishes refused in a 10 s outage: the refusals were not fast",
        refused.len()
    );
    assert_eq!(
        acked.len() + refused.len() + unknown.len(),
        outcomes.len(),
        "every publish got an answer (200, 503 or 504): {outcomes:?}"
    );
    assert_eq!(got.len(), received.len(), "nothing delivered twice");
    assert!(
        acked.is_subset(&received),
        "lost: {:?}",
        acked.difference(&received).collect::<Vec<_>>()
    );
    assert!(
        received.is_disjoint(&refused),
        "a 503 said nothing was stored"
    );
    assert!(
        received
            .iter()
            .all(|i| acked.contains(i) || unknown.contains(i))
    );
    assert_eq!(resets, 0, "the log kept its history (appendfsync always)");
    origin.stop().await;
}

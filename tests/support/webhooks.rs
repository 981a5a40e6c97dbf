//! A webhook receiver on a loopback port, checking every request the Standard Webhooks way
//! with the spec's reference crate (`standardwebhooks`, not the origin's own signing code):
//! signature and timestamp freshness. It records the `webhook-id`s of the requests it
//! acknowledged and can refuse requests on purpose. With the origin's webhook API calls the
//! tests share.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use ssepush_origin::settings::Settings;
use tokio::sync::watch;

use super::{TestOrigin, eventually};

/// What the receiver saw.
#[derive(Default)]
pub struct Seen {
    /// `webhook-id`s of acknowledged (2xx) requests, in arrival order, with their bodies.
    pub acked: Vec<(String, Value)>,
    /// Requests answered with an error on purpose.
    pub refused: usize,
    /// Requests whose signature or timestamp did not verify. Must stay empty.
    pub bad: Vec<String>,
}

pub struct Receiver {
    pub seen: Mutex<Seen>,
    pub secret: watch::Sender<Option<String>>,
    /// Answer 500 to this many more requests.
    pub fail_next: AtomicUsize,
    /// Answer 500 to everything while set.
    pub failing: AtomicBool,
    /// Answer 500 to everything after this many acknowledged requests (0: never).
    pub fail_after_acks: AtomicUsize,
}

pub struct Rx {
    pub url: String,
    pub state: Arc<Receiver>,
    _server: tokio::task::JoinHandle<()>,
}

impl Rx {
    pub async fn start() -> Rx {
        let state = Arc::new(Receiver {
            seen: Mutex::new(Seen::default()),
            secret: watch::Sender::new(None),
            fail_next: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            fail_after_acks: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Rx {
            url: format!("http://{addr}/hook"),
            state,
            _server: server,
        }
    }

    pub fn set_secret(&self, secret: &str) {
        self.state.secret.send_replace(Some(secret.to_owned()));
    }

    /// Acknowledged ids, first occurrence only, in order.
    pub fn unique_ids(&self) -> Vec<String> {
        let seen = self.state.seen.lock().unwrap();
        let mut out: Vec<String> = Vec::new();
        for (id, _) in &seen.acked {
            if !out.contains(id) {
                out.push(id.clone());
            }
        }
        out
    }

    pub fn acked(&self) -> usize {
        self.state.seen.lock().unwrap().acked.len()
    }

    pub fn refused(&self) -> usize {
        self.state.seen.lock().unwrap().refused
    }

    pub fn assert_all_verified(&self) {
        let seen = self.state.seen.lock().unwrap();
        assert!(
            seen.bad.is_empty(),
            "requests that failed verification: {:?}",
            seen.bad
        );
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.state
            .seen
            .lock()
            .unwrap()
            .acked
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

pub async fn receive(
    State(rx): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    // The secret is known once registration answered; a delivery can race that answer.
    let mut secret = rx.secret.subscribe();
    let secret = match tokio::time::timeout(
        Duration::from_secs(5),
        secret.wait_for(Option::is_some),
    )
    .await
    {
        Ok(Ok(s)) => s.clone().unwrap(),
        _ => return StatusCode::SERVICE_UNAVAILABLE,
    };
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let verified = standardwebhooks::Webhook::new(&secret)
        .map_err(|e| e.to_string())
        .and_then(|wh| wh.verify(&body, &headers).map_err(|e| e.to_string()));
    // Fresh: signed for this attempt, not replayed (the crate allows 5 minutes; we ask more).
    let fresh = headers
        .get("webhook-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|ts| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            (now - ts).abs() <= 30
        });
    let mut seen = rx.seen.lock().unwrap();
    if let Err(e) = verified {
        seen.bad.push(format!("{id}: {e}"));
        return StatusCode::UNAUTHORIZED;
    }
    if !fresh {
        seen.bad.push(format!("{id}: stale timestamp"));
        return StatusCode::UNAUTHORIZED;
    }
    let after = rx.fail_after_acks.load(Ordering::SeqCst);
    if rx.failing.load(Ordering::SeqCst)
        || (after > 0 && seen.acked.len() >= after)
        || rx
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        seen.refused += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        seen.bad.push(format!("{id}: body is not JSON"));
        return StatusCode::BAD_REQUEST;
    };
    seen.acked.push((id, value));
    StatusCode::NO_CONTENT
}

/// Settings for fast tests: loopback targets allowed, tiny backoff, quick polls and leases.
pub fn fast(mut s: Settings) -> Settings {
    s.webhooks.allow_private_targets = true;
    s.webhooks.backoff_base_ms = 10;
    s.webhooks.backoff_cap_ms = 100;
    s.webhooks.max_failures = 1000;
    s.webhooks.timeout_ms = 2000;
    s.webhooks.lease_ttl_ms = 3000;
    s.webhooks.poll_interval_ms = 200;
    s
}

pub async fn api(method: reqwest::Method, url: String, body: Option<Value>) -> (StatusCode, Value) {
    let client = crate::support::http();
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("origin answers");
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let text = resp.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, value)
}

pub async fn register(origin: &TestOrigin, rx: &Rx, body: Value) -> String {
    let (status, created) = api(
        reqwest::Method::POST,
        format!("{}/v1/webhooks", origin.url),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"]
        .as_str()
        .expect("secret shown on creation");
    assert!(secret.starts_with("whsec_"), "{secret}");
    rx.set_secret(secret);
    created["id"].as_str().unwrap().to_owned()
}

pub async fn status(origin: &TestOrigin, id: &str) -> Value {
    let (code, v) = api(
        reqwest::Method::GET,
        format!("{}/v1/webhooks/{id}", origin.url),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    v
}

pub async fn publish(origin: &TestOrigin, channel: &str, data: Value) -> String {
    origin
        .client
        .publish_one(channel, None, data)
        .await
        .expect("publish")
        .to_string()
}

pub async fn wait_for_ids(rx: &Rx, want: &[String], within: Duration) {
    eventually(within, "every event delivered", || async {
        rx.unique_ids().len() >= want.len()
    })
    .await;
    assert_eq!(
        rx.unique_ids(),
        want,
        "the deduplicated deliveries must equal the published sequence"
    );
    rx.assert_all_verified();
}

//! Proxy harness: the stack's `ProxyServer` (the production `ssepush_proxy::server::run` on
//! port 0) with a recording push service or the real providers, and the phone's side of the
//! handoff API over real HTTP, raw enough to test the API itself.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use serde_json::Value;
use ssepush::device::stack::ProxyServer;
use ssepush_proxy::protocol::{HandoffCreated, HandoffRequest, StreamRequest};
use ssepush_proxy::push::{PushError, PushProvider, PushTarget, Wake};
use ssepush_proxy::settings::Settings;

/// One push the recording provider accepted (or refused).
#[derive(Debug, Clone)]
pub struct Sent {
    pub target: PushTarget,
    pub wake: Wake,
    pub at: Instant,
    pub accepted: bool,
}

/// A push service that records every wake and answers from a script (default: accept): it
/// stands for Apple, Google or a browser vendor — outside the product — where a test is about
/// the proxy's policy rather than a provider's wire format (those run against the gateway).
#[derive(Default)]
pub struct Recorder {
    sent: Mutex<Vec<Sent>>,
    script: Mutex<VecDeque<Result<(), PushError>>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    /// The next sends answer these, in order; then accept again.
    pub fn script(&self, answers: Vec<Result<(), PushError>>) {
        self.script.lock().unwrap().extend(answers);
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    /// Accepted wakes for one handoff.
    pub fn wakes_for(&self, handoff: &str) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.accepted && s.wake.handoff_id == handoff)
            .collect()
    }
}

#[async_trait]
impl PushProvider for Recorder {
    async fn send(&self, target: &PushTarget, wake: &Wake) -> Result<(), PushError> {
        let answer = self.script.lock().unwrap().pop_front().unwrap_or(Ok(()));
        self.sent.lock().unwrap().push(Sent {
            target: target.clone(),
            wake: wake.clone(),
            at: Instant::now(),
            accepted: answer.is_ok(),
        });
        answer
    }
}

/// Proxy settings for tests: port 0, fast reconnects, a short coalescing window.
pub fn proxy_settings(allowed: &[&str]) -> Settings {
    let mut s = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        allowed_origins: allowed.iter().map(|s| s.to_string()).collect(),
        shutdown_grace_secs: 2,
        ..Settings::default()
    };
    s.wake.coalesce_ms = 300;
    s.wake.max_per_hour = 10;
    s.wake.retry_base_ms = 50;
    s.upstream.reconnect_ms = 100;
    s.upstream.backoff_base_ms = 50;
    s.upstream.backoff_max_ms = 500;
    s.upstream.connect_timeout_ms = 2000;
    s
}

/// A running proxy.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub url: String,
    pub http: reqwest::Client,
    server: ProxyServer,
}

impl TestProxy {
    pub async fn start(settings: Settings, recorder: Arc<Recorder>) -> TestProxy {
        Self::start_with(settings, ssepush_proxy::server::providers_all(recorder)).await
    }

    /// Starts with given providers (e.g. the real ones, pointed at the simulated gateway).
    pub async fn start_with(
        settings: Settings,
        providers: ssepush_proxy::push::Providers,
    ) -> TestProxy {
        let server = ProxyServer::start(settings, providers)
            .await
            .expect("proxy start");
        TestProxy {
            addr: server.addr,
            url: server.url.clone(),
            http: crate::support::http(),
            server,
        }
    }

    /// Drains and waits for the proxy to stop; fails the test if it failed or hung.
    pub async fn stop(self) {
        self.server.stop().await.expect("proxy stop");
    }

    /// `POST /v1/handoffs`; returns the status and the JSON body.
    pub async fn create_raw(&self, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/handoffs", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Creates a handoff that must succeed.
    /// Creates a handoff that must succeed; the `201` must be a `HandoffCreated`.
    pub async fn create(&self, body: &Value) -> Handoff {
        let (status, body) = self.create_raw(body).await;
        assert_eq!(status, 201, "handoff refused: {body}");
        let created: HandoffCreated = serde_json::from_value(body).expect("a HandoffCreated");
        Handoff {
            id: created.id,
            token: created.token,
        }
    }

    pub async fn status(&self, h: &Handoff) -> Value {
        self.http
            .get(format!("{}/v1/handoffs/{}", self.url, h.id))
            .bearer_auth(&h.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `GET /events` as JSON, optionally acknowledging `after`.
    pub async fn events(&self, h: &Handoff, after: Option<&str>) -> Value {
        let mut req = self
            .http
            .get(format!("{}/v1/handoffs/{}/events", self.url, h.id))
            .bearer_auth(&h.token);
        if let Some(a) = after {
            req = req.header("last-event-id", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// `GET /events` as SSE; returns the raw body.
    pub async fn events_sse(&self, h: &Handoff, after: Option<&str>) -> String {
        let mut req = self
            .http
            .get(format!("{}/v1/handoffs/{}/events", self.url, h.id))
            .bearer_auth(&h.token)
            .header("accept", "text/event-stream");
        if let Some(a) = after {
            req = req.header("last-event-id", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        resp.text().await.unwrap()
    }

    /// `DELETE`: the handback; returns the body.
    pub async fn handback(&self, h: &Handoff) -> Value {
        let resp = self
            .http
            .delete(format!("{}/v1/handoffs/{}", self.url, h.id))
            .bearer_auth(&h.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }
}

/// A created handoff, as the phone keeps it.
#[derive(Debug, Clone)]
pub struct Handoff {
    pub id: String,
    pub token: String,
}

/// A handoff request body for an APNs phone.
pub fn handoff_body(stream_url: &str, last_event_id: Option<&str>, device: u32) -> Value {
    let request = HandoffRequest {
        stream: StreamRequest {
            url: stream_url.to_owned(),
            headers: Default::default(),
            last_event_id: last_event_id.map(str::to_owned),
        },
        push: ssepush_proxy::protocol::PushTarget::Apns {
            token: format!("{device:064x}"),
            topic: None,
            environment: None,
        },
        wake: Default::default(),
        ttl_sec: None,
    };
    serde_json::to_value(request).unwrap()
}

/// The `id:` lines of an SSE body, in order.
pub fn sse_ids(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(str::to_owned)
        .collect()
}

/// The ids of a JSON `/events` answer.
pub fn json_ids(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// An HTTP server that answers every request with `status` (and `location` when set), and
/// counts the requests it saw.
pub struct FixedServer {
    pub url: String,
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
}

pub async fn fixed_server(status: u16, location: Option<String>) -> FixedServer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let location = location.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                let loc = location
                    .map(|l| format!("location: {l}\r\n"))
                    .unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\n{loc}content-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    FixedServer { url, hits }
}

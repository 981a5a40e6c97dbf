//! The origin client: what a Rust app (and every tool in this package) uses to talk to an origin.
//!
//! [`OriginClient::subscribe`] is a resuming SSE subscription: it tracks the id of the last
//! event it yielded, and when the connection drops it reconnects after the server's `retry:`
//! delay with `Last-Event-ID`, so the caller sees every event exactly once, in order.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde_json::Value;
use ssepush_origin::Event;
use ssepush_origin::event::{EventId, RESET_TYPE};
use ssepush_origin::sse::decode_event;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {source}")]
    Connect { url: String, source: reqwest::Error },
    #[error("origin answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("stream broke: {0}")]
    Stream(String),
    #[error("origin sent an event this client cannot read: {0}")]
    Decode(String),
}

impl ClientError {
    /// A 4xx is the request's fault and will not get better by retrying (SSE spec: fail the
    /// connection); anything else is worth a reconnect.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ClientError::Status { status, .. } if (400..500).contains(status) && *status != 429)
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Event(Event),
    /// The cursor was older than the origin's retention: events were missed, resync.
    Reset {
        oldest: Option<EventId>,
    },
}

/// What to subscribe to.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    pub channels: Vec<String>,
    pub filter: Option<String>,
    pub last_event_id: Option<EventId>,
}

#[derive(Debug, Clone)]
pub struct OriginClient {
    http: reqwest::Client,
    base: String,
}

impl OriginClient {
    pub fn new(base: &str) -> Self {
        OriginClient {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Publishes one event object or an array of them; returns the ids in order.
    pub async fn publish(&self, body: &Value) -> Result<Vec<EventId>, ClientError> {
        let url = format!("{}/v1/events", self.base);
        let resp = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        let body = check(resp).await?;
        let parsed: Value =
            serde_json::from_str(&body).map_err(|e| ClientError::Decode(e.to_string()))?;
        serde_json::from_value(parsed["ids"].clone())
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn publish_one(
        &self,
        channel: &str,
        kind: Option<&str>,
        data: Value,
    ) -> Result<EventId, ClientError> {
        let mut body = serde_json::json!({"channel": channel, "data": data});
        if let Some(kind) = kind {
            body["type"] = Value::String(kind.to_owned());
        }
        let ids = self.publish(&body).await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| ClientError::Decode("no id returned".into()))
    }

    fn sse_url(&self, sub: &Subscription) -> String {
        let mut q = form_urlencoded_query(sub);
        if q.is_empty() {
            q.push('?');
        }
        format!("{}/v1/sse{q}", self.base)
    }

    /// One SSE connection, no reconnects: yields items until the server ends the stream.
    /// Also yields the server's `retry:` hints so a reconnect loop can honour them.
    pub async fn connect(
        &self,
        sub: &Subscription,
        last_event_id: Option<EventId>,
    ) -> Result<impl Stream<Item = Result<Frame, ClientError>> + use<>, ClientError> {
        let url = self.sse_url(sub);
        let mut req = self.http.get(&url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            return Err(ClientError::Status { status, body });
        }
        Ok(resp
            .bytes_stream()
            .eventsource()
            .filter_map(|r| async move {
                match r {
                    Err(e) => Some(Err(ClientError::Stream(e.to_string()))),
                    Ok(ev) => {
                        let retry = ev.retry;
                        if ev.event == RESET_TYPE {
                            let v: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                            let oldest = v["oldestId"].as_str().and_then(|s| s.parse().ok());
                            return Some(Ok(Frame::Item(Item::Reset { oldest })));
                        }
                        if ev.data.is_empty() && ev.id.is_empty() {
                            // A `retry:`-only block (dispatches nothing in a browser).
                            return retry.map(|d| Ok(Frame::Retry(d)));
                        }
                        Some(
                            decode_event(&ev.id, &ev.event, &ev.data)
                                .map(|e| Frame::Item(Item::Event(e)))
                                .map_err(|e| ClientError::Decode(e.to_string())),
                        )
                    }
                }
            }))
    }

    /// A subscription that survives disconnects: reconnects with `Last-Event-ID` after the
    /// server's `retry:` delay (backing off while the origin is unreachable), and stops for
    /// good on a 4xx. Never yields an event twice.
    pub fn subscribe(
        &self,
        sub: Subscription,
    ) -> impl Stream<Item = Result<Item, ClientError>> + use<> {
        let client = self.clone();
        resuming(client, sub)
    }
}

/// One open SSE connection, as the resuming subscriber holds it.
type Connection = std::pin::Pin<Box<dyn Stream<Item = Result<Frame, ClientError>> + Send>>;

/// A frame of one connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Item(Item),
    Retry(Duration),
}

fn resuming(
    client: OriginClient,
    sub: Subscription,
) -> impl Stream<Item = Result<Item, ClientError>> {
    struct State {
        client: OriginClient,
        sub: Subscription,
        last: Option<EventId>,
        retry: Duration,
        failures: u32,
        conn: Option<Connection>,
        done: bool,
    }
    let state = State {
        last: sub.last_event_id,
        client,
        sub,
        retry: Duration::from_millis(1000),
        failures: 0,
        conn: None,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(conn) = st.conn.as_mut() {
                match conn.next().await {
                    Some(Ok(Frame::Retry(d))) => st.retry = d,
                    Some(Ok(Frame::Item(item))) => {
                        st.failures = 0;
                        if let Item::Event(e) = &item {
                            if st.last.is_some_and(|l| e.id <= l) {
                                continue;
                            }
                            st.last = Some(e.id);
                        }
                        return Some((Ok(item), st));
                    }
                    Some(Err(_)) | None => {
                        st.conn = None;
                        tokio::time::sleep(st.retry).await;
                    }
                }
                continue;
            }
            match st.client.connect(&st.sub, st.last).await {
                Ok(conn) => st.conn = Some(Box::pin(conn)),
                Err(e) if e.is_permanent() => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                Err(_) => {
                    st.failures += 1;
                    let backoff = st.retry * 2u32.saturating_pow(st.failures.min(5));
                    tokio::time::sleep(backoff.min(Duration::from_secs(30))).await;
                }
            }
        }
    })
}

fn form_urlencoded_query(sub: &Subscription) -> String {
    let mut parts = Vec::new();
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    for c in &sub.channels {
        parts.push(format!("channel={}", enc(c)));
    }
    if let Some(f) = &sub.filter {
        parts.push(format!("filter={}", enc(f)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

async fn check(resp: reqwest::Response) -> Result<String, ClientError> {
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| ClientError::Stream(e.to_string()))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(ClientError::Status {
            status: status.as_u16(),
            body,
        })
    }
}

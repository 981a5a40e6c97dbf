//! `GET /v1/ws`: subscriptions (and optionally publishing) over one WebSocket, as JSON text
//! frames.
//!
//! Client → server:
//! * `{"type":"subscribe","id":"s1","channels":[…],"filter"?:"CEL","lastEventId"?:"…"}`
//! * `{"type":"unsubscribe","id":"s1"}`
//! * `{"type":"filter","id":"s1","filter":"CEL"|null}`: changes a live subscription's filter;
//!   the `ok` names `appliesAfter`, the id after which the new filter judges events
//! * `{"type":"publish","channel":"…","eventType"?:"…","data":…,"ref"?:…}` when the origin
//!   allows it (`ws_publish`, plus the publisher credentials of the upgrade request). The event
//!   type is `eventType` because `type` already names the message.
//! * `{"type":"ping"}`
//!
//! Server → client: `event` (`{"type":"event","sub","event":{id,channel,type,data,time}}`),
//! `reset` (`{"type":"reset","sub","cause","requestedId","oldestId","lastEventId"?}`, before that
//! subscription's history; `lastEventId` is the cursor to continue from when it is not the one
//! given), `ok` (`{"type":"ok","op","ref"}`, plus `ids` for a publish and `lastEventId` for a
//! subscribe: the subscription's cursor from its first moment, the log's head for a fresh one),
//! `error`
//! (`{"type":"error","ref"?,"code","message"}`, plus `line`/`column` for a filter; the socket stays
//! open), `pong`.
//!
//! Each subscription is the shared engine of [`super::subscribe`] (so it resumes exactly like
//! SSE) driven by its own small task; all of them feed **one bounded queue per socket**, drained
//! by a writer task. A socket whose queue fills up is closed with 1013 and counted in
//! `ssepush_origin_slow_consumers_total`; it resumes with `lastEventId`. On shutdown every socket
//! is closed with 1001.
//!
//! Frame parsing ([`parse`]) is plain-value logic and unit-tested here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::sse::MAX_PATTERNS;
use super::state::AppState;
use super::subscribe::{End, FilterSwitch, Item, Start, Subscriber, SwitchError};
use crate::channel::PatternSet;
use crate::event::{EventId, NewEvent};
use crate::filter::Filter;
use crate::service::error::ApiError;

/// Longest subscription id or `ref` accepted, in bytes.
pub const MAX_REF_LEN: usize = 128;
/// How long a closing socket gets to take its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Queued messages written to the socket per flush.
const WRITE_BATCH: usize = 64;

/// Close codes (RFC 6455 §7.4.1).
mod code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const TRY_AGAIN: u16 = 1013;
}

/// A client message that was understood.
#[derive(Debug)]
pub enum Command {
    Subscribe {
        id: String,
        patterns: PatternSet,
        filter: Option<Filter>,
        last_event_id: Option<EventId>,
    },
    Unsubscribe {
        id: String,
    },
    Filter {
        id: String,
        filter: Option<Filter>,
    },
    Publish {
        reference: Option<Value>,
        event: NewEvent,
    },
    Ping,
}

/// A client message that was refused: the error frame to send back, and the `ref` it answers
/// when one could be read.
#[derive(Debug)]
pub struct Rejection {
    pub reference: Option<Value>,
    pub error: ApiError,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubscribeMsg {
    id: String,
    channels: Vec<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    last_event_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeMsg {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterMsg {
    id: String,
    filter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PublishMsg {
    channel: String,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    data: Value,
    #[serde(default, rename = "ref")]
    reference: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PingMsg {}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_message", message)
}

/// The `ref` an error about this message should carry: the subscription id, or a publish's
/// `ref`, if it is a short string or a number.
fn reference_of(obj: &Map<String, Value>) -> Option<Value> {
    let r = obj.get("id").or_else(|| obj.get("ref"))?;
    match r {
        Value::String(s) if s.len() <= MAX_REF_LEN => Some(r.clone()),
        Value::Number(_) => Some(r.clone()),
        _ => None,
    }
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_REF_LEN {
        return Err(invalid(format!(
            "a subscription id is a string of 1 to {MAX_REF_LEN} bytes"
        )));
    }
    Ok(())
}

fn compile(filter: Option<String>) -> Result<Option<Filter>, ApiError> {
    // An empty filter means none, as on the SSE query string.
    Ok(filter
        .filter(|f| !f.trim().is_empty())
        .as_deref()
        .map(Filter::compile)
        .transpose()?)
}

fn fields<T: serde::de::DeserializeOwned>(
    obj: Map<String, Value>,
    kind: &str,
) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(obj)).map_err(|e| invalid(format!("{kind} message: {e}")))
}

/// Parses and validates one client text frame.
pub fn parse(text: &str) -> Result<Command, Rejection> {
    let value: Value = serde_json::from_str(text).map_err(|e| Rejection {
        reference: None,
        error: ApiError::bad_request("invalid_json", format!("message is not valid JSON: {e}")),
    })?;
    let Value::Object(mut obj) = value else {
        return Err(Rejection {
            reference: None,
            error: invalid("a message is a JSON object with a \"type\""),
        });
    };
    let reference = reference_of(&obj);
    let reject = |error: ApiError| Rejection {
        reference: reference.clone(),
        error,
    };
    let kind = match obj.remove("type") {
        Some(Value::String(t)) => t,
        _ => return Err(reject(invalid("a message needs a string \"type\""))),
    };
    let command = match kind.as_str() {
        "subscribe" => {
            let m: SubscribeMsg = fields(obj, "subscribe").map_err(reject)?;
            check_id(&m.id).map_err(reject)?;
            if m.channels.is_empty() {
                return Err(reject(ApiError::bad_request(
                    "missing_channel",
                    "give at least one channel pattern: \"channels\": [\"chat.*\"]",
                )));
            }
            if m.channels.len() > MAX_PATTERNS {
                return Err(reject(ApiError::bad_request(
                    "too_many_channels",
                    format!("a subscription takes at most {MAX_PATTERNS} channel patterns"),
                )));
            }
            let patterns = PatternSet::parse_all(m.channels.iter().map(String::as_str))
                .map_err(|e| reject(e.into()))?;
            let filter = compile(m.filter).map_err(reject)?;
            let last_event_id = m
                .last_event_id
                .filter(|s| !s.is_empty())
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: crate::event::BadEventId| reject(e.into()))?;
            Command::Subscribe {
                id: m.id,
                patterns,
                filter,
                last_event_id,
            }
        }
        "unsubscribe" => {
            let m: UnsubscribeMsg = fields(obj, "unsubscribe").map_err(reject)?;
            Command::Unsubscribe { id: m.id }
        }
        "filter" => {
            if !obj.contains_key("filter") {
                return Err(reject(invalid(
                    "filter message: give \"filter\": a CEL expression, or null to remove it",
                )));
            }
            let m: FilterMsg = fields(obj, "filter").map_err(reject)?;
            Command::Filter {
                id: m.id,
                filter: compile(m.filter).map_err(reject)?,
            }
        }
        "publish" => {
            let m: PublishMsg = fields(obj, "publish").map_err(reject)?;
            let event = NewEvent::new(&m.channel, m.event_type.as_deref(), m.data)
                .map_err(|e| reject(e.into()))?;
            Command::Publish {
                reference: m.reference,
                event,
            }
        }
        "ping" => {
            let _: PingMsg = fields(obj, "ping").map_err(reject)?;
            Command::Ping
        }
        other => {
            return Err(reject(ApiError::bad_request(
                "unknown_type",
                format!(
                    "unknown message type {:?}: use subscribe, unsubscribe, filter, publish or ping",
                    other.chars().take(64).collect::<String>()
                ),
            )));
        }
    };
    Ok(command)
}

/// The error frame for a refused command.
pub fn error_frame(reference: Option<&Value>, error: &ApiError) -> Value {
    let mut frame = json!({"type": "error", "code": error.code, "message": error.message});
    if let Some(obj) = frame.as_object_mut() {
        if let Some(r) = reference {
            obj.insert("ref".into(), r.clone());
        }
        if let Some(Value::Object(extra)) = &error.details {
            obj.extend(extra.clone());
        }
    }
    frame
}

/// An event frame, around the event's shared JSON encoding.
pub fn event_frame(sub_json: &str, event_json: &[u8]) -> String {
    let event = String::from_utf8_lossy(event_json);
    let mut s = String::with_capacity(event.len() + sub_json.len() + 32);
    s.push_str(r#"{"type":"event","sub":"#);
    s.push_str(sub_json);
    s.push_str(r#","event":"#);
    s.push_str(&event);
    s.push('}');
    s
}

/// Why and how a socket closes; the first reason given wins.
#[derive(Clone, Default)]
struct Closer {
    token: CancellationToken,
    reason: Arc<OnceLock<(u16, &'static str)>>,
}

impl Closer {
    /// Returns true for the call that decided the reason.
    fn close(&self, code: u16, reason: &'static str) -> bool {
        let first = self.reason.set((code, reason)).is_ok();
        self.token.cancel();
        first
    }

    fn frame(&self) -> CloseFrame {
        let (code, reason) = self.reason.get().copied().unwrap_or((code::NORMAL, ""));
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }
}

/// Queues a message for the socket without ever waiting: a full queue closes the socket.
fn enqueue(out: &mpsc::Sender<Message>, closer: &Closer, msg: Message) -> bool {
    match out.try_send(msg) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            if closer.close(
                code::TRY_AGAIN,
                "too slow: send queue full; reconnect and resume with lastEventId",
            ) {
                tracing::info!("slow websocket consumer: send queue full, closing");
                metrics::counter!("ssepush_origin_slow_consumers_total").increment(1);
            }
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

fn text(v: &Value) -> Message {
    Message::Text(v.to_string().into())
}

struct SocketGauge;

impl SocketGauge {
    fn new() -> Self {
        metrics::gauge!("ssepush_origin_ws_sockets").increment(1.0);
        SocketGauge
    }
}

impl Drop for SocketGauge {
    fn drop(&mut self) {
        metrics::gauge!("ssepush_origin_ws_sockets").decrement(1.0);
    }
}

pub async fn ws(
    State(st): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return ApiError::new(
                e.status(),
                "websocket_required",
                format!("GET /v1/ws is a WebSocket endpoint: {}", e.body_text()),
            )
            .into_response();
        }
    };
    // Publishing is decided once, from the upgrade request's credentials: browsers cannot set
    // headers on a WebSocket, so browser sockets publish only where publishing is open.
    let publish = if !st.settings.ws_publish {
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "publish_disabled",
            "publishing over WebSocket is disabled on this origin (ws_publish = false); use POST /v1/events",
        ))
    } else {
        st.auth.check(&headers)
    };
    let max = st.settings.ws_max_message_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            static NEXT: AtomicU64 = AtomicU64::new(1);
            let span = tracing::info_span!("ws", id = NEXT.fetch_add(1, Ordering::Relaxed));
            serve(st, socket, publish.err()).instrument(span)
        })
}

struct SubHandle {
    stop: CancellationToken,
    task: JoinHandle<()>,
    switch: FilterSwitch,
}

struct Session {
    st: AppState,
    out: mpsc::Sender<Message>,
    closer: Closer,
    subs: HashMap<String, SubHandle>,
    /// Why this socket may not publish, if it may not.
    publish_denied: Option<ApiError>,
}

async fn serve(st: AppState, socket: WebSocket, publish_denied: Option<ApiError>) {
    let _gauge = SocketGauge::new();
    tracing::debug!("websocket opened");
    let (mut sink, mut stream) = socket.split();
    let (out, mut rx) = mpsc::channel::<Message>(st.settings.ws_send_queue.max(1));
    let closer = Closer::default();
    let writer = {
        let closer = closer.clone();
        let period = st.settings.keep_alive();
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = closer.token.cancelled() => {}
                    _ = write_loop(&mut sink, &mut rx, period) => {
                        closer.close(code::NORMAL, "");
                    }
                }
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    sink.send(Message::Close(Some(closer.frame()))),
                )
                .await;
            }
            .in_current_span(),
        )
    };
    let mut session = Session {
        st: st.clone(),
        out,
        closer: closer.clone(),
        subs: HashMap::new(),
        publish_denied,
    };
    // Set when the client's side is finished (its close frame, or the end of the stream).
    let mut peer_done = false;
    loop {
        let msg = tokio::select! {
            biased;
            _ = closer.token.cancelled() => break,
            _ = st.shutdown.cancelled() => {
                closer.close(code::GOING_AWAY, "server shutting down; reconnect and resume with lastEventId");
                break;
            }
            m = stream.next() => m,
        };
        match msg {
            Some(Ok(Message::Text(t))) => session.handle(t.as_str()).await,
            Some(Ok(Message::Binary(_))) => session.reply(&error_frame(
                None,
                &ApiError::bad_request("unsupported_frame", "send JSON text frames, not binary"),
            )),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => {
                peer_done = true;
                closer.close(code::NORMAL, "");
                break;
            }
            Some(Err(e)) => {
                // The limit error is the only one a client can fix; anything else is a broken
                // peer or protocol violation.
                let too_big = e.to_string().contains("too long");
                tracing::debug!(error = %e, "websocket read failed");
                if too_big {
                    closer.close(code::TOO_BIG, "message larger than ws_max_message_bytes");
                } else {
                    closer.close(code::PROTOCOL, "websocket protocol error");
                }
                peer_done = true;
                break;
            }
        }
    }
    for (_, h) in session.subs.drain() {
        h.stop.cancel();
        h.task.abort();
    }
    drop(session);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT * 2, writer).await;
    if !peer_done {
        // RFC 6455 §7.1.1: after our close frame, read until the client's, so the TCP close is
        // clean and the client sees our close code rather than a reset.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    tracing::debug!(reason = ?closer.reason.get(), "websocket closed");
}

/// Writes queued messages, several per flush, and a ping every keep-alive period.
async fn write_loop(
    sink: &mut SplitSink<WebSocket, Message>,
    rx: &mut mpsc::Receiver<Message>,
    keep_alive: Duration,
) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = ping.tick() => Some(Message::Ping(Default::default())),
        };
        let Some(first) = first else { return };
        if sink.feed(first).await.is_err() {
            return;
        }
        for _ in 1..WRITE_BATCH {
            match rx.try_recv() {
                Ok(m) => {
                    if sink.feed(m).await.is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

impl Session {
    fn reply(&self, frame: &Value) {
        enqueue(&self.out, &self.closer, text(frame));
    }

    fn ok(&self, op: &str, reference: Option<&Value>, extra: Value) {
        let mut frame = json!({"type": "ok", "op": op, "ref": reference});
        if let (Some(obj), Value::Object(extra)) = (frame.as_object_mut(), extra) {
            obj.extend(extra);
        }
        self.reply(&frame);
    }

    fn fail(&self, reference: Option<&Value>, error: ApiError) {
        self.reply(&error_frame(reference, &error));
    }

    async fn handle(&mut self, text: &str) {
        let command = match parse(text) {
            Ok(c) => c,
            Err(r) => return self.fail(r.reference.as_ref(), r.error),
        };
        match command {
            Command::Ping => self.reply(&json!({"type": "pong"})),
            Command::Subscribe {
                id,
                patterns,
                filter,
                last_event_id,
            } => self.subscribe(id, patterns, filter, last_event_id).await,
            Command::Unsubscribe { id } => {
                let r = Value::String(id.clone());
                match self.subs.remove(&id) {
                    Some(h) => {
                        // Wait for the pump to stop so no event of this subscription follows
                        // the `ok`.
                        h.stop.cancel();
                        let _ = h.task.await;
                        self.ok("unsubscribe", Some(&r), Value::Null);
                    }
                    None => self.fail(Some(&r), unknown_sub(&id)),
                }
            }
            Command::Filter { id, filter } => {
                let r = Value::String(id.clone());
                let Some(h) = self.subs.get(&id) else {
                    return self.fail(Some(&r), unknown_sub(&id));
                };
                match h.switch.set(filter) {
                    Ok(point) => self.ok("filter", Some(&r), json!({ "appliesAfter": point })),
                    Err(SwitchError::Gone) => self.fail(
                        Some(&r),
                        ApiError::bad_request("subscription_ended", SwitchError::Gone.to_string()),
                    ),
                    Err(SwitchError::Busy) => self.fail(
                        Some(&r),
                        ApiError::new(
                            axum::http::StatusCode::TOO_MANY_REQUESTS,
                            "filter_busy",
                            SwitchError::Busy.to_string(),
                        ),
                    ),
                }
            }
            Command::Publish { reference, event } => {
                if let Some(denied) = &self.publish_denied {
                    let error = ApiError::new(denied.status, denied.code, denied.message.clone());
                    return self.fail(reference.as_ref(), error);
                }
                match self.st.publish(vec![event]).await {
                    Ok(stored) => {
                        let ids: Vec<EventId> = stored.iter().map(|e| e.id).collect();
                        self.ok("publish", reference.as_ref(), json!({ "ids": ids }));
                    }
                    Err(e) => self.fail(reference.as_ref(), e),
                }
            }
        }
    }

    async fn subscribe(
        &mut self,
        id: String,
        patterns: PatternSet,
        filter: Option<Filter>,
        last_event_id: Option<EventId>,
    ) {
        let r = Value::String(id.clone());
        if self.subs.contains_key(&id) {
            return self.fail(
                Some(&r),
                ApiError::bad_request(
                    "duplicate_subscription",
                    format!("subscription {id:?} exists on this socket; unsubscribe it first or use another id"),
                ),
            );
        }
        let max = self.st.settings.ws_max_subscriptions;
        if self.subs.len() >= max {
            return self.fail(
                Some(&r),
                ApiError::bad_request(
                    "too_many_subscriptions",
                    format!("a socket holds at most {max} subscriptions"),
                ),
            );
        }
        let start = last_event_id.map_or(Start::Now, Start::After);
        let kick = CancellationToken::new();
        let sub = match Subscriber::open(&self.st, patterns, filter, start, kick).await {
            Ok(s) => s,
            Err(e) => return self.fail(Some(&r), e.into()),
        };
        tracing::debug!(sub = %id, subscriber = sub.id(), resume = ?last_event_id, "websocket subscription opened");
        // The `ok` is queued before the pump starts, so it precedes the subscription's events. It
        // carries the subscription's cursor: resuming from it loses nothing, even if no event
        // came yet.
        self.ok(
            "subscribe",
            Some(&r),
            json!({ "lastEventId": sub.position() }),
        );
        let stop = CancellationToken::new();
        let switch = sub.filter_switch();
        let task = tokio::spawn(
            pump(
                sub,
                id.clone(),
                self.out.clone(),
                self.closer.clone(),
                stop.clone(),
            )
            .in_current_span(),
        );
        self.subs.insert(id, SubHandle { stop, task, switch });
    }
}

fn unknown_sub(id: &str) -> ApiError {
    ApiError::bad_request(
        "unknown_subscription",
        format!(
            "no subscription {:?} on this socket",
            id.chars().take(MAX_REF_LEN).collect::<String>()
        ),
    )
}

/// Moves one subscription's items into the socket's queue until it ends or is stopped.
async fn pump(
    mut sub: Subscriber,
    id: String,
    out: mpsc::Sender<Message>,
    closer: Closer,
    stop: CancellationToken,
) {
    let sub_json = Value::String(id.clone()).to_string();
    loop {
        let item = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            item = sub.next() => item,
        };
        let msg = match item {
            Ok(Item::Event(frame)) => event_frame(&sub_json, frame.json()),
            Ok(Item::Reset {
                requested,
                oldest,
                cause,
                resume_from,
            }) => {
                let mut frame = json!({
                    "type": "reset",
                    "sub": id,
                    "cause": cause.as_str(),
                    "requestedId": requested,
                    "oldestId": oldest,
                });
                if let Some(from) = resume_from {
                    frame["lastEventId"] = json!(from);
                }
                frame.to_string()
            }
            // The session closes the socket itself on shutdown.
            Err(End::Shutdown) => return,
            // The hub cut this subscription off (and counted it): the socket cannot keep up.
            Err(End::Kicked) | Err(End::Closed) => {
                closer.close(
                    code::TRY_AGAIN,
                    "too slow: subscription queue full; reconnect and resume with lastEventId",
                );
                return;
            }
            Err(End::Store(e)) => {
                tracing::warn!(error = %e, "history read failed; closing the socket so the client resumes");
                closer.close(
                    code::INTERNAL,
                    "event store unavailable; reconnect and resume with lastEventId",
                );
                return;
            }
        };
        if !enqueue(&out, &closer, Message::Text(msg.into())) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(text: &str) -> Rejection {
        match parse(text) {
            Err(r) => r,
            Ok(c) => panic!("{text} parsed as {c:?}"),
        }
    }

    #[test]
    fn subscribe_frames_parse_and_validate() {
        let c = parse(r#"{"type":"subscribe","id":"s1","channels":["chat.*","news"],"filter":"data.n > 1","lastEventId":"5-1"}"#).unwrap();
        match c {
            Command::Subscribe {
                id,
                patterns,
                filter,
                last_event_id,
            } => {
                assert_eq!(id, "s1");
                assert!(patterns.matches("chat.a") && patterns.matches("news"));
                assert_eq!(filter.unwrap().source(), "data.n > 1");
                assert_eq!(last_event_id, Some(EventId::new(5, 1)));
            }
            other => panic!("{other:?}"),
        }
        // Empty filter and cursor mean none.
        assert!(matches!(
            parse(r#"{"type":"subscribe","id":"s","channels":["a"],"filter":"","lastEventId":""}"#),
            Ok(Command::Subscribe {
                filter: None,
                last_event_id: None,
                ..
            })
        ));
        let r = rejected(r#"{"type":"subscribe","id":"s2","channels":["a.>.b"]}"#);
        assert_eq!(
            (r.error.code, r.reference),
            ("invalid_channel", Some(json!("s2")))
        );
        let r = rejected(r#"{"type":"subscribe","id":"s2","channels":[]}"#);
        assert_eq!(r.error.code, "missing_channel");
        let r = rejected(r#"{"type":"subscribe","id":"s3","channels":["a"],"filter":"data.x >"}"#);
        assert_eq!(r.error.code, "invalid_filter");
        let frame = error_frame(r.reference.as_ref(), &r.error);
        assert_eq!(frame["ref"], "s3");
        assert_eq!(frame["line"], 1);
        assert!(frame["column"].as_u64().unwrap() >= 8, "{frame}");
        assert_eq!(
            rejected(r#"{"type":"subscribe","id":"s","channels":["a"],"lastEventId":"x"}"#)
                .error
                .code,
            "invalid_event_id"
        );
        assert_eq!(
            rejected(r#"{"type":"subscribe","id":"","channels":["a"]}"#)
                .error
                .code,
            "invalid_message"
        );
        assert_eq!(
            rejected(r#"{"type":"subscribe","id":"s","channels":["a"],"colour":1}"#)
                .error
                .code,
            "invalid_message"
        );
        assert_eq!(
            rejected(r#"{"type":"subscribe","id":7,"channels":["a"]}"#).reference,
            Some(json!(7))
        );
    }

    #[test]
    fn other_commands_parse() {
        assert!(matches!(parse(r#"{"type":"ping"}"#), Ok(Command::Ping)));
        assert!(
            matches!(parse(r#"{"type":"unsubscribe","id":"s1"}"#), Ok(Command::Unsubscribe { id }) if id == "s1")
        );
        assert!(matches!(
            parse(r#"{"type":"filter","id":"s1","filter":null}"#),
            Ok(Command::Filter { filter: None, .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"filter","id":"s1","filter":"type == 'x'"}"#),
            Ok(Command::Filter {
                filter: Some(_),
                ..
            })
        ));
        assert_eq!(
            rejected(r#"{"type":"filter","id":"s1"}"#).error.code,
            "invalid_message"
        );
        match parse(
            r#"{"type":"publish","channel":"a.b","eventType":"t","data":{"x":1},"ref":"p1"}"#,
        )
        .unwrap()
        {
            Command::Publish { reference, event } => {
                assert_eq!(reference, Some(json!("p1")));
                assert_eq!((event.channel.as_str(), event.kind.as_str()), ("a.b", "t"));
                assert_eq!(event.data, json!({"x": 1}));
            }
            other => panic!("{other:?}"),
        }
        let r = rejected(r#"{"type":"publish","channel":"a.*","ref":"p2"}"#);
        assert_eq!(
            (r.error.code, r.reference),
            ("invalid_channel", Some(json!("p2")))
        );
        assert_eq!(
            rejected(r#"{"type":"publish","channel":"a","eventType":"ssepush.x"}"#)
                .error
                .code,
            "invalid_event"
        );
    }

    #[test]
    fn garbage_gets_a_clear_error() {
        assert_eq!(rejected("{").error.code, "invalid_json");
        assert_eq!(rejected("[1]").error.code, "invalid_message");
        assert_eq!(rejected(r#"{"id":"s"}"#).error.code, "invalid_message");
        let r = rejected(r#"{"type":"shout","id":"s9"}"#);
        assert_eq!(
            (r.error.code, r.reference),
            ("unknown_type", Some(json!("s9")))
        );
        assert_eq!(
            rejected(r#"{"type":"ping","x":1}"#).error.code,
            "invalid_message"
        );
        let long = "x".repeat(MAX_REF_LEN + 1);
        assert_eq!(
            rejected(&format!(r#"{{"type":"unsubscribe","id":"{long}","x":1}}"#)).reference,
            None
        );
    }

    #[test]
    fn event_frames_wrap_the_shared_encoding() {
        let f = event_frame(r#""s\"1""#, br#"{"id":"1-0"}"#);
        let v: Value = serde_json::from_str(&f).unwrap();
        assert_eq!(
            v,
            json!({"type": "event", "sub": "s\"1", "event": {"id": "1-0"}})
        );
    }
}

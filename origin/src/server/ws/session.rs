//! One WebSocket session: its subscriptions (each the shared engine of
//! [`crate::server::subscribe`], driven by its own task), one bounded queue per socket drained
//! by a writer task, slow-consumer closing (1013), and the close on shutdown (1001).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::message::{Command, MAX_REF_LEN, error_frame, event_frame, parse};
use crate::channel::PatternSet;
use crate::event::EventId;
use crate::filter::Filter;
use crate::server::auth::Access;
use crate::server::state::AppState;
use crate::server::subscribe::{End, FilterSwitch, Item, Start, Subscriber, SwitchError};
use crate::service::error::ApiError;

/// How long a closing socket gets to take its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Queued messages written to the socket per flush.
const WRITE_BATCH: usize = 64;

/// Close codes (RFC 6455 §7.4.1).
mod code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    /// RFC 6455 §7.4.1: the endpoint received a message that violates its policy; here, a
    /// filter that went over its evaluation budget.
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const TRY_AGAIN: u16 = 1013;
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
    /// What the upgrade's reader credential grants.
    read: Access,
    /// What the upgrade's publisher credential grants, or why this socket may not publish.
    publish: Result<Access, ApiError>,
}

pub(super) async fn serve(
    st: AppState,
    socket: WebSocket,
    read: Access,
    publish: Result<Access, ApiError>,
) {
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
        read,
        publish,
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
                let allowed = match &self.publish {
                    Ok(access) => access.check_publish([event.channel.as_str()]),
                    Err(denied) => Err(ApiError::new(
                        denied.status,
                        denied.code,
                        denied.message.clone(),
                    )),
                };
                if let Err(error) = allowed {
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
        if let Err(e) = self.read.check_read(&patterns) {
            return self.fail(Some(&r), e);
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
            // Not asked for: the socket's writer pings on its own.
            Ok(Item::KeepAlive) => continue,
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
            Err(End::FilterBudget) => {
                closer.close(
                    code::POLICY,
                    "filter_budget: the filter exceeded its evaluation budget; simplify it",
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

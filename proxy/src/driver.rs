//! The **driver** of a live handoff: one task per handoff that sleeps until its wake policy
//! says send, sends through the platform's provider (under the provider-wide rate limit),
//! applies the result, expires the handoff at its ttl, and tears it down when it ends.
//!
//! The driver is only woken (a `Notify`) when something changes what it should do, so a
//! sleeping handoff costs a parked task and its buffer, nothing more.

use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use tracing::Instrument;

use crate::live::LiveHandoff;
use crate::node::Node;
use crate::push::PushError;
use crate::store::StoreError;
use crate::wake::{Action, Outcome};

/// Runs a handoff until it ends: wakes when the policy says so, expires at its ttl.
pub fn spawn_driver(node: Arc<Node>, h: Arc<LiveHandoff>) {
    let span = h.span().clone();
    tokio::spawn(drive(node, h).instrument(span));
}

async fn drive(node: Arc<Node>, h: Arc<LiveHandoff>) {
    let expiry = tokio::time::Instant::from_std(h.expires_at);
    while let Some(action) = h.next_action(Instant::now()) {
        let until = match action {
            Action::Send => {
                send_wake(&node, &h).await;
                node.persist(&h).await;
                continue;
            }
            Action::Idle => expiry,
            Action::WaitUntil(at) => tokio::time::Instant::from_std(at).min(expiry),
        };
        tokio::select! {
            _ = h.changed() => {}
            _ = h.stop.cancelled() => {}
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(until) => { h.expire_if_due(Instant::now()); }
        }
        node.persist(&h).await;
    }
    if h.is_released() {
        tracing::debug!("handoff driver ended: the handoff left this node");
        return;
    }
    node.teardown(&h).await;
    tracing::debug!("handoff driver ended");
}

async fn send_wake(node: &Node, h: &LiveHandoff) {
    // Fencing: a wake goes out only while this node's lease surely holds and the store still
    // names it the owner at its epoch; a release waits for a send in progress (`acting`).
    let _acting = h.acting.lock().await;
    if h.is_released() {
        return;
    }
    if !node.lease_ok() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        return;
    }
    match node.store.fence(&h.id, &h.fence).await {
        Ok(()) => {}
        Err(StoreError::Fenced(_)) => {
            tracing::warn!("handoff moved to another node; no wake from here");
            node.drop_local(h);
            return;
        }
        Err(StoreError::Replaced(_)) => {
            tracing::info!("replaced by a newer handoff for its push target; no wake");
            h.replaced();
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot confirm ownership; the wake waits");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            return;
        }
    }
    let platform = h.spec.push.platform();
    let send = h.begin_wake();
    let result = match node.providers.get(&h.spec.push.0) {
        None => Err(PushError::Config(format!(
            "no provider configured for platform {platform}"
        ))),
        Some(provider) => {
            node.rate_limit(platform).await;
            provider.send(&h.spec.push.0, &send.wake).await
        }
    };
    let outcome_label = match &result {
        Ok(()) => "accepted",
        Err(e) => e.outcome(),
    };
    metrics::counter!("ssepush_proxy_wakes_total", "provider" => platform, "outcome" => outcome_label)
        .increment(1);
    let jitter = rand::rng().random::<f64>();
    let now = Instant::now();
    if h.wake_result(&send.wake, &result, now, jitter) == Outcome::Accepted
        && let Some(since) = send.owed_since
    {
        metrics::histogram!("ssepush_proxy_wake_latency_seconds", "provider" => platform)
            .record(now.duration_since(since).as_secs_f64());
    }
}

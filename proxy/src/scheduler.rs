//! The **scheduler**: one task per node that asks each live handoff what to do when it is due
//! or changed ([`crate::schedule`]), sends its wakes through the platform's provider (under
//! the provider-wide rate limit), applies the results, expires handoffs at their ttl and tears
//! them down when they end.
//!
//! A sleeping handoff has no task of its own (issue 11: a task per handoff, with its timer,
//! `Notify`, `CancellationToken`, `tokio::sync::Mutex` and span, was most of a sleeping
//! handoff's memory): it is an entry in the schedule until its policy or its ttl makes it due,
//! or something changes it. Only I/O gets a short task — fencing and sending a wake, writing a
//! record, the teardown — and at most one per handoff at a time ([`LiveHandoff::try_act`]):
//! its writes stay in order, a release never overlaps a send, and the task lists the handoff
//! again when it is done. What to do is decided by [`decide`], plain code over the handoff and
//! the time; the wake policy itself stays in [`crate::wake`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tracing::Instrument;

use crate::live::{Acting, LiveHandoff};
use crate::node::Node;
use crate::push::PushError;
use crate::store::StoreError;
use crate::wake::{Action, Outcome};

/// What the scheduler does for a handoff it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It left this node, or was torn down: forget it.
    Forget,
    /// It ended (handed back, expired, failed, replaced): tear it down.
    TearDown,
    /// Send a wake now.
    Send,
    /// Ask it again at this instant (when its policy wants, or its ttl ends, whichever is
    /// first), or sooner if it changes.
    AskAt(Instant),
}

/// What to do for `h` at `now`: expires it when its ttl is over, then asks its wake policy.
pub fn decide(h: &LiveHandoff, now: Instant) -> Step {
    if h.is_released() || h.is_torn_down() {
        return Step::Forget;
    }
    h.expire_if_due(now);
    match h.next_action(now) {
        None if h.is_released() => Step::Forget,
        None => Step::TearDown,
        Some(Action::Send) => Step::Send,
        Some(Action::Idle) => Step::AskAt(h.expires_at),
        Some(Action::WaitUntil(at)) => Step::AskAt(at.min(h.expires_at)),
    }
}

/// Hands a new (created or claimed) handoff to the scheduler.
pub fn start(h: &Arc<LiveHandoff>) {
    h.schedule().changed(h.clone());
}

/// Runs until the node shuts down: asks every handoff that is due or changed.
pub async fn run(node: Arc<Node>) {
    let schedule = node.handoffs.clone();
    loop {
        let now = Instant::now();
        let (work, next) = schedule.take(now);
        for h in work {
            step(&node, h, now);
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = schedule.wake.notified() => {}
            _ = sleep => {}
        }
    }
}

fn step(node: &Arc<Node>, h: Arc<LiveHandoff>, now: Instant) {
    match decide(&h, now) {
        Step::Forget => node.handoffs.remove(&h),
        Step::AskAt(at) => {
            node.handoffs.set_timer(&h, Some(at));
            // Whatever changed it may have to be written through (a shared store only).
            if let Some(rec) = node.to_persist(&h)
                && let Some(acting) = h.try_act()
            {
                let node = node.clone();
                spawn_acting(acting, async move {
                    node.write(&h, rec).await;
                    true
                });
            }
        }
        Step::Send => {
            node.handoffs.remove(&h);
            if let Some(acting) = h.try_act() {
                let node = node.clone();
                spawn_acting(acting, async move {
                    send_wake(&node, &h).await;
                    node.persist(&h).await;
                    true
                });
            }
        }
        Step::TearDown => {
            node.handoffs.remove(&h);
            if let Some(acting) = h.try_act() {
                let node = node.clone();
                spawn_acting(acting, async move {
                    node.teardown(&h).await;
                    tracing::debug!("handoff ended");
                    false
                });
            }
        }
    }
}

/// Runs `work` for the handoff `acting` holds, in its span; when it is done (and the handoff
/// no longer acted for), lists the handoff again if `work` says so: whatever happened meanwhile
/// (it was skipped while busy) is looked at then.
fn spawn_acting(
    acting: Acting,
    work: impl std::future::Future<Output = bool> + Send + 'static,
) {
    let span = acting.handoff().span();
    tokio::spawn(
        async move {
            let again = work.await;
            let h = acting.handoff().clone();
            drop(acting);
            if again {
                h.touch();
            }
        }
        .instrument(span),
    );
}

async fn send_wake(node: &Node, h: &LiveHandoff) {
    if h.is_released() {
        return;
    }
    if !node.lease_ok() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return;
    }
    // Fencing (a shared store): a wake goes out only while this node's lease surely holds and
    // the store still names it the owner at its epoch. A single node owns all it holds.
    if node.shared {
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
                tokio::time::sleep(Duration::from_millis(500)).await;
                return;
            }
        }
    }
    let platform = h.spec.push.platform();
    let send = h.begin_wake(Duration::from_secs(node.settings.wake.push_ttl_secs));
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

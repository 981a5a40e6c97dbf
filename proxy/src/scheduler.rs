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
fn spawn_acting(acting: Acting, work: impl std::future::Future<Output = bool> + Send + 'static) {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use ssepush_origin::EventId;
    use ssepush_origin::event::SharedEvent;

    use super::*;
    use crate::handoff::State;
    use crate::live::Handoffs;
    use crate::push::{PushProvider, PushTarget, Wake};
    use crate::settings::Settings;
    use crate::store::Fence;
    use crate::upstream::{Subscriber, Verdicts};

    fn settings() -> Settings {
        Settings {
            allowed_origins: vec!["http://127.0.0.1:1".into()],
            ..Settings::default()
        }
    }

    /// A handoff of channel `a` from cursor 1-0, in `schedule`; `wake` is its `wake` object.
    fn handoff(
        settings: &Settings,
        schedule: &Arc<Handoffs>,
        wake: serde_json::Value,
    ) -> Arc<LiveHandoff> {
        let req = serde_json::from_value(serde_json::json!({
            "stream": {"url": "http://127.0.0.1:1/v1/sse?channel=a", "lastEventId": "1-0"},
            "push": {"platform": "fcm", "token": "fcm-token"},
            "wake": wake,
            "ttlSec": 60,
        }))
        .unwrap();
        let allow =
            crate::allow::OriginAllowList::parse(&settings.allowed_origins, settings.listen)
                .unwrap();
        let (spec, cursor) = crate::handoff::validate(req, settings, &allow, |_| true).unwrap();
        let fence = Arc::new(Fence {
            node: "n_test".into(),
            epoch: 1,
        });
        let token = crate::token::Token::generate();
        LiveHandoff::new(
            crate::token::new_id().into(),
            token.hash(),
            spec,
            cursor,
            settings,
            fence,
            schedule,
        )
    }

    fn deliver(h: &LiveHandoff, seq: u64) {
        let ev: SharedEvent = Arc::new(ssepush_origin::Event {
            id: EventId::new(1, seq),
            channel: "a".into(),
            kind: "message".into(),
            data: serde_json::json!({}),
            time: 1,
        });
        h.on_event(&ev, &mut Verdicts::new(&ev));
    }

    fn ids(v: &[Arc<LiveHandoff>]) -> Vec<Arc<str>> {
        v.iter().map(|h| h.id.clone()).collect()
    }

    #[test]
    fn a_sleeping_handoff_is_asked_again_at_its_expiry_and_then_torn_down() {
        let settings = settings();
        let t0 = Instant::now();
        let schedule = Handoffs::new(t0);
        let h = handoff(&settings, &schedule, serde_json::json!({}));
        // Nothing owed: asked again when its ttl ends, not before.
        assert_eq!(decide(&h, t0), Step::AskAt(h.expires_at));
        schedule.set_timer(&h, Some(h.expires_at));
        // Timers are kept to the millisecond, rounded up.
        let at = schedule.due(&h).unwrap();
        assert!(at >= h.expires_at && at - h.expires_at < Duration::from_millis(1));
        let before = h.expires_at - Duration::from_millis(1);
        assert!(schedule.take(before).0.is_empty());
        assert_eq!(decide(&h, before), Step::AskAt(h.expires_at));
        let (due, _) = schedule.take(at);
        assert_eq!(ids(&due), vec![h.id.clone()]);
        // Due: it expires, and ends.
        assert_eq!(decide(&h, h.expires_at), Step::TearDown);
        assert_eq!(h.state(), State::Expired);
    }

    #[test]
    fn a_wait_until_is_asked_again_at_that_instant_and_not_before() {
        let settings = settings();
        let t0 = Instant::now();
        let schedule = Handoffs::new(t0);
        let h = handoff(
            &settings,
            &schedule,
            serde_json::json!({"coalesceMs": 5000}),
        );
        // A wake goes out at the first owed event (leading edge)…
        deliver(&h, 1);
        assert_eq!(decide(&h, Instant::now()), Step::Send);
        let send = h.begin_wake(Duration::from_secs(60));
        let sent_at = Instant::now();
        h.wake_result(&send.wake, &Ok(()), sent_at, 0.5);
        h.check_in(None);
        // …the next no sooner than `coalesceMs` after it.
        deliver(&h, 2);
        let at = sent_at + Duration::from_millis(5000);
        assert_eq!(decide(&h, sent_at), Step::AskAt(at));
        schedule.take(sent_at);
        schedule.set_timer(&h, Some(at));
        assert!(schedule.take(at - Duration::from_millis(1)).0.is_empty());
        assert_eq!(decide(&h, at - Duration::from_millis(1)), Step::AskAt(at));
        assert_eq!(
            ids(&schedule.take(schedule.due(&h).unwrap()).0),
            vec![h.id.clone()]
        );
        assert_eq!(decide(&h, at), Step::Send);
    }

    #[test]
    fn a_change_lists_the_handoff_at_once_and_its_next_timer_replaces_the_old() {
        let settings = settings();
        let t0 = Instant::now();
        let schedule = Handoffs::new(t0);
        let h = handoff(&settings, &schedule, serde_json::json!({}));
        schedule.set_timer(&h, Some(h.expires_at));
        assert!(schedule.take(t0).0.is_empty());
        // An event owing a wake: listed now, not at its expiry.
        deliver(&h, 1);
        assert_eq!(ids(&schedule.take(t0).0), vec![h.id.clone()]);
        assert_eq!(decide(&h, Instant::now()), Step::Send);
        // A handback: listed, and it ends.
        h.close(None);
        assert_eq!(ids(&schedule.take(t0).0), vec![h.id.clone()]);
        assert_eq!(decide(&h, t0), Step::TearDown);
        // Once torn down or released, it is forgotten.
        assert!(h.begin_teardown());
        assert_eq!(decide(&h, t0), Step::Forget);
        let other = handoff(&settings, &schedule, serde_json::json!({}));
        other.release_locally();
        assert_eq!(decide(&other, t0), Step::Forget);
    }

    /// A push service that records the handoffs it was asked to wake.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    #[async_trait]
    impl PushProvider for Recorder {
        async fn send(&self, _: &PushTarget, wake: &Wake) -> Result<(), PushError> {
            self.0.lock().unwrap().push(wake.handoff_id.clone());
            Ok(())
        }
    }

    async fn eventually(what: &str, ok: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_scheduler_sends_wakes_tears_down_and_stops_on_shutdown() {
        ssepush_origin::service::tls::install_default_provider();
        let recorder = Arc::new(Recorder::default());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let node = Node::new(
            settings(),
            crate::push::providers_all(recorder.clone()),
            "127.0.0.1:0".parse().unwrap(),
            shutdown.clone(),
            Arc::new(crate::store::MemoryStore::new(10)),
        )
        .unwrap();
        let task = tokio::spawn(run(node.clone()));
        let h = handoff(&node.settings, &node.handoffs, serde_json::json!({}));
        node.add_live(h.clone());
        start(&h);
        // Sleeping: only its expiry is scheduled.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let due = node.handoffs.due(&h).expect("its expiry is scheduled");
        assert!(due >= h.expires_at && due <= h.expires_at + Duration::from_millis(1));
        assert!(recorder.0.lock().unwrap().is_empty());
        // An event owing a wake: sent, and the handoff is woken.
        deliver(&h, 1);
        eventually("a wake", || {
            recorder.0.lock().unwrap().len() == 1 && h.state() == State::Woken
        })
        .await;
        // Handed back: torn down by the scheduler, its final record written.
        h.close(None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.store.get(&h.id).await.unwrap().is_none() {
            assert!(Instant::now() < deadline, "the final record");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(h.is_torn_down());
        assert_eq!(node.handoffs.timers(), 0);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the scheduler stops on shutdown")
            .unwrap();
    }
}

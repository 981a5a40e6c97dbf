//! The origin's webhook counters: every acknowledged delivery is counted once as a success,
//! refused attempts as failures, and a webhook that reached `max_failures` once as disabled.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use crate::support::webhooks::{Rx, fast, publish, register, status, wait_for_ids};
use crate::support::{TestOrigin, eventually, exclusive, memory_settings, metric};

const SUCCESS: &str = "ssepush_origin_webhook_deliveries_total{outcome=\"success\"}";
const FAILURE: &str = "ssepush_origin_webhook_deliveries_total{outcome=\"failure\"}";
const DISABLED: &str = "ssepush_origin_webhooks_disabled_total";

#[tokio::test]
async fn deliveries_failures_and_disables_are_counted() {
    let _only = exclusive().await;
    let mut settings = fast(memory_settings());
    settings.webhooks.max_failures = 3;
    let origin = TestOrigin::start(settings).await;
    let (success, failure, disabled) = (
        metric(&origin.url, SUCCESS).await,
        metric(&origin.url, FAILURE).await,
        metric(&origin.url, DISABLED).await,
    );
    let rx = Rx::start().await;
    rx.state.fail_next.store(2, Ordering::SeqCst);
    let id = register(
        &origin,
        &rx,
        json!({"url": rx.url, "channels": ["counted"]}),
    )
    .await;
    let mut want = Vec::new();
    for i in 0..4 {
        want.push(publish(&origin, "counted", json!(i)).await);
    }
    wait_for_ids(&rx, &want, Duration::from_secs(20)).await;
    // The worker counts an attempt once it has the answer, just after the receiver recorded it.
    eventually(
        Duration::from_secs(10),
        "every acknowledgement counted",
        || async { metric(&origin.url, SUCCESS).await - success == rx.acked() as f64 },
    )
    .await;
    assert!(metric(&origin.url, FAILURE).await - failure >= rx.refused() as f64);
    assert!(rx.refused() >= 2);

    rx.state.failing.store(true, Ordering::SeqCst);
    publish(&origin, "counted", json!("refused")).await;
    eventually(
        Duration::from_secs(10),
        "the webhook is disabled",
        || async { status(&origin, &id).await["state"] == "disabled" },
    )
    .await;
    assert_eq!(metric(&origin.url, DISABLED).await - disabled, 1.0);
    origin.stop().await;
}

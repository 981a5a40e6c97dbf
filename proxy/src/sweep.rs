//! The sweeper: once a second, expires handoffs past their ttl (their drivers do it too; this
//! catches any whose driver is busy, e.g. waiting on a provider) and forgets finished ones
//! after `keep_finished_secs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ssepush_origin::clock::now_ms;

use crate::node::Node;

/// Runs until the node shuts down.
pub async fn sweep(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        for h in node.all_live() {
            if h.expire_if_due(now) {
                node.teardown(&h).await;
            }
        }
        let cutoff = now_ms().saturating_sub(node.settings.keep_finished_secs * 1000);
        if let Ok(ids) = node.store.finished_before(cutoff).await {
            for id in ids {
                let _ = node.store.remove(&id).await;
                node.live.write().unwrap().remove(&id);
            }
        }
    }
}

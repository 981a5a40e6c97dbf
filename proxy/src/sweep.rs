//! The sweeper: once a second, expires handoffs past their ttl (the scheduler does it at the
//! ttl; this catches any whose task is busy, e.g. waiting on a provider) and forgets finished
//! ones after `keep_finished_secs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ssepush_origin::clock::now_ms;

use crate::node::Node;

/// Most `finished_before` batches forgotten per tick (the Redis store answers up to 1,000 ids a
/// batch): far above any churn one node serves.
const MAX_BATCHES_PER_TICK: usize = 50;

/// Runs until the node shuts down.
pub async fn sweep(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let mut ended = 0;
        for h in node.all_live() {
            if h.expire_if_due(now) {
                node.teardown(&h).await;
            }
            if h.state().is_terminal() {
                ended += 1;
            }
        }
        // Ended handoffs stay readable until forgotten, but no longer hold a place of
        // `max_handoffs` (short ttls would otherwise fill the node for `keep_finished_secs`).
        node.set_ended_count(ended);
        // The store answers at most a batch per call: keep asking (up to a bound per tick, so
        // one tick cannot run away) or sustained churn above a batch a second would pile up
        // finished records faster than they are forgotten.
        let cutoff = now_ms().saturating_sub(node.settings.keep_finished_secs * 1000);
        for _ in 0..MAX_BATCHES_PER_TICK {
            let Ok(ids) = node.store.finished_before(cutoff).await else {
                break;
            };
            if ids.is_empty() {
                break;
            }
            for id in ids {
                let _ = node.store.remove(&id).await;
                node.forget_live(&id);
            }
        }
    }
}

//! The **fleet loop**: how a node on a shared store keeps its lease, takes over the handoffs of
//! dead nodes, takes its share of released ones, gives away its excess when a node joins, and
//! hands everything over when it drains.
//!
//! Every `fleet.tick_ms` the node renews its lease, then looks at the fleet
//! ([`crate::store::HandoffStore::fleet`]): its **share** is ⌈handoffs ÷ live nodes⌉. It
//! claims handoffs of nodes whose lease ran out and released ones, up to its share; when it
//! holds more than its share by over `fleet.rebalance_slack`, it releases the excess (after
//! writing their records through) for the others to claim. A node that cannot renew stops
//! sending wakes once its lease may have run out ([`Node::lease_ok`]); told its lease did run
//! out, it drops every handoff and rejoins under a new id. On shutdown it releases everything
//! and leaves, so peers take over within one tick instead of waiting for the lease to expire.
//!
//! A claimed handoff resumes from its stored device cursor: the stream is read again from
//! there (events the phone has not acknowledged are buffered again and wake it as they would
//! have), with its outstanding wake and hourly budget as stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::live::LiveHandoff;
use crate::node::Node;
use crate::protocol::HandoffState;
use crate::store::{Owned, StoreError};

/// Handoffs claimed per store call during a takeover.
const CLAIM_CHUNK: usize = 1024;

/// Runs until the node shuts down, then drains. Returns at once on a single node.
pub async fn run(node: Arc<Node>) {
    if !node.shared {
        return;
    }
    // The lease is renewed by its own task: balancing (claims, releases) may take longer than a
    // tick under load, and must never make the lease run out.
    let renewer = tokio::spawn(renew(node.clone()));
    let mut tick = tokio::time::interval(Duration::from_millis(node.settings.fleet.tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !node.lease_ok() {
            continue;
        }
        let me = node.node_id();
        if let Err(e) = balance(&node, &me).await {
            tracing::warn!(error = %e, "fleet balancing failed; retried next tick");
        }
    }
    let _ = renewer.await;
    drain(&node).await;
}

/// Keeps the lease: renews it every tick; a lease found run out makes the node drop every
/// handoff and rejoin as a new member.
async fn renew(node: Arc<Node>) {
    let ttl = Duration::from_millis(node.settings.fleet.lease_ttl_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(node.settings.fleet.tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut joined = false;
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let me = node.node_id();
        let sent = Instant::now();
        match node
            .store
            .heartbeat(&me, &node.advertise_url, ttl, !joined)
            .await
        {
            Ok(true) => {
                if !joined {
                    tracing::info!(node = %me, "joined the fleet");
                }
                joined = true;
                node.lease_renewed(sent, ttl);
            }
            Ok(false) => {
                lost_lease(&node);
                joined = false;
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the lease"),
        }
    }
}

/// The lease ran out before it was renewed: others may own this node's handoffs now.
fn lost_lease(node: &Node) {
    let handoffs = node.all_live();
    tracing::error!(
        node = %node.node_id(),
        handoffs = handoffs.len(),
        "lease lost: dropping every handoff and rejoining as a new member"
    );
    metrics::counter!("ssepush_proxy_leases_lost_total").increment(1);
    for h in handoffs {
        node.drop_local(&h);
    }
    node.new_identity();
}

/// Live (non-terminal) handoffs this node holds.
fn holding(node: &Node) -> Vec<Arc<LiveHandoff>> {
    node.all_live()
        .into_iter()
        .filter(|h| !h.state().is_terminal() && !h.is_released())
        .collect()
}

async fn balance(node: &Arc<Node>, me: &str) -> Result<(), StoreError> {
    let view = node.store.fleet().await?;
    let alive = view
        .nodes
        .iter()
        .filter(|n| n.expires_in_ms >= 0)
        .count()
        .max(1);
    let total: u64 = view.nodes.iter().map(|n| n.holds).sum::<u64>() + view.free;
    let share = total.div_ceil(alive as u64) as usize;
    let mut mine = holding(node).len();
    let dead: Vec<_> = view.nodes.iter().filter(|n| n.expires_in_ms < 0).collect();
    for dead in &dead {
        // Up to this node's share (in chunks): nodes taking over at once split the dead
        // node's handoffs between them, and the last call forgets the dead node.
        let mut claimed_here = 0;
        let started = Instant::now();
        loop {
            let room = share.saturating_sub(mine).min(CLAIM_CHUNK);
            if room == 0 {
                break;
            }
            let claimed = node.store.claim_dead(&dead.node, me, room).await?;
            if claimed.is_empty() {
                break;
            }
            claimed_here += claimed.len();
            mine += adopt(node, claimed, "dead").await;
        }
        // Forgets the dead node once nothing of it is left (whoever took the last of it).
        node.store.claim_dead(&dead.node, me, 0).await?;
        if claimed_here > 0 {
            tracing::info!(
                dead = %dead.node,
                claimed = claimed_here,
                dead_for_ms = -dead.expires_in_ms,
                took_ms = started.elapsed().as_millis() as u64,
                "took over a dead node's handoffs"
            );
            metrics::counter!("ssepush_proxy_failovers_total").increment(claimed_here as u64);
        }
    }
    if view.free > 0 {
        let room = share.saturating_sub(mine);
        let claimed = node.store.claim_free(me, room).await?;
        mine += adopt(node, claimed, "free").await;
    }
    let slack = node.settings.fleet.rebalance_slack;
    // Only once the fleet has settled (no takeover, nothing free): releasing while others
    // claim would move handoffs twice.
    if alive > 1 && dead.is_empty() && view.free == 0 && mine > share + slack {
        let excess: Vec<_> = holding(node).into_iter().take(mine - share).collect();
        tracing::info!(
            released = excess.len(),
            share,
            "releasing handoffs over this node's share"
        );
        release_all(node, excess).await;
    }
    Ok(())
}

/// Starts watching and scheduling claimed handoffs; returns how many became live here.
async fn adopt(node: &Arc<Node>, mut claimed: Vec<Owned>, from: &'static str) -> usize {
    // Oldest cursors first: later handoffs of the same stream then join its watcher live
    // instead of each reading its own catch-up.
    claimed.sort_by_key(|o| o.rec.cursor);
    let mut adopted = 0;
    // Handoffs of one stream join together: those with one cursor share one catch-up reader.
    let mut streams: std::collections::HashMap<[u8; 32], Vec<Arc<LiveHandoff>>> =
        std::collections::HashMap::new();
    for o in claimed {
        let Some(fence) = o.fence() else { continue };
        metrics::counter!("ssepush_proxy_lease_claims_total", "from" => from).increment(1);
        match LiveHandoff::restore(
            &o,
            Arc::new(fence.clone()),
            &node.settings,
            &node.allow,
            &node.handoffs,
            &node.streams,
        ) {
            Ok(h) => {
                node.add_live(h.clone());
                streams.entry(h.spec.stream.key()).or_default().push(h);
                adopted += 1;
            }
            Err(reason) => {
                // Ended, or no longer valid here: record why, out of every node's way.
                let mut rec = o.rec;
                if !rec.state.is_terminal() {
                    tracing::warn!(id = %rec.id, %reason, "a claimed handoff cannot resume");
                    rec.state = HandoffState::Failed;
                    rec.last_error = Some(format!("cannot resume after a takeover: {reason}"));
                    rec.failed_reason = rec.last_error.clone();
                }
                rec.finished_at_ms
                    .get_or_insert_with(ssepush_origin::clock::now_ms);
                if let Err(e) = node.store.put(rec, &fence).await {
                    tracing::warn!(error = %e, "cannot record an ended handoff");
                }
            }
        }
    }
    for (_, hs) in streams {
        let spec = hs[0].spec.stream.clone();
        let subs: Vec<Arc<dyn crate::upstream::Subscriber>> = hs
            .iter()
            .map(|h| h.clone() as Arc<dyn crate::upstream::Subscriber>)
            .collect();
        node.upstreams.join_many(&spec, subs);
        for h in &hs {
            crate::scheduler::start(h);
        }
    }
    adopted
}

/// Gives handoffs up for peers to claim: each stops acting here (waiting for a wake in
/// progress), then its record is written and it is freed in one fenced step.
async fn release_all(node: &Node, handoffs: Vec<Arc<LiveHandoff>>) {
    futures::stream::iter(handoffs)
        .for_each_concurrent(64, |h| async move {
            let _acting = h.act().await;
            if h.is_released() {
                return;
            }
            node.drop_local(&h);
            match node.store.release(h.record(), &h.fence).await {
                Ok(()) => {
                    metrics::counter!("ssepush_proxy_handoffs_released_total").increment(1);
                }
                Err(e) => tracing::warn!(parent: &h.span(), error = %e, "cannot release handoff"),
            }
        })
        .await;
}

/// Shutdown: release every handoff and leave, so peers take over at once. A handoff that could
/// not be released stays this node's until its lease runs out (then it is claimed as a dead
/// node's).
async fn drain(node: &Node) {
    let handoffs = holding(node);
    let n = handoffs.len();
    release_all(node, handoffs).await;
    let me = node.node_id();
    match node.store.owned(&me).await {
        Ok(left) if left.is_empty() => {
            if let Err(e) = node.store.leave(&me).await {
                tracing::warn!(error = %e, "cannot leave the fleet; the lease will run out");
            }
            tracing::info!(released = n, "drained: every handoff released");
        }
        Ok(left) => tracing::warn!(
            left = left.len(),
            "drained with handoffs still recorded as this node's: peers take them when the lease runs out"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot check the drain"),
    }
}

//! The load generator the simulator uses (and `ssepush publish --rate`): publishes on chosen
//! channels at a steady rate, in batches, and records what it published — id, channel, data
//! and publish time — so the checker knows exactly what every phone was owed.
//!
//! Rate is kept by a credit scheme over elapsed time rather than a sleep per event, so a slow
//! request is made up by a larger next batch instead of silently lowering the rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ssepush_origin::event::{EventId, PublishRequest};
use tokio_util::sync::CancellationToken;

use crate::client::origin::{ClientError, OriginClient};

/// One published event as the checker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub id: EventId,
    /// Since the run's start, taken just before the publish request left.
    pub at: Duration,
    pub data: Value,
}

/// What was published, per channel, in id order.
#[derive(Debug, Default)]
pub struct PublishLog {
    channels: Mutex<HashMap<String, Vec<Published>>>,
}

impl PublishLog {
    pub fn new() -> Arc<PublishLog> {
        Arc::new(PublishLog::default())
    }

    pub fn record(&self, channel: &str, p: Published) {
        self.channels
            .lock()
            .unwrap()
            .entry(channel.to_owned())
            .or_default()
            .push(p);
    }

    /// Everything published on these channels, merged in id order (one origin's ids are
    /// totally ordered across channels).
    pub fn for_channels(&self, channels: &[String]) -> Vec<(String, Published)> {
        let map = self.channels.lock().unwrap();
        let mut all: Vec<(String, Published)> = channels
            .iter()
            .filter_map(|c| map.get(c).map(|v| (c, v)))
            .flat_map(|(c, v)| v.iter().map(move |p| (c.clone(), p.clone())))
            .collect();
        all.sort_by_key(|(_, p)| p.id);
        all
    }

    /// The newest id published on any of these channels.
    pub fn newest_for(&self, channels: &[String]) -> Option<EventId> {
        let map = self.channels.lock().unwrap();
        channels
            .iter()
            .filter_map(|c| map.get(c).and_then(|v| v.last()).map(|p| p.id))
            .max()
    }

    pub fn total(&self) -> u64 {
        self.channels
            .lock()
            .unwrap()
            .values()
            .map(|v| v.len() as u64)
            .sum()
    }
}

/// How to publish.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Channels to publish on, round-robin.
    pub channels: Vec<String>,
    /// Events per second, over all channels.
    pub rate: f64,
    /// Stop after this many events (None: until cancelled).
    pub count: Option<u64>,
    /// Event type; None is the origin's default (`message`).
    pub kind: Option<String>,
    /// Most events in one request (the origin's `max_batch` is 1000 by default).
    pub max_batch: usize,
    /// Batching tick.
    pub tick: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            channels: Vec::new(),
            rate: 100.0,
            count: None,
            kind: None,
            max_batch: 500,
            tick: Duration::from_millis(50),
        }
    }
}

/// What a publisher did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishSummary {
    pub published: u64,
    pub failed_requests: u64,
    pub last_error: Option<String>,
    pub elapsed: Duration,
}

/// The body of the `n`th event: a sequence number and a severity (0–4) for filters to chew on.
pub fn event_data(n: u64) -> Value {
    json!({"seq": n, "severity": n % 5})
}

/// How many events are due after `elapsed` at `rate`, minus those already sent, capped.
pub fn due(rate: f64, elapsed: Duration, sent: u64, count: Option<u64>, max_batch: usize) -> u64 {
    let mut target = (rate * elapsed.as_secs_f64()).floor() as u64;
    if let Some(c) = count {
        target = target.min(c);
    }
    target.saturating_sub(sent).min(max_batch as u64)
}

/// Publishes until `count` is reached or `stop` is cancelled, recording into `log` with times
/// relative to `epoch`. A failed request is counted and retried on the next tick (its events
/// were not published, so nothing is owed for them).
pub async fn run(
    client: &OriginClient,
    config: &PublisherConfig,
    log: &PublishLog,
    epoch: Instant,
    stop: CancellationToken,
) -> PublishSummary {
    let start = Instant::now();
    let mut summary = PublishSummary::default();
    let mut next_channel = 0usize;
    let mut ticker = tokio::time::interval(config.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if config.channels.is_empty() {
        return summary;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let n = due(
            config.rate,
            start.elapsed(),
            summary.published,
            config.count,
            config.max_batch,
        );
        if n == 0 {
            if config.count.is_some_and(|c| summary.published >= c) {
                break;
            }
            continue;
        }
        let mut batch = Vec::with_capacity(n as usize);
        let mut meta = Vec::with_capacity(n as usize);
        for i in 0..n {
            let channel = &config.channels[next_channel % config.channels.len()];
            next_channel += 1;
            let data = event_data(summary.published + i);
            batch.push(PublishRequest {
                channel: channel.clone(),
                kind: config.kind.clone(),
                data: data.clone(),
            });
            meta.push((channel.clone(), data));
        }
        let at = epoch.elapsed();
        match client.publish(batch.as_slice()).await {
            Ok(ids) => {
                for (id, (channel, data)) in ids.into_iter().zip(meta) {
                    log.record(&channel, Published { id, at, data });
                }
                summary.published += n;
            }
            Err(e) => {
                // Undo the round-robin so the retry publishes the same channels.
                next_channel -= n as usize;
                summary.failed_requests += 1;
                summary.last_error = Some(e.to_string());
            }
        }
    }
    summary.elapsed = start.elapsed();
    summary
}

/// `ssepush publish --rate R --count N`: `count` events on one channel, each `{"seq", "data"}`
/// around the given data; prints nothing per event.
pub async fn publish_at_rate(
    client: &OriginClient,
    channel: &str,
    kind: Option<&str>,
    data: Value,
    rate: f64,
    count: u64,
) -> Result<PublishSummary, ClientError> {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while sent < count {
        ticker.tick().await;
        let n = due(rate, start.elapsed(), sent, Some(count), 500);
        if n == 0 {
            continue;
        }
        let batch: Vec<PublishRequest> = (sent..sent + n)
            .map(|seq| PublishRequest {
                channel: channel.to_owned(),
                kind: kind.map(str::to_owned),
                data: json!({"seq": seq, "data": data}),
            })
            .collect();
        client.publish(batch.as_slice()).await?;
        sent += n;
    }
    Ok(PublishSummary {
        published: sent,
        elapsed: start.elapsed(),
        ..PublishSummary::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keeps_the_rate_and_the_caps() {
        let s = Duration::from_secs;
        assert_eq!(due(100.0, s(1), 0, None, 500), 100);
        assert_eq!(due(100.0, s(1), 60, None, 500), 40);
        assert_eq!(due(100.0, s(10), 0, None, 500), 500);
        assert_eq!(due(100.0, s(10), 0, Some(30), 500), 30);
        assert_eq!(due(100.0, s(10), 30, Some(30), 500), 0);
        assert_eq!(due(100.0, Duration::ZERO, 0, None, 500), 0);
    }

    #[test]
    fn the_log_merges_channels_in_id_order() {
        let log = PublishLog::new();
        let p = |seq| Published {
            id: EventId::new(1, seq),
            at: Duration::ZERO,
            data: Value::Null,
        };
        log.record("a", p(1));
        log.record("b", p(2));
        log.record("a", p(3));
        log.record("c", p(4));
        let ids: Vec<u64> = log
            .for_channels(&["a".into(), "b".into()])
            .iter()
            .map(|(_, p)| p.id.seq)
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(log.newest_for(&["b".into()]), Some(EventId::new(1, 2)));
        assert_eq!(log.newest_for(&["zz".into()]), None);
        assert_eq!(log.total(), 4);
    }
}

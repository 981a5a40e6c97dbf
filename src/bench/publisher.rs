//! The benchmark publisher: stamped events at a fixed rate to any publish URL, either as
//! ssepush events (`POST /v1/events` with `{"channel","data"}`) or as a raw body (a server
//! that relays the POST body as the event, like Nchan's publisher location). Each event's
//! stamp is taken just before its request goes out; a request still in flight does not delay
//! the next tick (up to `max_in_flight`; past that a tick is counted as skipped).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::payload::{self, Stamp};
use super::stats::{Latency, LatencySummary, unix_micros};

/// How the event is posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PublishFormat {
    /// `{"channel": CHANNEL, "data": PAYLOAD}` (the ssepush origin's `POST /v1/events`).
    Ssepush,
    /// The payload itself as the body (Nchan's publisher, and servers like it).
    Raw,
}

/// What to publish where.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub url: String,
    pub format: PublishFormat,
    pub channel: String,
    pub tag: u64,
    /// Filler bytes per payload.
    pub pad: usize,
    /// Events per second.
    pub rate: f64,
    pub duration: Duration,
    pub max_in_flight: usize,
}

/// What the publisher did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// Ticks: `rate × duration`.
    pub asked: u64,
    /// Answered 2xx.
    pub ok: u64,
    pub failed: u64,
    /// Ticks skipped because `max_in_flight` requests were outstanding.
    pub skipped: u64,
    pub first_error: Option<String>,
    /// The publish requests' round trips.
    pub request_latency: Option<LatencySummary>,
    /// Seconds from the first tick to the last answer.
    pub elapsed_secs: f64,
}

/// Publishes by `plan`, calling `on_tick` after each tick with the count so far; returns once
/// every request was answered.
pub async fn run(plan: &PublishPlan, mut on_tick: impl FnMut(u64)) -> Published {
    let client = crate::client::http::client();
    let asked = (plan.rate * plan.duration.as_secs_f64()).floor().max(1.0) as u64;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let latency = Arc::new(std::sync::Mutex::new(Latency::new()));
    let sem = Arc::new(Semaphore::new(plan.max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let mut skipped = 0;
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.rate.max(1e-3)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..asked {
        tick.tick().await;
        on_tick(seq + 1);
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let (client, url, channel) = (client.clone(), plan.url.clone(), plan.channel.clone());
        let (ok, failed, first_error, latency) = (
            ok.clone(),
            failed.clone(),
            first_error.clone(),
            latency.clone(),
        );
        let (format, tag, pad) = (plan.format, plan.tag, plan.pad);
        tasks.spawn(async move {
            let _permit = permit;
            let sent_us = unix_micros();
            let data = payload::encode(Stamp { tag, seq, sent_us }, pad);
            let body = match format {
                PublishFormat::Raw => data,
                PublishFormat::Ssepush => format!(
                    "{{\"channel\":{},\"data\":{data}}}",
                    serde_json::Value::String(channel)
                ),
            };
            let sent = std::time::Instant::now();
            let result = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let outcome = match result {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    Ok(())
                }
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            latency
                .lock()
                .unwrap()
                .record_us(sent.elapsed().as_micros() as u64);
            match outcome {
                Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    first_error.lock().unwrap().get_or_insert(e);
                    failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        });
    }
    while tasks.join_next().await.is_some() {}
    let request_latency = latency.lock().unwrap().summary();
    let first_error = first_error.lock().unwrap().clone();
    Published {
        asked,
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        skipped,
        first_error,
        request_latency,
        elapsed_secs: start.elapsed().as_secs_f64(),
    }
}

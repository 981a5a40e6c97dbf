//! `ssepush bench wake`: wake latency, origin publish → push received at the simulated gateway,
//! at a wake rate, with a sleeping population of handoffs.
//!
//! `--handoffs` P sleeping handoffs (APNs, one device token each) are spread over `--streams` M
//! channels of the origin, all from the origin's head. Each publish goes to the next channel
//! not yet used and owes a wake to every handoff on it (P/M of them), so publishes go out at
//! `rate × M / P` per second; a channel is published to once, so a run lasts at most
//! `P / rate` seconds. The gateway's push record (`GET /_gateway/pushes`, polled) says when each
//! push arrived, in Unix milliseconds: latency = arrival − the publish request's send time,
//! to ±1 ms. Wakes owed but never seen by the end of the drain are reported as missing.
//!
//! The proxy must be configured against that gateway (`ssepush proxy --gateway-credentials DIR`)
//! and allowed to watch the origin.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;

use super::output::{self, Table};
use super::proxy_api::{Created, ProxyApi, device_token, handoff_body, origin_head};
use super::stats::{Latency, LatencySummary, unix_micros};
use crate::gateway::client::GatewayClient;
use crate::gateway::control::records::PushQuery;

/// Flags of `ssepush bench wake`.
#[derive(Debug, Clone, clap::Args)]
pub struct WakeFlags {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub origin: String,
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    pub proxy: String,
    /// The simulated gateway the proxy pushes to (its push record is read).
    #[arg(long, default_value = "http://127.0.0.1:8070")]
    pub gateway: String,
    /// Bearer API key for creating handoffs (a proxy on loopback needs none).
    #[arg(long, env = "SSEPUSH_BENCH_API_KEY")]
    pub api_key: Option<String>,
    /// Sleeping handoffs.
    #[arg(long, default_value_t = 1000)]
    pub handoffs: usize,
    /// Channels (upstream streams) they are spread over.
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// Wakes per second asked.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long to publish (at most handoffs / rate).
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// The handoffs' `wake.coalesceMs` (default: the proxy's own default).
    #[arg(long)]
    pub coalesce_ms: Option<u64>,
    /// Handoff creations in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// After the last publish, how long to wait for the owed wakes.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub drain: Duration,
    /// Leave the handoffs in place at the end.
    #[arg(long)]
    pub no_cleanup: bool,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The JSON document of `ssepush bench wake --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WakeReport {
    pub bench: &'static str,
    pub origin: String,
    pub proxy: String,
    pub gateway: String,
    pub handoffs: usize,
    pub streams: usize,
    pub rate: f64,
    pub duration_secs: f64,
    pub coalesce_ms: Option<u64>,
    pub load_average_before: String,
    pub load_average_after: String,
    pub created: u64,
    pub create_errors: u64,
    pub first_create_error: Option<String>,
    /// `ssepush_proxy_upstream_connections` when publishing began.
    pub upstream_connections: Option<f64>,
    pub publishes: u64,
    pub publish_errors: u64,
    /// Wakes owed: handoffs on the channels published to.
    pub wakes_owed: u64,
    /// Owed devices that got a push (first push each).
    pub wakes_received: u64,
    pub wakes_missing: u64,
    /// Pushes beyond the first per device.
    pub extra_pushes: u64,
    /// Pushes the gateway refused (non-2xx, e.g. injected faults).
    pub refused_pushes: u64,
    /// Wakes per second over the publishing time.
    pub wakes_per_sec: f64,
    /// Publish → push received, milliseconds (±1 ms: the gateway records milliseconds).
    pub latency: Option<LatencySummary>,
    pub handed_back: u64,
}

/// Runs the benchmark and prints its report.
///
/// Errors: bad flags, the origin's head or the gateway's record cannot be read.
pub async fn run(flags: WakeFlags) -> anyhow::Result<()> {
    let report = measure(&flags).await?;
    output::emit(flags.json, &table(&report), &report)
}

/// Runs the benchmark and returns its report.
pub async fn measure(flags: &WakeFlags) -> anyhow::Result<WakeReport> {
    anyhow::ensure!(flags.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(
        flags.streams > 0 && flags.handoffs >= flags.streams,
        "need 0 < --streams ≤ --handoffs"
    );
    let load_average_before = output::load_average();
    let origin = flags.origin.trim_end_matches('/').to_owned();
    let api = ProxyApi::new(&flags.proxy, flags.api_key.clone());
    let gateway = GatewayClient::new(&flags.gateway);
    let head = origin_head(&origin).await?;
    // A fresh run tag: channels and device tokens of this run alone (a device's hourly budget
    // outlives its handoff).
    let run = rand::random::<u32>();
    let channel = |j: usize| format!("bench.wake.{run:08x}.{j}");
    let device = |i: usize| (u64::from(run) << 32) | i as u64;

    // The sleeping population.
    let pb = output::bar(flags.json, flags.handoffs as u64);
    pb.set_message("creating sleeping handoffs");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let created = Arc::new(Mutex::new(Vec::<Created>::with_capacity(flags.handoffs)));
    let errors = Arc::new(Mutex::new((0u64, None::<String>)));
    let mut creators = tokio::task::JoinSet::new();
    for _ in 0..flags.concurrency.max(1) {
        let (api, next, created, errors, pb) = (
            api.clone(),
            next.clone(),
            created.clone(),
            errors.clone(),
            pb.clone(),
        );
        let (origin, head, n, m, coalesce) = (
            origin.clone(),
            head.clone(),
            flags.handoffs,
            flags.streams,
            flags.coalesce_ms,
        );
        creators.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let url = format!("{origin}/v1/sse?channel=bench.wake.{run:08x}.{}", i % m);
                let body = handoff_body(&url, &head, (u64::from(run) << 32) | i as u64, coalesce);
                match api.create(&body).await {
                    Ok(c) => created.lock().unwrap().push(c),
                    Err(e) => {
                        let mut errs = errors.lock().unwrap();
                        errs.0 += 1;
                        errs.1.get_or_insert(format!("{e:#}"));
                    }
                }
                pb.inc(1);
            }
        });
    }
    while creators.join_next().await.is_some() {}
    let handoffs = std::mem::take(&mut *created.lock().unwrap());
    let (create_errors, first_create_error) = errors.lock().unwrap().clone();

    // Every upstream stream up, then a moment for the watchers to settle.
    pb.set_message("waiting for the upstream connections");
    let up_deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < up_deadline {
        let up = api
            .metric("ssepush_proxy_upstream_connections")
            .await
            .unwrap_or(0.0);
        if up >= flags.streams as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let upstream_connections = api.metric("ssepush_proxy_upstream_connections").await;

    // Who is owed a wake by which channel.
    let stream_of: HashMap<String, usize> = (0..flags.handoffs)
        .map(|i| (device_token(device(i)), i % flags.streams))
        .collect();
    let group = |j: usize| {
        (flags.handoffs / flags.streams + usize::from(j < flags.handoffs % flags.streams)) as u64
    };
    let mut since = last_push_seq(&gateway).await?;

    // Publish, one channel at a time, while polling the gateway's record.
    let per_publish = flags.handoffs as f64 / flags.streams as f64;
    let publishes = ((flags.rate * flags.duration.as_secs_f64() / per_publish).floor() as usize)
        .clamp(1, flags.streams);
    let interval = Duration::from_secs_f64(per_publish / flags.rate);
    let sent_at: Arc<Mutex<Vec<Option<u64>>>> = Arc::new(Mutex::new(vec![None; flags.streams]));
    let publish_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let http = crate::client::http::client();
    let publisher = {
        let (sent_at, publish_errors, origin) =
            (sent_at.clone(), publish_errors.clone(), origin.clone());
        let channels: Vec<String> = (0..publishes).map(channel).collect();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = tokio::task::JoinSet::new();
            for (j, ch) in channels.into_iter().enumerate() {
                tick.tick().await;
                let (http, sent_at, errs, url) = (
                    http.clone(),
                    sent_at.clone(),
                    publish_errors.clone(),
                    format!("{origin}/v1/events"),
                );
                inflight.spawn(async move {
                    sent_at.lock().unwrap()[j] = Some(unix_micros());
                    let ok = http
                        .post(url)
                        .json(&json!({"channel": ch, "data": {"wake": j}}))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if !ok {
                        errs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
            while inflight.join_next().await.is_some() {}
        })
    };
    let owed: u64 = (0..publishes).map(group).sum();
    pb.set_message("publishing");
    pb.set_position(0);
    pb.set_length(owed);
    let started = Instant::now();
    let mut latency = Latency::new();
    let mut woken: HashMap<&str, u32> = HashMap::new();
    let (mut extra, mut refused) = (0u64, 0u64);
    let mut drain_deadline = None;
    loop {
        let batch = gateway
            .pushes(&PushQuery {
                since: Some(since),
                ..Default::default()
            })
            .await
            .context("reading the gateway's push record")?;
        for rec in &batch {
            since = since.max(rec.seq);
            let Some((token, &j)) = stream_of.get_key_value(rec.token.as_str()) else {
                continue;
            };
            if !(200..300).contains(&rec.status) {
                refused += 1;
                continue;
            }
            let n = woken.entry(token.as_str()).or_insert(0);
            *n += 1;
            if *n > 1 {
                extra += 1;
                continue;
            }
            if let Some(sent) = sent_at.lock().unwrap()[j] {
                let ms = rec.time_ms.saturating_sub(sent / 1000);
                latency.record_us(ms * 1000);
            }
            pb.inc(1);
        }
        if woken.len() as u64 >= owed && publisher.is_finished() {
            break;
        }
        if publisher.is_finished() {
            let d = *drain_deadline.get_or_insert_with(|| Instant::now() + flags.drain);
            if Instant::now() >= d {
                break;
            }
        }
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let wakes_received = woken.len() as u64;

    let mut handed_back = 0;
    if !flags.no_cleanup {
        pb.set_message("handing back");
        let queue = Arc::new(Mutex::new(handoffs));
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut backs = tokio::task::JoinSet::new();
        for _ in 0..flags.concurrency.max(1) {
            let (api, queue, done) = (api.clone(), queue.clone(), done.clone());
            backs.spawn(async move {
                loop {
                    let Some(h) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    if api.hand_back(&h).await.is_ok() {
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
        while backs.join_next().await.is_some() {}
        handed_back = done.load(std::sync::atomic::Ordering::Relaxed);
    }
    pb.finish_and_clear();
    Ok(WakeReport {
        bench: "wake",
        origin,
        proxy: flags.proxy.clone(),
        gateway: flags.gateway.clone(),
        handoffs: flags.handoffs,
        streams: flags.streams,
        rate: flags.rate,
        duration_secs: flags.duration.as_secs_f64(),
        coalesce_ms: flags.coalesce_ms,
        load_average_before,
        load_average_after: output::load_average(),
        created: (flags.handoffs as u64).saturating_sub(create_errors),
        create_errors,
        first_create_error,
        upstream_connections,
        publishes: publishes as u64,
        publish_errors: publish_errors.load(std::sync::atomic::Ordering::Relaxed),
        wakes_owed: owed,
        wakes_received,
        wakes_missing: owed.saturating_sub(wakes_received),
        extra_pushes: extra,
        refused_pushes: refused,
        wakes_per_sec: wakes_received as f64 / publish_secs.max(1e-9),
        latency: latency.summary(),
        handed_back,
    })
}

/// The newest `seq` in the gateway's push record (0 when empty), read page by page.
async fn last_push_seq(gateway: &GatewayClient) -> anyhow::Result<u64> {
    let mut since = 0;
    loop {
        let page = gateway
            .pushes(&PushQuery {
                since: Some(since),
                ..Default::default()
            })
            .await
            .context("reading the gateway's push record")?;
        match page.last() {
            Some(r) => since = r.seq,
            None => return Ok(since),
        }
    }
}

fn table(r: &WakeReport) -> Table {
    let mut t = Table::new("ssepush bench wake");
    t.section("parameters")
        .row(
            "origin / proxy / gateway",
            format!("{} / {} / {}", r.origin, r.proxy, r.gateway),
        )
        .row(
            "sleeping handoffs",
            format!("{} on {} streams", r.handoffs, r.streams),
        )
        .row(
            "wake rate asked",
            format!("{}/s for {} s", r.rate, r.duration_secs),
        )
        .row(
            "coalesceMs",
            r.coalesce_ms
                .map_or("proxy default".into(), |c| c.to_string()),
        )
        .row(
            "load average",
            format!(
                "{} before, {} after",
                r.load_average_before, r.load_average_after
            ),
        );
    t.section("setup")
        .row(
            "created",
            format!("{} ({} errors)", r.created, r.create_errors),
        )
        .row(
            "upstream connections",
            r.upstream_connections.map_or("–".into(), |v| v.to_string()),
        );
    if let Some(e) = &r.first_create_error {
        t.row("first create error", e);
    }
    t.section("wakes")
        .row(
            "publishes",
            format!("{} ({} failed)", r.publishes, r.publish_errors),
        )
        .row("owed", r.wakes_owed)
        .row(
            "received",
            format!("{} ({:.0}/s)", r.wakes_received, r.wakes_per_sec),
        )
        .row("missing", r.wakes_missing)
        .row("extra pushes", r.extra_pushes)
        .row("refused pushes", r.refused_pushes);
    if let Some(l) = &r.latency {
        t.row("publish→push (±1 ms)", l.line());
    }
    t.row("handed back", r.handed_back);
    t
}

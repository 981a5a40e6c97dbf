//! The simulated fleet (`ssepush device run`): N phones in one process, each a light tokio
//! task over shared HTTP clients, going through sleep/wake cycles against a real origin, proxy
//! and simulated gateway while a publisher drives load on their channels.
//!
//! Each phone: registers with the gateway (an APNs or FCM token, or a Web Push subscription
//! with its own keys) and listens on its device stream (in a real app, that is the OS's push
//! channel); then per cycle streams awake from the origin (optionally with a network flap),
//! hands off, sleeps until a wake or the end of its sleep, catches up from the proxy's buffer,
//! hands back and streams on. After its cycles it stays awake until it has everything the
//! publisher sent. Every delivery is recorded raw (duplicates included) so the checker in
//! [`super::report`] judges the servers, not the client's own de-duplication.
//!
//! Channels: phone `i` of run `T` reads `sim.T.i` and the shared `sim.T.all`; the run tag keeps
//! runs against one long-lived origin apart, and a marker event published first gives every
//! phone the same starting `Last-Event-ID`, so "expected" is exactly what the publisher sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::Rng;
use ssepush_origin::Event;
use ssepush_origin::event::EventId;
use ssepush_origin::filter::Filter;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::publisher::{self, PublishLog, PublisherConfig};
use super::push_channel::{PushChannel, wake_of};
use super::report::{self, Owed, PhoneRecord, Report, Sleep, Woke};
use crate::client::device::{Accepted, DeviceClient};
use crate::client::origin::{ClientError, Frame, Item, OriginClient, Subscription};
use crate::client::proxy::{
    Handoff, ProxyClient, PushTarget, WakeOptions, WebPushKeys, WebPushSubscription,
};
use crate::client::webpush::UserAgentKeys;
use crate::gateway::Provider;
use crate::gateway::client::{GatewayClient, GatewayClientError};

/// Which push platform the phones use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Platform {
    Ios,
    Android,
    Webpush,
    /// Rotates ios, android, webpush.
    Mixed,
}

impl Platform {
    /// The platform of phone `i`.
    pub fn of(self, i: usize) -> Provider {
        match self {
            Platform::Ios => Provider::Apns,
            Platform::Android => Provider::Fcm,
            Platform::Webpush => Provider::Webpush,
            Platform::Mixed => [Provider::Apns, Provider::Fcm, Provider::Webpush][i % 3],
        }
    }
}

/// A fleet run.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub origin: String,
    pub proxy: String,
    pub gateway: String,
    pub devices: usize,
    pub platform: Platform,
    pub awake: Duration,
    pub asleep: Duration,
    pub cycles: u32,
    /// Drop and reconnect the origin stream once per awake period, at a random moment.
    pub flaps: bool,
    /// Client-stage CEL filter: what the app would display (the checker still sees all).
    pub local_filter: Option<String>,
    /// The handoffs' wake filter (CEL); the checker only owes wakes for events passing it.
    pub wake_filter: Option<String>,
    /// Events per second over all channels; default one per phone per second.
    pub rate: Option<f64>,
    /// The handoffs' `coalesceMs`.
    pub coalesce_ms: u64,
    /// How long before a sleep's end an owed event must have been published for its missing
    /// wake to count (on top of the coalescing window).
    pub wake_grace: Duration,
    /// After the last cycle, how long a phone waits for the tail of the stream.
    pub drain: Duration,
    /// Show the live progress bar (still hidden when stderr is not a terminal).
    pub progress: bool,
    /// Narrate the first few phones' loops (the demo).
    pub narrate: usize,
    /// Print log lines at all (off with `--json`).
    pub quiet: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            origin: "http://127.0.0.1:8080".into(),
            proxy: "http://127.0.0.1:8090".into(),
            gateway: "http://127.0.0.1:8070".into(),
            devices: 10,
            platform: Platform::Mixed,
            awake: Duration::from_secs(2),
            asleep: Duration::from_secs(3),
            cycles: 3,
            flaps: false,
            local_filter: None,
            wake_filter: None,
            rate: None,
            coalesce_ms: 50,
            wake_grace: Duration::from_secs(1),
            drain: Duration::from_secs(10),
            progress: true,
            narrate: 0,
            quiet: false,
        }
    }
}

/// Where log lines go: above the progress bar when it is drawn, else stderr.
#[derive(Clone)]
struct Output {
    bar: ProgressBar,
    quiet: bool,
}

impl Output {
    fn line(&self, msg: String) {
        if self.quiet {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.bar.println(msg);
        }
    }
}

/// What every phone shares.
struct Shared {
    cfg: FleetConfig,
    origin: OriginClient,
    proxy: ProxyClient,
    gateway: GatewayClient,
    local_filter: Option<Filter>,
    log: Arc<PublishLog>,
    epoch: Instant,
    start_id: EventId,
    tag: String,
    out: Output,
    /// Cancelled when the publisher has stopped: the tail phones wait for is final.
    published_all: CancellationToken,
    cycles_left: AtomicUsize,
    all_cycles_done: CancellationToken,
    asleep_now: AtomicU64,
    wakes: AtomicU64,
}

/// Runs the fleet and returns the report (`report.passed` is the verdict).
pub async fn run(cfg: FleetConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(cfg.devices > 0, "--devices must be at least 1");
    anyhow::ensure!(cfg.cycles > 0, "--cycles must be at least 1");
    let local_filter = cfg
        .local_filter
        .as_deref()
        .map(Filter::compile)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--local-filter: {e}"))?;
    let wake_filter = cfg
        .wake_filter
        .as_deref()
        .map(Filter::compile)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--wake-filter: {e}"))?;
    let origin = OriginClient::new(&cfg.origin);
    let proxy_http = crate::client::http::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .context("building the proxy client")?;
    let proxy = ProxyClient::with_http(proxy_http, &cfg.proxy);
    let gateway = GatewayClient::new(&cfg.gateway);
    gateway
        .wait_ready(Duration::from_secs(10))
        .await
        .with_context(|| format!("gateway at {}", cfg.gateway))?;

    let tag = format!("r{:08x}", rand::rng().random::<u32>());
    let start_id = origin
        .publish_one(&format!("sim.{tag}.start"), None, serde_json::json!({}))
        .await
        .with_context(|| format!("publishing the start marker to {}", cfg.origin))?;

    let bar = if cfg.progress && !cfg.quiet {
        ProgressBar::with_draw_target(
            Some((cfg.devices as u64) * cfg.cycles as u64),
            ProgressDrawTarget::stderr(),
        )
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} cycles  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let out = Output {
        bar: bar.clone(),
        quiet: cfg.quiet,
    };
    let epoch = Instant::now();
    let log = PublishLog::new();
    let shared = Arc::new(Shared {
        origin: origin.clone(),
        proxy,
        gateway,
        local_filter,
        log: log.clone(),
        epoch,
        start_id,
        tag: tag.clone(),
        out: out.clone(),
        published_all: CancellationToken::new(),
        cycles_left: AtomicUsize::new(cfg.devices),
        all_cycles_done: CancellationToken::new(),
        asleep_now: AtomicU64::new(0),
        wakes: AtomicU64::new(0),
        cfg: cfg.clone(),
    });

    let mut channels: Vec<String> = (0..cfg.devices).map(|i| format!("sim.{tag}.{i}")).collect();
    channels.push(format!("sim.{tag}.all"));
    let pub_cfg = PublisherConfig {
        channels,
        rate: cfg.rate.unwrap_or(cfg.devices.max(20) as f64),
        ..PublisherConfig::default()
    };
    out.line(format!(
        "run {tag}: {} phones ({:?}), {} cycles of {:?} awake / {:?} asleep, publishing {:.0} events/s",
        cfg.devices, cfg.platform, cfg.cycles, cfg.awake, cfg.asleep, pub_cfg.rate
    ));
    let stop_publisher = shared.all_cycles_done.clone();
    let pub_log = log.clone();
    let pub_origin = origin.clone();
    let publisher = tokio::spawn(async move {
        publisher::run(&pub_origin, &pub_cfg, &pub_log, epoch, stop_publisher).await
    });

    // Live status line.
    let ticker = {
        let shared = shared.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                bar.set_message(format!(
                    "{} asleep, {} woken by push, {} published",
                    shared.asleep_now.load(Ordering::Relaxed),
                    shared.wakes.load(Ordering::Relaxed),
                    shared.log.total()
                ));
                bar.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let phones: Vec<_> = (0..cfg.devices)
        .map(|i| tokio::spawn(phone(shared.clone(), i)))
        .collect();
    // The publisher stops once every phone is through its cycles; phones then drain the tail.
    shared.all_cycles_done.cancelled().await;
    let summary = publisher.await.context("publisher task")?;
    shared.published_all.cancel();
    let mut records = Vec::with_capacity(phones.len());
    for (i, p) in phones.into_iter().enumerate() {
        match p.await {
            Ok(r) => records.push(r),
            Err(e) => records.push(PhoneRecord {
                index: i,
                errors: vec![format!("phone task failed: {e}")],
                ..PhoneRecord::default()
            }),
        }
    }
    ticker.abort();
    bar.finish_and_clear();

    let grace = cfg.wake_grace + Duration::from_millis(cfg.coalesce_ms);
    let mut report = report::build_report(
        &records,
        cfg.cycles,
        summary.published,
        grace,
        epoch.elapsed(),
        |p| owed_for(&log, p, wake_filter.as_ref()),
    );
    if summary.failed_requests > 0 {
        // The publisher's own failures make "expected" uncertain: the run proves nothing.
        report.errors += summary.failed_requests;
        report.passed = false;
        out.line(format!(
            "publisher: {} failed requests, last: {}",
            summary.failed_requests,
            summary.last_error.unwrap_or_default()
        ));
    }
    Ok(report)
}

/// The events published for a phone, with whether its wake filter passes each.
fn owed_for(log: &PublishLog, p: &PhoneRecord, wake_filter: Option<&Filter>) -> Vec<Owed> {
    log.for_channels(&p.channels)
        .into_iter()
        .map(|(channel, e)| {
            let wakes = wake_filter.is_none_or(|f| {
                f.matches_event(&Event {
                    id: e.id,
                    channel,
                    kind: "message".into(),
                    data: e.data.clone(),
                    time: e.id.ms,
                })
            });
            Owed {
                id: e.id,
                published: e.at,
                wakes,
            }
        })
        .collect()
}

/// The phone's state for one run.
struct Phone {
    shared: Arc<Shared>,
    rec: PhoneRecord,
    client: DeviceClient,
    push: PushChannel,
    target: PushTarget,
    keys: Option<UserAgentKeys>,
    narrate: bool,
}

async fn phone(shared: Arc<Shared>, i: usize) -> PhoneRecord {
    let platform = shared.cfg.platform.of(i);
    let channels = vec![
        format!("sim.{}.{i}", shared.tag),
        format!("sim.{}.all", shared.tag),
    ];
    let mut rec = PhoneRecord {
        index: i,
        platform: platform.as_str().to_owned(),
        channels: channels.clone(),
        ..PhoneRecord::default()
    };
    let setup = register(&shared.gateway, platform).await;
    let (target, token, keys) = match setup {
        Ok(s) => s,
        Err(e) => {
            rec.errors
                .push(format!("registering with the gateway: {e}"));
            finish_cycles(&shared, 0);
            return rec;
        }
    };
    let mut push = PushChannel::new(shared.gateway.clone(), token);
    if let Err(e) = push.open().await {
        rec.errors.push(format!("opening the device stream: {e}"));
    }
    let client = DeviceClient::new(
        shared.origin.clone(),
        // Phones spread over a fleet's nodes (one node: the same client).
        shared.proxy.rotated(i),
        Subscription {
            channels,
            filter: None,
            last_event_id: Some(shared.start_id),
        },
    );
    let narrate = i < shared.cfg.narrate;
    let mut p = Phone {
        shared,
        rec,
        client,
        push,
        target,
        keys,
        narrate,
    };
    p.run().await;
    p.rec
}

async fn register(
    gw: &GatewayClient,
    platform: Provider,
) -> Result<(PushTarget, String, Option<UserAgentKeys>), GatewayClientError> {
    Ok(match platform {
        Provider::Apns => {
            let token = gw.register_device(Provider::Apns).await?;
            (
                PushTarget::Apns {
                    token: token.clone(),
                    topic: None,
                    environment: None,
                },
                token,
                None,
            )
        }
        Provider::Fcm => {
            let token = gw.register_device(Provider::Fcm).await?;
            (
                PushTarget::Fcm {
                    token: token.clone(),
                },
                token,
                None,
            )
        }
        Provider::Webpush => {
            let keys = UserAgentKeys::generate();
            let sub = gw.subscribe_webpush(None).await?;
            let target = PushTarget::Webpush {
                subscription: WebPushSubscription {
                    endpoint: sub.endpoint,
                    expiration_time: None,
                    keys: WebPushKeys {
                        p256dh: keys.p256dh.clone(),
                        auth: keys.auth.clone(),
                    },
                },
            };
            (target, sub.id, Some(keys))
        }
    })
}

/// Counts a phone out of the cycling phase (done or given up).
fn finish_cycles(shared: &Shared, _done: u32) {
    if shared.cycles_left.fetch_sub(1, Ordering::AcqRel) == 1 {
        shared.all_cycles_done.cancel();
    }
}

/// When streaming awake ends.
enum Until {
    Time(tokio::time::Instant),
    /// Until the publisher has stopped (a phone through its cycles stays online meanwhile).
    PublisherDone,
    /// The publisher is done: stop once the newest published id has arrived, or at the deadline.
    Tail(tokio::time::Instant),
}

impl Phone {
    fn say(&self, msg: impl FnOnce() -> String) {
        if self.narrate {
            self.shared.out.line(format!(
                "phone {:>2} ({}): {}",
                self.rec.index,
                self.rec.platform,
                msg()
            ));
        }
    }

    fn jitter(d: Duration) -> Duration {
        // ±20 %, so a thousand phones do not hand off in the same millisecond.
        d.mul_f64(rand::rng().random_range(0.8..1.2))
    }

    async fn run(&mut self) {
        let cfg = self.shared.cfg.clone();
        for cycle in 0..cfg.cycles {
            let awake_until = tokio::time::Instant::now() + Self::jitter(cfg.awake);
            self.stream(Until::Time(awake_until)).await;
            if !self.sleep_cycle(cycle, &cfg).await {
                break;
            }
            self.rec.cycles_done += 1;
            self.shared.out.bar.inc(1);
        }
        finish_cycles(&self.shared, self.rec.cycles_done);
        self.stream(Until::PublisherDone).await;
        let deadline = tokio::time::Instant::now() + cfg.drain;
        self.stream(Until::Tail(deadline)).await;
    }

    /// Hand off, sleep, wake, catch up, hand back. False when the phone cannot go on.
    async fn sleep_cycle(&mut self, cycle: u32, cfg: &FleetConfig) -> bool {
        let wake = WakeOptions {
            filter: cfg.wake_filter.clone(),
            coalesce_ms: Some(cfg.coalesce_ms),
            ..WakeOptions::default()
        };
        let sent = Instant::now();
        let handoff = match self
            .client
            .hand_off(
                &self.target,
                &wake,
                Some(cfg.asleep * 4 + Duration::from_secs(60)),
            )
            .await
        {
            Ok(h) => h,
            Err(e) => {
                self.rec.errors.push(format!("cycle {cycle}: handoff: {e}"));
                return false;
            }
        };
        self.rec.handoff_latencies.push(sent.elapsed());
        let handed_off = self.shared.epoch.elapsed();
        self.say(|| {
            format!(
                "cycle {}: handed off after id {} in {:.1} ms; sleeping",
                cycle + 1,
                handoff.cursor.map_or("-".into(), |c| c.to_string()),
                sent.elapsed().as_secs_f64() * 1000.0
            )
        });
        self.shared.asleep_now.fetch_add(1, Ordering::Relaxed);
        let woke = self
            .sleep(
                &handoff,
                tokio::time::Instant::now() + Self::jitter(cfg.asleep),
            )
            .await;
        self.shared.asleep_now.fetch_sub(1, Ordering::Relaxed);
        self.rec.sleeps.push(Sleep {
            handed_off,
            cursor: handoff.cursor,
            woke,
        });
        match self.client.catch_up(&handoff).await {
            Ok(c) if c.gap.is_some() => {
                self.rec.proxy_gaps += 1;
                self.say(|| "the proxy's buffer has a gap: resuming from the origin".into());
            }
            Ok(c) => {
                let n = c.events.len();
                for e in &c.events {
                    self.deliver(e);
                }
                self.rec.from_proxy += n as u64;
                self.say(|| format!("caught up {n} events from the proxy's buffer"));
            }
            Err(e) => self
                .rec
                .errors
                .push(format!("cycle {cycle}: catch-up: {e}")),
        }
        match self.client.hand_back(&handoff).await {
            Ok(back) => self.say(|| {
                format!(
                    "handed back (proxy cursor {}); streaming from the origin again",
                    back.cursor.map_or("-".into(), |c| c.to_string())
                )
            }),
            Err(e) => self
                .rec
                .errors
                .push(format!("cycle {cycle}: handback: {e}")),
        }
        true
    }

    /// Waits for a wake for this handoff, or the end of the sleep.
    async fn sleep(&mut self, h: &Handoff, until: tokio::time::Instant) -> Woke {
        loop {
            tokio::select! {
                _ = sleep_until(until) => {
                    self.say(|| "no wake came; woke up on its own".into());
                    return Woke::Timeout(self.shared.epoch.elapsed());
                }
                d = self.push.next() => {
                    let at = self.shared.epoch.elapsed();
                    self.rec.pushes += 1;
                    match wake_of(&d, self.keys.as_ref()) {
                        Ok(w) if w.handoff == h.id => {
                            if w.pending == 0 || w.latest_event_id.is_none_or(|l| h.cursor.is_some_and(|c| l <= c)) {
                                self.rec.bad_payloads += 1;
                            }
                            self.shared.wakes.fetch_add(1, Ordering::Relaxed);
                            self.say(|| format!("woken by {} push ({} pending)", d.provider.as_str(), w.pending));
                            return Woke::Push(at);
                        }
                        Ok(_) => self.rec.stale_pushes += 1,
                        Err(e) => {
                            self.rec.bad_payloads += 1;
                            self.rec.errors.push(format!("unreadable push: {e}"));
                        }
                    }
                }
            }
        }
    }

    /// Records a delivery for the checker and moves the client's position.
    fn deliver(&mut self, e: &Event) {
        self.rec.received.push(e.id);
        if self.client.accept(e) == Accepted::New
            && self
                .shared
                .local_filter
                .as_ref()
                .is_none_or(|f| f.matches_event(e))
        {
            self.rec.displayed += 1;
        }
    }

    fn tail_reached(&self) -> bool {
        let newest = self.shared.log.newest_for(&self.rec.channels);
        newest.is_none_or(|n| self.client.last_event_id().is_some_and(|l| l >= n))
    }

    /// Streams from the origin until `until`, reconnecting with `Last-Event-ID` when the
    /// connection breaks (and once on purpose with `--flaps`).
    async fn stream(&mut self, until: Until) {
        // Far enough to never fire, near enough not to overflow Instant arithmetic.
        let timed = matches!(until, Until::Time(_));
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let (deadline, tail, publisher) = match until {
            Until::Time(t) => (t, false, None),
            Until::PublisherDone => (far, false, Some(self.shared.published_all.clone())),
            Until::Tail(t) => (t, true, None),
        };
        let publisher_done = async move {
            match publisher {
                Some(p) => p.cancelled_owned().await,
                None => std::future::pending().await,
            }
        };
        let mut publisher_done = std::pin::pin!(publisher_done);
        let now = tokio::time::Instant::now();
        let mut flap_at = (self.shared.cfg.flaps && timed && deadline > now)
            .then(|| now + (deadline - now).mul_f64(rand::rng().random_range(0.2..0.8)));
        loop {
            if tail && self.tail_reached() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            let conn = tokio::select! {
                _ = sleep_until(deadline) => return,
                _ = &mut publisher_done => return,
                c = self.client.connect() => c,
            };
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    if e.is_permanent() {
                        self.rec
                            .errors
                            .push(format!("origin refused the stream: {e}"));
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut conn = std::pin::pin!(conn);
            loop {
                let flap = async {
                    match flap_at {
                        Some(t) => sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = sleep_until(deadline) => return,
                    _ = &mut publisher_done => return,
                    _ = flap => {
                        flap_at = None;
                        self.rec.flaps += 1;
                        self.say(|| "network flap: reconnecting with Last-Event-ID".into());
                        break;
                    }
                    frame = conn.next() => match frame {
                        Some(Ok(Frame::Item(Item::Event(e)))) => {
                            self.deliver(&e);
                            if tail && self.tail_reached() {
                                return;
                            }
                        }
                        Some(Ok(Frame::Item(Item::Reset { .. }))) => {
                            self.rec.resets += 1;
                            self.say(|| "the origin reset the stream: events are gone".into());
                        }
                        Some(Ok(Frame::Retry(_))) => {}
                        Some(Ok(Frame::LastEventId(id))) => self.client.set_last_event_id(id),
                        Some(Err(e @ (ClientError::Decode(_) | ClientError::EventTooLarge { .. }))) => {
                            // Never re-read forever: note it (it fails the run) and read on.
                            if let ClientError::EventTooLarge { id: Some(id), .. } = e {
                                self.client.set_last_event_id(Some(id));
                            }
                            self.rec.errors.push(format!("origin stream: {e}"));
                        }
                        Some(Err(_)) | None => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            break;
                        }
                    },
                    d = self.push.next() => {
                        // A wake arriving while awake belongs to a handoff already handed back.
                        let _ = d;
                        self.rec.pushes += 1;
                        self.rec.stale_pushes += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_rotates_platforms() {
        let got: Vec<_> = (0..4).map(|i| Platform::Mixed.of(i)).collect();
        assert_eq!(
            got,
            [
                Provider::Apns,
                Provider::Fcm,
                Provider::Webpush,
                Provider::Apns
            ]
        );
        assert_eq!(Platform::Android.of(7), Provider::Fcm);
    }
}

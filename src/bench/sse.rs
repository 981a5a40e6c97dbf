//! `ssepush bench sse`: SSE fan-out. N subscribers (in child processes, see [`super::fleet`])
//! on one SSE URL, a publisher posting stamped events at a fixed rate for a duration, then a
//! drain until every expected delivery arrived (or the drain time is up). Reports deliveries/s,
//! loss, publish→receive latency percentiles, and — given `--server-pid` — the server's CPU
//! time per delivered event over the measured window (first publish to end of drain) and its
//! RSS. Any server: `--publish-format raw` posts the payload itself, as Nchan's publisher
//! location wants.

use std::time::Duration;

use serde::Serialize;

use super::fleet::{Fleet, per_process_cap};
use super::output::{self, Table};
use super::procfs::{Usage, Window};
use super::publisher::{self, PublishFormat, PublishPlan, Published};
use super::stats::{Latency, LatencySummary};
use super::worker::{ClientKind, WorkerSpec};

/// Flags of `ssepush bench sse`.
#[derive(Debug, Clone, clap::Args)]
pub struct SseFlags {
    /// The SSE URL every subscriber opens.
    #[arg(long, default_value = "http://127.0.0.1:8080/v1/sse?channel=bench.sse")]
    pub url: String,
    /// Where events are published.
    #[arg(long, default_value = "http://127.0.0.1:8080/v1/events")]
    pub publish_url: String,
    /// `ssepush`: `{"channel","data"}` to an ssepush origin; `raw`: the payload as the body.
    #[arg(long, value_enum, default_value = "ssepush")]
    pub publish_format: PublishFormat,
    /// The channel of `--publish-format ssepush`.
    #[arg(long, default_value = "bench.sse")]
    pub channel: String,
    /// Subscribers.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub subscribers: usize,
    /// Events published per second.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// How long to publish.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// After the last publish, how long to wait for outstanding deliveries.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
    pub drain: Duration,
    /// Pause between the last subscriber connecting and the first publish.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    pub settle: Duration,
    /// The server's process id: report its CPU time per delivery and its RSS. Repeat it for a
    /// server of several processes (e.g. nginx's master and worker): their figures are summed.
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// Filler bytes per payload.
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    /// How subscribers read: `raw` (lean HTTP/1.1) or `reqwest` (for comparison).
    #[arg(long, value_enum, default_value = "raw")]
    pub client: ClientKind,
    /// Subscribers per child process (default: the open-file limit less a reserve).
    #[arg(long)]
    pub per_process: Option<usize>,
    /// Subscriber handshakes in flight at once, per child process.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Publish requests in flight at once; a tick that finds them all busy is skipped and
    /// counted. The default, 1, is a closed loop: a server that answers a publish only after
    /// its fan-out (Nchan) is driven at the pace it sustains — "asked" versus "accepted" shows
    /// the saturation — instead of by a queue that grows for the whole run, which would make
    /// its latency a measure of the run's length. Raise it for an open-loop publisher.
    #[arg(long, default_value_t = 1)]
    pub max_in_flight: usize,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The JSON document of `ssepush bench sse --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SseReport {
    pub bench: &'static str,
    pub params: SseParams,
    pub load_average_before: String,
    pub load_average_after: String,
    pub workers: usize,
    pub connected: u64,
    pub connect_failed: u64,
    pub first_connect_error: Option<String>,
    pub published: Published,
    /// Published (2xx) × connected subscribers.
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_percent: f64,
    pub out_of_order: u64,
    pub foreign: u64,
    pub dropped_subscribers: u64,
    pub first_drop_error: Option<String>,
    /// First publish to the end of the drain.
    pub window_secs: f64,
    pub deliveries_per_sec: f64,
    pub latency: Option<LatencySummary>,
    pub server: Option<ProcessReport>,
    /// The subscriber workers' own CPU (the load generator must not be the bottleneck).
    pub client: Option<ProcessReport>,
}

/// The parameters, echoed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SseParams {
    pub url: String,
    pub publish_url: String,
    pub publish_format: PublishFormat,
    pub subscribers: usize,
    pub rate: f64,
    pub duration_secs: f64,
    pub drain_secs: f64,
    pub pad: usize,
    pub client: ClientKind,
    pub max_in_flight: usize,
    pub server_pid: Vec<u32>,
}

/// CPU and memory of a process (or the sum of several) over the measured window.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessReport {
    pub cpu_secs: f64,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub cores: f64,
    pub cpu_per_delivery_us: Option<f64>,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
    pub rss_peak_bytes: u64,
}

impl ProcessReport {
    pub fn new(u: &Usage, deliveries: u64) -> ProcessReport {
        let cpu = u.cpu.as_secs_f64();
        ProcessReport {
            cpu_secs: cpu,
            cores: cpu / u.wall.as_secs_f64().max(1e-9),
            cpu_per_delivery_us: (deliveries > 0).then(|| cpu * 1e6 / deliveries as f64),
            rss_start_bytes: u.rss_start,
            rss_end_bytes: u.rss_end,
            rss_peak_bytes: u.rss_peak,
        }
    }
}

/// Runs the benchmark and prints its report.
///
/// Errors: bad flags, workers that cannot start, a server pid that cannot be read.
pub async fn run(flags: SseFlags, open_files: u64) -> anyhow::Result<()> {
    let report = measure(&flags, open_files).await?;
    output::emit(flags.json, &table(&report), &report)
}

/// Runs the benchmark and returns its report.
pub async fn measure(flags: &SseFlags, open_files: u64) -> anyhow::Result<SseReport> {
    anyhow::ensure!(flags.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(flags.subscribers > 0, "--subscribers must be at least 1");
    super::sse_conn::Target::parse(&flags.url)?;
    let load_average_before = output::load_average();
    // Below 2^53, so any JSON reader keeps it exact.
    let tag = rand::random::<u64>() >> 11;
    let spec = WorkerSpec {
        url: flags.url.clone(),
        connections: 0,
        tag,
        client: flags.client,
        connect_concurrency: flags.connect_concurrency,
    };
    let per_process = flags
        .per_process
        .unwrap_or_else(|| per_process_cap(open_files));
    let mut fleet = Fleet::spawn(&spec, flags.subscribers, per_process)?;
    let pb = output::spinner(flags.json);
    pb.set_message(format!(
        "connecting {} subscribers ({} worker processes)",
        flags.subscribers,
        fleet.len()
    ));
    let opened = fleet.open().await?;
    pb.set_message(format!(
        "{} connected, {} failed; settling",
        opened.connected, opened.failed
    ));
    tokio::time::sleep(flags.settle).await;

    let server = (!flags.server_pid.is_empty())
        .then(|| Window::start(flags.server_pid.clone()))
        .transpose()?;
    let client = Window::start(fleet.pids()).ok();
    let plan = PublishPlan {
        url: flags.publish_url.clone(),
        format: flags.publish_format,
        channel: flags.channel.clone(),
        tag,
        pad: flags.pad,
        rate: flags.rate,
        duration: flags.duration,
        max_in_flight: flags.max_in_flight,
    };
    let started = std::time::Instant::now();
    let published = {
        let fleet = &fleet;
        let pb = &pb;
        publisher::run(&plan, |n| {
            if n % (flags.rate.ceil() as u64 / 4).max(1) == 0 {
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                pb.set_message(format!(
                    "published {n}, delivered {} ({:.0}/s), dropped {}",
                    fleet.received(),
                    fleet.received() as f64 / secs,
                    fleet.dropped()
                ));
            }
        })
        .await
    };
    // Drain: until every expected delivery came, or the drain time is up.
    let expected = published.ok * opened.connected;
    let deadline = tokio::time::Instant::now() + flags.drain;
    while fleet.received() < expected && tokio::time::Instant::now() < deadline {
        pb.set_message(format!(
            "draining: delivered {} of {expected}",
            fleet.received()
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let window = started.elapsed();
    let server = server.map(Window::end).transpose()?;
    let client = client.and_then(|w| w.end().ok());
    let workers = fleet.len();
    let totals = fleet.finish().await?;
    pb.finish_and_clear();

    let mut latency = Latency::new();
    for t in &totals {
        latency.merge(&Latency::from_pairs(&t.latency));
    }
    let received: u64 = totals.iter().map(|t| t.received).sum();
    let lost = expected.saturating_sub(received);
    Ok(SseReport {
        bench: "sse",
        params: SseParams {
            url: flags.url.clone(),
            publish_url: flags.publish_url.clone(),
            publish_format: flags.publish_format,
            subscribers: flags.subscribers,
            rate: flags.rate,
            duration_secs: flags.duration.as_secs_f64(),
            drain_secs: flags.drain.as_secs_f64(),
            pad: flags.pad,
            client: flags.client,
            max_in_flight: flags.max_in_flight,
            server_pid: flags.server_pid.clone(),
        },
        load_average_before,
        load_average_after: output::load_average(),
        workers,
        connected: opened.connected,
        connect_failed: opened.failed,
        first_connect_error: opened.first_error,
        published,
        expected,
        received,
        lost,
        loss_percent: if expected > 0 {
            lost as f64 * 100.0 / expected as f64
        } else {
            0.0
        },
        out_of_order: totals.iter().map(|t| t.out_of_order).sum(),
        foreign: totals.iter().map(|t| t.foreign).sum(),
        dropped_subscribers: totals.iter().map(|t| t.dropped).sum(),
        first_drop_error: totals.iter().find_map(|t| t.first_drop_error.clone()),
        window_secs: window.as_secs_f64(),
        deliveries_per_sec: received as f64 / window.as_secs_f64().max(1e-9),
        latency: latency.summary(),
        server: server.map(|u| ProcessReport::new(&u, received)),
        client: client.map(|u| ProcessReport::new(&u, received)),
    })
}

fn table(r: &SseReport) -> Table {
    let p = &r.params;
    let mut t = Table::new("ssepush bench sse");
    t.section("parameters")
        .row("subscribers url", &p.url)
        .row(
            "publish url",
            format!(
                "{} ({})",
                p.publish_url,
                format!("{:?}", p.publish_format).to_lowercase()
            ),
        )
        .row("subscribers", p.subscribers)
        .row(
            "rate",
            format!("{} events/s for {} s", p.rate, p.duration_secs),
        )
        .row("drain", format!("{} s", p.drain_secs))
        .row("payload padding", format!("{} B", p.pad))
        .row(
            "publishes in flight",
            format!("at most {}", p.max_in_flight),
        )
        .row(
            "client",
            format!(
                "{}, {} worker processes",
                format!("{:?}", p.client).to_lowercase(),
                r.workers
            ),
        )
        .row(
            "load average",
            format!(
                "{} before, {} after",
                r.load_average_before, r.load_average_after
            ),
        );
    t.section("connections")
        .row("connected", r.connected)
        .row("failed", r.connect_failed);
    if let Some(e) = &r.first_connect_error {
        t.row("first connect error", e);
    }
    t.section("publishing")
        .row("asked", r.published.asked)
        .row("accepted (2xx)", r.published.ok)
        .row("failed", r.published.failed)
        .row("skipped (previous in flight)", r.published.skipped);
    if let Some(e) = &r.published.first_error {
        t.row("first publish error", e);
    }
    if let Some(l) = &r.published.request_latency {
        t.row("publish request", l.line());
    }
    t.section("deliveries")
        .row("expected", r.expected)
        .row("received", r.received)
        .row("lost", format!("{} ({:.3} %)", r.lost, r.loss_percent))
        .row("out of order / duplicate", r.out_of_order)
        .row("dropped subscribers", r.dropped_subscribers)
        .row("window", format!("{:.2} s", r.window_secs))
        .row("deliveries/s", format!("{:.0}", r.deliveries_per_sec));
    if let Some(e) = &r.first_drop_error {
        t.row("first drop", e);
    }
    if let Some(l) = &r.latency {
        t.row("publish→receive", l.line());
    }
    for (name, proc_) in [("server", &r.server), ("client (bench workers)", &r.client)] {
        if let Some(s) = proc_ {
            t.section(name)
                .row("CPU", format!("{:.2} s ({:.2} cores)", s.cpu_secs, s.cores))
                .row(
                    "CPU per delivery",
                    s.cpu_per_delivery_us
                        .map_or("–".into(), |us| format!("{us:.2} µs")),
                )
                .row(
                    "RSS",
                    format!(
                        "{} at start, {} at end, {} peak",
                        output::bytes(s.rss_start_bytes as f64),
                        output::bytes(s.rss_end_bytes as f64),
                        output::bytes(s.rss_peak_bytes as f64)
                    ),
                );
        }
    }
    t
}

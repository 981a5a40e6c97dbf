//! `ssepush bench handoffs`: the proxy's handoff API under load, in two phases.
//!
//! * **Churn** (`--churn-duration`): `--concurrency` loops, each creating a handoff and handing
//!   it straight back, for the duration: pairs per second, and each call's latency. Loop `w`
//!   uses stream `bench.churn.<w>` of the origin.
//! * **Sleeping memory** (`--count`): N handoffs on `--streams` M distinct upstream streams
//!   (`bench.mem.<i mod M>`), all from the origin's head so the proxy can share one upstream
//!   connection per stream; the proxy's RSS growth divided by N, from its baseline (read
//!   before the first handoff) to after the upstream connections came up and a settle time
//!   passed — so the figure includes the M upstream connections. Then every handoff is handed
//!   back (unless `--no-cleanup`).
//!
//! Handoffs are APNs (the proxy needs an `[apns]` section, e.g.
//! `ssepush proxy --gateway-credentials DIR`), one distinct device token each.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::output::{self, Table};
use super::procfs::{self, Window};
use super::proxy_api::{Created, ProxyApi, handoff_body, origin_head};
use super::stats::{Latency, LatencySummary};

/// Flags of `ssepush bench handoffs`.
#[derive(Debug, Clone, clap::Args)]
pub struct HandoffFlags {
    /// The proxy's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    pub proxy: String,
    /// The origin whose streams the handoffs watch (must be in the proxy's allowed_origins).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub origin: String,
    /// Bearer API key for creating handoffs (a proxy on loopback needs none).
    #[arg(long, env = "SSEPUSH_BENCH_API_KEY")]
    pub api_key: Option<String>,
    /// How long to churn (create + hand back); `0s` skips the churn phase.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub churn_duration: Duration,
    /// Requests in flight at once (churn loops; creators and hand-backs in the memory phase).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Sleeping handoffs to create for the memory phase; 0 skips it.
    #[arg(long, default_value_t = 0)]
    pub count: usize,
    /// Distinct upstream streams the sleeping handoffs are spread over.
    #[arg(long, default_value_t = 20)]
    pub streams: usize,
    /// Wait after creating them before reading the proxy's RSS.
    #[arg(long, default_value = "3s", value_parser = super::parse_duration)]
    pub settle: Duration,
    /// The proxy's process id: its RSS per handoff and CPU per churn pair.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Leave the sleeping handoffs in place at the end.
    #[arg(long)]
    pub no_cleanup: bool,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The JSON document of `ssepush bench handoffs --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoffReport {
    pub bench: &'static str,
    pub proxy: String,
    pub origin: String,
    pub concurrency: usize,
    pub server_pid: Option<u32>,
    pub load_average_before: String,
    pub load_average_after: String,
    pub churn: Option<ChurnReport>,
    pub memory: Option<MemoryReport>,
}

/// The churn phase.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChurnReport {
    pub duration_secs: f64,
    /// Create + hand back, both 2xx.
    pub pairs: u64,
    pub pairs_per_sec: f64,
    pub creates: u64,
    pub creates_per_sec: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub create_latency: Option<LatencySummary>,
    pub hand_back_latency: Option<LatencySummary>,
    /// The proxy's CPU per pair (with --server-pid).
    pub server_cpu_per_pair_us: Option<f64>,
    pub server_cores: Option<f64>,
}

/// The sleeping-memory phase.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryReport {
    pub asked: usize,
    pub streams: usize,
    pub created: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub create_secs: f64,
    pub creates_per_sec: f64,
    /// `ssepush_proxy_upstream_connections` after settling.
    pub upstream_connections: Option<f64>,
    /// The proxy's RSS before the first handoff.
    pub baseline_rss_bytes: Option<u64>,
    /// The proxy's RSS with every handoff asleep and its upstream connections up.
    pub rss_bytes: Option<u64>,
    pub rss_per_handoff_bytes: Option<f64>,
    pub handed_back: u64,
}

/// Runs the benchmark and prints its report.
///
/// Errors: bad flags, the origin's head cannot be read, the proxy pid cannot be read.
pub async fn run(flags: HandoffFlags) -> anyhow::Result<()> {
    let report = measure(&flags).await?;
    output::emit(flags.json, &table(&report), &report)
}

/// Runs the benchmark and returns its report.
pub async fn measure(flags: &HandoffFlags) -> anyhow::Result<HandoffReport> {
    anyhow::ensure!(flags.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(flags.streams > 0, "--streams must be at least 1");
    let load_average_before = output::load_average();
    let api = ProxyApi::new(&flags.proxy, flags.api_key.clone());
    let origin = flags.origin.trim_end_matches('/').to_owned();
    let head = origin_head(&origin).await?;
    let churn = if flags.churn_duration.is_zero() {
        None
    } else {
        Some(churn(flags, &api, &origin, &head).await?)
    };
    let memory = if flags.count == 0 {
        None
    } else {
        Some(memory(flags, &api, &origin, &head).await?)
    };
    Ok(HandoffReport {
        bench: "handoffs",
        proxy: flags.proxy.clone(),
        origin,
        concurrency: flags.concurrency,
        server_pid: flags.server_pid,
        load_average_before,
        load_average_after: output::load_average(),
        churn,
        memory,
    })
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    creates: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    create: std::sync::Mutex<Latency>,
    hand_back: std::sync::Mutex<Latency>,
}

impl Counts {
    fn error(&self, e: anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error
            .lock()
            .unwrap()
            .get_or_insert(format!("{e:#}"));
    }
}

async fn churn(
    flags: &HandoffFlags,
    api: &ProxyApi,
    origin: &str,
    head: &str,
) -> anyhow::Result<ChurnReport> {
    let counts = Arc::new(Counts::default());
    let window = flags
        .server_pid
        .map(|p| Window::start(vec![p]))
        .transpose()?;
    let pb = output::spinner(flags.json);
    let started = Instant::now();
    let deadline = started + flags.churn_duration;
    let mut loops = tokio::task::JoinSet::new();
    for w in 0..flags.concurrency {
        let (api, counts) = (api.clone(), counts.clone());
        let url = format!("{origin}/v1/sse?channel=bench.churn.{w}");
        let head = head.to_owned();
        loops.spawn(async move {
            let mut device = (w as u64) << 40;
            // Every loop makes at least one pair, however late it was scheduled.
            let mut first = true;
            while first || Instant::now() < deadline {
                first = false;
                device += 1;
                let t = Instant::now();
                let created = match api.create(&handoff_body(&url, &head, device, None)).await {
                    Ok(c) => c,
                    Err(e) => {
                        counts.error(e);
                        continue;
                    }
                };
                counts.creates.fetch_add(1, Ordering::Relaxed);
                counts
                    .create
                    .lock()
                    .unwrap()
                    .record_us(t.elapsed().as_micros() as u64);
                let t = Instant::now();
                match api.hand_back(&created).await {
                    Ok(()) => {
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                        counts
                            .hand_back
                            .lock()
                            .unwrap()
                            .record_us(t.elapsed().as_micros() as u64);
                    }
                    Err(e) => counts.error(e),
                }
            }
        });
    }
    while !loops.is_empty() {
        tokio::select! {
            _ = loops.join_next() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let secs = started.elapsed().as_secs_f64();
                pb.set_message(format!(
                    "churn: {} pairs ({:.0}/s), {} errors",
                    counts.ok.load(Ordering::Relaxed),
                    counts.ok.load(Ordering::Relaxed) as f64 / secs.max(1e-3),
                    counts.errors.load(Ordering::Relaxed)
                ));
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let usage = window.map(Window::end).transpose()?;
    pb.finish_and_clear();
    let pairs = counts.ok.load(Ordering::Relaxed);
    let creates = counts.creates.load(Ordering::Relaxed);
    Ok(ChurnReport {
        duration_secs: elapsed,
        pairs,
        pairs_per_sec: pairs as f64 / elapsed,
        creates,
        creates_per_sec: creates as f64 / elapsed,
        errors: counts.errors.load(Ordering::Relaxed),
        first_error: counts.first_error.lock().unwrap().clone(),
        create_latency: counts.create.lock().unwrap().summary(),
        hand_back_latency: counts.hand_back.lock().unwrap().summary(),
        server_cpu_per_pair_us: usage
            .filter(|_| pairs > 0)
            .map(|u| u.cpu.as_secs_f64() * 1e6 / pairs as f64),
        server_cores: usage.map(|u| u.cpu.as_secs_f64() / u.wall.as_secs_f64().max(1e-9)),
    })
}

async fn memory(
    flags: &HandoffFlags,
    api: &ProxyApi,
    origin: &str,
    head: &str,
) -> anyhow::Result<MemoryReport> {
    let baseline = flags
        .server_pid
        .map(procfs::sample)
        .transpose()?
        .map(|s| s.rss_bytes);
    let counts = Arc::new(Counts::default());
    let pb = output::bar(flags.json, flags.count as u64);
    pb.set_message("creating sleeping handoffs");
    let next = Arc::new(AtomicU64::new(0));
    let created = Arc::new(std::sync::Mutex::new(Vec::with_capacity(flags.count)));
    let started = Instant::now();
    let mut creators = tokio::task::JoinSet::new();
    for _ in 0..flags.concurrency {
        let (api, counts, next, created) =
            (api.clone(), counts.clone(), next.clone(), created.clone());
        let (origin, head, count, streams) = (
            origin.to_owned(),
            head.to_owned(),
            flags.count as u64,
            flags.streams as u64,
        );
        let pb = pb.clone();
        creators.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let url = format!("{origin}/v1/sse?channel=bench.mem.{}", i % streams);
                // Devices of this phase live above the churn loops' token range.
                match api
                    .create(&handoff_body(&url, &head, (1 << 56) + i, None))
                    .await
                {
                    Ok(c) => created.lock().unwrap().push(c),
                    Err(e) => counts.error(e),
                }
                pb.inc(1);
            }
        });
    }
    while creators.join_next().await.is_some() {}
    let create_secs = started.elapsed().as_secs_f64();
    let handoffs: Vec<Created> = std::mem::take(&mut *created.lock().unwrap());
    pb.set_message("settling");
    // The upstream connections come up, then the settle time.
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
    tokio::time::sleep(flags.settle).await;
    let upstream_connections = api.metric("ssepush_proxy_upstream_connections").await;
    let rss = flags
        .server_pid
        .map(procfs::sample)
        .transpose()?
        .map(|s| s.rss_bytes);
    let n = handoffs.len() as u64;
    let mut handed_back = 0;
    if !flags.no_cleanup {
        pb.set_message("handing back");
        pb.set_position(0);
        pb.set_length(n);
        let queue = Arc::new(std::sync::Mutex::new(handoffs));
        let done = Arc::new(AtomicU64::new(0));
        let mut backs = tokio::task::JoinSet::new();
        for _ in 0..flags.concurrency {
            let (api, queue, done, pb) = (api.clone(), queue.clone(), done.clone(), pb.clone());
            backs.spawn(async move {
                loop {
                    let Some(h) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    if api.hand_back(&h).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    pb.inc(1);
                }
            });
        }
        while backs.join_next().await.is_some() {}
        handed_back = done.load(Ordering::Relaxed);
    }
    pb.finish_and_clear();
    Ok(MemoryReport {
        asked: flags.count,
        streams: flags.streams,
        created: n,
        errors: counts.errors.load(Ordering::Relaxed),
        first_error: counts.first_error.lock().unwrap().clone(),
        create_secs,
        creates_per_sec: n as f64 / create_secs.max(1e-9),
        upstream_connections,
        baseline_rss_bytes: baseline,
        rss_bytes: rss,
        rss_per_handoff_bytes: match (baseline, rss) {
            (Some(b), Some(r)) if n > 0 => Some((r as f64 - b as f64) / n as f64),
            _ => None,
        },
        handed_back,
    })
}

fn table(r: &HandoffReport) -> Table {
    let mut t = Table::new("ssepush bench handoffs");
    t.section("parameters")
        .row("proxy", &r.proxy)
        .row("origin", &r.origin)
        .row("concurrency", r.concurrency)
        .row(
            "proxy pid",
            r.server_pid
                .map_or("– (no RSS/CPU)".into(), |p| p.to_string()),
        )
        .row(
            "load average",
            format!(
                "{} before, {} after",
                r.load_average_before, r.load_average_after
            ),
        );
    if let Some(c) = &r.churn {
        t.section("churn (create + hand back)")
            .row("duration", format!("{:.2} s", c.duration_secs))
            .row("pairs", format!("{} ({:.0}/s)", c.pairs, c.pairs_per_sec))
            .row(
                "creates",
                format!("{} ({:.0}/s)", c.creates, c.creates_per_sec),
            )
            .row("errors", c.errors);
        if let Some(e) = &c.first_error {
            t.row("first error", e);
        }
        if let Some(l) = &c.create_latency {
            t.row("create", l.line());
        }
        if let Some(l) = &c.hand_back_latency {
            t.row("hand back", l.line());
        }
        if let (Some(us), Some(cores)) = (c.server_cpu_per_pair_us, c.server_cores) {
            t.row(
                "proxy CPU per pair",
                format!("{us:.1} µs ({cores:.2} cores)"),
            );
        }
    }
    if let Some(m) = &r.memory {
        t.section("sleeping handoffs")
            .row(
                "created",
                format!(
                    "{} of {} on {} streams in {:.1} s ({:.0}/s)",
                    m.created, m.asked, m.streams, m.create_secs, m.creates_per_sec
                ),
            )
            .row("errors", m.errors);
        if let Some(e) = &m.first_error {
            t.row("first error", e);
        }
        t.row(
            "upstream connections",
            m.upstream_connections.map_or("–".into(), |v| v.to_string()),
        );
        if let (Some(b), Some(r)) = (m.baseline_rss_bytes, m.rss_bytes) {
            t.row(
                "proxy RSS",
                format!("{} → {}", output::bytes(b as f64), output::bytes(r as f64)),
            );
        }
        t.row(
            "RSS per handoff",
            m.rss_per_handoff_bytes.map_or("–".into(), output::bytes),
        )
        .row("handed back", m.handed_back);
    }
    t
}

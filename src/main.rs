//! The `ssepush` command: parses flags and runs the library's servers and tools.
#![forbid(unsafe_code)]

/// mimalloc, not glibc's malloc: glibc kept the peak of every burst of connections (issue 11:
/// RSS 125 → 191 MiB over 4 rounds of 8,000 SSE connections opened and closed, nothing returned
/// after each close); mimalloc returns freed pages to the system shortly after they empty.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use ssepush::client::origin::{Item, OriginClient, Subscription};
use ssepush_origin::settings::Settings as OriginSettings;

#[derive(Parser)]
#[command(
    name = "ssepush",
    version,
    about = "SSE push proxy for mobile devices, and the origin streaming API it fronts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the origin streaming API (default 127.0.0.1:8080).
    Origin(ServerFlags),
    /// Publish an event to an origin.
    Publish(PublishFlags),
    /// Subscribe to an origin's SSE stream and print events as JSON lines.
    Subscribe(SubscribeFlags),
    /// Run the simulated APNs / FCM v1 / Web Push gateway (default 127.0.0.1:8070).
    Gateway(GatewayFlags),
    /// Run the push proxy (default 127.0.0.1:8090).
    Proxy(ProxyFlags),
    /// Simulated phones against running servers (`device run`).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Origin, proxy, gateway, publisher and 50 simulated phones in one process: the whole
    /// sleep → wake → resume loop, then the report.
    Demo(DemoFlags),
    /// Benchmarks for sizing a deployment: SSE fan-out, idle connections, handoff churn and
    /// memory, wake latency. Prints what it measured; asserts nothing.
    #[command(subcommand)]
    Bench(ssepush::bench::BenchCommand),
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Run simulated phones through sleep/wake cycles and check every event arrives exactly
    /// once, in order. Exits non-zero on any loss, duplicate, disorder or missed wake.
    Run(DeviceRunFlags),
}

#[derive(Args)]
struct DeviceRunFlags {
    /// Origin base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    origin: String,
    /// Proxy base URL.
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    proxy: String,
    /// Simulated gateway base URL (its control API and device streams).
    #[arg(long, default_value = "http://127.0.0.1:8070")]
    gateway: String,
    #[arg(long, default_value_t = 100)]
    devices: usize,
    #[command(flatten)]
    sim: SimFlags,
}

#[derive(Args)]
struct DemoFlags {
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Instead of simulated phones, serve a sample page on the web client (`clients/web`,
    /// built with npm on first use) and run until Ctrl-C: watch the loop in a browser.
    #[arg(long)]
    web: bool,
    /// Where `--web` serves its page.
    #[arg(long, default_value = "127.0.0.1:8060")]
    web_listen: SocketAddr,
    /// With `--web`: publish a tick on `demo.web` this often (`0s`: never).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    web_tick: std::time::Duration,
    #[command(flatten)]
    sim: SimFlags,
}

#[derive(Args)]
struct SimFlags {
    #[arg(long, value_enum, default_value = "mixed")]
    platform: ssepush::device::fleet::Platform,
    /// Time awake (streaming) per cycle, e.g. `2s`, `500ms`.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    awake: std::time::Duration,
    /// Longest sleep per cycle (a wake push ends it sooner).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    asleep: std::time::Duration,
    #[arg(long, default_value_t = 3)]
    cycles: u32,
    /// Print the report as JSON (and no progress bar).
    #[arg(long)]
    json: bool,
    /// Drop and reconnect each phone's stream once per awake period.
    #[arg(long)]
    flaps: bool,
    /// Client-stage CEL filter: what the phones would display.
    #[arg(long)]
    local_filter: Option<String>,
    /// The handoffs' wake filter (CEL).
    #[arg(long)]
    wake_filter: Option<String>,
    /// Events per second over all channels (default: one per phone per second).
    #[arg(long)]
    rate: Option<f64>,
    /// The handoffs' coalescing window.
    #[arg(long, default_value_t = 50)]
    coalesce_ms: u64,
}

impl SimFlags {
    fn config(self, devices: usize) -> ssepush::device::fleet::FleetConfig {
        ssepush::device::fleet::FleetConfig {
            devices,
            platform: self.platform,
            awake: self.awake,
            asleep: self.asleep,
            cycles: self.cycles,
            flaps: self.flaps,
            local_filter: self.local_filter,
            wake_filter: self.wake_filter,
            rate: self.rate,
            coalesce_ms: self.coalesce_ms,
            progress: !self.json,
            narrate: 0,
            quiet: self.json,
            ..Default::default()
        }
    }
}

/// `1.5s`, `250ms`, `2m`, or plain seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit in {s:?} (ms, s, m)")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

#[derive(Args)]
struct ProxyFlags {
    /// TOML settings file; `SSEPUSH_PROXY_…` variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Handoff store: `memory` (Redis comes with the fleet).
    #[arg(long)]
    store: Option<String>,
    /// Fill `[apns]`, `[fcm]` and `[webpush]` from a simulated gateway's credentials directory
    /// (`ssepush gateway --credentials-dir DIR`).
    #[arg(long)]
    gateway_credentials: Option<PathBuf>,
}

#[derive(Args)]
struct GatewayFlags {
    /// Address to listen on (HTTP/1.1 and HTTP/2 prior knowledge on the same port).
    #[arg(long, default_value = "127.0.0.1:8070")]
    listen: SocketAddr,
    /// Directory to write the proxy's credentials to: the APNs .p8 key and apns.json, the FCM
    /// service-account JSON, gateway.json. Keys already there are reused.
    #[arg(
        long,
        default_value = "gateway-credentials",
        env = "SSEPUSH_GATEWAY_CREDENTIALS_DIR"
    )]
    credentials_dir: PathBuf,
    /// Base URL to advertise in credentials and Web Push endpoints (default http://LISTEN).
    #[arg(long)]
    public_url: Option<String>,
    /// Push records kept in memory (a ring).
    #[arg(long, default_value_t = 100_000)]
    record_capacity: usize,
    /// Serve TLS with a fresh self-signed certificate (written to the credentials directory
    /// as gateway-cert.pem) instead of cleartext h2c / HTTP/1.1.
    #[arg(long)]
    tls: bool,
}

#[derive(Args)]
struct ServerFlags {
    /// TOML settings file (see deploy/origin.toml); `SSEPUSH_ORIGIN_…` variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Event store: `memory` or `redis://host:port[/db]`.
    #[arg(long)]
    store: Option<String>,
}

#[derive(Args)]
struct PublishFlags {
    /// Origin base URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "SSEPUSH_ORIGIN_URL"
    )]
    origin: String,
    /// Channel to publish on, e.g. `chat.room42`.
    #[arg(long, short)]
    channel: String,
    /// Event type (the SSE `event:` field).
    #[arg(long = "type", short = 't')]
    kind: Option<String>,
    /// Event data: JSON, or any other text (sent as a JSON string).
    data: String,
    /// Publish `--count` events at this rate (events/s), each `{"seq": n, "data": DATA}`.
    #[arg(long, requires = "count")]
    rate: Option<f64>,
    /// How many events to publish (with `--rate`; default rate 100/s).
    #[arg(long)]
    count: Option<u64>,
}

#[derive(Args)]
struct SubscribeFlags {
    /// Origin base URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "SSEPUSH_ORIGIN_URL"
    )]
    origin: String,
    /// Channel pattern (`*` one token, `>` the rest); repeat for several.
    #[arg(long, short, required = true)]
    channel: Vec<String>,
    /// CEL filter over channel, type, id and data.
    #[arg(long)]
    filter: Option<String>,
    /// Resume after this event id.
    #[arg(long)]
    last_event_id: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Device(_) | Command::Demo(_) => ssepush::device::init_logging(),
        _ => ssepush::telemetry::init(),
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Origin(flags) => origin(flags).await,
            Command::Publish(flags) => publish(flags).await,
            Command::Subscribe(flags) => subscribe(flags).await,
            Command::Gateway(flags) => gateway(flags).await,
            Command::Proxy(flags) => proxy(flags).await,
            Command::Device(DeviceCommand::Run(flags)) => device_run(flags).await,
            Command::Demo(flags) => demo(flags).await,
            Command::Bench(cmd) => ssepush::bench::run(cmd).await,
        }
    })
}

async fn origin(flags: ServerFlags) -> anyhow::Result<()> {
    let mut settings = OriginSettings::load(flags.config.as_deref())?;
    if let Some(listen) = flags.listen {
        settings.listen = listen;
    }
    if let Some(store) = flags.store {
        settings.store = store;
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    ssepush_origin::server::run(listener, settings, shutdown_signal()).await?;
    Ok(())
}

async fn proxy(flags: ProxyFlags) -> anyhow::Result<()> {
    let mut settings = ssepush_proxy::settings::Settings::load(flags.config.as_deref())?;
    if let Some(listen) = flags.listen {
        settings.listen = listen;
    }
    if let Some(store) = flags.store {
        settings.store = store;
    }
    if let Some(dir) = &flags.gateway_credentials {
        let (apns, fcm, webpush) = ssepush::device::stack::provider_settings(dir)?;
        settings.apns = Some(apns);
        settings.fcm = Some(fcm);
        settings.webpush = Some(webpush);
    }
    settings.validate()?;
    let providers = ssepush_proxy::server::providers_from_settings(&settings)
        .context("building the push providers from [apns], [fcm], [webpush]")?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    ssepush_proxy::server::run(listener, settings, providers, shutdown_signal()).await?;
    Ok(())
}

async fn gateway(flags: GatewayFlags) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(flags.listen)
        .await
        .with_context(|| format!("cannot listen on {}", flags.listen))?;
    let config = ssepush::gateway::GatewayConfig {
        credentials_dir: Some(flags.credentials_dir.clone()),
        public_url: flags.public_url,
        record_capacity: flags.record_capacity,
        tls: flags.tls,
        ..Default::default()
    };
    eprintln!(
        "gateway on {}://{} ({}); credentials in {}",
        if flags.tls { "https" } else { "http" },
        flags.listen,
        if flags.tls {
            "TLS, ALPN h2 + http/1.1"
        } else {
            "h2c + HTTP/1.1"
        },
        flags.credentials_dir.display()
    );
    ssepush::gateway::run(listener, config, shutdown_signal()).await?;
    Ok(())
}

async fn publish(flags: PublishFlags) -> anyhow::Result<()> {
    let data = serde_json::from_str(&flags.data).unwrap_or(serde_json::Value::String(flags.data));
    let client = OriginClient::new(&flags.origin);
    if let Some(count) = flags.count {
        let rate = flags.rate.unwrap_or(100.0);
        anyhow::ensure!(rate > 0.0, "--rate must be positive");
        let s = ssepush::device::publisher::publish_at_rate(
            &client,
            &flags.channel,
            flags.kind.as_deref(),
            data,
            rate,
            count,
        )
        .await?;
        eprintln!(
            "published {} events in {:.2} s ({:.0}/s)",
            s.published,
            s.elapsed.as_secs_f64(),
            s.published as f64 / s.elapsed.as_secs_f64().max(1e-9)
        );
        return Ok(());
    }
    let id = client
        .publish_one(&flags.channel, flags.kind.as_deref(), data)
        .await?;
    println!("{id}");
    Ok(())
}

async fn subscribe(flags: SubscribeFlags) -> anyhow::Result<()> {
    let last_event_id = flags.last_event_id.as_deref().map(str::parse).transpose()?;
    let client = OriginClient::new(&flags.origin);
    let stream = client.subscribe(Subscription {
        channels: flags.channel,
        filter: flags.filter,
        last_event_id,
    });
    let mut stream = std::pin::pin!(stream);
    let mut seen = 0usize;
    while let Some(item) = stream.next().await {
        match item? {
            Item::Event(e) => println!("{}", serde_json::to_string(&e)?),
            Item::Reset { oldest } => eprintln!(
                "reset: events were missed; oldest still held is {}",
                oldest.map_or("none".into(), |o| o.to_string())
            ),
        }
        seen += 1;
        if flags.count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(())
}

async fn device_run(flags: DeviceRunFlags) -> anyhow::Result<()> {
    let json = flags.sim.json;
    let mut config = flags.sim.config(flags.devices);
    config.origin = flags.origin;
    config.proxy = flags.proxy;
    config.gateway = flags.gateway;
    print_report(ssepush::device::fleet::run(config).await?, json)
}

async fn demo(flags: DemoFlags) -> anyhow::Result<()> {
    if flags.web {
        return ssepush::device::web::demo(flags.web_listen, flags.web_tick, shutdown_signal())
            .await;
    }
    let json = flags.sim.json;
    let mut config = flags.sim.config(flags.devices);
    config.narrate = if json { 0 } else { 3 };
    print_report(ssepush::device::demo(config).await?, json)
}

/// Prints the report; any loss, duplicate, disorder or missed wake is a non-zero exit.
fn print_report(report: ssepush::device::report::Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if !report.passed {
        std::process::exit(1);
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}

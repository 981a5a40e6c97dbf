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
    // `ssepush origin --version` (any subcommand) prints the version too.
    propagate_version = true,
    about = "SSE push proxy for mobile devices, and the origin streaming API it fronts"
)]
struct Cli {
    /// A PEM file of CA certificates trusted for outbound HTTPS besides Mozilla's roots (a
    /// private PKI): for `origin` and `proxy` it sets `tls.extra_ca_path`; for the clients and
    /// tools (publish, subscribe, device, bench, demo) it applies to every request they make,
    /// and they also read it from SSEPUSH_EXTRA_CA_PATH (the servers do not: theirs is
    /// SSEPUSH_ORIGIN_TLS__EXTRA_CA_PATH / SSEPUSH_PROXY_TLS__EXTRA_CA_PATH).
    #[arg(long, global = true)]
    extra_ca_path: Option<PathBuf>,
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
    /// Proxy base URL; a fleet's nodes comma-separated (phones spread over them and fail over
    /// to the next when one does not answer).
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
    #[arg(long, default_value = "5s", value_parser = ssepush::bench::parse_duration)]
    web_tick: std::time::Duration,
    #[command(flatten)]
    sim: SimFlags,
}

#[derive(Args)]
struct SimFlags {
    #[arg(long, value_enum, default_value = "mixed")]
    platform: ssepush::device::fleet::Platform,
    /// Time awake (streaming) per cycle, e.g. `2s`, `500ms`.
    #[arg(long, default_value = "2s", value_parser = ssepush::bench::parse_duration)]
    awake: std::time::Duration,
    /// Longest sleep per cycle (a wake push ends it sooner).
    #[arg(long, default_value = "3s", value_parser = ssepush::bench::parse_duration)]
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

#[derive(Subcommand)]
enum ProxyCommand {
    /// Create a new VAPID key (PKCS#8 PEM, mode 0600) at PATH for `[webpush] vapid_key_path`
    /// and print its public key (the application server key browsers subscribe with). Refuses
    /// to replace an existing file: a new key orphans every subscription made with the old.
    GenVapidKey {
        /// Where to write the key.
        path: PathBuf,
    },
    /// A proxy fleet as its Redis store sees it: the nodes, what each holds, their leases,
    /// handoffs by state.
    Status(ProxyStatusFlags),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ProxyFlags {
    #[command(subcommand)]
    command: Option<ProxyCommand>,
    /// TOML settings file; `SSEPUSH_PROXY_…` variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Handoff store: `memory` (one node) or `redis://…` (a fleet; see `[fleet]`).
    #[arg(long)]
    store: Option<String>,
    /// Fill `[apns]`, `[fcm]` and `[webpush]` from a simulated gateway's credentials directory
    /// (`ssepush gateway --credentials-dir DIR`).
    #[arg(long)]
    gateway_credentials: Option<PathBuf>,
}

#[derive(Args)]
struct ProxyStatusFlags {
    /// The fleet's store (`redis://…`).
    #[arg(long)]
    store: String,
    /// The fleet's `fleet.namespace`.
    #[arg(long, default_value = "ssepush")]
    namespace: String,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
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
    /// Event store: `memory`, `redis://host:port[/db]` or `redis+cluster://host:port[,host:port…]`.
    #[arg(long)]
    store: Option<String>,
}

#[derive(Args)]
struct PublishFlags {
    /// Origin base URL. (Not `SSEPUSH_ORIGIN_…`: that prefix belongs to the origin server's
    /// settings, which would refuse an unknown `url` key.)
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "SSEPUSH_URL")]
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
    /// Origin base URL. (Not `SSEPUSH_ORIGIN_…`: that prefix belongs to the origin server's
    /// settings, which would refuse an unknown `url` key.)
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "SSEPUSH_URL")]
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
    // Held to the end of `main`: dropping it flushes the queued log lines.
    let _logs = match cli.command {
        Command::Device(_) | Command::Demo(_) => ssepush::device::init_logging(),
        _ => ssepush::telemetry::init(),
    };
    // rustls' ring provider for every HTTP client of the process (reqwest has none of its own).
    ssepush_origin::service::tls::install_default_provider();
    let extra_ca = cli.extra_ca_path;
    // A client's environment never changes how a server starts: only the clients read the
    // variable.
    let server = matches!(
        cli.command,
        Command::Origin(_) | Command::Proxy(_) | Command::Gateway(_)
    );
    let client_ca = extra_ca.clone().or_else(|| {
        (!server)
            .then(|| std::env::var_os("SSEPUSH_EXTRA_CA_PATH"))
            .flatten()
            .map(PathBuf::from)
    });
    if let Some(path) = &client_ca {
        ssepush::client::http::set_extra_ca(path)?;
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Origin(flags) => origin(flags, extra_ca).await,
            Command::Publish(flags) => publish(flags).await,
            Command::Subscribe(flags) => subscribe(flags).await,
            Command::Gateway(flags) => gateway(flags).await,
            Command::Proxy(flags) => proxy(flags, extra_ca).await,
            Command::Device(DeviceCommand::Run(flags)) => device_run(flags).await,
            Command::Demo(flags) => demo(flags).await,
            Command::Bench(cmd) => ssepush::bench::run(cmd).await,
        }
    })
}

async fn origin(flags: ServerFlags, extra_ca: Option<PathBuf>) -> anyhow::Result<()> {
    let mut settings = OriginSettings::load(flags.config.as_deref())?;
    if extra_ca.is_some() {
        settings.tls.extra_ca_path = extra_ca;
    }
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

/// `ssepush proxy status`: reads the fleet from its store (no encryption key needed: only
/// unsealed fields are read).
async fn proxy_status(flags: ProxyStatusFlags) -> anyhow::Result<()> {
    // A throwaway key: the status opens no sealed field.
    let key = format!(
        "status:{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            rand::random::<[u8; 32]>()
        )
    );
    let sealer = ssepush_proxy::store::Sealer::from_settings(&[key]).map_err(anyhow::Error::msg)?;
    let store =
        ssepush_proxy::store::redis::RedisStore::connect(&flags.store, &flags.namespace, sealer)
            .await?;
    use ssepush_proxy::store::HandoffStore;
    let fleet = store.fleet().await?;
    let states = store.states().await?;
    if flags.json {
        let out = serde_json::json!({"nodes": fleet.nodes, "free": fleet.free, "handoffs": states});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<22} {:<28} {:>10} {:>14}",
        "NODE", "ADDRESS", "HANDOFFS", "LEASE"
    );
    for n in &fleet.nodes {
        let lease = if n.expires_in_ms >= 0 {
            format!("{:.1} s left", n.expires_in_ms as f64 / 1000.0)
        } else {
            format!("dead {:.1} s", -n.expires_in_ms as f64 / 1000.0)
        };
        println!(
            "{:<22} {:<28} {:>10} {:>14}",
            n.node, n.addr, n.holds, lease
        );
    }
    println!("released, not yet claimed: {}", fleet.free);
    let by: Vec<String> = states.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "handoffs by state: {}",
        if by.is_empty() {
            "none".into()
        } else {
            by.join(", ")
        }
    );
    Ok(())
}

async fn proxy(flags: ProxyFlags, extra_ca: Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(ProxyCommand::Status(status)) = flags.command {
        return proxy_status(status).await;
    }
    if let Some(ProxyCommand::GenVapidKey { path }) = flags.command {
        let key = ssepush_proxy::push::webpush::VapidKey::generate(&path)?;
        println!("{}", key.public_key());
        eprintln!("wrote a new VAPID key to {}", path.display());
        return Ok(());
    }
    let mut settings = ssepush_proxy::settings::Settings::load(flags.config.as_deref())?;
    if extra_ca.is_some() {
        settings.tls.extra_ca_path = extra_ca;
    }
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
    let origin = flags.origin.clone();
    // Never silence: every failed attempt and every dropped stream says why and when the next
    // attempt comes, on stderr (events alone go to stdout).
    let stream = client.subscribe_reporting(
        Subscription {
            channels: flags.channel,
            filter: flags.filter,
            last_event_id,
        },
        move |error, wait| match error {
            Some(e) => eprintln!(
                "ssepush subscribe: {}; retrying in {:.1} s",
                error_chain(e),
                wait.as_secs_f64()
            ),
            None => eprintln!(
                "ssepush subscribe: {origin}: the stream ended; reconnecting in {:.1} s",
                wait.as_secs_f64()
            ),
        },
    );
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

/// An error and its causes, `outer: inner: root` (reqwest's own message leaves out why, e.g.
/// "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
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

/// Completes on SIGINT, SIGTERM or SIGHUP: each starts the same drain (streams end with a
/// `retry:` hint, the process exits within `shutdown_grace_secs`). SIGHUP drains rather than
/// reloads: a supervisor that sends it (a closed terminal, `systemctl reload` without an
/// `ExecReload`) gets a clean exit instead of the default action's abrupt one, and the
/// restart re-reads the configuration. Nothing here waits on logging: the log line after the
/// signal is queued, never written inline (see `ssepush::telemetry`).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let unix = async {
        use tokio::signal::unix::{SignalKind, signal};
        let wait = |kind: SignalKind| async move {
            match signal(kind) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wait(SignalKind::terminate()) => "SIGTERM",
            _ = wait(SignalKind::hangup()) => "SIGHUP",
        }
    };
    #[cfg(not(unix))]
    let unix = std::future::pending::<&str>();
    let name = tokio::select! {
        _ = ctrl_c => "SIGINT",
        name = unix => name,
    };
    tracing::info!(signal = name, "shutdown signal received; draining");
}

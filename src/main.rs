//! The `ssepush` command: parses flags and runs the library's servers and tools.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use ssepush::client::{Item, OriginClient, Subscription};
use ssepush_origin::settings::Settings as OriginSettings;

#[derive(Parser)]
#[command(name = "ssepush", version, about = "SSE push proxy for mobile devices, and the origin streaming API it fronts")]
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
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "SSEPUSH_ORIGIN_URL")]
    origin: String,
    /// Channel to publish on, e.g. `chat.room42`.
    #[arg(long, short)]
    channel: String,
    /// Event type (the SSE `event:` field).
    #[arg(long = "type", short = 't')]
    kind: Option<String>,
    /// Event data: JSON, or any other text (sent as a JSON string).
    data: String,
}

#[derive(Args)]
struct SubscribeFlags {
    /// Origin base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "SSEPUSH_ORIGIN_URL")]
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
    ssepush::telemetry::init();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Origin(flags) => origin(flags).await,
            Command::Publish(flags) => publish(flags).await,
            Command::Subscribe(flags) => subscribe(flags).await,
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

async fn publish(flags: PublishFlags) -> anyhow::Result<()> {
    let data = serde_json::from_str(&flags.data).unwrap_or(serde_json::Value::String(flags.data));
    let client = OriginClient::new(&flags.origin);
    let id = client.publish_one(&flags.channel, flags.kind.as_deref(), data).await?;
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

//! The tester toolkit: what proves, without real phones, that no event is lost or repeated
//! across sleep and wake.
//!
//! The phones use [`crate::client`], the code a Rust app uses; what is simulated here is
//! everything around it.
//!
//! * [`publisher`] — the load generator: publishes at a rate and records what it published.
//! * [`fleet`] — many simulated phones in one process (`ssepush device run`).
//! * [`push_channel`] — a phone's OS: the gateway's device stream, and the wake in a push.
//! * [`report`] — the checker and the report, plain code over plain values.
//! * [`stack`] — origin, gateway and proxy in one process: the one place that starts them
//!   in-process (`ssepush demo`, `demo --web`, the tests).
//! * [`web`] — the sample page of `ssepush demo --web`, on the web client (`clients/web`).

pub mod fleet;
pub mod publisher;
pub mod push_channel;
pub mod report;
pub mod stack;
pub mod web;

use std::time::Duration;

/// Logging for the interactive tools: the servers' own info lines would bury the progress bar
/// and the report, so the default level is `warn` (`RUST_LOG` still wins).
pub fn init_logging() -> crate::telemetry::LogGuard {
    crate::telemetry::init_with_level("warn")
}

/// `ssepush demo`: the whole loop in one process — origin, gateway, proxy, publisher and
/// `config.devices` phones — then the report. The URLs in `config` are replaced by the
/// in-process servers'.
pub async fn demo(mut config: fleet::FleetConfig) -> anyhow::Result<report::Report> {
    let quiet = config.quiet;
    let say = |m: String| {
        if !quiet {
            eprintln!("{m}");
        }
    };
    say("starting origin (memory store), simulated APNs/FCM/Web Push gateway and proxy on loopback…".into());
    let stack = stack::Stack::start(stack::StackOptions::default()).await?;
    say(format!(
        "origin {}  proxy {}  gateway {}",
        stack.origin.url, stack.proxy.url, stack.gateway.url
    ));
    config.origin = stack.origin.url.clone();
    config.proxy = stack.proxy.url.clone();
    config.gateway = stack.gateway.url.clone();
    let result = tokio::time::timeout(
        (config.awake + config.asleep) * 2 * config.cycles + config.drain + Duration::from_secs(60),
        fleet::run(config),
    )
    .await;
    if let Err(e) = stack.stop().await {
        tracing::warn!(error = %e, "the in-process servers did not stop cleanly");
    }
    match result {
        Ok(r) => r,
        Err(_) => anyhow::bail!("the demo did not finish in time"),
    }
}

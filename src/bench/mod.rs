//! `ssepush bench`: the load generator operators size a deployment with (in the spirit of
//! `nats bench` and `redis-benchmark`). Each benchmark runs against servers that are already
//! running (any SSE server for `sse` and `idle`), prints the exact parameters and what it
//! measured — a table, or one JSON document with `--json` — and asserts nothing.
//!
//! * [`sse`] — fan-out: deliveries/s, loss, publish→receive latency, server CPU per delivery.
//! * [`idle`] — idle SSE connections: server RSS per connection, and across rounds.
//! * [`handoffs`] — the proxy's handoff churn and its memory per sleeping handoff.
//! * [`wake`] — origin publish → push at the simulated gateway, under a sleeping population.
//!
//! Helpers: the lean SSE reader ([`sse_conn`]) and the stamped payload ([`payload`]), the
//! child-process workers ([`worker`], [`fleet`]), the publisher ([`publisher`]), `/proc`
//! readings ([`procfs`]), latency statistics ([`stats`]) and the report ([`output`]).

pub mod fleet;
pub mod handoffs;
pub mod idle;
pub mod output;
pub mod payload;
pub mod procfs;
pub mod proxy_api;
pub mod publisher;
pub mod sse;
pub mod sse_conn;
pub mod stats;
pub mod wake;
pub mod worker;

/// The benchmarks of `ssepush bench`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// SSE fan-out: N subscribers, a publish rate, a duration; deliveries/s, loss, latency
    /// percentiles, and the server's CPU per delivery and RSS (with --server-pid). Any SSE
    /// server: `--publish-format raw` posts the payload itself (e.g. Nchan).
    Sse(sse::SseFlags),
    /// Idle SSE connections: the server's RSS per connection; `--cycles K` opens and closes
    /// K rounds and prints the RSS after each.
    Idle(idle::IdleFlags),
    /// Handoff churn (create + hand back per second) and proxy memory per sleeping handoff.
    Handoffs(handoffs::HandoffFlags),
    /// Wake latency: origin publish → push received at the simulated gateway, at a wake rate,
    /// with a sleeping population of handoffs.
    Wake(wake::WakeFlags),
    /// A subscriber worker process (started by `sse` and `idle`).
    #[command(hide = true)]
    Worker(worker::WorkerFlags),
}

/// Runs one benchmark.
///
/// Errors: bad flags, servers that cannot be reached, a pid that cannot be read.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let open_files = raise_open_file_limit();
    match cmd {
        BenchCommand::Sse(f) => sse::run(f, open_files).await,
        BenchCommand::Idle(f) => idle::run(f, open_files).await,
        BenchCommand::Handoffs(f) => handoffs::run(f).await,
        BenchCommand::Wake(f) => wake::run(f).await,
        BenchCommand::Worker(f) => worker::run(f).await,
    }
}

/// Raises this process's soft open-file limit to its hard limit (children inherit it) and
/// returns the soft limit in force.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::Resource::NOFILE
                .get()
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// `1.5s`, `250ms`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn the_open_file_limit_is_at_its_hard_cap() {
        let soft = raise_open_file_limit();
        let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
        assert!(soft == hard || hard == rlimit::INFINITY, "{soft} {hard}");
    }
}

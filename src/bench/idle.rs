//! `ssepush bench idle`: N idle SSE connections held open (in child processes, see
//! [`super::fleet`]); the server's RSS per connection is its RSS growth over the baseline
//! divided by N, read after the connections were established and a settle time passed.
//! `--cycles K` opens and closes K rounds and prints the RSS after each opening and each
//! closing, which shows whether memory comes back or ratchets up.

use std::time::Duration;

use serde::Serialize;

use super::fleet::{Fleet, per_process_cap};
use super::output::{self, Table};
use super::procfs;
use super::worker::{ClientKind, WorkerSpec};

/// Flags of `ssepush bench idle`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleFlags {
    /// The SSE URL every connection opens.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/v1/sse?channel=bench.idle"
    )]
    pub url: String,
    /// Connections per round.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: usize,
    /// The server's process id (its RSS is what is measured).
    #[arg(long)]
    pub server_pid: u32,
    /// Rounds of opening and closing.
    #[arg(long, default_value_t = 1)]
    pub cycles: u32,
    /// Wait after every opening and closing before reading the RSS.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    pub settle: Duration,
    /// Connections per child process (default: the open-file limit less a reserve).
    #[arg(long)]
    pub per_process: Option<usize>,
    /// Handshakes in flight at once, per child process.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The JSON document of `ssepush bench idle --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleReport {
    pub bench: &'static str,
    pub url: String,
    pub connections: usize,
    pub cycles: u32,
    pub settle_secs: f64,
    pub server_pid: u32,
    pub workers: usize,
    pub load_average_before: String,
    pub load_average_after: String,
    /// The server's RSS before the first round.
    pub baseline_rss_bytes: u64,
    pub rounds: Vec<IdleRound>,
    /// Round 1: (RSS open − baseline) / connected.
    pub rss_per_connection_bytes: Option<f64>,
    /// The last round's open RSS less the first's (a ratchet shows as growth).
    pub open_rss_growth_bytes: i64,
}

/// One round of opening and closing.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleRound {
    pub round: u32,
    pub connected: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// RSS with the round's connections open and settled.
    pub rss_open_bytes: u64,
    /// (RSS open − baseline) / connected.
    pub per_connection_bytes: Option<f64>,
    /// RSS after they closed and the server settled.
    pub rss_closed_bytes: u64,
}

/// Runs the benchmark and prints its report.
///
/// Errors: bad flags, workers that cannot start, a server pid that cannot be read.
pub async fn run(flags: IdleFlags, open_files: u64) -> anyhow::Result<()> {
    let report = measure(&flags, open_files).await?;
    output::emit(flags.json, &table(&report), &report)
}

/// Runs the benchmark and returns its report.
pub async fn measure(flags: &IdleFlags, open_files: u64) -> anyhow::Result<IdleReport> {
    anyhow::ensure!(flags.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(flags.cycles > 0, "--cycles must be at least 1");
    super::sse_conn::Target::parse(&flags.url)?;
    let load_average_before = output::load_average();
    let baseline = procfs::sample(flags.server_pid)?.rss_bytes;
    let spec = WorkerSpec {
        url: flags.url.clone(),
        connections: 0,
        tag: 0,
        client: ClientKind::Raw,
        connect_concurrency: flags.connect_concurrency,
    };
    let per_process = flags
        .per_process
        .unwrap_or_else(|| per_process_cap(open_files));
    let mut fleet = Fleet::spawn(&spec, flags.connections, per_process)?;
    let workers = fleet.len();
    let pb = output::bar(flags.json, u64::from(flags.cycles));
    let mut rounds = Vec::new();
    for round in 1..=flags.cycles {
        pb.set_message(format!("round {round}: opening {}", flags.connections));
        let opened = fleet.open().await?;
        pb.set_message(format!(
            "round {round}: {} open, settling",
            opened.connected
        ));
        tokio::time::sleep(flags.settle).await;
        let rss_open = procfs::sample(flags.server_pid)?.rss_bytes;
        pb.set_message(format!("round {round}: closing"));
        fleet.close().await?;
        tokio::time::sleep(flags.settle).await;
        let rss_closed = procfs::sample(flags.server_pid)?.rss_bytes;
        rounds.push(IdleRound {
            round,
            connected: opened.connected,
            failed: opened.failed,
            first_error: opened.first_error,
            rss_open_bytes: rss_open,
            per_connection_bytes: (opened.connected > 0)
                .then(|| (rss_open as f64 - baseline as f64) / opened.connected as f64),
            rss_closed_bytes: rss_closed,
        });
        pb.inc(1);
    }
    fleet.finish().await?;
    pb.finish_and_clear();
    let first = rounds.first().map_or(0, |r| r.rss_open_bytes) as i64;
    let last = rounds.last().map_or(0, |r| r.rss_open_bytes) as i64;
    Ok(IdleReport {
        bench: "idle",
        url: flags.url.clone(),
        connections: flags.connections,
        cycles: flags.cycles,
        settle_secs: flags.settle.as_secs_f64(),
        server_pid: flags.server_pid,
        workers,
        load_average_before,
        load_average_after: output::load_average(),
        baseline_rss_bytes: baseline,
        rss_per_connection_bytes: rounds.first().and_then(|r| r.per_connection_bytes),
        rounds,
        open_rss_growth_bytes: last - first,
    })
}

fn table(r: &IdleReport) -> Table {
    let mut t = Table::new("ssepush bench idle");
    t.section("parameters")
        .row("url", &r.url)
        .row("connections per round", r.connections)
        .row("rounds", r.cycles)
        .row("settle", format!("{} s", r.settle_secs))
        .row("server pid", r.server_pid)
        .row("worker processes", r.workers)
        .row(
            "load average",
            format!(
                "{} before, {} after",
                r.load_average_before, r.load_average_after
            ),
        );
    t.section("server RSS")
        .row("baseline", output::bytes(r.baseline_rss_bytes as f64));
    for round in &r.rounds {
        t.row(
            &format!("round {}", round.round),
            format!(
                "{} connected ({} failed): {} open ({} per connection), {} closed",
                round.connected,
                round.failed,
                output::bytes(round.rss_open_bytes as f64),
                round.per_connection_bytes.map_or("–".into(), output::bytes),
                output::bytes(round.rss_closed_bytes as f64),
            ),
        );
        if let Some(e) = &round.first_error {
            t.row(&format!("round {} first error", round.round), e);
        }
    }
    t.row(
        "per connection",
        r.rss_per_connection_bytes.map_or("–".into(), output::bytes),
    )
    .row(
        "open RSS, last round − first",
        output::bytes(r.open_rss_growth_bytes as f64),
    );
    t
}

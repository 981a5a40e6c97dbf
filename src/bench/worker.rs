//! The subscriber side of the load generator, run in a child process (`ssepush bench worker`,
//! hidden): it holds its share of the SSE connections, so that the whole load is not capped by
//! one process's open-file limit (20,000 on the project's machines).
//!
//! The parent speaks to it in JSON lines: commands on its stdin (`open`, `close`, `finish`),
//! [`FromWorker`] messages on its stdout. `open` connects the worker's subscribers (at most
//! `connect_concurrency` handshakes at once, so the server's accept queue never overflows into
//! SYN retransmits) and answers [`FromWorker::Opened`]; from then on, every 200 ms, a
//! [`FromWorker::Progress`]; `close` drops every connection and answers
//! [`FromWorker::Closed`]; `finish` (or the end of stdin) answers [`FromWorker::Done`] with the
//! counts and the latency histogram, and exits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::payload;
use super::sse_conn::{SseConn, Target};
use super::stats::{Latency, unix_micros};

/// Flags of the hidden `ssepush bench worker` subcommand.
#[derive(Debug, clap::Args)]
pub struct WorkerFlags {
    /// The [`WorkerSpec`] as JSON.
    #[arg(long)]
    pub spec: String,
}

/// How the subscribers read their streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// Plain HTTP/1.1 on a `TcpStream`, a minimal chunked decoder and line splitter.
    Raw,
    /// reqwest's HTTP client and its byte stream (the same line splitter): for comparison.
    Reqwest,
}

/// What one worker does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// The SSE URL every subscriber opens.
    pub url: String,
    /// How many subscribers this worker holds.
    pub connections: usize,
    /// Count only stamps with this run tag (others are counted as foreign).
    pub tag: u64,
    pub client: ClientKind,
    /// Handshakes in flight at once.
    pub connect_concurrency: usize,
}

/// A worker's message to its parent (one JSON line each).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FromWorker {
    Opened {
        connected: u64,
        failed: u64,
        first_error: Option<String>,
    },
    Progress {
        received: u64,
        dropped: u64,
    },
    Closed,
    Done(WorkerTotals),
}

/// A worker's final counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerTotals {
    /// Stamped events of this run received, over all subscribers.
    pub received: u64,
    /// Of those, events whose sequence number was not above the subscriber's previous one
    /// (a duplicate or out of order).
    pub out_of_order: u64,
    /// Stamped events of another run.
    pub foreign: u64,
    /// Subscribers whose stream ended or failed while open.
    pub dropped: u64,
    pub first_drop_error: Option<String>,
    /// Publish→receive latency, as `(µs, count)` pairs.
    pub latency: Vec<(u64, u64)>,
}

/// Counters the subscriber tasks share.
#[derive(Debug, Default)]
struct Shared {
    received: AtomicU64,
    out_of_order: AtomicU64,
    foreign: AtomicU64,
    dropped: AtomicU64,
    first_drop_error: Mutex<Option<String>>,
    latency: Mutex<Latency>,
}

/// Runs a worker over its stdin/stdout until `finish`.
///
/// Errors: a spec that does not parse, a URL the bench cannot speak to, stdout gone.
pub async fn run(flags: WorkerFlags) -> anyhow::Result<()> {
    let spec: WorkerSpec = serde_json::from_str(&flags.spec).context("worker spec")?;
    let target = Target::parse(&spec.url)?;
    let shared = Arc::new(Shared::default());
    let mut out = tokio::io::stdout();
    let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut subscribers: JoinSet<()> = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut open = false;
    loop {
        tokio::select! {
            line = commands.next_line() => {
                let line = line.unwrap_or(None);
                match line.as_deref().map(str::trim) {
                    Some("open") => {
                        let opened = open_all(&spec, &target, &shared, &mut subscribers).await;
                        open = true;
                        send(&mut out, &opened).await?;
                    }
                    Some("close") => {
                        subscribers.shutdown().await;
                        open = false;
                        send(&mut out, &FromWorker::Closed).await?;
                    }
                    Some("finish") | None => {
                        subscribers.shutdown().await;
                        send(&mut out, &FromWorker::Done(totals(&shared))).await?;
                        return Ok(());
                    }
                    Some(other) => anyhow::bail!("unknown worker command {other:?}"),
                }
            }
            _ = tick.tick(), if open => {
                let progress = FromWorker::Progress {
                    received: shared.received.load(Ordering::Relaxed),
                    dropped: shared.dropped.load(Ordering::Relaxed),
                };
                send(&mut out, &progress).await?;
            }
        }
    }
}

async fn send(out: &mut tokio::io::Stdout, msg: &FromWorker) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(msg)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

fn totals(shared: &Shared) -> WorkerTotals {
    WorkerTotals {
        received: shared.received.load(Ordering::Relaxed),
        out_of_order: shared.out_of_order.load(Ordering::Relaxed),
        foreign: shared.foreign.load(Ordering::Relaxed),
        dropped: shared.dropped.load(Ordering::Relaxed),
        first_drop_error: shared.first_drop_error.lock().unwrap().clone(),
        latency: shared.latency.lock().unwrap().to_pairs(),
    }
}

/// Opens `spec.connections` subscribers, `connect_concurrency` at a time; each connected one
/// goes on reading in `subscribers`.
async fn open_all(
    spec: &WorkerSpec,
    target: &Target,
    shared: &Arc<Shared>,
    subscribers: &mut JoinSet<()>,
) -> FromWorker {
    let client = crate::client::http::builder()
        .pool_max_idle_per_host(0)
        .build()
        .ok();
    let sem = Arc::new(tokio::sync::Semaphore::new(spec.connect_concurrency.max(1)));
    // Each opener holds a permit until its handshake is done, then reads on.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    for _ in 0..spec.connections {
        let permit = sem.clone().acquire_owned().await;
        let (target, shared, tx, tag) = (target.clone(), shared.clone(), tx.clone(), spec.tag);
        let (kind, url, client) = (spec.client, spec.url.clone(), client.clone());
        subscribers.spawn(async move {
            match kind {
                ClientKind::Raw => match SseConn::open(&target).await {
                    Ok(conn) => {
                        drop(permit);
                        let _ = tx.send(Ok(()));
                        read_raw(conn, tag, &shared).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                },
                ClientKind::Reqwest => {
                    let resp = match client {
                        Some(c) => c
                            .get(&url)
                            .header("accept", "text/event-stream")
                            .send()
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| {
                                if r.status() == 200 {
                                    Ok(r)
                                } else {
                                    Err(format!("status {}", r.status()))
                                }
                            }),
                        None => Err("no HTTP client".into()),
                    };
                    match resp {
                        Ok(r) => {
                            drop(permit);
                            let _ = tx.send(Ok(()));
                            read_reqwest(r, tag, &shared).await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    // Readers keep their sender while they read: count answers, not the channel's end.
    let (mut connected, mut failed, mut first_error) = (0, 0, None);
    while connected + failed < spec.connections as u64
        && let Some(r) = rx.recv().await
    {
        match r {
            Ok(()) => connected += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    FromWorker::Opened {
        connected,
        failed,
        first_error,
    }
}

/// One subscriber's view of its stream: the last sequence number it saw.
struct Reader<'a> {
    tag: u64,
    last_seq: Option<u64>,
    shared: &'a Shared,
}

impl Reader<'_> {
    fn line(&mut self, line: &[u8]) {
        let Some(stamp) = payload::find(line) else {
            return;
        };
        if stamp.tag != self.tag {
            self.shared.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = unix_micros();
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        if self.last_seq.is_some_and(|l| stamp.seq <= l) {
            self.shared.out_of_order.fetch_add(1, Ordering::Relaxed);
        } else {
            self.last_seq = Some(stamp.seq);
        }
        self.shared
            .latency
            .lock()
            .unwrap()
            .record_us(now.saturating_sub(stamp.sent_us));
    }

    fn dropped(&self, why: String) {
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        self.shared
            .first_drop_error
            .lock()
            .unwrap()
            .get_or_insert(why);
    }
}

async fn read_raw(mut conn: SseConn, tag: u64, shared: &Shared) {
    let mut reader = Reader {
        tag,
        last_seq: None,
        shared,
    };
    let mut buf = vec![0u8; 4096];
    loop {
        match conn.read_lines(&mut buf, |l| reader.line(l)).await {
            Ok(true) => {}
            Ok(false) => return reader.dropped("the server ended the stream".into()),
            Err(e) => return reader.dropped(e.to_string()),
        }
    }
}

async fn read_reqwest(resp: reqwest::Response, tag: u64, shared: &Shared) {
    let mut reader = Reader {
        tag,
        last_seq: None,
        shared,
    };
    let mut lines = super::sse_conn::LineSplitter::default();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => lines.feed(&bytes, &mut |l: &[u8]| reader.line(l)),
            Err(e) => return reader.dropped(e.to_string()),
        }
    }
    reader.dropped("the server ended the stream".into());
}

//! Replay benchmark: how much one wide history replay slows publishers down.
//!
//! Starts an origin in this process (exactly `server::run`, on a loopback port), fills
//! `--channels` channels `hist.<i>` with `--events` events each, then measures the latency of
//! single-event publishes (`POST /v1/events` to `live.bench`, one after another with a short
//! pause) first on their own and then while one client replays the whole history with
//! `GET /v1/sse?channel=hist.>` and `Last-Event-ID: 0-0`. Prints publish latency p50/p99/max for
//! both phases and the replay's rate. A benchmark, not a test: nothing here asserts a speed.
//!
//! ```sh
//! cargo run --release -p ssepush-origin --example replay_bench -- --store memory --channels 10000 --events 60
//! cargo run --release -p ssepush-origin --example replay_bench -- --store redis://127.0.0.1:6379 --channels 5000 --events 20
//! ```
//!
//! On Redis the run uses its own namespace and deletes its keys at the end.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use ssepush_origin::settings::Settings;
use tokio_util::sync::CancellationToken;

struct Args {
    store: String,
    channels: usize,
    events: usize,
    baseline: Duration,
    pause: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        store: "memory".into(),
        channels: 10_000,
        events: 60,
        baseline: Duration::from_secs(5),
        pause: Duration::from_millis(2),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => args.store = value()?,
            "--channels" => args.channels = value()?.parse().map_err(|e| format!("{e}"))?,
            "--events" => args.events = value()?.parse().map_err(|e| format!("{e}"))?,
            "--baseline-secs" => {
                args.baseline = Duration::from_secs(value()?.parse().map_err(|e| format!("{e}"))?)
            }
            "--pause-ms" => {
                args.pause = Duration::from_millis(value()?.parse().map_err(|e| format!("{e}"))?)
            }
            other => {
                return Err(format!(
                    "unknown flag {other}; flags: --store memory|redis://… --channels N --events N \
                     --baseline-secs S --pause-ms MS"
                ));
            }
        }
    }
    Ok(args)
}

/// Latency percentiles of one phase, in milliseconds.
struct Summary {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().map_or(f64::NAN, ms)
    };
    Summary {
        n: samples.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: samples.last().copied().map_or(f64::NAN, ms),
    }
}

/// Publishes single events one after another until `stop`, returning each one's latency.
async fn publish_loop(
    http: reqwest::Client,
    url: String,
    pause: Duration,
    stop: CancellationToken,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let t = Instant::now();
        let resp = http
            .post(format!("{url}/v1/events"))
            .json(&json!({"channel": "live.bench", "data": {"n": n}}))
            .send()
            .await
            .expect("publish");
        assert!(resp.status().is_success(), "publish: {}", resp.status());
        resp.bytes().await.expect("publish body");
        samples.push(t.elapsed());
        n += 1;
        tokio::time::sleep(pause).await;
    }
    samples
}

/// Counts the event frames of an SSE stream (lines starting `data:`) until `want` arrived.
async fn replay(http: reqwest::Client, url: String, want: usize) -> (usize, Duration) {
    let t = Instant::now();
    let resp = http
        .get(format!("{url}/v1/sse?channel=hist.%3E"))
        .header("Last-Event-ID", "0-0")
        .send()
        .await
        .expect("replay connect");
    assert!(resp.status().is_success(), "replay: {}", resp.status());
    let mut body = resp.bytes_stream();
    let mut got = 0usize;
    // The last bytes of the previous chunk, so a `\ndata:` split across chunks still counts.
    let mut carry: Vec<u8> = Vec::new();
    while got < want {
        let Some(chunk) = body.next().await else {
            break;
        };
        let chunk = chunk.expect("replay read");
        carry.extend_from_slice(&chunk);
        got += carry.windows(6).filter(|w| w == b"\ndata:").count();
        let keep = carry.len().min(5);
        carry.drain(..carry.len() - keep);
    }
    (got, t.elapsed())
}

async fn fill(http: &reqwest::Client, url: &str, channels: usize, events: usize) {
    const BATCH: usize = 1000;
    let all: Vec<(usize, usize)> = (0..events)
        .flat_map(|e| (0..channels).map(move |c| (c, e)))
        .collect();
    for chunk in all.chunks(BATCH) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|(c, e)| json!({"channel": format!("hist.{c}"), "data": {"e": e, "pad": "x".repeat(32)}}))
            .collect();
        let resp = http
            .post(format!("{url}/v1/events"))
            .json(&batch)
            .send()
            .await
            .expect("fill");
        assert!(resp.status().is_success(), "fill: {}", resp.status());
    }
}

async fn cleanup_redis(url: &str, namespace: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let pattern = format!("ssepush:{{{namespace}}}:*");
    let mut cursor = 0u64;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
        else {
            return;
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> =
                redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let namespace = format!("bench-replay-{}", std::process::id());
    let settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        store: args.store.clone(),
        namespace: namespace.clone(),
        subscriber_queue: 1 << 16,
        ..Settings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    let server = {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            ssepush_origin::server::run(listener, settings, stop.cancelled_owned())
                .await
                .expect("origin");
        })
    };
    let http = ssepush_origin::service::tls::http_client(None).expect("HTTP client");
    let total = args.channels * args.events;
    let t = Instant::now();
    fill(&http, &url, args.channels, args.events).await;
    println!(
        "store {}: filled {} channels x {} events = {total} in {:.1} s",
        args.store,
        args.channels,
        args.events,
        t.elapsed().as_secs_f64()
    );

    // Phase 1: publishers alone.
    let stop = CancellationToken::new();
    let publisher = tokio::spawn(publish_loop(
        http.clone(),
        url.clone(),
        args.pause,
        stop.clone(),
    ));
    tokio::time::sleep(args.baseline).await;
    stop.cancel();
    let alone = summarize(publisher.await.expect("publisher"));

    // Phase 2: the same publishers while one client replays everything.
    let stop = CancellationToken::new();
    let publisher = tokio::spawn(publish_loop(
        http.clone(),
        url.clone(),
        args.pause,
        stop.clone(),
    ));
    let (got, took) = replay(http.clone(), url.clone(), total).await;
    stop.cancel();
    let during = summarize(publisher.await.expect("publisher"));

    let line = |name: &str, s: &Summary| {
        println!(
            "{name:<16} publishes {:>6}  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
            s.n, s.p50, s.p99, s.max
        )
    };
    line("alone", &alone);
    line("during replay", &during);
    println!(
        "replay           {got} of {total} events in {:.2} s = {:.0} events/s",
        took.as_secs_f64(),
        got as f64 / took.as_secs_f64()
    );
    shutdown.cancel();
    let _ = server.await;
    if args.store.starts_with("redis") {
        cleanup_redis(&args.store, &namespace).await;
    }
}

//! Smoke tests of `ssepush bench`: each benchmark runs as the real binary (so the subscriber
//! workers are real child processes) with a small N against real servers on port 0 in this
//! process (whose pid is the "server pid"; each test holds `exclusive()`, so the figures are its
//! own servers'), and its JSON report must be well formed and add
//! up. Nothing here asserts a speed: the figures are the benchmark's business.

use crate::support::{TestOrigin, exclusive, memory_settings};
use serde_json::Value;
use ssepush::device::stack::{Stack, StackOptions};

/// Runs `ssepush bench ARGS` and returns its stdout; panics with stderr when it fails.
async fn bench(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssepush"))
        .arg("bench")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run ssepush bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ssepush bench {args:?} failed:\n{stderr}"
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

async fn bench_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = bench(&all).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_spreads_subscribers_over_workers_and_counts_every_delivery() {
    let _only = exclusive().await;
    let origin = TestOrigin::start(memory_settings()).await;
    let url = format!("{}/v1/sse?channel=bench.smoke", origin.url);
    let publish = format!("{}/v1/events", origin.url);
    let pid = std::process::id().to_string();
    for client in ["raw", "reqwest"] {
        let r = bench_json(&[
            "sse",
            "--url",
            &url,
            "--publish-url",
            &publish,
            "--channel",
            "bench.smoke",
            "--subscribers",
            "7",
            "--per-process",
            "3",
            "--rate",
            "10",
            "--duration",
            "1s",
            "--settle",
            "100ms",
            "--drain",
            "60s",
            "--server-pid",
            &pid,
            "--client",
            client,
            "--pad",
            "16",
            // Publishes overlap, so a slow machine skips no tick.
            "--max-in-flight",
            "16",
        ])
        .await;
        assert_eq!(r["bench"], "sse");
        assert_eq!(r["params"]["subscribers"], 7);
        assert_eq!(r["params"]["client"], client);
        assert_eq!(u(&r["workers"]), 3, "7 subscribers at 3 per process: {r}");
        assert_eq!(u(&r["connected"]), 7, "{r}");
        assert_eq!(u(&r["connectFailed"]), 0, "{r}");
        let p = &r["published"];
        assert_eq!(u(&p["asked"]), 10, "{r}");
        assert_eq!(
            u(&p["ok"]) + u(&p["failed"]) + u(&p["skipped"]),
            u(&p["asked"])
        );
        assert_eq!(u(&p["failed"]), 0, "{r}");
        assert!(u(&p["ok"]) >= 1, "{r}");
        // Every accepted event reached every subscriber (the drain waits for them), once.
        let expected = u(&p["ok"]) * 7;
        assert_eq!(u(&r["expected"]), expected, "{r}");
        assert_eq!(u(&r["received"]), expected, "{r}");
        assert_eq!(u(&r["lost"]), 0, "{r}");
        assert_eq!(u(&r["outOfOrder"]), 0, "{r}");
        assert_eq!(u(&r["foreign"]), 0, "{r}");
        assert_eq!(u(&r["droppedSubscribers"]), 0, "{r}");
        assert_eq!(u(&r["latency"]["count"]), expected, "{r}");
        let l = &r["latency"];
        for (lo, hi) in [
            ("p50Ms", "p90Ms"),
            ("p90Ms", "p99Ms"),
            ("p99Ms", "p999Ms"),
            ("p999Ms", "maxMs"),
        ] {
            assert!(
                l[lo].as_f64().unwrap() <= l[hi].as_f64().unwrap(),
                "{lo} ≤ {hi}: {l}"
            );
        }
        let s = &r["server"];
        assert!(s["cpuSecs"].as_f64().unwrap() >= 0.0, "{r}");
        assert!(s["cpuPerDeliveryUs"].is_number(), "{r}");
        assert!(
            u(&s["rssPeakBytes"]) >= u(&s["rssStartBytes"]).min(u(&s["rssEndBytes"])),
            "{r}"
        );
        assert!(r["client"]["cpuSecs"].is_number(), "{r}");
    }

    // The table names the parameters and every figure.
    let table = bench(&[
        "sse",
        "--url",
        &url,
        "--publish-url",
        &publish,
        "--channel",
        "bench.smoke",
        "--subscribers",
        "2",
        "--rate",
        "4",
        "--duration",
        "500ms",
        "--settle",
        "0s",
        "--drain",
        "60s",
        "--server-pid",
        &pid,
    ])
    .await;
    for row in [
        "ssepush bench sse",
        "subscribers",
        "4 events/s",
        "expected",
        "received",
        "lost",
        "publish→receive",
        "CPU per delivery",
        "RSS",
        "load average",
    ] {
        assert!(table.contains(row), "no {row:?} in\n{table}");
    }
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reports_rss_per_connection_for_every_round() {
    let _only = exclusive().await;
    let origin = TestOrigin::start(memory_settings()).await;
    let url = format!("{}/v1/sse?channel=bench.idle", origin.url);
    let pid = std::process::id().to_string();
    let r = bench_json(&[
        "idle",
        "--url",
        &url,
        "--connections",
        "5",
        "--per-process",
        "2",
        "--cycles",
        "2",
        "--settle",
        "100ms",
        "--server-pid",
        &pid,
    ])
    .await;
    assert_eq!(r["bench"], "idle");
    assert_eq!(u(&r["workers"]), 3, "{r}");
    let rounds = r["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{r}");
    for (i, round) in rounds.iter().enumerate() {
        assert_eq!(u(&round["round"]), i as u64 + 1);
        assert_eq!(u(&round["connected"]), 5, "{r}");
        assert_eq!(u(&round["failed"]), 0, "{r}");
        let per = round["perConnectionBytes"].as_f64().unwrap();
        let delta = u(&round["rssOpenBytes"]) as f64 - u(&r["baselineRssBytes"]) as f64;
        assert!(
            (per * 5.0 - delta).abs() < 1.0,
            "per connection × 5 = growth: {r}"
        );
    }
    assert_eq!(r["rssPerConnectionBytes"], rounds[0]["perConnectionBytes"]);
    assert_eq!(
        r["openRssGrowthBytes"].as_i64().unwrap(),
        u(&rounds[1]["rssOpenBytes"]) as i64 - u(&rounds[0]["rssOpenBytes"]) as i64
    );
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoffs_churn_and_sleeping_memory_add_up() {
    let _only = exclusive().await;
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let pid = std::process::id().to_string();
    let r = bench_json(&[
        "handoffs",
        "--proxy",
        &stack.proxy.url,
        "--origin",
        &stack.origin.url,
        "--churn-duration",
        "1s",
        "--concurrency",
        "2",
        "--count",
        "30",
        "--streams",
        "3",
        "--settle",
        "100ms",
        "--server-pid",
        &pid,
    ])
    .await;
    assert_eq!(r["bench"], "handoffs");
    let c = &r["churn"];
    assert_eq!(u(&c["errors"]), 0, "{r}");
    assert!(
        u(&c["pairs"]) >= 2,
        "every loop makes at least one pair: {r}"
    );
    assert_eq!(
        u(&c["creates"]),
        u(&c["pairs"]),
        "each create was handed back: {r}"
    );
    assert_eq!(u(&c["createLatency"]["count"]), u(&c["creates"]), "{r}");
    assert_eq!(u(&c["handBackLatency"]["count"]), u(&c["pairs"]), "{r}");
    assert!(c["serverCpuPerPairUs"].is_number(), "{r}");
    let m = &r["memory"];
    assert_eq!(u(&m["asked"]), 30);
    assert_eq!(u(&m["created"]), 30, "{r}");
    assert_eq!(u(&m["errors"]), 0, "{r}");
    assert_eq!(u(&m["handedBack"]), 30, "{r}");
    assert!(m["rssPerHandoffBytes"].is_number(), "{r}");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_counts_every_owed_wake_at_the_gateway() {
    let _only = exclusive().await;
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let r = bench_json(&[
        "wake",
        "--origin",
        &stack.origin.url,
        "--proxy",
        &stack.proxy.url,
        "--gateway",
        &stack.gateway.url,
        "--handoffs",
        "20",
        "--streams",
        "4",
        "--rate",
        "50",
        "--duration",
        "1s",
        "--coalesce-ms",
        "0",
        "--drain",
        "60s",
    ])
    .await;
    assert_eq!(r["bench"], "wake");
    assert_eq!(u(&r["created"]), 20, "{r}");
    // 50 wakes/s × 1 s at 5 handoffs per channel is 10 publishes, capped at the 4 channels.
    assert_eq!(u(&r["publishes"]), 4, "{r}");
    assert_eq!(u(&r["publishErrors"]), 0, "{r}");
    assert_eq!(u(&r["wakesOwed"]), 20, "{r}");
    assert_eq!(u(&r["wakesReceived"]), 20, "{r}");
    assert_eq!(u(&r["wakesMissing"]), 0, "{r}");
    assert_eq!(u(&r["extraPushes"]), 0, "{r}");
    assert_eq!(u(&r["latency"]["count"]), 20, "{r}");
    assert_eq!(u(&r["handedBack"]), 20, "{r}");
    stack.stop().await.unwrap();
}

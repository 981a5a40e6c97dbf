//! `ssepush device run`, the real binary, against an origin, a simulated gateway and a proxy
//! with its real providers (all in this test process on loopback ports): a mixed fleet goes
//! through its cycles with nothing lost or repeated — and the checker fails the run, with a
//! non-zero exit, when events really are gone or when wakes never arrive.

use std::time::Duration;

use serde_json::Value;
use ssepush::device::stack::{Stack, StackOptions};
use ssepush::gateway::FaultSpec;

/// Runs `ssepush device run --json` against `stack`; returns the exit code and the report.
async fn device_run(stack: &Stack, args: &[&str]) -> (i32, Value) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ssepush"))
            .args(["device", "run", "--json"])
            .args(["--origin", &stack.origin.url])
            .args(["--proxy", &stack.proxy.url])
            .args(["--gateway", &stack.gateway.url])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("device run did not finish within 120 s")
    .expect("cannot run ssepush");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_loses_nothing_across_sleep_and_wake() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let (code, r) = device_run(
        &stack,
        &[
            "--devices",
            "30",
            "--platform",
            "mixed",
            "--cycles",
            "2",
            "--awake",
            "1s",
            "--asleep",
            "2s",
            "--flaps",
            "--local-filter",
            "data.severity >= 3",
        ],
    )
    .await;
    stack.stop().await.unwrap();
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(r["completed"], 30, "{r:#}");
    assert_eq!(r["sleeps"], 60, "{r:#}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["duplicated"], 0, "{r:#}");
    assert_eq!(r["out_of_order"], 0, "{r:#}");
    assert_eq!(r["missed_wakes"], 0, "{r:#}");
    let expected = r["expected"].as_u64().unwrap();
    assert!(expected > 0, "{r:#}");
    assert_eq!(r["received"].as_u64().unwrap(), expected, "{r:#}");
    // Phones were woken by real pushes (all three platforms' payloads read) and caught up
    // from the proxy; the local filter shows fewer events than were checked.
    assert!(r["wakes"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["from_proxy"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["flaps"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["displayed"].as_u64().unwrap() < expected, "{r:#}");
    assert!(r["wake_latency"]["count"].as_u64().unwrap() > 0, "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_gone_from_origin_and_proxy_fail_the_run() {
    // Two events per channel at the origin, two per handoff at the proxy; phones sleep through
    // (their wake filter never passes) while ~10 events a second arrive on each channel.
    let stack = Stack::start(StackOptions {
        retention_max_events: Some(2),
        buffer_events: Some(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let (code, r) = device_run(
        &stack,
        &[
            "--devices",
            "10",
            "--platform",
            "ios",
            "--cycles",
            "1",
            "--awake",
            "500ms",
            "--asleep",
            "2s",
            "--rate",
            "100",
            "--wake-filter",
            "data.severity > 10",
        ],
    )
    .await;
    stack.stop().await.unwrap();
    assert_ne!(code, 0, "{r:#}");
    assert_eq!(r["passed"], false, "{r:#}");
    assert!(r["lost"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["proxy_gaps"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["resets"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["duplicated"], 0, "{r:#}");
    // No wake was owed, so none is reported missing: the failure is the loss alone.
    assert_eq!(r["missed_wakes"], 0, "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_the_gateway_drops_are_reported_and_fail_the_run() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    stack
        .gateway
        .client
        .set_fault(&FaultSpec {
            drop: true,
            ..FaultSpec::default()
        })
        .await
        .unwrap();
    let (code, r) = device_run(
        &stack,
        &[
            "--devices",
            "9",
            "--platform",
            "mixed",
            "--cycles",
            "1",
            "--awake",
            "500ms",
            "--asleep",
            "2500ms",
            "--rate",
            "60",
        ],
    )
    .await;
    stack.stop().await.unwrap();
    assert_ne!(code, 0, "{r:#}");
    assert_eq!(r["passed"], false, "{r:#}");
    assert!(r["missed_wakes"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["wakes"], 0, "{r:#}");
    assert_eq!(r["pushes"], 0, "{r:#}");
    // The events themselves still arrive (from the proxy or the origin after the timeout).
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["duplicated"], 0, "{r:#}");
}

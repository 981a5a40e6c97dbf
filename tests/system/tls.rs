//! HTTPS for the outbound clients (issue 10, must-show 1): a real origin and a real webhook
//! receiver behind a TLS-terminating front whose certificate comes from a test CA (rcgen). The
//! proxy configured with that CA (`tls.extra_ca_path`) watches the `https://` stream, wakes the
//! phone, and the phone reads its events; the same proxy without the CA fails the handoff with
//! the certificate problem named. The origin delivers signed webhooks to an `https://` receiver
//! with the CA, and records the certificate problem without it.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use ssepush::client::origin::Subscription;
use ssepush_origin::EventId;

use crate::support::proxy::{Recorder, TestProxy, handoff_body, json_ids, proxy_settings};
use crate::support::tls::{TestCa, TlsFront};
use crate::support::webhooks::{Rx, fast, publish, register, status, wait_for_ids};
use crate::support::{TestOrigin, eventually, memory_settings, take_items};

const WITHIN: Duration = Duration::from_secs(10);

/// The phone streamed `chat.*` directly and saw one event: its id is the handoff's cursor.
async fn phone_streamed(origin: &TestOrigin) -> EventId {
    let id = origin
        .client
        .publish_one("chat.x", None, json!({"n": 0}))
        .await
        .unwrap();
    let sub = Subscription {
        channels: vec!["chat.*".into()],
        last_event_id: Some(EventId::ZERO),
        ..Default::default()
    };
    let _ = take_items(&origin.client, &sub, 1, WITHIN).await;
    id
}

#[tokio::test]
async fn an_https_origin_is_watched_with_the_extra_ca_and_the_phone_reads_its_events() {
    let origin = TestOrigin::start(memory_settings()).await;
    let ca = TestCa::new();
    let front = TlsFront::start(&ca, origin.addr).await;
    let recorder = Recorder::new();
    let mut settings = proxy_settings(&[&front.url]);
    settings.tls.extra_ca_path = Some(ca.ca_path.clone());
    let proxy = TestProxy::start(settings, recorder.clone()).await;

    let last = phone_streamed(&origin).await;
    let stream = format!("{}/v1/sse?channel=chat.*", front.url);
    assert!(stream.starts_with("https://"));
    let h = proxy
        .create(&handoff_body(&stream, Some(&last.to_string()), 1))
        .await;
    assert_eq!(proxy.status(&h).await["state"], "watching");

    let ids = origin
        .client
        .publish(&json!([
            {"channel": "chat.a", "data": {"n": 1}},
            {"channel": "chat.b", "data": {"n": 2}},
        ]))
        .await
        .unwrap();
    let expected: Vec<String> = ids.iter().map(ToString::to_string).collect();

    eventually(WITHIN, "a wake", || async {
        !recorder.wakes_for(&h.id).is_empty()
    })
    .await;
    // The events came over TLS: the woken phone catches up with exactly them.
    eventually(WITHIN, "both events buffered", || async {
        proxy.status(&h).await["pending"] == 2
    })
    .await;
    let got = proxy.events(&h, Some(&last.to_string())).await;
    assert_eq!(json_ids(&got), expected, "{got}");
    assert_eq!(got["events"][1]["data"]["n"], 2);
    let status = proxy.status(&h).await;
    assert!(status["lastError"].is_null(), "{status}");
    let back = proxy.handback(&h).await;
    assert_eq!(back["cursor"], expected[1]);

    proxy.stop().await;
    origin.stop().await;
}

#[tokio::test]
async fn without_the_ca_the_handoff_fails_with_the_certificate_problem() {
    let origin = TestOrigin::start(memory_settings()).await;
    let ca = TestCa::new();
    let front = TlsFront::start(&ca, origin.addr).await;
    let recorder = Recorder::new();
    // The same proxy, trusting Mozilla's roots only.
    let proxy = TestProxy::start(proxy_settings(&[&front.url]), recorder.clone()).await;

    let last = phone_streamed(&origin).await;
    let h = proxy
        .create(&handoff_body(
            &format!("{}/v1/sse?channel=chat.*", front.url),
            Some(&last.to_string()),
            2,
        ))
        .await;
    eventually(WITHIN, "the handoff failed", || async {
        proxy.status(&h).await["state"] == "failed"
    })
    .await;
    let status = proxy.status(&h).await;
    let reason = status["lastError"].as_str().unwrap_or_default();
    assert!(
        reason.contains("TLS certificate problem") && reason.contains("unknown issuer"),
        "{status}"
    );
    origin
        .client
        .publish_one("chat.a", None, json!({"n": 1}))
        .await
        .unwrap();
    crate::support::nothing_happens_for(Duration::from_millis(300)).await;
    assert!(
        recorder.sent().is_empty(),
        "no wake without a watched stream"
    );
    proxy.stop().await;
    origin.stop().await;
}

fn receiver_addr(rx: &Rx) -> SocketAddr {
    rx.url
        .trim_start_matches("http://")
        .trim_end_matches("/hook")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn webhooks_reach_an_https_receiver_signed_and_in_order() {
    let ca = TestCa::new();
    let mut settings = fast(memory_settings());
    settings.tls.extra_ca_path = Some(ca.ca_path.clone());
    let origin = TestOrigin::start(settings).await;
    let rx = Rx::start().await;
    let front = TlsFront::start(&ca, receiver_addr(&rx)).await;
    let url = format!("{}/hook", front.url);
    let id = register(&origin, &rx, json!({"url": url, "channels": ["orders.>"]})).await;
    let mut want = Vec::new();
    for i in 0..5 {
        want.push(publish(&origin, "orders.eu", json!({"n": i})).await);
    }
    // The receiver checks each signature with the Standard Webhooks reference crate.
    wait_for_ids(&rx, &want, Duration::from_secs(20)).await;
    let s = status(&origin, &id).await;
    assert_eq!(s["state"], "active", "{s}");
    origin.stop().await;
}

#[tokio::test]
async fn a_webhook_to_an_untrusted_certificate_records_the_problem_and_delivers_nothing() {
    let ca = TestCa::new();
    let origin = TestOrigin::start(fast(memory_settings())).await;
    let rx = Rx::start().await;
    let front = TlsFront::start(&ca, receiver_addr(&rx)).await;
    let url = format!("{}/hook", front.url);
    let id = register(&origin, &rx, json!({"url": url, "channels": ["orders.>"]})).await;
    publish(&origin, "orders.eu", json!({"n": 1})).await;
    eventually(WITHIN, "a failed attempt", || async {
        status(&origin, &id).await["lastError"].is_string()
    })
    .await;
    let s = status(&origin, &id).await;
    let reason = s["lastError"].as_str().unwrap();
    assert!(
        reason.contains("TLS certificate problem") && reason.contains("unknown issuer"),
        "{s}"
    );
    assert_eq!(rx.acked(), 0);
    origin.stop().await;
}

/// The tools trust the same roots plus `--extra-ca-path`: `ssepush subscribe` (the real binary)
/// reads from an `https://` origin with the CA, and stops with the certificate problem without.
#[tokio::test]
async fn the_cli_reads_an_https_origin_with_extra_ca_path_and_refuses_it_without() {
    let origin = TestOrigin::start(memory_settings()).await;
    let ca = TestCa::new();
    let front = TlsFront::start(&ca, origin.addr).await;
    let first = origin
        .client
        .publish_one("cli.a", None, json!({"n": 1}))
        .await
        .unwrap();
    let second = origin
        .client
        .publish_one("cli.a", None, json!({"n": 2}))
        .await
        .unwrap();
    let subscribe = |extra_ca: Option<&std::path::Path>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssepush"));
        cmd.args(["subscribe", "--origin", &front.url, "--channel", "cli.*"])
            .args(["--last-event-id", &first.to_string(), "--count", "1"])
            .env_remove("SSEPUSH_EXTRA_CA_PATH")
            .kill_on_drop(true);
        if let Some(path) = extra_ca {
            cmd.arg("--extra-ca-path").arg(path);
        }
        async move {
            tokio::time::timeout(WITHIN, cmd.output())
                .await
                .expect("ssepush subscribe hung")
                .unwrap()
        }
    };
    let out = subscribe(Some(&ca.ca_path)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let event: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(event["id"], second.to_string());
    assert_eq!(event["data"]["n"], 2);

    let out = subscribe(None).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "read an untrusted origin: {stderr}");
    assert!(
        stderr.contains("UnknownIssuer") || stderr.contains("unknown issuer"),
        "{stderr}"
    );
    origin.stop().await;
}

/// One TLS stack, rustls on ring: neither aws-lc nor OpenSSL is anywhere in the build.
#[test]
fn neither_aws_lc_nor_openssl_is_in_the_build() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for crate_name in ["aws-lc-rs", "aws-lc-sys", "openssl-sys", "native-tls"] {
        let out = std::process::Command::new(&cargo)
            .args([
                "tree",
                "--offline",
                "--workspace",
                "-e",
                "all",
                "-i",
                crate_name,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("did not match any packages"),
            "{crate_name} is in the build:\n{}{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

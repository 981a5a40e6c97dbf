//! Signals and a vanished log reader, on the real binary: a supervisor that pipes a server's
//! stderr and then goes away (`ssepush origin 2>&1 | head -1`) must not stop the server from
//! answering or from obeying SIGTERM; SIGHUP drains exactly as SIGTERM does. Origin, proxy
//! and gateway alike.

use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::support::binary::{GRACE_SECS, Server, close_log_reader, gateway, origin, proxy};

/// Opens an SSE stream and collects its bytes until it ends; resolves once the first bytes
/// arrived, so the signal goes out to a flowing stream.
async fn open_stream(url: String) -> tokio::task::JoinHandle<String> {
    let resp = crate::support::get(url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
                Err(e) => panic!("stream broke instead of ending: {e}; got {text:?}"),
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(());
            }
        }
        text
    });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the stream never started")
        .unwrap();
    reader
}

/// The drain repeated the `retry:` hint at the end of the stream (its last two blocks: the hint
/// and a comment saying why), besides the one the stream opened with.
fn ends_with_retry(text: &str) {
    let tail: Vec<&str> = text.trim_end_matches('\n').rsplit("\n\n").take(2).collect();
    assert!(
        text.matches("retry: ").count() >= 2 && tail.iter().any(|b| b.contains("retry: ")),
        "the stream did not end with a retry hint: {text:?}"
    );
}

/// The server answers a request that logs (with debug logging, every request does).
async fn answers(addr: &str, path: &str) {
    let client = crate::support::http();
    for _ in 0..20 {
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            client.get(format!("http://{addr}{path}")).send(),
        )
        .await
        .expect("no answer within 5 s")
        .unwrap_or_else(|e| panic!("GET {path}: connection closed with no answer: {e}"));
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    }
}

/// Sends `signal` and asserts a clean exit within the grace period.
async fn signal_and_wait(server: &mut Server, signal: &str) {
    let pid = server.child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(GRACE_SECS + 2), server.child.wait())
        .await
        .unwrap_or_else(|_| panic!("still running {GRACE_SECS} + 2 s after SIG{signal}"))
        .unwrap();
    assert!(
        status.success(),
        "SIG{signal}: exit status {status} (not a drain)"
    );
    assert!(started.elapsed() < Duration::from_secs(GRACE_SECS + 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_obeys_sigterm_after_its_log_reader_is_gone() {
    let mut server = origin().await;
    close_log_reader(&mut server);
    // Requests that log still get answers…
    answers(&server.addr, "/healthz").await;
    let streams = [
        open_stream(format!("http://{}/v1/sse?channel=a", server.addr)).await,
        open_stream(format!("http://{}/v1/sse?channel=b.*", server.addr)).await,
    ];
    answers(&server.addr, "/metrics").await;
    // …and SIGTERM still drains: every stream ends with its retry hint, the process exits.
    signal_and_wait(&mut server, "TERM").await;
    for s in streams {
        let text = tokio::time::timeout(Duration::from_secs(2), s)
            .await
            .unwrap()
            .unwrap();
        ends_with_retry(&text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_obeys_sigterm_after_its_log_reader_is_gone() {
    let mut server = proxy().await;
    close_log_reader(&mut server);
    answers(&server.addr, "/healthz").await;
    answers(&server.addr, "/v1/openapi.json").await;
    signal_and_wait(&mut server, "TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_obeys_sigterm_after_its_log_reader_is_gone() {
    let mut server = gateway().await;
    close_log_reader(&mut server);
    answers(&server.addr, "/_gateway/pushes").await;
    answers(&server.addr, "/metrics").await;
    signal_and_wait(&mut server, "TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_drains_the_origin_like_sigterm() {
    let mut server = origin().await;
    let stream = open_stream(format!("http://{}/v1/sse?channel=>", server.addr)).await;
    signal_and_wait(&mut server, "HUP").await;
    let text = tokio::time::timeout(Duration::from_secs(2), stream)
        .await
        .unwrap()
        .unwrap();
    ends_with_retry(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_drains_the_proxy_and_the_gateway() {
    for mut server in [proxy().await, gateway().await] {
        answers(&server.addr, "/metrics").await;
        signal_and_wait(&mut server, "HUP").await;
    }
}

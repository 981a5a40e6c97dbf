//! SIGTERM drains the real binary: every open SSE stream ends with a `retry:` line and the
//! process exits cleanly within its grace period.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_with_retry_and_exits_within_grace() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssepush"))
        .args(["origin", "--listen", "127.0.0.1:0"])
        .env("SSEPUSH_ORIGIN_SHUTDOWN_GRACE_SECS", "3")
        .env("SSEPUSH_ORIGIN_RETRY_MS", "1234")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The origin logs the address it bound; port 0 lets the OS pick a free one.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("addr=").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("origin exited before listening");
    })
    .await
    .expect("origin did not start");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let mut streams = Vec::new();
    for ch in ["a", "b.*", ">"] {
        let resp = crate::support::get(format!("http://{addr}/v1/sse?channel={ch}"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        streams.push(resp.bytes_stream());
    }
    let mut started = Vec::new();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let (first_bytes, seen) = tokio::sync::oneshot::channel::<()>();
            started.push(seen);
            tokio::spawn(async move {
                let mut first_bytes = Some(first_bytes);
                let mut text = String::new();
                while let Some(chunk) = s.next().await {
                    match chunk {
                        Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
                        Err(e) => panic!("stream broke instead of ending: {e}; got {text:?}"),
                    }
                    if let Some(tx) = first_bytes.take() {
                        let _ = tx.send(());
                    }
                }
                text
            })
        })
        .collect();
    // Every stream is flowing (its opening `retry:` arrived) before the signal goes out.
    for seen in started {
        tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .expect("a stream never started")
            .unwrap();
    }

    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = std::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(3 + 2), child.wait())
        .await
        .expect("the origin did not exit within its grace period")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(5));
    for r in readers {
        let text = tokio::time::timeout(Duration::from_secs(2), r)
            .await
            .unwrap()
            .unwrap();
        // The stream opened with the hint and, at shutdown, repeated it as its last field.
        assert!(text.starts_with("retry: 1234\n\n"), "{text:?}");
        let tail = text
            .trim_end_matches('\n')
            .rsplit("\n\n")
            .take(2)
            .collect::<Vec<_>>()
            .join("|");
        assert!(
            tail.contains("retry: 1234"),
            "the stream did not end with a retry hint: {text:?}"
        );
    }
}

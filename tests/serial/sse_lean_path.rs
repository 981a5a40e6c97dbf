//! The lean SSE path (the accept loop writes `/v1/sse` itself) notices a client that leaves at
//! once — its subscription and buffers are released — rather than at the next keep-alive
//! write, `keep_alive_secs` later. (In `serial`: it reads the process-wide `/metrics`.)

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestOrigin, eventually, exclusive};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_is_released_before_the_next_keep_alive() {
    let _only = exclusive().await;
    let settings = ssepush_origin::settings::Settings {
        keep_alive_secs: 600,
        ..crate::support::memory_settings()
    };
    let origin = TestOrigin::start(settings).await;
    let subscribers =
        || async { crate::support::metric(&origin.url, "ssepush_origin_subscribers").await };
    let before = subscribers().await;
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut c = tokio::net::TcpStream::connect(origin.addr).await.unwrap();
        c.write_all(b"GET /v1/sse?channel=leave HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
        conns.push(c);
    }
    eventually(Duration::from_secs(5), "20 subscribers", || async {
        subscribers().await == before + 20.0
    })
    .await;
    drop(conns);
    eventually(
        Duration::from_secs(5),
        "the subscribers released",
        || async { subscribers().await == before },
    )
    .await;
    origin.stop().await;
}

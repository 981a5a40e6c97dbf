//! A subscriber that stops reading is cut off once its queue is full, counted in
//! `ssepush_origin_slow_consumers_total`, and never holds back the publisher or a healthy
//! subscriber: both finish their whole run while the stalled socket has not been read at all.

use std::time::Duration;

use crate::support::{TestOrigin, exclusive, metric, take_items};
use serde_json::json;
use ssepush::client::origin::{Item, Subscription};
use ssepush_origin::settings::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_cut_off_without_delaying_anyone() {
    let settings = Settings {
        subscriber_queue: 512,
        ..crate::support::memory_settings()
    };
    let _only = exclusive().await;
    let origin = TestOrigin::start(settings).await;
    let before = metric(&origin.url, "ssepush_origin_slow_consumers_total").await;

    // The stalled client: a raw socket with a tiny receive buffer that sends its request and
    // then never reads, so the server's writes back up quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(origin.addr).await.unwrap();
    stalled
        .write_all(b"GET /v1/sse?channel=load HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    const EVENTS: usize = 2000;
    let healthy = {
        let client = origin.client.clone();
        tokio::spawn(async move {
            let sub = Subscription {
                channels: vec!["load".into()],
                ..Default::default()
            };
            take_items(&client, &sub, EVENTS, Duration::from_secs(60)).await
        })
    };
    crate::support::eventually(
        Duration::from_secs(5),
        "both subscribers registered",
        || async { metric(&origin.url, "ssepush_origin_subscribers").await >= 2.0 },
    )
    .await;

    // 2000 events of 8 KiB: far more than the stalled socket's buffers and queue can hold.
    let payload = "x".repeat(8 * 1024);
    for chunk in 0..EVENTS / 100 {
        let batch: Vec<_> = (0..100)
            .map(|i| json!({"channel": "load", "data": {"i": chunk * 100 + i, "pad": payload}}))
            .collect();
        origin
            .client
            .publish(&json!(batch))
            .await
            .expect("the publisher is never refused or blocked");
    }
    let got = healthy.await.unwrap();
    assert_eq!(got.len(), EVENTS, "the healthy subscriber got everything");
    for (i, item) in got.iter().enumerate() {
        let Item::Event(e) = item else {
            panic!("{item:?}")
        };
        assert_eq!(e.data["i"], i, "in order");
    }
    // Everything above happened while the stalled socket was never read.
    let after = metric(&origin.url, "ssepush_origin_slow_consumers_total").await;
    assert!(
        after >= before + 1.0,
        "slow consumer counted ({before} -> {after})"
    );

    // The server closed the stalled connection: reading now drains what was buffered, then EOF.
    let mut buf = vec![0u8; 1 << 16];
    let eof = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        eof.is_ok(),
        "the stalled connection was not closed by the server"
    );
    origin.stop().await;
}

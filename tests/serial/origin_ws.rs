//! A WebSocket that cannot keep up is closed and counted as a slow consumer, and publishing
//! is never held back by it.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use ssepush_origin::settings::Settings;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestOrigin, exclusive};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_cannot_keep_up_is_closed_and_counted() {
    let settings = Settings {
        ws_send_queue: 16,
        subscriber_queue: 64,
        ..crate::support::memory_settings()
    };
    let _only = exclusive().await;
    let origin = TestOrigin::start(settings).await;
    let before = crate::support::metric(&origin.url, "ssepush_origin_slow_consumers_total").await;
    // A client with a tiny receive buffer that subscribes and then stops reading.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(origin.addr).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{}/v1/ws", origin.addr), stream)
            .await
            .unwrap();
    ws.send(Message::Text(
        json!({"type": "subscribe", "id": "s", "channels": ["load"]})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let ok = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ok.to_text().unwrap().contains("\"ok\""), "{ok:?}");
    let payload = "x".repeat(8 * 1024);
    for chunk in 0..10 {
        let batch: Vec<_> = (0..100)
            .map(|i| json!({"channel": "load", "data": {"i": chunk * 100 + i, "pad": payload}}))
            .collect();
        origin
            .client
            .publish(&json!(batch))
            .await
            .expect("the publisher is never held back");
    }
    crate::support::eventually(WAIT, "the slow socket is counted", || async {
        crate::support::metric(&origin.url, "ssepush_origin_slow_consumers_total").await
            >= before + 1.0
    })
    .await;
    // Reading now drains what was buffered, then the socket ends (with 1013 if the close frame
    // made it through the full buffers).
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the slow socket was not closed");
    assert!(matches!(end, None | Some(1013)), "{end:?}");
    origin.stop().await;
}

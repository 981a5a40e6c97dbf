//! What an origin on Redis holds open: one connection for its three stores (event log, datasets,
//! webhooks), whose two multiplexed lanes (commands; large reads) are two sockets, plus the
//! event log's blocking feed connection — three sockets in all, whatever it serves. Before the
//! stores shared one connection, each opened its own: five.
//!
//! The sockets are counted from this process's own file descriptors (`/proc/self/fd` matched
//! against `/proc/net/tcp*`), so other processes on the same Redis cannot disturb the count;
//! no other test of this binary runs meanwhile (`crate::support::exclusive`).

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use ssepush::client::origin::{Frame, Item, Subscription};

use crate::support::{TestOrigin, exclusive};

/// The socket inodes this process holds.
fn own_socket_inodes() -> HashSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Established TCP connections of this process to `port` on any address.
fn connections_to(port: u16) -> usize {
    let own = own_socket_inodes();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|table| table.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(rem), Some(state), Some(inode)) = (cols.get(2), cols.get(3), cols.get(9))
            else {
                return false;
            };
            let rem_port = rem
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            *state == "01"
                && rem_port == Some(port)
                && inode.parse::<u64>().is_ok_and(|i| own.contains(&i))
        })
        .count()
}

fn redis_port() -> u16 {
    let url = crate::support::redis_url();
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    host.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(6379)
}

#[tokio::test]
async fn one_origin_opens_one_redis_connection_for_its_stores() {
    let _alone = exclusive().await;
    let port = redis_port();
    let before = connections_to(port);
    let origin = TestOrigin::start(crate::support::redis_settings(&crate::support::namespace(
        "conns",
    )))
    .await;

    // Every store works: a dataset write, a webhook list, a live event through the log's feed
    // (which proves the feed's blocking connection is open).
    let http = crate::support::http();
    let put = http
        .put(format!("{}/v1/datasets/conns/k", origin.url))
        .json(&json!(1))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let list = crate::support::get(format!("{}/v1/webhooks", origin.url))
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    let sub = Subscription {
        channels: vec!["conns.live".into()],
        filter: None,
        last_event_id: None,
    };
    let conn = origin.client.connect(&sub, None).await.expect("sse");
    let mut conn = std::pin::pin!(conn);
    let mut published = None;
    let live = loop {
        match tokio::time::timeout(Duration::from_secs(10), conn.next()).await {
            Ok(Some(Ok(Frame::LastEventId(_)))) if published.is_none() => {
                // Registered: anything published now arrives live, through the feed.
                published = Some(
                    origin
                        .client
                        .publish_one("conns.live", None, json!({"n": 1}))
                        .await
                        .unwrap(),
                );
            }
            Ok(Some(Ok(Frame::Item(Item::Event(e))))) => break e,
            Ok(Some(Ok(_))) => {}
            other => panic!("the stream ended before the live event: {other:?}"),
        }
    };
    assert_eq!(Some(live.id), published);

    let opened = connections_to(port) - before;
    assert_eq!(
        opened, 3,
        "an origin on Redis holds its commands lane, its reads lane and the feed's blocking \
         connection, shared by the event log, the datasets and the webhooks"
    );
    origin.stop().await;
}

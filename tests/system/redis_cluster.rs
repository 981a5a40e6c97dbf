//! The harness's local Redis Cluster (`support::redis_cluster`): three real masters that split
//! the slots, redirect clients, and go away when the test drops them.

use std::time::Duration;

use crate::support::redis_cluster::{MASTERS, RedisCluster};

#[tokio::test]
async fn three_masters_serve_every_slot_and_stop_on_drop() {
    let cluster = RedisCluster::start().await;
    assert_eq!(cluster.ports().len(), MASTERS);
    assert!(cluster.url().starts_with("redis+cluster://127.0.0.1:"));

    let info = cluster.cli(&["cluster", "info"]).await;
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    assert!(info.contains("cluster_known_nodes:3"), "{info}");

    // Keys in different slots land on different masters; `-c` follows the MOVED redirects.
    for i in 0..30 {
        let set = cluster
            .cli(&["set", &format!("harness-check-{i}"), "v"])
            .await;
        assert_eq!(set.trim(), "OK");
    }
    let mut holders = 0;
    for url in cluster.node_urls() {
        let port = url.rsplit(':').next().unwrap();
        let out = tokio::process::Command::new("redis-cli")
            .args(["-p", port, "--scan", "--pattern", "harness-check-*"])
            .output()
            .await
            .unwrap();
        if !out.stdout.is_empty() {
            holders += 1;
        }
    }
    assert!(holders >= 2, "30 keys all on one master");
    assert_eq!(cluster.keys("harness-check-*").await.len(), 30);

    let ports = cluster.ports();
    drop(cluster);
    for port in ports {
        crate::support::eventually(Duration::from_secs(5), "node stopped", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        })
        .await;
    }
}

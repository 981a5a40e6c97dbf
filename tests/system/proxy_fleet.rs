//! The proxy fleet: three real `ssepush proxy` processes on one real Redis, a real origin and
//! the simulated gateway. One node is SIGKILLed (its handoffs are claimed once its lease runs
//! out) or SIGTERMed (it hands them over at once); every event published meanwhile reaches its
//! phone exactly once, every phone is woken, and no two nodes ever act for one handoff — each
//! wake carries its sender and epoch (`ssepush.node`, `ssepush.epoch`), read back from the
//! gateway. Any node answers any handoff's calls, and the raw Redis keys hold no credential.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use ssepush_proxy::store::redis::RedisStore;
use ssepush_proxy::store::{HandoffStore, Sealer};

use crate::support::fleet::{
    FleetProxy, KEY, LEASE_TTL_MS, Phone, check_fencing, check_in, hand_off, wakes_since,
};
use crate::support::{TestGateway, TestOrigin, memory_settings, namespace, redis_url};

/// How a node leaves the fleet in a scenario.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    Kill,
    Term,
}

struct Fleet {
    _alone: tokio::sync::MutexGuard<'static, ()>,
    origin: TestOrigin,
    gateway: TestGateway,
    proxies: Vec<FleetProxy>,
    store: RedisStore,
    namespace: String,
}

impl Fleet {
    async fn start(test: &str, nodes: usize) -> Fleet {
        Self::start_on(test, nodes, &redis_url()).await
    }

    /// Starts `nodes` proxies on the store at `store` (a Redis or a Redis Cluster).
    async fn start_on(test: &str, nodes: usize, store: &str) -> Fleet {
        let alone = crate::support::fleet::one_fleet_at_a_time().await;
        let origin = TestOrigin::start(memory_settings()).await;
        let gateway = TestGateway::start().await;
        let ns = namespace(test);
        let mut proxies = Vec::new();
        for _ in 0..nodes {
            proxies.push(FleetProxy::start(store, &ns, &gateway.dir).await);
        }
        let store = RedisStore::connect(store, &ns, Sealer::from_settings(&[KEY.into()]).unwrap())
            .await
            .unwrap();
        let fleet = Fleet {
            _alone: alone,
            origin,
            gateway,
            proxies,
            store,
            namespace: ns,
        };
        fleet
            .until("every node joined", Duration::from_secs(10), |v| {
                v.nodes.len() == nodes && v.nodes.iter().all(|n| n.expires_in_ms > 0)
            })
            .await;
        fleet
    }

    fn urls(&self) -> Vec<String> {
        self.proxies.iter().map(|p| p.url.clone()).collect()
    }

    /// Waits until the fleet view satisfies `cond`; returns how long it took.
    async fn until(
        &self,
        what: &str,
        within: Duration,
        cond: impl Fn(&ssepush_proxy::store::FleetView) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let view = self.store.fleet().await.unwrap();
            if cond(&view) {
                return started.elapsed();
            }
            if started.elapsed() > within {
                let logs: Vec<String> = self.proxies.iter().map(|p| p.log_tail()).collect();
                panic!(
                    "{what}: not within {within:?}; fleet {view:?}\n{}",
                    logs.join("\n---\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the gateway accepted `n` wakes after `since`.
    async fn wakes(
        &self,
        since: u64,
        n: usize,
        within: Duration,
    ) -> Vec<crate::support::fleet::SeenWake> {
        let started = Instant::now();
        loop {
            let seen = wakes_since(&self.gateway.client, since).await;
            if seen.len() >= n {
                return seen;
            }
            if started.elapsed() > within {
                let logs: Vec<String> = self.proxies.iter().map(|p| p.log_tail()).collect();
                panic!(
                    "only {} of {n} wakes within {within:?}\n{}",
                    seen.len(),
                    logs.join("\n---\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        for mut p in self.proxies {
            let _ = p.child.start_kill();
            let _ = p.child.wait().await;
        }
        self.gateway.stop().await;
        self.origin.stop().await;
    }
}

/// Publishes one event on each channel; returns the id per channel.
async fn publish_round(
    origin: &TestOrigin,
    channels: usize,
    round: u32,
) -> HashMap<String, String> {
    let mut ids = HashMap::new();
    for c in 0..channels {
        let channel = format!("fleet.c{c}");
        let id = origin
            .client
            .publish_one(&channel, None, json!({"round": round}))
            .await
            .unwrap();
        ids.insert(channel, id.to_string());
    }
    ids
}

/// Every phone checks in (spread over `proxies`, so most calls go to a node that does not own
/// the handoff).
async fn check_in_all(proxies: &[String], phones: Vec<Phone>) -> Vec<Phone> {
    let http = crate::support::http();
    futures::stream::iter(phones)
        .map(|mut p| {
            let http = http.clone();
            async move {
                check_in(&http, proxies, &mut p).await;
                p
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

/// The scenario of the fleet tests: `handoffs` phones on `channels` streams spread over three
/// nodes, one round of events and wakes, one node stopped by `stop`, a second round published
/// at once, then every phone must be woken again and read exactly its two events.
async fn one_node_leaves(test: &str, stop: Stop, handoffs: usize, channels: usize, store: &str) {
    let mut fleet = Fleet::start_on(test, 3, store).await;
    let urls = fleet.urls();
    let seed = fleet
        .origin
        .client
        .publish_one("fleet.seed", None, json!({}))
        .await
        .unwrap()
        .to_string();
    let http = crate::support::http();
    let origin_url = fleet.origin.url.clone();
    let ns = fleet.namespace.clone();
    let mut phones: Vec<Phone> = futures::stream::iter(0..handoffs)
        .map(|i| {
            let (http, urls, origin_url, seed, ns) = (
                http.clone(),
                urls.clone(),
                origin_url.clone(),
                seed.clone(),
                ns.clone(),
            );
            async move {
                let channel = format!("fleet.c{}", i % channels);
                let token = format!("fcm-{ns}-{i}");
                hand_off(
                    &http,
                    &urls[i % urls.len()],
                    &origin_url,
                    &channel,
                    &seed,
                    &token,
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    phones.sort_by(|a, b| a.id.cmp(&b.id));
    let view = fleet.store.fleet().await.unwrap();
    let holds: Vec<u64> = view.nodes.iter().map(|n| n.holds).collect();
    assert_eq!(holds.iter().sum::<u64>(), handoffs as u64, "{view:?}");
    assert!(
        holds.iter().all(|h| *h as usize >= handoffs / 4),
        "handoffs not spread: {view:?}"
    );

    // Round 1: every phone is woken once and reads its event.
    let round1 = publish_round(&fleet.origin, channels, 1).await;
    let wakes1 = fleet.wakes(0, handoffs, Duration::from_secs(60)).await;
    let since = wakes1.iter().map(|w| w.seq).max().unwrap();
    let phones = check_in_all(&urls, phones).await;

    // One node leaves; the second round is published at once.
    let victim = 2;
    let victim_node = {
        // The node whose address is the victim's.
        let view = fleet.store.fleet().await.unwrap();
        view.nodes
            .iter()
            .find(|n| n.addr == fleet.proxies[victim].url)
            .expect("victim registered")
            .node
            .clone()
    };
    let victim_held = fleet.store.owned(&victim_node).await.unwrap().len();
    assert!(victim_held > 0);
    let stopped_at = Instant::now();
    match stop {
        Stop::Kill => fleet.proxies[victim].kill().await,
        Stop::Term => fleet.proxies[victim].terminate(),
    }
    let round2 = publish_round(&fleet.origin, channels, 2).await;
    let survivors: Vec<String> = urls
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, u)| u.clone())
        .collect();
    // Every handoff of the stopped node is watched again by a survivor: within the lease ttl
    // plus 2 s after a SIGKILL; after a SIGTERM at once — sooner than its lease could have run
    // out (the drain, a tick, the claims).
    let limit = match stop {
        Stop::Kill => Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(2),
        Stop::Term => Duration::from_millis(LEASE_TTL_MS),
    };
    let victim_for_check = victim_node.clone();
    fleet
        .until(
            "the stopped node's handoffs taken over",
            limit + Duration::from_secs(30),
            |v| {
                v.free == 0
                    && v.nodes.iter().all(|n| n.node != victim_for_check)
                    && v.nodes.iter().map(|n| n.holds).sum::<u64>() == handoffs as u64
            },
        )
        .await;
    let took = stopped_at.elapsed();
    eprintln!(
        "{stop:?}: {victim_held} handoffs of {victim_node} taken over in {took:?} (lease ttl {LEASE_TTL_MS} ms)"
    );
    if stop == Stop::Term {
        let status = fleet.proxies[victim].exited(Duration::from_secs(10)).await;
        assert!(status.success(), "{status:?}");
    }

    // Round 2: every phone is woken again (0 lost wakes) and reads exactly its two events
    // (0 lost, 0 duplicated), checking in at the surviving nodes.
    let wakes2 = fleet.wakes(since, handoffs, Duration::from_secs(60)).await;
    let phones = check_in_all(&survivors, phones).await;
    for p in &phones {
        assert_eq!(
            p.received,
            vec![round1[&p.channel].clone(), round2[&p.channel].clone()],
            "{} on {}",
            p.id,
            p.channel
        );
    }
    // Fencing: each handoff's wakes, in arrival order, never go back an epoch and never carry
    // one epoch from two nodes; each phone got exactly one wake per round.
    let mut all = wakes1.clone();
    all.extend(fleet.wakes(since, handoffs, Duration::from_secs(1)).await);
    let by = check_fencing(&all);
    assert_eq!(by.len(), handoffs);
    let moved: Vec<_> = by
        .iter()
        .filter(|(_, seen)| seen.iter().any(|(n, _)| *n != seen[0].0))
        .collect();
    assert_eq!(moved.len(), victim_held, "handoffs woken by a second node");
    for (h, seen) in &by {
        assert_eq!(seen.len(), 2, "{h}: {seen:?}");
    }
    assert_eq!(wakes2.len(), handoffs);
    // No wake from the stopped node after it stopped.
    assert!(
        wakes2
            .iter()
            .all(|w| w.payload.node.as_deref() != Some(victim_node.as_str())),
        "the stopped node sent a wake"
    );
    fleet.stop().await;
    assert!(took <= limit, "takeover took {took:?}, more than {limit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_loses_no_wake_and_no_event() {
    one_node_leaves("fleet-kill", Stop::Kill, 3000, 30, &redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terminated_node_hands_over_at_once() {
    one_node_leaves("fleet-term", Stop::Term, 600, 12, &redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_loses_nothing_on_a_redis_cluster() {
    // A real three-master cluster: a handoff's keys in one slot, the fleet's in another.
    let cluster = crate::support::redis_cluster::RedisCluster::start().await;
    one_node_leaves("fleet-cluster", Stop::Kill, 300, 6, &cluster.url()).await;
    // Every handoff's record is in the cluster (read from all three masters).
    let keys = cluster.keys("t-fleet-cluster*:h:*").await;
    assert_eq!(keys.len(), 300, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_answers_for_any_handoff_and_redis_holds_no_credential() {
    let fleet = Fleet::start("fleet-any", 3).await;
    let urls = fleet.urls();
    let http = crate::support::http();
    let seed = fleet
        .origin
        .client
        .publish_one("fleet.any", None, json!({}))
        .await
        .unwrap()
        .to_string();
    let mut phones = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        phones.push(
            hand_off(
                &http,
                url,
                &fleet.origin.url,
                "fleet.any",
                &seed,
                &format!("fcm-any-{i}"),
            )
            .await,
        );
    }
    let ev = fleet
        .origin
        .client
        .publish_one("fleet.any", None, json!({"x": 1}))
        .await
        .unwrap()
        .to_string();
    fleet.wakes(0, 3, Duration::from_secs(20)).await;
    for (i, phone) in phones.iter_mut().enumerate() {
        // GET status on every node: the same answer.
        let mut states = Vec::new();
        for url in &urls {
            let r = http
                .get(format!("{url}/v1/handoffs/{}", phone.id))
                .bearer_auth(&phone.token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = r.json().await.unwrap();
            states.push((v["state"].clone(), v["newestId"].clone()));
            // A wrong token is refused by every node.
            let r = http
                .get(format!("{url}/v1/handoffs/{}", phone.id))
                .bearer_auth("not-the-token")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
        }
        assert!(states.iter().all(|s| *s == states[0]), "{states:?}");
        assert_eq!(states[0].0, "woken");
        assert_eq!(states[0].1, ev.as_str());
        // /events and DELETE on a node that does not own it.
        let other = vec![urls[(i + 1) % urls.len()].clone()];
        check_in(&http, &other, phone).await;
        assert_eq!(phone.received, vec![ev.clone()]);
        let r = http
            .delete(format!("{}/v1/handoffs/{}", other[0], phone.id))
            .bearer_auth(&phone.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["state"], "closed");
        assert_eq!(v["cursor"], ev.as_str());
        let r = http
            .get(format!("{}/v1/handoffs/{}", urls[i], phone.id))
            .bearer_auth(&phone.token)
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["state"], "closed");
    }
    // `ssepush proxy status`: the three nodes with their leases, the handoffs by state.
    let status = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ssepush"));
        cmd.args(["proxy", "status", "--store", &redis_url()])
            .args(["--namespace", &fleet.namespace]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("ssepush proxy status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let v: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{v}");
    assert!(
        nodes.iter().all(|n| n["expiresInMs"].as_i64().unwrap() > 0),
        "{v}"
    );
    assert!(
        nodes
            .iter()
            .all(|n| urls.contains(&n["addr"].as_str().unwrap().to_owned())),
        "{v}"
    );
    assert_eq!(v["handoffs"]["closed"], 3, "{v}");
    let table = status(false);
    assert!(
        table.contains("NODE") && table.contains("closed 3"),
        "{table}"
    );
    // The raw keys: no upstream credential, no stream URL, no device token in plaintext.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", fleet.namespace))
        .query_async(&mut conn)
        .await
        .unwrap();
    let handoff_keys = keys.iter().filter(|k| k.contains(":h:")).count();
    assert_eq!(handoff_keys, 3, "{keys:?}");
    for key in &keys {
        let text = crate::support::fleet::raw_values(&mut conn, key).await;
        for secret in ["upstream-secret-fleet-4242", "fleet.any", "fcm-any-"] {
            assert!(
                !text.contains(secret),
                "{key} holds {secret:?} in plaintext"
            );
        }
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_run_on_three_proxies_loses_nothing_when_one_is_killed() {
    let mut fleet = Fleet::start("fleet-device", 3).await;
    let proxies = fleet.urls().join(",");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssepush"))
        .args(["device", "run", "--json"])
        .args(["--origin", &fleet.origin.url])
        .args(["--proxy", &proxies])
        .args(["--gateway", &fleet.gateway.url])
        // FCM phones: the test reads each wake's sender and epoch back from the gateway.
        .args(["--devices", "30", "--platform", "android", "--cycles", "3"])
        // Asleep long enough that the killed node's phones are still asleep well after its
        // lease (3 s) ran out and its handoffs were claimed: the run must see wakes sent by the
        // new owners (with 8 s, a run whose publisher happened to be slow saw none).
        .args(["--awake", "1s", "--asleep", "12s"])
        .kill_on_drop(true)
        .output();
    let run = tokio::spawn(run);
    // Mid-run: the phones are asleep, their handoffs spread over the three nodes.
    fleet
        .until("handoffs on every node", Duration::from_secs(30), |v| {
            v.nodes.iter().filter(|n| n.holds > 0).count() == 3
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.proxies[2].kill().await;
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("device run finished")
        .unwrap()
        .expect("ran ssepush device run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!(
        "device run, 3 proxies, one SIGKILLed: expected {} received {} lost {} duplicated {} missed wakes {} wakes {} from proxy {}",
        r["expected"],
        r["received"],
        r["lost"],
        r["duplicated"],
        r["missed_wakes"],
        r["wakes"],
        r["from_proxy"]
    );
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["duplicated"], 0, "{r:#}");
    assert_eq!(r["missed_wakes"], 0, "{r:#}");
    assert_eq!(r["out_of_order"], 0, "{r:#}");
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert!(r["wakes"].as_u64().unwrap() > 0, "{r:#}");
    // Handoffs of the killed node were woken by the others (a later epoch), and no two nodes
    // acted for one handoff.
    let wakes = wakes_since(&fleet.gateway.client, 0).await;
    check_fencing(&wakes);
    let taken_over = wakes
        .iter()
        .filter(|w| w.payload.epoch.unwrap_or(0) > 1)
        .count();
    eprintln!(
        "{} wakes, {taken_over} of them after a takeover",
        wakes.len()
    );
    assert!(taken_over > 0, "no handoff was woken after a takeover");
    fleet.stop().await;
}

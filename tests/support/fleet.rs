//! Proxy fleets: real `ssepush proxy` processes (the binary, `CARGO_BIN_EXE_ssepush`) sharing
//! one Redis namespace, with short leases, pushing through a simulated gateway's credentials;
//! and the phones' side of the test: handoffs created on any node, check-ins on any node, the
//! wakes read back from the gateway's records with their sender and epoch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ssepush::gateway::PushQuery;
use ssepush::gateway::client::GatewayClient;
use ssepush_proxy::protocol::{HandoffCreated, WakePayload};

/// The lease ttl the fleet tests run with (ms), and how often nodes tick.
pub const LEASE_TTL_MS: u64 = 3000;
pub const TICK_MS: u64 = 250;
/// The key every fleet test seals credentials with (`k1`, 32 bytes of 0x07).
pub const KEY: &str = "k1:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// Fleet tests run one at a time: each starts three or four processes and measures a
/// takeover against a lease of seconds, which two fleets at once on a small machine would
/// distort.
pub async fn one_fleet_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// One proxy process of a fleet.
pub struct FleetProxy {
    pub child: tokio::process::Child,
    pub url: String,
    pub log: PathBuf,
}

impl FleetProxy {
    /// Starts `ssepush proxy` on a free loopback port, on `store` in `namespace`, with the
    /// gateway's credentials; returns once `/healthz` answers.
    pub async fn start(store: &str, namespace: &str, gateway_dir: &Path) -> FleetProxy {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{namespace}-proxy-{port}.log"));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssepush"))
            .args(["proxy", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--store", store])
            .arg("--gateway-credentials")
            .arg(gateway_dir)
            .env("SSEPUSH_PROXY_FLEET__NAMESPACE", namespace)
            .env(
                "SSEPUSH_PROXY_FLEET__LEASE_TTL_MS",
                LEASE_TTL_MS.to_string(),
            )
            .env("SSEPUSH_PROXY_FLEET__TICK_MS", TICK_MS.to_string())
            .env(
                "SSEPUSH_PROXY_FLEET__ENCRYPTION_KEYS",
                format!("[\"{KEY}\"]"),
            )
            .env("SSEPUSH_PROXY_WAKE__COALESCE_MS", "50")
            .env("SSEPUSH_PROXY_WAKE__MAX_PER_HOUR", "60")
            .env("SSEPUSH_PROXY_SHUTDOWN_GRACE_SECS", "2")
            .env("RUST_LOG", "warn,ssepush_proxy::fleet=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("proxy log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run ssepush proxy");
        let url = format!("http://127.0.0.1:{port}");
        let http = crate::support::http();
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{url}/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "proxy on {url} did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        FleetProxy { child, url, log }
    }

    /// SIGKILL: the process dies at once, its lease is left to run out.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM.
    pub fn terminate(&mut self) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
    }

    /// Waits for the process to exit (within `within`).
    pub async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the proxy did not exit after SIGTERM")
            .expect("wait")
    }

    /// The last lines of its log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One simulated phone's handoff.
#[derive(Debug, Clone)]
pub struct Phone {
    pub id: String,
    pub token: String,
    pub channel: String,
    /// Its last event id (what it checks in after).
    pub cursor: String,
    /// Every event id it received, in order.
    pub received: Vec<String>,
}

/// Creates a handoff for an FCM device on `proxy` for `channel`, from `cursor`.
pub async fn hand_off(
    http: &reqwest::Client,
    proxy: &str,
    origin: &str,
    channel: &str,
    cursor: &str,
    fcm_token: &str,
) -> Phone {
    let body = json!({
        "stream": {"url": format!("{origin}/v1/sse?channel={channel}"), "lastEventId": cursor,
                   "headers": {"Authorization": "Bearer upstream-secret-fleet-4242"}},
        "push": {"platform": "fcm", "token": fcm_token},
        "wake": {"coalesceMs": 50},
    });
    let resp = http
        .post(format!("{proxy}/v1/handoffs"))
        .json(&body)
        .send()
        .await
        .expect("create handoff");
    assert_eq!(
        resp.status(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let created: HandoffCreated = resp.json().await.unwrap();
    Phone {
        id: created.id,
        token: created.token,
        channel: channel.to_owned(),
        cursor: cursor.to_owned(),
        received: Vec::new(),
    }
}

/// Checks in at `proxy` (any node of the fleet) after the phone's cursor, retrying while the
/// handoff is between nodes (503); appends what arrived and moves the cursor.
pub async fn check_in(http: &reqwest::Client, proxies: &[String], phone: &mut Phone) {
    let started = Instant::now();
    let mut attempt = 0usize;
    let mut last: String;
    loop {
        let proxy = &proxies[(phone.id.len() + attempt) % proxies.len()];
        attempt += 1;
        let resp = http
            .get(format!("{proxy}/v1/handoffs/{}/events", phone.id))
            .header("last-event-id", &phone.cursor)
            .bearer_auth(&phone.token)
            .send()
            .await;
        match resp {
            Ok(r) if r.status() == 200 => {
                let body: Value = r.json().await.unwrap();
                assert!(body["gap"].is_null(), "a gap for {}: {body}", phone.id);
                for e in body["events"].as_array().unwrap() {
                    let id = e["id"].as_str().unwrap().to_owned();
                    phone.received.push(id.clone());
                    phone.cursor = id;
                }
                return;
            }
            Ok(r) if r.status() == 503 => {
                last = format!("{proxy}: 503 {}", r.text().await.unwrap_or_default());
            }
            Ok(r) => panic!(
                "check-in of {} answered {}: {}",
                phone.id,
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(e) => last = format!("{proxy}: {e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "check-in of {} kept failing; last: {last}",
            phone.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A wake as the gateway received it.
#[derive(Debug, Clone)]
pub struct SeenWake {
    pub seq: u64,
    pub payload: WakePayload,
}

/// Every accepted FCM wake the gateway recorded after `since`, in arrival order.
pub async fn wakes_since(gateway: &GatewayClient, since: u64) -> Vec<SeenWake> {
    let mut out = Vec::new();
    let mut since = since;
    loop {
        let page = gateway
            .pushes(&PushQuery {
                since: Some(since),
                limit: Some(10_000),
                ..PushQuery::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return out;
        };
        since = last.seq;
        for r in page {
            if r.status != 200 {
                continue;
            }
            let body: Value = serde_json::from_str(&r.body).unwrap();
            let text = body["message"]["data"]["ssepush"].as_str().unwrap();
            out.push(SeenWake {
                seq: r.seq,
                payload: serde_json::from_str(text).unwrap(),
            });
        }
    }
}

/// The fencing check over every wake: per handoff, each epoch was used by one node only, and
/// epochs never go back in arrival order (no node woke a phone under an epoch older than one
/// already used). Returns the wakes per handoff.
pub fn check_fencing(wakes: &[SeenWake]) -> HashMap<String, Vec<(String, u64)>> {
    let mut by: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for w in wakes {
        let node = w.payload.node.clone().expect("a wake names its node");
        let epoch = w.payload.epoch.expect("a wake carries its epoch");
        by.entry(w.payload.handoff.clone())
            .or_default()
            .push((node, epoch));
    }
    for (handoff, seen) in &by {
        let mut owners: HashMap<u64, &str> = HashMap::new();
        let mut last = 0;
        for (node, epoch) in seen {
            let first = owners.entry(*epoch).or_insert(node);
            assert_eq!(
                *first, node,
                "two nodes acted for {handoff} under epoch {epoch}: {seen:?}"
            );
            assert!(
                *epoch >= last,
                "{handoff} was woken under epoch {epoch} after epoch {last}: {seen:?}"
            );
            last = *epoch;
        }
    }
    by
}

/// Everything a Redis key holds, as text (every field and member of a hash, set or sorted
/// set), to look for plaintext in.
pub async fn raw_values(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(conn).await.unwrap();
    let values: Vec<String> = match kind.as_str() {
        "hash" => redis::cmd("HGETALL")
            .arg(key)
            .query_async(conn)
            .await
            .unwrap(),
        "set" => redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(conn)
            .await
            .unwrap(),
        "zset" => redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await
            .unwrap(),
        "string" => vec![redis::cmd("GET").arg(key).query_async(conn).await.unwrap()],
        other => panic!("unexpected key type {other} for {key}"),
    };
    format!("{key} {}", values.join(" "))
}

//! The web client (`clients/web`) in a real headless Chromium, through the whole loop the
//! product exists for: the sample page of `ssepush demo --web` streams from a real origin with
//! `SsePushSource`; the window is minimised (a real `visibilitychange`), so the page hands its
//! stream to a real proxy; events are published meanwhile; the proxy's Web Push provider sends
//! an RFC 8291-encrypted, VAPID-signed wake to the simulated Web Push service; the test
//! decrypts it with the subscription keys it generated (headless Chromium has no push service
//! offline) and delivers the plaintext to the page's service worker as a real `push` event
//! (`ServiceWorker.deliverPushMessage`); the worker fetches the buffered events and posts them
//! to the page; the page is frozen and resumed through the page lifecycle
//! (`Page.setWebLifecycleState`) with a second wake in between, comes back, catches up from the
//! proxy, hands back and reopens its stream — and shows every event exactly once, in order.
//! When the origin's retention dropped events meanwhile (and the proxy's small buffer could not
//! cover them), the page shows `ssepush.reset` instead of silently missing them.
//!
//! The client is built with npm (`clients/web`, `npm ci` + `npm run build`) when its build is
//! missing or stale. Needs Chromium, Node.js and npm; fails, never skips, without them.

use std::time::Duration;

use crate::support::browser::Browser;
use base64::Engine;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use ssepush::client::webpush::UserAgentKeys;
use ssepush::device::stack::{Stack, StackOptions};
use ssepush::device::web::{WebDemoConfig, client_package_dir, ensure_client_built};
use ssepush::gateway::Delivery;
use ssepush::gateway::client::GatewayClientError;
use ssepush::gateway::control::WebPushEndpoint;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// What the page shows in `#events`, in order.
#[derive(Debug, Clone, PartialEq)]
enum Row {
    Event {
        id: String,
        via: String,
        data: Value,
    },
    Reset {
        requested: String,
        oldest: String,
    },
}

const ROWS_JS: &str = "JSON.stringify(Array.from(document.querySelectorAll('#events li')).map(li => \
    li.classList.contains('reset') ? {reset: true, requested: li.dataset.requested, oldest: li.dataset.oldest} \
    : {id: li.dataset.id, type: li.dataset.type, via: li.dataset.via, channel: li.dataset.channel, \
       data: li.querySelector('.data').textContent}))";
/// The page's `#state` data attributes (phase, lastEventId, handoff, worker); empty before load.
const STATE_JS: &str = "(document.getElementById('state') || {dataset: {}}).dataset";
const STATUS_JS: &str = "JSON.stringify({state: Object.assign({}, (document.getElementById('state') || {dataset: {}}).dataset), \
    events: document.querySelectorAll('#events li').length, \
    log: Array.from(document.querySelectorAll('#log li')).slice(0, 12).map(li => li.textContent)})";

/// The page, the servers behind it, and a Web Push subscription whose keys the test holds.
struct Scene {
    stack: Stack,
    page_url: String,
    channel: String,
    browser: Browser,
    keys: UserAgentKeys,
    subscription: WebPushEndpoint,
    wakes: std::pin::Pin<Box<dyn Stream<Item = Result<Delivery, GatewayClientError>> + Send>>,
    registration_id: String,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Scene {
    async fn start(options: StackOptions) -> Scene {
        // One build per test binary; npm is not run concurrently with itself.
        static BUILT: tokio::sync::OnceCell<std::path::PathBuf> =
            tokio::sync::OnceCell::const_new();
        let client_dir = BUILT
            .get_or_init(|| async {
                tokio::task::spawn_blocking(|| ensure_client_built(&client_package_dir(), false))
                    .await
                    .unwrap()
                    .expect("building clients/web with npm")
            })
            .await
            .clone();

        // The page's origin must be known to the servers' CORS policies before they start.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let page_url = format!("http://{}", listener.local_addr().unwrap());
        let stack = Stack::start(StackOptions {
            cors_allow_origins: vec![page_url.clone()],
            ..options
        })
        .await
        .expect("origin, gateway and proxy");
        let channel = crate::support::namespace("web").replace('-', "_");
        let vapid = stack.vapid_public_key().unwrap();
        let config = WebDemoConfig {
            origin_url: stack.origin.url.clone(),
            proxy_url: stack.proxy.url.clone(),
            channel: channel.clone(),
            vapid_public_key: Some(vapid.clone()),
            gateway: None,
            client_dir,
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(ssepush::device::web::serve(
            listener,
            config,
            stop.clone().cancelled_owned(),
        ));

        // The subscription a browser's push service would hand out, with keys made here: the
        // endpoint is the simulated Web Push service, pinned to the proxy's VAPID key.
        let subscription = stack
            .gateway
            .client
            .subscribe_webpush(Some(&vapid))
            .await
            .unwrap();
        let keys = UserAgentKeys::generate();
        let wakes = Box::pin(
            stack
                .gateway
                .client
                .device_stream(&subscription.id)
                .await
                .unwrap(),
        );

        let mut browser = Browser::launch().await;
        // The worker shows notifications while the page is hidden, as userVisibleOnly requires.
        browser
            .call_browser(
                "Browser.grantPermissions",
                json!({"origin": page_url, "permissions": ["notifications"]}),
            )
            .await;
        browser.open(&format!("{page_url}/?push=manual")).await;
        browser.call("ServiceWorker.enable", json!({})).await;
        browser
            .wait_for(
                "the page's service worker",
                &format!("{STATE_JS}.worker === 'ready'"),
                STATUS_JS,
                WAIT,
            )
            .await;
        let scope = format!("{page_url}/");
        let deadline = tokio::time::Instant::now() + WAIT;
        let registration_id = loop {
            let found = browser
                .events("ServiceWorker.workerRegistrationUpdated")
                .iter()
                .flat_map(|p| p["registrations"].as_array().cloned().unwrap_or_default())
                .filter(|r| r["scopeURL"] == scope.as_str() && r["isDeleted"] == false)
                .map(|r| r["registrationId"].as_str().unwrap().to_owned())
                .next_back();
            if let Some(id) = found {
                break id;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no service worker registration for {scope} in the DevTools events"
            );
            // Protocol events are read while waiting for replies: ask something cheap.
            browser.eval("1").await;
        };

        let start = json!({
            "endpoint": subscription.endpoint,
            "expirationTime": null,
            "keys": {"p256dh": keys.p256dh, "auth": keys.auth},
        });
        browser.eval(&format!("ssepushDemo.start({start})")).await;
        let mut scene = Scene {
            stack,
            page_url,
            channel,
            browser,
            keys,
            subscription,
            wakes,
            registration_id,
            stop,
            server,
        };
        scene.wait_phase("open").await;
        scene
    }

    async fn wait_phase(&mut self, phase: &str) {
        self.browser
            .wait_for(
                &format!("phase {phase}"),
                &format!("{STATE_JS}.phase === '{phase}'"),
                STATUS_JS,
                WAIT,
            )
            .await;
    }

    async fn wait_rows(&mut self, what: &str, n: usize) {
        self.browser
            .wait_for(
                what,
                &format!("document.querySelectorAll('#events li').length >= {n}"),
                STATUS_JS,
                WAIT,
            )
            .await;
    }

    async fn rows(&mut self) -> Vec<Row> {
        let v = self.browser.eval(ROWS_JS).await;
        let rows: Vec<Value> = serde_json::from_str(v.as_str().unwrap()).unwrap();
        rows.into_iter()
            .map(|r| {
                if r["reset"] == true {
                    Row::Reset {
                        requested: r["requested"].as_str().unwrap().to_owned(),
                        oldest: r["oldest"].as_str().unwrap().to_owned(),
                    }
                } else {
                    assert_eq!(r["type"], "message", "{r}");
                    assert_eq!(r["channel"], self.channel.as_str(), "{r}");
                    Row::Event {
                        id: r["id"].as_str().unwrap().to_owned(),
                        via: r["via"].as_str().unwrap().to_owned(),
                        data: serde_json::from_str(r["data"].as_str().unwrap()).unwrap(),
                    }
                }
            })
            .collect()
    }

    async fn state(&mut self, key: &str) -> String {
        let v = self.browser.eval(&format!("{STATE_JS}.{key}")).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Publishes `{"n": n}` on the page's channel; returns the id.
    async fn publish(&self, n: u64) -> String {
        let resp = crate::support::http()
            .post(format!("{}/v1/events", self.stack.origin.url))
            .json(&json!({"channel": self.channel, "data": {"n": n}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "publish");
        let body: Value = resp.json().await.unwrap();
        body["ids"][0].as_str().unwrap().to_owned()
    }

    /// The next wake the simulated Web Push service received for the subscription, decrypted.
    async fn next_wake(&mut self) -> String {
        let d = tokio::time::timeout(WAIT, self.wakes.next())
            .await
            .expect("no Web Push wake reached the simulated push service")
            .expect("gateway stream ended")
            .expect("gateway stream");
        self.decrypt(d)
    }

    fn decrypt(&self, d: Delivery) -> String {
        assert_eq!(d.token, self.subscription.id);
        assert_eq!(
            d.headers.get("content-encoding").map(String::as_str),
            Some("aes128gcm")
        );
        let cipher = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(d.body.trim_end_matches('='))
            .unwrap();
        let plain = self
            .keys
            .decrypt(&cipher)
            .expect("the wake decrypts with the subscription's keys");
        String::from_utf8(plain).unwrap()
    }

    /// Delivers `first` and every further wake the proxy sends until the page shows `n` rows
    /// (a wake sent at the first of a burst is followed by another when the check-in leaves
    /// events owed). Returns the wakes delivered.
    async fn wake_until_rows(&mut self, first: String, n: usize) -> Vec<String> {
        let mut delivered = Vec::new();
        let mut next = Some(first);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(w) = next.take() {
                self.push(&w).await;
                delivered.push(w);
            }
            let shown = self
                .browser
                .eval("document.querySelectorAll('#events li').length")
                .await;
            if shown.as_u64().unwrap() as usize >= n {
                return delivered;
            }
            if tokio::time::Instant::now() >= deadline {
                let status = self.browser.eval(STATUS_JS).await;
                panic!(
                    "timed out waiting for {n} rows after {} wakes: {status}",
                    delivered.len()
                );
            }
            tokio::select! {
                d = self.wakes.next() => next = Some(self.decrypt(d.expect("gateway stream ended").expect("gateway stream"))),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// Delivers a push message to the page's service worker, as the browser's push service would.
    async fn push(&mut self, plaintext: &str) {
        self.browser
            .call(
                "ServiceWorker.deliverPushMessage",
                json!({"origin": self.page_url, "registrationId": self.registration_id, "data": plaintext}),
            )
            .await;
    }

    async fn lifecycle(&mut self, state: &str) {
        self.browser
            .call("Page.setWebLifecycleState", json!({"state": state}))
            .await;
    }

    async fn stop(self) {
        let Scene {
            stack,
            browser,
            stop,
            server,
            ..
        } = self;
        drop(browser);
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        stack.stop().await.unwrap();
    }
}

fn event(id: &str, n: u64) -> (String, Value) {
    (id.to_owned(), json!({"n": n}))
}

/// Events of `rows` as (id, data), with who delivered each.
fn events(rows: &[Row]) -> (Vec<(String, Value)>, Vec<String>) {
    rows.iter()
        .filter_map(|r| match r {
            Row::Event { id, via, data } => Some(((id.clone(), data.clone()), via.clone())),
            Row::Reset { .. } => None,
        })
        .unzip()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_page_hands_off_is_woken_by_web_push_and_resumes_exactly() {
    let mut s = Scene::start(StackOptions::default()).await;
    let mut expected = Vec::new();

    // Awake: events arrive on the page's own stream.
    for n in 1..=2 {
        expected.push(event(&s.publish(n).await, n));
    }
    s.wait_rows("the first events", 2).await;

    // Minimised: the page hands its stream to the proxy and closes it.
    s.browser.window_state("minimized").await;
    assert_eq!(s.browser.eval("document.visibilityState").await, "hidden");
    s.wait_phase("handedOff").await;
    let handoff = s.state("handoff").await;
    assert!(handoff.starts_with("h_"), "{handoff}");

    // Asleep: events published now reach the proxy, which wakes the page through Web Push.
    for n in 3..=5 {
        expected.push(event(&s.publish(n).await, n));
    }
    let wake = s.next_wake().await;
    // The worker gets the push, fetches the buffer and hands the events to the hidden page.
    for wake in s.wake_until_rows(wake, 5).await {
        let payload: Value = serde_json::from_str(&wake).unwrap();
        assert_eq!(payload["ssepush"]["handoff"], handoff.as_str(), "{wake}");
        assert!(
            payload["ssepush"]["pending"].as_u64().unwrap() >= 1,
            "{wake}"
        );
        assert!(
            payload.get("notification").is_none(),
            "background mode: {wake}"
        );
    }
    assert_eq!(s.state("phase").await, "handedOff");

    // Frozen: another batch and another wake; the worker runs, the page does not.
    s.lifecycle("frozen").await;
    for n in 6..=8 {
        expected.push(event(&s.publish(n).await, n));
    }
    let wake = s.next_wake().await;
    let payload: Value = serde_json::from_str(&wake).unwrap();
    assert_eq!(payload["ssepush"]["handoff"], handoff.as_str(), "{wake}");
    s.push(&wake).await;

    // Back: the page catches up from the proxy, hands back and streams from the origin again.
    s.lifecycle("active").await;
    s.browser.window_state("normal").await;
    s.wait_phase("open").await;
    assert_eq!(s.state("handoff").await, "");
    for n in 9..=10 {
        expected.push(event(&s.publish(n).await, n));
    }
    s.wait_rows("every event", expected.len()).await;
    // A last event after everything: anything delivered twice would have shown up before it.
    expected.push(event(&s.publish(11).await, 11));
    s.wait_rows("the last event", expected.len()).await;

    let rows = s.rows().await;
    let (shown, via) = events(&rows);
    assert_eq!(rows.len(), shown.len(), "no reset: {rows:?}");
    assert_eq!(shown, expected, "every event exactly once, in order");
    // Who delivered what: the stream while awake, the proxy (through the worker or the page's
    // own catch-up) while handed off, the stream again after the handback.
    assert_eq!(via[..2], ["stream", "stream"], "{rows:?}");
    for v in &via[2..8] {
        assert!(v == "worker" || v == "proxy", "{rows:?}");
    }
    assert_eq!(
        via[2], "worker",
        "the first wake's events come through the worker: {rows:?}"
    );
    assert_eq!(via[8..], ["stream", "stream", "stream"], "{rows:?}");

    // The worker showed a notification for the hidden page, one per handoff.
    let tags = s
        .browser
        .eval("navigator.serviceWorker.ready.then(r => r.getNotifications()).then(ns => ns.map(n => n.tag))")
        .await;
    assert_eq!(tags, json!([format!("ssepush-{handoff}")]), "{tags}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_sees_a_reset_when_retention_dropped_events_while_it_slept() {
    // The origin keeps 3 events per channel, the proxy buffers 2 per handoff: six events while
    // asleep are more than either holds.
    let mut s = Scene::start(StackOptions {
        retention_max_events: Some(3),
        buffer_events: Some(2),
        ..Default::default()
    })
    .await;
    let mut ids = Vec::new();
    for n in 1..=2 {
        ids.push(s.publish(n).await);
    }
    s.wait_rows("the first events", 2).await;

    s.browser.window_state("minimized").await;
    s.wait_phase("handedOff").await;
    for n in 3..=8 {
        ids.push(s.publish(n).await);
    }
    // The wake comes; the worker finds a gap in the proxy's buffer, so the page takes nothing
    // from it (its position stays at event 2).
    let wake = s.next_wake().await;
    s.push(&wake).await;
    s.browser
        .wait_for(
            "the worker's batch",
            "Array.from(document.querySelectorAll('#log li')).some(li => li.textContent.includes('service worker: ssepush.'))",
            STATUS_JS,
            WAIT,
        )
        .await;
    assert_eq!(s.state("lastEventId").await, ids[1]);
    assert_eq!(s.rows().await.len(), 2);

    // Back: the origin no longer holds what came after event 2 — it says so, then replays what
    // it still holds (6, 7, 8), then live events follow.
    s.browser.window_state("normal").await;
    s.wait_phase("open").await;
    ids.push(s.publish(9).await);
    s.wait_rows("the reset and the events after it", 7).await;
    let rows = s.rows().await;
    let e = |i: usize, n: u64, via: &str| Row::Event {
        id: ids[i].clone(),
        via: via.to_owned(),
        data: json!({"n": n}),
    };
    assert_eq!(
        rows,
        vec![
            e(0, 1, "stream"),
            e(1, 2, "stream"),
            Row::Reset {
                requested: ids[1].clone(),
                oldest: ids[5].clone()
            },
            e(5, 6, "stream"),
            e(6, 7, "stream"),
            e(7, 8, "stream"),
            e(8, 9, "stream"),
        ]
    );
    s.stop().await;
}

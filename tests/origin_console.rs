//! The console at `GET /` in a real headless Chromium: it subscribes with the browser's own
//! `EventSource`, shows events live, and — when the origin restarts on the same address —
//! reconnects with `Last-Event-ID` and shows the events published while it was away, every event
//! exactly once and in order.
//!
//! The browser is driven over the Chrome DevTools Protocol with a few lines of JSON over a
//! WebSocket (tokio-tungstenite) rather than a CDP crate: the test needs three commands
//! (`Target.createTarget`, `Target.attachToTarget`, `Runtime.evaluate`), and the full generated
//! protocol bindings would cost more to compile than the rest of the test suite.
//! Needs `chromium` (Debian package; `CHROMIUM` overrides the path). The test fails, never skips,
//! without it.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use ssepush_origin::{EventId, NewEvent};
use support::TestOrigin;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A headless Chromium with one page, driven over the DevTools protocol.
struct Browser {
    child: tokio::process::Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
    profile: PathBuf,
}

impl Browser {
    async fn launch() -> Browser {
        let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let profile = std::env::temp_dir().join(support::namespace("chromium-profile"));
        std::fs::create_dir_all(&profile).unwrap();
        let mut child = tokio::process::Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--no-proxy-server",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (apt-get install chromium): {e}"));
        // Chromium prints its DevTools endpoint on stderr once it listens.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
            let mut seen = Vec::new();
            loop {
                match lines.next_line().await.unwrap() {
                    Some(line) => {
                        if let Some(url) = line.strip_prefix("DevTools listening on ") {
                            return url.trim().to_owned();
                        }
                        seen.push(line);
                    }
                    None => panic!("chromium exited before listening: {}", seen.join("\n")),
                }
            }
        })
        .await
        .expect("chromium did not open its DevTools endpoint within 30 s");
        // Keep draining stderr so the browser never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("connect to DevTools");
        Browser {
            child,
            ws,
            next_id: 0,
            session: None,
            profile,
        }
    }

    /// Sends one command (to the attached page, if any) and waits for its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to DevTools");
        let reply = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let frame = self.ws.next().await.expect("DevTools closed").unwrap();
                let Message::Text(text) = frame else { continue };
                let v: Value = serde_json::from_str(&text).unwrap();
                // Everything else is an event notification (or a reply to something else).
                if v["id"] == json!(id) {
                    return v;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no DevTools reply to {method}"));
        if !reply["error"].is_null() {
            panic!("{method} failed: {}", reply["error"]);
        }
        reply["result"].clone()
    }

    /// Opens `url` in a new page and attaches to it; later calls go to that page.
    async fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({"url": url})).await;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        self.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        if !r["exceptionDetails"].is_null() {
            panic!("{expression}: {}", r["exceptionDetails"]);
        }
        r["result"]["value"].clone()
    }

    async fn state(&mut self) -> String {
        let v = self
            .eval("(document.getElementById('state') || {dataset: {}}).dataset.state || ''")
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The events the page shows: (id, channel, type, data) in DOM order.
    async fn events(&mut self) -> Vec<(String, String, String, Value)> {
        let v = self
            .eval(
                "JSON.stringify(Array.from(document.querySelectorAll('#events li.event')).map(li => \
                 [li.dataset.id, li.dataset.channel, li.dataset.type, \
                 li.querySelector('.data').textContent]))",
            )
            .await;
        let rows: Vec<(String, String, String, String)> =
            serde_json::from_str(v.as_str().unwrap()).unwrap();
        rows.into_iter()
            .map(|(id, c, t, d)| (id, c, t, serde_json::from_str(&d).unwrap()))
            .collect()
    }

    async fn wait_for(
        &mut self,
        what: &str,
        mut cond: impl FnMut(&mut Vec<(String, String, String, Value)>, &str) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut events = self.events().await;
            let state = self.state().await;
            if cond(&mut events, &state) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: state {state:?}, events {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[tokio::test]
async fn console_shows_events_live_and_resumes_after_an_origin_restart() {
    // Redis keeps the events and the id counter across the restart.
    let ns = support::namespace("console");
    let settings = support::redis_settings(&ns);
    let origin = TestOrigin::start(settings.clone()).await;
    let addr = origin.addr;

    let mut browser = Browser::launch().await;
    browser
        .open(&format!(
            "{}/?channel=console.room&types=alert&connect=1",
            origin.url
        ))
        .await;
    browser
        .wait_for("the page to connect", |_, s| s == "open")
        .await;

    let mut expected: Vec<(EventId, &str, Value)> = Vec::new();
    for (n, kind) in [(1, None), (2, Some("alert")), (3, None)] {
        let id = origin
            .client
            .publish_one(
                "console.room",
                kind,
                json!({"n": n, "text": "<b>not html</b>"}),
            )
            .await
            .unwrap();
        expected.push((
            id,
            kind.unwrap_or("message"),
            json!({"n": n, "text": "<b>not html</b>"}),
        ));
        // Another channel: not shown.
        origin
            .client
            .publish_one("console.other", None, json!({"n": -n}))
            .await
            .unwrap();
    }
    browser
        .wait_for("the first three events", |e, _| e.len() >= 3)
        .await;
    let shown = browser.events().await;
    assert_eq!(shown.len(), 3, "{shown:?}");
    for ((id, channel, kind, data), (want_id, want_kind, want_data)) in shown.iter().zip(&expected)
    {
        assert_eq!(id, &want_id.to_string());
        assert_eq!(channel, "console.room");
        assert_eq!(kind, want_kind);
        assert_eq!(data, want_data);
    }
    // Event data is text, never markup.
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#events b').length")
            .await,
        json!(0)
    );

    // The origin goes away; the page notices and keeps trying.
    origin.stop().await;
    browser
        .wait_for("the page to see the disconnect", |_, s| s != "open")
        .await;

    // Events published while the browser is disconnected (straight into the shared log, since
    // no origin is running to take them).
    let log = ssepush_origin::store::open(&settings.store, &ns, settings.retention().unwrap())
        .await
        .unwrap();
    for n in 4..=6 {
        let stored = log
            .append(vec![
                NewEvent::new("console.room", None, json!({"n": n})).unwrap(),
                NewEvent::new("console.other", None, json!({"n": -n})).unwrap(),
            ])
            .await
            .unwrap();
        expected.push((stored[0].id, "message", json!({"n": n})));
    }
    drop(log);
    assert_ne!(browser.state().await, "open");

    // A new origin on the same address: the page reconnects with the last id it saw and gets
    // what it missed, then live events again.
    let origin = TestOrigin::start_on(addr, settings).await;
    browser
        .wait_for("the page to reconnect", |_, s| s == "open")
        .await;
    for n in 7..=8 {
        let id = origin
            .client
            .publish_one("console.room", Some("alert"), json!({"n": n}))
            .await
            .unwrap();
        expected.push((id, "alert", json!({"n": n})));
    }
    browser
        .wait_for("all eight events", |e, _| e.len() >= expected.len())
        .await;
    // Anything sent twice would arrive with the rest; give it a moment to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shown = browser.events().await;
    let shown: Vec<(String, String, Value)> = shown
        .into_iter()
        .map(|(id, _, kind, data)| (id, kind, data))
        .collect();
    let want: Vec<(String, String, Value)> = expected
        .iter()
        .map(|(id, kind, data)| (id.to_string(), kind.to_string(), data.clone()))
        .collect();
    assert_eq!(shown, want, "every event exactly once, in order");
    origin.stop().await;
}

#[tokio::test]
async fn console_page_is_served_self_contained() {
    let origin = TestOrigin::start(support::memory_settings()).await;
    let resp = reqwest::get(format!("{}/", origin.url)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/html"), "{ct}");
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let body = resp.text().await.unwrap();
    assert!(body.contains("EventSource"));
    origin.stop().await;
}

//! A headless Chromium driven over the Chrome DevTools Protocol, for the browser tests.
//!
//! A few lines of JSON over a WebSocket (tokio-tungstenite) rather than a CDP crate: the tests
//! need a handful of commands, and the full generated protocol bindings would cost more to
//! compile than the rest of the test suite. Needs `chromium` (Debian package; `CHROMIUM`
//! overrides the path); a test fails, never skips, without it.
//!
//! Test files use it with `#[path = "support/browser.rs"] mod browser;` next to `mod support;`
//! (it names its profile directory with `support::namespace`).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Protocol events kept for [`Browser::events`] (the oldest are dropped).
const MAX_EVENTS: usize = 10_000;

/// A headless Chromium with (at most) one attached page.
pub struct Browser {
    child: tokio::process::Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
    target: Option<String>,
    profile: PathBuf,
    events: VecDeque<Value>,
}

impl Browser {
    /// Starts Chromium with a fresh profile and connects to its DevTools endpoint.
    pub async fn launch() -> Browser {
        let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let profile = std::env::temp_dir().join(crate::support::namespace("chromium-profile"));
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
            target: None,
            profile,
            events: VecDeque::new(),
        }
    }

    /// Sends one command to the attached page, or to the browser when none is attached.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(session, method, params).await
    }

    /// Sends one command to the browser itself (`Browser.*`, `Target.*`).
    pub async fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(None, method, params).await
    }

    async fn send(&mut self, session: Option<String>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to DevTools");
        let events = &mut self.events;
        let ws = &mut self.ws;
        let reply = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let frame = ws.next().await.expect("DevTools closed").unwrap();
                let Message::Text(text) = frame else { continue };
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["id"] == json!(id) {
                    return v;
                }
                if v.get("method").is_some() {
                    if events.len() >= MAX_EVENTS {
                        events.pop_front();
                    }
                    events.push_back(v);
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

    /// Protocol events received so far with this method name (their `params`).
    pub fn events(&self, method: &str) -> Vec<Value> {
        self.events
            .iter()
            .filter(|e| e["method"] == method)
            .map(|e| e["params"].clone())
            .collect()
    }

    /// Opens `url` in a new page and attaches to it; later [`call`](Self::call)s go to that page.
    pub async fn open(&mut self, url: &str) {
        let target = self
            .call_browser("Target.createTarget", json!({"url": url}))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = self
            .call_browser(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        self.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
        self.target = Some(target_id);
    }

    /// Evaluates a JavaScript expression in the page and returns its value (awaiting it if it
    /// is a promise).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if !r["exceptionDetails"].is_null() {
            panic!("{expression}: {}", r["exceptionDetails"]);
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` every 50 ms until it is `true`; fails after `within`, showing
    /// `show` (another expression) evaluated at that moment.
    pub async fn wait_for(&mut self, what: &str, expression: &str, show: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.eval(expression).await == json!(true) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let shown = self.eval(show).await;
                panic!("timed out waiting for {what}: {shown}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets the attached page's browser window state: `minimized` hides the page
    /// (`visibilitychange` → hidden), `normal` shows it again.
    pub async fn window_state(&mut self, state: &str) {
        let target = self.target.clone().expect("no page open");
        let w = self
            .call_browser("Browser.getWindowForTarget", json!({"targetId": target}))
            .await;
        self.call_browser(
            "Browser.setWindowBounds",
            json!({"windowId": w["windowId"], "bounds": {"windowState": state}}),
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

//! `ssepush demo --web`: a sample page that streams with the web client (`clients/web`) from
//! the in-process origin, hands its stream to the proxy when it is hidden, frozen or left, is
//! woken through Web Push, and takes the stream back — so a person can watch the loop in a
//! browser. The browser test (`tests/web_client.rs`) drives the same page.
//!
//! | path | what |
//! |---|---|
//! | `GET /` | the page (`web/index.html`, `web/app.js`, `web/app.css`, embedded) |
//! | `GET /sw.js` | the page's service worker: the client's `installSsePushWorker` |
//! | `GET /ssepush/{file}` | the built client (`clients/web/dist`, read from disk) |
//! | `GET /demo/config.json` | the origin and proxy URLs, the channel, the VAPID public key |
//! | `POST /demo/subscriptions` | a simulated Web Push subscription at the gateway |
//! | `GET /demo/wakes/{id}` | the decrypted wakes of that subscription, as SSE |
//!
//! Why a simulated subscription: a real `PushManager.subscribe` needs the browser vendor's push
//! service on the internet. Offline, the page gets a subscription whose endpoint is the
//! simulated gateway's; this server holds its private key (as the browser would), decrypts
//! each RFC 8291 wake the proxy sent there, and the page hands the plaintext to its service
//! worker as a message — the worker then runs exactly the code a real `push` event runs. With
//! `?push=browser` the page subscribes for real instead (in a browser that can reach its push
//! service), and with `?push=manual` it waits for `ssepushDemo.start(subscription)`, which is
//! what the browser test uses before delivering real `push` events over the DevTools protocol.
//!
//! The client is not built into the binary (nothing built by npm is committed):
//! [`ensure_client_built`] runs `npm ci` and `npm run build` in `clients/web` when needed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::origin::OriginClient;
use crate::client::webpush::UserAgentKeys;
use crate::gateway::client::GatewayClient;

const INDEX: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const APP_CSS: &str = include_str!("web/app.css");
const SW_JS: &str = include_str!("web/sw.js");

/// Simulated subscriptions one demo server keeps (each holds a key pair).
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// What the page needs to know.
#[derive(Debug, Clone)]
pub struct WebDemoConfig {
    pub origin_url: String,
    pub proxy_url: String,
    /// The channel the page subscribes to (and publishes on).
    pub channel: String,
    /// The proxy's VAPID public key (base64url), the `applicationServerKey` of subscriptions.
    pub vapid_public_key: Option<String>,
    /// The simulated gateway, for simulated subscriptions (`None`: only real ones).
    pub gateway: Option<GatewayClient>,
    /// The built client (`clients/web/dist`).
    pub client_dir: PathBuf,
}

struct Shared {
    config: WebDemoConfig,
    /// Subscription id → its keys (the private half never leaves this process).
    subscriptions: Mutex<HashMap<String, UserAgentKeys>>,
    shutdown: CancellationToken,
}

type AppState = Arc<Shared>;

/// `clients/web` in this source tree.
pub fn client_package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join("web")
}

/// Builds the web client in `package` (`clients/web`) when `dist` is missing or older than its
/// sources (`src/`, `package.json`, `package-lock.json`, `tsconfig.json`), or when `rebuild`:
/// `npm ci` when `node_modules` is missing (the registry's packages at the versions
/// `package-lock.json` pins), then `npm run build`. Returns `dist`. Blocking: it runs npm.
pub fn ensure_client_built(package: &Path, rebuild: bool) -> anyhow::Result<PathBuf> {
    let dist = package.join("dist");
    let built = [dist.join("index.js"), dist.join("sw.js")]
        .iter()
        .map(|f| modified(f))
        .min()
        .flatten();
    let sources = ["src", "package.json", "package-lock.json", "tsconfig.json"]
        .iter()
        .filter_map(|f| newest(&package.join(f)))
        .max();
    let fresh = match (built, sources) {
        (Some(b), Some(s)) => b >= s,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if fresh && !rebuild {
        return Ok(dist);
    }
    let npm = |args: &[&str]| -> anyhow::Result<()> {
        let status = std::process::Command::new("npm")
            .args(args)
            .current_dir(package)
            .stdout(std::process::Stdio::null())
            .status()
            .with_context(|| {
                format!(
                    "cannot run npm {} in {} (install Node.js and npm)",
                    args.join(" "),
                    package.display()
                )
            })?;
        anyhow::ensure!(
            status.success(),
            "npm {} in {} failed: {status}",
            args.join(" "),
            package.display()
        );
        Ok(())
    };
    if !package.join("node_modules").is_dir() {
        npm(&["ci", "--no-audit", "--no-fund"])?;
    }
    npm(&["run", "build"])?;
    Ok(dist)
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of a file, or of any file under a directory.
fn newest(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| newest(&e.path()))
        .max()
}

/// The channel `ssepush demo --web` streams and publishes on.
pub const DEMO_CHANNEL: &str = "demo.web";

/// `ssepush demo --web`: builds the client if needed, starts origin, gateway and proxy (CORS
/// open to the page), serves the page on `listen`, publishes a tick every `tick` (none when
/// zero) and runs until `shutdown` completes.
pub async fn demo(
    listen: std::net::SocketAddr,
    tick: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let package = client_package_dir();
    eprintln!("building the web client in {} (npm)…", package.display());
    let client_dir = tokio::task::spawn_blocking(move || ensure_client_built(&package, false))
        .await
        .context("client build task")??;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let page = format!("http://{}", listener.local_addr()?);
    let stack = super::stack::Stack::start(super::stack::StackOptions {
        cors_allow_origins: vec![page.clone()],
        ..Default::default()
    })
    .await?;
    let config = WebDemoConfig {
        origin_url: stack.origin.url.clone(),
        proxy_url: stack.proxy.url.clone(),
        channel: DEMO_CHANNEL.to_owned(),
        vapid_public_key: Some(stack.vapid_public_key()?),
        gateway: Some(stack.gateway.client.clone()),
        client_dir,
    };
    eprintln!(
        "origin {}  proxy {}  gateway {}\n\nopen {page}/ in a browser; hide the tab to hand off, come back to resume (Ctrl-C stops)",
        stack.origin.url, stack.proxy.url, stack.gateway.url
    );
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, config, stop.clone().cancelled_owned()));
    let publisher = OriginClient::new(&stack.origin.url);
    let ticker = async {
        if tick.is_zero() {
            return std::future::pending::<()>().await;
        }
        let mut n = 0u64;
        let mut every = tokio::time::interval(tick);
        every.tick().await;
        loop {
            every.tick().await;
            n += 1;
            if let Err(e) = publisher
                .publish_one(DEMO_CHANNEL, None, json!({"tick": n}))
                .await
            {
                tracing::warn!(error = %e, "demo tick not published");
            }
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = ticker => {}
    }
    stop.cancel();
    let _ = server.await;
    stack.stop().await
}

/// Serves the sample page on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: WebDemoConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = CancellationToken::new();
    let state = Arc::new(Shared {
        config,
        subscriptions: Mutex::new(HashMap::new()),
        shutdown: token.clone(),
    });
    let app = Router::new()
        .route("/", get(index))
        .route("/app.js", get(|| async { javascript(APP_JS) }))
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/sw.js", get(|| async { javascript(SW_JS) }))
        .route("/ssepush/{file}", get(client_file))
        .route("/demo/config.json", get(config_json))
        .route("/demo/subscriptions", post(subscribe))
        .route("/demo/wakes/{id}", get(wakes))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .with_state(state);
    let stop = token.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Ends the open wake streams, which would otherwise hold the shutdown up.
            stop.cancel();
        })
        .await
}

fn no_cache(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    no_cache(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

fn javascript(body: &'static str) -> Response {
    asset("text/javascript; charset=utf-8", body)
}

async fn index(State(st): State<AppState>) -> Response {
    let mut resp = asset("text/html; charset=utf-8", INDEX);
    // Scripts, styles and the worker come from here; the page talks to the origin and the proxy.
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         worker-src 'self'; manifest-src 'self'; connect-src 'self' {} {}; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'",
        origin_of(&st.config.origin_url),
        origin_of(&st.config.proxy_url)
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// `scheme://host:port` of a URL (what a CSP source and a CORS origin are).
fn origin_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => String::new(),
    }
}

/// `GET /ssepush/{file}`: a file of the built client. Names are checked, so nothing outside
/// `dist` can be read.
async fn client_file(State(st): State<AppState>, UrlPath(file): UrlPath<String>) -> Response {
    let content_type = if file.ends_with(".js") {
        "text/javascript; charset=utf-8"
    } else if file.ends_with(".js.map") {
        "application/json"
    } else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let safe = !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !safe {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    match tokio::fs::read(st.config.client_dir.join(&file)).await {
        Ok(body) => no_cache(([(header::CONTENT_TYPE, content_type)], body).into_response()),
        Err(_) => (
            StatusCode::NOT_FOUND,
            format!(
                "{file} is not in {}: build the client (cd clients/web && npm ci && npm run build)",
                st.config.client_dir.display()
            ),
        )
            .into_response(),
    }
}

async fn config_json(State(st): State<AppState>) -> Response {
    let c = &st.config;
    no_cache(
        axum::Json(json!({
            "origin": c.origin_url,
            "proxy": c.proxy_url,
            "channel": c.channel,
            "vapidPublicKey": c.vapid_public_key,
            "simulatedPush": c.gateway.is_some(),
        }))
        .into_response(),
    )
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let code = if status.is_client_error() {
        "bad_request"
    } else {
        "unavailable"
    };
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// `POST /demo/subscriptions`: a fresh key pair and a subscription at the simulated gateway,
/// answered as a W3C `PushSubscription` JSON, plus where its wakes can be read.
async fn subscribe(State(st): State<AppState>) -> Response {
    let Some(gateway) = &st.config.gateway else {
        return error(
            StatusCode::NOT_FOUND,
            "this demo has no simulated push service",
        );
    };
    if st.subscriptions.lock().unwrap().len() >= MAX_SUBSCRIPTIONS {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many simulated subscriptions; restart the demo",
        );
    }
    let sub = match gateway
        .subscribe_webpush(st.config.vapid_public_key.as_deref())
        .await
    {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let keys = UserAgentKeys::generate();
    let body = json!({
        "subscription": {
            "endpoint": sub.endpoint,
            "expirationTime": null,
            "keys": {"p256dh": keys.p256dh, "auth": keys.auth},
        },
        "wakes": format!("/demo/wakes/{}", sub.id),
    });
    st.subscriptions.lock().unwrap().insert(sub.id, keys);
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// `GET /demo/wakes/{id}`: every push the gateway delivers to the subscription, decrypted with
/// its keys (RFC 8291), as `event: push` with the plaintext as data.
async fn wakes(State(st): State<AppState>, UrlPath(id): UrlPath<String>) -> Response {
    let (Some(gateway), Some(keys)) = (
        st.config.gateway.clone(),
        st.subscriptions.lock().unwrap().get(&id).cloned(),
    ) else {
        return error(StatusCode::NOT_FOUND, "no such simulated subscription");
    };
    let deliveries = match gateway.device_stream(&id).await {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let stop = st.shutdown.clone();
    let events = deliveries
        .take_until(stop.cancelled_owned())
        .filter_map(move |d| {
            let keys = keys.clone();
            async move {
                let d = d.ok()?;
                let cipher = URL_SAFE_NO_PAD.decode(d.body.trim_end_matches('=')).ok()?;
                let plain = keys.decrypt(&cipher).ok()?;
                let text = String::from_utf8(plain).ok()?;
                Some(Ok::<_, std::convert::Infallible>(
                    Event::default().event("push").data(text),
                ))
            }
        });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_load_nothing_from_elsewhere() {
        for (name, text) in [("index.html", INDEX), ("app.js", APP_JS), ("sw.js", SW_JS)] {
            for needle in ["http://", "https://", "src=\"//", "href=\"//"] {
                assert!(!text.contains(needle), "{name} references {needle}");
            }
        }
    }

    #[test]
    fn origins_of_urls() {
        assert_eq!(
            origin_of("http://127.0.0.1:8080/v1/sse?x=1"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(origin_of("not a url"), "");
    }
}

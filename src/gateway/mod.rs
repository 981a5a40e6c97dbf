//! `ssepush gateway`: the simulated push services the proxy wakes phones through — APNs
//! (HTTP/2, provider-token JWT), FCM HTTP v1 (with its OAuth2 token endpoint) and a Web Push
//! service (VAPID, encrypted bodies passed through) — on one port, h2c and HTTP/1.1 alike
//! (or, with `tls`, both over TLS with a self-signed certificate: [`tls`]).
//!
//! It records every push (a bounded ring), forwards accepted ones to simulated phones over a
//! per-device SSE stream, and injects faults on request. [`run`] is exactly what the
//! subcommand executes and what tests drive on port 0.
//!
//! | path | what |
//! |---|---|
//! | `POST /3/device/{token}` | APNs ([`apns`]) |
//! | `POST /token` | OAuth2 JWT-bearer grant for the service account ([`fcm`]) |
//! | `POST /v1/projects/{project}/messages:send` | FCM HTTP v1 ([`fcm`]) |
//! | `POST /wp/{id}` | Web Push delivery ([`webpush`]) |
//! | `POST /_gateway/webpush/subscriptions`, `DELETE …/{id}` | a phone subscribes / unsubscribes |
//! | `POST /_gateway/devices` | a phone gets an APNs or FCM token |
//! | `DELETE /_gateway/devices/{token}` | the app is uninstalled: APNs 410 / FCM UNREGISTERED from now on |
//! | `GET /_gateway/devices/{token}/stream` | SSE of the pushes accepted for a device |
//! | `GET`/`DELETE /_gateway/pushes` | the push record ([`record`]) |
//! | `POST`/`GET`/`DELETE /_gateway/faults` | faults ([`faults`]) |
//! | `GET /healthz`, `/metrics` | ops |
//!
//! Module map: [`jwt`] (the three token checks), [`credentials`] (keys and the files written
//! for the proxy), [`webpush_crypto`] (RFC 8291 for simulated phones), [`client`] (the helper
//! tests and the device simulator use).

pub mod apns;
pub mod client;
pub mod credentials;
pub mod faults;
pub mod fcm;
pub mod jwt;
pub mod record;
pub mod tls;
pub mod webpush;
pub mod webpush_crypto;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use credentials::Credentials;
use faults::{FaultSpec, Faults, Provider};
use record::{BodyEncoding, Delivery, Devices, Offered, PushLog, PushQuery, PushRecord};

/// Gateway settings (flags of `ssepush gateway`).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to write the credentials the proxy needs (see [`credentials`]); keys found there
    /// are reused. None: keys live in memory only (tests read them from [`Gateway::credentials`]).
    pub credentials_dir: Option<PathBuf>,
    /// The base URL written into credentials and subscription endpoints; default
    /// `http://<listener address>`.
    pub public_url: Option<String>,
    /// Push records kept (a ring).
    pub record_capacity: usize,
    /// Devices (tokens and subscriptions) with a delivery queue.
    pub max_devices: usize,
    /// Undelivered pushes kept per device (oldest dropped).
    pub device_queue: usize,
    pub max_connections: usize,
    /// How long open connections get to finish after shutdown.
    pub shutdown_grace: Duration,
    /// Serve TLS (self-signed, ALPN h2 + http/1.1) instead of cleartext h2c / HTTP/1.1.
    pub tls: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            credentials_dir: None,
            public_url: None,
            record_capacity: 100_000,
            max_devices: 100_000,
            device_queue: 64,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(5),
            tls: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// What every handler shares.
pub struct Shared {
    pub creds: Credentials,
    sa_public: rsa::RsaPublicKey,
    /// `scheme://host:port`: the audience of VAPID tokens and the prefix of endpoints.
    pub base_url: String,
    log: Mutex<PushLog>,
    devices: Mutex<Devices>,
    faults: Mutex<Faults>,
    access_tokens: Mutex<fcm::AccessTokens>,
    subscriptions: Mutex<webpush::Subscriptions>,
    max_devices: usize,
    shutdown: CancellationToken,
}

pub type AppState = Arc<Shared>;

/// One push as seen by a provider handler, before it is answered.
pub(crate) struct Push {
    pub provider: Provider,
    pub token: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub body_encoding: BodyEncoding,
    pub collapse_key: Option<String>,
    /// How long the service should keep trying (None: the service's maximum; 0: now or never).
    pub ttl_ms: Option<u64>,
}

/// What the armed faults decided for a valid push.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Deliver,
    Drop,
    Fail(FaultSpec),
}

impl Shared {
    /// Records a push answered with `status` and, if `deliver`, queues it for the device (if
    /// the gateway knows that device). Returns the record's `seq`.
    pub(crate) fn record(
        &self,
        push: Push,
        status: u16,
        reason: Option<String>,
        deliver: bool,
    ) -> u64 {
        metrics::counter!(
            "ssepush_gateway_pushes_total",
            "provider" => push.provider.as_str(),
            "status" => status.to_string()
        )
        .increment(1);
        let queue = if deliver {
            self.devices.lock().unwrap().get(&push.token)
        } else {
            None
        };
        // TTL 0 reaches only a device listening right now.
        let queue = queue.filter(|q| push.ttl_ms != Some(0) || q.is_listening());
        let time_ms = now_ms();
        let (recorded_body, body_truncated) = record::truncate_body(&push.body);
        let seq = self.log.lock().unwrap().push(PushRecord {
            seq: 0,
            time_ms,
            provider: push.provider,
            token: push.token.clone(),
            headers: push.headers.clone(),
            body: recorded_body,
            body_encoding: push.body_encoding,
            status,
            reason,
            forwarded: queue.is_some(),
            body_truncated,
        });
        if let Some(q) = queue {
            let delivery = Delivery {
                seq,
                time_ms,
                provider: push.provider,
                token: push.token,
                headers: push.headers,
                body: push.body,
                body_encoding: push.body_encoding,
                collapse_key: push.collapse_key,
            };
            let lost = match q.offer(delivery, push.ttl_ms) {
                Offered::Queued { displaced } => displaced,
                Offered::Discarded => 1,
            };
            if lost > 0 {
                metrics::counter!("ssepush_gateway_pushes_displaced_total", "provider" => push.provider.as_str())
                    .increment(lost as u64);
            }
        }
        seq
    }

    /// Consults the armed faults for a valid push; waits out a fault's latency.
    pub(crate) async fn apply_faults(&self, provider: Provider, token: &str) -> Verdict {
        let Some(fault) = self.faults.lock().unwrap().take(provider, token) else {
            return Verdict::Deliver;
        };
        if let Some(ms) = fault.latency_ms {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
        if fault.status.is_some() {
            Verdict::Fail(fault)
        } else if fault.drop {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn now_secs() -> i64 {
    (now_ms() / 1000) as i64
}

/// A random (v4) UUID, as APNs makes for `apns-id`.
pub(crate) fn new_uuid() -> String {
    let mut b = [0u8; 16];
    rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A control-API error, in the origin's shape: `{"error": {"code", "message"}}`.
pub(crate) fn api_error(status: u16, code: &str, message: &str) -> Response {
    let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        s,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// A gateway with its credentials made (and written), ready to serve.
pub struct Gateway {
    state: AppState,
    listener: TcpListener,
    config: GatewayConfig,
    tls: Option<tls::SelfSigned>,
}

impl Gateway {
    /// Makes or loads the credentials and writes them to the credentials directory.
    pub fn new(listener: TcpListener, config: GatewayConfig) -> Result<Gateway, GatewayError> {
        // Install the process-wide recorder before the first push is counted.
        let _ = ssepush_origin::service::ops::metrics_handle();
        let addr = listener.local_addr()?;
        let scheme = if config.tls { "https" } else { "http" };
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"))
            .trim_end_matches('/')
            .to_owned();
        let tls = if config.tls {
            let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
            hosts.push(addr.ip().to_string());
            if let Some(host) = base_url
                .split_once("://")
                .and_then(|(_, rest)| rest.split(['/', ':']).next())
            {
                hosts.push(host.to_owned());
            }
            hosts.sort();
            hosts.dedup();
            Some(tls::self_signed(hosts).map_err(GatewayError::Tls)?)
        } else {
            None
        };
        let cert_pem = tls.as_ref().map(|t| t.cert_pem.as_str());
        let creds = match &config.credentials_dir {
            Some(dir) => {
                let c = Credentials::load_or_generate(dir, &base_url)?;
                c.write(dir, &base_url, cert_pem)?;
                c
            }
            None => {
                let mut c = Credentials::generate(&base_url)?;
                c.apns.endpoint = base_url.clone();
                c
            }
        };
        let sa_public = creds.sa_key.to_public_key();
        let state = Arc::new(Shared {
            creds,
            sa_public,
            base_url,
            log: Mutex::new(PushLog::new(config.record_capacity)),
            devices: Mutex::new(Devices::new(config.max_devices, config.device_queue)),
            faults: Mutex::new(Faults::default()),
            access_tokens: Mutex::new(fcm::AccessTokens::default()),
            subscriptions: Mutex::new(Default::default()),
            max_devices: config.max_devices,
            shutdown: CancellationToken::new(),
        });
        Ok(Gateway {
            state,
            listener,
            config,
            tls,
        })
    }

    /// The PEM of the TLS certificate, when serving TLS.
    pub fn tls_certificate(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.cert_pem.as_str())
    }

    pub fn credentials(&self) -> &Credentials {
        &self.state.creds
    }

    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }

    /// Serves until `shutdown` completes, then gives open connections the grace period.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let token = self.state.shutdown.clone();
        tokio::spawn(async move {
            shutdown.await;
            token.cancel();
        });
        tracing::info!(url = %self.state.base_url, "gateway listening (APNs, FCM v1, Web Push)");
        serve(
            self.listener,
            self.tls.map(|t| t.acceptor),
            router(self.state.clone()),
            self.config.max_connections,
            self.state.shutdown.clone(),
            self.config.shutdown_grace,
        )
        .await;
    }
}

/// `ssepush gateway`: make the credentials, then serve until `shutdown`.
pub async fn run(
    listener: TcpListener,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    // RSA key generation is CPU work: keep it off the async workers.
    let gateway = tokio::task::spawn_blocking(move || Gateway::new(listener, config))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    gateway.serve(shutdown).await;
    Ok(())
}

/// The router, apart from any listener.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/3/device/{token}",
            post(apns::send).fallback(|| async { apns::reason_response(405, "MethodNotAllowed") }),
        )
        .route("/token", post(fcm::token))
        .route("/v1/projects/{project}/messages:send", post(fcm::send))
        .route("/wp/{id}", post(webpush::deliver))
        .route("/_gateway/webpush/subscriptions", post(webpush::subscribe))
        .route(
            "/_gateway/webpush/subscriptions/{id}",
            axum::routing::delete(webpush::unsubscribe),
        )
        .route("/_gateway/devices", post(register_device))
        .route(
            "/_gateway/devices/{token}",
            axum::routing::delete(unregister_device),
        )
        .route("/_gateway/devices/{token}/stream", get(device_stream))
        .route("/_gateway/pushes", get(list_pushes).delete(clear_pushes))
        .route(
            "/_gateway/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/metrics", get(ssepush_origin::service::ops::metrics))
        .fallback(|uri: axum::http::Uri| async move {
            // Under APNs' prefix, answer as Apple does.
            if uri.path().starts_with("/3/") {
                apns::reason_response(404, "BadPath")
            } else {
                api_error(404, "not_found", "no such endpoint")
            }
        })
        // Real services refuse far smaller bodies; this only stops memory abuse before the
        // provider checks answer in their own words.
        .layer(DefaultBodyLimit::max(256 * 1024))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterDevice {
    platform: Provider,
    /// Register this token instead of generating one.
    #[serde(default)]
    token: Option<String>,
}

/// `POST /_gateway/devices` `{"platform": "apns"|"fcm", "token"?}` → 201 `{"platform", "token"}`:
/// a simulated phone gets a device token and a delivery queue.
async fn register_device(State(st): State<AppState>, body: Bytes) -> Response {
    let req: RegisterDevice = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return api_error(400, "bad_request", &e.to_string()),
    };
    let token = match (req.platform, req.token) {
        (Provider::Webpush, _) => {
            return api_error(
                400,
                "bad_request",
                "Web Push devices subscribe with POST /_gateway/webpush/subscriptions",
            );
        }
        (Provider::Apns, Some(t)) if !apns::is_device_token(&t) => {
            return api_error(
                400,
                "bad_request",
                "an APNs token is hex bytes: an even number of hex digits, at most 200",
            );
        }
        (Provider::Fcm, Some(t)) if !fcm::is_registration_token(&t) => {
            return api_error(400, "bad_request", "not a valid FCM registration token");
        }
        (_, Some(t)) => t,
        (Provider::Apns, None) => {
            let mut b = [0u8; 32];
            rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut b);
            b.iter().map(|x| format!("{x:02x}")).collect()
        }
        (Provider::Fcm, None) => {
            // The shape of a real registration token: instance id, ':', an opaque blob.
            let mut id = [0u8; 16];
            let mut blob = [0u8; 105];
            rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut id);
            rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut blob);
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!("{}:APA91b{}", &b64.encode(id)[..22], b64.encode(blob))
        }
    };
    if st.devices.lock().unwrap().get_or_create(&token).is_none() {
        return api_error(
            503,
            "too_many_devices",
            "the gateway's device limit is reached",
        );
    }
    (
        StatusCode::CREATED,
        axum::Json(json!({"platform": req.platform, "token": token})),
    )
        .into_response()
}

/// `DELETE /_gateway/devices/{token}`: the app was uninstalled. Pushes to the token are
/// refused as the services refuse a dead token (APNs 410 `Unregistered` with the time, FCM 404
/// `UNREGISTERED`); its queue is gone.
async fn unregister_device(State(st): State<AppState>, Path(token): Path<String>) -> Response {
    if st.devices.lock().unwrap().unregister(&token, now_ms()) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        api_error(
            503,
            "too_many_devices",
            "the gateway's device limit is reached",
        )
    }
}

/// `GET /_gateway/devices/{token}/stream`: every push accepted for the device from now on (and
/// any still queued), as SSE events `push` whose data is a [`Delivery`] and whose id is the
/// push record's `seq`. One reader per device: two readers share the queue.
async fn device_stream(State(st): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(queue) = st.devices.lock().unwrap().get_or_create(&token) else {
        return api_error(
            503,
            "too_many_devices",
            "the gateway's device limit is reached",
        );
    };
    let shutdown = st.shutdown.clone();
    let listening = queue.listen();
    // A first comment, so the reader knows the device is listening once it sees any byte.
    let ready =
        futures::stream::once(async { Ok::<_, Infallible>(Event::default().comment("ready")) });
    let state = (queue, shutdown, listening);
    let pushes = futures::stream::unfold(state, |(queue, shutdown, listening)| async move {
        loop {
            let (next, expired) = queue.pop(now_ms());
            if expired > 0 {
                metrics::counter!("ssepush_gateway_pushes_expired_total").increment(expired as u64);
            }
            if let Some(d) = next {
                let data = serde_json::to_string(&d).unwrap_or_default();
                let event = Event::default()
                    .event("push")
                    .id(d.seq.to_string())
                    .data(data);
                return Some((Ok(event), (queue, shutdown, listening)));
            }
            tokio::select! {
                _ = queue.notify.notified() => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    });
    Sse::new(futures::StreamExt::chain(ready, pushes))
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn list_pushes(
    State(st): State<AppState>,
    query: Result<Query<PushQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => axum::Json(st.log.lock().unwrap().query(&q)).into_response(),
        Err(e) => api_error(400, "bad_request", &e.body_text()),
    }
}

async fn clear_pushes(State(st): State<AppState>) -> StatusCode {
    st.log.lock().unwrap().clear();
    StatusCode::NO_CONTENT
}

async fn add_fault(State(st): State<AppState>, body: Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return api_error(400, "bad_request", &e.to_string()),
    };
    match st.faults.lock().unwrap().add(spec) {
        Ok(id) => (StatusCode::CREATED, axum::Json(json!({"id": id}))).into_response(),
        Err(message) => api_error(400, "bad_fault", &message),
    }
}

async fn list_faults(State(st): State<AppState>) -> Response {
    axum::Json(st.faults.lock().unwrap().list()).into_response()
}

async fn clear_faults(State(st): State<AppState>) -> StatusCode {
    st.faults.lock().unwrap().clear();
    StatusCode::NO_CONTENT
}

/// The accept loop: HTTP/1.1 and HTTP/2 prior knowledge (h2c) on one port, as hyper-util's
/// `auto` builder tells them apart by the connection preface; or the same over TLS.
async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    max_connections: usize,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, service, shutdown).await,
                Some(acceptor) => {
                    // A client that never finishes its handshake must not hold a slot forever.
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => serve_connection(tls, service, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("gateway connections still open after the grace period; closing");
    }
}

/// One connection, HTTP/1.1 or HTTP/2, until it ends or the gateway shuts down.
async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use super::*;

    /// One set of keys for all unit tests: RSA key generation is the slow part.
    pub(crate) fn test_credentials() -> &'static Credentials {
        static CREDS: OnceLock<Credentials> = OnceLock::new();
        CREDS.get_or_init(|| Credentials::generate("http://127.0.0.1:8070").unwrap())
    }

    #[test]
    fn uuid_shape() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}

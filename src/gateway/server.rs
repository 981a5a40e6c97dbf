//! The gateway as a server: its settings, [`Gateway`] (credentials made and written, then
//! served), [`run`] (exactly what `ssepush gateway` executes and what tests drive on port 0),
//! the router, and the accept loop — HTTP/1.1 and HTTP/2 prior knowledge (h2c) on one port, or
//! both over TLS ([`super::tls`]).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::control::{self, api_error};
use super::credentials::{self, Credentials};
use super::state::{AppState, Shared};
use super::{apns, fcm, tls, webpush};

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
    /// Connections served at once (more wait in the listen backlog).
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

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS setup: {0}")]
    Tls(String),
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
        // Any reqwest client built later in the process gets ring (see service::tls).
        ssepush_origin::service::tls::install_default_provider();
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
        let state = Arc::new(Shared::new(
            creds,
            base_url,
            config.record_capacity,
            config.max_devices,
            config.device_queue,
        ));
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

/// The router, apart from any listener: the provider endpoints, the control API, ops.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/3/device/{token}",
            post(apns::send).fallback(|| async { apns::reason_response(405, "MethodNotAllowed") }),
        )
        .route("/token", post(fcm::token))
        .route("/v1/projects/{project}/messages:send", post(fcm::send))
        .route("/wp/{id}", post(webpush::deliver))
        .merge(control::routes())
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/metrics", get(metrics))
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

/// `GET /metrics`: this gateway's counters (Prometheus text format).
async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
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

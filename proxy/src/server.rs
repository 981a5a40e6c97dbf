//! The proxy server: [`run`] is exactly what `ssepush proxy` executes and what the tests drive
//! on port 0. Push providers come in as a [`Providers`] value so tests can inject a recording
//! fake; [`providers_from_settings`] builds the real ones from `[apns]`, `[fcm]`, `[webpush]`.

use std::future::Future;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::node::Node;
pub use crate::node::ServerError;
pub use crate::push::{Providers, providers_all};
use crate::settings::Settings;
pub use crate::settings::providers_from_settings;

/// Serves the proxy on `listener` until `shutdown` completes, then drains: open connections
/// get `shutdown_grace_secs`, the scheduler and every watcher stop.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    providers: Providers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    ssepush_origin::service::ops::metrics_handle();
    ssepush_origin::service::ops::register_metrics(crate::metrics::METRICS);
    // Any reqwest client built later in the process gets ring (see service::tls).
    ssepush_origin::service::tls::install_default_provider();
    let bound = listener.local_addr().unwrap_or(settings.listen);
    let token = CancellationToken::new();
    settings.validate()?;
    let store = crate::store::open(
        &settings.store,
        &settings.fleet.namespace,
        &settings.fleet.encryption_keys,
        settings.max_handoffs,
    )
    .await
    .map_err(|e| ServerError::Store(e.to_string()))?;
    let node = Node::new(settings, providers, bound, token.clone(), store)?;
    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            token.cancel();
        });
    }
    if node.push_policy.allow_private && !bound.ip().is_loopback() {
        tracing::warn!(
            "push.allow_private_endpoints is on while listening on a network: Web Push \
             endpoints may point into this proxy's own network"
        );
    }
    if node.settings.allowed_origins.is_empty() {
        tracing::warn!("allowed_origins is empty: only loopback origins may be watched");
    }
    if node.providers.apns.is_none()
        && node.providers.fcm.is_none()
        && node.providers.webpush.is_none()
    {
        tracing::warn!(
            "no push provider is configured ([apns], [fcm], [webpush]): every handoff is refused"
        );
    }
    let admin = match node.settings.admin_listen {
        None => None,
        Some(addr) => Some(
            ssepush_origin::service::admin::spawn(
                addr,
                std::sync::Arc::new(
                    serde_json::to_value(crate::api::openapi()).unwrap_or_default(),
                ),
                token.clone(),
                node.settings.shutdown_grace(),
            )
            .await
            .map_err(|e| ServerError::Admin(addr, e))?,
        ),
    };
    tracing::info!(addr = %bound, providers = ?node.providers, "proxy listening");
    let sweeper = tokio::spawn(crate::sweep::sweep(node.clone()));
    // Wakes, expiry and teardown of every live handoff.
    let scheduler = tokio::spawn(crate::scheduler::run(node.clone()));
    // Joins the fleet (a shared store) and, on shutdown, hands every handoff over.
    let fleet = tokio::spawn(crate::fleet::run(node.clone()));
    let max_conns = node.settings.max_connections;
    let grace = node.settings.shutdown_grace();
    ssepush_origin::service::listener::serve(
        listener,
        crate::api::router(node.clone()),
        max_conns,
        std::time::Duration::from_secs(node.settings.header_read_timeout_secs),
        token.clone(),
        grace,
    )
    .await;
    token.cancel();
    let _ = fleet.await;
    let _ = sweeper.await;
    let _ = scheduler.await;
    if let Some(task) = admin {
        let _ = task.await;
    }
    tracing::info!("proxy stopped");
    Ok(())
}

//! The thin HTTP transport the providers share: hyper's pooled client over rustls (ring), with
//! Mozilla's roots plus an optional extra CA file (the simulated gateway's self-signed
//! certificate), and `http://` endpoints spoken as h2c with prior knowledge when HTTP/2 is
//! required (APNs speaks nothing else).
//!
//! Names are resolved by [`super::endpoint::GlobalResolver`]: for Web Push (client-chosen
//! endpoints) it refuses addresses that are not globally reachable when connecting; for APNs
//! and FCM (operator-configured hosts) it resolves as the system does.
//!
//! hyper rather than reqwest: APNs needs HTTP/2 with prior knowledge over cleartext (the
//! simulated gateway) and HTTP/2-only pools; the TLS configuration is the one every outbound
//! client shares (`ssepush_origin::service::tls`).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::PushError;
use super::endpoint::GlobalResolver;

/// Longest response body read: push services answer a few hundred bytes of JSON.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Which HTTP versions a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Versions {
    /// HTTP/2 only: ALPN `h2` over TLS, prior knowledge (h2c) over plain TCP.
    Http2,
    /// Whatever ALPN agrees on (HTTP/1.1 over plain TCP).
    Any,
}

/// A response, fully read.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
pub(crate) struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector<GlobalResolver>>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The rustls configuration every outbound client shares
/// ([`ssepush_origin::service::tls::client_config`]: ring, Mozilla's roots, plus every
/// certificate in `extra_ca`).
pub(crate) fn tls_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, PushError> {
    ssepush_origin::service::tls::client_config(extra_ca)
        .map_err(|e| PushError::Config(format!("CA certificate: {e}")))
}

impl HttpClient {
    /// A client for operator-configured hosts (APNs, FCM): any address.
    pub fn new(
        extra_ca: Option<&Path>,
        versions: Versions,
        timeout: Duration,
    ) -> Result<HttpClient, PushError> {
        Self::with_resolver(
            extra_ca,
            versions,
            timeout,
            GlobalResolver {
                allow_private: true,
            },
        )
    }

    /// A client whose connections resolve names through `resolver` (Web Push: the endpoint
    /// policy). IP-literal hosts never reach a resolver: check them before sending.
    pub fn with_resolver(
        extra_ca: Option<&Path>,
        versions: Versions,
        timeout: Duration,
        resolver: GlobalResolver,
    ) -> Result<HttpClient, PushError> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(extra_ca)?)
            .https_or_http();
        let mut http = HttpConnector::new_with_resolver(resolver);
        // The TLS layer decides the scheme; plain TCP must accept `https://` URIs.
        http.enforce_http(false);
        // A wake is a few small HTTP/2 frames: with Nagle's algorithm they waited for the ACK
        // of the previous segment, which the peer delays by up to 40 ms — the floor of the wake
        // latency (issue 11: p50 47 ms under `bench wake`). reqwest sets this by default.
        http.set_nodelay(true);
        let connector = match versions {
            Versions::Http2 => builder.enable_http2().wrap_connector(http),
            Versions::Any => builder.enable_all_versions().wrap_connector(http),
        };
        let inner = Client::builder(TokioExecutor::new())
            .http2_only(versions == Versions::Http2)
            .pool_idle_timeout(Duration::from_secs(600))
            .build(connector);
        Ok(HttpClient { inner, timeout })
    }

    /// Sends one request and reads the whole (bounded) response. Network errors and timeouts
    /// are [`PushError::Transient`]: the request may not have arrived.
    pub async fn send(&self, request: http::Request<Bytes>) -> Result<HttpResponse, PushError> {
        let request = request.map(Full::new);
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| {
                PushError::Transient(format!("request failed: {}", error_chain(&e)))
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BODY)
                .collect()
                .await
                .map_err(|e| PushError::Transient(format!("reading the response: {e}")))?
                .to_bytes();
            Ok(HttpResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PushError::Transient(format!("no answer within {:?}", self.timeout)))?
    }
}

/// The error and its causes on one line (hyper's top-level message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A response's `Retry-After` (RFC 9110 §10.2.3: delta-seconds or an HTTP-date), as a wait from
/// now; garbage counts as absent. The parsing is [`crate::retry_after::parse`].
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    crate::retry_after::parse(value, SystemTime::now())
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A base URL without its trailing slash, checked to be `http(s)://host…`.
pub(crate) fn base_url(url: &str, what: &str) -> Result<String, PushError> {
    let trimmed = url.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|e| PushError::Config(format!("{what} {trimmed:?}: {e}")))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(trimmed.to_owned()),
        _ => Err(PushError::Config(format!(
            "{what} {trimmed:?} must be an http:// or https:// URL"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        // A date long past: retry now (not "absent", which would mean a provider's default).
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", "later".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("http://127.0.0.1:8070/", "x").unwrap(),
            "http://127.0.0.1:8070"
        );
        assert!(base_url("ftp://example.com", "x").is_err());
        assert!(base_url("not a url", "x").is_err());
    }

    #[test]
    fn extra_ca_must_hold_a_certificate() {
        let path = std::env::temp_dir().join(format!("ssepush-push-ca-{}", std::process::id()));
        std::fs::write(&path, "not a certificate").unwrap();
        assert!(matches!(tls_config(Some(&path)), Err(PushError::Config(_))));
        std::fs::remove_file(&path).unwrap();
        assert!(tls_config(None).is_ok());
    }
}

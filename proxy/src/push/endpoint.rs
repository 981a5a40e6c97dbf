//! Where a Web Push wake may go. A subscription's `endpoint` is chosen by whoever creates the
//! handoff, and the proxy POSTs a VAPID-signed request there: without a policy it is a way into
//! the proxy's own network (SSRF), and the handoff's `lastError` would tell open ports from
//! closed ones. [`EndpointPolicy`] is `[push]` in the settings:
//!
//! * **https only** — plain `http://` only to a loopback host, and only while private
//!   endpoints are allowed (a development setup with the simulated gateway);
//! * **globally reachable addresses only** unless `push.allow_private_endpoints` (default: on a
//!   loopback listener only) — the IANA special-purpose registries the origin's webhooks use
//!   too ([`ssepush_origin::special_purpose`]), checked when the handoff is created (IP literal
//!   or every resolved address: a 400 `push_endpoint_not_allowed`) **and** when connecting, by
//!   [`GlobalResolver`] in the push HTTP client, so a name that resolved to a public address at
//!   creation cannot be rebound to a private one later;
//! * **an optional host allow list**, `push.webpush_hosts`: exact host names, or `*.suffix`
//!   for any subdomain; empty allows any host.
//!
//! What goes wrong on the way (refused, unresolvable, reset, timed out, TLS) reaches
//! `lastError` only as [`UNREACHABLE`]; the details go to the log.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use reqwest::Url;
use ssepush_origin::service::egress::{self, EgressError};

/// What a handoff's `lastError` says about any network failure reaching a Web Push endpoint:
/// the same words whatever happened, so it never tells open from closed ports.
pub const UNREACHABLE: &str = "push endpoint unreachable";

/// Where Web Push wakes may be sent (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Endpoints on addresses that are not globally reachable (loopback, private, …) allowed.
    pub allow_private: bool,
    /// Allowed endpoint hosts: `push.example.net` or `*.example.net`; empty: any host.
    pub hosts: Vec<String>,
}

impl EndpointPolicy {
    /// The development policy: anything, including plain http to a loopback host.
    pub fn permissive() -> EndpointPolicy {
        EndpointPolicy {
            allow_private: true,
            hosts: Vec::new(),
        }
    }

    /// The checks that need no lookup: scheme, the host allow list, an IP-literal host.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err("subscription.endpoint has no host".into());
        };
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private && crate::allow::is_loopback_host(url) => {}
            _ => return Err("subscription.endpoint must be an https URL".into()),
        }
        if !self.hosts.is_empty() && !self.hosts.iter().any(|p| host_matches(p, host)) {
            return Err(format!(
                "subscription.endpoint host {host} is not in this proxy's push.webpush_hosts"
            ));
        }
        if !self.allow_private
            && let Ok(ip) = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
        {
            egress::check_ip(host, ip).map_err(|e| refused(&e))?;
        }
        Ok(())
    }

    /// Every check, the host's lookup included: what handoff creation runs.
    pub async fn check(&self, endpoint: &str) -> Result<(), String> {
        let url = Url::parse(endpoint).map_err(|_| "subscription.endpoint is not a URL")?;
        self.check_url(&url)?;
        if self.allow_private {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(443);
        egress::resolve_global(host, port, false)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                EgressError::NotGlobal { .. } => refused(&e),
                EgressError::Unresolved { .. } => format!("subscription.endpoint: {e}"),
            })
    }
}

fn refused(e: &EgressError) -> String {
    format!("subscription.endpoint: {e} (push.allow_private_endpoints is off)")
}

/// `pattern` is a host name (case-insensitive) or `*.suffix`, which matches names under the
/// suffix but not the suffix itself.
fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1 && {
                let (head, tail) = host.split_at(host.len() - suffix.len());
                head.ends_with('.') && tail.eq_ignore_ascii_case(suffix)
            }
        }
        None => host.eq_ignore_ascii_case(pattern),
    }
}

/// Checks a `push.webpush_hosts` entry: a host name or `*.` and one.
pub fn check_host_pattern(pattern: &str) -> Result<(), String> {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "push.webpush_hosts entry {pattern:?} is not a host name or *.host.name"
        ))
    }
}

/// The push HTTP client's resolver (a `tower::Service<Name>` for hyper's connector): every
/// name is resolved through [`egress::resolve_global`] when a connection is made, so with
/// private endpoints refused a name resolving to any non-global address never gets a
/// connection. The port is the connector's to set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GlobalResolver {
    pub allow_private: bool,
}

type Resolving = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    std::vec::IntoIter<SocketAddr>,
                    Box<dyn std::error::Error + Send + Sync>,
                >,
            > + Send,
    >,
>;

impl tower_service::Service<Name> for GlobalResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = egress::resolve_global(name.as_str(), 0, allow_private).await?;
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow_private: bool, hosts: &[&str]) -> EndpointPolicy {
        EndpointPolicy {
            allow_private,
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn url_check(p: &EndpointPolicy, u: &str) -> Result<(), String> {
        p.check_url(&Url::parse(u).unwrap())
    }

    #[test]
    fn the_issues_endpoints_are_refused_on_a_network_listener() {
        let strict = policy(false, &[]);
        for bad in [
            "http://127.0.0.1:9999/admin/reset?all=1",
            "https://10.0.0.1/",
            "https://169.254.169.254/",
            "https://198.18.0.1/",
            "https://[2002:7f00:1::]/",
            "https://[::ffff:127.0.0.1]/",
            "http://push.example.net/",
        ] {
            assert!(url_check(&strict, bad).is_err(), "{bad} passed");
        }
        assert!(url_check(&strict, "https://93.184.216.34/x").is_ok());
        assert!(url_check(&strict, "https://fcm.googleapis.com/fcm/send/x").is_ok());
        // Development: loopback over http is the simulated gateway.
        let dev = EndpointPolicy::permissive();
        assert!(url_check(&dev, "http://127.0.0.1:8070/wp/x").is_ok());
        assert!(url_check(&dev, "https://10.0.0.1/").is_ok());
        assert!(url_check(&dev, "http://10.0.0.1/").is_err());
    }

    #[test]
    fn the_host_allow_list_takes_names_and_subdomains() {
        let p = policy(true, &["fcm.googleapis.com", "*.push.apple.com"]);
        assert!(url_check(&p, "https://fcm.googleapis.com/x").is_ok());
        assert!(url_check(&p, "https://FCM.googleapis.com./x").is_ok());
        assert!(url_check(&p, "https://web.push.apple.com/x").is_ok());
        assert!(url_check(&p, "https://push.apple.com/x").is_err());
        assert!(url_check(&p, "https://evilpush.apple.com/x").is_err());
        assert!(url_check(&p, "https://fcm.googleapis.com.evil.net/x").is_err());
        assert!(url_check(&p, "https://127.0.0.1/x").is_err());
        assert!(check_host_pattern("*.push.apple.com").is_ok());
        for bad in ["", "*.", "https://x", "a..b", "*", "x/y"] {
            assert!(check_host_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn names_are_resolved_at_creation() {
        let strict = policy(false, &[]);
        let err = strict.check("https://localhost:9/x").await.unwrap_err();
        assert!(err.contains("127.0.0.0/8 (loopback)"), "{err}");
        assert!(
            EndpointPolicy::permissive()
                .check("https://localhost:9/x")
                .await
                .is_ok()
        );
    }
}

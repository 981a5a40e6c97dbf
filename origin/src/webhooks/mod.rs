//! Webhooks: server-to-client RPC. The origin POSTs each matching event to a registered URL,
//! signed per Standard Webhooks, in order, at least once.
//!
//! * this module: the model ([`Webhook`], its settings) and the validation of what clients send,
//!   including which target URLs are allowed ([`check_url`], [`ip_allowed`]);
//! * [`signing`]: the Standard Webhooks signature (pure);
//! * [`policy`]: backoff, disabling and cursor rules as plain values (pure);
//! * [`store`]: the [`store::WebhookStore`] trait with [`memory`] and [`redis`] backends; webhook
//!   records and per-webhook delivery leases;
//! * [`worker`]: the delivery loop and the [`worker::WebhookService`] that runs one per webhook.
//!
//! # Delivery, in short
//!
//! A worker reads the event log after the webhook's cursor (`EventLog::read` with its channel
//! patterns, its CEL filter applied), and POSTs one event at a time. Only a 2xx advances and
//! persists the cursor; anything else backs off with full jitter and retries the *same* event, so
//! order holds. After repeated failures the webhook is disabled; `PATCH {"enabled": true}`
//! resumes it from its cursor. If the cursor falls behind retention, the gap is recorded in the
//! status (`lastGap`) and delivery continues with the oldest retained event.
//!
//! # Payload
//!
//! ```json
//! {"type": "<event type>", "timestamp": "<event time, RFC 3339>",
//!  "data": {"id": "<event id>", "channel": "...", "type": "...", "data": <event data>, "time": <ms>}}
//! ```
//!
//! `webhook-id` is the event id (stable across retries, so receivers can deduplicate).

pub mod memory;
pub mod policy;
pub mod redis;
pub mod signing;
pub mod store;
pub mod worker;

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::channel::PatternSet;
use crate::filter::Filter;
pub use policy::{DeliveryState, Policy};
pub use signing::Secret;

/// Most channel patterns one webhook may have.
pub const MAX_CHANNELS: usize = 64;
/// Longest target URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// `[webhooks]` in the origin's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Allow targets on private, loopback, link-local, unspecified and multicast addresses.
    /// Off by default: a webhook must not become a way to reach the origin's own network.
    pub allow_private_targets: bool,
    /// Time one delivery attempt may take (connect, send, response head), in milliseconds.
    pub timeout_ms: u64,
    /// Backoff after the first failure, in milliseconds; doubles per consecutive failure.
    pub backoff_base_ms: u64,
    /// Longest backoff, in milliseconds.
    pub backoff_cap_ms: u64,
    /// Consecutive failures after which a webhook is disabled.
    pub max_failures: u32,
    /// Seconds of failing without a success after which a webhook is disabled; 0: no window.
    pub failure_window_secs: u64,
    /// Most webhooks one namespace may hold.
    pub max_webhooks: usize,
    /// Lifetime of a node's delivery lease on a webhook, in milliseconds; renewed at a third of
    /// it. Another node takes a webhook over at most this long after its holder died.
    pub lease_ttl_ms: u64,
    /// How often an idle worker looks at the log and its record even without a new-event
    /// doorbell (config changes made on other nodes, missed wake-ups), in milliseconds.
    pub poll_interval_ms: u64,
    /// Most events after the cursor the status endpoint scans to count `pending`.
    pub pending_scan_limit: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_private_targets: false,
            timeout_ms: 10_000,
            backoff_base_ms: 500,
            backoff_cap_ms: 300_000,
            max_failures: 10,
            failure_window_secs: 0,
            max_webhooks: 1000,
            lease_ttl_ms: 15_000,
            poll_interval_ms: 1000,
            pending_scan_limit: 1000,
        }
    }
}

impl WebhookSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout_ms == 0 || self.backoff_base_ms == 0 || self.poll_interval_ms == 0 {
            return Err(
                "webhooks.timeout_ms, backoff_base_ms and poll_interval_ms must be at least 1"
                    .into(),
            );
        }
        if self.backoff_cap_ms < self.backoff_base_ms {
            return Err("webhooks.backoff_cap_ms must be at least backoff_base_ms".into());
        }
        if self.max_failures == 0 || self.max_webhooks == 0 || self.pending_scan_limit == 0 {
            return Err(
                "webhooks.max_failures, max_webhooks and pending_scan_limit must be at least 1"
                    .into(),
            );
        }
        // A delivery starts right after a renewal and must end before the lease could lapse,
        // or a second node could deliver the same event concurrently.
        if self.lease_ttl_ms < self.timeout_ms.saturating_add(1000) {
            return Err("webhooks.lease_ttl_ms must exceed timeout_ms by at least 1000".into());
        }
        Ok(())
    }

    pub fn policy(&self) -> Policy {
        Policy {
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            backoff_cap: Duration::from_millis(self.backoff_cap_ms),
            max_failures: self.max_failures,
            failure_window: (self.failure_window_secs > 0)
                .then(|| Duration::from_secs(self.failure_window_secs)),
        }
    }
}

/// A registered webhook: what to deliver where. Changed only through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub channels: Vec<String>,
    pub filter: Option<String>,
    pub secret: Secret,
    /// Unix ms.
    pub created_at: u64,
    /// Bumped on every change of url, channels or filter, so workers notice.
    pub version: u64,
}

/// A webhook with its delivery state: the unit the store keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub hook: Webhook,
    pub state: DeliveryState,
}

/// What a webhook selects, compiled.
#[derive(Debug, Clone)]
pub struct Selection {
    pub patterns: PatternSet,
    pub filter: Option<Filter>,
}

/// A client mistake in a webhook definition; the API turns it into a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidWebhook {
    #[error("{0}")]
    Url(String),
    #[error("{0}")]
    Channels(String),
}

impl Webhook {
    /// A fresh webhook id: `wh_` and 26 lowercase base32 characters (128 random bits).
    pub fn new_id() -> String {
        use rand::RngCore;
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let mut bits = u128::from_be_bytes(bytes);
        let mut out = String::from("wh_");
        for _ in 0..26 {
            out.push(ALPHABET[(bits & 31) as usize] as char);
            bits >>= 5;
        }
        out
    }

    /// Whether `s` could be an id [`Webhook::new_id`] made; anything else is a 404 without
    /// touching the store.
    pub fn is_valid_id(s: &str) -> bool {
        s.strip_prefix("wh_").is_some_and(|r| {
            r.len() == 26
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        })
    }

    pub fn selection(&self) -> Result<Selection, String> {
        let patterns = PatternSet::parse_all(self.channels.iter().map(String::as_str))
            .map_err(|e| e.to_string())?;
        let filter = match &self.filter {
            Some(f) => Some(Filter::compile(f).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Selection { patterns, filter })
    }
}

/// Checks a channel list: 1 to [`MAX_CHANNELS`] valid patterns.
pub fn check_channels(channels: &[String]) -> Result<PatternSet, InvalidWebhook> {
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err(InvalidWebhook::Channels(format!(
            "channels must list 1 to {MAX_CHANNELS} channel patterns"
        )));
    }
    PatternSet::parse_all(channels.iter().map(String::as_str))
        .map_err(|e| InvalidWebhook::Channels(e.to_string()))
}

/// Checks a target URL's shape: absolute http(s), a host, no credentials, bounded length. If the
/// host is an IP literal, it must be allowed too. Host names are checked when resolved
/// (by the delivery client's resolver in [`worker`], and by [`resolve_and_check`]).
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, InvalidWebhook> {
    let bad = |m: &str| Err(InvalidWebhook::Url(m.to_owned()));
    if url.len() > MAX_URL_LEN {
        return bad("url is longer than 2048 bytes");
    }
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return bad("url is not an absolute URL");
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return bad("url must be http:// or https://");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return bad(
            "url must not carry credentials; receivers authenticate deliveries by their signature",
        );
    }
    if parsed.fragment().is_some() {
        return bad("url must not have a #fragment");
    }
    match ip_literal(&parsed) {
        _ if parsed.host_str().is_none_or(str::is_empty) => bad("url has no host"),
        Some(ip) => check_ip(ip, allow_private).map(|()| parsed),
        None => Ok(parsed),
    }
}

/// The URL's host when it is an IP address (`http://10.0.0.1/`, `http://[::1]/`).
pub fn ip_literal(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

/// Resolves the URL's host and refuses it when any address is not globally reachable (the
/// shared resolver, [`crate::service::egress::resolve_global`]).
pub async fn resolve_and_check(
    url: &reqwest::Url,
    allow_private: bool,
) -> Result<(), InvalidWebhook> {
    if allow_private || ip_literal(url).is_some() {
        return Ok(()); // IP literals were checked by `check_url`.
    }
    let Some(host) = url.host_str() else {
        return Err(InvalidWebhook::Url("url has no host".into()));
    };
    let port = url.port_or_known_default().unwrap_or(443);
    crate::service::egress::resolve_global(host, port, false)
        .await
        .map_err(|e| InvalidWebhook::Url(refusal(&e.to_string())))?;
    Ok(())
}

fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), InvalidWebhook> {
    match crate::special_purpose::non_global(ip) {
        Some(block) if !allow_private => Err(InvalidWebhook::Url(refusal(&format!(
            "target address {ip} is in {block}, not a public address"
        )))),
        _ => Ok(()),
    }
}

fn refusal(why: &str) -> String {
    format!("{why} (webhooks.allow_private_targets is off)")
}

/// Whether a webhook may be delivered to `ip` when private targets are not allowed: a globally
/// reachable address per IANA's special-purpose registries ([`crate::special_purpose`], the
/// policy the proxy's push endpoints share).
pub fn ip_allowed(ip: IpAddr) -> bool {
    crate::special_purpose::is_global(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_are_allowed() {
        for ok in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:2800:220:1:248:1893:25c8:1946",
            "::ffff:8.8.8.8",
        ] {
            assert!(ip_allowed(ok.parse().unwrap()), "{ok} refused");
        }
        for bad in [
            "127.0.0.1",
            "127.8.9.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "fec0::1",
            // The whole registries (issue 12): benchmarking, IETF protocol assignments, 6to4
            // of loopback. The table itself is tested in `special_purpose`.
            "198.18.0.1",
            "192.0.0.1",
            "2002:7f00:1::",
        ] {
            assert!(!ip_allowed(bad.parse().unwrap()), "{bad} allowed");
        }
    }

    #[test]
    fn urls_must_be_http_with_an_allowed_host() {
        assert!(check_url("https://hooks.example.com/in?x=1", false).is_ok());
        assert!(check_url("http://93.184.216.34:8080/", false).is_ok());
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "https://user:pw@example.com/",
            "http://127.0.0.1:9000/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5/",
            "https://example.com/#frag",
            "file:///etc/passwd",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad} accepted");
        }
        assert!(check_url("http://127.0.0.1:9000/", true).is_ok());
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN)), true).is_err());
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to() {
        let url = check_url("http://localhost:9/", false).unwrap();
        assert!(resolve_and_check(&url, false).await.is_err());
        assert!(resolve_and_check(&url, true).await.is_ok());
    }

    #[test]
    fn ids_are_random_and_recognisable() {
        let a = Webhook::new_id();
        assert!(Webhook::is_valid_id(&a), "{a}");
        assert_ne!(a, Webhook::new_id());
        for bad in [
            "",
            "wh_",
            "wh_ABC",
            "x",
            "wh_abcdefghijklmnopqrstuvwxy1",
            "../../etc",
        ] {
            assert!(!Webhook::is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn settings_are_checked() {
        assert!(WebhookSettings::default().validate().is_ok());
        let s = WebhookSettings {
            lease_ttl_ms: 5000,
            ..Default::default()
        };
        assert!(s.validate().is_err());
        let s = WebhookSettings {
            backoff_cap_ms: 1,
            ..Default::default()
        };
        assert!(s.validate().is_err());
    }
}

//! The proxy's settings: one type, built from TOML + `SSEPUSH_PROXY_…` env by [`Settings::load`]
//! (same rules as the origin: `__` separates nested keys), or directly by tests.
//!
//! Two decisions live here because they keep the proxy from being abused:
//!
//! * **`allowed_origins`** — the stream URLs the proxy may connect to. Each entry is a URL
//!   prefix: scheme, host and port must be equal, and the entry's path (if any beyond `/`) must
//!   be a prefix of the stream's path at a segment boundary. **Empty means: loopback origins only,
//!   and only while the proxy itself listens on loopback** (a development proxy on 127.0.0.1 just
//!   works with a development origin); a proxy reachable from a network with an empty list
//!   refuses every stream. The proxy never becomes an open relay by accident.
//! * **handoff auth** (`[auth]`) — who may create handoffs: static `api_keys` and/or HS256 JWTs
//!   from the app's backend, as `Authorization: Bearer …`. With nothing configured, creation is
//!   open on a loopback listen address and refused (403) on any other, unless
//!   `auth.allow_anonymous = true`. Reading and handing back a handoff always needs the handoff's
//!   own token.
//! * **`[push]`** — where Web Push wakes may go ([`crate::push::endpoint`]): on a proxy
//!   listening on a network, only https endpoints on globally reachable addresses (checked at
//!   creation and again when connecting), optionally only the hosts in `push.webpush_hosts`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ssepush_origin::service::config::{self, ConfigError};
pub use ssepush_origin::service::tls::TlsSettings;

// The provider sections are defined next to the providers that read them.
pub use crate::push::{ApnsSettings, FcmSettings, WebPushSettings};

/// Environment prefix of the proxy's settings.
pub const ENV_PREFIX: &str = "SSEPUSH_PROXY_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on. Default `127.0.0.1:8090`.
    pub listen: SocketAddr,
    /// A second address serving only `/metrics` and `/v1/openapi.json` (then not served on
    /// `listen`), e.g. a private interface for monitoring. Default: none (both on `listen`).
    pub admin_listen: Option<SocketAddr>,
    /// Handoff store: `memory` (the default; a single node) or `redis://…` (a fleet of nodes
    /// sharing one Redis; see `[fleet]`).
    pub store: String,
    /// Stream URL prefixes the proxy may connect to (see the module docs). Default: empty
    /// (loopback origins only, and only on a loopback listen address).
    pub allowed_origins: Vec<String>,
    /// Page origins allowed by CORS (a web app handing off its own stream); `["*"]` for any,
    /// empty to send no CORS headers. Methods and headers are derived as on the origin
    /// ([`ssepush_origin::service::cors`]). Default: empty.
    pub cors_allow_origins: Vec<String>,
    /// Open connections accepted at once. Default 10,000.
    pub max_connections: usize,
    /// Seconds open connections get to finish after SIGTERM. Default 10.
    pub shutdown_grace_secs: u64,
    /// Largest request body accepted, in bytes. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Seconds a client has to send a request's headers. Default 30.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a whole request body (408 after). Default 10.
    pub body_read_timeout_secs: u64,
    /// Most live handoffs on this node; creation beyond is a 503. Ended handoffs do not count:
    /// handed-back ones leave at once, expired and failed ones stay readable until forgotten
    /// (`keep_finished_secs`) but are left out of the count at the sweeper's next pass (each
    /// second). Default 1,000,000.
    pub max_handoffs: usize,
    /// Events buffered per handoff; older ones are dropped and reported as a gap. Default 256.
    pub buffer_events: usize,
    /// Handoff lifetime when the request gives no `ttlSec`. Default 86,400 (a day).
    pub default_ttl_secs: u64,
    /// Longest `ttlSec` accepted. Default 604,800 (a week).
    pub max_ttl_secs: u64,
    /// How long a finished (closed, expired, failed) handoff's status stays readable. Default
    /// 3600. On the `memory` store at most `max_handoffs` finished records are kept: beyond,
    /// the one finished longest ago is forgotten first.
    pub keep_finished_secs: u64,
    pub auth: AuthSettings,
    pub wake: WakeSettings,
    pub upstream: UpstreamSettings,
    pub fleet: FleetSettings,
    pub push: PushSettings,
    /// `[apns]`: Apple push (token-based auth). Absent: iOS handoffs are refused.
    pub apns: Option<ApnsSettings>,
    /// `[fcm]`: Firebase Cloud Messaging HTTP v1. Absent: Android handoffs are refused.
    pub fcm: Option<FcmSettings>,
    /// `[webpush]`: RFC 8030 Web Push with VAPID. Absent: webpush handoffs are refused.
    pub webpush: Option<WebPushSettings>,
    /// Outbound TLS (`[tls]`): `extra_ca_path`, a PEM file of CAs trusted besides Mozilla's
    /// roots for `https://` upstream streams. See [`ssepush_origin::service::tls`].
    pub tls: TlsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            admin_listen: None,
            store: "memory".into(),
            allowed_origins: Vec::new(),
            cors_allow_origins: Vec::new(),
            max_connections: 10_000,
            shutdown_grace_secs: 10,
            max_body_bytes: 64 * 1024,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 10,
            max_handoffs: 1_000_000,
            buffer_events: 256,
            default_ttl_secs: 86_400,
            max_ttl_secs: 7 * 86_400,
            keep_finished_secs: 3600,
            auth: AuthSettings::default(),
            wake: WakeSettings::default(),
            upstream: UpstreamSettings::default(),
            fleet: FleetSettings::default(),
            push: PushSettings::default(),
            apns: None,
            fcm: None,
            webpush: None,
            tls: TlsSettings::default(),
        }
    }
}

/// `[auth]`: who may create handoffs.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Static API keys accepted as `Authorization: Bearer <key>`. Default: none.
    pub api_keys: Vec<String>,
    /// Shared secret (≥ 32 bytes) for HS256 JWTs minted by the app's backend. Default: none.
    pub jwt_hs256_secret: Option<String>,
    /// Required `iss` / `aud` claims of JWTs when set (a token without the claim is refused).
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// Seconds of clock skew allowed when checking a JWT's `exp` and `nbf`. Default 30.
    pub jwt_leeway_secs: u64,
    /// Creation without credentials on a non-loopback address. Default false.
    pub allow_anonymous: bool,
    /// Handoffs each API key (or JWT subject) may create per second, on each node (a token
    /// bucket; over it: 429 with `Retry-After`). Anonymous creation is not limited. Default 10.
    pub create_rate_per_sec: f64,
    /// The bucket's depth: creations one key may make at once. Default 100.
    pub create_burst: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            api_keys: Vec::new(),
            jwt_hs256_secret: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: ssepush_origin::service::auth::DEFAULT_LEEWAY_SECS,
            allow_anonymous: false,
            create_rate_per_sec: 10.0,
            create_burst: 100,
        }
    }
}

impl std::fmt::Debug for AuthSettings {
    // Keys and secrets never reach a log line, even through `{:?}` of the settings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("api_keys", &self.api_keys.len())
            .field(
                "jwt_hs256_secret",
                &self.jwt_hs256_secret.as_ref().map(|_| "***"),
            )
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway_secs", &self.jwt_leeway_secs)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("create_rate_per_sec", &self.create_rate_per_sec)
            .field("create_burst", &self.create_burst)
            .finish()
    }
}

impl AuthSettings {
    pub fn is_configured(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt_hs256_secret.is_some()
    }
}

/// `[wake]`: the wake policy's defaults and limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WakeSettings {
    /// Least time between two wakes of a handoff when it gives no `coalesceMs` (the first wake
    /// goes out at the first owed event: leading edge). Default 250.
    pub coalesce_ms: u64,
    /// Largest `coalesceMs` accepted. Default 60,000.
    pub max_coalesce_ms: u64,
    /// Wakes per device per hour when the handoff gives no `maxPerHour` (Apple asks for no more
    /// than two or three background pushes an hour). Default 3.
    pub max_per_hour: u32,
    /// Largest `maxPerHour` accepted. Default 60.
    pub max_per_hour_limit: u32,
    /// Provider-wide rate limit, pushes per second per platform (token bucket). Default 1000.
    pub provider_rate_per_sec: f64,
    /// Token bucket depth. Default 1000.
    pub provider_burst: u32,
    /// Attempts per wake on transient errors before it is given up (the next event tries
    /// again). Default 6.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter. Default 500.
    pub retry_base_ms: u64,
    /// Longest retry delay. Default 60,000.
    pub retry_max_ms: u64,
    /// How long push services keep an undelivered wake. Default 3600.
    pub push_ttl_secs: u64,
    /// Live handoffs one push target (platform + token or endpoint) may have, across the
    /// fleet; a newer handoff ends the oldest (`closed`, "replaced"), which never wakes again,
    /// and inherits its hourly budget. Default 1.
    pub max_handoffs_per_target: usize,
}

impl Default for WakeSettings {
    fn default() -> Self {
        WakeSettings {
            coalesce_ms: 250,
            max_coalesce_ms: 60_000,
            max_per_hour: 3,
            max_per_hour_limit: 60,
            provider_rate_per_sec: 1000.0,
            provider_burst: 1000,
            max_attempts: 6,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            push_ttl_secs: 3600,
            max_handoffs_per_target: 1,
        }
    }
}

/// `[push]`: where client-chosen push endpoints (Web Push subscriptions) may point.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushSettings {
    /// Web Push endpoints on addresses that are not globally reachable (loopback, private,
    /// link-local, … — IANA's special-purpose registries), and plain http to a loopback host.
    /// Unset (the default): allowed only while the proxy listens on a loopback address (a
    /// development setup with the simulated gateway); refused on any other.
    pub allow_private_endpoints: Option<bool>,
    /// Hosts Web Push endpoints may be on: `fcm.googleapis.com`, or `*.push.apple.com` for
    /// any name under it. Default: empty, any host (the address rule still applies).
    pub webpush_hosts: Vec<String>,
}

/// `[upstream]`: how the proxy reads origin streams.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    /// TCP connect + response-headers timeout. Default 10,000.
    pub connect_timeout_ms: u64,
    /// A stream silent for this long is considered dead and reconnected (the origin sends a
    /// keep-alive comment every 15 s). Default 60,000.
    pub idle_timeout_ms: u64,
    /// Reconnect delay when the origin sent no `retry:`. Default 1000.
    pub reconnect_ms: u64,
    /// First backoff after a failure; doubles per failure, with jitter. Default 500.
    pub backoff_base_ms: u64,
    /// Longest backoff. Default 30,000.
    pub backoff_max_ms: u64,
    /// Longest backoff after a *refused* connection (the origin is down or restarting; over
    /// `retry:` too, at most `backoff_max_ms`), so watchers are back within about this long
    /// after the origin returns. Default 1000.
    pub refused_backoff_max_ms: u64,
    /// Redirect hops followed, each checked against `allowed_origins`. Default 5.
    pub max_redirects: u32,
    /// Most headers a handoff may pass upstream. Default 16.
    pub max_headers: usize,
    /// Most bytes of header names + values per handoff. Default 8192.
    pub max_header_bytes: usize,
    /// Largest SSE line or event read from an origin, in bytes (1024..=67108864). A larger event
    /// is skipped, never held: handoffs report a gap through its id that wakes the phone, which
    /// reads it from the origin. Default 1,048,576.
    pub max_event_bytes: usize,
    /// Seconds a watcher keeps its upstream connection open after its last handoff left, so a
    /// phone that sleeps again soon (the usual pattern) joins it live instead of opening a new
    /// connection; `0` closes at once. Default 30.
    pub idle_linger_secs: u64,
    /// Most watchers lingering without a handoff at once; past it, a watcher whose last handoff
    /// leaves closes at once. Default 1,000.
    pub max_idle_watchers: usize,
    /// Most recent events each watcher keeps in memory, so a handoff joining behind it catches
    /// up from there instead of over a private connection; `0` keeps none. Default 256.
    pub replay_events: usize,
    /// Most bytes (JSON envelopes) of those events per watcher. Default 131,072.
    pub replay_bytes: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            reconnect_ms: 1000,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
            refused_backoff_max_ms: 1000,
            max_redirects: 5,
            max_headers: 16,
            max_header_bytes: 8192,
            max_event_bytes: 1 << 20,
            idle_linger_secs: 30,
            max_idle_watchers: 1000,
            replay_events: 256,
            replay_bytes: 128 << 10,
        }
    }
}

/// `[fleet]`: how nodes on a shared Redis store divide the handoffs between them (ignored with
/// the `memory` store). See ARCHITECTURE.md, "Fleet".
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSettings {
    /// Key prefix in Redis, so several fleets (or tests) share one Redis. Default `ssepush`.
    pub namespace: String,
    /// This node's name in the fleet. Empty (the default): a random one per start, so a node
    /// that restarts is a new member and never mistakes its old lease for its own.
    pub node_id: String,
    /// Base URL peers use to forward API calls for handoffs this node owns. Empty (the
    /// default): `http://<listen address>` (set it when listening on `0.0.0.0`).
    pub advertise_url: String,
    /// How long a node's lease lasts without renewal, in ms: a dead node's handoffs are taken
    /// over this long after its last renewal. Default 10,000.
    pub lease_ttl_ms: u64,
    /// How often the lease is renewed and the fleet checked (dead nodes, released handoffs,
    /// balance), in ms; at most a third of `lease_ttl_ms`. Default 1000.
    pub tick_ms: u64,
    /// A node holding more than its share (handoffs ÷ live nodes) by more than this many
    /// releases the excess for the others to take (rebalancing after a node joins). Default 16.
    pub rebalance_slack: usize,
    /// AES-256-GCM keys for upstream credentials at rest, as `"<key id>:<base64 of 32
    /// bytes>"`; the first encrypts, every one decrypts (rotation: put the new key first, keep
    /// the old ones until every record was rewritten). Required with a Redis store.
    pub encryption_keys: Vec<String>,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            namespace: "ssepush".into(),
            node_id: String::new(),
            advertise_url: String::new(),
            lease_ttl_ms: 10_000,
            tick_ms: 1000,
            rebalance_slack: 16,
            encryption_keys: Vec::new(),
        }
    }
}

impl std::fmt::Debug for FleetSettings {
    // The keys never reach a log line: only their ids.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSettings")
            .field("namespace", &self.namespace)
            .field("node_id", &self.node_id)
            .field("advertise_url", &self.advertise_url)
            .field("lease_ttl_ms", &self.lease_ttl_ms)
            .field("tick_ms", &self.tick_ms)
            .field("rebalance_slack", &self.rebalance_slack)
            .field(
                "encryption_keys",
                &self
                    .encryption_keys
                    .iter()
                    .map(|k| k.split(':').next().unwrap_or(""))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Settings {
    /// Reads `file` (if any) and overlays `SSEPUSH_PROXY_…` variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        config::load(file, ENV_PREFIX)
    }

    /// Checks what serde cannot: ranges and the allowed-origins syntax.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.store != "memory" {
            if !["redis://", "rediss://", "redis+cluster://"]
                .iter()
                .any(|p| self.store.starts_with(p))
            {
                return bad(format!(
                    "store {:?} is not supported: `memory`, `redis://…` or `redis+cluster://…`",
                    ssepush_origin::service::redact::redact_url(&self.store)
                ));
            }
            crate::store::Sealer::from_settings(&self.fleet.encryption_keys)
                .map_err(ConfigError::Invalid)?;
            let f = &self.fleet;
            if f.lease_ttl_ms < 300 || f.tick_ms == 0 || f.tick_ms * 3 > f.lease_ttl_ms {
                return bad(
                    "fleet.lease_ttl_ms must be ≥ 300 and fleet.tick_ms 1..=lease_ttl_ms/3".into(),
                );
            }
            if f.namespace.is_empty() || f.namespace.contains(['{', '}']) {
                return bad("fleet.namespace must be non-empty, without braces".into());
            }
        }
        if self.buffer_events == 0 || self.buffer_events > 100_000 {
            return bad("buffer_events must be 1..=100000".into());
        }
        if self.default_ttl_secs == 0 || self.default_ttl_secs > self.max_ttl_secs {
            return bad("default_ttl_secs must be 1..=max_ttl_secs".into());
        }
        if self.wake.coalesce_ms > self.wake.max_coalesce_ms {
            return bad("wake.coalesce_ms must be ≤ wake.max_coalesce_ms".into());
        }
        if self.wake.max_per_hour == 0 || self.wake.max_per_hour > self.wake.max_per_hour_limit {
            return bad("wake.max_per_hour must be 1..=wake.max_per_hour_limit".into());
        }
        if self.wake.provider_rate_per_sec.is_nan() || self.wake.provider_rate_per_sec <= 0.0 {
            return bad("wake.provider_rate_per_sec must be > 0".into());
        }
        if self.wake.max_handoffs_per_target == 0 {
            return bad("wake.max_handoffs_per_target must be ≥ 1".into());
        }
        if self.wake.provider_burst == 0 || self.wake.max_attempts == 0 {
            return bad("wake.provider_burst and wake.max_attempts must be ≥ 1".into());
        }
        if !(1024..=64 << 20).contains(&self.upstream.max_event_bytes) {
            return bad("upstream.max_event_bytes must be 1024..=67108864".into());
        }
        if self.upstream.idle_linger_secs > 86_400 || self.upstream.replay_events > 100_000 {
            return bad(
                "upstream.idle_linger_secs must be ≤ 86400 and upstream.replay_events ≤ 100000"
                    .into(),
            );
        }
        if self.header_read_timeout_secs == 0 || self.body_read_timeout_secs == 0 {
            return bad(
                "header_read_timeout_secs and body_read_timeout_secs must be at least 1".into(),
            );
        }
        if self.auth.create_rate_per_sec.is_nan()
            || self.auth.create_rate_per_sec <= 0.0
            || self.auth.create_burst == 0
        {
            return bad("auth.create_rate_per_sec must be > 0 and auth.create_burst ≥ 1".into());
        }
        if self.auth.api_keys.iter().any(|k| k.trim().is_empty()) {
            return bad("auth.api_keys must not contain empty keys".into());
        }
        if self
            .auth
            .jwt_hs256_secret
            .as_ref()
            .is_some_and(|s| s.len() < 32)
        {
            return bad("auth.jwt_hs256_secret must be at least 32 bytes".into());
        }
        crate::allow::OriginAllowList::parse(&self.allowed_origins, self.listen)
            .map_err(ConfigError::Invalid)?;
        for host in &self.push.webpush_hosts {
            crate::push::endpoint::check_host_pattern(host).map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }

    /// Where Web Push wakes may go: `[push]`, with `allow_private_endpoints` unset decided by
    /// the listen address (allowed on loopback only).
    pub fn push_endpoint_policy(&self) -> crate::push::EndpointPolicy {
        crate::push::EndpointPolicy {
            allow_private: self
                .push
                .allow_private_endpoints
                .unwrap_or(self.listen.ip().is_loopback()),
            hosts: self.push.webpush_hosts.clone(),
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// Builds the real providers from the settings' `[apns]`, `[fcm]` and `[webpush]` sections
/// (reads key files, may create the VAPID key: call it once at startup).
pub fn providers_from_settings(
    settings: &Settings,
) -> Result<crate::push::Providers, crate::push::PushError> {
    crate::push::Providers::from_settings(
        settings.apns.as_ref(),
        settings.fcm.as_ref(),
        settings.webpush.as_ref(),
        &settings.push_endpoint_policy(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_env_overrides_nest() {
        Settings::default().validate().unwrap();
        let env = vec![
            (
                "SSEPUSH_PROXY_LISTEN".to_string(),
                "0.0.0.0:9000".to_string(),
            ),
            (
                "SSEPUSH_PROXY_ALLOWED_ORIGINS".to_string(),
                "[\"https://api.example.com\"]".to_string(),
            ),
            (
                "SSEPUSH_PROXY_WAKE__MAX_PER_HOUR".to_string(),
                "2".to_string(),
            ),
        ];
        let s: Settings = config::load_from(None, ENV_PREFIX, env).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.allowed_origins, vec!["https://api.example.com"]);
        assert_eq!(s.wake.max_per_hour, 2);
        s.validate().unwrap();
    }

    #[test]
    fn the_sample_config_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/proxy.toml");
        let s: Settings =
            config::load_from(Some(&path), ENV_PREFIX, Vec::new()).expect("deploy/proxy.toml");
        s.validate().unwrap();
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::to_value(Settings::default()).unwrap()
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let s = Settings {
            allowed_origins: vec!["ftp://x".into()],
            ..Settings::default()
        };
        assert!(s.validate().is_err());
        let s = Settings {
            store: "mysql://:pw@h".into(),
            ..Settings::default()
        };
        let err = s.validate().unwrap_err().to_string();
        assert!(!err.contains("pw"), "{err}");
    }

    #[test]
    fn debug_hides_auth_secrets() {
        let s = Settings {
            auth: AuthSettings {
                api_keys: vec!["key-very-secret".into()],
                jwt_hs256_secret: Some("jwt-very-secret-jwt-very-secret-xx".into()),
                ..AuthSettings::default()
            },
            ..Settings::default()
        };
        let text = format!("{s:?}");
        assert!(!text.contains("very-secret"), "{text}");
    }
}

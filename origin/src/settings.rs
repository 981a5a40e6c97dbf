//! The origin's settings: one type, built from TOML + `SSEPUSH_ORIGIN_…` env by [`Settings::load`],
//! or directly by tests. `deploy/origin.toml` documents every key with its default.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::channel::Pattern;
use crate::service::auth::{BearerAuth, BearerConfig, KeyError, MIN_HS256_SECRET};
use crate::service::config::{self, ConfigError};
use crate::store::{Limits, Retention};
use crate::streams::{StaticStreams, StreamDef};

/// Environment prefix of the origin's settings.
pub const ENV_PREFIX: &str = "SSEPUSH_ORIGIN_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// A second address serving only `/metrics` and `/v1/openapi.json` (then not served on
    /// `listen`), e.g. a private interface for monitoring. Default: none (both on `listen`).
    pub admin_listen: Option<SocketAddr>,
    /// `memory`, `redis://host:port[/db]`, or a Redis Cluster's seed nodes,
    /// `redis+cluster://host:port[,host:port…]`.
    pub store: String,
    /// Key namespace in a shared store; origins with the same namespace serve one stream.
    pub namespace: String,
    /// Seconds between keep-alive comments on idle SSE streams.
    pub keep_alive_secs: u64,
    /// The `retry:` hint (milliseconds) sent to SSE clients on connect and on shutdown.
    pub retry_ms: u64,
    /// Frames a subscriber may have queued before it is cut off as a slow consumer.
    pub subscriber_queue: usize,
    /// Open connections accepted at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Seconds open streams get to end after SIGTERM before the process exits anyway.
    pub shutdown_grace_secs: u64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Seconds a client has to send a request's headers before its connection is closed.
    /// Default: 30.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a whole request body; slower gets 408 and the connection
    /// closes, so slow senders cannot hold every connection slot. Default: 10.
    pub body_read_timeout_secs: u64,
    /// Seconds a publisher's `Idempotency-Key` and its answer are kept: a retry within it gets
    /// the first answer instead of a second copy. Default: 3600.
    pub idempotency_ttl_secs: u64,
    /// Most events in one publish request.
    pub max_batch: usize,
    /// Page origins allowed by CORS (e.g. `https://app.example.com`); `["*"]` for any (the
    /// preflight then echoes the requested headers), empty to send no CORS headers. Methods and
    /// headers are derived (see [`crate::service::cors`]). Default: empty.
    pub cors_allow_origins: Vec<String>,
    pub retention: RetentionSettings,
    /// Static filters: named streams computed at ingest into `streams.<name>` (`[[streams]]`
    /// with `name`, `channels`, optional `filter`). Default: none.
    pub streams: Vec<StreamDef>,
    /// Publisher auth (`[auth]`). Default: nothing configured, so publishing is open on a
    /// loopback listen address and refused on any other.
    pub auth: AuthSettings,
    /// Clients may publish over `GET /v1/ws` (`{"type":"publish"}`), with the upgrade request's
    /// publisher credentials checked as for `POST /v1/events`. Default: false.
    pub ws_publish: bool,
    /// Most subscriptions one WebSocket may hold at once. Default: 32.
    pub ws_max_subscriptions: usize,
    /// Largest WebSocket message (and frame) accepted from a client, in bytes. Default: 65536.
    pub ws_max_message_bytes: usize,
    /// Messages a WebSocket may have queued for sending before it is closed (1013) as a slow
    /// consumer. Default: 4096.
    pub ws_send_queue: usize,
    /// Data sync (`[datasets]`): merge policy (default `reject`) with per-dataset overrides,
    /// changelog length and key bound. See [`crate::datasets::DatasetSettings`].
    pub datasets: crate::datasets::DatasetSettings,
    /// Webhook delivery (`[webhooks]`): timeouts, backoff, disabling, leases, target policy.
    /// See [`crate::webhooks::WebhookSettings`] for each key and its default.
    pub webhooks: crate::webhooks::WebhookSettings,
    /// Outbound TLS (`[tls]`): `extra_ca_path`, a PEM file of CAs trusted besides Mozilla's
    /// roots for `https://` webhook targets. See [`crate::service::tls`].
    pub tls: crate::service::tls::TlsSettings,
}

/// `[auth]`: who may read and who may publish. See [`crate::server::auth`] for how a request is
/// checked and what each credential grants.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Static bearer tokens of publishers: they publish and read every channel. Default: none.
    pub publish_tokens: Vec<String>,
    /// Static bearer tokens of readers: they read every channel. Default: none.
    pub subscribe_tokens: Vec<String>,
    /// Who may read (SSE, WebSocket, poll, latest, dataset reads, webhook registration):
    /// `auto` — open on a loopback listener, a credential needed on any other; `required` — a
    /// credential needed everywhere; `public` — anyone, on any listener. Default: `auto`.
    pub subscribe: ReadAccess,
    /// The cookie a browser's `EventSource`/`WebSocket` may carry a reader's token in (it
    /// grants reads only). Default: `ssepush_token`.
    pub cookie_name: String,
    /// Seconds of clock skew allowed when checking a JWT's `exp` and `nbf`. Default: 30.
    pub jwt_leeway_secs: u64,
    /// Shared secret for HS256 JWTs (at least 32 bytes). Default: none.
    pub jwt_hs256_secret: Option<String>,
    /// EC P-256 public key (PEM, `-----BEGIN PUBLIC KEY-----`) for ES256 JWTs. Default: none.
    pub jwt_es256_public_key: Option<String>,
    /// Required `iss` claim of JWTs, when set. Default: not checked.
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim of JWTs, when set. Default: not checked.
    pub jwt_audience: Option<String>,
    /// Publishing without credentials is allowed: needed to run with no auth on a non-loopback
    /// address (never an open publish endpoint on a network by accident); with credentials
    /// configured, requests without an Authorization header pass too. Default: false.
    pub allow_anonymous_publish: bool,
}

/// `auth.subscribe`: who may read (see [`crate::server::auth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadAccess {
    /// Open on a loopback listener, a credential needed on any other.
    #[default]
    Auto,
    /// A credential needed on every listener.
    Required,
    /// Anyone may read, on any listener: the operator declares the origin public.
    Public,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            publish_tokens: Vec::new(),
            subscribe_tokens: Vec::new(),
            subscribe: ReadAccess::Auto,
            cookie_name: "ssepush_token".into(),
            jwt_leeway_secs: crate::service::auth::DEFAULT_LEEWAY_SECS,
            jwt_hs256_secret: None,
            jwt_es256_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            allow_anonymous_publish: false,
        }
    }
}

impl AuthSettings {
    /// True when any credential (token or JWT key) is configured.
    pub fn is_configured(&self) -> bool {
        self.bearer().is_configured() || !self.subscribe_tokens.is_empty()
    }

    /// `[auth]` as the service layer's credential material (the publisher tokens; the origin's
    /// check adds the reader tokens after them).
    pub fn bearer(&self) -> BearerConfig<'_> {
        BearerConfig {
            tokens: &self.publish_tokens,
            jwt_hs256_secret: self.jwt_hs256_secret.as_deref(),
            jwt_es256_public_key: self.jwt_es256_public_key.as_deref(),
            jwt_issuer: self.jwt_issuer.as_deref(),
            jwt_audience: self.jwt_audience.as_deref(),
            jwt_leeway_secs: self.jwt_leeway_secs,
        }
    }

    /// Parses the key material, so a bad key stops startup.
    ///
    /// # Errors
    /// A message naming the bad `[auth]` key (never its value).
    pub fn validate(&self) -> Result<(), String> {
        let c = &self.cookie_name;
        // RFC 6265 token: visible ASCII without separators.
        if c.is_empty()
            || !c
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        {
            return Err(
                "auth.cookie_name must be a cookie name (visible ASCII, no separators)".into(),
            );
        }
        let tokens: Vec<String> = self
            .publish_tokens
            .iter()
            .chain(&self.subscribe_tokens)
            .cloned()
            .collect();
        let config = BearerConfig {
            tokens: &tokens,
            ..self.bearer()
        };
        BearerAuth::new(&config)
            .map(drop)
            .map_err(|e| Self::key_error(&e))
    }

    /// A [`KeyError`] in the words of the `[auth]` keys.
    pub fn key_error(e: &KeyError) -> String {
        match e {
            KeyError::EmptyToken => {
                "auth.publish_tokens and auth.subscribe_tokens must not contain empty tokens".into()
            }
            KeyError::ShortHs256Secret => {
                format!("auth.jwt_hs256_secret must be at least {MIN_HS256_SECRET} bytes")
            }
            KeyError::BadEs256Key(why) => {
                format!("auth.jwt_es256_public_key is not an EC public key in PEM: {why}")
            }
        }
    }
}

impl std::fmt::Debug for AuthSettings {
    // Secrets never reach a log line, even one that prints the whole settings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field(
                "publish_tokens",
                &format_args!("[{} redacted]", self.publish_tokens.len()),
            )
            .field(
                "subscribe_tokens",
                &format_args!("[{} redacted]", self.subscribe_tokens.len()),
            )
            .field("subscribe", &self.subscribe)
            .field("cookie_name", &self.cookie_name)
            .field("jwt_leeway_secs", &self.jwt_leeway_secs)
            .field(
                "jwt_hs256_secret",
                &self.jwt_hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_es256_public_key", &self.jwt_es256_public_key.is_some())
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("allow_anonymous_publish", &self.allow_anonymous_publish)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Most events kept per channel.
    pub max_events: u64,
    /// Oldest event kept, in seconds; 0 keeps events regardless of age.
    pub max_age_secs: u64,
    /// Most bytes of events kept per channel (an event counts its data as compact JSON, its
    /// channel and type, plus 64); older events go first, and one event larger than this is
    /// refused with 413. On Redis only the 413 applies. Default: 16 MiB.
    pub max_channel_bytes: u64,
    /// Most bytes of events the memory store keeps in all (and in its live feed): past it the
    /// oldest events of any channel go first (readers get a reset); a batch larger than this is
    /// refused with 507. On Redis, set Redis' `maxmemory` (with `noeviction`): a write it
    /// refuses is a 507. Default: 256 MiB.
    pub max_total_bytes: u64,
    /// Per-channel overrides; the first pattern that matches a channel wins.
    pub channels: Vec<ChannelRetention>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRetention {
    pub pattern: String,
    pub max_events: Option<u64>,
    pub max_age_secs: Option<u64>,
    /// This channel's byte budget (else `retention.max_channel_bytes`).
    pub max_bytes: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: None,
            store: "memory".into(),
            namespace: "ssepush".into(),
            keep_alive_secs: 15,
            retry_ms: 3000,
            subscriber_queue: 4096,
            max_connections: 19_000,
            shutdown_grace_secs: 10,
            max_body_bytes: 1 << 20,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 10,
            idempotency_ttl_secs: 3600,
            max_batch: 1000,
            cors_allow_origins: Vec::new(),
            retention: RetentionSettings::default(),
            streams: Vec::new(),
            auth: AuthSettings::default(),
            ws_publish: false,
            ws_max_subscriptions: 32,
            ws_max_message_bytes: 64 * 1024,
            ws_send_queue: 4096,
            datasets: crate::datasets::DatasetSettings::default(),
            webhooks: crate::webhooks::WebhookSettings::default(),
            tls: crate::service::tls::TlsSettings::default(),
        }
    }
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            max_events: 10_000,
            max_age_secs: 24 * 3600,
            max_channel_bytes: crate::store::DEFAULT_CHANNEL_BYTES,
            max_total_bytes: crate::store::DEFAULT_TOTAL_BYTES,
            channels: Vec::new(),
        }
    }
}

impl Settings {
    /// Defaults, overridden by `file` (if given), then by `SSEPUSH_ORIGIN_…` variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let settings: Settings = config::load(file, ENV_PREFIX)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: patterns parse, limits are usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.subscriber_queue == 0 {
            return bad("subscriber_queue must be at least 1".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1".into());
        }
        if self.header_read_timeout_secs == 0 || self.body_read_timeout_secs == 0 {
            return bad(
                "header_read_timeout_secs and body_read_timeout_secs must be at least 1".into(),
            );
        }
        if self.idempotency_ttl_secs == 0 {
            return bad("idempotency_ttl_secs must be at least 1".into());
        }
        if self.max_batch == 0 {
            return bad("max_batch must be at least 1".into());
        }
        if self.ws_max_message_bytes < 1024 {
            // Smaller than a subscribe with a few patterns and a filter: the socket is unusable.
            return bad("ws_max_message_bytes must be at least 1024".into());
        }
        if self.ws_send_queue == 0 {
            return bad("ws_send_queue must be at least 1".into());
        }
        if self.retention.max_channel_bytes < 1024 || self.retention.max_total_bytes < 1024 {
            return bad(
                "retention.max_channel_bytes and retention.max_total_bytes must be at least 1024"
                    .into(),
            );
        }
        if self.retention.max_events == 0 {
            return bad("retention.max_events must be at least 1".into());
        }
        if self.namespace.is_empty() || self.namespace.contains(['{', '}', ' ']) {
            return bad("namespace must be non-empty, without braces or spaces".into());
        }
        self.static_streams()?;
        self.datasets.validate().map_err(ConfigError::Invalid)?;
        self.auth.validate().map_err(ConfigError::Invalid)?;
        self.webhooks.validate().map_err(ConfigError::Invalid)?;
        self.retention().map(|_| ())
    }

    /// The compiled `[[streams]]`; a bad name, pattern or filter (with its position) is an error.
    pub fn static_streams(&self) -> Result<StaticStreams, ConfigError> {
        StaticStreams::compile(&self.streams).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The retention policy the event log applies.
    pub fn retention(&self) -> Result<Retention, ConfigError> {
        let age = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
        let default = Limits {
            max_events: self.retention.max_events,
            max_age: age(self.retention.max_age_secs),
            max_bytes: self.retention.max_channel_bytes,
        };
        let overrides = self
            .retention
            .channels
            .iter()
            .map(|c| {
                let pattern = Pattern::parse(&c.pattern).map_err(|e| {
                    ConfigError::Invalid(format!("retention.channels pattern: {e}"))
                })?;
                Ok((
                    pattern,
                    Limits {
                        max_events: c.max_events.unwrap_or(default.max_events).max(1),
                        max_age: c.max_age_secs.map_or(default.max_age, age),
                        max_bytes: c.max_bytes.unwrap_or(default.max_bytes).max(1),
                    },
                ))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Retention {
            default,
            overrides,
            max_total_bytes: self.retention.max_total_bytes,
        })
    }

    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_secs.max(1))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_overrides_resolve_by_first_match() {
        let mut s = Settings::default();
        s.validate().unwrap();
        s.retention.channels = vec![
            ChannelRetention {
                pattern: "chat.>".into(),
                max_events: Some(5),
                max_age_secs: Some(0),
                max_bytes: None,
            },
            ChannelRetention {
                pattern: ">".into(),
                max_events: Some(7),
                max_age_secs: None,
                max_bytes: None,
            },
        ];
        let r = s.retention().unwrap();
        assert_eq!(r.for_channel("chat.a").max_events, 5);
        assert_eq!(r.for_channel("chat.a").max_age, None);
        assert_eq!(r.for_channel("x").max_events, 7);
        assert_eq!(r.for_channel("x").max_age, Some(Duration::from_secs(86400)));
    }

    #[test]
    fn bad_patterns_in_config_are_reported() {
        let mut s = Settings::default();
        s.retention.channels.push(ChannelRetention {
            pattern: "a.>.b".into(),
            max_events: None,
            max_age_secs: None,
            max_bytes: None,
        });
        assert!(s.validate().unwrap_err().to_string().contains("pattern"));
    }
}

//! The origin's settings: one type, built from TOML + `SSEPUSH_ORIGIN_…` env by [`Settings::load`],
//! or directly by tests. `deploy/origin.toml` documents every key with its default.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::channel::Pattern;
use crate::config::{self, ConfigError};
use crate::store::{Limits, Retention};

/// Environment prefix of the origin's settings.
pub const ENV_PREFIX: &str = "SSEPUSH_ORIGIN_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `memory` or `redis://host:port[/db]`.
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
    /// Most events in one publish request.
    pub max_batch: usize,
    /// Origins allowed by CORS; `["*"]` for any, empty to send no CORS headers.
    pub cors_allow_origins: Vec<String>,
    pub retention: RetentionSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Most events kept per channel.
    pub max_events: u64,
    /// Oldest event kept, in seconds; 0 keeps events regardless of age.
    pub max_age_secs: u64,
    /// Per-channel overrides; the first pattern that matches a channel wins.
    pub channels: Vec<ChannelRetention>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRetention {
    pub pattern: String,
    pub max_events: Option<u64>,
    pub max_age_secs: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: "memory".into(),
            namespace: "ssepush".into(),
            keep_alive_secs: 15,
            retry_ms: 3000,
            subscriber_queue: 4096,
            max_connections: 19_000,
            shutdown_grace_secs: 10,
            max_body_bytes: 1 << 20,
            max_batch: 1000,
            cors_allow_origins: Vec::new(),
            retention: RetentionSettings::default(),
        }
    }
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            max_events: 10_000,
            max_age_secs: 24 * 3600,
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
        if self.max_batch == 0 {
            return bad("max_batch must be at least 1".into());
        }
        if self.retention.max_events == 0 {
            return bad("retention.max_events must be at least 1".into());
        }
        if self.namespace.is_empty() || self.namespace.contains(['{', '}', ' ']) {
            return bad("namespace must be non-empty, without braces or spaces".into());
        }
        self.retention().map(|_| ())
    }

    /// The retention policy the event log applies.
    pub fn retention(&self) -> Result<Retention, ConfigError> {
        let age = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
        let default = Limits {
            max_events: self.retention.max_events,
            max_age: age(self.retention.max_age_secs),
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
                    },
                ))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Retention { default, overrides })
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
            },
            ChannelRetention {
                pattern: ">".into(),
                max_events: Some(7),
                max_age_secs: None,
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
        });
        assert!(s.validate().unwrap_err().to_string().contains("pattern"));
    }
}

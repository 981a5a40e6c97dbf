//! Who may create handoffs: the app backend's API key or HS256 JWT as
//! `Authorization: Bearer …` (see `settings` for the policy). The service layer's bearer check
//! (constant-time key comparison, JWT validation) with the proxy's own messages. Keys and tokens
//! are never logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use ssepush_origin::service::auth::{BearerConfig, Denied, Gate, KeyError, Refusal, Verified};
use ssepush_origin::service::error::ApiError;

use crate::wake::TokenBucket;

/// Creation buckets kept at most (one per API key or JWT subject); past it, full ones go.
const MAX_BUCKETS: usize = 100_000;

/// Who may create handoffs (see `settings` for the policy), and how fast each caller may.
pub struct HandoffAuth {
    gate: Gate,
    rate: f64,
    burst: u32,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl HandoffAuth {
    /// The policy of `[auth]` for a proxy listening on `bound`; an error names the bad key.
    pub fn new(
        s: &crate::settings::AuthSettings,
        bound: std::net::SocketAddr,
    ) -> Result<Self, String> {
        let config = BearerConfig {
            tokens: &s.api_keys,
            jwt_hs256_secret: s.jwt_hs256_secret.as_deref(),
            jwt_es256_public_key: None,
            jwt_issuer: s.jwt_issuer.as_deref(),
            jwt_audience: s.jwt_audience.as_deref(),
            jwt_leeway_secs: s.jwt_leeway_secs,
        };
        let gate = Gate::new(&config, s.allow_anonymous, bound).map_err(|e| match e {
            KeyError::EmptyToken => "auth.api_keys must not contain empty tokens".to_owned(),
            KeyError::ShortHs256Secret => format!(
                "auth.jwt_hs256_secret must be at least {} bytes",
                ssepush_origin::service::auth::MIN_HS256_SECRET
            ),
            other => other.to_string(),
        })?;
        Ok(HandoffAuth {
            gate,
            rate: s.create_rate_per_sec,
            burst: s.create_burst,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a creation from `who`'s bucket, or says how long until one is there.
    fn admit(&self, who: String, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&who) {
            // A bucket refilled to its depth holds nothing worth keeping.
            buckets.retain(|_, b| b.clone().try_take(now).is_err());
        }
        buckets
            .entry(who)
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .try_take(now)
    }

    /// [`check`](Self::check), then the caller's creation rate limit: 429 with `Retry-After`
    /// (whole seconds) when its API key or JWT subject is over `auth.create_rate_per_sec`.
    pub fn check_create(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let who = match self.check(headers)? {
            None => return Ok(()),
            Some(Verified::Token(i)) => format!("key:{i}"),
            Some(Verified::Jwt(claims)) => match claims.get("sub").and_then(|s| s.as_str()) {
                Some(sub) => format!("sub:{sub}"),
                None => "jwt".to_owned(),
            },
        };
        self.admit(who, Instant::now()).map_err(|wait| {
            metrics::counter!("ssepush_proxy_creations_rate_limited_total").increment(1);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many handoffs created with this credential; retry in {secs} s"),
            );
            e.details = Some(serde_json::json!({"retryAfterSecs": secs}));
            e
        })
    }

    /// Whether the request's `Authorization` may create a handoff: 403 when creation is
    /// disabled, 401 when the credential is missing or wrong.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<Verified>, ApiError> {
        let denied = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        self.gate.check(headers).map_err(|refusal| match refusal {
            Refusal::Disabled => ApiError::new(
                StatusCode::FORBIDDEN,
                "handoffs_disabled",
                "creating handoffs is disabled: this proxy listens on a non-loopback address \
                 and has no [auth] configured; set auth.api_keys or auth.jwt_hs256_secret, \
                 or auth.allow_anonymous = true",
            ),
            Refusal::Denied(Denied::Missing) => {
                denied("creating a handoff requires 'Authorization: Bearer <api key or JWT>'")
            }
            Refusal::Denied(Denied::Malformed) => {
                denied("the Authorization header must be 'Bearer <token>'")
            }
            Refusal::Denied(reason) => {
                tracing::debug!(?reason, "handoff creation refused");
                metrics::counter!("ssepush_proxy_auth_denied_total").increment(1);
                denied("the API key or JWT is not valid")
            }
        })
    }
}

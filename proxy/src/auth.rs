//! Who may create handoffs: the app backend's API key or HS256 JWT as
//! `Authorization: Bearer …` (see `settings` for the policy). The service layer's bearer check
//! (constant-time key comparison, JWT validation) with the proxy's own messages. Keys and tokens
//! are never logged.

use axum::http::{HeaderMap, StatusCode};
use ssepush_origin::service::auth::{BearerConfig, Denied, Gate, KeyError, Refusal};
use ssepush_origin::service::error::ApiError;

/// Who may create handoffs (see `settings` for the policy).
pub struct HandoffAuth {
    gate: Gate,
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
        Ok(HandoffAuth { gate })
    }

    /// Whether the request's `Authorization` may create a handoff: 403 when creation is
    /// disabled, 401 when the credential is missing or wrong.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let denied = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        self.gate
            .check(headers)
            .map(drop)
            .map_err(|refusal| match refusal {
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

//! Who may create handoffs: the app backend's API key or HS256 JWT as
//! `Authorization: Bearer …` (see `settings` for the policy). Reuses the origin's credential
//! checks (constant-time key comparison, JWT validation) with the proxy's own messages. Keys
//! and tokens are never logged.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use ssepush_origin::server::auth::{PublishPolicy, PublisherAuth};
use ssepush_origin::server::error::ApiError;

/// Who may create handoffs (see `settings` for the policy). Reuses the origin's credential
/// checks (constant-time key comparison, JWT validation) with the proxy's own messages.
pub struct HandoffAuth {
    inner: PublisherAuth,
}

impl HandoffAuth {
    pub fn new(
        s: &crate::settings::AuthSettings,
        bound: std::net::SocketAddr,
    ) -> Result<Self, String> {
        let origin = ssepush_origin::settings::AuthSettings {
            publish_tokens: s.api_keys.clone(),
            jwt_hs256_secret: s.jwt_hs256_secret.clone(),
            jwt_es256_public_key: None,
            jwt_issuer: s.jwt_issuer.clone(),
            jwt_audience: s.jwt_audience.clone(),
            allow_anonymous_publish: s.allow_anonymous,
        };
        let inner = PublisherAuth::new(&origin, bound)
            .map_err(|e| e.replace("auth.publish_tokens", "auth.api_keys"))?;
        Ok(HandoffAuth { inner })
    }

    /// Whether the request's `Authorization` may create a handoff.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let anonymous = match self.inner.policy() {
            PublishPolicy::Open => return Ok(()),
            PublishPolicy::Refused => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "handoffs_disabled",
                    "creating handoffs is disabled: this proxy listens on a non-loopback address \
                     and has no [auth] configured; set auth.api_keys or auth.jwt_hs256_secret, \
                     or auth.allow_anonymous = true",
                ));
            }
            PublishPolicy::Checked { anonymous } => anonymous,
        };
        let denied = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        match headers.get(header::AUTHORIZATION) {
            None if anonymous => Ok(()),
            None => Err(denied(
                "creating a handoff requires 'Authorization: Bearer <api key or JWT>'",
            )),
            Some(v) => {
                let token = bearer(v)
                    .ok_or_else(|| denied("the Authorization header must be 'Bearer <token>'"))?;
                self.inner.verify(token).map_err(|reason| {
                    tracing::debug!(?reason, "handoff creation refused");
                    metrics::counter!("ssepush_proxy_auth_denied_total").increment(1);
                    denied("the API key or JWT is not valid")
                })
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer(v: &HeaderValue) -> Option<&str> {
    let v = v.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer(&v("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&v("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&v("Basic abc")), None);
        assert_eq!(bearer(&v("Bearer ")), None);
    }
}

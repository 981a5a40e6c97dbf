//! Publisher auth: who may write events, on the service layer's bearer check
//! ([`crate::service::auth`]).
//!
//! Credentials come as `Authorization: Bearer <token>`, where the token is either one of the
//! static `auth.publish_tokens` or a JWT signed with HS256 (`auth.jwt_hs256_secret`) or ES256
//! (`auth.jwt_es256_public_key`, PEM), with `exp` required and `iss`/`aud` checked when
//! configured. With no credentials configured, publishing is open **only when the origin listens
//! on a loopback address**; elsewhere it is refused (403) unless the operator says
//! `auth.allow_anonymous_publish = true` on purpose (e.g. behind a gateway that authenticates).
//!
//! Every transport that writes (HTTP publish, WebSocket publish, dataset writes, webhook
//! management) calls [`PublisherAuth::check`] with the request's headers. Tokens never reach the
//! logs: failures are logged by kind only.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode};

use crate::service::auth::{Denied, Gate, Policy, Refusal};
use crate::service::error::ApiError;
use crate::settings::AuthSettings;

/// The origin's publisher check, built once at startup from `[auth]`.
#[derive(Debug)]
pub struct PublisherAuth {
    gate: Gate,
}

/// What a refused publisher is told.
fn denied_message(d: Denied) -> &'static str {
    match d {
        Denied::Missing => "publishing requires 'Authorization: Bearer <token>'",
        Denied::Malformed => "the Authorization header must be 'Bearer <token>'",
        Denied::Invalid => "the bearer token is not valid",
        Denied::Expired => "the bearer token has expired",
        Denied::WrongAudience => "the bearer token is not meant for this audience",
        Denied::WrongIssuer => "the bearer token is not from an accepted issuer",
    }
}

impl PublisherAuth {
    /// Parses keys and builds the validators for an origin bound to `bound`.
    ///
    /// # Errors
    /// A message naming the bad `[auth]` key (never its value).
    pub fn new(auth: &AuthSettings, bound: SocketAddr) -> Result<Self, String> {
        let gate = Gate::new(&auth.bearer(), auth.allow_anonymous_publish, bound)
            .map_err(|e| AuthSettings::key_error(&e))?;
        Ok(PublisherAuth { gate })
    }

    pub fn policy(&self) -> Policy {
        self.gate.policy()
    }

    /// Checks the `Authorization` header of a publish request: 401 (with
    /// `WWW-Authenticate: Bearer`) for a missing or bad credential, 403 when publishing is off.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.gate.check(headers).map_err(|refusal| match refusal {
            Refusal::Disabled => ApiError::new(
                StatusCode::FORBIDDEN,
                "publish_disabled",
                "publishing is disabled: this origin listens on a non-loopback address and has \
                 no [auth] configured; set auth.publish_tokens or a JWT key, or \
                 auth.allow_anonymous_publish = true",
            ),
            Refusal::Denied(denied) => {
                tracing::debug!(reason = ?denied, "publish refused");
                metrics::counter!("ssepush_origin_publish_denied_total").increment(1);
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    denied_message(denied),
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn refusals_become_the_origins_errors() {
        let a = PublisherAuth::new(
            &AuthSettings {
                publish_tokens: vec!["alpha".into()],
                ..AuthSettings::default()
            },
            addr("0.0.0.0:1"),
        )
        .unwrap();
        assert!(a.check(&headers(Some("Bearer alpha"))).is_ok());
        for bad in [None, Some("Bearer alph"), Some("Basic alpha")] {
            let e = a.check(&headers(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{bad:?}");
            assert_eq!(e.code, "unauthorized");
        }
        let off = PublisherAuth::new(&AuthSettings::default(), addr("0.0.0.0:1")).unwrap();
        let e = off.check(&headers(Some("Bearer x"))).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.code, "publish_disabled");
    }

    #[test]
    fn bad_settings_name_the_key() {
        let short = AuthSettings {
            jwt_hs256_secret: Some("short".into()),
            ..AuthSettings::default()
        };
        let err = PublisherAuth::new(&short, addr("127.0.0.1:1")).unwrap_err();
        assert!(err.contains("auth.jwt_hs256_secret"), "{err}");
        let pem = AuthSettings {
            jwt_es256_public_key: Some("not a pem".into()),
            ..AuthSettings::default()
        };
        let err = PublisherAuth::new(&pem, addr("127.0.0.1:1")).unwrap_err();
        assert!(err.contains("jwt_es256_public_key"), "{err}");
        let empty = AuthSettings {
            publish_tokens: vec![" ".into()],
            ..AuthSettings::default()
        };
        let err = PublisherAuth::new(&empty, addr("127.0.0.1:1")).unwrap_err();
        assert!(err.contains("auth.publish_tokens"), "{err}");
    }
}

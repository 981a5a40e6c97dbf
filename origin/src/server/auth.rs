//! Publisher auth: who may write events.
//!
//! Credentials come as `Authorization: Bearer <token>`, where the token is either one of the
//! static `auth.publish_tokens` (compared in constant time) or a JWT signed with HS256
//! (`auth.jwt_hs256_secret`) or ES256 (`auth.jwt_es256_public_key`, PEM), with `exp` required
//! and `iss`/`aud` checked when configured.
//!
//! With no credentials configured, publishing is open **only when the origin listens on a
//! loopback address**: a development origin on `127.0.0.1` just works, but an origin reachable
//! from a network with no auth would let anyone inject events into every subscriber's stream, so
//! there it is refused (403) unless the operator says `auth.allow_anonymous_publish = true` on
//! purpose (e.g. behind a gateway that authenticates). The decision is [`PublishPolicy::decide`],
//! a plain function of the settings and the bound address.
//!
//! Every transport that writes (HTTP publish, WebSocket publish, dataset writes) calls
//! [`authorize_publisher`] with the request's headers. Tokens never reach the logs: failures are
//! logged by kind only.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::settings::AuthSettings;

/// Shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as long as the hash.
pub const MIN_HS256_SECRET: usize = 32;

/// What a publish request needs, decided once at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishPolicy {
    /// Anyone may publish; a presented token is ignored.
    Open,
    /// No auth is configured and the origin is reachable from a network: publishing is off.
    Refused,
    /// A valid credential is required (`anonymous`: requests without one are let through).
    Checked { anonymous: bool },
}

impl PublishPolicy {
    /// The policy for `auth` on an origin bound to `bound`.
    pub fn decide(auth: &AuthSettings, bound: SocketAddr) -> PublishPolicy {
        if auth.is_configured() {
            PublishPolicy::Checked {
                anonymous: auth.allow_anonymous_publish,
            }
        } else if auth.allow_anonymous_publish || bound.ip().is_loopback() {
            PublishPolicy::Open
        } else {
            PublishPolicy::Refused
        }
    }
}

/// Checks publisher credentials. Built once at startup from the settings.
pub struct PublisherAuth {
    policy: PublishPolicy,
    tokens: Vec<Vec<u8>>,
    hs256: Option<(DecodingKey, Validation)>,
    es256: Option<(DecodingKey, Validation)>,
}

impl std::fmt::Debug for PublisherAuth {
    // Keys and tokens stay out of any debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherAuth")
            .field("policy", &self.policy)
            .field("tokens", &self.tokens.len())
            .field("hs256", &self.hs256.is_some())
            .field("es256", &self.es256.is_some())
            .finish()
    }
}

/// Why a credential was refused; logged (never the token itself) and turned into a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Malformed,
    Invalid,
    Expired,
    WrongAudience,
    WrongIssuer,
}

impl Denied {
    fn message(self) -> &'static str {
        match self {
            Denied::Missing => "publishing requires 'Authorization: Bearer <token>'",
            Denied::Malformed => "the Authorization header must be 'Bearer <token>'",
            Denied::Invalid => "the bearer token is not valid",
            Denied::Expired => "the bearer token has expired",
            Denied::WrongAudience => "the bearer token is not meant for this audience",
            Denied::WrongIssuer => "the bearer token is not from an accepted issuer",
        }
    }
}

#[derive(serde::Deserialize)]
struct Claims {}

impl PublisherAuth {
    /// Parses keys and builds the validators; errors name the bad setting (never its value).
    pub fn new(auth: &AuthSettings, bound: SocketAddr) -> Result<Self, String> {
        if auth.publish_tokens.iter().any(|t| t.trim().is_empty()) {
            return Err("auth.publish_tokens must not contain empty tokens".into());
        }
        let validation = |alg| {
            let mut v = Validation::new(alg);
            match &auth.jwt_audience {
                Some(aud) => v.set_audience(&[aud]),
                // Without a configured audience, a token's own `aud` is not ours to judge.
                None => v.validate_aud = false,
            }
            if let Some(iss) = &auth.jwt_issuer {
                v.set_issuer(&[iss]);
            }
            v
        };
        let hs256 = match &auth.jwt_hs256_secret {
            None => None,
            Some(s) if s.len() < MIN_HS256_SECRET => {
                return Err(format!(
                    "auth.jwt_hs256_secret must be at least {MIN_HS256_SECRET} bytes"
                ));
            }
            Some(s) => Some((
                DecodingKey::from_secret(s.as_bytes()),
                validation(Algorithm::HS256),
            )),
        };
        let es256 = match &auth.jwt_es256_public_key {
            None => None,
            Some(pem) => Some((
                DecodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| {
                    format!("auth.jwt_es256_public_key is not an EC public key in PEM: {e}")
                })?,
                validation(Algorithm::ES256),
            )),
        };
        Ok(PublisherAuth {
            policy: PublishPolicy::decide(auth, bound),
            tokens: auth
                .publish_tokens
                .iter()
                .map(|t| t.as_bytes().to_vec())
                .collect(),
            hs256,
            es256,
        })
    }

    pub fn policy(&self) -> PublishPolicy {
        self.policy
    }

    /// Checks the `Authorization` header of a publish request.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let anonymous = match self.policy {
            PublishPolicy::Open => return Ok(()),
            PublishPolicy::Refused => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "publish_disabled",
                    "publishing is disabled: this origin listens on a non-loopback address and \
                     has no [auth] configured; set auth.publish_tokens or a JWT key, or \
                     auth.allow_anonymous_publish = true",
                ));
            }
            PublishPolicy::Checked { anonymous } => anonymous,
        };
        let result = match headers.get(header::AUTHORIZATION) {
            None if anonymous => return Ok(()),
            None => Err(Denied::Missing),
            Some(value) => match bearer(value.as_bytes()) {
                Some(token) => self.verify(token),
                None => Err(Denied::Malformed),
            },
        };
        result.map_err(|denied| {
            tracing::debug!(reason = ?denied, "publish refused");
            metrics::counter!("ssepush_origin_publish_denied_total").increment(1);
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", denied.message())
        })
    }

    /// Verifies one bearer token against the static tokens, then the JWT keys.
    pub fn verify(&self, token: &str) -> Result<(), Denied> {
        // Every configured token is compared, in constant time each, so timing reveals neither
        // which one matched nor how much of a guess was right (only lengths differ).
        let mut hit = subtle::Choice::from(0u8);
        for t in &self.tokens {
            hit |= t.as_slice().ct_eq(token.as_bytes());
        }
        if bool::from(hit) {
            return Ok(());
        }
        if token.bytes().filter(|&b| b == b'.').count() != 2 {
            return Err(Denied::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Denied::Invalid)?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::ES256 => self.es256.as_ref(),
            _ => None,
        };
        let (key, validation) = key.ok_or(Denied::Invalid)?;
        jsonwebtoken::decode::<Claims>(token, key, validation)
            .map(|_| ())
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => Denied::Expired,
                    ErrorKind::InvalidAudience => Denied::WrongAudience,
                    ErrorKind::InvalidIssuer => Denied::WrongIssuer,
                    _ => Denied::Invalid,
                }
            })
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The check every publishing transport runs before it reads the body: 401 (with
/// `WWW-Authenticate: Bearer`) for a missing or bad credential, 403 when publishing is off.
pub fn authorize_publisher(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    state.auth.check(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn settings() -> AuthSettings {
        AuthSettings::default()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn open_only_on_loopback_without_config() {
        let none = settings();
        assert_eq!(
            PublishPolicy::decide(&none, addr("127.0.0.1:8080")),
            PublishPolicy::Open
        );
        assert_eq!(
            PublishPolicy::decide(&none, addr("[::1]:8080")),
            PublishPolicy::Open
        );
        assert_eq!(
            PublishPolicy::decide(&none, addr("0.0.0.0:8080")),
            PublishPolicy::Refused
        );
        assert_eq!(
            PublishPolicy::decide(&none, addr("10.1.2.3:8080")),
            PublishPolicy::Refused
        );
        let anon = AuthSettings {
            allow_anonymous_publish: true,
            ..settings()
        };
        assert_eq!(
            PublishPolicy::decide(&anon, addr("0.0.0.0:8080")),
            PublishPolicy::Open
        );
        let tokens = AuthSettings {
            publish_tokens: vec!["t".into()],
            ..settings()
        };
        assert_eq!(
            PublishPolicy::decide(&tokens, addr("127.0.0.1:1")),
            PublishPolicy::Checked { anonymous: false }
        );
    }

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn static_tokens_and_header_shapes() {
        let a = PublisherAuth::new(
            &AuthSettings {
                publish_tokens: vec!["alpha".into(), "beta-token".into()],
                ..settings()
            },
            addr("0.0.0.0:1"),
        )
        .unwrap();
        assert!(a.check(&headers(Some("Bearer alpha"))).is_ok());
        assert!(a.check(&headers(Some("bearer beta-token"))).is_ok());
        for bad in [
            None,
            Some("Bearer alph"),
            Some("Basic alpha"),
            Some("alpha"),
        ] {
            let e = a.check(&headers(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        }
    }

    #[test]
    fn refused_policy_is_forbidden_whatever_the_header() {
        let a = PublisherAuth::new(&settings(), addr("0.0.0.0:1")).unwrap();
        let e = a.check(&headers(Some("Bearer x"))).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.code, "publish_disabled");
    }

    #[test]
    fn hs256_jwts_are_checked_for_expiry_audience_and_issuer() {
        let a = PublisherAuth::new(
            &AuthSettings {
                jwt_hs256_secret: Some(SECRET.into()),
                jwt_audience: Some("ssepush".into()),
                jwt_issuer: Some("backend".into()),
                ..settings()
            },
            addr("127.0.0.1:1"),
        )
        .unwrap();
        let now = crate::store::now_ms() / 1000;
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        };
        let good = serde_json::json!({"exp": now + 600, "aud": "ssepush", "iss": "backend"});
        assert_eq!(a.verify(&sign(good)), Ok(()));
        let expired = serde_json::json!({"exp": now - 3600, "aud": "ssepush", "iss": "backend"});
        assert_eq!(a.verify(&sign(expired)), Err(Denied::Expired));
        let aud = serde_json::json!({"exp": now + 600, "aud": "other", "iss": "backend"});
        assert_eq!(a.verify(&sign(aud)), Err(Denied::WrongAudience));
        let iss = serde_json::json!({"exp": now + 600, "aud": "ssepush", "iss": "mallory"});
        assert_eq!(a.verify(&sign(iss)), Err(Denied::WrongIssuer));
        let no_exp = serde_json::json!({"aud": "ssepush", "iss": "backend"});
        assert_eq!(a.verify(&sign(no_exp)), Err(Denied::Invalid));
        assert_eq!(a.verify("a.b.c"), Err(Denied::Invalid));
    }

    #[test]
    fn bad_settings_are_startup_errors() {
        let short = AuthSettings {
            jwt_hs256_secret: Some("short".into()),
            ..settings()
        };
        assert!(PublisherAuth::new(&short, addr("127.0.0.1:1")).is_err());
        let pem = AuthSettings {
            jwt_es256_public_key: Some("not a pem".into()),
            ..settings()
        };
        let err = PublisherAuth::new(&pem, addr("127.0.0.1:1")).unwrap_err();
        assert!(err.contains("jwt_es256_public_key"), "{err}");
        let empty = AuthSettings {
            publish_tokens: vec![" ".into()],
            ..settings()
        };
        assert!(PublisherAuth::new(&empty, addr("127.0.0.1:1")).is_err());
    }
}

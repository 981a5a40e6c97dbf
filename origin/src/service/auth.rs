//! Bearer credentials (RFC 6750) for every server of the product: static tokens and JWTs.
//!
//! A request presents `Authorization: Bearer <token>`, where the token is either one of the
//! configured static tokens (compared in constant time) or a JWT (RFC 7519) signed with HS256
//! (a shared secret of at least [`MIN_HS256_SECRET`] bytes) or ES256 (an EC P-256 public key in
//! PEM), validated by the book (RFC 7519, RFC 7515):
//!
//! * `exp` is required; `nbf`, when present, must have passed; both with a configurable leeway
//!   ([`BearerConfig::jwt_leeway_secs`], default [`DEFAULT_LEEWAY_SECS`]);
//! * with an issuer or audience configured, `iss` or `aud` is *required* and must match (a token
//!   without the claim is refused, not waved through);
//! * a header with `crit` is refused: this verifier understands no JWS extension, and RFC 7515
//!   §4.1.11 says a recipient that does not understand a critical extension must reject.
//!
//! A verified credential comes back as [`Verified`] (which static token, or the JWT's claims),
//! so a server can read what the token grants.
//!
//! With no credentials configured, a server is open **only on a loopback address**: a
//! development server on `127.0.0.1` just works, but one reachable from a network with no
//! credentials is refused unless the operator allows anonymous access on purpose (e.g. behind a
//! gateway that authenticates). [`Policy::decide`] is that rule, a plain function of the
//! configuration and the bound address.
//!
//! Each server keeps its own settings keys and its own messages: it builds a [`Gate`] from a
//! [`BearerConfig`], and turns a [`Refusal`] into its API error. Tokens never reach a log or a
//! `Debug` output; refusals carry only their kind ([`Denied`]).

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use subtle::ConstantTimeEq;

/// Shortest HS256 secret accepted, in bytes: RFC 7518 §3.2 asks for a key at least as long as
/// the hash.
pub const MIN_HS256_SECRET: usize = 32;

/// Default clock-skew allowance for `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// The credential material of one server, whatever its settings call the keys.
#[derive(Clone, Copy)]
pub struct BearerConfig<'a> {
    /// Static bearer tokens accepted as they are.
    pub tokens: &'a [String],
    /// Shared secret for HS256 JWTs (at least [`MIN_HS256_SECRET`] bytes).
    pub jwt_hs256_secret: Option<&'a str>,
    /// EC P-256 public key (PEM, `-----BEGIN PUBLIC KEY-----`) for ES256 JWTs.
    pub jwt_es256_public_key: Option<&'a str>,
    /// Required `iss` claim of JWTs, when set.
    pub jwt_issuer: Option<&'a str>,
    /// Required `aud` claim of JWTs, when set.
    pub jwt_audience: Option<&'a str>,
    /// Seconds of clock skew allowed when checking `exp` and `nbf`.
    pub jwt_leeway_secs: u64,
}

impl Default for BearerConfig<'_> {
    fn default() -> Self {
        BearerConfig {
            tokens: &[],
            jwt_hs256_secret: None,
            jwt_es256_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

impl BearerConfig<'_> {
    /// True when any credential (token or JWT key) is configured.
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty()
            || self.jwt_hs256_secret.is_some()
            || self.jwt_es256_public_key.is_some()
    }
}

/// Which part of a [`BearerConfig`] cannot be used; the server's settings name the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a static token is empty")]
    EmptyToken,
    #[error("the HS256 secret must be at least {MIN_HS256_SECRET} bytes")]
    ShortHs256Secret,
    /// The key did not parse; the parser's reason (never the key).
    #[error("the ES256 key is not an EC public key in PEM: {0}")]
    BadEs256Key(String),
}

/// What a request needs, decided once at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Anyone may pass; a presented token is ignored.
    Open,
    /// Nothing is configured and the server is reachable from a network: the guarded routes
    /// are off.
    Refused,
    /// A valid credential is required (`anonymous`: requests without one are let through).
    Checked { anonymous: bool },
}

impl Policy {
    /// The policy for a server bound to `bound` with credentials `configured` (see
    /// [`BearerConfig::is_configured`]) and `allow_anonymous` set by its operator.
    pub fn decide(configured: bool, allow_anonymous: bool, bound: SocketAddr) -> Policy {
        if configured {
            Policy::Checked {
                anonymous: allow_anonymous,
            }
        } else if allow_anonymous || bound.ip().is_loopback() {
            Policy::Open
        } else {
            Policy::Refused
        }
    }
}

/// Why a credential was refused; logged by kind (never the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization` header where one is required.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    Malformed,
    /// Neither a static token nor a JWT these keys verify.
    Invalid,
    /// A JWT whose `exp` has passed.
    Expired,
    /// A JWT whose `aud` is not the configured audience.
    WrongAudience,
    /// A JWT whose `iss` is not the configured issuer.
    WrongIssuer,
    /// A JWT without a claim the configuration requires (`exp`, or `aud`/`iss` when configured).
    MissingClaim,
    /// A JWT whose `nbf` is still in the future.
    NotYetValid,
    /// A JWT whose header lists `crit` extensions (none is understood here).
    UnknownCritical,
}

impl Denied {
    /// A sentence for the client: what is wrong with its credential (never the credential).
    pub fn message(self) -> &'static str {
        match self {
            Denied::Missing => "this request requires 'Authorization: Bearer <token>'",
            Denied::Malformed => "the Authorization header must be 'Bearer <token>'",
            Denied::Invalid => "the bearer token is not valid",
            Denied::Expired => "the bearer token has expired",
            Denied::WrongAudience => "the bearer token is not meant for this audience",
            Denied::WrongIssuer => "the bearer token is not from an accepted issuer",
            Denied::MissingClaim => {
                "the bearer token lacks a required claim (exp, and aud/iss where configured)"
            }
            Denied::NotYetValid => "the bearer token is not valid yet (nbf is in the future)",
            Denied::UnknownCritical => {
                "the bearer token's header lists critical extensions (crit) this server does not understand"
            }
        }
    }
}

/// A credential that passed [`BearerAuth::verify`].
#[derive(Clone, PartialEq)]
pub enum Verified {
    /// The static token at this index of [`BearerConfig::tokens`].
    Token(usize),
    /// A JWT, with its claims (signature, time and configured claims already checked).
    Jwt(serde_json::Map<String, serde_json::Value>),
}

impl std::fmt::Debug for Verified {
    // Claims can carry personal data; a debug line names only the kind.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verified::Token(i) => write!(f, "Token({i})"),
            Verified::Jwt(c) => write!(f, "Jwt({} claims)", c.len()),
        }
    }
}

/// Why a [`Gate`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The policy is [`Policy::Refused`]: a 403 whatever the request carries.
    Disabled,
    /// The credential is missing or wrong: a 401 with `WWW-Authenticate: Bearer`.
    Denied(Denied),
}

/// Verifies bearer tokens against static tokens and JWT keys.
pub struct BearerAuth {
    tokens: Vec<Vec<u8>>,
    hs256: Option<(DecodingKey, Validation)>,
    es256: Option<(DecodingKey, Validation)>,
}

impl std::fmt::Debug for BearerAuth {
    // Keys and tokens stay out of any debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("tokens", &self.tokens.len())
            .field("hs256", &self.hs256.is_some())
            .field("es256", &self.es256.is_some())
            .finish()
    }
}

impl BearerAuth {
    /// Parses the keys and builds the validators.
    ///
    /// # Errors
    /// [`KeyError`] names the unusable part (never its value).
    pub fn new(config: &BearerConfig<'_>) -> Result<Self, KeyError> {
        if config.tokens.iter().any(|t| t.trim().is_empty()) {
            return Err(KeyError::EmptyToken);
        }
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.leeway = config.jwt_leeway_secs;
            v.validate_nbf = true;
            let mut required = vec!["exp"];
            match config.jwt_audience {
                Some(aud) => {
                    v.set_audience(&[aud]);
                    required.push("aud");
                }
                // Without a configured audience, a token's own `aud` is not ours to judge.
                None => v.validate_aud = false,
            }
            if let Some(iss) = config.jwt_issuer {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            // A configured audience or issuer is a requirement: a token that simply leaves the
            // claim out must not pass the check the claim was configured for.
            v.set_required_spec_claims(&required);
            v
        };
        let hs256 = match config.jwt_hs256_secret {
            None => None,
            Some(s) if s.len() < MIN_HS256_SECRET => return Err(KeyError::ShortHs256Secret),
            Some(s) => Some((
                DecodingKey::from_secret(s.as_bytes()),
                validation(Algorithm::HS256),
            )),
        };
        let es256 = match config.jwt_es256_public_key {
            None => None,
            Some(pem) => Some((
                DecodingKey::from_ec_pem(pem.as_bytes())
                    .map_err(|e| KeyError::BadEs256Key(e.to_string()))?,
                validation(Algorithm::ES256),
            )),
        };
        Ok(BearerAuth {
            tokens: config
                .tokens
                .iter()
                .map(|t| t.as_bytes().to_vec())
                .collect(),
            hs256,
            es256,
        })
    }

    /// Verifies one bearer token against the static tokens, then the JWT keys.
    ///
    /// # Errors
    /// [`Denied`] says why (never the token).
    pub fn verify(&self, token: &str) -> Result<Verified, Denied> {
        // Every configured token is compared, in constant time each, so timing reveals neither
        // which one matched nor how much of a guess was right (only lengths differ).
        let mut hit = None;
        for (i, t) in self.tokens.iter().enumerate() {
            if bool::from(t.as_slice().ct_eq(token.as_bytes())) && hit.is_none() {
                hit = Some(i);
            }
        }
        if let Some(i) = hit {
            return Ok(Verified::Token(i));
        }
        if token.bytes().filter(|&b| b == b'.').count() != 2 {
            return Err(Denied::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Denied::Invalid)?;
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: we implement no extension, so any critical one is unknown.
            return Err(Denied::UnknownCritical);
        }
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::ES256 => self.es256.as_ref(),
            _ => None,
        };
        let (key, validation) = key.ok_or(Denied::Invalid)?;
        jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, validation)
            .map(|data| Verified::Jwt(data.claims))
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => Denied::Expired,
                    ErrorKind::ImmatureSignature => Denied::NotYetValid,
                    ErrorKind::InvalidAudience => Denied::WrongAudience,
                    ErrorKind::InvalidIssuer => Denied::WrongIssuer,
                    ErrorKind::MissingRequiredClaim(_) => Denied::MissingClaim,
                    _ => Denied::Invalid,
                }
            })
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive, RFC 6750
/// §2.1), or `None` for any other shape.
pub fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A policy and the verifier it uses: the whole check of a guarded route.
#[derive(Debug)]
pub struct Gate {
    policy: Policy,
    auth: BearerAuth,
}

impl Gate {
    /// A gate with a policy its server decided itself (e.g. the origin's reader rule).
    ///
    /// # Errors
    /// [`KeyError`] when the credential material is unusable.
    pub fn with_policy(config: &BearerConfig<'_>, policy: Policy) -> Result<Gate, KeyError> {
        Ok(Gate {
            policy,
            auth: BearerAuth::new(config)?,
        })
    }

    /// The gate of a server bound to `bound`.
    ///
    /// # Errors
    /// [`KeyError`] when the credential material is unusable.
    pub fn new(
        config: &BearerConfig<'_>,
        allow_anonymous: bool,
        bound: SocketAddr,
    ) -> Result<Gate, KeyError> {
        Ok(Gate {
            policy: Policy::decide(config.is_configured(), allow_anonymous, bound),
            auth: BearerAuth::new(config)?,
        })
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Checks a request's `Authorization` header against the policy: `Ok(None)` when the
    /// request passes without a credential (open, or anonymous allowed), `Ok(Some(_))` with the
    /// verified credential.
    ///
    /// # Errors
    /// [`Refusal`]: the policy is off, or the credential is missing or wrong.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<Verified>, Refusal> {
        match headers.get(header::AUTHORIZATION) {
            None => self.check_token(None),
            Some(value) => match bearer_token(value) {
                Some(token) => self.check_token(Some(token)),
                None => match self.policy {
                    Policy::Open => Ok(None),
                    Policy::Refused => Err(Refusal::Disabled),
                    Policy::Checked { .. } => Err(Refusal::Denied(Denied::Malformed)),
                },
            },
        }
    }

    /// [`check`](Self::check) for a token found anywhere (a header, a cookie, a query field).
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn check_token(&self, token: Option<&str>) -> Result<Option<Verified>, Refusal> {
        let anonymous = match self.policy {
            Policy::Open => return Ok(None),
            Policy::Refused => return Err(Refusal::Disabled),
            Policy::Checked { anonymous } => anonymous,
        };
        match token {
            None if anonymous => Ok(None),
            None => Err(Refusal::Denied(Denied::Missing)),
            Some(token) => self.auth.verify(token).map(Some).map_err(Refusal::Denied),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn open_only_on_loopback_without_credentials() {
        assert_eq!(
            Policy::decide(false, false, addr("127.0.0.1:8080")),
            Policy::Open
        );
        assert_eq!(
            Policy::decide(false, false, addr("[::1]:8080")),
            Policy::Open
        );
        assert_eq!(
            Policy::decide(false, false, addr("0.0.0.0:8080")),
            Policy::Refused
        );
        assert_eq!(
            Policy::decide(false, false, addr("10.1.2.3:8080")),
            Policy::Refused
        );
        assert_eq!(
            Policy::decide(false, true, addr("0.0.0.0:8080")),
            Policy::Open
        );
        assert_eq!(
            Policy::decide(true, false, addr("127.0.0.1:1")),
            Policy::Checked { anonymous: false }
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
        let tokens = ["alpha".to_owned(), "beta-token".to_owned()];
        let config = BearerConfig {
            tokens: &tokens,
            ..BearerConfig::default()
        };
        let gate = Gate::new(&config, false, addr("0.0.0.0:1")).unwrap();
        assert!(gate.check(&headers(Some("Bearer alpha"))).is_ok());
        assert!(gate.check(&headers(Some("bearer beta-token"))).is_ok());
        assert_eq!(
            gate.check(&headers(None)),
            Err(Refusal::Denied(Denied::Missing))
        );
        assert_eq!(
            gate.check(&headers(Some("Bearer alph"))),
            Err(Refusal::Denied(Denied::Invalid))
        );
        for malformed in ["Basic alpha", "alpha", "Bearer  "] {
            assert_eq!(
                gate.check(&headers(Some(malformed))),
                Err(Refusal::Denied(Denied::Malformed)),
                "{malformed:?}"
            );
        }
        let anonymous = Gate::new(&config, true, addr("0.0.0.0:1")).unwrap();
        assert!(anonymous.check(&headers(None)).is_ok());
        assert!(anonymous.check(&headers(Some("Bearer nope"))).is_err());
    }

    #[test]
    fn a_refused_gate_refuses_whatever_the_header() {
        let gate = Gate::new(&BearerConfig::default(), false, addr("0.0.0.0:1")).unwrap();
        assert_eq!(
            gate.check(&headers(Some("Bearer x"))),
            Err(Refusal::Disabled)
        );
    }

    #[test]
    fn hs256_jwts_are_checked_for_expiry_audience_and_issuer() {
        let config = BearerConfig {
            jwt_hs256_secret: Some(SECRET),
            jwt_audience: Some("ssepush"),
            jwt_issuer: Some("backend"),
            ..BearerConfig::default()
        };
        let a = BearerAuth::new(&config).unwrap();
        let now = (crate::clock::now_ms() / 1000) as i64;
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        };
        let good = serde_json::json!({"exp": now + 600, "aud": "ssepush", "iss": "backend"});
        assert!(matches!(a.verify(&sign(good)), Ok(Verified::Jwt(_))));
        let expired = serde_json::json!({"exp": now - 3600, "aud": "ssepush", "iss": "backend"});
        assert_eq!(a.verify(&sign(expired)), Err(Denied::Expired));
        let aud = serde_json::json!({"exp": now + 600, "aud": "other", "iss": "backend"});
        assert_eq!(a.verify(&sign(aud)), Err(Denied::WrongAudience));
        let iss = serde_json::json!({"exp": now + 600, "aud": "ssepush", "iss": "mallory"});
        assert_eq!(a.verify(&sign(iss)), Err(Denied::WrongIssuer));
        let no_exp = serde_json::json!({"aud": "ssepush", "iss": "backend"});
        assert_eq!(a.verify(&sign(no_exp)), Err(Denied::MissingClaim));
        assert_eq!(a.verify("a.b.c"), Err(Denied::Invalid));
    }

    fn hs256(claims: serde_json::Value, header: jsonwebtoken::Header) -> String {
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn configured_claims_are_required_not_optional() {
        let config = BearerConfig {
            jwt_hs256_secret: Some(SECRET),
            jwt_audience: Some("ssepush"),
            jwt_issuer: Some("backend"),
            ..BearerConfig::default()
        };
        let a = BearerAuth::new(&config).unwrap();
        let now = (crate::clock::now_ms() / 1000) as i64;
        let h = || jsonwebtoken::Header::new(Algorithm::HS256);
        let no_aud = serde_json::json!({"exp": now + 600, "iss": "backend"});
        assert_eq!(a.verify(&hs256(no_aud, h())), Err(Denied::MissingClaim));
        let no_iss = serde_json::json!({"exp": now + 600, "aud": "ssepush"});
        assert_eq!(a.verify(&hs256(no_iss, h())), Err(Denied::MissingClaim));
        // Without a configured audience or issuer, neither claim is needed.
        let plain = BearerAuth::new(&BearerConfig {
            jwt_hs256_secret: Some(SECRET),
            ..BearerConfig::default()
        })
        .unwrap();
        let bare = serde_json::json!({"exp": now + 600});
        assert!(plain.verify(&hs256(bare, h())).is_ok());
    }

    #[test]
    fn nbf_and_leeway() {
        let now = (crate::clock::now_ms() / 1000) as i64;
        let h = || jsonwebtoken::Header::new(Algorithm::HS256);
        let strict = BearerAuth::new(&BearerConfig {
            jwt_hs256_secret: Some(SECRET),
            jwt_leeway_secs: 0,
            ..BearerConfig::default()
        })
        .unwrap();
        let future = serde_json::json!({"exp": now + 600, "nbf": now + 300});
        assert_eq!(
            strict.verify(&hs256(future.clone(), h())),
            Err(Denied::NotYetValid)
        );
        let past = serde_json::json!({"exp": now + 600, "nbf": now - 10});
        assert!(strict.verify(&hs256(past, h())).is_ok());
        // Skew within the leeway passes, on both ends; beyond it, it does not.
        let lenient = BearerAuth::new(&BearerConfig {
            jwt_hs256_secret: Some(SECRET),
            jwt_leeway_secs: 600,
            ..BearerConfig::default()
        })
        .unwrap();
        assert!(lenient.verify(&hs256(future, h())).is_ok());
        let just_expired = serde_json::json!({"exp": now - 60});
        assert!(lenient.verify(&hs256(just_expired.clone(), h())).is_ok());
        assert_eq!(
            strict.verify(&hs256(just_expired, h())),
            Err(Denied::Expired)
        );
        assert_eq!(BearerConfig::default().jwt_leeway_secs, DEFAULT_LEEWAY_SECS);
    }

    #[test]
    fn a_critical_header_extension_is_refused() {
        let a = BearerAuth::new(&BearerConfig {
            jwt_hs256_secret: Some(SECRET),
            ..BearerConfig::default()
        })
        .unwrap();
        let now = (crate::clock::now_ms() / 1000) as i64;
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp-ext".into()]);
        let claims = serde_json::json!({"exp": now + 600});
        assert_eq!(
            a.verify(&hs256(claims.clone(), header)),
            Err(Denied::UnknownCritical)
        );
        assert!(
            a.verify(&hs256(claims, jsonwebtoken::Header::new(Algorithm::HS256)))
                .is_ok()
        );
    }

    #[test]
    fn unusable_keys_are_named_not_echoed() {
        let short = BearerConfig {
            jwt_hs256_secret: Some("short"),
            ..BearerConfig::default()
        };
        assert_eq!(
            BearerAuth::new(&short).unwrap_err(),
            KeyError::ShortHs256Secret
        );
        let pem = BearerConfig {
            jwt_es256_public_key: Some("not a pem"),
            ..BearerConfig::default()
        };
        let err = BearerAuth::new(&pem).unwrap_err();
        assert!(matches!(err, KeyError::BadEs256Key(_)), "{err:?}");
        assert!(!err.to_string().contains("not a pem"), "{err}");
        let empty = [" ".to_owned()];
        let empty = BearerConfig {
            tokens: &empty,
            ..BearerConfig::default()
        };
        assert_eq!(BearerAuth::new(&empty).unwrap_err(), KeyError::EmptyToken);
    }
}

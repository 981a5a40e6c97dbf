//! Who may read and who may write, on the service layer's bearer check
//! ([`crate::service::auth`]).
//!
//! # Credentials
//!
//! A credential is a static token or a JWT (HS256 `auth.jwt_hs256_secret`, ES256
//! `auth.jwt_es256_public_key`), checked by the book (see the service layer). It comes as
//! `Authorization: Bearer <token>`; on the read transports also — since a browser's
//! `EventSource` and `WebSocket` cannot set headers — as the cookie `auth.cookie_name` or the
//! query field `access_token` (RFC 6750 §2.3; the origin logs no request URL, and every reader of
//! stream URLs in this product logs only their origin). The header wins, then the query, then
//! the cookie.
//!
//! # What a credential grants ([`Grants`])
//!
//! * a static `auth.publish_tokens` entry: publish and read every channel (a backend's key);
//! * a static `auth.subscribe_tokens` entry: read every channel;
//! * a JWT: what its `ssepush` claim lists, `{"ssepush": {"subscribe": [patterns], "publish":
//!   [patterns]}}` (in the spirit of Mercure's `mercure.subscribe`/`mercure.publish`); a JWT
//!   without the claim grants nothing. A subscription is allowed when every pattern it asks for
//!   is covered by the read patterns ([`crate::channel::Pattern::is_covered_by`]: `chat.*`
//!   covers `chat.a` and `chat.*`, not `chat.>`), a publish when every event's channel matches a
//!   publish pattern; dataset writes publish on `datasets.<name>`, dataset reads read it;
//! * a credential that came in a cookie grants reads only: a cookie rides along on requests
//!   other sites make, so it must never be what lets a request write.
//!
//! # Policies
//!
//! Writing (HTTP publish, WebSocket publish, dataset writes, webhook management): with no
//! publisher credential configured (`publish_tokens` or a JWT key), open **only on a loopback
//! listener**, refused elsewhere unless `auth.allow_anonymous_publish = true`.
//!
//! Reading (SSE, WebSocket, poll, latest, dataset reads, webhook registration) follows
//! `auth.subscribe` ([`ReadAccess`]): `auto` (the default) is open on a loopback listener and
//! needs a credential on any other; `required` needs one everywhere; `public` lets anyone read.
//! Where a credential is needed and none is configured, reading is refused (403).
//!
//! Refusals: 401 (with `WWW-Authenticate: Bearer`) for a missing or bad credential, 403 for a
//! credential that does not reach the channel (`forbidden_channel`) or a switched-off route.
//! Tokens never reach the logs: failures are logged by kind only.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use crate::channel::{Pattern, PatternSet};
use crate::service::auth::{BearerConfig, Denied, Gate, Policy, Refusal, Verified, bearer_token};
use crate::service::error::ApiError;
use crate::settings::{AuthSettings, ReadAccess};

/// The JWT claim that lists what a token may read and publish.
pub const CLAIM: &str = "ssepush";
/// The query field that may carry a reader's token.
pub const QUERY_FIELD: &str = "access_token";

/// The read policy (`auth.subscribe` = `access`) of an origin bound to `bound` with credentials
/// `configured`.
pub fn read_policy(access: ReadAccess, configured: bool, bound: SocketAddr) -> Policy {
    match access {
        ReadAccess::Public => Policy::Open,
        ReadAccess::Auto if bound.ip().is_loopback() => Policy::Open,
        _ if configured => Policy::Checked { anonymous: false },
        _ => Policy::Refused,
    }
}

/// Channels one credential reaches, for reading or for publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every channel.
    All,
    /// The channels these patterns match (none when empty).
    Patterns(Vec<Pattern>),
}

impl Scope {
    fn none() -> Scope {
        Scope::Patterns(Vec::new())
    }

    /// Whether every channel `want` can match is in this scope.
    pub fn covers(&self, want: &Pattern) -> bool {
        match self {
            Scope::All => true,
            Scope::Patterns(allowed) => want.is_covered_by(allowed),
        }
    }

    /// Whether `channel` is in this scope.
    pub fn allows(&self, channel: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Patterns(allowed) => allowed.iter().any(|p| p.matches(channel)),
        }
    }
}

/// What one verified credential may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub subscribe: Scope,
    pub publish: Scope,
}

impl Grants {
    /// The grants of a JWT's claims: its [`CLAIM`] object, or nothing without one.
    ///
    /// # Errors
    /// A message for the client when the claim has the wrong shape or a bad pattern.
    pub fn from_claims(claims: &serde_json::Map<String, Value>) -> Result<Grants, String> {
        let Some(claim) = claims.get(CLAIM) else {
            return Ok(Grants {
                subscribe: Scope::none(),
                publish: Scope::none(),
            });
        };
        let shape = || {
            format!(
                "the token's '{CLAIM}' claim must be {{\"subscribe\": [patterns], \"publish\": [patterns]}}"
            )
        };
        let Value::Object(claim) = claim else {
            return Err(shape());
        };
        let list = |key: &str| -> Result<Scope, String> {
            match claim.get(key) {
                None => Ok(Scope::none()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        let s = v.as_str().ok_or_else(shape)?;
                        Pattern::parse(s)
                            .map_err(|e| format!("the token's '{CLAIM}.{key}' claim: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Scope::Patterns),
                Some(_) => Err(shape()),
            }
        };
        Ok(Grants {
            subscribe: list("subscribe")?,
            publish: list("publish")?,
        })
    }
}

/// What a request may do once its credential was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No credential needed here (an open policy): anything the route does.
    Open,
    /// A verified credential and what it grants.
    Granted(Grants),
}

fn forbidden(message: String) -> ApiError {
    tracing::debug!("request refused: the credential does not reach the channel");
    metrics::counter!("ssepush_origin_forbidden_total").increment(1);
    ApiError::new(StatusCode::FORBIDDEN, "forbidden_channel", message)
}

impl Access {
    /// Whether every pattern of a subscription is covered by the read grants.
    ///
    /// # Errors
    /// 403 `forbidden_channel` naming the first pattern that is not.
    pub fn check_read(&self, patterns: &PatternSet) -> Result<(), ApiError> {
        let Access::Granted(g) = self else {
            return Ok(());
        };
        match patterns.iter().find(|p| !g.subscribe.covers(p)) {
            None => Ok(()),
            Some(p) => Err(forbidden(format!(
                "this credential may not read {:?}: every channel the pattern can match must be \
                 covered by the token's read patterns",
                p.as_str()
            ))),
        }
    }

    /// Whether one channel may be read.
    ///
    /// # Errors
    /// 403 `forbidden_channel`.
    pub fn check_read_channel(&self, channel: &str) -> Result<(), ApiError> {
        match self {
            Access::Granted(g) if !g.subscribe.allows(channel) => Err(forbidden(format!(
                "this credential may not read channel {channel:?}"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether every one of `channels` may be published to.
    ///
    /// # Errors
    /// 403 `forbidden_channel` naming the first that may not.
    pub fn check_publish<'a>(
        &self,
        channels: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        let Access::Granted(g) = self else {
            return Ok(());
        };
        match channels.into_iter().find(|c| !g.publish.allows(c)) {
            None => Ok(()),
            Some(c) => Err(forbidden(format!(
                "this credential may not publish to channel {c:?}"
            ))),
        }
    }
}

/// Where a credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Query,
    Cookie,
}

/// The credential a request presents: the `Authorization` header, else (where `query` is given)
/// the `access_token` query field, else (where `cookie` is given) that cookie.
///
/// # Errors
/// [`Denied::Malformed`] for an `Authorization` header that is not `Bearer <token>`.
pub fn presented(
    headers: &HeaderMap,
    query: Option<&str>,
    cookie: Option<&str>,
) -> Result<Option<(Source, String)>, Denied> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return match bearer_token(value) {
            Some(t) => Ok(Some((Source::Header, t.to_owned()))),
            None => Err(Denied::Malformed),
        };
    }
    if let Some(q) = query {
        let token = form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k == QUERY_FIELD)
            .map(|(_, v)| v.into_owned())
            .find(|v| !v.is_empty());
        if let Some(t) = token {
            return Ok(Some((Source::Query, t)));
        }
    }
    if let Some(name) = cookie {
        // RFC 6265 §5.4: `name=value` pairs separated by `; `, possibly over several headers.
        for value in headers.get_all(header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=')
                    && k == name
                {
                    let v = v.trim_matches('"');
                    if !v.is_empty() {
                        return Ok(Some((Source::Cookie, v.to_owned())));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// The origin's checks, built once at startup from `[auth]`.
#[derive(Debug)]
pub struct OriginAuth {
    publish: Gate,
    read: Gate,
    /// How many of the static tokens (first in the list) are publisher tokens.
    publish_tokens: usize,
    cookie: String,
}

impl OriginAuth {
    /// Parses keys and builds the checks for an origin bound to `bound`.
    ///
    /// # Errors
    /// A message naming the bad `[auth]` key (never its value).
    pub fn new(auth: &AuthSettings, bound: SocketAddr) -> Result<Self, String> {
        let tokens: Vec<String> = auth
            .publish_tokens
            .iter()
            .chain(&auth.subscribe_tokens)
            .cloned()
            .collect();
        let config = BearerConfig {
            tokens: &tokens,
            ..auth.bearer()
        };
        let jwt = auth.jwt_hs256_secret.is_some() || auth.jwt_es256_public_key.is_some();
        let publish_policy = Policy::decide(
            jwt || !auth.publish_tokens.is_empty(),
            auth.allow_anonymous_publish,
            bound,
        );
        let read_policy = read_policy(auth.subscribe, jwt || !tokens.is_empty(), bound);
        let gate =
            |policy| Gate::with_policy(&config, policy).map_err(|e| AuthSettings::key_error(&e));
        Ok(OriginAuth {
            publish: gate(publish_policy)?,
            read: gate(read_policy)?,
            publish_tokens: auth.publish_tokens.len(),
            cookie: auth.cookie_name.clone(),
        })
    }

    /// The write policy.
    pub fn policy(&self) -> Policy {
        self.publish.policy()
    }

    /// The read policy.
    pub fn read_policy(&self) -> Policy {
        self.read.policy()
    }

    fn grants(&self, verified: Option<Verified>, source: Source) -> Result<Access, ApiError> {
        let mut grants = match verified {
            None => return Ok(Access::Open),
            Some(Verified::Token(i)) if i < self.publish_tokens => Grants {
                subscribe: Scope::All,
                publish: Scope::All,
            },
            Some(Verified::Token(_)) => Grants {
                subscribe: Scope::All,
                publish: Scope::none(),
            },
            Some(Verified::Jwt(claims)) => Grants::from_claims(&claims)
                .map_err(|m| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m))?,
        };
        if source == Source::Cookie {
            grants.publish = Scope::none();
        }
        Ok(Access::Granted(grants))
    }

    /// Checks a writer: its `Authorization` header (and, for a WebSocket upgrade, its
    /// `access_token` query field) against the write policy.
    ///
    /// # Errors
    /// 401 for a missing or bad credential, 403 `publish_disabled` when writing is off.
    pub fn publisher(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Access, ApiError> {
        let found = presented(headers, query, None).map_err(|d| denied(d, Role::Publish))?;
        let (source, token) = match &found {
            Some((s, t)) => (*s, Some(t.as_str())),
            None => (Source::Header, None),
        };
        let verified = self.publish.check_token(token).map_err(|r| match r {
            Refusal::Disabled => ApiError::new(
                StatusCode::FORBIDDEN,
                "publish_disabled",
                "publishing is disabled: this origin listens on a non-loopback address and has \
                 no [auth] configured; set auth.publish_tokens or a JWT key, or \
                 auth.allow_anonymous_publish = true",
            ),
            Refusal::Denied(d) => denied(d, Role::Publish),
        })?;
        self.grants(verified, source)
    }

    /// Checks a reader: the header, the `access_token` field of `query`, or the cookie, against
    /// the read policy.
    ///
    /// # Errors
    /// 401 for a missing or bad credential, 403 `subscribe_disabled` when reading is off.
    pub fn reader(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Access, ApiError> {
        let found = presented(headers, Some(query.unwrap_or("")), Some(&self.cookie))
            .map_err(|d| denied(d, Role::Read))?;
        let (source, token) = match &found {
            Some((s, t)) => (*s, Some(t.as_str())),
            None => (Source::Header, None),
        };
        let verified = self.read.check_token(token).map_err(|r| match r {
            Refusal::Disabled => ApiError::new(
                StatusCode::FORBIDDEN,
                "subscribe_disabled",
                "reading is disabled: this origin listens on a non-loopback address and has no \
                 credentials in [auth]; set auth.subscribe_tokens or a JWT key, or declare the \
                 origin public with auth.subscribe = \"public\"",
            ),
            Refusal::Denied(d) => denied(d, Role::Read),
        })?;
        self.grants(verified, source)
    }
}

#[derive(Clone, Copy)]
enum Role {
    Read,
    Publish,
}

/// What a refused client is told: 401 with what is wrong with its credential.
fn denied(d: Denied, role: Role) -> ApiError {
    tracing::debug!(reason = ?d, "credential refused");
    let message = match (d, role) {
        (Denied::Missing, Role::Publish) => {
            "publishing requires 'Authorization: Bearer <token>'".to_owned()
        }
        (Denied::Missing, Role::Read) => format!(
            "reading requires a token: 'Authorization: Bearer <token>', the '{QUERY_FIELD}' query \
             field or the configured cookie"
        ),
        (d, _) => d.message().to_owned(),
    };
    let counter = match role {
        Role::Read => "ssepush_origin_subscribe_denied_total",
        Role::Publish => "ssepush_origin_publish_denied_total",
    };
    metrics::counter!(counter).increment(1);
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn pats(p: &[&str]) -> PatternSet {
        PatternSet::parse_all(p.iter().copied()).unwrap()
    }

    #[test]
    fn the_read_policy() {
        let lo = addr("127.0.0.1:1");
        let any = addr("0.0.0.0:1");
        use ReadAccess::*;
        let checked = Policy::Checked { anonymous: false };
        assert_eq!(read_policy(Auto, false, lo), Policy::Open);
        assert_eq!(read_policy(Auto, true, lo), Policy::Open);
        assert_eq!(read_policy(Auto, false, any), Policy::Refused);
        assert_eq!(read_policy(Auto, true, any), checked);
        assert_eq!(read_policy(Required, true, lo), checked);
        assert_eq!(read_policy(Required, false, lo), Policy::Refused);
        assert_eq!(read_policy(Public, false, any), Policy::Open);
    }

    #[test]
    fn credentials_come_from_header_then_query_then_cookie() {
        let c = Some("tok");
        let h = headers(&[
            (header::AUTHORIZATION, "Bearer from-header"),
            (header::COOKIE, "tok=from-cookie"),
        ]);
        assert_eq!(
            presented(&h, Some("access_token=from-query"), c).unwrap(),
            Some((Source::Header, "from-header".into()))
        );
        let h = headers(&[(header::COOKIE, "a=1; tok=from-cookie")]);
        assert_eq!(
            presented(&h, Some("channel=x&access_token=a%2Bb"), c).unwrap(),
            Some((Source::Query, "a+b".into()))
        );
        assert_eq!(
            presented(&h, Some("channel=x"), c).unwrap(),
            Some((Source::Cookie, "from-cookie".into()))
        );
        // A cookie counts only where the caller asks for it.
        assert_eq!(presented(&h, None, None).unwrap(), None);
        let bad = headers(&[(header::AUTHORIZATION, "Basic x")]);
        assert_eq!(presented(&bad, None, c), Err(Denied::Malformed));
    }

    #[test]
    fn claims_become_grants() {
        let claims = |v: Value| v.as_object().unwrap().clone();
        let g = Grants::from_claims(&claims(serde_json::json!({
            "sub": "u1",
            "ssepush": {"subscribe": ["chat.*", "news.>"], "publish": ["chat.u1"]}
        })))
        .unwrap();
        let a = Access::Granted(g);
        assert!(a.check_read(&pats(&["chat.*", "news.eu.x"])).is_ok());
        let e = a.check_read(&pats(&["chat.>"])).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, "forbidden_channel")
        );
        assert!(a.check_read_channel("chat.a").is_ok());
        assert!(a.check_read_channel("chat.a.b").is_err());
        assert!(a.check_publish(["chat.u1"]).is_ok());
        assert!(a.check_publish(["chat.u1", "chat.u2"]).is_err());
        // No claim: nothing.
        let none = Access::Granted(Grants::from_claims(&claims(serde_json::json!({}))).unwrap());
        assert!(none.check_read(&pats(&["x"])).is_err());
        assert!(none.check_publish(["x"]).is_err());
        for bad in [
            serde_json::json!({"ssepush": ["chat.*"]}),
            serde_json::json!({"ssepush": {"subscribe": "chat.*"}}),
            serde_json::json!({"ssepush": {"subscribe": [1]}}),
            serde_json::json!({"ssepush": {"publish": ["a.>.b"]}}),
        ] {
            assert!(Grants::from_claims(&claims(bad.clone())).is_err(), "{bad}");
        }
        assert!(Access::Open.check_read(&pats(&[">"])).is_ok());
    }

    fn origin(auth: AuthSettings, bound: &str) -> OriginAuth {
        OriginAuth::new(&auth, addr(bound)).unwrap()
    }

    #[test]
    fn static_tokens_and_their_grants() {
        let a = origin(
            AuthSettings {
                publish_tokens: vec!["pub".into()],
                subscribe_tokens: vec!["sub".into()],
                ..AuthSettings::default()
            },
            "0.0.0.0:1",
        );
        let bearer = |t: &str| headers(&[(header::AUTHORIZATION, &format!("Bearer {t}"))]);
        let p = a.publisher(&bearer("pub"), None).unwrap();
        assert!(p.check_publish(["x.y"]).is_ok());
        let s = a.publisher(&bearer("sub"), None).unwrap();
        assert!(s.check_publish(["x.y"]).is_err());
        assert!(
            a.reader(&bearer("sub"), None)
                .unwrap()
                .check_read(&pats(&[">"]))
                .is_ok()
        );
        assert!(
            a.reader(&bearer("pub"), None)
                .unwrap()
                .check_read(&pats(&[">"]))
                .is_ok()
        );
        assert_eq!(
            a.reader(&HeaderMap::new(), None).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        // The query and the cookie work for reading.
        assert!(
            a.reader(&HeaderMap::new(), Some("access_token=sub"))
                .is_ok()
        );
        let cookie = headers(&[(header::COOKIE, "ssepush_token=pub")]);
        let from_cookie = a.reader(&cookie, None).unwrap();
        // A publisher token in a cookie reads, but never writes.
        match from_cookie {
            Access::Granted(g) => assert_eq!(g.publish, Scope::Patterns(vec![])),
            Access::Open => panic!("a checked policy"),
        }
        assert_eq!(
            a.reader(&bearer("nope"), None).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn refusals_name_the_switch() {
        let off = origin(AuthSettings::default(), "0.0.0.0:1");
        let e = off.reader(&HeaderMap::new(), None).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, "subscribe_disabled")
        );
        let e = off.publisher(&HeaderMap::new(), None).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, "publish_disabled")
        );
        let public = origin(
            AuthSettings {
                subscribe: ReadAccess::Public,
                ..AuthSettings::default()
            },
            "0.0.0.0:1",
        );
        assert_eq!(
            public.reader(&HeaderMap::new(), None).unwrap(),
            Access::Open
        );
        let lo = origin(AuthSettings::default(), "127.0.0.1:1");
        assert_eq!(lo.reader(&HeaderMap::new(), None).unwrap(), Access::Open);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let short = AuthSettings {
            jwt_hs256_secret: Some("short".into()),
            ..AuthSettings::default()
        };
        let err = OriginAuth::new(&short, addr("127.0.0.1:1")).unwrap_err();
        assert!(err.contains("auth.jwt_hs256_secret"), "{err}");
        let pem = AuthSettings {
            jwt_es256_public_key: Some("not a pem".into()),
            ..AuthSettings::default()
        };
        let err = OriginAuth::new(&pem, addr("127.0.0.1:1")).unwrap_err();
        assert!(err.contains("jwt_es256_public_key"), "{err}");
        let empty = AuthSettings {
            subscribe_tokens: vec![" ".into()],
            ..AuthSettings::default()
        };
        let err = OriginAuth::new(&empty, addr("127.0.0.1:1")).unwrap_err();
        assert!(err.contains("tokens"), "{err}");
    }
}

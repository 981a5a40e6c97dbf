//! Handoffs: the validation of the request a phone sends before it sleeps
//! ([`crate::protocol::HandoffRequest`]) into a [`HandoffSpec`], and the per-handoff **state
//! machine**. Its ids and token are in [`crate::token`], the allowed origins in [`crate::allow`].
//!
//! ```text
//!              wake accepted            check-in (GET /events)
//!   watching ─────────────────▶ woken ─────────────────────────▶ watching …
//!      │  ╲                       │
//!      │   ╲ ttl over / dead token / upstream 4xx / handback
//!      ▼    ▼                     ▼
//!   expired  failed{reason}   closed          (terminal: nothing leaves them)
//! ```
//!
//! Everything here is plain values: no sockets, no clock. Every type that holds a secret
//! (upstream headers, push tokens) has a redacting `Debug`.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use reqwest::Url;
use sha2::{Digest, Sha256};
use ssepush_origin::EventId;
use ssepush_origin::filter::{Filter, FilterError};

use crate::allow::{OriginAllowList, is_loopback_host, origin_of};
use crate::protocol::{HandoffRequest, HandoffState, PushTarget, WakeMode};
use crate::settings::Settings;

// ---------------------------------------------------------------------------------------------
// State machine
// ---------------------------------------------------------------------------------------------

/// Where a handoff is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The proxy watches the stream; no wake is outstanding.
    Watching,
    /// A wake was accepted by the push service; no further wake until the phone checks in.
    Woken,
    /// The ttl ran out; the proxy stopped watching.
    Expired,
    /// Ended by an error that retrying cannot fix (dead push token, upstream 4xx, …).
    Failed(String),
    /// The phone handed the stream back.
    Closed,
}

impl State {
    /// The state as the API shows it (a failure's reason goes to `lastError`).
    pub fn wire(&self) -> HandoffState {
        match self {
            State::Watching => HandoffState::Watching,
            State::Woken => HandoffState::Woken,
            State::Expired => HandoffState::Expired,
            State::Failed(_) => HandoffState::Failed,
            State::Closed => HandoffState::Closed,
        }
    }

    /// The wire name: `watching`, `woken`, `expired`, `failed`, `closed`.
    pub fn name(&self) -> &'static str {
        self.wire().as_str()
    }

    pub fn is_terminal(&self) -> bool {
        self.wire().is_terminal()
    }
}

/// What happens to a handoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The push service accepted a wake.
    WakeAccepted,
    /// The phone fetched its events (or is handing back).
    CheckIn,
    /// The ttl ran out.
    Expire,
    /// Something permanent went wrong.
    Fail(String),
    /// The phone handed the stream back.
    Close,
}

/// The transition function. Terminal states absorb every input: a late wake result or check-in
/// never revives a failed or closed handoff.
pub fn transition(state: &State, input: &Input) -> State {
    if state.is_terminal() {
        return state.clone();
    }
    match input {
        Input::WakeAccepted => State::Woken,
        Input::CheckIn => State::Watching,
        Input::Expire => State::Expired,
        Input::Fail(reason) => State::Failed(reason.clone()),
        Input::Close => State::Closed,
    }
}

// ---------------------------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------------------------

/// Why a handoff request was refused; [`HandoffError::status`] classifies it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HandoffError {
    #[error("stream.url is not a valid absolute URL: {0}")]
    BadUrl(String),
    #[error("stream.url must be http or https, not {0:?}")]
    BadScheme(String),
    #[error("stream.url {0} is not in this proxy's allowed_origins")]
    OriginNotAllowed(String),
    #[error("stream.headers: {0}")]
    BadHeaders(String),
    #[error("stream.lastEventId: {0}")]
    BadEventId(String),
    #[error("push: {0}")]
    BadPushTarget(String),
    /// A Web Push endpoint the proxy's `[push]` policy refuses (a non-global address, plain
    /// http, a host outside `push.webpush_hosts`): see [`crate::push::endpoint`].
    #[error("push: {0}")]
    PushEndpointNotAllowed(String),
    #[error("no push provider is configured for platform {0:?} on this proxy")]
    NoProvider(&'static str),
    #[error("wake.filter: {0}")]
    BadFilter(FilterError),
    #[error("wake: {0}")]
    BadWake(String),
    #[error("ttlSec must be 1..={0}")]
    BadTtl(u64),
}

impl HandoffError {
    /// 403 for a refused destination (policy, not syntax), 422 for a platform this node cannot
    /// serve, 400 for everything the client can fix in its request.
    pub fn status(&self) -> u16 {
        match self {
            HandoffError::OriginNotAllowed(_) => 403,
            HandoffError::NoProvider(_) => 422,
            _ => 400,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            HandoffError::BadUrl(_) | HandoffError::BadScheme(_) => "invalid_stream_url",
            HandoffError::OriginNotAllowed(_) => "origin_not_allowed",
            HandoffError::BadHeaders(_) => "invalid_headers",
            HandoffError::BadEventId(_) => "invalid_event_id",
            HandoffError::BadPushTarget(_) => "invalid_push_target",
            HandoffError::PushEndpointNotAllowed(_) => "push_endpoint_not_allowed",
            HandoffError::NoProvider(_) => "no_provider",
            HandoffError::BadFilter(_) => "invalid_filter",
            HandoffError::BadWake(_) => "invalid_wake",
            HandoffError::BadTtl(_) => "invalid_ttl",
        }
    }
}

/// Upstream request headers of a handoff (often credentials): never printed.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct StreamHeaders(pub Vec<(String, String)>);

impl std::fmt::Debug for StreamHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| format!("{k}: ***")))
            .finish()
    }
}

/// What the proxy watches: the URL and the headers to send, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    pub url: Url,
    pub headers: StreamHeaders,
}

impl StreamSpec {
    /// The shared-watcher key: handoffs with equal URL and equal credentials read one
    /// connection. A SHA-256 over both, so the map never holds credentials a second time and
    /// two different credentials can never collide into one connection.
    pub fn key(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.url.as_str().as_bytes());
        for (k, v) in &self.headers.0 {
            h.update([0u8]);
            h.update(k.as_bytes());
            h.update([0u8]);
            h.update(v.as_bytes());
        }
        h.finalize().into()
    }
}

/// One copy of each stream's [`StreamSpec`] for every handoff of it on this node (issue 11: a
/// thousand handoffs of a stream held a thousand copies of its URL and headers), by watcher
/// key. Holds only weak references: a stream's spec goes with its last handoff.
#[derive(Debug, Default)]
pub struct SharedStreams {
    inner: std::sync::Mutex<SharedInner>,
}

#[derive(Debug, Default)]
struct SharedInner {
    specs: std::collections::HashMap<[u8; 32], std::sync::Weak<StreamSpec>>,
    /// Gone streams are forgotten when the map reaches this size (then twice what is left).
    purge_at: usize,
}

impl SharedStreams {
    /// The shared copy of `stream` (this one when it is the first of its stream).
    pub fn share(&self, stream: Arc<StreamSpec>) -> Arc<StreamSpec> {
        let key = stream.key();
        let mut inner = self.inner.lock().unwrap();
        if let Some(shared) = inner.specs.get(&key).and_then(std::sync::Weak::upgrade) {
            return shared;
        }
        inner.specs.insert(key, Arc::downgrade(&stream));
        if inner.specs.len() >= inner.purge_at {
            inner.specs.retain(|_, w| w.strong_count() > 0);
            inner.purge_at = (inner.specs.len() * 2).max(64);
        }
        stream
    }

    /// Streams remembered (some may be gone).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The wake preferences of one handoff, resolved against the settings.
#[derive(Debug, Clone)]
pub struct WakeSpec {
    pub filter: Option<Filter>,
    pub coalesce_ms: u64,
    pub max_per_hour: u32,
    pub mode: WakeMode,
}

/// A push target whose `Debug` shows the platform only: tokens and keys are secrets.
#[derive(Clone, PartialEq)]
pub struct Target(pub PushTarget);

impl Target {
    pub fn platform(&self) -> &'static str {
        self.0.platform()
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({}, ***)", self.platform())
    }
}

/// A validated handoff: what to watch and how to wake, fixed for its life. (The phone's cursor
/// is not here: it moves, and the live handoff owns it, see [`crate::cursor`].)
#[derive(Debug, Clone)]
pub struct HandoffSpec {
    /// Shared by the handoffs of one stream ([`SharedStreams`]).
    pub stream: Arc<StreamSpec>,
    pub push: Target,
    pub wake: WakeSpec,
    pub ttl_secs: u64,
}

/// Headers a client must not set on the upstream request: hop-by-hop (RFC 9110 §7.6.1) and the
/// ones the proxy owns.
const FORBIDDEN_HEADERS: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "last-event-id",
    "accept",
];

/// Validates every field of a request: the spec, and the phone's cursor (`stream.lastEventId`;
/// blank means none) that the live handoff starts from. `has_provider` says whether this node
/// can push to a platform. Nothing here touches the network: a refused URL is refused before
/// any connection.
pub fn validate(
    req: HandoffRequest,
    settings: &Settings,
    allow: &OriginAllowList,
    has_provider: impl Fn(&PushTarget) -> bool,
) -> Result<(HandoffSpec, Option<EventId>), HandoffError> {
    let url = check_stream_url(&req.stream.url, allow)?;
    let headers = check_headers(&req.stream.headers, settings)?;
    let cursor = match req.stream.last_event_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<EventId>()
                .map_err(|e| HandoffError::BadEventId(e.to_string()))?,
        ),
    };
    check_push_target(&req.push)?;
    if !has_provider(&req.push) {
        return Err(HandoffError::NoProvider(req.push.platform()));
    }
    let filter = match req.wake.filter.as_deref() {
        None => None,
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(Filter::compile(s).map_err(HandoffError::BadFilter)?),
    };
    let w = &settings.wake;
    let coalesce_ms = req.wake.coalesce_ms.unwrap_or(w.coalesce_ms);
    if coalesce_ms > w.max_coalesce_ms {
        return Err(HandoffError::BadWake(format!(
            "coalesceMs must be at most {}",
            w.max_coalesce_ms
        )));
    }
    let max_per_hour = req.wake.max_per_hour.unwrap_or(w.max_per_hour);
    if max_per_hour == 0 || max_per_hour > w.max_per_hour_limit {
        return Err(HandoffError::BadWake(format!(
            "maxPerHour must be 1..={}",
            w.max_per_hour_limit
        )));
    }
    let ttl_secs = req.ttl_sec.unwrap_or(settings.default_ttl_secs);
    if ttl_secs == 0 || ttl_secs > settings.max_ttl_secs {
        return Err(HandoffError::BadTtl(settings.max_ttl_secs));
    }
    let spec = HandoffSpec {
        stream: Arc::new(StreamSpec { url, headers }),
        push: Target(req.push),
        wake: WakeSpec {
            filter,
            coalesce_ms,
            max_per_hour,
            mode: req.wake.mode.unwrap_or_default(),
        },
        ttl_secs,
    };
    Ok((spec, cursor))
}

/// The spec of a stored handoff, for a node taking it over: the URL is checked against this
/// node's `allowed_origins` again and the filter compiled again (both were valid at creation,
/// perhaps under another node's configuration).
pub fn spec_of_record(
    rec: &crate::store::HandoffRecord,
    allow: &OriginAllowList,
) -> Result<HandoffSpec, String> {
    let url = check_stream_url(&rec.stream_url, allow).map_err(|e| e.to_string())?;
    let filter = match rec.wake_filter.as_deref() {
        None => None,
        Some(s) => Some(Filter::compile(s).map_err(|e| format!("wake.filter: {e}"))?),
    };
    Ok(HandoffSpec {
        stream: Arc::new(StreamSpec {
            url,
            headers: StreamHeaders(rec.stream_headers.clone()),
        }),
        push: Target(rec.push.clone()),
        wake: WakeSpec {
            filter,
            coalesce_ms: rec.coalesce_ms,
            max_per_hour: rec.max_per_hour,
            mode: rec.mode,
        },
        ttl_secs: rec.expires_at_ms.saturating_sub(rec.created_at_ms) / 1000,
    })
}

fn check_stream_url(raw: &str, allow: &OriginAllowList) -> Result<Url, HandoffError> {
    if raw.len() > 4096 {
        return Err(HandoffError::BadUrl("longer than 4096 bytes".into()));
    }
    let url = Url::parse(raw).map_err(|e| HandoffError::BadUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(HandoffError::BadScheme(url.scheme().to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(HandoffError::BadUrl(
            "credentials in the URL are not accepted; pass them in stream.headers".into(),
        ));
    }
    if url.host_str().is_none() {
        return Err(HandoffError::BadUrl("no host".into()));
    }
    if !allow.allows(&url) {
        return Err(HandoffError::OriginNotAllowed(origin_of(&url)));
    }
    Ok(url)
}
fn check_headers(
    given: &BTreeMap<String, String>,
    settings: &Settings,
) -> Result<StreamHeaders, HandoffError> {
    let limits = &settings.upstream;
    if given.len() > limits.max_headers {
        return Err(HandoffError::BadHeaders(format!(
            "at most {} headers",
            limits.max_headers
        )));
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(given.len());
    for (name, value) in given {
        let lower = name.to_ascii_lowercase();
        if axum::http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(HandoffError::BadHeaders(format!(
                "{:?} is not a valid header name",
                name.chars().take(64).collect::<String>()
            )));
        }
        if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
            return Err(HandoffError::BadHeaders(format!(
                "{lower} may not be set: it is hop-by-hop or set by the proxy"
            )));
        }
        if axum::http::HeaderValue::from_str(value).is_err() {
            // The value is probably a credential: name the header, never echo the value.
            return Err(HandoffError::BadHeaders(format!(
                "the value of {lower} is not a valid header value"
            )));
        }
        total += lower.len() + value.len();
        out.push((lower, value.clone()));
    }
    if total > limits.max_header_bytes {
        return Err(HandoffError::BadHeaders(format!(
            "headers are larger than {} bytes",
            limits.max_header_bytes
        )));
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    if out.len() != given.len() {
        return Err(HandoffError::BadHeaders(
            "a header is given twice (names are case-insensitive)".into(),
        ));
    }
    Ok(StreamHeaders(out))
}

fn check_push_target(t: &PushTarget) -> Result<(), HandoffError> {
    let bad = |m: &str| Err(HandoffError::BadPushTarget(m.to_owned()));
    match t {
        PushTarget::Apns {
            token,
            topic,
            environment,
        } => {
            // Apple: device tokens are of variable length; accept what the sender sends.
            if !crate::push::apns::is_device_token(token) {
                return bad(&format!(
                    "an APNs device token is hex bytes: an even number of hex digits, at most {}",
                    crate::push::apns::MAX_DEVICE_TOKEN_HEX
                ));
            }
            if topic
                .as_ref()
                .is_some_and(|t| t.is_empty() || t.len() > 255 || t.contains(char::is_whitespace))
            {
                return bad("topic must be a bundle id (1..=255 characters, no spaces)");
            }
            if environment
                .as_deref()
                .is_some_and(|e| !matches!(e, "production" | "sandbox" | "development"))
            {
                return bad("environment must be production, sandbox or development");
            }
        }
        PushTarget::Fcm { token } => {
            if token.is_empty()
                || token.len() > 4096
                || !token.bytes().all(|b| b.is_ascii_graphic())
            {
                return bad("an FCM registration token is 1..=4096 printable ASCII characters");
            }
        }
        PushTarget::Webpush { subscription } => {
            let endpoint = Url::parse(&subscription.endpoint).map_err(|_| {
                HandoffError::BadPushTarget("subscription.endpoint is not a URL".into())
            })?;
            let loopback = is_loopback_host(&endpoint);
            // RFC 8030 push services are https; plain http only to a local (simulated) service.
            if !(endpoint.scheme() == "https" || endpoint.scheme() == "http" && loopback) {
                return bad("subscription.endpoint must be an https URL");
            }
            if subscription.endpoint.len() > 2048 {
                return bad("subscription.endpoint is longer than 2048 bytes");
            }
            let b64 = |s: &str| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(s.trim_end_matches('='))
                    .ok()
            };
            match b64(&subscription.keys.p256dh) {
                Some(k) if k.len() == 65 && k[0] == 4 => {}
                _ => {
                    return bad(
                        "keys.p256dh must be an uncompressed P-256 point (65 bytes), base64url",
                    );
                }
            }
            match b64(&subscription.keys.auth) {
                Some(k) if k.len() == 16 => {}
                _ => return bad("keys.auth must be 16 bytes, base64url"),
            }
        }
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::{WebPushKeys, WebPushSubscription};

    fn settings() -> Settings {
        Settings::default()
    }

    fn allow(list: &[&str]) -> OriginAllowList {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        OriginAllowList::parse(&list, "127.0.0.1:8090".parse().unwrap()).unwrap()
    }

    fn request(json: serde_json::Value) -> HandoffRequest {
        serde_json::from_value(json).unwrap()
    }

    fn apns_req() -> serde_json::Value {
        serde_json::json!({
            "stream": {"url": "http://127.0.0.1:8080/v1/sse?channel=chat.*", "headers": {"Authorization": "Bearer upstream-secret"}, "lastEventId": "5-0"},
            "push": {"platform": "apns", "token": "ab".repeat(32)},
        })
    }

    #[test]
    fn state_machine_cycles_and_terminal_states_absorb() {
        let s = State::Watching;
        let s = transition(&s, &Input::WakeAccepted);
        assert_eq!(s, State::Woken);
        let s = transition(&s, &Input::CheckIn);
        assert_eq!(s, State::Watching);
        for terminal in [
            State::Expired,
            State::Closed,
            State::Failed("upstream answered 401".into()),
        ] {
            for input in [
                Input::WakeAccepted,
                Input::CheckIn,
                Input::Expire,
                Input::Close,
                Input::Fail("x".into()),
            ] {
                assert_eq!(transition(&terminal, &input), terminal);
            }
        }
        assert_eq!(
            transition(&State::Woken, &Input::Fail("410 Unregistered".into())),
            State::Failed("410 Unregistered".into())
        );
        assert_eq!(transition(&State::Woken, &Input::Expire), State::Expired);
    }

    #[test]
    fn a_good_request_validates_and_secrets_do_not_print() {
        let (spec, cursor) = validate(
            request(apns_req()),
            &settings(),
            &allow(&["http://127.0.0.1:8080"]),
            |_| true,
        )
        .unwrap();
        assert_eq!(cursor, Some(EventId::new(5, 0)));
        assert_eq!(spec.stream.headers.0[0].0, "authorization");
        assert_eq!(spec.wake.max_per_hour, 3);
        let text = format!("{spec:?}");
        assert!(!text.contains("upstream-secret"), "{text}");
        assert!(!text.contains(&"ab".repeat(32)), "{text}");
    }

    #[test]
    fn apns_tokens_are_of_variable_length_like_the_sender_takes() {
        let s = settings();
        let a = allow(&["http://127.0.0.1:8080"]);
        for len in [64, 160, 200] {
            let mut j = apns_req();
            j["push"]["token"] = "ab".repeat(len / 2).into();
            validate(request(j), &s, &a, |_| true).unwrap();
        }
    }

    #[test]
    fn bad_requests_are_classified() {
        let s = settings();
        let a = allow(&["http://127.0.0.1:8080"]);
        let check = |patch: &dyn Fn(&mut serde_json::Value)| {
            let mut j = apns_req();
            patch(&mut j);
            validate(request(j), &s, &a, |t| t.platform() != "fcm").unwrap_err()
        };
        let e = check(&|j| j["stream"]["url"] = "http://10.1.1.1/v1/sse".into());
        assert_eq!(e.status(), 403);
        assert!(matches!(
            check(&|j| j["stream"]["url"] = "ftp://x/".into()),
            HandoffError::BadScheme(_)
        ));
        assert!(matches!(
            check(&|j| j["stream"]["url"] = "nope".into()),
            HandoffError::BadUrl(_)
        ));
        assert!(matches!(
            check(&|j| j["stream"]["headers"] = serde_json::json!({"Connection": "x"})),
            HandoffError::BadHeaders(_)
        ));
        let e =
            check(&|j| j["stream"]["headers"] = serde_json::json!({"X-Key": "bad\nvalue-secret"}));
        assert!(!e.to_string().contains("value-secret"));
        assert!(matches!(
            check(&|j| j["stream"]["lastEventId"] = "abc".into()),
            HandoffError::BadEventId(_)
        ));
        for token in [
            "abc".to_owned(),
            "zz".repeat(32),
            "ab".repeat(101),
            String::new(),
        ] {
            assert!(matches!(
                check(&|j| j["push"]["token"] = token.clone().into()),
                HandoffError::BadPushTarget(_)
            ));
        }
        let e = check(&|j| j["push"] = serde_json::json!({"platform": "fcm", "token": "x"}));
        assert_eq!(e.status(), 422);
        let e = check(&|j| j["wake"] = serde_json::json!({"filter": "data.x >"}));
        match e {
            HandoffError::BadFilter(f) => assert!(f.column >= 8),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check(&|j| j["wake"] = serde_json::json!({"maxPerHour": 0})),
            HandoffError::BadWake(_)
        ));
        assert!(matches!(
            check(&|j| j["ttlSec"] = 0.into()),
            HandoffError::BadTtl(_)
        ));
        assert!(matches!(
            check(&|j| j["ttlSec"] = 99_999_999.into()),
            HandoffError::BadTtl(_)
        ));
    }

    #[test]
    fn webpush_subscriptions_need_real_key_lengths() {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let mut p256 = vec![4u8];
        p256.extend([7u8; 64]);
        let sub = |endpoint: &str, p: String, a: String| PushTarget::Webpush {
            subscription: WebPushSubscription {
                endpoint: endpoint.into(),
                expiration_time: None,
                keys: WebPushKeys { p256dh: p, auth: a },
            },
        };
        assert!(
            check_push_target(&sub("https://push.example/x", b64(&p256), b64(&[1; 16]))).is_ok()
        );
        assert!(check_push_target(&sub("http://127.0.0.1:9/x", b64(&p256), b64(&[1; 16]))).is_ok());
        assert!(
            check_push_target(&sub("http://push.example/x", b64(&p256), b64(&[1; 16]))).is_err()
        );
        assert!(
            check_push_target(&sub(
                "https://push.example/x",
                b64(&p256[..33]),
                b64(&[1; 16])
            ))
            .is_err()
        );
        assert!(
            check_push_target(&sub("https://push.example/x", b64(&p256), b64(&[1; 8]))).is_err()
        );
    }

    #[test]
    fn handoffs_of_one_stream_share_one_copy_of_its_spec() {
        let spec = |channel: &str| {
            Arc::new(StreamSpec {
                url: Url::parse(&format!("http://127.0.0.1:8080/v1/sse?channel={channel}"))
                    .unwrap(),
                headers: StreamHeaders::default(),
            })
        };
        let streams = SharedStreams::default();
        let a = streams.share(spec("a"));
        let a2 = streams.share(spec("a"));
        assert!(Arc::ptr_eq(&a, &a2));
        let b = streams.share(spec("b"));
        assert!(!Arc::ptr_eq(&a, &b));
        // Gone with its last handoff: the next one of the stream brings its own copy.
        drop((a, a2));
        let a3 = spec("a");
        assert!(Arc::ptr_eq(&streams.share(a3.clone()), &a3));
        // Gone streams are forgotten as the map grows.
        for i in 0..200 {
            streams.share(spec(&format!("x{i}")));
        }
        assert!(streams.len() < 200, "{}", streams.len());
    }

    #[test]
    fn watcher_keys_differ_by_credentials() {
        let url = Url::parse("http://127.0.0.1:8080/v1/sse?channel=a").unwrap();
        let a = StreamSpec {
            url: url.clone(),
            headers: StreamHeaders(vec![("authorization".into(), "Bearer a".into())]),
        };
        let b = StreamSpec {
            url,
            headers: StreamHeaders(vec![("authorization".into(), "Bearer b".into())]),
        };
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key(), a.clone().key());
    }
}

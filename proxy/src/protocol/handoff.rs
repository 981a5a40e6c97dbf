//! The handoff API's shapes (`/v1/handoffs`): what a phone hands over before it sleeps, and what
//! the proxy answers about it.
//!
//! Secrets travel in some of these (the handoff's token, upstream credentials in
//! `stream.headers`, device tokens, Web Push keys); every type holding one has a redacting
//! `Debug`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ssepush_origin::EventId;

/// `POST /v1/handoffs` body. Unknown fields are refused (400 `invalid_json`), so a misspelt
/// option is never silently ignored.
///
/// ```json
/// {"stream": {"url": "https://api.example.com/v1/sse?channel=chat.*",
///             "headers": {"Authorization": "Bearer …"}, "lastEventId": "1795546555192-0.5f3e9a21"},
///  "push": {"platform": "apns", "token": "a1b2…"},
///  "wake": {"filter": "data.severity >= 3", "coalesceMs": 250, "maxPerHour": 3, "mode": "background"},
///  "ttlSec": 86400}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HandoffRequest {
    /// The stream the proxy watches.
    pub stream: StreamRequest,
    /// Where the proxy pushes the wake.
    pub push: PushTarget,
    /// When it pushes (all optional; the proxy's `[wake]` settings fill the rest).
    #[serde(default)]
    pub wake: WakeOptions,
    /// How long the proxy watches at most, in seconds (1..=`max_ttl_secs`; default
    /// `default_ttl_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_sec: Option<u64>,
}

/// The stream to watch: what the phone's own `EventSource` would send.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StreamRequest {
    /// Absolute `http(s)` URL inside the proxy's `allowed_origins`; no credentials in it.
    pub url: String,
    /// Request headers to send upstream (often credentials): names are case-insensitive and
    /// unique; hop-by-hop headers, `Host`, `Accept` and `Last-Event-ID` are the proxy's own.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The phone's last event id (WHATWG's last event ID): the proxy resumes from it. Empty or
    /// absent: from the stream's head when the proxy connects.
    #[serde(default)]
    pub last_event_id: Option<String>,
}

impl std::fmt::Debug for StreamRequest {
    // The URL's query and the headers may carry credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRequest")
            .field("url", &"<redacted>")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("last_event_id", &self.last_event_id)
            .finish()
    }
}

/// Where a phone receives pushes (`push` object), tagged by `platform`.
/// Its `Debug` names the platform only: tokens and subscriptions are secrets.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "platform", rename_all = "lowercase")]
pub enum PushTarget {
    /// `{"platform": "apns", "token", "topic"?, "environment"?}`.
    Apns {
        /// The APNs device token: hex bytes (an even number of hex digits, at most 200).
        #[cfg_attr(feature = "openapi", schema(pattern = "^([0-9a-fA-F]{2}){1,100}$"))]
        token: String,
        /// `apns-topic` (the app's bundle id); default: the proxy's `[apns] topic`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        /// `production`, or `sandbox`/`development`; default: the proxy's `[apns] environment`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(
            feature = "openapi",
            schema(pattern = "^(production|sandbox|development)$")
        )]
        environment: Option<String>,
    },
    /// `{"platform": "fcm", "token"}`: an FCM registration token.
    Fcm { token: String },
    /// `{"platform": "webpush", "subscription"}`: a W3C `PushSubscription` as its `toJSON()`.
    Webpush { subscription: WebPushSubscription },
}

impl PushTarget {
    /// The `platform` tag: `apns`, `fcm` or `webpush`.
    pub fn platform(&self) -> &'static str {
        match self {
            PushTarget::Apns { .. } => "apns",
            PushTarget::Fcm { .. } => "fcm",
            PushTarget::Webpush { .. } => "webpush",
        }
    }
}

impl std::fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushTarget::Apns {
                topic, environment, ..
            } => f
                .debug_struct("Apns")
                .field("token", &"<redacted>")
                .field("topic", topic)
                .field("environment", environment)
                .finish(),
            PushTarget::Fcm { .. } => f.debug_struct("Fcm").field("token", &"<redacted>").finish(),
            PushTarget::Webpush { subscription } => f
                .debug_struct("Webpush")
                .field("subscription", subscription)
                .finish(),
        }
    }
}

/// Exactly the JSON of a W3C `PushSubscription` (Push API §`PushSubscriptionJSON`). The
/// endpoint is a capability URL and the keys decrypt the phone's pushes: `Debug` shows neither.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebPushSubscription {
    /// The push service's URL for this subscription (RFC 8030 §5).
    pub endpoint: String,
    /// Unix milliseconds after which the subscription ends, when the browser says.
    #[serde(default)]
    pub expiration_time: Option<u64>,
    pub keys: WebPushKeys,
}

/// The subscription's RFC 8291 keys.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebPushKeys {
    /// The browser's P-256 public key (65-byte uncompressed point), base64url.
    pub p256dh: String,
    /// The 16-byte authentication secret, base64url.
    pub auth: String,
}

impl std::fmt::Debug for WebPushSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushSubscription")
            .field("endpoint", &"<redacted>")
            .field("expiration_time", &self.expiration_time)
            .field("keys", &self.keys)
            .finish()
    }
}

impl std::fmt::Debug for WebPushKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebPushKeys(<redacted>)")
    }
}

/// `wake` object: when the proxy pushes. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WakeOptions {
    /// CEL over `channel`, `type`, `id`, `data`: only events it accepts owe a wake (the others
    /// are still buffered). Absent or blank: every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Burst window in milliseconds: one wake covers what arrives within it
    /// (0..=`wake.max_coalesce_ms`; default `wake.coalesce_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_ms: Option<u64>,
    /// Accepted wakes per sliding hour (1..=`wake.max_per_hour_limit`; default
    /// `wake.max_per_hour`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_hour: Option<u32>,
    /// Silent (`background`, the default) or visible (`alert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WakeMode>,
}

/// Whether the wake is silent (the default) or shows the user something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WakeMode {
    /// APNs background push (`content-available`, priority 5), FCM data message, Web Push
    /// without a notification.
    #[default]
    Background,
    /// Also shows a notification ([`crate::protocol::Notification`]).
    Alert,
}

/// `201 Created` answer to `POST /v1/handoffs` (with `Location: /v1/handoffs/{id}`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HandoffCreated {
    /// The handoff's id: `h_` and 32 hex digits.
    pub id: String,
    /// The device's secret for the handoff's other calls (`Authorization: Bearer <token>`):
    /// 64 hex digits, shown only here (the proxy keeps its SHA-256).
    pub token: String,
    /// When the proxy stops watching (RFC 3339 UTC).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(with = "super::time::rfc3339_millis")]
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for HandoffCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffCreated")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where a handoff is in its life (see `handoff::State` for the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum HandoffState {
    /// The proxy watches the stream; no wake is outstanding.
    Watching,
    /// A wake was accepted by the push service; no other until the phone checks in.
    Woken,
    /// The ttl ran out; the proxy stopped watching.
    Expired,
    /// Ended by an error retrying cannot fix (`lastError` says which).
    Failed,
    /// The phone handed the stream back.
    Closed,
}

impl HandoffState {
    /// Every state, in the order above.
    pub const ALL: [HandoffState; 5] = [
        HandoffState::Watching,
        HandoffState::Woken,
        HandoffState::Expired,
        HandoffState::Failed,
        HandoffState::Closed,
    ];

    /// The wire name (also the `state` label of `ssepush_proxy_handoffs`).
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffState::Watching => "watching",
            HandoffState::Woken => "woken",
            HandoffState::Expired => "expired",
            HandoffState::Failed => "failed",
            HandoffState::Closed => "closed",
        }
    }

    /// Expired, failed and closed: nothing leaves them.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            HandoffState::Expired | HandoffState::Failed | HandoffState::Closed
        )
    }
}

/// The last wake a push service accepted for a handoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LastWake {
    /// When the provider accepted it (RFC 3339 UTC).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(with = "super::time::rfc3339_millis")]
    pub at: DateTime<Utc>,
    /// Events buffered for the phone when it was sent.
    pub pending: u64,
    /// The newest id the proxy had received then.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub latest_event_id: Option<EventId>,
}

/// `GET /v1/handoffs/{id}` (the device's token as bearer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HandoffStatus {
    pub id: String,
    pub state: HandoffState,
    /// The device's cursor: what it handed off with, acknowledged, or was served.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub cursor: Option<EventId>,
    /// The newest id the proxy received for this handoff (an event's, or a skipped one's).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub newest_id: Option<EventId>,
    /// Events buffered after the cursor.
    pub pending: u64,
    /// Wakes the push service accepted.
    pub wakes_sent: u64,
    pub last_wake: Option<LastWake>,
    /// The latest problem, kept after it is over: a failed handoff's reason, a wake not
    /// accepted, a skipped event, upstream trouble being retried (reported at once).
    pub last_error: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(with = "super::time::rfc3339_millis")]
    pub expires_at: DateTime<Utc>,
}

/// `DELETE /v1/handoffs/{id}`: the handback's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Handback {
    /// The final cursor: resume the stream at the origin from it.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub cursor: Option<EventId>,
    /// `closed`, or the terminal state the handoff had already reached.
    pub state: HandoffState,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_request_reads_every_push_target_and_refuses_unknown_fields() {
        let r: HandoffRequest = serde_json::from_value(json!({
            "stream": {"url": "http://127.0.0.1:8080/v1/sse?channel=a", "headers": {"X": "y"}, "lastEventId": "5-0"},
            "push": {"platform": "apns", "token": "ab", "environment": "sandbox"},
            "wake": {"mode": "alert", "coalesceMs": 10},
            "ttlSec": 60,
        }))
        .unwrap();
        assert_eq!(r.wake.mode, Some(WakeMode::Alert));
        assert_eq!(r.push.platform(), "apns");
        let fcm: PushTarget =
            serde_json::from_value(json!({"platform": "fcm", "token": "t"})).unwrap();
        assert_eq!(fcm.platform(), "fcm");
        let web: PushTarget = serde_json::from_value(json!({"platform": "webpush", "subscription":
            {"endpoint": "https://p/x", "expirationTime": null, "keys": {"p256dh": "k", "auth": "a"}}}))
        .unwrap();
        assert_eq!(web.platform(), "webpush");
        // What a client serialises, the proxy reads back unchanged.
        let text = serde_json::to_value(&r).unwrap();
        assert_eq!(serde_json::from_value::<HandoffRequest>(text).unwrap(), r);
        for bad in [
            json!({"stream": {"url": "u"}, "push": {"platform": "fcm", "token": "t"}, "ttl": 5}),
            json!({"stream": {"url": "u"}, "push": {"platform": "fcm", "token": "t"}, "wake": {"filters": "x"}}),
            json!({"stream": {"url": "u"}, "push": {"platform": "mpns", "token": "t"}}),
        ] {
            assert!(serde_json::from_value::<HandoffRequest>(bad).is_err());
        }
    }

    #[test]
    fn answers_have_the_documented_fields() {
        let at = crate::protocol::time::from_unix_ms(1_795_547_400_123).unwrap();
        let created = HandoffCreated {
            id: "h_1".into(),
            token: "secret-token".into(),
            expires_at: at,
        };
        assert_eq!(
            serde_json::to_value(&created).unwrap(),
            json!({"id": "h_1", "token": "secret-token", "expiresAt": "2026-11-24T19:10:00.123Z"})
        );
        assert!(!format!("{created:?}").contains("secret-token"));
        let status = HandoffStatus {
            id: "h_1".into(),
            state: HandoffState::Woken,
            cursor: Some(EventId::new(5, 0)),
            newest_id: None,
            pending: 2,
            wakes_sent: 1,
            last_wake: Some(LastWake {
                at,
                pending: 2,
                latest_event_id: Some(EventId::new(6, 0)),
            }),
            last_error: None,
            expires_at: at,
        };
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["state"], "woken");
        assert_eq!(v["lastWake"]["latestEventId"], "6-0");
        assert_eq!(v["newestId"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<HandoffStatus>(v).unwrap(), status);
        let states: Vec<&str> = HandoffState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(states, ["watching", "woken", "expired", "failed", "closed"]);
        for s in HandoffState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let targets = [
            PushTarget::Apns {
                token: "a1b2c3secret".into(),
                topic: Some("com.example".into()),
                environment: None,
            },
            PushTarget::Fcm {
                token: "fcmsecret".into(),
            },
            PushTarget::Webpush {
                subscription: WebPushSubscription {
                    endpoint: "https://push.example/capabilitysecret".into(),
                    expiration_time: None,
                    keys: WebPushKeys {
                        p256dh: "p256secret".into(),
                        auth: "authsecret".into(),
                    },
                },
            },
        ];
        for t in &targets {
            let shown = format!("{t:?} {t:#?}");
            assert!(!shown.contains("secret"), "{shown}");
        }
        let stream = StreamRequest {
            url: "https://x/?token=urlsecret".into(),
            headers: [("Authorization".to_owned(), "Bearer headersecret".to_owned())].into(),
            last_event_id: None,
        };
        assert!(!format!("{stream:?}").contains("secret"));
    }
}

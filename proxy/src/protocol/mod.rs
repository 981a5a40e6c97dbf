//! Every JSON shape the proxy exchanges, as serde types: what a phone (or its app backend) sends
//! and reads over the handoff API, and what each push service carries to the phone when the
//! proxy wakes it. The proxy's server serialises exactly these types and the clients in the root
//! package deserialise them, so a shape is defined once, here.
//!
//! This module builds without the proxy's server (`cargo build -p ssepush-proxy
//! --no-default-features`): it needs only serde, chrono and the origin crate's protocol layer
//! (event ids and events).
//!
//! * [`handoff`] — `POST /v1/handoffs` (the request with its push target and wake options), its
//!   `201` answer, the status of `GET /v1/handoffs/{id}`, the handback of `DELETE`.
//! * [`catchup`] — `GET /v1/handoffs/{id}/events`: the buffered events and the gap marker.
//! * [`wake`] — the wake each platform delivers: the `ssepush` object, the APNs body, the FCM
//!   HTTP v1 message, the Web Push plaintext.
//! * [`ops`] — `GET /readyz`.
//! * `schema` (feature `openapi`) — the OpenAPI schemas of the shapes other crates define (the
//!   origin's event, the JSON error); every type here derives its schema with `utoipa`.
//!
//! Field names are the wire's (camelCase on the handoff API; Apple's and Google's own spelling
//! inside their payloads). Event ids are [`EventId`]s: they travel as the origin's opaque
//! strings. Times are RFC 3339 UTC with milliseconds ([`time`]).

pub mod catchup;
pub mod handoff;
pub mod ops;
#[cfg(feature = "openapi")]
pub mod schema;
pub mod time;
pub mod wake;

pub use catchup::{CatchUp, Gap, GapSource};
pub use handoff::{
    Handback, HandoffCreated, HandoffRequest, HandoffState, HandoffStatus, LastWake, PushTarget,
    StreamRequest, WakeMode, WakeOptions, WebPushKeys, WebPushSubscription,
};
pub use ops::Readiness;
pub use ssepush_origin::{Event, EventId};
pub use wake::{
    AndroidConfig, AndroidPriority, ApnsPayload, Aps, FcmData, FcmMessage, FcmRequest,
    Notification, WakePayload, WebPushMessage,
};

//! `ssepush gateway`: the stand-in for the push services the proxy wakes phones through —
//! APNs (HTTP/2, provider-token JWT), FCM HTTP v1 (with its OAuth2 token endpoint) and a Web
//! Push service (VAPID, encrypted bodies passed through untouched) — on one port, h2c and
//! HTTP/1.1 alike (or, with `tls`, both over TLS with a self-signed certificate: [`tls`]).
//!
//! It records every push (a bounded ring), forwards accepted ones to simulated phones over a
//! per-device SSE stream, and injects faults on request. [`run`] is exactly what the
//! subcommand executes and what tests drive on port 0.
//!
//! | path | what |
//! |---|---|
//! | `POST /3/device/{token}` | APNs ([`apns`]) |
//! | `POST /token` | OAuth2 JWT-bearer grant for the service account ([`fcm`]) |
//! | `POST /v1/projects/{project}/messages:send` | FCM HTTP v1 ([`fcm`]) |
//! | `POST /wp/{id}` | Web Push delivery ([`webpush`]) |
//! | `POST /_gateway/webpush/subscriptions`, `DELETE …/{id}` | a phone subscribes / unsubscribes ([`control`]) |
//! | `POST /_gateway/devices` | a phone gets an APNs or FCM token |
//! | `DELETE /_gateway/devices/{token}` | the app is uninstalled: APNs 410 / FCM UNREGISTERED from now on |
//! | `GET /_gateway/devices/{token}/stream` | SSE of the pushes accepted for a device |
//! | `GET`/`DELETE /_gateway/pushes` | the push record ([`control::records`]) |
//! | `POST`/`GET`/`DELETE /_gateway/faults` | faults ([`control::faults`]) |
//! | `GET /healthz`, `/metrics` | ops (the metrics are this gateway's own) |
//!
//! Module map: [`server`] (settings, [`Gateway`], the router and accept loop), [`state`] (what
//! the handlers share: record and forward, apply faults), one file per provider ([`apns`],
//! [`fcm`], [`webpush`]), [`control`] (the `/_gateway/` API and its plain parts), [`registry`]
//! (the tokens and subscriptions it hands out), [`jwt`] (the three token checks),
//! [`credentials`] (keys and the files written for the proxy), [`tls`], and [`client`] (the
//! control API from the outside, for tests and the device simulator).
//!
//! Nothing in [`crate::client`] imports from here: the gateway stands in for services outside
//! the product, and the simulated phones ([`crate::device`]) read what it delivers with the
//! same client code an app uses.

pub mod apns;
pub mod client;
pub mod control;
pub mod credentials;
pub mod fcm;
pub mod jwt;
pub mod registry;
pub mod server;
pub mod state;
pub mod tls;
pub mod webpush;

pub use control::faults::FaultSpec;
pub use control::records::{BodyEncoding, Delivery, Provider, PushQuery, PushRecord};
pub use credentials::Credentials;
pub use server::{Gateway, GatewayConfig, GatewayError, router, run};

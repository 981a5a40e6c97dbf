//! The ssepush origin: the streaming API that phones, browsers and the push proxy read.
//!
//! The crate has three layers, each a cargo feature over the one below:
//!
//! * the **protocol** (always built): [`event`] (events and their totally ordered ids),
//!   [`channel`] (channel names and NATS-style patterns), [`sse`] (the wire format: encoding,
//!   and the WHATWG parser every reader uses), [`filter`] (CEL filters), [`conditional`]
//!   (RFC 9110 entity-tag preconditions), [`streams`] (static filter streams), [`store`]
//!   (the event-log trait and its in-memory backend), and [`datasets`] (data sync: versioned
//!   key/value maps, snapshots, deltas, preconditions, the dataset-store trait).
//!   [`special_purpose`] (which IP addresses are globally reachable: IANA's special-purpose
//!   registries, the one SSRF policy of webhook targets and push endpoints).
//!   Beside them, two helpers every layer uses: [`clock`] (Unix ms, RFC 3339) and [`backoff`]
//!   (the one jittered exponential backoff). Clients depend on exactly this, with
//!   `default-features = false`.
//! * the **service** layer (feature `service`): what every HTTP server of the product shares —
//!   JSON errors, bearer/JWT auth, ops endpoints, the accept loop, CORS, config loading (see
//!   `service`). The push proxy and the simulated gateway depend on this, not on the origin's
//!   server.
//! * the **server** (feature `server`, on by default): the Redis event log, the subscription
//!   [`hub`](crate::hub) that fans events out, the HTTP API and the ops endpoints, driven by
//!   [`server::run`](crate::server::run).
#![forbid(unsafe_code)]

pub mod backoff;
pub mod channel;
pub mod clock;
pub mod conditional;
pub mod datasets;
pub mod event;
pub mod filter;
pub mod special_purpose;
pub mod sse;
pub mod store;
pub mod streams;

#[cfg(feature = "server")]
pub mod hub;
#[cfg(feature = "server")]
pub mod redis_conn;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "service")]
pub mod service;
#[cfg(feature = "server")]
pub mod settings;
#[cfg(feature = "server")]
pub mod stores;
#[cfg(feature = "server")]
pub mod webhooks;

pub use channel::{Channel, Pattern, PatternSet};
pub use event::{Event, EventId, NewEvent};
pub use filter::Filter;
